"""The real tritonserver on CPU with the AFD job behind it: HTTP and gRPC, streaming and not,
give the reference model's greedy output; stop and bad words; seeded sampling repeats."""

import pytest

from tests.serve.clients import grpc_stream, http_generate, http_stream

pytestmark = pytest.mark.slow
PROMPT = "Return a new list containing"
N = 24


def test_http_generate_gives_the_reference_greedy_output(server, reference):
    ids, text = reference([PROMPT], N)[0]
    status, body = http_generate(server.http, {"text_input": PROMPT, "max_tokens": N})
    assert status == 200, body
    assert body["output_ids"] == ids
    assert body["text_output"] == text
    assert body["finish_reason"] == ("stop" if len(ids) < N else "length")
    assert body["completion_tokens"] == len(ids)
    assert body["prompt_tokens"] == 6  # BOS + 5 tokens


def test_http_generate_stream_streams_the_reference_output(server, reference):
    ids, text = reference([PROMPT], N)[0]
    events = http_stream(server.http, {"text_input": PROMPT, "max_tokens": N, "stream": True})
    assert len(events) > 2  # token by token, not one response
    assert "".join(e["text_output"] for e in events) == text
    streamed = []
    for e in events:
        streamed += e["output_ids"] if isinstance(e["output_ids"], list) else [e["output_ids"]]
    assert streamed == ids
    assert "finish_reason" in events[-1] and "finish_reason" not in events[0]


@pytest.mark.parametrize("stream", [True, False])
def test_grpc_gives_the_reference_output(server, reference, stream):
    ids, text = reference([PROMPT], N)[0]
    out = grpc_stream(server.grpc, {"text_input": PROMPT, "max_tokens": N, "stream": stream})
    assert out.error is None
    assert out.text == text and out.ids == ids
    assert len(out.texts) > 2 if stream else len(out.texts) == 1


def test_stop_words_end_the_text_before_the_stop_word(server, reference):
    _, text = reference([PROMPT], N)[0]
    stop = text.split()[2]  # a word the greedy output reaches
    status, body = http_generate(server.http, {"text_input": PROMPT, "max_tokens": N,
                                               "stop_words": [stop]})
    assert status == 200, body
    assert body["finish_reason"] == "stop"
    assert body["text_output"] == text[:text.index(stop)]


def test_bad_words_ban_the_greedy_token(server, reference):
    ids, text = reference([PROMPT], N)[0]
    first = text.split()[0]
    out = grpc_stream(server.grpc, {"text_input": PROMPT, "max_tokens": 4,
                                    "bad_words": [" " + first]})
    assert out.error is None
    assert out.ids[0] != ids[0]
    assert not out.text.startswith(" " + first)


def test_seeded_sampling_repeats_and_min_length_holds(server):
    body = {"text_input": "The socket module", "max_tokens": 12, "min_length": 12,
            "temperature": 1.0, "top_k": 50, "top_p": 0.9, "seed": 7}
    first = http_generate(server.http, body)[1]
    second = http_generate(server.http, body)[1]
    assert first["output_ids"] == second["output_ids"]
    assert first["completion_tokens"] == 12 and first["finish_reason"] == "length"
