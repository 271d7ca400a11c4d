"""The state of one OpenAI server: the model it serves, its connection to the AFD job, the
admission lanes and its metrics. `start` / `stop` run in the app's lifespan."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass

from step3_trt.serve.admission import Admission
from step3_trt.serve.job_client import JobClient, JobUnavailable
from step3_trt.serve.openai.bridge import JobStream
from step3_trt.serve.openai.common import Prompt
from step3_trt.serve.openai.errors import unavailable
from step3_trt.serve.openai.metrics import ServerMetrics
from step3_trt.serve.openai.model import ServedModel
from step3_trt.serve.request import GenerationRequest


@dataclass(frozen=True)
class JobSettings:
    endpoint: str  # the coordinator's ZeroMQ endpoint
    connect_timeout_s: float  # how long start-up waits for the job
    heartbeat_timeout_s: float  # a coordinator silent this long is gone


class OpenAIServer:
    def __init__(self, model: ServedModel, job: JobSettings):
        self.model, self.job = model, job
        self.metrics = ServerMetrics()
        self.client: JobClient | None = None
        self.admission: Admission | None = None
        self._stopping = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        """Blocks until the AFD job's coordinator answers (or raises JobUnavailable)."""
        self.client = JobClient(self.job.endpoint, self.job.connect_timeout_s,
                                self.job.heartbeat_timeout_s,
                                on_down=lambda _reason: self.metrics.job_up.set(0),
                                on_up=lambda: self.metrics.job_up.set(1))
        self.admission = Admission()
        self.metrics.job_up.set(1)

    def stop(self) -> None:
        """Finish admitting, then cancel what is in flight in the job and fail it here (its
        clients get 503 `the OpenAI server is shutting down`). Once; later calls wait for it."""
        with self._stopping:
            if self._stopped:
                return
            self._stopped = True
            if self.admission is not None:
                self.admission.close()
            if self.client is not None:
                self.client.close("the OpenAI server is shutting down")

    @property
    def failure(self) -> str | None:
        """Why the job is not answering (None while it is)."""
        return self.client.failure if self.client is not None else "not connected yet"

    async def prepare(self, size: int, work: Callable[[], Prompt]) -> Prompt:
        """Run `work` (template rendering, tokenizing) on an admission lane, off the event loop;
        `size`: the request body's bytes, which pick the lane."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()

        def run() -> None:
            try:
                outcome = (work(), None)
            except Exception as e:  # noqa: BLE001 - handed to the request's coroutine
                outcome = (None, e)
            loop.call_soon_threadsafe(_settle, future, *outcome)

        self.admission.submit(size, run)
        return await future

    def submit(self, prompt: Prompt, stream: bool, endpoint: str) -> JobStream:
        job = JobStream(asyncio.get_running_loop(), lambda: self.client.up,
                        lambda result: self.metrics.done(endpoint, result))
        self.metrics.in_flight.inc()
        try:
            self.client.submit(GenerationRequest(prompt.ids, prompt.params, stream, []), job)
        except JobUnavailable as e:
            self.metrics.in_flight.dec()
            raise unavailable(f"step3: {e}") from None
        self.metrics.prompt_tokens.inc(len(prompt.ids))
        return job


def _settle(future: asyncio.Future, value, error) -> None:
    if future.done():  # the request's coroutine was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
