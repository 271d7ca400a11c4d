"""An AFD job in serving mode under the real `mpiexec`: started in its own process group,
ready once every rank has loaded its engines and the coordinator answers on its ZeroMQ
endpoint, stopped by asking the coordinator to shut down (then SIGTERM, then SIGKILL to the
whole group, so no rank outlives it). Each start's output is appended to `afd.log` under a
header line, so a failed job's traceback outlives its restart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from step3_trt.build_config import BuildConfig
from step3_trt.runtime.afd.launch import Hosts, diagnose, job_layout, mpiexec_command
from step3_trt.runtime.afd.process_group import LoggedProcess

IPC_PATH_MAX = 100  # sun_path is 108 bytes on Linux, with some margin


class ServingJob(LoggedProcess):
    def __init__(self, engine_dir: Path, run_dir: Path, endpoint: str, *, timeout: float,
                 micro_batches: int | None = None, device: str | None = None,
                 transport: str | None = None, trace: bool = False, hosts: Hosts = Hosts(),
                 prefix_caching: bool = True):
        """`prefix_caching` False: the ranks never share KV blocks (True: the build config's
        `kv_cache.prefix_caching` decides)."""
        super().__init__(run_dir / "afd.log", "AFD job")  # every start appended
        self.engine_dir, self.run_dir, self.endpoint = engine_dir.resolve(), run_dir, endpoint
        self.layout = job_layout(self.engine_dir)
        build = BuildConfig.from_file(self.engine_dir / "build_config.yaml")
        self.timeout, self.micro_batches, self.device = timeout, micro_batches, device
        self.transport = transport or build.runtime.transport
        self.trace, self.hosts, self.prefix_caching = trace, hosts, prefix_caching

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in [*self.run_dir.glob("rank*.pid"), self.run_dir / "ready"]:
            stale.unlink(missing_ok=True)
        cmd = mpiexec_command(self.engine_dir, self.layout, self.run_dir, serve=self.endpoint,
                              transport=self.transport, timeout=self.timeout,
                              micro_batches=self.micro_batches, device=self.device,
                              trace=self.trace, hosts=self.hosts,
                              prefix_caching=self.prefix_caching)
        self.launch(cmd)

    def failure(self) -> str:
        """Why the job last started ended (names the rank that died or failed, when mpiexec
        says)."""
        return diagnose(self.output(), self.layout, self.exit_code())

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
        self.stop_group(grace_s=5.0)


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
