"""The OpenAI server's pure parts, without a server: output tokens -> reasoning, content and
tool calls (streamed and whole agree; an assistant turn rendered by the chat template parses
back to its calls), end-of-sequence ids kept out of the text, sampling defaults from
generation_config.json, and the request checks that need no job."""

import json

import pytest

from step3_trt.chat.messages import messages_from_openai, tools_from_openai
from step3_trt.chat.prompt import ChatFormat
from step3_trt.chat.tokens import END_OF_TURN
from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.generation_config import GenerationConfig
from step3_trt.presets import DEFAULT_CHECKPOINT
from step3_trt.sampling import SamplingParams
from step3_trt.serve.openai.body import Body, parse_json
from step3_trt.serve.openai.chat import ChatStream, chat_body, parse_chat
from step3_trt.serve.openai.completions import parse_completion
from step3_trt.serve.openai.envelope import Envelope
from step3_trt.serve.openai.errors import ApiError
from step3_trt.serve.openai.model import ServedModel
from step3_trt.serve.openai.output import OutputText
from step3_trt.serve.request import Limits
from step3_trt.tokenizer import load_tokenizer

TOKENIZER = load_tokenizer(DEFAULT_CHECKPOINT)
CONFIG = CheckpointReader(DEFAULT_CHECKPOINT).config
MODEL = ServedModel("step3", TOKENIZER, ChatFormat(TOKENIZER), Limits.of(TOKENIZER, 1024),
                    GenerationConfig.from_dir(DEFAULT_CHECKPOINT, CONFIG), CONFIG.vocab_size)
EOT = TOKENIZER.token_id(END_OF_TURN)
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "days": {"type": "integer"}}}}}]
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 3}'}}
GREEDY = SamplingParams(max_new_tokens=64, greedy=True)


def chat_request(**fields):
    return parse_chat({"model": "step3", "messages": [{"role": "user", "content": "Weather?"}],
                       **fields}, MODEL)


def assistant_turn_ids() -> list[int]:
    """The assistant turn that the chat template renders for CALL, as the model would write it
    after the generation prompt: reasoning, `</think>`, content, the call block, `<|EOT|>`."""
    turn = {"role": "assistant", "content": "I will look it up.", "tool_calls": [CALL]}
    before = MODEL.chat.render(messages_from_openai([{"role": "user", "content": "Weather?"}]),
                               tools_from_openai(TOOLS), add_generation_prompt=False)
    after = MODEL.chat.render(messages_from_openai([{"role": "user", "content": "Weather?"},
                                                    turn]),
                              tools_from_openai(TOOLS), add_generation_prompt=False)
    body = after[len(before):].removeprefix("<|BOT|>assistant\n").removesuffix(END_OF_TURN)
    return TOKENIZER.encode("The user wants Paris.</think>" + body,
                            add_special_tokens=False) + [EOT]


def stream_deltas(request, ids: list[int], envelope: Envelope) -> tuple[list[dict], int]:
    stream = ChatStream(MODEL, GREEDY, request, envelope)
    deltas = []
    for token in ids[:-1]:  # the job streams every token but the last, which comes with the result
        deltas += stream.push([token])
    return deltas + stream.finish(ids), stream.calls


def test_a_rendered_tool_call_parses_back_streamed_and_whole():
    request = chat_request(tools=TOOLS)
    ids = assistant_turn_ids()
    envelope = Envelope("chatcmpl", "step3")
    deltas, calls = stream_deltas(request, ids, envelope)
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "The user wants Paris."
    assert "".join(d.get("content", "") for d in deltas) == "I will look it up."
    streamed = [c for d in deltas for c in d.get("tool_calls", [])]
    assert calls == 1 and len(streamed) == 1
    assert streamed[0]["index"] == 0 and streamed[0]["function"]["name"] == "get_weather"
    assert json.loads(streamed[0]["function"]["arguments"]) == {"city": "Paris", "days": 3}
    text = OutputText(MODEL, GREEDY, keep_special_tokens=True).finish(ids)
    whole = chat_body(envelope, text, request, "stop", {})["choices"][0]
    assert whole["finish_reason"] == "tool_calls"
    message = whole["message"]
    assert message["reasoning_content"] == "The user wants Paris."
    assert message["content"] == "I will look it up."
    assert message["tool_calls"] == [{k: v for k, v in streamed[0].items() if k != "index"}]


def test_without_tool_parsing_the_delimiters_are_dropped_and_no_call_is_made():
    request = chat_request(tools=TOOLS, tool_choice="none")
    assert request.parsed_tools is None
    deltas, calls = stream_deltas(request, assistant_turn_ids(), Envelope("chatcmpl", "step3"))
    content = "".join(d.get("content", "") for d in deltas)
    assert calls == 0 and "tool_calls" not in "".join(json.dumps(d) for d in deltas)
    assert content.startswith("I will look it up.") and "steptml:invoke" in content
    assert "｜" not in content  # the special delimiter tokens are not text here


def test_end_of_sequence_ids_end_the_output_but_are_not_text():
    ids = TOKENIZER.encode(" a list", add_special_tokens=False)
    for eos in MODEL.defaults.eos_token_ids:
        for keep in (True, False):
            out = OutputText(MODEL, GREEDY, keep_special_tokens=keep)
            assert out.push(ids[:1]) + out.finish(ids + [eos]) == " a list"


def test_stop_strings_cut_the_text():
    params = SamplingParams(max_new_tokens=8, greedy=True, stop_strings=("list",))
    out = OutputText(MODEL, params, keep_special_tokens=False)
    assert out.finish(TOKENIZER.encode(" a list of", add_special_tokens=False)) == " a "


def test_sampling_defaults_come_from_generation_config():
    request = parse_completion({"model": "step3", "prompt": "x"}, MODEL)
    params = request.sampling.params(10, MODEL, "prompt")
    assert (params.is_greedy, params.temperature, params.top_p, params.top_k,
            params.max_new_tokens) == (False, 1.0, 1.0, 0, 1014)  # OpenAI's defaults, the rest
    shipped = GenerationConfig.from_parts({"temperature": 0.6, "top_p": 0.95, "top_k": 20,
                                           "max_new_tokens": 7}, CONFIG, TOKENIZER)
    model = ServedModel("step3", TOKENIZER, MODEL.chat, MODEL.limits, shipped, CONFIG.vocab_size)
    params = request.sampling.params(10, model, "prompt")
    assert (params.temperature, params.top_p, params.top_k, params.max_new_tokens) == \
        (0.6, 0.95, 20, 7)
    chosen = parse_completion({"model": "step3", "prompt": "x", "temperature": 0,
                               "top_p": 0.5, "max_tokens": 3, "seed": 9}, MODEL)
    params = chosen.sampling.params(10, model, "prompt")
    assert params.is_greedy and (params.top_p, params.max_new_tokens, params.seed) == (0.5, 3, 9)


def test_a_prompt_that_fills_the_context_is_refused_after_tokenizing():
    request = parse_completion({"model": "step3", "prompt": "x"}, MODEL)
    with pytest.raises(ApiError, match="leaves no room for a completion in the context") as e:
        request.sampling.params(1024, MODEL, "prompt")
    assert e.value.param == "prompt"
    sized = parse_completion({"model": "step3", "prompt": "x", "max_tokens": 100}, MODEL)
    with pytest.raises(ApiError, match=r"\(1000 tokens\) \+ max_tokens \(100\) exceeds") as e:
        sized.sampling.params(1000, MODEL, "prompt")
    assert e.value.param == "max_tokens"


@pytest.mark.parametrize("raw, match", [
    (b'{"a": NaN}', "NaN is not a JSON value"),
    (b'{"a": Infinity}', "Infinity is not a JSON value"),
    (b"[" * 100_000, "nested too deeply"),
    (b"\xff", "not valid JSON"),
])
def test_body_json_is_strict(raw, match):
    with pytest.raises(ApiError, match=match) as e:
        parse_json(raw)
    assert e.value.status == 400


def test_every_field_is_read_or_refused():
    body = Body({"model": "step3", "functions": [], "store": True})
    body.string("model")
    with pytest.raises(ApiError, match="unrecognized request argument.*functions, store"):
        body.finish()
