"""OpenAI-shaped chat JSON -> typed messages, tools and tool choice; errors name the field."""

from __future__ import annotations

import pytest

from step3_trt.chat.messages import (ImagePart, Message, NamedToolChoice, TextPart, Tool,
                                     ToolCall, messages_from_openai, tool_choice_from_openai,
                                     tools_from_openai)
from step3_trt.chat.template import ChatError

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


def test_a_full_openai_conversation():
    messages = messages_from_openai([
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": "data:x"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "content": "Sunny.", "reasoning_content": "easy"},
    ])
    assert messages == (
        Message("system", "Be brief."),
        Message("user", (TextPart("What is this?"), ImagePart("data:x"))),
        Message("assistant", None, tool_calls=(ToolCall("get_weather", {"city": "Paris"},
                                                        "call_1"),)),
        Message("tool", "sunny", tool_call_id="call_1"),
        Message("assistant", "Sunny.", reasoning_content="easy"))
    assert messages[2].to_template()["tool_calls"] == [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert messages[1].to_template()["content"][1] == {"type": "image_url",
                                                      "image_url": {"url": "data:x"}}


def test_tools_and_tool_choice():
    tools = tools_from_openai([WEATHER, {"type": "function", "function": {"name": "ping"}}])
    assert tools[0] == Tool("get_weather", WEATHER["function"]["parameters"], "Weather")
    assert tools[0].to_template() == WEATHER
    assert tools[1].parameters == {"type": "object", "properties": {}}
    assert tools[0].parameter_schema("city") == {"type": "string"}
    assert tools[0].parameter_schema("nope") is None
    assert tool_choice_from_openai(None, tools) == "auto"
    assert tool_choice_from_openai(None, ()) == "none"
    assert tool_choice_from_openai("required", tools) == "required"
    named = tool_choice_from_openai({"type": "function", "function": {"name": "ping"}}, tools)
    assert named == NamedToolChoice("ping")
    assert named.to_template() == {"type": "function", "function": {"name": "ping"}}
    assert tools_from_openai(None) == ()


@pytest.mark.parametrize("raw, match", [
    ([], "non-empty list"),
    ([{"role": "wizard", "content": "x"}], r"messages\[0\].role"),
    ([{"role": "user"}], r"messages\[0\].content is required"),
    ([{"role": "user", "content": 5}], r"messages\[0\].content must be"),
    ([{"role": "user", "content": [{"type": "audio"}]}], r"messages\[0\].content\[0\].type"),
    ([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "u"}}]}],
     "image_url"),
    ([{"role": "user", "content": [{"type": "text", "text": 3}]}], r"content\[0\].text"),
    ([{"role": "assistant", "content": None}], "needs content or tool_calls"),
    ([{"role": "user", "content": "x", "tool_calls": [{}]}], "only assistant"),
    ([{"role": "tool", "content": "x"}], "tool_call_id is required"),
    ([{"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": "f", "arguments": "{not json"}}]}], r"tool_calls\[0\].function.arguments"),
    ([{"role": "assistant", "tool_calls": [{"type": "function", "function": {
        "name": "f", "arguments": "[1]"}}]}], "must be a JSON object"),
    ([{"role": "assistant", "tool_calls": [{"type": "function", "function": {"arguments": "{}"}}]}],
     r"function.name must be a string"),
    ([{"role": "assistant", "tool_calls": "x"}], "tool_calls must be a list"),
])
def test_bad_messages_name_the_field(raw, match):
    with pytest.raises(ChatError, match=match):
        messages_from_openai(raw)


@pytest.mark.parametrize("raw, match", [
    ({"type": "function"}, "tools must be a list"),
    ([{"type": "retrieval"}], r"tools\[0\] must be an object with type 'function'"),
    ([{"type": "function", "function": {"name": 1}}], r"tools\[0\].function.name"),
    ([{"type": "function", "function": {"name": "f", "parameters": []}}], "JSON schema"),
    ([WEATHER, WEATHER], "appears twice"),
])
def test_bad_tools_name_the_field(raw, match):
    with pytest.raises(ChatError, match=match):
        tools_from_openai(raw)


@pytest.mark.parametrize("raw, tools, match", [
    ("sometimes", [WEATHER], "tool_choice must be"),
    ("required", [], "needs tools"),
    ({"type": "function", "function": {"name": "other"}}, [WEATHER], "not among the tools"),
    ({"type": "function", "function": {}}, [WEATHER], "tool_choice.function.name"),
])
def test_bad_tool_choice(raw, tools, match):
    with pytest.raises(ChatError, match=match):
        tool_choice_from_openai(raw, tools_from_openai(tools))


def test_typed_messages_refuse_impossible_combinations():
    with pytest.raises(ChatError, match="only assistant messages have tool_calls"):
        Message("user", "x", tool_calls=(ToolCall("f", {}),))
    with pytest.raises(ChatError, match="reasoning_content"):
        Message("user", "x", reasoning_content="r")
    with pytest.raises(ChatError, match="role"):
        Message("bot", "x")
