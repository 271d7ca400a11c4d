"""Triton request tensors -> a validated generation request, for every generating model's
interface (serve/interfaces.py): one set of checks, whatever the tensors are called.

Two steps, so that no request costs unbounded work before it is admitted:
- `check` validates every input and parameter without tokenizing: value ranges, shapes, UTF-8,
  and byte limits on the prompt and on the stop/bad word lists (see `Limits`). It is cheap and
  runs on Triton's request thread.
- `tokenize` encodes a text prompt and text words and checks the prompt's token count against
  the context; it runs on an admission worker (serve/admission.py), off that thread.

Sampling follows TensorRT-LLM (its `regularizeTopKTopP`): greedy unless top_k > 1, or top_k is
0 (or unset) and top_p > 0; then top-k and top-p filter (top_p 0 or unset = 1); the
temperature only shapes the sampled distribution, and 0 makes it greedy. Each check raises
`BadRequest` with one line naming the input and the problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from step3_trt.sampling import SamplingParams
from step3_trt.serve.interfaces import STEP3, Fields, Interface, read_fields
from step3_trt.serve.tensors import MAX_WORD_BYTES, MAX_WORDS, BadRequest, Inputs, \
    byte_len, utf8
from step3_trt.tokenizer import Step3Tokenizer

__all__ = ["BadRequest", "MAX_WORDS", "MAX_WORD_BYTES", "INPUTS", "Limits", "CheckedRequest",
           "GenerationRequest", "check", "check_request", "tokenize", "parse_request",
           "encode_prompt", "longest_token_bytes"]

INPUTS = tuple(STEP3.specs)  # the step3 model's inputs
Word = str | list[int]  # a stop or bad word: text (tokenized at admission) or token ids


@dataclass(frozen=True)
class Limits:
    max_seq_len: int  # prompt + generated tokens
    token_bytes: int  # the most UTF-8 bytes one token of the vocabulary stands for
    vocab_size: int  # token ids are in [0, vocab_size)
    eos_token_ids: frozenset[int] = frozenset()  # the tokens that end a sequence

    @classmethod
    def of(cls, tokenizer: Step3Tokenizer, max_seq_len: int, vocab_size: int | None = None,
           eos_token_ids: frozenset[int] = frozenset()) -> "Limits":
        vocab = vocab_size or tokenizer.tokenizer.get_vocab_size(with_added_tokens=True)
        return cls(max_seq_len, longest_token_bytes(tokenizer), vocab, frozenset(eos_token_ids))

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
    """Every input validated; a text prompt and text words not yet tokenized."""
    prompt: str | list[int]
    params: SamplingParams
    stream: bool
    bad_words: list[Word]
    stop_words: list[Word]  # token-sequence stops (step3's stop words are params.stop_strings)
    min_tokens: int
    include_input: bool  # the output repeats the input (exclude_input_in_output false)

    @property
    def text(self) -> str:
        """The text to tokenize ("" for a prompt of token ids): it picks the admission lane."""
        return self.prompt if isinstance(self.prompt, str) else ""


@dataclass(frozen=True)
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    stream: bool
    bad_words: list[list[int]]
    min_tokens: int = 0  # no end-of-sequence or stop token before this many outputs
    prompt_text: str | None = None  # the prompt as the client sent it, if it sent text
    stop_words: list[list[int]] = field(default_factory=list)  # token sequences that end it
    include_input: bool = False  # the output repeats the input


def check(interface: Interface, inputs: Inputs, parameters: dict, limits: Limits,
          include_input: bool = False, can_stream: bool = True) -> CheckedRequest:
    """`include_input`: whether the output repeats the input when `exclude_input_in_output` is
    not sent; `can_stream`: whether the model is decoupled (else it sends one response)."""
    f = read_fields(interface, inputs, parameters)
    if f.get("stream") and not can_stream:
        raise BadRequest(f"{f.tensor('stream')} is only supported if the model is decoupled: "
                         f"start the server with `step3-trt serve --decoupled`")
    max_tokens = max_tokens_of(f, limits)
    prompt = _token_prompt(f, limits, max_tokens) if interface.token_prompt \
        else text_prompt_of(f, limits, max_tokens)
    min_tokens = _min_tokens(f, max_tokens)
    stop_words = list(f.get("stop_words") or [])
    bad_words = list(f.get("bad_words") or [])
    for name in ("stop_words", "bad_words"):
        check_ids(f, name, [t for w in f.get(name) or [] if isinstance(w, list) for t in w],
                   limits)
    stop_strings = tuple(stop_words) if interface.stop_strings else ()
    params = _sampling(f, max_tokens, stop_strings, end_ids_of(f, limits))
    exclude = f.get("exclude_input")
    return CheckedRequest(prompt, params, bool(f.get("stream")), bad_words,
                          [] if interface.stop_strings else stop_words, min_tokens,
                          include_input if exclude is None else not exclude)


def check_request(inputs: Inputs, parameters: dict, limits: Limits) -> CheckedRequest:
    """`check` for the step3 model."""
    return check(STEP3, inputs, parameters, limits)


def tokenize(checked: CheckedRequest, tokenizer: Step3Tokenizer,
             limits: Limits) -> GenerationRequest:
    if isinstance(checked.prompt, str):
        text = checked.prompt
        prompt_ids = encode_fitting(tokenizer, text, checked.params.max_new_tokens, limits)
    else:
        prompt_ids, text = checked.prompt, None
    return GenerationRequest(prompt_ids, checked.params, checked.stream,
                             word_ids(checked.bad_words, tokenizer), checked.min_tokens, text,
                             word_ids(checked.stop_words, tokenizer), checked.include_input)


def encode_fitting(tokenizer: Step3Tokenizer, text: str, max_tokens: int,
                   limits: Limits) -> list[int]:
    """The prompt's token ids; BadRequest if they and max_tokens new ones exceed the context."""
    prompt_ids = encode_prompt(tokenizer, text)
    if len(prompt_ids) + max_tokens > limits.max_seq_len:
        raise BadRequest(f"prompt ({len(prompt_ids)} tokens) + max_tokens ({max_tokens}) exceeds "
                         f"the context length {limits.max_seq_len}")
    return prompt_ids


def parse_request(inputs: Inputs, parameters: dict, tokenizer: Step3Tokenizer,
                  limits: Limits) -> GenerationRequest:
    """Both steps at once, for the step3 model."""
    return tokenize(check_request(inputs, parameters, limits), tokenizer, limits)


def word_ids(words: list[Word], tokenizer: Step3Tokenizer) -> list[list[int]]:
    """Text words as TensorRT-LLM's preprocessing encodes them (no BOS); empty ones dropped."""
    ids = [tokenizer.encode(w, add_special_tokens=False) if isinstance(w, str) else w
           for w in words]
    return [w for w in ids if w]


def max_tokens_of(f: Fields, limits: Limits) -> int:
    name, max_tokens = f.tensor("max_tokens"), f.get("max_tokens")
    if max_tokens < 1:
        raise BadRequest(f"{name} must be >= 1, got {max_tokens}")
    if max_tokens >= limits.max_seq_len:
        raise BadRequest(f"{name} ({max_tokens}) must be below the context length "
                         f"{limits.max_seq_len}")
    return max_tokens


def text_prompt_of(f: Fields, limits: Limits, max_tokens: int) -> str:
    name, value = f.tensor("prompt"), f.get("prompt")
    size = byte_len(value)
    if size > limits.max_prompt_bytes(max_tokens):
        raise BadRequest(f"{name} ({size} bytes) cannot fit in the context length "
                         f"{limits.max_seq_len} with max_tokens {max_tokens} (a token holds at "
                         f"most {limits.token_bytes} bytes)")
    text = utf8(value, name)
    if not text:
        raise BadRequest(f"{name} is empty")
    return text


def _token_prompt(f: Fields, limits: Limits, max_tokens: int) -> list[int]:
    name, ids = f.tensor("prompt"), f.get("prompt")
    length = f.get("prompt_length")
    if not 1 <= length <= len(ids):
        raise BadRequest(f"{f.tensor('prompt_length')} must be in [1, {len(ids)}] (the tokens "
                         f"of {name}), got {length}")
    ids = ids[:length]
    check_ids(f, "prompt", ids, limits)
    if length + max_tokens > limits.max_seq_len:
        raise BadRequest(f"{name} ({length} tokens) + {f.tensor('max_tokens')} ({max_tokens}) "
                         f"exceeds the context length {limits.max_seq_len}")
    return ids


def check_ids(f: Fields, name: str, ids: list[int], limits: Limits) -> None:
    bad = [t for t in ids if not 0 <= t < limits.vocab_size]
    if bad:
        raise BadRequest(f"{f.tensor(name)} holds token id {bad[0]}, outside [0, "
                         f"{limits.vocab_size})")


def _min_tokens(f: Fields, max_tokens: int) -> int:
    min_tokens = f.get("min_tokens")
    if not 0 <= min_tokens <= max_tokens:
        raise BadRequest(f"{f.tensor('min_tokens')} must be in [0, max_tokens={max_tokens}], "
                         f"got {min_tokens}")
    return min_tokens


def end_ids_of(f: Fields, limits: Limits) -> tuple[int, ...]:
    """`end_id` ends the sequence too (the model's own end tokens always do); `pad_id` pads
    nothing with one beam, and is only range-checked."""
    for name in ("end_id", "pad_id"):
        value = f.get(name)
        if value is not None and not 0 <= value < limits.vocab_size:
            raise BadRequest(f"{f.tensor(name)} must be a token id in [0, {limits.vocab_size}), "
                             f"got {value}")
    end_id = f.get("end_id")
    return () if end_id is None or end_id in limits.eos_token_ids else (end_id,)


def _sampling(f: Fields, max_tokens: int, stop_strings: tuple[str, ...],
              stop_token_ids: tuple[int, ...]) -> SamplingParams:
    temperature, top_k = f.get("temperature"), f.get("top_k")
    top_p, seed = f.get("top_p"), f.get("seed")
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        raise BadRequest(f"{f.tensor('temperature')} must be a finite number >= 0, got "
                         f"{temperature}")
    if top_k is not None and top_k < 0:
        raise BadRequest(f"{f.tensor('top_k')} must be >= 0, got {top_k}")
    if top_p is not None and not 0 <= top_p <= 1:
        raise BadRequest(f"{f.tensor('top_p')} must be in [0, 1], got {top_p}")
    if seed is not None and not 0 <= seed < 2 ** 64:
        raise BadRequest(f"{f.tensor('seed')} must be in [0, 2^64), got {seed}")
    k = top_k or 0
    sampling = k > 1 or (k == 0 and top_p is not None and top_p > 0)
    greedy = not sampling or temperature == 0
    return SamplingParams(
        max_new_tokens=max_tokens, greedy=greedy,
        temperature=1.0 if temperature is None or greedy else float(temperature),
        top_k=k, top_p=1.0 if not top_p else float(top_p),
        seed=None if seed is None else int(seed), stop_token_ids=stop_token_ids,
        stop_strings=stop_strings, **_penalties(f))


def _penalties(f: Fields) -> dict[str, float]:
    out = {}
    for name, neutral in (("repetition_penalty", 1.0), ("presence_penalty", 0.0),
                          ("frequency_penalty", 0.0)):
        value = f.get(name)
        if value is None:
            value = neutral
        if not math.isfinite(value) or (name == "repetition_penalty" and value <= 0):
            raise BadRequest(f"{f.tensor(name)} must be a finite number"
                             f"{' > 0' if name == 'repetition_penalty' else ''}, got {value}")
        out[name] = float(value)
    return out
