"""An assistant turn's output text -> reasoning, content and tool calls, whole or streamed.

Reasoning is split off first (at `</think>`; the prompt opened `<think>`), then tool calls are
parsed in the content. The whole-output parse runs the stream, so the two always agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from step3_trt.chat.messages import Tool
from step3_trt.chat.reasoning import ReasoningDelta, ReasoningStream
from step3_trt.chat.tool_calls import ParsedToolCall, ToolCallDelta, ToolCallStream


@dataclass(frozen=True)
class AssistantDelta:
    reasoning: str = ""
    content: str = ""
    calls: tuple[ParsedToolCall, ...] = ()


@dataclass(frozen=True)
class AssistantOutput:
    reasoning_content: str | None  # None when reasoning is not split off
    content: str | None
    tool_calls: tuple[ParsedToolCall, ...]


class AssistantStream:
    """`reasoning`: the output starts inside `<think>` (Step-3's generation prompt);
    `tools`: parse tool calls in the content (None: content is plain text)."""

    def __init__(self, *, reasoning: bool, tools: Sequence[Tool] | None):
        self._reasoning = ReasoningStream() if reasoning else None
        self._tools = ToolCallStream(tools) if tools is not None else None

    def feed(self, delta: str) -> AssistantDelta:
        r = self._reasoning.feed(delta) if self._reasoning else ReasoningDelta(content=delta)
        return self._content(r, self._tools.feed(r.content) if self._tools else None)

    def finish(self) -> AssistantDelta:
        r = self._reasoning.finish() if self._reasoning else ReasoningDelta()
        if self._tools is None:
            return self._content(r, None)
        a, b = self._tools.feed(r.content), self._tools.finish()
        return self._content(r, ToolCallDelta(a.content + b.content, a.calls + b.calls))

    @staticmethod
    def _content(r: ReasoningDelta, t: ToolCallDelta | None) -> AssistantDelta:
        return AssistantDelta(r.reasoning, r.content, ()) if t is None else \
            AssistantDelta(r.reasoning, t.content, t.calls)


def parse_assistant(text: str, *, reasoning: bool,
                    tools: Sequence[Tool] | None) -> AssistantOutput:
    """The whole output: reasoning (vLLM's step3 split: all of it without `</think>`), content
    (None if empty; stripped around tool calls) and the tool calls."""
    stream = AssistantStream(reasoning=reasoning, tools=tools)
    parts = [stream.feed(text), stream.finish()]
    content = "".join(p.content for p in parts)
    calls = tuple(c for p in parts for c in p.calls)
    if calls:
        content = content.strip()
    return AssistantOutput("".join(p.reasoning for p in parts) if reasoning else None,
                           content or None, calls)
