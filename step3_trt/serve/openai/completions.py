"""/v1/completions: a prompt (text, or token ids) -> text, whole or streamed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from step3_trt.serve.openai.body import Body, kind
from step3_trt.serve.openai.common import (NO_LOGPROBS, Prompt, Sampling, Streaming,
                                           check_model, check_prompt_bytes, read_max_tokens,
                                           read_sampling, read_streaming, refuse_unsupported)
from step3_trt.serve.openai.envelope import Envelope
from step3_trt.serve.openai.errors import bad_request, unsupported
from step3_trt.serve.openai.model import ServedModel
from step3_trt.serve.request import encode_prompt

OBJECT = "text_completion"  # the body and each chunk


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str | tuple[int, ...]  # text (BOS added as the tokenizer's post-processor says) or ids
    sampling: Sampling
    streaming: Streaming


def parse_completion(raw: Any, model: ServedModel) -> CompletionRequest:
    """Every field checked, nothing tokenized."""
    body = Body(raw)
    check_model(body, model)
    streaming = read_streaming(body)
    max_tokens = read_max_tokens(body, model, "max_tokens")
    sampling = read_sampling(body, model, max_tokens)
    refuse_unsupported(body)
    if body.get("logprobs") is not None:
        raise unsupported("logprobs", NO_LOGPROBS)
    if body.boolean("echo"):
        raise unsupported("echo", "completions return the new text only")
    if body.integer("best_of", 1, 128) not in (None, 1):
        raise unsupported("best_of", "one candidate per request")
    if body.string("suffix"):
        raise unsupported("suffix", "the model has no fill-in-the-middle format")
    prompt = _prompt(body.get("prompt"), model, max_tokens)
    body.finish()
    return CompletionRequest(prompt, sampling, streaming)


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and \
        all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def _prompt(raw: Any, model: ServedModel, max_tokens: int | None) -> str | tuple[int, ...]:
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], (str, list)):
        raw = raw[0]  # a batch of one prompt
    if isinstance(raw, str):
        if not raw:
            raise bad_request("prompt is empty", "prompt")
        check_prompt_bytes(len(raw.encode()), model, max_tokens, "prompt", "prompt")
        return raw
    if _is_ids(raw):
        bad = next((t for t in raw if not 0 <= t < model.vocab_size), None)
        if bad is not None:
            raise bad_request(f"prompt token ids must be in [0, {model.vocab_size}), got {bad}",
                              "prompt")
        return tuple(raw)
    if raw is None:
        raise bad_request("prompt is required", "prompt")
    if isinstance(raw, list) and len(raw) > 1 and all(isinstance(p, (str, list)) for p in raw):
        raise unsupported("prompt", "one prompt per request (a batch of N prompts is N requests)")
    raise bad_request(f"prompt must be a string, an array of token ids, or an array holding "
                      f"one of those; got {kind(raw)}", "prompt")


def completion_prompt(request: CompletionRequest, model: ServedModel) -> Prompt:
    """On an admission lane (serve/admission.py): tokenize, then fit the context."""
    if isinstance(request.prompt, str):
        ids = encode_prompt(model.tokenizer, request.prompt)
    else:
        ids = list(request.prompt)
    return Prompt(ids, request.sampling.params(len(ids), model, "prompt"))


def choice(text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}


def completion_body(envelope: Envelope, text: str, finish_reason: str,
                    usage: dict[str, int]) -> dict[str, Any]:
    return envelope.make(OBJECT, choices=[choice(text, finish_reason)], usage=usage)
