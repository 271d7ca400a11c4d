"""Step-3's reasoning split: the prompt opens `<think>`, the model writes its reasoning, then
`</think>`, then the answer (vLLM's `step3` reasoning parser).

Everything before the first `</think>` is reasoning; everything after it is content; output
without `</think>` is all reasoning. The stream gives the same split for any cut of the text
into deltas, holding back a tail that might be the start of a `</think>` cut in two.
"""

from __future__ import annotations

from dataclasses import dataclass

from step3_trt.chat.tokens import THINK_END


@dataclass(frozen=True)
class ReasoningDelta:
    reasoning: str = ""
    content: str = ""


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `marker`."""
    for n in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


class ReasoningStream:
    """Feed text deltas, get reasoning / content deltas (`chat.output` joins them)."""

    def __init__(self):
        self._held = ""  # reasoning text that may be the start of `</think>`
        self._in_content = False

    def feed(self, delta: str) -> ReasoningDelta:
        if self._in_content:
            return ReasoningDelta(content=delta)
        text = self._held + delta
        end = text.find(THINK_END)
        if end >= 0:
            self._held, self._in_content = "", True
            return ReasoningDelta(text[:end], text[end + len(THINK_END):])
        keep = _partial_suffix(text, THINK_END)
        self._held = text[len(text) - keep:]
        return ReasoningDelta(reasoning=text[:len(text) - keep])

    def finish(self) -> ReasoningDelta:
        """The end of the output: a held-back tail was reasoning after all."""
        held, self._held = self._held, ""
        return ReasoningDelta(reasoning=held)
