"""Bounded work before admission: a prompt too long to fit is refused from its size alone, long
prompts are tokenized off Triton's request thread, word lists are capped, and a short request
sent alongside is answered exactly. Where tritonserver 2.51 itself decides the answer (JSON
conversion, HTTP status of a model error), strict xfails say what we would want."""

import threading

import pytest

from step3_trt.serve.request import MAX_WORD_BYTES, MAX_WORDS
from tests.serve.clients import http_generate

pytestmark = pytest.mark.slow
PROMPT = "Return a new list containing"
HUGE = "word " * 1_000_000  # 5 MB: took 7 s to tokenize, stalling every other request


def concurrently(server, bodies: list[dict]) -> list[tuple[int, dict]]:
    out: list = [None] * len(bodies)

    def send(i: int) -> None:
        out[i] = http_generate(server.http, bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return out


def test_huge_and_long_prompts_get_their_400_and_a_short_one_its_answer(server, reference):
    ids, text = reference([PROMPT], 24)[0]
    long = "word " * 9_000  # 45 KB: within the byte bound, tokenized (bulk lane), then refused
    huge, longer, short = concurrently(server, [
        {"text_input": HUGE, "max_tokens": 4}, {"text_input": long, "max_tokens": 4},
        {"text_input": PROMPT, "max_tokens": 24}])
    assert huge[0] == 400 and huge[1]["error"].startswith(
        "text_input (5000000 bytes) cannot fit in the context length 1024 with max_tokens 4")
    assert longer[0] == 400
    assert longer[1]["error"].startswith("prompt (9002 tokens) + max_tokens (4)")
    assert short[0] == 200 and (short[1]["output_ids"], short[1]["text_output"]) == (ids, text)


@pytest.mark.parametrize("body, message", [
    ({"stop_words": ["x"] * (MAX_WORDS + 1)}, f"stop_words holds {MAX_WORDS + 1} entries"),
    ({"bad_words": ["y"] * (MAX_WORDS + 1)}, f"bad_words holds {MAX_WORDS + 1} entries"),
    ({"stop_words": ["z" * (MAX_WORD_BYTES + 1)]},
     f"stop_words has an entry of {MAX_WORD_BYTES + 1} bytes"),
    ({"bad_words": ["é" * MAX_WORD_BYTES]}, f"bad_words has an entry of {2 * MAX_WORD_BYTES}"),
])
def test_word_lists_are_capped(server, body, message):
    status, reply = http_generate(server.http, {"text_input": PROMPT, "max_tokens": 4, **body})
    assert status == 400 and message in reply["error"]


TRITON_DECIDES = [
    ({"text_input": PROMPT, "max_tokens": 2 ** 32 + 5}, 400),  # arrives as 5
    ({"text_input": PROMPT, "max_tokens": "many"}, 400),
    ({"text_input": 5, "max_tokens": 4}, 400),
    ({"text_input": PROMPT, "max_tokens": 4, "stream": True}, 400),
]


@pytest.mark.xfail(strict=True, reason="tritonserver 2.51's generate endpoint converts JSON "
                   "itself: INT32 inputs are cut to 32 bits, a value of the wrong JSON type is "
                   "an INTERNAL error (500), and the status is fixed by the first of several "
                   "responses (200) (http_server.cc); step3 never sees the request")
@pytest.mark.parametrize("body, status", TRITON_DECIDES)
def test_triton_answers_bad_json_with_a_client_error(server, body, status):
    assert http_generate(server.http, body)[0] == status


def test_the_server_survives_what_triton_decides(server, reference):
    for body, _ in TRITON_DECIDES:
        http_generate(server.http, body)
    assert server.ready()
    ids, text = reference([PROMPT], 24)[0]
    status, reply = http_generate(server.http, {"text_input": PROMPT, "max_tokens": 24})
    assert status == 200 and (reply["output_ids"], reply["text_output"]) == (ids, text)
