"""vLLM's CPU build side by side with this project's engines, in-process and as an AFD job.

    python perf/peer/run.py            # from the repository root, in the project's environment

Sets up vLLM (perf/peer/setup_vllm.sh, venv in build/peer/venv), builds engines of the bundled
model with perf/peer/tiny-cpu-2a2f-b64.yaml, picks equal-length prompts, and runs the 16- and
64-prompt sets (greedy, 64 output tokens, every path the same number of steps) through vLLM's
offline `LLM.generate` (float32), `step3-trt generate --engines` and `step3-trt run`, each with
2 and with 64 output tokens, every run twice. Checks that all paths give the same tokens, writes
perf/results/peer_<cpu>.json and prints a Markdown table. How each figure is measured: METHOD.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from statistics import mean

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from perf.peer import paths  # noqa: E402
from perf.peer.machine import cpu_name, cpu_slug, load_average  # noqa: E402
from perf.peer.prompts import full_length_prompts  # noqa: E402
from perf.peer.summary import BASE_TOKENS, markdown_table, set_figures  # noqa: E402
from perf.peer.tokens import first_divergence, truncated  # noqa: E402
from perf.peer.vllm_model import write_vllm_model  # noqa: E402

BUILD = ROOT / "build/peer"
VLLM, GENERATE, AFD = "vllm (LLM.generate)", "step3-trt generate --engines", "step3-trt run (AFD)"
METHOD = {
    "generation_s": "vLLM: wall time of llm.generate(); step3-trt run: first to last span of "
                    "the job's --trace (all ranks); step3-trt generate: process wall time minus "
                    "the same repeat's start-up",
    "order": "repeat by repeat: vLLM (its own process), then generate, then run",
    "startup_s": "vLLM: LLM(...) plus one 2-token warm-up generate of the first prompt set; "
                 "step3-trt generate and run: process wall time with one prompt and one output "
                 "token; one per repeat",
    "decode_step_ms": f"(generation with new_tokens - generation with {BASE_TOKENS} output "
                      f"tokens) / (new_tokens - {BASE_TOKENS}), per repeat, same prompts: the "
                      "base run holds the prefill and the first decode step",
    "output_tokens_per_s": "prompts * new_tokens / generation_s",
    "tokens": "every run of every path against vLLM's first run of that prompt set, token by "
              "token (shorter runs against its first tokens); vLLM against the project's float32 "
              "reference model",
}


@dataclass(frozen=True)
class BenchSpec:
    prompt_sets: tuple[int, ...] = (16, 64)
    prompt_len: int = 32
    new_tokens: int = 64
    repeats: int = 2
    build_config: str = "perf/peer/tiny-cpu-2a2f-b64.yaml"
    checkpoint: str = "models/step3-tiny"
    text: str = "data/heldout.txt"
    vllm_kv_cache_gib: int = 1
    project_threads: int | None = None  # OMP_NUM_THREADS of the project's CLIs; None: default

    def __post_init__(self):
        if not self.prompt_sets or min(self.prompt_sets) < 1:
            raise ValueError(f"prompt sets must be positive counts, got {self.prompt_sets}")
        if self.prompt_len < 2:
            raise ValueError(f"prompt_len must be >= 2 (BOS + text), got {self.prompt_len}")
        if self.new_tokens <= BASE_TOKENS:
            raise ValueError(f"new_tokens must be > {BASE_TOKENS} (the base run's length), "
                             f"got {self.new_tokens}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")
        if self.project_threads is not None and self.project_threads < 1:
            raise ValueError(f"project_threads must be >= 1, got {self.project_threads}")


def parse_args(argv: list[str] | None) -> tuple[BenchSpec, Path | None, bool]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="16,64", help="prompt counts, comma-separated (default 16,64)")
    p.add_argument("--prompt-len", type=int, default=32, help="tokens per prompt (default 32)")
    p.add_argument("--new-tokens", type=int, default=64, help="output tokens (default 64)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each measurement (default 2)")
    p.add_argument("--project-threads", type=int, default=None,
                   help="OMP_NUM_THREADS for step3-trt and its ranks (default: unset, torch's "
                        "default of one thread per core); vLLM keeps its own binding")
    p.add_argument("--out", type=Path, default=None,
                   help="result JSON (default perf/results/peer_<cpu>[_threadsN].json)")
    p.add_argument("--reuse-engines", action="store_true",
                   help="use build/peer/engines as built before instead of converting and building")
    a = p.parse_args(argv)
    sets = tuple(int(s) for s in a.sets.split(",") if s.strip())
    return (BenchSpec(sets, a.prompt_len, a.new_tokens, a.repeats,
                      project_threads=a.project_threads), a.out, a.reuse_engines)


def build_engines(spec: BenchSpec, reuse: bool) -> Path:
    engines = BUILD / "engines"
    if reuse and (engines / "manifest.json").is_file():
        return engines
    roles = BUILD / "roles"
    for d in (roles, engines):
        shutil.rmtree(d, ignore_errors=True)
    paths.step3_trt(["convert", "--checkpoint", spec.checkpoint, "--config", spec.build_config,
                     "--out", str(roles)])
    paths.step3_trt(["build", "--checkpoint", str(roles), "--config", spec.build_config,
                     "--out", str(engines)])
    return engines


def project_repeat(run_one, engines: Path, sets: dict[str, list[list[int]]], new_tokens: int,
                   startup_prompt: list[int], repeat: int, label: str) -> dict:
    """One repeat of one project CLI path: each prompt set with BASE_TOKENS and new_tokens.

    Start-up is the wall time of a run with one prompt and one output token. Generation is the
    span of the job's trace where the path has one (`run`), else wall time minus start-up.
    """
    startup_run = run_one(engines, [startup_prompt], 1)
    runs = []
    for name, prompts in sets.items():
        for max_tokens in (BASE_TOKENS, new_tokens):
            r = run_one(engines, prompts, max_tokens)
            print(f"  {label} {name} prompts x {max_tokens} tokens (run {repeat + 1}): "
                  f"{r.wall_s:.1f} s", flush=True)
            generation = r.generation_s if r.generation_s is not None else \
                r.wall_s - startup_run.wall_s
            runs.append({"prompt_set": name, "max_tokens": max_tokens, "repeat": repeat,
                         "wall_s": r.wall_s, "generation_s": generation, "outputs": r.outputs})
    return {"startup_s": [startup_run.wall_s], "runs": runs}


def checkout_commit() -> str:
    """HEAD of the checkout that was measured, with '+changes' when tracked files differ."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, check=True).stdout.strip()
    return head + ("+changes" if changed else "")


def check_tokens(runs: list[dict], baseline: dict[str, dict]) -> str | dict:
    """'identical', or the first divergence (with the run it happened in)."""
    for r in runs:
        expected = truncated(baseline[r["prompt_set"]], r["max_tokens"])
        if (d := first_divergence(expected, r["outputs"])) is not None:
            return {**d, "prompt_set": r["prompt_set"], "max_tokens": r["max_tokens"],
                    "repeat": r["repeat"]}
    return "identical"


def main(argv: list[str] | None = None) -> int:
    spec, out, reuse = parse_args(argv)
    cpu = cpu_name()
    suffix = "" if spec.project_threads is None else f"_threads{spec.project_threads}"
    out = out or ROOT / "perf/results" / f"peer_{cpu_slug(cpu)}{suffix}.json"
    load_start, started = load_average(), datetime.now(timezone.utc)
    print(f"{cpu}, load average {load_start['1min']:.2f}", flush=True)

    subprocess.run(["bash", str(ROOT / "perf/peer/setup_vllm.sh")], check=True)
    engines = build_engines(spec, reuse)
    runtime = yaml.safe_load((engines / "build_config.yaml").read_text())["runtime"]
    vllm_model = write_vllm_model(ROOT / spec.checkpoint, BUILD / "vllm-model")
    eos = json.loads((ROOT / spec.checkpoint / "config.json").read_text())
    eos = eos.get("text_config", eos)["eos_token_id"]

    print("picking prompts (float32 reference model)", flush=True)
    prompts, reference = full_length_prompts(ROOT / spec.checkpoint, ROOT / spec.text,
                                             spec.prompt_len, spec.new_tokens,
                                             max(spec.prompt_sets), eos, spec.project_threads)
    sets = {str(n): prompts[:n] for n in spec.prompt_sets}

    vllm_spec = {"model": str(vllm_model), "prompt_sets": sets,
                 "max_tokens": [BASE_TOKENS, spec.new_tokens],
                 "max_num_seqs": runtime["max_batch"],
                 "max_num_batched_tokens": runtime["max_tokens_per_step"],
                 "max_model_len": runtime["max_seq_len"], "enable_prefix_caching": False}
    results = {VLLM: {"startup_s": [], "startup_parts_s": [], "runs": []},
               GENERATE: {"startup_s": [], "runs": []}, AFD: {"startup_s": [], "runs": []}}
    for repeat in range(spec.repeats):
        print(f"repeat {repeat + 1} of {spec.repeats}: vLLM", flush=True)
        vllm = paths.run_vllm(vllm_spec, spec.vllm_kv_cache_gib)
        results[VLLM]["startup_s"].append(sum(vllm["startup"].values()))
        results[VLLM]["startup_parts_s"].append(vllm["startup"])
        results[VLLM]["runs"] += [{**r, "repeat": repeat, "generation_s": r["wall_s"]}
                                  for r in vllm["runs"]]
        for path_name, run_one, label in ((GENERATE, paths.generate_engines, "generate"),
                                          (AFD, paths.run_afd, "run")):
            run_one = functools.partial(run_one, threads=spec.project_threads)
            r = project_repeat(run_one, engines, sets, spec.new_tokens, prompts[0], repeat, label)
            results[path_name]["startup_s"] += r["startup_s"]
            results[path_name]["runs"] += r["runs"]
    baseline = {r["prompt_set"]: r["outputs"] for r in results[VLLM]["runs"]
                if r["repeat"] == 0 and r["max_tokens"] == spec.new_tokens}

    for path in results.values():
        path["tokens"] = check_tokens(path["runs"], baseline)
        path["sets"] = {k: set_figures(path["runs"], k, len(v), spec.new_tokens)
                        for k, v in sets.items()}
        for r in path["runs"]:
            del r["outputs"]
    largest = baseline[str(max(spec.prompt_sets))]
    reference_check = first_divergence(reference, largest)

    table = markdown_table({k: {**v, "tokens": v["tokens"] if v["tokens"] == "identical"
                                else "differ"} for k, v in results.items()})
    record = {
        "cpu": cpu, "cores": len(os.sched_getaffinity(0)),
        "started_utc": started.isoformat(timespec="seconds"),
        "load_average": {"start": load_start, "end": load_average()},
        "spec": asdict(spec), "engines_runtime": runtime, "method": METHOD,
        "vllm_config": vllm["config"],
        "vllm_vs_reference": "identical" if reference_check is None else reference_check,
        "paths": results, "table": table,
        "commit": checkout_commit(),
        "prompts": [",".join(map(str, p)) for p in prompts],
        "output_ids": [",".join(map(str, largest[tuple(p)])) for p in prompts],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nload average {load_start['1min']:.2f} -> {record['load_average']['end']['1min']:.2f}"
          f"; wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}\n")
    print(table)
    bad = {k: v["tokens"] for k, v in results.items() if v["tokens"] != "identical"}
    if reference_check is not None:
        bad["vllm vs reference"] = reference_check
    for k, v in bad.items():
        print(f"tokens differ: {k}: {v}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
