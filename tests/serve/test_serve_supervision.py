"""tritonserver is supervised like the AFD job: killed (SIGKILL) or crashed (the 100,000 nested
JSON arrays that segfault tritonserver 2.51), it is restarted within the same --max-restarts
budget; while it is down nothing answers on its ports; its python-backend shared memory is
removed; every start's log is kept; the job keeps running and the next request gets the
reference answer. Past the budget serve exits 1, leaving nothing behind."""

import http.client
import os
import signal
import stat

import pytest

from step3_trt.serve import control
from tests.serve.clients import http_generate
from tests.serve.server import Server, alive, descendants, wait_for
from tests.serve.test_serve_lockdown import shm_regions

pytestmark = pytest.mark.slow
PROMPT = "Return a new list containing"
NESTED = 100_000




def tritonserver_pid(server) -> int:
    pids = [p for p in descendants(server.proc.pid)
            if open(f"/proc/{p}/comm").read().strip() == "tritonserver"]
    assert len(pids) == 1, pids
    return pids[0]


def nested_arrays_body() -> str:
    return '{"text_input": ' + "[" * NESTED + "]" * NESTED + "}"


def crash_with_nested_json(server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        conn.request("POST", "/v2/models/step3/generate", nested_arrays_body())
        conn.getresponse()


def refused(server) -> bool:
    """The HTTP port refuses connections (a killed server's threads may still be exiting for a
    moment after its main thread is gone: then the kernel still accepts)."""
    try:
        http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=5).connect()
    except ConnectionRefusedError:
        return True
    return False


def assert_restarted(server, before: int, job_pids: dict, regions: set, reference, n: int,
                     how: str):
    wait_for(lambda: not alive(before), "tritonserver did not die")
    assert not control.server_ready(server.http)
    wait_for(lambda: f"tritonserver {how}" in server.output(), "serve did not report the death")
    wait_for(lambda: f"restarting tritonserver ({n} of 2)" in server.output(),
             "serve did not restart tritonserver")
    server.wait_ready()
    wait_for(lambda: f"ready again: tritonserver restarted ({n} restarts)" in server.output(),
             "serve did not report the restart done")
    assert tritonserver_pid(server) != before
    assert not any(os.path.exists(r) for r in regions), "the dead server's shared memory stayed"
    assert shm_regions(server) and not shm_regions(server) & regions
    assert server.rank_pids() == job_pids, "the AFD job was restarted"
    ids, text = reference([PROMPT], 24)[0]
    status, body = http_generate(server.http, {"text_input": PROMPT, "max_tokens": 24})
    assert status == 200 and (body["output_ids"], body["text_output"]) == (ids, text)


def test_a_killed_or_crashed_tritonserver_is_restarted_until_the_budget_is_spent(
        bundled_engines, reference, tmp_path):
    server = Server(bundled_engines, tmp_path / "run", ["--max-restarts", "2"]).start()
    try:
        assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700
        job_pids = server.rank_pids()
        first, regions = tritonserver_pid(server), shm_regions(server)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not alive(first), "tritonserver did not die")
        wait_for(lambda: refused(server) or server.ready(), "the port neither refused nor served")
        assert not server.ready()  # refused connections first: nothing answers while it is down
        assert_restarted(server, first, job_pids, regions, reference, 1,
                         "was killed by signal 9 (SIGKILL)")

        second, regions = tritonserver_pid(server), shm_regions(server)
        crash_with_nested_json(server)
        assert_restarted(server, second, job_pids, regions, reference, 2,
                         "was killed by signal 11 (SIGSEGV)")
        log = (tmp_path / "run" / "tritonserver.log").read_text()
        assert [f"tritonserver start {i} at" in log for i in (1, 2, 3)] == [True] * 3
        assert log.index('"Started HTTPService') < log.index("tritonserver start 2 at")

        third, regions = tritonserver_pid(server), shm_regions(server)
        os.kill(third, signal.SIGKILL)
        assert server.proc.wait(timeout=300) == 1
        assert "no restarts left (--max-restarts 2)" in server.output()
        assert not any(os.path.exists(r) for r in regions)
    finally:
        server.stop()
