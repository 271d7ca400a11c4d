"""Assistant output -> reasoning, content, tool calls: vLLM's step3 semantics for the reasoning
split, tool calls typed by their schema, streams equal to whole outputs for every cut into
deltas, and calls rendered by the template parsed back to themselves."""

from __future__ import annotations

import random

import pytest

from step3_trt.chat.messages import Message, Tool, ToolCall
from step3_trt.chat.output import AssistantStream, parse_assistant
from step3_trt.chat.prompt import ChatFormat
from step3_trt.chat.tokens import (THINK_END, TOOL_CALL_BEGIN, TOOL_CALL_END, TOOL_CALLS_BEGIN,
                                   TOOL_CALLS_END, TOOL_SEP)
from step3_trt.chat.tool_calls import ParsedToolCall, typed_value
from step3_trt.tokenizer import Step3Tokenizer
from tests.conftest import REPO

TOOLS = (Tool("get_weather", {"type": "object", "properties": {
    "city": {"type": "string"}, "days": {"type": "integer"}, "lat": {"type": "number"},
    "metric": {"type": "boolean"}, "unit": {"type": ["null", "string"]},
    "opts": {"type": "object"}, "tags": {"type": "array"},
    "when": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}}),
         Tool("search", {"type": "object", "properties": {"q": {"type": "string"}}}))


def call(name, **params) -> str:
    body = "".join(f'<steptml:parameter name="{k}">{v}</steptml:parameter>'
                   for k, v in params.items())
    return (f'{TOOL_CALL_BEGIN}function{TOOL_SEP}<steptml:invoke name="{name}">{body}'
            f'</steptml:invoke>{TOOL_CALL_END}')


def block(*calls) -> str:
    return TOOL_CALLS_BEGIN + "".join(calls) + TOOL_CALLS_END


def vllm_reasoning_split(text: str) -> tuple[str, str | None]:
    """vLLM's Step3ReasoningParser.extract_reasoning, restated as the oracle."""
    if THINK_END not in text:
        return text, None
    end = text.find(THINK_END)
    return text[:end], text[end + len(THINK_END):] or None


@pytest.mark.parametrize("text", [
    "plain reasoning with no end", "r</think>answer", "</think>answer", "reasoning</think>",
    "a</think>b</think>c", "", "<think>\nr</think>", "x </thi nk> y", "tail </thin",
])
def test_reasoning_split_is_vllms(text):
    out = parse_assistant(text, reasoning=True, tools=None)
    assert (out.reasoning_content, out.content) == vllm_reasoning_split(text)
    assert out.tool_calls == ()


def test_tool_calls_typed_by_their_schema():
    text = "Let me check." + block(
        call("get_weather", city=" Paris ", days=" 3", lat="48.85", metric="True", unit="null",
             opts='{"a": [1, 2]}', tags='["x", 1]', when="7"),
        call("get_weather", city="Oslo", days="three", lat="n/a", metric="yes", unit="C",
             opts="[1]", when="tomorrow", extra="1"),
        call("search", q="a < b && c > d"), call("unknown_tool", n="5"))
    out = parse_assistant(text, reasoning=False, tools=TOOLS)
    assert out.content == "Let me check." and out.reasoning_content is None
    assert out.tool_calls == (
        ParsedToolCall("get_weather", {"city": "Paris", "days": 3, "lat": 48.85, "metric": True,
                                       "unit": None, "opts": {"a": [1, 2]}, "tags": ["x", 1],
                                       "when": 7}),
        # values that do not parse as the declared type stay strings; undeclared ones too
        ParsedToolCall("get_weather", {"city": "Oslo", "days": "three", "lat": "n/a",
                                       "metric": "yes", "unit": "C", "opts": "[1]",
                                       "when": "tomorrow", "extra": "1"}),
        ParsedToolCall("search", {"q": "a < b && c > d"}),
        ParsedToolCall("unknown_tool", {"n": "5"}))
    assert out.tool_calls[0].arguments_json == (
        '{"city": "Paris", "days": 3, "lat": 48.85, "metric": true, "unit": null, '
        '"opts": {"a": [1, 2]}, "tags": ["x", 1], "when": 7}')


@pytest.mark.parametrize("value, schema, expected", [
    ("5", {"type": "integer"}, 5), ("5.0", {"type": "integer"}, "5.0"),
    ("true", {"type": "integer"}, "true"), ("5", {"type": "number"}, 5),
    ("-1e3", {"type": "number"}, -1000.0), ("FALSE", {"type": "boolean"}, False),
    ("5", {"type": "string"}, "5"), ("5", None, "5"), ("null", {"type": "string"}, "null"),
    ("null", {"type": ["string", "null"]}, None), ("{}", {"type": "array"}, "{}"),
    ("  x  ", {"type": "string"}, "x"), ("3", {"oneOf": [{"type": "boolean"},
                                                      {"type": "integer"}]}, 3),
])
def test_typed_value(value, schema, expected):
    got = typed_value(value, schema)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("text, content, n_calls", [
    ("no tools here", "no tools here", 0),
    (block(call("search", q="x")), None, 1),
    ("  before " + block(call("search", q="x")) + " after  ", "before  after", 1),
    (block(call("search", q="x"), call("search", q="y")) + "\n", None, 2),
    # the final end marker never came (generation stopped): complete calls still count
    (TOOL_CALLS_BEGIN + call("search", q="x"), None, 1),
    # a call still open at the end is content, from its begin marker
    (TOOL_CALLS_BEGIN + call("search", q="x") + TOOL_CALL_BEGIN + "function" + TOOL_SEP + "<st",
     TOOL_CALL_BEGIN + "function" + TOOL_SEP + "<st", 1),
    # a call that is not a function, or has no invoke, is content as written
    (block(TOOL_CALL_BEGIN + "python" + TOOL_SEP + "print(1)" + TOOL_CALL_END),
     TOOL_CALL_BEGIN + "python" + TOOL_SEP + "print(1)" + TOOL_CALL_END, 0),
    (block(TOOL_CALL_BEGIN + "function" + TOOL_SEP + "oops" + TOOL_CALL_END, call("search", q="1")),
     TOOL_CALL_BEGIN + "function" + TOOL_SEP + "oops" + TOOL_CALL_END, 1),
    # text inside a block, between calls, is content; two blocks are both parsed
    (block(call("search", q="1"), " note ", call("search", q="2")) + "x" + block(call("search")),
     "note x", 3),
    ("partial begin <｜tool_calls_beg", "partial begin <｜tool_calls_beg", 0),
])
def test_tool_call_blocks(text, content, n_calls):
    out = parse_assistant(text, reasoning=False, tools=TOOLS)
    assert out.content == content and len(out.tool_calls) == n_calls


def stream(text: str, cuts: list[int], **kw):
    s = AssistantStream(**kw)
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    deltas = [s.feed(p) for p in pieces] + [s.finish()]
    return ("".join(d.reasoning for d in deltas), "".join(d.content for d in deltas),
            tuple(c for d in deltas for c in d.calls))


OUTPUTS = [
    "I should look it up.\nPlan: call it.</think>Checking the weather." + block(
        call("get_weather", city="Paris", days="2"), "\n", call("search", q="a<b")) + " Done.",
    "no end of reasoning, <｜tool_calls_begin｜> inside reasoning stays reasoning",
    "</think>" + TOOL_CALLS_BEGIN + call("search", q="x") + TOOL_CALL_BEGIN + "function",
    "r</think>a</th" + "ink>b" + block(TOOL_CALL_BEGIN + "bad" + TOOL_CALL_END) + "<｜tool",
]


@pytest.mark.parametrize("text", OUTPUTS)
@pytest.mark.parametrize("reasoning", [True, False])
@pytest.mark.parametrize("tools", [TOOLS, None])
def test_streams_equal_the_whole_output_for_any_cut(text, reasoning, tools):
    whole = parse_assistant(text, reasoning=reasoning, tools=tools)
    rng = random.Random(len(text))
    cut_sets = [[], list(range(1, len(text)))] + [
        sorted(rng.sample(range(1, len(text)), rng.randrange(1, min(40, len(text) - 1))))
        for _ in range(60)]
    for cuts in cut_sets:
        reasoning_text, content, calls = stream(text, cuts, reasoning=reasoning, tools=tools)
        assert calls == whole.tool_calls, cuts
        assert (reasoning_text if reasoning else None) == whole.reasoning_content, cuts
        if calls:
            content = content.strip()
        assert (content or None) == whole.content, cuts


def test_a_stream_of_one_delta_per_character_emits_calls_when_they_close():
    text = "ok" + block(call("search", q="x"), call("search", q="y"))
    s = AssistantStream(reasoning=False, tools=TOOLS)
    closes = [i for i, ch in enumerate(text) if s.feed(ch).calls]
    first_end = text.index(TOOL_CALL_END) + len(TOOL_CALL_END) - 1
    assert closes == [first_end, text.index(TOOL_CALL_END, first_end) + len(TOOL_CALL_END) - 1]


def test_calls_rendered_by_the_template_parse_back():
    """Round trip: an assistant turn with tool calls, rendered by the bundled template, read
    back by the parser (through the tokenizer, special tokens kept)."""
    chat = ChatFormat(Step3Tokenizer.from_dir(REPO / "models" / "step3-tiny"))
    calls = (ToolCall("get_weather", {"city": "Zürich", "days": 3, "metric": True,
                                      "unit": None, "opts": {"k": [1, "x"]}, "tags": []}),
             ToolCall("search", {"q": "rain & wind <today>"}))
    messages = [Message("user", "?"), Message("assistant", "Looking.", tool_calls=calls)]
    ids = chat.encode(messages, TOOLS, add_generation_prompt=False)
    text = chat.tokenizer.decode(ids, skip_special_tokens=False)
    turn = text[text.rindex("<|BOT|>assistant\n") + len("<|BOT|>assistant\n"):]
    assert turn.endswith("<|EOT|>")
    out = parse_assistant(turn.removesuffix("<|EOT|>"), reasoning=False, tools=TOOLS)
    assert out.content == "Looking."
    assert out.tool_calls == tuple(ParsedToolCall(c.name, c.arguments) for c in calls)
    # Reasoning round trip: what the model writes after the generation prompt.
    reply = "thinking it over" + THINK_END + "Answer."
    out = parse_assistant(reply, reasoning=True, tools=TOOLS)
    assert (out.reasoning_content, out.content) == ("thinking it over", "Answer.")
