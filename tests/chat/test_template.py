"""Chat templates rendered as `transformers`' `apply_chat_template` renders them: the bundled
Step-3 template over many conversations (every role, tools, tool_choice, generation prompt),
other templates (namespaces, loop controls, named templates, template files), token ids."""

from __future__ import annotations

import json
import shutil

import pytest

from step3_trt.chat.messages import (ImagePart, Message, NamedToolChoice, TextPart, Tool,
                                     ToolCall)
from step3_trt.chat.prompt import ChatFormat
from step3_trt.chat.template import ChatError, ChatTemplate
from step3_trt.tokenizer import BOS, Step3Tokenizer
from tests.conftest import REPO

transformers = pytest.importorskip("transformers")

BUNDLED = REPO / "models" / "step3-tiny"
WEATHER = Tool("get_weather", {"type": "object", "properties": {
    "city": {"type": "string", "description": "City name, e.g. Zürich"},
    "days": {"type": "integer"}, "metric": {"type": "boolean"}}, "required": ["city"]},
    "Current weather and a forecast")
SEARCH = Tool("search", {"type": "object", "properties": {"q": {"type": "string"},
                                                          "filters": {"type": "object"}}})
CALL = ToolCall("get_weather", {"city": "Zürich", "days": 3, "metric": True}, "call_1")
CONVERSATIONS = {
    "user only": [Message("user", "Hi")],
    "system + user": [Message("system", "You are a helpful assistant."),
                      Message("user", "Write a haiku about rain.")],
    "multi-turn": [Message("system", "Be brief."), Message("user", "2+2?"),
                   Message("assistant", "4", reasoning_content="simple sums"),
                   Message("user", "and 3+3?")],
    "tool round": [Message("user", "Weather in Zürich?"),
                   Message("assistant", None, tool_calls=(CALL,)),
                   Message("tool", '{"temp_c": 21}', tool_call_id="call_1"),
                   Message("assistant", "It is 21 °C."), Message("user", "Thanks")],
    "two calls + text": [Message("user", "Both?"),
                         Message("assistant", "Checking.", tool_calls=(
                             CALL, ToolCall("search", {"q": "rain <Zürich>",
                                                       "filters": {"year": [2024, 2025]}})))],
    "content parts": [Message("user", (TextPart("What is in "), ImagePart("data:image/png;x"),
                                       TextPart(" this picture?")))],
    "later system": [Message("user", "a"), Message("system", "new rules"),
                     Message("user", "b")],
    "multi-line": [Message("system", "line one\nline two\n"), Message("user", "  spaced  \n")],
}
TOOL_SETUPS = [((), "auto"), ((WEATHER, SEARCH), "auto"), ((WEATHER, SEARCH), "required"),
               ((WEATHER, SEARCH), "none"), ((WEATHER, SEARCH), NamedToolChoice("search"))]


@pytest.fixture(scope="module")
def ours():
    return ChatFormat(Step3Tokenizer.from_dir(BUNDLED))


@pytest.fixture(scope="module")
def theirs():
    return transformers.AutoTokenizer.from_pretrained(str(BUNDLED))


def hf_render(tok, messages, tools, tool_choice, add_generation_prompt, tokenize=False):
    choice = tool_choice.to_template() if isinstance(tool_choice, NamedToolChoice) \
        else tool_choice
    out = tok.apply_chat_template([m.to_template() for m in messages],
                                  tools=[t.to_template() for t in tools] or None,
                                  add_generation_prompt=add_generation_prompt,
                                  tokenize=tokenize, tool_choice=choice)
    return out["input_ids"] if tokenize else out


@pytest.mark.parametrize("name", CONVERSATIONS)
@pytest.mark.parametrize("tools, tool_choice", TOOL_SETUPS)
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_bundled_template_renders_as_transformers(ours, theirs, name, tools, tool_choice,
                                                  generation_prompt):
    messages = CONVERSATIONS[name]
    text = ours.render(messages, tools, tool_choice, generation_prompt)
    assert text == hf_render(theirs, messages, tools, tool_choice, generation_prompt)
    ids = ours.encode(messages, tools, tool_choice, generation_prompt)
    assert ids == hf_render(theirs, messages, tools, tool_choice, generation_prompt, True)
    assert ids[0] == ours.tokenizer.bos_token_id and ids.count(ids[0]) == 1


def test_step3_prompt_format(ours):
    """vLLM's Step-3 example prompt: BOS, the system text, then
    `<|BOT|>user\\n{message}<|EOT|><|BOT|>assistant\\n<think>\\n`."""
    text = ours.render(CONVERSATIONS["system + user"])
    assert text == (BOS + "You are a helpful assistant.<|BOT|>user\nWrite a haiku about rain."
                    "<|EOT|><|BOT|>assistant\n<think>\n")
    tools = ours.render(CONVERSATIONS["user only"], (WEATHER,), "required")
    schemas = json.dumps([WEATHER.to_template()], ensure_ascii=False)
    assert tools == (BOS + "<|BOT|>tool_json_schemas\n" + schemas + "<|EOT|>"
                     "<|BOT|>system\nCall one or more of the tools above.<|EOT|>"
                     "<|BOT|>user\nHi<|EOT|><|BOT|>assistant\n<think>\n")
    named = ours.render(CONVERSATIONS["user only"], (WEATHER, SEARCH), NamedToolChoice("search"))
    assert '"name": "search"' in named and "get_weather" not in named
    assert "tool_json_schemas" not in ours.render(CONVERSATIONS["user only"], (WEATHER,), "none")
    history = ours.render(CONVERSATIONS["tool round"], add_generation_prompt=False)
    assert ('<|BOT|>assistant\n<｜tool_calls_begin｜><｜tool_call_begin｜>function<｜tool_sep｜>'
            '<steptml:invoke name="get_weather"><steptml:parameter name="city">Zürich'
            '</steptml:parameter><steptml:parameter name="days">3</steptml:parameter>'
            '<steptml:parameter name="metric">true</steptml:parameter></steptml:invoke>'
            '<｜tool_call_end｜><｜tool_calls_end｜><|EOT|><|BOT|>tool\n{"temp_c": 21}<|EOT|>'
            ) in history
    assert "simple sums" not in ours.render(CONVERSATIONS["multi-turn"])  # reasoning dropped


@pytest.mark.parametrize("messages, tools, choice, match", [
    ([], (), "auto", "empty"),
    ([Message("user", "x")], (WEATHER,), NamedToolChoice("nope"), "not among the tools"),
    ([Message("user", "x")], (), "required", "needs tools"),
])
def test_bad_conversations_are_one_line_errors(ours, messages, tools, choice, match):
    with pytest.raises(ChatError, match=match):
        ours.render(messages, tools, choice)


def test_template_errors_surface_as_chat_errors():
    t = ChatTemplate({"default": "{{ raise_exception('only user turns') }}"})
    with pytest.raises(ChatError, match="only user turns"):
        t.render([{"role": "user", "content": "x"}], special_tokens={})
    with pytest.raises(ChatError, match="does not compile"):
        ChatTemplate({"default": "{% for %}"})
    with pytest.raises(ChatError, match="JSON value"):
        t.render([{"role": "user", "content": object()}], special_tokens={})
    with pytest.raises(ChatError, match="no chat template"):
        ChatTemplate({})


# A ChatML-style template with the features HF templates use: namespace, loop controls,
# `is defined`, tojson with options, the generation tag, dict(), messages' None keys dropped.
OTHER = """{%- set ns = namespace(n=0, sys='') -%}
{%- for m in messages -%}
{%- if m.role == 'system' %}{% set ns.sys = m.content %}{% continue %}{% endif -%}
{%- set ns.n = ns.n + 1 -%}
<|im_start|>{{ m.role }}{% if m.name is defined %} ({{ m.name }}){% endif %}
{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}{{ m.content }}{% endif %}
{%- if m.tool_calls is defined %}{{ m.tool_calls | tojson(indent=2, sort_keys=true) }}{% endif %}
{%- if m.reasoning_content is defined %}[r:{{ m.reasoning_content }}|{{ m.thinking }}]{% endif %}
<|im_end|>
{% if ns.n > 3 %}{% break %}{% endif -%}
{%- endfor -%}
{{ dict(sys=ns.sys, turns=ns.n, eos=eos_token, extra=flag | default('none')) | tojson }}
{%- if tools %}{% for t in tools %}[{{ t.function.name }}]{% endfor %}{% endif -%}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif -%}"""


def test_other_templates_render_as_transformers(tmp_path, theirs):
    d = tmp_path / "other"
    shutil.copytree(BUNDLED, d, ignore=shutil.ignore_patterns("*.safetensors*"))
    config = json.loads((d / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "default", "template": OTHER},
                               {"name": "tool_use", "template": "TOOLS " + OTHER}]
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    hf = transformers.AutoTokenizer.from_pretrained(str(d))
    tok = Step3Tokenizer.from_dir(d)
    template = ChatTemplate(tok.chat_templates)
    conversations = [[m.to_template() for m in c] for c in CONVERSATIONS.values()]
    conversations.append([{"role": "user", "content": "x", "name": None},
                          {"role": "assistant", "content": "y", "thinking": "t"}])
    for messages in conversations:
        for tools in (None, [WEATHER.to_template()]):
            for gen in (True, False):
                for extra in ({}, {"flag": "on"}):
                    got = template.render(messages, special_tokens=tok.special_tokens,
                                          tools=tools, add_generation_prompt=gen, **extra)
                    want = hf.apply_chat_template(messages, tools=tools, tokenize=False,
                                                  add_generation_prompt=gen, **extra)
                    assert got == want
                    assert got.startswith("TOOLS") == (tools is not None)
    # A chat_template.jinja file replaces tokenizer_config.json's templates, as in transformers.
    (d / "chat_template.jinja").write_text("FILE {{ messages | length }}")
    tok = Step3Tokenizer.from_dir(d)
    assert tok.chat_templates == {"default": "FILE {{ messages | length }}"}
    messages = conversations[0]
    hf = transformers.AutoTokenizer.from_pretrained(str(d))
    assert ChatTemplate(tok.chat_templates).render(messages, special_tokens=tok.special_tokens,
                                                   tools=[WEATHER.to_template()]) == \
        hf.apply_chat_template(messages, tools=[WEATHER.to_template()], tokenize=False) == "FILE 1"


def test_underscore_namespace_attributes_are_refused():
    t = ChatTemplate({"default": "{% set ns = namespace(_x=1) %}{{ ns._x }}"})
    with pytest.raises(ChatError):
        t.render([{"role": "user", "content": "x"}], special_tokens={})
