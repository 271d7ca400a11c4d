"""Incremental detokenization for streaming: each push returns only text that is final.

Held back: a trailing U+FFFD (a multi-byte character whose remaining bytes come with the next
token) and a tail that could be the beginning of a stop string. Text from a stop string on is
never returned (the stop string itself included), as in `step3-trt run`.
"""

from __future__ import annotations

from step3_trt.sampling import SamplingParams, stop_string_hit
from step3_trt.tokenizer import Step3Tokenizer


class TextStream:
    def __init__(self, tokenizer: Step3Tokenizer, params: SamplingParams):
        self.tokenizer, self.params = tokenizer, params
        self.ids: list[int] = []
        self.emitted = ""

    def push(self, ids: list[int]) -> str:
        """Add new output tokens; returns the text that became final."""
        self.ids += ids
        return self._emit(final=False)

    def finish(self) -> str:
        """The rest of the text, once the request has finished."""
        return self._emit(final=True)

    @property
    def text(self) -> str:
        return self.emitted

    def _emit(self, final: bool) -> str:
        text = self.tokenizer.decode(self.ids)
        cut = stop_string_hit(text, self.params)
        if cut is not None:
            text = text[:cut]
        elif not final:
            text = text[:len(text) - self._held_back(text)]
        if not text.startswith(self.emitted):
            return ""  # decoding shifted earlier text: nothing new is final yet
        new = text[len(self.emitted):]
        self.emitted = text
        return new

    def _held_back(self, text: str) -> int:
        """Characters at the end of `text` that are not final yet."""
        hold = len(text) - len(text.rstrip("\ufffd"))
        body = text[:len(text) - hold]
        for stop in self.params.stop_strings:
            for k in range(min(len(stop) - 1, len(body)), 0, -1):
                if body.endswith(stop[:k]):
                    hold = max(hold, len(text) - len(body) + k)
                    break
        return hold
