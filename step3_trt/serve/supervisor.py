"""`step3-trt serve`: tritonserver on the model repository with the AFD job behind it.

Both run in their own process groups (and die with this process). The server loads `step3`
and `afd_job` at start-up; step3's initialize waits until the job's coordinator answers, so
the server becomes ready only once the job is. If the job is lost (mpiexec ended, or the
backend reports it gone), the backend has already failed the requests in flight and refuses
new ones as "restarting"; the supervisor loads `afd_job` afresh, which keeps the server not
ready, restarts the job (up to --max-restarts times), and lets `afd_job` finish loading once
the backend is connected to the restarted job. SIGINT/SIGTERM stop the server first (no new
requests), then the job; nothing is left behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from step3_trt.runtime.afd.serving_job import ServingJob, die_with_parent, ipc_endpoint, stop_group
from step3_trt.serve import control
from step3_trt.serve.tritonserver import Endpoints, TritonInstall, render_repository, \
    server_command

MODEL = "step3"
JOB_MODEL = "afd_job"  # loading (server not ready) while the job restarts; see serve/afd_job.py
DEFAULT_REPOSITORY = Path(__file__).resolve().parents[2] / "triton_repo"
EXIT_TIMEOUT_S = 10
POLL_S = 0.2
SILENT_GRACE_S = 5.0  # a job the backend calls gone, whose mpiexec is still running after this
                      # long, is hung (a dying job's mpiexec exits well within it)


@dataclass(frozen=True)
class ServeOptions:
    engines: Path
    endpoints: Endpoints = Endpoints()
    run_dir: Path | None = None
    repository: Path = DEFAULT_REPOSITORY
    timeout_s: float = 60.0  # per-message deadline inside the AFD job
    startup_timeout_s: float = 600.0  # engines loading, server and job
    heartbeat_timeout_s: float = 30.0  # the backend's limit on a silent coordinator
    max_restarts: int = 3
    micro_batches: int | None = None
    device: str | None = None


class ReadinessGate:
    """The `afd_job` model as a switch on the server's readiness: `close` unloads it and loads
    it again, and the load waits (the server not ready) until `open` creates its release
    file."""

    def __init__(self, url: str, release_file: Path, timeout_s: float):
        self.url, self.release_file, self.timeout_s = url, release_file, timeout_s
        self.loading: threading.Thread | None = None
        self.loaded = False

    def close(self) -> None:
        self.release_file.unlink(missing_ok=True)
        self.loaded = False
        self.loading = threading.Thread(target=self._reload, name="load-afd_job", daemon=True)
        self.loading.start()

    def _reload(self) -> None:
        control.unload_model(self.url, JOB_MODEL, timeout_s=60)
        self.loaded = control.load_model(self.url, JOB_MODEL, self.timeout_s + 60)

    def open(self, wait: bool = True) -> bool:
        """Release the load; with `wait`, True once `afd_job` is loaded (the server ready)."""
        self.release_file.touch()
        if not wait or self.loading is None:
            return True
        self.loading.join(timeout=60)
        return self.loaded


class Supervisor:
    def __init__(self, options: ServeOptions, out=sys.stderr):
        self.options, self.out = options, out
        self.url = options.endpoints.http_url
        self.stopping = threading.Event()
        self.server: subprocess.Popen | None = None
        self.job: ServingJob | None = None
        self.gate: ReadinessGate | None = None
        self.restarts = 0
        self.phase: str | None = None  # during a recovery: "ending" the lost job, "starting" it
        self.since = 0.0  # when the phase began
        self.hung = False

    def say(self, text: str) -> None:
        print(f"[serve] {text}", file=self.out, flush=True)

    def _on_signal(self, signum, _frame) -> None:
        self.say(f"{signal.Signals(signum).name}: shutting down")
        self.stopping.set()

    def run(self) -> int:
        o = self.options
        run_dir = Path(o.run_dir or tempfile.mkdtemp(prefix="step3-serve-")).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        endpoint = ipc_endpoint(run_dir)
        install = TritonInstall.locate()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.job = ServingJob(o.engines, run_dir / "job", endpoint, timeout=o.timeout_s,
                                  micro_batches=o.micro_batches, device=o.device)
            self.job.start()
            self.say(f"AFD job starting: {self.job.layout.attention} attention + "
                     f"{self.job.layout.ffn} FFN ranks (log: {self.job.log})")
            self.gate = ReadinessGate(self.url, run_dir / "afd_job.release", o.startup_timeout_s)
            self.gate.open(wait=False)
            self.server = self._start_server(install, run_dir, endpoint)
            if not self._wait_ready():
                return 0 if self.stopping.is_set() else 1
            e = o.endpoints
            self.say(f"ready: model {MODEL} at HTTP {self.url}, gRPC {e.host}:{e.grpc_port}, "
                     f"metrics http://{e.host}:{e.metrics_port}/metrics (run dir: {run_dir})")
            return self._watch()
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start_server(self, install: TritonInstall, run_dir: Path, endpoint: str):
        o = self.options
        repository = render_repository(o.repository, run_dir / "models", {
            MODEL: {"engines": str(o.engines.resolve()), "afd_endpoint": endpoint,
                    "startup_timeout_s": str(o.startup_timeout_s),
                    "heartbeat_timeout_s": str(o.heartbeat_timeout_s)},
            JOB_MODEL: {"release_file": str(self.gate.release_file),
                        "timeout_s": str(o.startup_timeout_s)}})
        backends = install.backend_dir(run_dir / "backends")
        self.server_log = run_dir / "tritonserver.log"
        cmd = server_command(install, repository, backends, o.endpoints, [MODEL, JOB_MODEL],
                             EXIT_TIMEOUT_S)
        with open(self.server_log, "w") as log:
            return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=install.env(),
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=die_with_parent)

    def _server_exited(self) -> bool:
        code = self.server.poll()
        if code is None:
            return False
        tail = self.server_log.read_text(errors="replace").strip().splitlines()[-5:]
        self.say(f"tritonserver exited with code {code} (log: {self.server_log}):\n  " +
                 "\n  ".join(tail))
        return True

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.options.startup_timeout_s
        while not self.stopping.is_set():
            if self._server_exited():
                return False
            if self.job.exit_code() is not None:
                self.say(f"the AFD job failed while starting: {self.job.failure()}")
                return False
            if control.server_ready(self.url) and control.model_ready(self.url, MODEL):
                return True
            if time.monotonic() > deadline:
                self.say(f"not ready within {self.options.startup_timeout_s:g} s")
                return False
            time.sleep(POLL_S)
        return False

    def _watch(self) -> int:
        while not self.stopping.is_set():
            if self._server_exited():
                return 1
            if self.phase is None:
                if self._job_lost():
                    self._begin_recovery()
            elif not self._recover():
                return 1
            time.sleep(POLL_S)
        return 0

    def _job_up(self) -> float | None:
        return control.job_up(self.options.endpoints.metrics_url)

    def _job_lost(self) -> bool:
        """mpiexec ended, or the backend lost the coordinator (it disconnected, or a hung one
        sent no heartbeat within --heartbeat-timeout)."""
        return self.job.exit_code() is not None or self._job_up() == 0

    def _begin_recovery(self) -> None:
        self.gate.close()
        self.say("the AFD job was lost: the server reports not ready until it is back")
        self.phase, self.since = "ending", time.monotonic()

    def _recover(self) -> bool:
        """One step of a recovery; False once it cannot succeed (serve then exits 1)."""
        if self.phase == "ending":
            return self._end_lost_job()
        if self.job.exit_code() is not None:  # the restarted job failed too
            return self._restart()
        if self.job.listening() and self._job_up() == 1:
            return self._resume()
        if time.monotonic() - self.since > self.options.startup_timeout_s:
            self.say(f"the restarted AFD job did not answer within "
                     f"{self.options.startup_timeout_s:g} s")
            return False
        return True

    def _end_lost_job(self) -> bool:
        """A job that the backend calls gone but whose mpiexec still runs after a grace
        period (a dying job's mpiexec exits well within it) is hung: stop it. Then restart."""
        if self.job.exit_code() is None:
            if time.monotonic() - self.since <= SILENT_GRACE_S:
                return True
            self.say("the AFD job stopped answering (no heartbeat from its coordinator); "
                     "stopping it")
            self.hung = True
            stop_group(self.job.proc, grace_s=5.0)
        return self._restart()

    def _restart(self) -> bool:
        reason = "its coordinator stopped answering" if self.hung else self.job.failure()
        self.hung = False
        self.say(f"AFD job failed: {reason}")
        self.job.stop()
        if self.restarts >= self.options.max_restarts:
            self.say(f"no restarts left (--max-restarts {self.options.max_restarts})")
            return False
        self.restarts += 1
        self.say(f"restarting the AFD job ({self.restarts} of {self.options.max_restarts})")
        self.job.start()
        self.phase, self.since = "starting", time.monotonic()
        return True

    def _resume(self) -> bool:
        """The backend is connected to the restarted job: the server is ready again."""
        if not self.gate.open():
            self.say(f"loading {JOB_MODEL} again failed (log: {self.server_log})")
            return False
        self.phase = None
        self.say(f"ready again: the AFD job restarted ({self.restarts} restarts)")
        return True

    def _shutdown(self) -> None:
        if self.gate is not None:
            self.gate.open(wait=False)  # a load of afd_job in progress must not hold the server
        if self.server is not None:
            stop_group(self.server, grace_s=EXIT_TIMEOUT_S + 5)
        if self.job is not None:
            self.job.stop()
        self.say("stopped")
