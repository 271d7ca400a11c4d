"""32 concurrent streaming clients share the continuous-batching scheduler and each get their
complete, correct answer; a cancelled or disconnected request frees its KV blocks."""

from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest

from tests.serve.clients import grpc_stream, http_stream, kv_blocks_used, metrics
from tests.serve.server import wait_for as wait_until

wait_for = partial(wait_until, timeout_s=120)
pytestmark = pytest.mark.slow
WORDS = ["Return", "The", "Create", "This", "Get", "A", "Set", "If"]
PROMPTS = [f"{WORDS[i % 8]} {['list', 'file', 'socket', 'module'][i // 8]}" for i in range(32)]


def test_32_concurrent_streams_each_get_the_reference_output(server, reference):
    expected = reference(PROMPTS, 16)
    with ThreadPoolExecutor(32) as pool:
        outs = list(pool.map(lambda p: grpc_stream(server.grpc, {"text_input": p,
                                                                 "max_tokens": 16,
                                                                 "stream": True}), PROMPTS))
    assert [o.error for o in outs] == [None] * 32
    assert [(o.ids, o.text) for o in outs] == expected
    assert all(o.finish_reason in ("length", "stop") for o in outs)




def cancelled_count(server) -> float:
    return metrics(f"http://127.0.0.1:{server.metrics_port}").get(
        'step3_requests_finished_total{reason="cancelled"}', 0.0)




@pytest.mark.parametrize("how", ["grpc cancel", "http disconnect"])
def test_a_cancelled_or_disconnected_request_frees_its_kv_blocks(server, how):
    before = cancelled_count(server)
    body = {"text_input": "Return a new list containing", "max_tokens": 900,
            "min_length": 900, "stream": True}
    if how == "grpc cancel":
        out = grpc_stream(server.grpc, body, cancel_after=3)
        assert len(out.texts) == 3 and out.finish_reason is None
    else:
        assert len(http_stream(server.http, body, stop_after=3)) == 3
    wait_for(lambda: cancelled_count(server) == before + 1, "the request was not cancelled")
    wait_for(lambda: kv_blocks_used(server) == 0, "KV blocks were not freed")
