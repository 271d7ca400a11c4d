"""Prefix caching through `step3-trt serve`: the second turn of a conversation computes only what
the first did not (the Triton metrics count it exactly: looked-up, cache-hit and prefill
tokens), and both turns give the reference model's greedy output."""

import time

import pytest

from step3_trt.tokenizer import load_tokenizer
from tests.serve.clients import http_generate, metrics, total

pytestmark = pytest.mark.slow
SYSTEM = ("You are a careful assistant for the Python standard library. Answer with the name of "
          "the function and one sentence on what it returns, nothing else.\n")
N = 12
COUNTERS = ("step3_prefix_cache_query_tokens_total", "step3_prefix_cache_hit_tokens_total",
            "step3_prefill_tokens_total")


def counters(server) -> dict[str, float]:
    series = metrics(f"http://127.0.0.1:{server.metrics_port}")
    return {name: total(series, name) for name in COUNTERS}


def settled(server, previous: dict[str, float]) -> dict[str, float]:
    """The counters once a heartbeat has carried the last step's report (they stop moving)."""
    server.wait_idle()
    deadline, now = time.monotonic() + 60, counters(server)
    while now == previous and time.monotonic() < deadline:
        time.sleep(0.5)
        now = counters(server)
    return now


def test_a_second_turn_computes_only_its_new_tokens(server, reference, bundled_engines):
    tokenizer = load_tokenizer(bundled_engines)
    first = SYSTEM + "User: which function returns a new sorted list?\nAssistant:"
    (ids1, text1), = reference([first], N)
    server.wait_idle()
    before = counters(server)
    status, body = http_generate(server.http, {"text_input": first, "max_tokens": N})
    assert status == 200 and body["output_ids"] == ids1, body
    after_first = settled(server, before)

    second = first + text1 + "\nUser: and which one reverses a list in place?\nAssistant:"
    (ids2, _), = reference([second], N)
    status, body = http_generate(server.http, {"text_input": second, "max_tokens": N})
    assert status == 200 and body["output_ids"] == ids2, body
    after = settled(server, after_first)

    p1, p2 = len(tokenizer.encode(first)), len(tokenizer.encode(second))
    looked_up, hit, computed = (after[k] - after_first[k] for k in COUNTERS)
    assert looked_up == p2
    # every full block of the first turn's prompt is found again, but possibly the block where
    # its text meets the reply (tokens can merge across that boundary)
    assert hit % 16 == 0 and hit >= 16 * ((p1 - 2) // 16) > 0
    assert computed == p2 - hit  # only what the cache did not hold
