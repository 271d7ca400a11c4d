"""Step-3's chat delimiters (vLLM's Step-3 example prompt, the `step3` reasoning and tool parsers).

Turns are `<|BOT|>{role}\\n ... <|EOT|>`; the assistant's reasoning ends at `</think>`; tool calls
sit between `<｜tool_calls_begin｜>` and `<｜tool_calls_end｜>` (note the full-width bars).
"""

from __future__ import annotations

BEGIN_OF_TURN = "<|BOT|>"
END_OF_TURN = "<|EOT|>"
THINK_START = "<think>"
THINK_END = "</think>"
TOOL_CALLS_BEGIN = "<｜tool_calls_begin｜>"
TOOL_CALLS_END = "<｜tool_calls_end｜>"
TOOL_CALL_BEGIN = "<｜tool_call_begin｜>"
TOOL_CALL_END = "<｜tool_call_end｜>"
TOOL_SEP = "<｜tool_sep｜>"
IMAGE_PLACEHOLDER = "<im_patch>"

# (delimiter, special): special tokens are dropped by `decode(..., skip_special_tokens=True)`.
# `<think>` / `</think>` are not special: vLLM's step3 reasoning parser finds `</think>` in text
# decoded with special tokens skipped, so it must survive that decoding.
CHAT_TOKENS: tuple[tuple[str, bool], ...] = (
    (BEGIN_OF_TURN, True), (END_OF_TURN, True), (THINK_START, False), (THINK_END, False),
    (TOOL_CALLS_BEGIN, True), (TOOL_CALLS_END, True), (TOOL_CALL_BEGIN, True),
    (TOOL_CALL_END, True), (TOOL_SEP, True),
)
