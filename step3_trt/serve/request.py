"""Triton request tensors (the TensorRT-LLM backend's names) -> a validated generation request.

Two steps, so that no request costs unbounded work before it is admitted:
- `check_request` validates every input and parameter without tokenizing: value ranges, shapes,
  UTF-8, and byte limits on the prompt and on the stop/bad word lists (see `Limits`). It is
  cheap and runs on Triton's request thread.
- `tokenize` encodes the prompt and the bad words and checks the prompt's token count against
  the context; it runs on an admission worker (serve/admission.py), off that thread.

The output never repeats the input unless `exclude_input_in_output` is false (then a
non-streaming `text_output` starts with the input text). Sampling follows the TensorRT-LLM
backend: with no sampling input the decode is greedy; a temperature > 0, a top_k > 1 or a top_p
in (0, 1) turns sampling on (top_p 0 means unset). Each check raises `BadRequest` with one line
naming the input and the problem.
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
MAX_WORDS = 32  # entries of stop_words, and of bad_words
MAX_WORD_BYTES = 256  # bytes of one entry (a streamed response rescans every stop word)


class BadRequest(ValueError):
    """The request is malformed; the message says which input and why."""


@dataclass(frozen=True)
class Limits:
    max_seq_len: int  # prompt + generated tokens
    token_bytes: int  # the most UTF-8 bytes one token of the vocabulary stands for

    @classmethod
    def of(cls, tokenizer: Step3Tokenizer, max_seq_len: int) -> "Limits":
        return cls(max_seq_len, longest_token_bytes(tokenizer))

    def max_prompt_bytes(self, max_tokens: int) -> int:
        """A longer prompt has more tokens than fit before max_tokens new ones, whatever its
        text: each token stands for at most `token_bytes` bytes."""
        return (self.max_seq_len - max_tokens) * self.token_bytes


def longest_token_bytes(tokenizer: Step3Tokenizer) -> int:
    """The longest decoded token, in UTF-8 bytes (special tokens included). A byte-level token
    that is part of a character decodes to U+FFFD, 3 bytes for 1: the bound stays an upper
    bound. It assumes the tokenizer's normalizer never shortens text (the bundled one has
    none)."""
    vocab = tokenizer.tokenizer.get_vocab_size(with_added_tokens=True)
    texts = tokenizer.tokenizer.decode_batch([[i] for i in range(vocab)],
                                             skip_special_tokens=False)
    return max(1, *(len(t.encode()) for t in texts))


def encode_prompt(tokenizer: Step3Tokenizer, text: str) -> list[int]:
    """`tokenizer.encode(text)`, through the batch call, which releases the GIL while it works
    (the single-text call holds it: 7 s for a 5 MB prompt, stalling every other thread)."""
    return tokenizer.tokenizer.encode_batch([text], add_special_tokens=True)[0].ids


@dataclass(frozen=True)
class CheckedRequest:
    """Every input validated; the prompt and the bad words not yet tokenized."""
    text: str
    params: SamplingParams
    stream: bool
    bad_words: list[str]
    min_tokens: int
    repeat_input: bool  # exclude_input_in_output false


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


def _int(inputs: dict[str, np.ndarray], name: str) -> int | None:
    value = _scalar(inputs, name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise BadRequest(f"{name} must be an integer, got {value!r}")
    return value


def _float(inputs: dict[str, np.ndarray], name: str) -> float | None:
    value = _scalar(inputs, name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise BadRequest(f"{name} must be a number, got {value!r}")
    return value


def _byte_len(value) -> int:
    return len(value.encode()) if isinstance(value, str) else len(value)


def _strings(inputs: dict[str, np.ndarray], name: str) -> list[str]:
    arr = inputs.get(name)
    if arr is None:
        return []
    items = np.asarray(arr, dtype=object).reshape(-1)
    if items.size > MAX_WORDS:
        raise BadRequest(f"{name} holds {items.size} entries; at most {MAX_WORDS}")
    out = []
    for item in items:
        if _byte_len(item) > MAX_WORD_BYTES:
            raise BadRequest(f"{name} has an entry of {_byte_len(item)} bytes; at most "
                             f"{MAX_WORD_BYTES}")
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
    temperature, top_k = _float(inputs, "temperature"), _int(inputs, "top_k")
    top_p, seed = _float(inputs, "top_p"), _int(inputs, "seed")
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        raise BadRequest(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None and top_k < 0:
        raise BadRequest(f"top_k must be >= 0, got {top_k}")
    if top_p is not None and not 0 <= top_p <= 1:
        raise BadRequest(f"top_p must be in [0, 1], got {top_p}")
    if seed is not None and not 0 <= seed < 2 ** 64:
        raise BadRequest(f"seed must be in [0, 2^64), got {seed}")
    sampling = (temperature is not None and temperature > 0) or \
        (top_k is not None and top_k > 1) or (top_p is not None and 0 < top_p < 1)
    greedy = not sampling or temperature == 0
    return SamplingParams(
        max_new_tokens=max_tokens, greedy=greedy,
        temperature=1.0 if temperature is None or greedy else float(temperature),
        top_k=0 if top_k is None else int(top_k),
        top_p=1.0 if top_p is None or top_p == 0 else float(top_p),
        seed=None if seed is None else int(seed), stop_strings=tuple(stop))


def _text_input(inputs: dict[str, np.ndarray], limits: Limits, max_tokens: int) -> str:
    value = _scalar(inputs, "text_input")
    if value is None:
        raise BadRequest("missing required input text_input")
    if not isinstance(value, (str, bytes)):
        raise BadRequest(f"text_input must be a string, got {value!r}")
    size = _byte_len(value)
    if size > limits.max_prompt_bytes(max_tokens):
        raise BadRequest(f"text_input ({size} bytes) cannot fit in the context length "
                         f"{limits.max_seq_len} with max_tokens {max_tokens} (a token holds at "
                         f"most {limits.token_bytes} bytes)")
    text = _utf8(value, "text_input")
    if not text:
        raise BadRequest("text_input is empty")
    return text


def check_request(inputs: dict[str, np.ndarray], parameters: dict,
                  limits: Limits) -> CheckedRequest:
    unknown = sorted(k for k in parameters if not k.startswith("triton_"))
    if unknown:
        raise BadRequest(f"unknown parameter(s) {', '.join(unknown)}; step3 takes the inputs "
                         f"{', '.join(INPUTS)}")
    max_tokens = _int(inputs, "max_tokens")
    max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    if max_tokens < 1:
        raise BadRequest(f"max_tokens must be >= 1, got {max_tokens}")
    if max_tokens >= limits.max_seq_len:
        raise BadRequest(f"max_tokens ({max_tokens}) must be below the context length "
                         f"{limits.max_seq_len}")
    text = _text_input(inputs, limits, max_tokens)
    min_length = _int(inputs, "min_length")
    min_length = 0 if min_length is None else min_length
    if not 0 <= min_length <= max_tokens:
        raise BadRequest(f"min_length must be in [0, max_tokens={max_tokens}], got {min_length}")
    stream, exclude = _scalar(inputs, "stream"), _scalar(inputs, "exclude_input_in_output")
    params = _sampling(inputs, max_tokens, _strings(inputs, "stop_words"))
    return CheckedRequest(text, params, bool(stream) if stream is not None else False,
                          _strings(inputs, "bad_words"), min_length,
                          exclude is not None and not exclude)


def tokenize(checked: CheckedRequest, tokenizer: Step3Tokenizer,
             limits: Limits) -> GenerationRequest:
    prompt_ids = encode_prompt(tokenizer, checked.text)
    max_tokens = checked.params.max_new_tokens
    if len(prompt_ids) + max_tokens > limits.max_seq_len:
        raise BadRequest(f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds "
                         f"the context length {limits.max_seq_len}")
    bad_words = [tokenizer.encode(w, add_special_tokens=False) for w in checked.bad_words]
    return GenerationRequest(prompt_ids, checked.params, checked.stream,
                             [ids for ids in bad_words if ids], checked.min_tokens,
                             checked.text if checked.repeat_input else None)


def parse_request(inputs: dict[str, np.ndarray], parameters: dict, tokenizer: Step3Tokenizer,
                  limits: Limits) -> GenerationRequest:
    """Both steps at once."""
    return tokenize(check_request(inputs, parameters, limits), tokenizer, limits)
