"""`step3-trt serve`: tritonserver on the model repository with the AFD job behind it.

Both run in their own process groups (and die with this process). The server loads `step3`
at start-up; its initialize waits until the job's coordinator answers, so the server becomes
ready only once the job is. If the job fails, the backend fails the requests in flight at
once; the supervisor unloads `step3` (model not ready), restarts the job (up to
--max-restarts times) and loads `step3` again, the server reporting not ready until it is.
SIGINT/SIGTERM stop the server first (no new requests), then the job; nothing is left behind.
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


class Supervisor:
    def __init__(self, options: ServeOptions, out=sys.stderr):
        self.options, self.out = options, out
        self.url = options.endpoints.http_url
        self.stopping = threading.Event()
        self.server: subprocess.Popen | None = None
        self.job: ServingJob | None = None
        self.loading: threading.Thread | None = None
        self.restarts = 0
        self.silent_since: float | None = None  # when the backend first reported the job gone
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
        repository = render_repository(o.repository, run_dir / "models", MODEL, {
            "engines": str(o.engines.resolve()), "afd_endpoint": endpoint,
            "startup_timeout_s": str(o.startup_timeout_s),
            "heartbeat_timeout_s": str(o.heartbeat_timeout_s)})
        backends = install.backend_dir(run_dir / "backends")
        self.server_log = run_dir / "tritonserver.log"
        cmd = server_command(install, repository, backends, o.endpoints, MODEL, EXIT_TIMEOUT_S)
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
            self._check_answering()
            if self.job.exit_code() is not None and not self._recover():
                return 1
            if self.loading is not None and not self.loading.is_alive():
                self.loading = None
                if self.job.exit_code() is None and not control.model_ready(self.url, MODEL):
                    self.say(f"loading {MODEL} again failed (log: {self.server_log})")
                    return 1
                if self.job.exit_code() is None:
                    self.say(f"ready again: the AFD job restarted ({self.restarts} restarts)")
            time.sleep(POLL_S)
        return 0

    def _check_answering(self) -> None:
        """A coordinator that stops answering (hung, not dead) leaves mpiexec running: the
        backend reports it gone (no heartbeat); after a grace period the job is stopped, so
        that it is restarted like a failed one."""
        if self.loading is not None or self.job.exit_code() is not None:
            self.silent_since = None
            return
        if control.job_up(self.options.endpoints.metrics_url) != 0:
            self.silent_since = None
        elif self.silent_since is None:
            self.silent_since = time.monotonic()
        elif time.monotonic() - self.silent_since > SILENT_GRACE_S:
            self.say("the AFD job stopped answering (no heartbeat from its coordinator); "
                     "stopping it")
            self.hung, self.silent_since = True, None
            stop_group(self.job.proc, grace_s=5.0)

    def _recover(self) -> bool:
        """The job ended: mark the model unavailable, restart the job, load the model again."""
        reason = "its coordinator stopped answering" if self.hung else self.job.failure()
        self.hung = False
        self.say(f"AFD job failed: {reason}")
        control.unload_model(self.url, MODEL, timeout_s=60)
        self.job.stop()
        if self.restarts >= self.options.max_restarts:
            self.say(f"no restarts left (--max-restarts {self.options.max_restarts})")
            return False
        self.restarts += 1
        self.say(f"restarting the AFD job ({self.restarts} of {self.options.max_restarts})")
        self.job.start()
        self.loading = threading.Thread(target=control.load_model, name="load-step3", daemon=True,
                                         args=(self.url, MODEL, self.options.startup_timeout_s))
        self.loading.start()
        return True

    def _shutdown(self) -> None:
        if self.server is not None:
            stop_group(self.server, grace_s=EXIT_TIMEOUT_S + 5)
        if self.job is not None:
            self.job.stop()
        self.say("stopped")
