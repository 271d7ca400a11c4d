"""/v1/chat/completions through the official `openai` client against the real server: the
prompt is the chat template's (the reference model's greedy output on exactly those tokens
comes back), the reply's reasoning is split off at `</think>` (the bundled model never writes
it, so all of its reply is reasoning, as vLLM's step3 parser says), whole and streamed, usage
equal to the token counts; tools, tool_choice and a past tool call with its result render into
the prompt; max_completion_tokens."""

import pytest

from step3_trt.build_config import BuildConfig
from tests.serve.openai_client import chat_prompt_ids, client, expected_reply

pytestmark = pytest.mark.slow
N = 20
MESSAGES = [{"role": "system", "content": "You write Python docstrings."},
            {"role": "user", "content": "Return a new list containing"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "days": {"type": "integer"}},
                   "required": ["city"]}}}]
TOOL_TURNS = MESSAGES + [
    {"role": "assistant", "content": None, "reasoning_content": "Look it up.",
     "tool_calls": [{"id": "call_0", "type": "function",
                     "function": {"name": "get_weather",
                                  "arguments": '{"city": "Paris", "days": 2}'}}]},
    {"role": "tool", "tool_call_id": "call_0", "content": '{"sky": "clear"}'},
    {"role": "user", "content": "And tomorrow?"}]


def check_reply(reply, expected):
    assert reply.role == "assistant"
    assert reply.reasoning_content == (expected.reasoning_content or None)
    assert reply.content == expected.content
    assert reply.tool_calls is None  # the bundled model makes none


def test_a_greedy_chat_reply_is_the_reference_on_the_templated_prompt(server, reference_ids):
    prompt = chat_prompt_ids(MESSAGES)
    ids = reference_ids([prompt], N)[0]
    out = client(server).chat.completions.create(model="step3", messages=MESSAGES,
                                                 max_tokens=N, temperature=0)
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
    expected = expected_reply(ids)
    assert expected.reasoning_content  # something to compare
    check_reply(out.choices[0].message, expected)
    assert out.choices[0].finish_reason == ("stop" if len(ids) < N else "length")
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(prompt), len(ids))


def test_a_streamed_chat_reply_is_the_reference_with_reasoning_deltas(server, reference_ids):
    prompt = chat_prompt_ids(MESSAGES)
    ids = reference_ids([prompt], N)[0]
    chunks = list(client(server).chat.completions.create(
        model="step3", messages=MESSAGES, max_completion_tokens=N, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant" and deltas[0].content == ""
    reasoning = [d.reasoning_content for d in deltas if getattr(d, "reasoning_content", None)]
    assert len(reasoning) > 2  # token by token
    expected = expected_reply(ids)
    assert "".join(reasoning) == expected.reasoning_content
    assert "".join(d.content or "" for d in deltas) == (expected.content or "")
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == ("stop" if len(ids) < N else "length") and not any(reasons[:-1])
    usage = chunks[-1].usage
    assert not chunks[-1].choices and (usage.prompt_tokens, usage.completion_tokens) == \
        (len(prompt), len(ids))


@pytest.mark.parametrize("tool_choice", [None, "none", "required",
                                         {"type": "function",
                                          "function": {"name": "get_weather"}}])
@pytest.mark.parametrize("stream", [False, True])
def test_tools_and_a_past_call_render_into_the_prompt(server, reference_ids, tool_choice,
                                                      stream):
    prompt = chat_prompt_ids(TOOL_TURNS, TOOLS, tool_choice)
    ids = reference_ids([prompt], N)[0]
    extra = {} if tool_choice is None else {"tool_choice": tool_choice}
    out = client(server).chat.completions.create(
        model="step3", messages=TOOL_TURNS, tools=TOOLS, max_tokens=N, temperature=0,
        stream=stream, **({"stream_options": {"include_usage": True}} if stream else {}),
        **extra)
    parsed = TOOLS if tool_choice != "none" else None
    expected = expected_reply(ids, parsed)
    if stream:
        chunks = list(out)
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        assert "".join(getattr(d, "reasoning_content", None) or "" for d in deltas) == \
            (expected.reasoning_content or "")
        assert not any(d.tool_calls for d in deltas)
        usage = chunks[-1].usage
    else:
        check_reply(out.choices[0].message, expected)
        usage = out.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (len(prompt), len(ids))


def test_tool_choice_none_leaves_the_tools_out_of_the_prompt():
    assert len(chat_prompt_ids(TOOL_TURNS, TOOLS, "none")) < \
        len(chat_prompt_ids(TOOL_TURNS, TOOLS, "auto"))
    assert chat_prompt_ids(TOOL_TURNS, TOOLS, "none") == chat_prompt_ids(TOOL_TURNS)


def test_usage_counts_the_prompt_tokens_the_prefix_cache_served(server):
    """The same chat twice: the first computes its whole prompt, the second finds every full KV
    block of it cached on the rank the first ran on (the last prompt token is always computed),
    and usage.prompt_tokens_details.cached_tokens says so."""
    messages = [{"role": "system", "content": "A prompt no other test sends: " + "x y z " * 20},
                MESSAGES[1]]
    n = len(chat_prompt_ids(messages))
    block = BuildConfig.from_file(server.engines / "build_config.yaml").kv_cache.block_size
    first, second = (client(server).chat.completions.create(
        model="step3", messages=messages, max_tokens=2, temperature=0) for _ in range(2))
    assert first.usage.prompt_tokens == second.usage.prompt_tokens == n
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == (n - 1) // block * block > 0
