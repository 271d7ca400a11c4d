"""The three paths of the side-by-side benchmark, each run as its own process.

- vLLM: `perf/peer/vllm_bench.py` under the vLLM venv's python (offline `LLM.generate`).
- in-process engines: `step3-trt generate --engines DIR --prompt-ids ... --json`.
- AFD job: `step3-trt run --engines DIR --prompts-file FILE --json --trace FILE`.
The project's CLI runs as `python -m step3_trt.cli.main` from the repository root, so the
checkout's own code is what is measured. Outputs are keyed by prompt (a tuple of token ids).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / "build/peer/venv/bin/python"
Outputs = dict[tuple[int, ...], list[int]]


@dataclass(frozen=True)
class CliRun:
    wall_s: float  # process start to exit
    outputs: Outputs
    generation_s: float | None = None  # first to last span of the AFD job's trace


def _run(cmd: list[str], timeout_s: float, env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s,
                          env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited {proc.returncode}:\n"
                           f"{proc.stderr[-3000:]}")
    return wall, proc.stdout


def step3_trt(args: list[str], threads: int | None = None,
              timeout_s: float = 1800) -> tuple[float, str]:
    """Run the project's CLI; returns (wall seconds, stdout).

    `threads`: OMP_NUM_THREADS for the CLI and every process it starts (None: torch's default).
    """
    env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return _run([sys.executable, "-m", "step3_trt.cli.main", *args], timeout_s, env)


def parse_outputs(stdout: str) -> Outputs:
    """`--json` lines of `generate` / `run` -> prompt -> output ids (less `run`'s closing
    summary line); an error line is fatal."""
    outputs = {}
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if set(r) == {"summary"}:
            continue
        if "error" in r:
            raise RuntimeError(f"request {r.get('prompt_ids')} failed: {r['error']}")
        outputs[tuple(r["prompt_ids"])] = r["output_ids"]
    return outputs


def _ids_args(prompts: list[list[int]]) -> list[str]:
    return [a for p in prompts for a in ("--prompt-ids", ",".join(map(str, p)))]


def reference_outputs(checkpoint: Path, prompts: list[list[int]], new_tokens: int,
                      threads: int | None = None) -> Outputs:
    """Greedy tokens of the project's float32 reference model (stops at end-of-sequence)."""
    _, stdout = step3_trt(["generate", "--checkpoint", str(checkpoint), "--dtype", "float32",
                           "--greedy", "--max-new-tokens", str(new_tokens), "--json",
                           *_ids_args(prompts)], threads)
    return parse_outputs(stdout)


def generate_engines(engines: Path, prompts: list[list[int]], new_tokens: int,
                     threads: int | None = None) -> CliRun:
    wall, stdout = step3_trt(["generate", "--engines", str(engines), "--greedy",
                              "--max-new-tokens", str(new_tokens), "--json", *_ids_args(prompts)],
                             threads)
    return CliRun(wall, parse_outputs(stdout))


def trace_extent_s(trace_file: Path) -> float:
    """Seconds from the first span's start to the last span's end over every rank."""
    spans = [e for e in json.loads(trace_file.read_text())["traceEvents"] if e.get("ph") == "X"]
    if not spans:
        raise RuntimeError(f"{trace_file} has no spans")
    return (max(e["ts"] + e["dur"] for e in spans) - min(e["ts"] for e in spans)) / 1e6


def run_afd(engines: Path, prompts: list[list[int]], new_tokens: int,
            threads: int | None = None) -> CliRun:
    with tempfile.TemporaryDirectory(prefix="peer-afd-") as tmp:
        requests, trace = Path(tmp) / "requests.jsonl", Path(tmp) / "trace.json"
        requests.write_text("".join(
            json.dumps({"prompt_ids": p, "max_tokens": new_tokens, "greedy": True}) + "\n"
            for p in prompts))
        wall, stdout = step3_trt(["run", "--engines", str(engines), "--prompts-file",
                                  str(requests), "--json", "--trace", str(trace)], threads)
        return CliRun(wall, parse_outputs(stdout), trace_extent_s(trace))


def run_vllm(spec: dict, kv_cache_gib: int, timeout_s: float = 1800) -> dict:
    """Run perf/peer/vllm_bench.py with `spec`; returns its result (config, startup, runs)."""
    with tempfile.TemporaryDirectory(prefix="peer-vllm-") as tmp:
        spec_file, out_file = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_file.write_text(json.dumps(spec))
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib)}
        env.pop("PYTHONPATH", None)  # the vLLM venv imports nothing of this checkout
        _run([str(VLLM_PYTHON), str(ROOT / "perf/peer/vllm_bench.py"), str(spec_file),
              str(out_file)], timeout_s, env)
        result = json.loads(out_file.read_text())
    for run in result["runs"]:
        run["outputs"] = {tuple(p): o for p, o in
                          zip(spec["prompt_sets"][run["prompt_set"]], run.pop("output_ids"))}
    return result
