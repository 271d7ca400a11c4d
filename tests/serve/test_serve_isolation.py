"""What listens, and what reaches the job: tritonserver's HTTP, gRPC and metrics ports and the
OpenAI server's port on the --host address (127.0.0.1 by default), and nothing else: the AFD job
(mpiexec, whose out-of-band listener binds every interface of its namespace, and the ranks) runs
in a network namespace of its own, whatever --host says."""

import json
import os
import time
from pathlib import Path

import pytest

from tests.serve.server import Server, descendants
from tests.serve.sockets import listeners

pytestmark = pytest.mark.slow
LOOPBACK_ALIAS = "127.0.0.2"  # on Linux all of 127/8 is loopback: --host moves the ports here


def tree(server) -> set[int]:
    return {server.proc.pid} | descendants(server.proc.pid)


def by_process(server) -> dict[str, set[tuple[str, int]]]:
    """Listening sockets by process name; the OpenAI server (a python process) as "openai"."""
    openai = server.openai_pid() if server.openai else None
    out: dict[str, set[tuple[str, int]]] = {}
    for lst in listeners(tree(server)):
        name = "openai" if lst.pid == openai else lst.process
        out.setdefault(name, set()).add((lst.host, lst.port))
    return out


@pytest.fixture(scope="module")
def hosted(bundled_engines, tmp_path_factory):
    srv = Server(bundled_engines, tmp_path_factory.mktemp("hosted") / "run",
                 ["--max-restarts", "0"], host=LOOPBACK_ALIAS, openai=True).start()
    yield srv
    srv.stop()


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def job_namespaces(server) -> set[str]:
    """The network namespaces of the job's processes: every rank and mpiexec (their parent)."""
    pids = set(server.rank_pids().values())
    pids |= {parent(p) for p in pids}
    return {os.readlink(f"/proc/{p}/ns/net") for p in pids}


def assert_documented(server, host: str) -> None:
    found = by_process(server)
    assert found.pop("tritonserver") == {(host, server.http_port), (host, server.grpc_port),
                                         (host, server.metrics_port)}
    assert found.pop("openai") == {(host, server.openai_port)}
    assert found == {}, f"a process of the job listens in the host's network: {found}"


def test_the_default_ports_listen_on_loopback_only(server):
    assert_documented(server, "127.0.0.1")


def test_host_moves_the_triton_and_openai_ports_only(hosted):
    assert_documented(hosted, LOOPBACK_ALIAS)


def test_the_job_runs_in_a_network_namespace_of_its_own(hosted):
    ours = os.readlink("/proc/self/ns/net")
    spaces = job_namespaces(hosted)
    assert len(spaces) == 1 and ours not in spaces, (ours, spaces)


def results(socket, ids: set[int], serving, timeout_s: float = 120) -> dict[int, dict]:
    """The coordinator's results for `ids` (those that came while `serving()` held, within the
    timeout)."""
    out: dict[int, dict] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and set(out) != ids and serving():
        if socket.poll(500):
            msg = json.loads(socket.recv())
            if msg["type"] == "update":
                out.update({r["id"]: r for r in msg["finished"] if r["id"] in ids})
    return out


def test_a_malformed_zeromq_request_fails_alone(hosted):
    import zmq

    ranks = hosted.rank_pids()
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.connect(f"ipc://{hosted.run_dir / 'afd.sock'}")
    params = {"max_new_tokens": 4, "greedy": True}
    try:
        socket.send(json.dumps({"type": "hello"}).encode())
        assert socket.poll(30000) and json.loads(socket.recv())["type"] == "status"
        for rid, prompt in ((1, "not ids"), (2, [0, 3642, 257])):
            socket.send(json.dumps({"type": "request", "id": rid, "prompt_ids": prompt,
                                    "params": params, "stream": False, "bad_words": [],
                                    "min_tokens": 4}).encode())
        got = results(socket, {1, 2}, lambda: hosted.proc.poll() is None)
        assert "error" in got.get(1, {}), got
        assert len(got.get(2, {}).get("output_ids", [])) == 4, got  # the job still serves
        assert hosted.rank_pids() == ranks and hosted.ready()
    finally:
        socket.close(linger=0)
        context.term()
