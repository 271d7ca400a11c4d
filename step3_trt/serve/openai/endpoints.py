"""The two generation endpoints as data: how each parses a body, builds its prompt (on an
admission lane), answers once its request finished, and streams chunks. app.py runs either one
the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from step3_trt.serve.openai import chat, completions
from step3_trt.serve.openai.bridge import Finished, JobStream, Tokens
from step3_trt.serve.openai.common import Prompt
from step3_trt.serve.openai.envelope import Envelope, usage
from step3_trt.serve.openai.errors import internal, unavailable
from step3_trt.serve.openai.model import ServedModel
from step3_trt.serve.openai.output import OutputText


def outcome(event: Finished) -> dict:
    """A finished request's result, or the error its client gets."""
    result = event.result
    if "error" in result:
        if event.job_down:
            raise unavailable(f"step3: {result['error']}; retry later")
        raise internal(f"the AFD job failed the request: {result['error']}")
    if result.get("finish_reason") == "cancelled":
        raise unavailable("step3: the request was cancelled (the AFD job is shutting down)")
    return result


def _usage(prompt: Prompt, result: dict) -> dict:
    return usage(len(prompt.ids), len(result["output_ids"]), result.get("cached_tokens", 0))


# ---- /v1/completions ------------------------------------------------------------------------
def completion_body(model: ServedModel, envelope: Envelope, request, prompt: Prompt,
                    event: Finished) -> dict[str, Any]:
    result = outcome(event)
    text = OutputText(model, prompt.params, keep_special_tokens=False).finish(result["output_ids"])
    return completions.completion_body(envelope, text, result["finish_reason"],
                                       _usage(prompt, result))


async def completion_chunks(model: ServedModel, envelope: Envelope, request, prompt: Prompt,
                            job: JobStream) -> AsyncIterator[dict[str, Any]]:
    text = OutputText(model, prompt.params, keep_special_tokens=False)
    extra = {"usage": None} if request.streaming.include_usage else {}
    while isinstance(event := await job.next(), Tokens):
        if piece := text.push(event.ids):
            yield envelope.make(completions.OBJECT, choices=[completions.choice(piece, None)],
                                **extra)
    result = outcome(event)
    piece = text.finish(result["output_ids"])
    yield envelope.make(completions.OBJECT,
                        choices=[completions.choice(piece, result["finish_reason"])], **extra)
    if request.streaming.include_usage:
        yield envelope.make(completions.OBJECT, choices=[], usage=_usage(prompt, result))


# ---- /v1/chat/completions -------------------------------------------------------------------
def chat_body(model: ServedModel, envelope: Envelope, request, prompt: Prompt,
              event: Finished) -> dict[str, Any]:
    result = outcome(event)
    text = chat.output_text(model, prompt.params, request).finish(result["output_ids"])
    return chat.chat_body(envelope, text, request, result["finish_reason"],
                          _usage(prompt, result))


async def chat_chunks(model: ServedModel, envelope: Envelope, request, prompt: Prompt,
                      job: JobStream) -> AsyncIterator[dict[str, Any]]:
    stream = chat.ChatStream(model, prompt.params, request, envelope)
    extra = {"usage": None} if request.streaming.include_usage else {}
    yield chat.chunk(envelope, {"role": "assistant", "content": ""}, **extra)
    while isinstance(event := await job.next(), Tokens):
        for delta in stream.push(event.ids):
            yield chat.chunk(envelope, delta, **extra)
    result = outcome(event)
    for delta in stream.finish(result["output_ids"]):
        yield chat.chunk(envelope, delta, **extra)
    yield chat.chunk(envelope, {}, chat.finish_reason(result["finish_reason"], stream.calls),
                     **extra)
    if request.streaming.include_usage:
        yield envelope.make(chat.CHUNK, choices=[], usage=_usage(prompt, result))


@dataclass(frozen=True)
class Endpoint:
    name: str  # the metrics label
    prefix: str  # of response ids
    parse: Callable[[Any, ServedModel], Any]  # body -> a checked request (ApiError if not)
    prompt: Callable[[Any, ServedModel], Prompt]  # on an admission lane
    body: Callable[[ServedModel, Envelope, Any, Prompt, Finished], dict[str, Any]]
    chunks: Callable[[ServedModel, Envelope, Any, Prompt, JobStream],
                     AsyncIterator[dict[str, Any]]]


COMPLETIONS = Endpoint("completions", "cmpl", completions.parse_completion,
                       completions.completion_prompt, completion_body, completion_chunks)
CHAT = Endpoint("chat", "chatcmpl", chat.parse_chat, chat.chat_prompt, chat_body, chat_chunks)
