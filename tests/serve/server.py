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


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # gone


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot), None once it is gone: with the pid it
    names one process, where a pid alone may be reused by an unrelated one on a busy machine."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except OSError:
        return None



def wait_for(condition, what: str, timeout_s: float = 300) -> None:
    """Poll `condition` until it holds; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)

@dataclass
class Server:
    engines: Path
    run_dir: Path
    extra: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    openai: bool = False  # also serve the OpenAI API (--openai-port)
    proc: subprocess.Popen | None = None
    seen: dict[int, int] = field(default_factory=dict)  # pid -> start time, of every process seen

    def start(self, ports: list[int] | None = None) -> "Server":
        self.ports = ports or free_ports(4 if self.openai else 3)
        self.http_port, self.grpc_port, self.metrics_port = self.ports[:3]
        openai = ["--openai-port", str(self.ports[3])] if self.openai else []
        cmd = [sys.executable, "-m", "step3_trt.cli.main", "serve", "--engines", str(self.engines),
               "--run-dir", str(self.run_dir), "--host", self.host,
               "--http-port", str(self.http_port),
               "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port),
               *openai, *self.extra]
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

    @property
    def openai_port(self) -> int:
        assert self.openai, "started without --openai-port"
        return self.ports[3]

    @property
    def openai_url(self) -> str:
        return f"http://{self.host}:{self.openai_port}"

    def openai_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.openai_url}/health", timeout=10) as response:
                return response.status == 200
        except OSError:  # refused, or 503 (urllib's HTTPError is an OSError)
            return False

    def openai_pid(self) -> int:
        """The OpenAI server process (python -m step3_trt.serve.openai)."""
        pids = [p for p in descendants(self.proc.pid)
                if b"step3_trt.serve.openai" in cmdline(p)]
        assert len(pids) == 1, pids
        return pids[0]

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def ready(self) -> bool:
        return control.server_ready(self.http) and control.model_ready(self.http, "step3") and \
            (not self.openai or self.openai_ready())

    def wait_ready(self, timeout_s: float = STARTUP_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            assert self.proc.poll() is None, f"serve exited early:\n{self.output()}"
            assert time.monotonic() < deadline, f"serve not ready:\n{self.output()}"
            self.remember()
            time.sleep(0.5)
        self.remember()

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

    def remember(self) -> None:
        for pid in descendants(self.proc.pid):
            if (started := start_time(pid)) is not None:
                self.seen.setdefault(pid, started)

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
        left = sorted(p for p, started in self.seen.items()
                      if alive(p) and start_time(p) == started)
        left += sorted(p for p in set(self.rank_pids().values()) - set(self.seen) if alive(p))
        for pid in left:  # never leave them running, even when the assertion fails
            os.kill(pid, signal.SIGKILL)
        assert not left, f"processes left behind: {left}\n{self.output()}"
        return code
