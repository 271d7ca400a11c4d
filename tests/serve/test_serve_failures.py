"""A killed AFD rank: the request in flight gets an error (no hang), the model reports not
ready, the job restarts and serves correct answers again; once restarts are used up, serve
exits with an error, leaving nothing running, and a new server starts on the same ports."""

import os
import signal
import threading
import time

import pytest

from tests.serve.clients import grpc_stream, http_generate
from tests.serve.server import Server

pytestmark = pytest.mark.slow
PROMPT = "Return a new list containing"


def wait_for(condition, what: str, timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def long_request(server, out: dict) -> threading.Thread:
    body = {"text_input": PROMPT, "max_tokens": 900, "min_length": 900, "stream": True}
    thread = threading.Thread(target=lambda: out.update(r=grpc_stream(server.grpc, body)))
    thread.start()
    return thread


def test_killed_rank_errors_in_flight_goes_not_ready_and_restarts(bundled_engines, reference,
                                                                  tmp_path):
    server = Server(bundled_engines, tmp_path / "run", ["--max-restarts", "1"]).start()
    try:
        out: dict = {}
        thread = long_request(server, out)
        wait_for(lambda: server.rank_pids() and http_generate(
            server.http, {"text_input": "a", "max_tokens": 1})[0] == 200, "no answer")
        os.kill(server.rank_pids()[4], signal.SIGKILL)  # FFN rank 1
        thread.join(timeout=300)
        assert not thread.is_alive()
        assert "AFD job" in out["r"].error and out["r"].finish_reason is None
        wait_for(lambda: "FFN rank 1 (MPI rank 4) died (signal 9)" in server.output(),
                 "serve did not name the dead rank")
        assert "restarting the AFD job (1 of 1)" in server.output()
        wait_for(lambda: not server.ready() or "ready again" in server.output(), "ready")
        server.wait_ready()  # the restarted job serves again, with the same answers
        ids, text = reference([PROMPT], 24)[0]
        status, body = http_generate(server.http, {"text_input": PROMPT, "max_tokens": 24})
        assert status == 200 and (body["output_ids"], body["text_output"]) == (ids, text)
        # no restarts left: the next failure ends serve with an error, nothing left behind
        os.kill(server.rank_pids()[2], signal.SIGKILL)  # attention rank 1
        assert server.proc.wait(timeout=300) == 1
        assert "no restarts left (--max-restarts 1)" in server.output()
    finally:
        server.stop()
    # a new server on the same ports: the failed one released everything
    again = Server(bundled_engines, tmp_path / "again").start(server.ports)
    try:
        status, body = http_generate(again.http, {"text_input": PROMPT, "max_tokens": 24})
        assert status == 200 and body["output_ids"] == ids
    finally:
        assert again.stop() == 0


