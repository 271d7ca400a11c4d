"""The FastAPI application: `/v1/models`, `/v1/completions`, `/v1/chat/completions` (whole or as
server-sent events), `/health` (200 while the AFD job answers, else 503) and `/metrics`.

A generation request is read with a byte bound, parsed and checked on the event loop (cheap),
rendered and tokenized on an admission lane, and submitted to the AFD job through the job
client. Every failure is answered in OpenAI's error shape (errors.py); in a stream that has
begun, as a last `data: {"error": ...}` event before `data: [DONE]`. A client that disconnects
(mid-stream, or while waiting for a whole answer) cancels its request in the job, which frees
its KV blocks.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from step3_trt.serve.openai.body import parse_json, read_body
from step3_trt.serve.openai.bridge import Finished, JobStream
from step3_trt.serve.openai.endpoints import CHAT, COMPLETIONS, Endpoint
from step3_trt.serve.openai.envelope import Envelope
from step3_trt.serve.openai.errors import ApiError, internal, unavailable, unknown_model
from step3_trt.serve.openai.server import OpenAIServer

CLIENT_GONE = 499  # nobody reads it: the status of a request whose client disconnected


def _error(e: ApiError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body is read already: what comes next is the
    disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _finished(request: Request, job: JobStream) -> Finished | None:
    """The request's result, or None if the client disconnected first (then it is cancelled)."""
    result = asyncio.ensure_future(job.next())  # not streaming: the one event is the result
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        job.cancel()
        raise
    finally:
        result.cancel()
        gone.cancel()
    if result in done:
        return result.result()
    job.cancel()
    return None


async def _events(chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """SSE lines; an error once the stream has begun is a last `error` event."""
    try:
        async for chunk in chunks:
            yield _sse(chunk)
    except ApiError as e:
        yield _sse(e.body())
    except Exception as e:  # noqa: BLE001 - the stream ends with an error, the server goes on
        traceback.print_exc(file=sys.stderr)
        yield _sse(internal(f"{type(e).__name__}: {e}").body())
    yield "data: [DONE]\n\n"


class JobEventStream(StreamingResponse):
    """Server-sent events of one request. However the response ends (its last event sent, or the
    client gone: Starlette listens for the disconnect and stops the stream, perhaps before it
    began), the request is cancelled in the job; once it has finished that changes nothing."""

    def __init__(self, chunks: AsyncIterator[dict[str, Any]], job: JobStream):
        super().__init__(_events(chunks), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache"})
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()


def create_app(server: OpenAIServer) -> FastAPI:
    model = server.model
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await asyncio.to_thread(server.start)
        try:
            yield
        finally:
            await asyncio.to_thread(server.stop)

    app = FastAPI(title="step3-trt OpenAI-compatible server", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, e: HTTPException) -> JSONResponse:
        code = "not_found" if e.status_code == 404 else None
        return _error(ApiError(e.status_code, str(e.detail), code=code))

    def card() -> dict[str, Any]:
        return {"id": model.name, "object": "model", "created": started, "owned_by": "step3-trt",
                "max_model_len": model.limits.max_seq_len}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [card()]}

    @app.get("/v1/models/{name:path}")
    async def one_model(name: str):
        return card() if name == model.name else _error(unknown_model(name, model.name))

    @app.get("/health")
    async def health():
        failure = server.failure
        if failure is None:
            return {"status": "ok"}
        return _error(unavailable(f"step3: the AFD job is not answering ({failure})"))

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    async def generate(request: Request, endpoint: Endpoint) -> Response:
        try:
            raw = await read_body(request, model.max_body_bytes)
            checked = endpoint.parse(parse_json(raw), model)
            prompt = await server.prepare(len(raw), lambda: endpoint.prompt(checked, model))
            job = server.submit(prompt, checked.streaming.enabled, endpoint.name)
        except ApiError as e:
            server.metrics.rejected(endpoint.name)
            return _error(e)
        except Exception as e:  # noqa: BLE001 - a failure of ours: answer it, serve on
            traceback.print_exc(file=sys.stderr)
            server.metrics.rejected(endpoint.name)
            return _error(internal(f"{type(e).__name__}: {e}"))
        envelope = Envelope(endpoint.prefix, model.name)
        if checked.streaming.enabled:
            return JobEventStream(endpoint.chunks(model, envelope, checked, prompt, job), job)
        event = await _finished(request, job)
        if event is None:
            return Response(status_code=CLIENT_GONE)
        try:
            return JSONResponse(endpoint.body(model, envelope, checked, prompt, event))
        except ApiError as e:
            return _error(e)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, COMPLETIONS)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, CHAT)

    return app
