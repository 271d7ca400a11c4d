"""An idle server sleeps: with no request in flight, the coordinator blocks on its clients'
socket, the backend's I/O thread on its socket, and the attention and FFN ranks probe MPI at
most about 200 times a second (Open MPI's blocking receive would spin a core)."""

import time

import pytest

from tests.serve.server import cpu_seconds, descendants

pytestmark = pytest.mark.slow
WINDOW_S = 10.0
# Every process of the server (serve, mpiexec, 5 ranks, tritonserver, 6 backend stubs, each
# stub at most 0.001 CPU-s/s idle): about 0.05 CPU-s/s measured idle, most of it the ranks'
# probes (~1% of a core each); the busy polling this replaced used 0.13-0.18 (the coordinator
# 4%, each rank 1.5%, the backend 2%).
MAX_CPU_PER_S = 0.1


def test_an_idle_server_uses_almost_no_cpu(server):
    server.wait_idle()
    pids = sorted({server.proc.pid} | descendants(server.proc.pid))
    before = {pid: cpu_seconds(pid) for pid in pids}
    start = time.monotonic()
    time.sleep(WINDOW_S)
    wall = time.monotonic() - start
    used = {pid: (cpu_seconds(pid) - before[pid]) / wall for pid in pids}
    worst = ", ".join(f"{pid}: {rate:.3f}" for pid, rate in
                      sorted(used.items(), key=lambda kv: -kv[1])[:4])
    assert sum(used.values()) < MAX_CPU_PER_S, \
        f"idle server used {sum(used.values()):.3f} CPU-s/s (most: {worst})"
