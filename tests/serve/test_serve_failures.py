"""A killed AFD rank: the request in flight gets an error (no hang), the server reports not
ready at once, a request that arrives while the job restarts is told so, the job restarts and
serves correct answers again. A hung coordinator: requests fail after the heartbeat timeout and
the job is stopped; with no restarts left serve exits with an error, leaving nothing running,
and a new server starts on the same ports."""

import os
import signal
import queue

import pytest

from step3_trt.serve import control
from tests.serve.clients import grpc_inputs, http_generate
from tests.serve.server import Server, wait_for

pytestmark = pytest.mark.slow
PROMPT = "Return a new list containing"
NOT_READY_S = 3.0  # the supervisor polls every 0.2 s; a restart takes far longer than this




def error_after_kill(server, pid: int, sig=signal.SIGKILL) -> str:
    """Start a long streaming request, signal `pid` once tokens flow, return the stream's
    error."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc)
    got: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: got.put((result, error)))
    body = {"text_input": PROMPT, "max_tokens": 900, "min_length": 900, "stream": True}
    client.async_stream_infer("step3", grpc_inputs(body), enable_empty_final_response=True)
    try:
        result, error = got.get(timeout=300)
        assert error is None  # the request is in flight, streaming
        os.kill(pid, sig)
        while error is None:  # a hang fails here
            result, error = got.get(timeout=300)
            assert error is not None or \
                not result.get_response().parameters["triton_final_response"].bool_param
        return str(error)
    finally:
        client.stop_stream()
        client.close()


def test_killed_rank_errors_in_flight_goes_not_ready_and_restarts(bundled_engines, reference,
                                                                  tmp_path):
    server = Server(bundled_engines, tmp_path / "run",
                    ["--max-restarts", "1", "--heartbeat-timeout", "5"]).start()
    try:
        error = error_after_kill(server, server.rank_pids()[4])  # FFN rank 1
        assert "the AFD job stopped" in error
        wait_for(lambda: not control.server_ready(server.http), "the server stayed ready",
                 timeout_s=NOT_READY_S)
        # step3 stays loaded, so a request during the restart gets the backend's answer, not
        # Triton's "unknown model"
        status, body = http_generate(server.http, {"text_input": PROMPT, "max_tokens": 4})
        assert not control.server_ready(server.http)  # the answer came during the restart
        assert status == 400 and body["error"].startswith(
            "step3: the AFD job is restarting after a failure (the AFD job stopped"), body
        assert body["error"].endswith("retry later")
        wait_for(lambda: "FFN rank 1 (MPI rank 4) died (signal 9)" in server.output(),
                 "serve did not name the dead rank")
        assert "restarting the AFD job (1 of 1)" in server.output()
        server.wait_ready()  # the restarted job serves again, with the same answers
        wait_for(lambda: "ready again: the AFD job restarted (1 restarts)" in server.output(),
                 "serve did not report the restart done")
        ids, text = reference([PROMPT], 24)[0]
        status, body = http_generate(server.http, {"text_input": PROMPT, "max_tokens": 24})
        assert status == 200 and (body["output_ids"], body["text_output"]) == (ids, text)
        # the first job's last words are kept: afd.log is appended per start
        log = (tmp_path / "run" / "job" / "afd.log").read_text()
        killed = log.index("process rank 4 with PID")
        assert log.index("AFD job start 1 at") < killed < log.index("AFD job start 2 at")
        # a hung coordinator: requests fail after the heartbeat timeout and the server goes
        # not ready before the job is stopped; no restarts left, so serve ends with an error,
        # leaving nothing behind
        error = error_after_kill(server, server.rank_pids()[0], signal.SIGSTOP)
        assert "the AFD job sent no heartbeat for 5 s" in error
        wait_for(lambda: not control.server_ready(server.http), "the server stayed ready")
        assert "AFD job failed: its coordinator stopped answering" not in server.output()
        assert server.proc.wait(timeout=300) == 1
        assert "AFD job failed: its coordinator stopped answering" in server.output()
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


