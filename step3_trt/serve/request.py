"""Triton request tensors (the TensorRT-LLM backend's names) -> a validated generation request.

The output never repeats the input unless `exclude_input_in_output` is false (then a
non-streaming `text_output` starts with the input text). Sampling follows the TensorRT-LLM backend: with no sampling input the decode is greedy; a
temperature > 0, a top_k > 1 or a top_p in (0, 1) turns sampling on (top_p 0 means unset).
Each check raises `BadRequest` with one line naming the input and the problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from step3_trt.sampling import SamplingParams
from step3_trt.tokenizer import Step3Tokenizer

# name -> (Triton data type, is a list); text_input is required, the rest optional
INPUTS = {"text_input": ("TYPE_STRING", False), "max_tokens": ("TYPE_INT32", False),
          "stream": ("TYPE_BOOL", False), "temperature": ("TYPE_FP32", False),
          "top_k": ("TYPE_INT32", False), "top_p": ("TYPE_FP32", False),
          "seed": ("TYPE_UINT64", False), "stop_words": ("TYPE_STRING", True),
          "bad_words": ("TYPE_STRING", True), "min_length": ("TYPE_INT32", False),
          "exclude_input_in_output": ("TYPE_BOOL", False)}
DEFAULT_MAX_TOKENS = 16


class BadRequest(ValueError):
    """The request is malformed; the message says which input and why."""


@dataclass(frozen=True)
class Limits:
    max_seq_len: int  # prompt + generated tokens


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    stream: bool
    bad_words: list[list[int]]
    min_tokens: int = 0  # `min_length`: no end-of-sequence before this many tokens
    prompt_text: str | None = None  # set when the output repeats the input (not excluded)


def _scalar(inputs: dict[str, np.ndarray], name: str):
    arr = inputs.get(name)
    if arr is None:
        return None
    flat = np.asarray(arr).reshape(-1)
    if flat.size != 1:
        raise BadRequest(f"{name} must hold one value, got {flat.size}")
    value = flat[0]
    return value.item() if isinstance(value, np.generic) else value  # plain Python, for JSON


def _strings(inputs: dict[str, np.ndarray], name: str) -> list[str]:
    arr = inputs.get(name)
    if arr is None:
        return []
    out = []
    for item in np.asarray(arr, dtype=object).reshape(-1):
        text = _utf8(item, name)
        if text:  # TensorRT-LLM clients send [""] for "none"
            out.append(text)
    return out


def _utf8(value, name: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{name} is not valid UTF-8") from None


def _sampling(inputs: dict[str, np.ndarray], max_tokens: int, stop: list[str]) -> SamplingParams:
    temperature, top_k = _scalar(inputs, "temperature"), _scalar(inputs, "top_k")
    top_p, seed = _scalar(inputs, "top_p"), _scalar(inputs, "seed")
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        raise BadRequest(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and top_k < 0:
        raise BadRequest(f"top_k must be >= 0, got {top_k}")
    if top_p is not None and not 0 <= top_p <= 1:
        raise BadRequest(f"top_p must be in [0, 1], got {top_p}")
    sampling = (temperature is not None and temperature > 0) or \
        (top_k is not None and top_k > 1) or (top_p is not None and 0 < top_p < 1)
    greedy = not sampling or temperature == 0
    return SamplingParams(
        max_new_tokens=max_tokens, greedy=greedy,
        temperature=1.0 if temperature is None or greedy else float(temperature),
        top_k=0 if top_k is None else int(top_k),
        top_p=1.0 if top_p is None or top_p == 0 else float(top_p),
        seed=None if seed is None else int(seed), stop_strings=tuple(stop))


def parse_request(inputs: dict[str, np.ndarray], parameters: dict, tokenizer: Step3Tokenizer,
                  limits: Limits) -> GenerationRequest:
    unknown = sorted(k for k in parameters if not k.startswith("triton_"))
    if unknown:
        raise BadRequest(f"unknown parameter(s) {', '.join(unknown)}; step3 takes the inputs "
                         f"{', '.join(INPUTS)}")
    if _scalar(inputs, "text_input") is None:
        raise BadRequest("missing required input text_input")
    text = _utf8(_scalar(inputs, "text_input"), "text_input")
    if not text:
        raise BadRequest("text_input is empty")
    max_tokens = _scalar(inputs, "max_tokens")
    max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else int(max_tokens)
    if max_tokens < 1:
        raise BadRequest(f"max_tokens must be >= 1, got {max_tokens}")
    if max_tokens >= limits.max_seq_len:
        raise BadRequest(f"max_tokens ({max_tokens}) must be below the context length "
                         f"{limits.max_seq_len}")
    prompt_ids = tokenizer.encode(text)
    if len(prompt_ids) + max_tokens > limits.max_seq_len:
        raise BadRequest(f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds "
                         f"the context length {limits.max_seq_len}")
    min_length = _scalar(inputs, "min_length")
    min_length = 0 if min_length is None else int(min_length)
    if not 0 <= min_length <= max_tokens:
        raise BadRequest(f"min_length must be in [0, max_tokens={max_tokens}], got {min_length}")
    stream, exclude = _scalar(inputs, "stream"), _scalar(inputs, "exclude_input_in_output")
    bad_words = [tokenizer.tokenizer.encode(w, add_special_tokens=False).ids
                 for w in _strings(inputs, "bad_words")]
    return GenerationRequest(prompt_ids, _sampling(inputs, max_tokens,
                                                   _strings(inputs, "stop_words")),
                             bool(stream) if stream is not None else False,
                             [ids for ids in bad_words if ids], min_length,
                             text if exclude is not None and not exclude else None)
