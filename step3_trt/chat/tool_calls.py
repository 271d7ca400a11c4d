"""Step-3 tool calls in model output -> OpenAI-style calls (name + JSON arguments).

The format (vLLM's and SGLang's `step3` tool parsers):

    <｜tool_calls_begin｜><｜tool_call_begin｜>function<｜tool_sep｜><steptml:invoke name="NAME">
    <steptml:parameter name="KEY">VALUE</steptml:parameter>...</steptml:invoke>
    <｜tool_call_end｜>...<｜tool_calls_end｜>

Parameter values are text; each is typed by the tool's JSON schema (integer, number, boolean,
null, object, array; a list of types is tried in order, string last), left a string where the
schema says string, where the value does not parse as the declared type, or where the tool or
parameter is not declared. One state machine serves streaming and whole outputs, so both give
the same calls and content for any cut of the text into deltas. A call is emitted when its
`<｜tool_call_end｜>` arrives; the block markers and whitespace between calls are layout; all
other text is content, including a call that does not parse or is still open when the output
ends (from its `<｜tool_call_begin｜>` on). Blocks may repeat.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from step3_trt.chat.messages import Tool
from step3_trt.chat.tokens import (TOOL_CALL_BEGIN, TOOL_CALL_END, TOOL_CALLS_BEGIN,
                                   TOOL_CALLS_END, TOOL_SEP)

_INVOKE = re.compile(r'\s*<steptml:invoke name="([^"]+)">(.*?)(?:</steptml:invoke>\s*)?\Z',
                     re.DOTALL)
_PARAMETER = re.compile(r'<steptml:parameter name="([^"]+)">(.*?)</steptml:parameter>', re.DOTALL)


@dataclass(frozen=True)
class ParsedToolCall:
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(frozen=True)
class ToolCallDelta:
    content: str = ""
    calls: tuple[ParsedToolCall, ...] = ()  # complete calls, in output order


# ---- typing parameter values ----------------------------------------------------------------
def _as(kind: str, text: str) -> tuple[bool, Any]:
    if kind == "boolean":
        low = text.lower()
        return (True, low == "true") if low in ("true", "false") else (False, None)
    if kind == "null":
        return (True, None) if text.lower() == "null" else (False, None)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return False, None
    ok = {"integer": isinstance(value, int) and not isinstance(value, bool),
          "number": isinstance(value, (int, float)) and not isinstance(value, bool),
          "object": isinstance(value, dict), "array": isinstance(value, list)}.get(kind, False)
    return ok, value


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [k for k in kind if isinstance(k, str)]
    out: list[str] = []
    for key in ("anyOf", "oneOf"):
        for member in schema.get(key) or []:
            if isinstance(member, dict):
                out += [k for k in _types(member) if k not in out]
    return out


def typed_value(text: str, schema: dict[str, Any] | None) -> Any:
    """A parameter's text as the JSON value its schema declares (see the module docstring)."""
    text = text.strip()
    if schema is None:
        return text
    for kind in _types(schema):
        if kind != "string":
            ok, value = _as(kind, text)
            if ok:
                return value
    return text


def _parse_call(body: str, tools: dict[str, Tool]) -> ParsedToolCall | None:
    """`function<｜tool_sep｜><steptml:invoke ...>...` -> the call, or None if malformed."""
    kind, sep, invoke = body.partition(TOOL_SEP)
    match = _INVOKE.match(invoke) if sep and kind.strip() == "function" else None
    if match is None:
        return None
    name, params = match.group(1), match.group(2)
    tool = tools.get(name)
    arguments = {key: typed_value(value, tool.parameter_schema(key) if tool else None)
                 for key, value in _PARAMETER.findall(params)}
    return ParsedToolCall(name, arguments)


def _partial_suffix(text: str, markers: Sequence[str]) -> int:
    """Length of the longest end of `text` that is a proper beginning of one of `markers`."""
    for n in range(min(len(text), max(len(m) for m in markers) - 1), 0, -1):
        if any(m.startswith(text[-n:]) for m in markers):
            return n
    return 0


class ToolCallStream:
    """Incremental tool-call parsing: feed text deltas, get content and complete calls."""

    OUTSIDE, BLOCK, CALL = "outside", "block", "call"

    def __init__(self, tools: Sequence[Tool] = ()):
        self._tools = {t.name: t for t in tools}
        self._state = self.OUTSIDE
        self._buf = ""  # text not yet given out

    def feed(self, delta: str) -> ToolCallDelta:
        self._buf += delta
        content: list[str] = []
        calls: list[ParsedToolCall] = []
        while self._step(content, calls):
            pass
        return ToolCallDelta("".join(content), tuple(calls))

    def _step(self, content: list[str], calls: list[ParsedToolCall]) -> bool:
        """Consume what can be decided from the buffer; True if the state may advance more."""
        buf = self._buf
        if self._state == self.OUTSIDE:
            start = buf.find(TOOL_CALLS_BEGIN)
            if start >= 0:
                content.append(buf[:start])
                self._buf, self._state = buf[start + len(TOOL_CALLS_BEGIN):], self.BLOCK
                return True
            keep = _partial_suffix(buf, (TOOL_CALLS_BEGIN,))
            content.append(buf[:len(buf) - keep])
            self._buf = buf[len(buf) - keep:]
            return False
        if self._state == self.BLOCK:  # between calls: wait for the next marker
            found = {m: i for m in (TOOL_CALL_BEGIN, TOOL_CALLS_END) if (i := buf.find(m)) >= 0}
            if not found:
                return False
            marker = min(found, key=found.get)
            stray = buf[:found[marker]]
            content.append(stray if stray.strip() else "")  # whitespace between calls: layout
            self._buf = buf[found[marker] + len(marker):]
            self._state = self.CALL if marker == TOOL_CALL_BEGIN else self.OUTSIDE
            return True
        end = buf.find(TOOL_CALL_END)
        if end < 0:
            return False
        call = _parse_call(buf[:end], self._tools)
        if call is None:
            content.append(TOOL_CALL_BEGIN + buf[:end + len(TOOL_CALL_END)])
        else:
            calls.append(call)
        self._buf, self._state = buf[end + len(TOOL_CALL_END):], self.BLOCK
        return True

    def finish(self) -> ToolCallDelta:
        """The end of the output: held-back text and an unfinished call become content."""
        state, buf = self._state, self._buf
        self._buf, self._state = "", self.OUTSIDE
        if state == self.CALL:
            return ToolCallDelta(TOOL_CALL_BEGIN + buf)
        return ToolCallDelta(buf if state == self.OUTSIDE or buf.strip() else "")
