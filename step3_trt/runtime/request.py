"""One request's whole state inside an attention rank (or the in-process runner): its prompt and
outputs, sampling parameters and generator, stop rules, token bans, KV progress (with the hashes
of its full blocks for prefix caching), finish reason, and the cursor of what has been streamed.
Pure Python apart from the generator."""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import torch

from step3_trt.sampling import SamplingParams, stop_string_hit


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)  # identity: two requests are never "equal"
class Request:
    request_id: int
    prompt: list[int]
    params: SamplingParams
    bad_words: list[list[int]] = field(default_factory=list)  # token sequences never completed
    min_tokens: int = 0  # no end-of-sequence or stop token before this many outputs
    stream: bool = False  # report new tokens after every step
    output: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    num_computed: int = 0  # tokens whose K/V are in the cache
    cached_tokens: int = 0  # prompt tokens whose K/V came from the prefix cache (first admission)
    # (position, digest) of non-text inputs that decide the K/V from that position on
    # (multimodal content): part of the block hashes, so such blocks are shared only by equals
    content_keys: tuple[tuple[int, bytes], ...] = ()
    block_hashes: list[bytes] = field(default_factory=list, repr=False)  # of its full blocks
    finish_reason: str | None = None  # stop | length | cancelled | error
    error: str | None = None  # why it failed (finish_reason "error")
    preemptions: int = 0
    streamed: int = 0  # output tokens already reported
    generator: torch.Generator | None = field(default=None, repr=False)

    def __post_init__(self):
        self.bad_words = [list(w) for w in self.bad_words if w]
        if self.generator is None:
            self.generator = self.params.generator()

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output

    @property
    def num_tokens(self) -> int:
        return len(self.prompt) + len(self.output)

    @property
    def has_bans(self) -> bool:
        return bool(self.bad_words) or len(self.output) < self.min_tokens

    def banned(self, eos_token_ids: Collection[int]) -> set[int]:
        """Tokens this request may not sample next: the last token of each bad word whose
        other tokens end the sequence, and end-of-sequence / stop tokens before `min_tokens`."""
        out = set()
        tokens = self.tokens
        for word in self.bad_words:
            head = word[:-1]
            if not head or tokens[len(tokens) - len(head):] == head:
                out.add(word[-1])
        if len(self.output) < self.min_tokens:
            out.update(self.params.stop_token_ids)
            out.update(eos_token_ids)
        return out

    def stop_reason(self, eos_token_ids: Collection[int],
                    detokenize: Callable[[list[int]], str] | None) -> str | None:
        """After a new output token: `stop`, `length`, or None to go on."""
        token = self.output[-1]
        if token in eos_token_ids or token in self.params.stop_token_ids:
            return "stop"
        if self.params.stop_strings and \
                stop_string_hit(detokenize(self.output), self.params) is not None:
            return "stop"
        if len(self.output) >= self.params.max_new_tokens:
            return "length"
        return None

    def take_new_tokens(self) -> list[int]:
        """Output tokens not reported yet (for streaming); advances the cursor."""
        new = self.output[self.streamed:]
        self.streamed = len(self.output)
        return new


def completion_text(decode: Callable[[list[int]], str], output_ids: list[int],
                    params: SamplingParams) -> str:
    """The text a client gets for `output_ids`: decoded, cut before the first stop string (the
    stop string itself is not returned)."""
    text = decode(output_ids)
    cut = stop_string_hit(text, params)
    return text if cut is None else text[:cut]
