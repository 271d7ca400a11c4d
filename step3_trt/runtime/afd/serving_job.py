"""An AFD job in serving mode under the real `mpiexec`: started in its own process group,
ready once every rank has loaded its engines and the coordinator answers on its ZeroMQ
endpoint, stopped by asking the coordinator to shut down (then SIGTERM, then SIGKILL to the
whole group, so no rank outlives it). Each start's output is appended to `afd.log` under a
header line, so a failed job's traceback outlives its restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from step3_trt.build_config import BuildConfig
from step3_trt.runtime.afd.launch import Hosts, diagnose, job_layout, mpiexec_command

IPC_PATH_MAX = 100  # sun_path is 108 bytes on Linux, with some margin
START_MARK = "==== step3-trt serve: AFD job start"


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM if the process that started it dies (Linux), so a
    killed `serve` leaves no job or server behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the process group, SIGKILL it after `grace_s`; reaps the leader."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # the leader may be gone while other members of its group linger
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class ServingJob:
    def __init__(self, engine_dir: Path, run_dir: Path, endpoint: str, *, timeout: float,
                 micro_batches: int | None = None, device: str | None = None,
                 transport: str | None = None, trace: bool = False, hosts: Hosts = Hosts(),
                 prefix_caching: bool = True):
        """`prefix_caching` False: the ranks never share KV blocks (True: the build config's
        `kv_cache.prefix_caching` decides)."""
        self.engine_dir, self.run_dir, self.endpoint = engine_dir.resolve(), run_dir, endpoint
        self.layout = job_layout(self.engine_dir)
        build = BuildConfig.from_file(self.engine_dir / "build_config.yaml")
        self.timeout, self.micro_batches, self.device = timeout, micro_batches, device
        self.transport = transport or build.runtime.transport
        self.trace, self.hosts, self.prefix_caching = trace, hosts, prefix_caching
        self.proc: subprocess.Popen | None = None
        self.log = self.run_dir / "afd.log"  # every start appended, under a header line
        self.log_start = 0  # where the output of the last start begins
        self.starts = 0

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*self.run_dir.glob("rank*.pid"), self.run_dir / "ready"]:
            stale.unlink(missing_ok=True)
        cmd = mpiexec_command(self.engine_dir, self.layout, self.run_dir, serve=self.endpoint,
                              transport=self.transport, timeout=self.timeout,
                              micro_batches=self.micro_batches, device=self.device,
                              trace=self.trace, hosts=self.hosts,
                              prefix_caching=self.prefix_caching)
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"{START_MARK} {self.starts} at {time.strftime('%Y-%m-%d %H:%M:%S')} "
                      f"====\n".encode())
            log.flush()
            self.log_start = log.tell()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=die_with_parent)

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def failure(self) -> str:
        """Why the job last started ended (names the rank that died or failed, when mpiexec
        says)."""
        text = ""
        if self.log.exists():
            with open(self.log, "rb") as log:
                log.seek(self.log_start)
                text = log.read().decode(errors="replace")
        return diagnose(text, self.layout, self.exit_code())

    def listening(self) -> bool:
        """Every rank of the job last started has loaded its engines and the coordinator has
        bound its endpoint (it may have ended since)."""
        return (self.run_dir / "ready").exists()

    def stop(self, grace_s: float = 30.0) -> None:
        """Ask the coordinator to shut down (it cancels what is in flight); then the group."""
        if self.proc is None:
            return
        if self.proc.poll() is None and self.listening():
            send_shutdown(self.endpoint)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        stop_group(self.proc, grace_s=5.0)


def send_shutdown(endpoint: str) -> None:
    import zmq

    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.connect(endpoint)
    socket.send(json.dumps({"type": "shutdown"}).encode())
    socket.close(linger=2000)  # wait (bounded) until the message is out
    context.term()


def ipc_endpoint(run_dir: Path) -> str:
    path = str(run_dir.resolve() / "afd.sock")
    if len(path) > IPC_PATH_MAX:
        raise ValueError(f"run directory path too long for a socket ({len(path)} > "
                         f"{IPC_PATH_MAX} characters): {run_dir}")
    return f"ipc://{path}"
