"""Every malformed request to the OpenAI server gets OpenAI's error shape (`{"error":
{"message", "type", "param", "code"}}`) with the right status and names the field, whatever the
endpoint and whether it asked to stream; the server stays ready and the next request gets the
reference model's exact answer."""

import http.client
import json

import pytest

from tests.serve.clients import metrics, total
from tests.serve.openai_client import client

pytestmark = pytest.mark.slow
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
PROMPT = "Return a new list containing"


def chat(**fields) -> dict:
    return {"model": "step3", "messages": USER, **fields}


def completion(**fields) -> dict:
    return {"model": "step3", "prompt": "hi", **fields}


# (path, body, status, param); a body that is bytes is sent as it is
CASES = [
    (COMPLETIONS, b'{"model": "step3", "prompt": ', 400, None),
    (COMPLETIONS, b"[1, 2]", 400, None),
    (COMPLETIONS, b'{"model": "step3", "prompt": "x", "temperature": NaN}', 400, None),
    (COMPLETIONS, b"[" * 50_000, 400, None),
    (COMPLETIONS, {"prompt": "hi"}, 400, "model"),
    (COMPLETIONS, completion(model=5), 400, "model"),
    (COMPLETIONS, completion(model="gpt-4o"), 404, "model"),
    (CHAT, chat(model="gpt-4o", stream=True), 404, "model"),
    (COMPLETIONS, {"model": "step3"}, 400, "prompt"),
    (COMPLETIONS, completion(prompt=""), 400, "prompt"),
    (COMPLETIONS, completion(prompt=5), 400, "prompt"),
    (COMPLETIONS, completion(prompt=[]), 400, "prompt"),
    (COMPLETIONS, completion(prompt=["a", "b"]), 400, "prompt"),
    (COMPLETIONS, completion(prompt=[1, 99999]), 400, "prompt"),
    (COMPLETIONS, completion(prompt=[1, True]), 400, "prompt"),
    (COMPLETIONS, completion(prompt="x" * 60_000), 400, "prompt"),  # > 1023 x 49 bytes
    (COMPLETIONS, completion(prompt="a " * 1100), 400, "prompt"),  # fits in bytes, not tokens
    (COMPLETIONS, completion(prompt="a " * 1000, max_tokens=100), 400, "max_tokens"),
    (COMPLETIONS, completion(max_tokens=0), 400, "max_tokens"),
    (COMPLETIONS, completion(max_tokens=1024), 400, "max_tokens"),
    (COMPLETIONS, completion(max_tokens="many"), 400, "max_tokens"),
    (COMPLETIONS, completion(max_tokens=2.5), 400, "max_tokens"),
    (COMPLETIONS, completion(temperature=-1), 400, "temperature"),
    (COMPLETIONS, completion(temperature=2.5), 400, "temperature"),
    (COMPLETIONS, completion(temperature="hot"), 400, "temperature"),
    (COMPLETIONS, completion(top_p=0), 400, "top_p"),
    (COMPLETIONS, completion(top_p=1.5), 400, "top_p"),
    (COMPLETIONS, completion(seed=-1), 400, "seed"),
    (COMPLETIONS, completion(seed=2 ** 64), 400, "seed"),
    (COMPLETIONS, completion(stop=5), 400, "stop"),
    (COMPLETIONS, completion(stop=[1]), 400, "stop"),
    (COMPLETIONS, completion(stop=[""]), 400, "stop"),
    (COMPLETIONS, completion(stop=["s"] * 33), 400, "stop"),
    (COMPLETIONS, completion(stop=["s" * 300]), 400, "stop"),
    (COMPLETIONS, completion(n=2), 400, "n"),
    (COMPLETIONS, completion(n=2, stream=True), 400, "n"),
    (COMPLETIONS, completion(best_of=2), 400, "best_of"),
    (COMPLETIONS, completion(echo=True), 400, "echo"),
    (COMPLETIONS, completion(suffix="end"), 400, "suffix"),
    (COMPLETIONS, completion(logprobs=1), 400, "logprobs"),
    (COMPLETIONS, completion(presence_penalty=0.5), 400, "presence_penalty"),
    (COMPLETIONS, completion(frequency_penalty=3), 400, "frequency_penalty"),
    (COMPLETIONS, completion(logit_bias={"5": 10}), 400, "logit_bias"),
    (COMPLETIONS, completion(stream="yes"), 400, "stream"),
    (COMPLETIONS, completion(stream_options={"include_usage": True}), 400, "stream_options"),
    (COMPLETIONS, completion(stream=True, stream_options={"usage": True}), 400,
     "stream_options"),
    (COMPLETIONS, completion(stream=True, stream_options={"include_usage": 1}), 400,
     "stream_options"),
    (COMPLETIONS, completion(foo=1), 400, "foo"),
    (CHAT, {"model": "step3"}, 400, "messages"),
    (CHAT, chat(messages=[]), 400, "messages"),
    (CHAT, chat(messages="hi"), 400, "messages"),
    (CHAT, chat(messages=[{"role": "robot", "content": "hi"}]), 400, "messages"),
    (CHAT, chat(messages=[{"role": "user", "content": 5}]), 400, "messages"),
    (CHAT, chat(messages=[{"role": "user"}]), 400, "messages"),
    (CHAT, chat(messages=[{"role": "tool", "content": "x"}]), 400, "messages"),
    (CHAT, chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]), 400,
     "messages"),
    (CHAT, chat(messages=[{"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]), 400,
     "messages"),
    (CHAT, chat(messages=[{"role": "user", "content": "x" * 60_000}]), 400, "messages"),
    (CHAT, chat(tools="f"), 400, "tools"),
    (CHAT, chat(tools=[{"type": "function"}]), 400, "tools"),
    (CHAT, chat(tools=TOOLS * 2), 400, "tools"),
    (CHAT, chat(tools=TOOLS, tool_choice="always"), 400, "tool_choice"),
    (CHAT, chat(tool_choice="required"), 400, "tool_choice"),
    (CHAT, chat(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "g"}}),
     400, "tool_choice"),
    (CHAT, chat(logprobs=True), 400, "logprobs"),
    (CHAT, chat(top_logprobs=2), 400, "top_logprobs"),
    (CHAT, chat(response_format={"type": "json_object"}), 400, "response_format"),
    (CHAT, chat(parallel_tool_calls=False), 400, "parallel_tool_calls"),
    (CHAT, chat(max_tokens=5, max_completion_tokens=6), 400, "max_completion_tokens"),
    (CHAT, chat(functions=[]), 400, "functions"),
    (CHAT, chat(n=3, stream=True), 400, "n"),
]
ROUTES = [("GET", "/v1/nope", 404), ("POST", "/v1/embeddings", 404),
          ("GET", CHAT, 405), ("GET", "/v1/models/gpt-4o", 404)]


def send(server, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.openai_port, timeout=300)
    try:
        conn.request(method, path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def assert_openai_error(status: int, body: dict, expected_status: int, param) -> None:
    assert status == expected_status, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"]
    assert "\n" not in error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, body


def test_every_malformed_request_gets_an_openai_error_and_the_server_serves_on(server,
                                                                              reference):
    before = total(metrics(server.openai_url), "step3_openai_requests_finished_total")
    for path, body, status, param in CASES:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        got, answer = send(server, "POST", path, raw)
        assert_openai_error(got, answer, status, param)
    for method, path, status in ROUTES:
        got, answer = send(server, method, path, b"{}" if method == "POST" else None)
        assert_openai_error(got, answer, status, "model" if path.startswith("/v1/models")
                            else None)
    after = total(metrics(server.openai_url), "step3_openai_requests_finished_total")
    assert after - before == len(CASES)  # each counted once, as rejected
    assert server.ready()
    ids, text = reference([PROMPT], 16)[0]
    out = client(server).completions.create(model="step3", prompt=PROMPT, max_tokens=16,
                                            temperature=0)
    assert out.choices[0].text == text and out.usage.completion_tokens == len(ids)


def test_a_body_larger_than_any_request_that_fits_is_413(server):
    body = json.dumps(completion(prompt="x" * 400_000)).encode()  # > 6 x 1023 x 49 + 64 KiB
    got, answer = send(server, "POST", COMPLETIONS, body)
    assert got == 413 and answer["error"]["code"] == "request_too_large", answer
    assert server.ready()


def test_the_official_client_raises_its_own_error_classes(server):
    import openai

    with pytest.raises(openai.BadRequestError) as bad:
        client(server).chat.completions.create(model="step3", messages=USER, n=2)
    assert bad.value.param == "n" and bad.value.code == "unsupported"
    assert "one choice per request" in bad.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        client(server).completions.create(model="gpt-4o", prompt="hi")
    assert missing.value.code == "model_not_found"
