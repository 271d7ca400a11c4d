"""`step3-trt serve`: tritonserver on the model repository with the AFD job behind it, both
supervised.

Both run in their own process groups (and die with this process). The server loads `step3`
and `afd_job` at start-up; step3's initialize waits until the job's coordinator answers, so
the server becomes ready only once the job is. Its administrative APIs are locked with a key
only this process holds (serve/lockdown.py).

If the job is lost (mpiexec ended, or the backend reports it gone), the backend has already
failed the requests in flight and refuses new ones as "restarting"; the supervisor loads
`afd_job` afresh, which keeps the server not ready, restarts the job, and lets `afd_job` finish
loading once the backend is connected to the restarted job. If tritonserver dies (a crash, a
kill), the rest of its group and its shared memory are cleaned up and it is started again;
nothing answers on its ports meanwhile, and the job keeps running. Job and server restarts
share one budget, --max-restarts; past it serve stops everything and exits 1. SIGINT/SIGTERM
stop the server first (no new requests), then the job; nothing is left behind.

With --openai-port, the OpenAI server (serve/openai) is a third process, started beside
tritonserver, stopped before it, and restarted like it from the same budget; it reaches the
job through its own job client and rides out job restarts by itself.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from step3_trt.runtime.afd.launch import Hosts
from step3_trt.runtime.afd.serving_job import ServingJob, ipc_endpoint
from step3_trt.serve import control
from step3_trt.serve.lockdown import AdminKey
from step3_trt.serve.openai.process import OpenAIProcess, OpenAISettings
from step3_trt.serve.readiness import JOB_MODEL, ReadinessGate
from step3_trt.serve.server_process import TritonProcess, describe_exit
from step3_trt.serve.tritonserver import Endpoints, TritonInstall, render_repository, \
    server_command

MODEL = "step3"
# the TensorRT-LLM backend's model repository layout (triton_repo/README.md): the models that
# reach the AFD job, those that only tokenize, and the ensemble of the three steps
TRTLLM_JOB_MODELS = ("tensorrt_llm", "tensorrt_llm_bls")
TOKENIZER_MODELS = ("preprocessing", "postprocessing")
ENSEMBLE = "ensemble"
DEFAULT_REPOSITORY = Path(__file__).resolve().parents[2] / "triton_repo"
EXIT_TIMEOUT_S = 10
POLL_S = 0.2
SILENT_GRACE_S = 5.0  # a job the backend calls gone, whose mpiexec is still running after this
                      # long, is hung (a dying job's mpiexec exits well within it)
CRASHED_GRACE_S = 2.0  # SIGTERM to what is left of a dead server's group, then SIGKILL


@dataclass(frozen=True)
class ServeOptions:
    engines: Path
    endpoints: Endpoints = Endpoints()
    run_dir: Path | None = None
    repository: Path = DEFAULT_REPOSITORY
    timeout_s: float = 60.0  # per-message deadline inside the AFD job
    startup_timeout_s: float = 600.0  # engines loading, server and job
    heartbeat_timeout_s: float = 5.0  # the backend's limit on a silent coordinator
    max_restarts: int = 3  # of the job and of tritonserver together
    micro_batches: int | None = None
    device: str | None = None
    transport: str | None = None  # the job's data plane; None = the build config's
    shared_network: bool = False  # the job in the host's network namespace (runtime/afd/netns.py)
    openai_port: int | None = None  # the OpenAI server's (on endpoints.host); None: no server
    prefix_caching: bool = True  # False: --no-prefix-caching (else the build config decides)
    decoupled: bool = False  # tensorrt_llm and tensorrt_llm_bls: decoupled (streaming) or not


class Supervisor:
    def __init__(self, options: ServeOptions, out=sys.stderr):
        self.options, self.out = options, out
        self.url = options.endpoints.http_url
        self.stopping = threading.Event()
        self.admin = AdminKey()
        self.server: TritonProcess | None = None
        self.job: ServingJob | None = None
        self.gate: ReadinessGate | None = None
        self.restarts = 0
        self.phase: str | None = None  # during a job recovery: "ending" the lost job, "starting"
        self.since = 0.0  # when the phase began
        self.hung = False
        self.server_since: float | None = None  # when a restarted server started, until ready
        self.openai: OpenAIProcess | None = None
        self.openai_since: float | None = None  # when a restarted OpenAI server started

    def say(self, text: str) -> None:
        print(f"[serve] {text}", file=self.out, flush=True)

    def _on_signal(self, signum, _frame) -> None:
        self.say(f"{signal.Signals(signum).name}: shutting down")
        self.stopping.set()

    def run(self) -> int:
        o = self.options
        run_dir = Path(o.run_dir or tempfile.mkdtemp(prefix="step3-serve-")).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(run_dir, 0o700)  # the job's socket, logs and pid files: this user's only
        endpoint = ipc_endpoint(run_dir)
        install = TritonInstall.locate()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.job = ServingJob(o.engines, run_dir / "job", endpoint, timeout=o.timeout_s,
                                  micro_batches=o.micro_batches, device=o.device,
                                  transport=o.transport,
                                  hosts=Hosts(shared_network=o.shared_network),
                                  prefix_caching=o.prefix_caching)
            self.job.start()
            self.say(f"AFD job starting: {self.job.layout.attention} attention + "
                     f"{self.job.layout.ffn} FFN ranks (log: {self.job.log})")
            self.gate = ReadinessGate(self.url, run_dir / "afd_job.release", o.startup_timeout_s,
                                      self.admin)
            self.gate.open(wait=False)
            self.server = self._server(install, run_dir, endpoint)
            self.server.start()
            self._start_openai(run_dir, endpoint)
            if not self._wait_ready():
                return 0 if self.stopping.is_set() else 1
            e = o.endpoints
            self.say(f"ready: model {MODEL} at HTTP {self.url}, gRPC {e.host}:{e.grpc_port}, "
                     f"metrics http://{e.host}:{e.metrics_port}/metrics (run dir: {run_dir})")
            self.say(f"TensorRT-LLM backend models: {ENSEMBLE}, {', '.join(TRTLLM_JOB_MODELS)} "
                     f"({'decoupled' if o.decoupled else 'not decoupled'}), "
                     f"{', '.join(TOKENIZER_MODELS)}")
            if self.openai is not None:
                self.say(f"ready: OpenAI API at {self.openai.settings.url}/v1")
            return self._watch()
        finally:
            self._shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _server(self, install: TritonInstall, run_dir: Path, endpoint: str) -> TritonProcess:
        o = self.options
        engines = {"engines": str(o.engines.resolve())}
        job_client = {**engines, "afd_endpoint": endpoint,
                      "startup_timeout_s": str(o.startup_timeout_s),
                      "heartbeat_timeout_s": str(o.heartbeat_timeout_s)}
        models = {MODEL: job_client,
                  JOB_MODEL: {"release_file": str(self.gate.release_file),
                              "timeout_s": str(o.startup_timeout_s)},
                  **{name: job_client for name in TRTLLM_JOB_MODELS},
                  **{name: engines for name in TOKENIZER_MODELS}, ENSEMBLE: {}}
        repository = render_repository(o.repository, run_dir / "models", models,
                                       {"decoupled_mode": str(o.decoupled).lower()})
        backends = install.backend_dir(run_dir / "backends")
        shm_prefix = f"step3_{secrets.token_hex(8)}_"
        cmd = server_command(install, repository, backends, o.endpoints, list(models),
                             EXIT_TIMEOUT_S, self.admin, shm_prefix)
        return TritonProcess(cmd, install.env(), run_dir / "tritonserver.log", shm_prefix)

    def _server_died(self) -> bool:
        code = self.server.exit_code()
        if code is None:
            return False
        self.say(f"tritonserver {describe_exit(code)} (log: {self.server.log}):\n  " +
                 "\n  ".join(self.server.tail().splitlines()))
        self.server.stop(grace_s=CRASHED_GRACE_S)  # its stubs, its shared memory
        return True

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.options.startup_timeout_s
        while not self.stopping.is_set():
            if self._server_died():  # restarted like a death after start-up, same budget
                if not self._restart_server():
                    return False
                continue
            if self.job.exit_code() is not None:
                self.say(f"the AFD job failed while starting: {self.job.failure()}")
                return False
            if self._openai_died():
                return False
            if self._serving() and (self.openai is None or self.openai.healthy()):
                return True
            if time.monotonic() > deadline:
                self.say(f"not ready within {self.options.startup_timeout_s:g} s")
                return False
            time.sleep(POLL_S)
        return False

    def _serving(self) -> bool:
        return control.server_ready(self.url) and control.model_ready(self.url, MODEL)

    def _watch(self) -> int:
        while not self.stopping.is_set():
            if self._server_died():
                if not self._restart_server():
                    return 1
            elif self.server_since is not None and not self._server_back():
                return 1
            if not self._watch_openai():
                return 1
            if self.phase is None:
                if self._job_lost():
                    self._begin_recovery()
            elif not self._recover():
                return 1
            time.sleep(POLL_S)
        return 0

    # ---- tritonserver restarts -----------------------------------------------------------
    def _spend_restart(self, what: str) -> bool:
        if self.restarts >= self.options.max_restarts:
            self.say(f"no restarts left (--max-restarts {self.options.max_restarts})")
            return False
        self.restarts += 1
        self.say(f"restarting {what} ({self.restarts} of {self.options.max_restarts})")
        return True

    def _restart_server(self) -> bool:
        if not self._spend_restart("tritonserver"):
            return False
        self.say("nothing answers on the HTTP, gRPC and metrics ports until it is ready")
        self.gate.server_replaced()
        self.server.start()
        self.server_since = time.monotonic()
        return True

    def _server_back(self) -> bool:
        """A restarted server: ready once step3 has reached the job and afd_job is released;
        False if it takes longer than --startup-timeout."""
        if self._serving():
            self.server_since = None
            self.say(f"ready again: tritonserver restarted ({self.restarts} restarts)")
        elif time.monotonic() - self.server_since > self.options.startup_timeout_s:
            self.say(f"the restarted tritonserver was not ready within "
                     f"{self.options.startup_timeout_s:g} s")
            return False
        return True

    # ---- the OpenAI server (--openai-port) ------------------------------------------------
    def _start_openai(self, run_dir: Path, endpoint: str) -> None:
        o = self.options
        if o.openai_port is None:
            return
        settings = OpenAISettings(o.engines, endpoint, o.endpoints.host, o.openai_port,
                                  o.startup_timeout_s, o.heartbeat_timeout_s)
        self.openai = OpenAIProcess(settings, run_dir / "openai.log")
        self.openai.start()

    def _openai_died(self) -> bool:
        code = None if self.openai is None else self.openai.exit_code()
        if code is None:
            return False
        self.say(f"the OpenAI server {describe_exit(code)} (log: {self.openai.log}):\n  " +
                 "\n  ".join(self.openai.tail().splitlines()))
        self.openai.stop(grace_s=CRASHED_GRACE_S)
        return True

    def _watch_openai(self) -> bool:
        """Restart a dead OpenAI server (from the --max-restarts budget); False once none is
        left. It answers again once it has reached the AFD job."""
        if self._openai_died():
            if not self._spend_restart("the OpenAI server"):
                return False
            self.openai.start()
            self.openai_since = time.monotonic()
        elif self.openai_since is not None and self.openai.healthy():
            self.openai_since = None
            self.say(f"ready again: the OpenAI server restarted ({self.restarts} restarts)")
        return True

    # ---- AFD job restarts ----------------------------------------------------------------
    def _job_up(self) -> float | None:
        return control.job_up(self.options.endpoints.metrics_url)

    def _job_lost(self) -> bool:
        """mpiexec ended, or the backend lost the coordinator (it disconnected, or a hung one
        sent no heartbeat within --heartbeat-timeout)."""
        return self.job.exit_code() is not None or self._job_up() == 0

    def _begin_recovery(self) -> None:
        if self.server_since is None:
            self.gate.close()
        else:  # a restarted server that is not ready yet
            self.gate.hold()
        self.say("the AFD job was lost: the server reports not ready until it is back")
        self.phase, self.since = "ending", time.monotonic()

    def _recover(self) -> bool:
        """One step of a recovery; False once it cannot succeed (serve then exits 1)."""
        if self.phase == "ending":
            return self._end_lost_job()
        if self.job.exit_code() is not None:  # the restarted job failed too
            return self._restart_job()
        # the backend reconnected to the restarted job; a restarting server's backend connects
        # at start-up, before the server answers at all
        if self.job.listening() and (self._job_up() == 1 or self.server_since is not None):
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
            self.job.stop_group(grace_s=5.0)
        return self._restart_job()

    def _restart_job(self) -> bool:
        reason = "its coordinator stopped answering" if self.hung else self.job.failure()
        self.hung = False
        self.say(f"AFD job failed: {reason}")
        self.job.stop()
        if not self._spend_restart("the AFD job"):
            return False
        self.job.start()
        self.phase, self.since = "starting", time.monotonic()
        return True

    def _resume(self) -> bool:
        """The backend is connected to the restarted job: the server is ready again."""
        if not self.gate.open():
            self.say(f"loading {JOB_MODEL} again failed (log: {self.server.log})")
            return False
        self.phase = None
        if self.server_since is None:
            self.say(f"ready again: the AFD job restarted ({self.restarts} restarts)")
        else:
            self.say(f"the AFD job restarted ({self.restarts} restarts); tritonserver is still "
                     f"starting")
        return True

    def _shutdown(self) -> None:
        if self.gate is not None:
            self.gate.open(wait=False)  # a load of afd_job in progress must not hold the server
        if self.openai is not None:
            self.openai.stop(grace_s=EXIT_TIMEOUT_S)
        if self.server is not None:
            self.server.stop(grace_s=EXIT_TIMEOUT_S + 5)
        if self.job is not None:
            self.job.stop()
        self.say("stopped")
