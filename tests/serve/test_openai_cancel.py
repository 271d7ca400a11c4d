"""A client that goes away cancels its request in the AFD job: the owning attention rank
retires it and frees its KV blocks (tritonserver's `step3_kv_cache_blocks_used`, from the
coordinator's heartbeats, falls back to 0 long before the request could have finished), and
the OpenAI server counts it `cancelled`. Mid-stream (the official client closing its stream)
and while waiting for a whole answer."""

import http.client
import json
from functools import partial

import pytest

from tests.serve.clients import kv_blocks_used, metrics
from tests.serve.openai_client import client
from tests.serve.server import wait_for as wait_until

wait_for = partial(wait_until, timeout_s=120)
pytestmark = pytest.mark.slow
LONG = 900  # tokens: about 20 s of decoding on the 2-core machine, never reached here
BODY = {"model": "step3", "prompt": "Return a new list containing", "max_tokens": LONG,
        "temperature": 0}






def openai_metric(server, key: str) -> float:
    return metrics(server.openai_url).get(key, 0.0)


def cancelled(server, endpoint: str) -> float:
    return openai_metric(server, f'step3_openai_requests_finished_total{{endpoint="{endpoint}",'
                                 f'reason="cancelled"}}')


def generated(server) -> float:
    return openai_metric(server, "step3_openai_completion_tokens_total")


def test_closing_a_stream_frees_the_request(server):
    server.wait_idle()
    before, tokens = cancelled(server, "chat"), generated(server)
    stream = client(server).chat.completions.create(
        model="step3", messages=[{"role": "user", "content": "Return a new list"}],
        max_tokens=LONG, temperature=0, stream=True)
    with stream:
        for i, _chunk in enumerate(stream):
            if i == 3:
                break
        wait_for(lambda: kv_blocks_used(server) > 0, "the request holds no KV blocks")
    wait_for(lambda: cancelled(server, "chat") == before + 1, "the request was not cancelled")
    wait_for(lambda: kv_blocks_used(server) == 0, "its KV blocks were not freed")
    assert generated(server) - tokens < LONG  # it ended early
    assert openai_metric(server, "step3_openai_requests_in_flight") == 0
    assert server.ready()


def test_disconnecting_while_waiting_for_a_whole_answer_frees_the_request(server):
    server.wait_idle()
    before, tokens = cancelled(server, "completions"), generated(server)
    conn = http.client.HTTPConnection("127.0.0.1", server.openai_port, timeout=300)
    conn.request("POST", "/v1/completions", json.dumps(BODY),
                 {"Content-Type": "application/json"})
    wait_for(lambda: openai_metric(server, "step3_openai_requests_in_flight") == 1,
             "the request did not reach the job")
    wait_for(lambda: kv_blocks_used(server) > 0, "the request holds no KV blocks")
    conn.sock.close()  # gone without reading the answer
    conn.close()
    wait_for(lambda: cancelled(server, "completions") == before + 1,
             "the request was not cancelled")
    wait_for(lambda: kv_blocks_used(server) == 0, "its KV blocks were not freed")
    assert generated(server) - tokens < LONG
    assert server.ready()
