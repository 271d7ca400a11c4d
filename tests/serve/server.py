"""A real `step3-trt serve` (tritonserver + mpiexec) for the serving tests: started on free
local ports, waited for, and stopped with every process it started checked gone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from step3_trt.serve import control

STARTUP_S = 600


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads included (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def started(pid: int) -> int | None:
    """When a live process started (clock ticks since boot), None if it is gone or a zombie:
    with its pid, it names one process even after the pid is reused (pids wrap at pid_max)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[19])


@dataclass
class Server:
    engines: Path
    run_dir: Path
    extra: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    proc: subprocess.Popen | None = None
    seen: set[tuple[int, int]] = field(default_factory=set)  # (pid, start time)

    def start(self, ports: list[int] | None = None) -> "Server":
        self.ports = ports or free_ports(3)
        self.http_port, self.grpc_port, self.metrics_port = self.ports
        cmd = [sys.executable, "-m", "step3_trt.cli.main", "serve", "--engines", str(self.engines),
               "--run-dir", str(self.run_dir), "--host", self.host,
               "--http-port", str(self.http_port),
               "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port),
               *self.extra]
        self.log = open(self.run_dir.parent / f"{self.run_dir.name}.serve.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_ready()
        return self

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def ready(self) -> bool:
        return control.server_ready(self.http) and control.model_ready(self.http, "step3")

    def wait_ready(self, timeout_s: float = STARTUP_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            assert self.proc.poll() is None, f"serve exited early:\n{self.output()}"
            assert time.monotonic() < deadline, f"serve not ready:\n{self.output()}"
            self.remember()
            time.sleep(0.5)
        self.remember()

    def remember(self) -> None:
        """Note serve's processes now running, to check at stop that none is left."""
        self.seen |= {(pid, start) for pid in descendants(self.proc.pid)
                      if (start := started(pid)) is not None}

    def metric(self, name: str) -> float | None:
        """A metric without labels from the server's /metrics (None if not published)."""
        with urllib.request.urlopen(f"http://{self.host}:{self.metrics_port}/metrics",
                                    timeout=10) as response:
            text = response.read().decode()
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.split(" ", 1)[0] == name]
        return values[0] if values else None

    def wait_idle(self, timeout_s: float = 120, settle_s: float = 1.0) -> None:
        """Until the AFD job has no request in flight (then `settle_s` more)."""
        deadline = time.monotonic() + timeout_s
        while self.metric("step3_requests_in_flight") != 0:
            assert time.monotonic() < deadline, "requests still in flight"
            time.sleep(0.2)
        time.sleep(settle_s)

    def rank_pids(self) -> dict[int, int]:
        return {int(f.stem[4:]): int(f.read_text().split()[0])
                for f in (self.run_dir / "job").glob("rank*.pid")}

    def stop(self) -> int:
        """SIGTERM, as an operator would; returns the exit code. Asserts nothing is left."""
        if self.proc.poll() is None:
            self.remember()
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=120)
        self.log.close()
        ranks = {(pid, started(pid)) for pid in self.rank_pids().values()}
        left = sorted(pid for pid, start in self.seen | ranks
                      if start is not None and started(pid) == start)
        for pid in left:  # never leave them running, even when the assertion fails
            os.kill(pid, signal.SIGKILL)
        assert not left, f"processes left behind: {left}\n{self.output()}"
        return code
