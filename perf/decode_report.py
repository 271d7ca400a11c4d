"""Step-3 decode performance on one GPU, in one command: per-layer times at full width, the
runtime's decode steps with and without CUDA graphs, and the AFD projection at the 50 ms TPOT
SLA next to the paper's 4,039 tokens/s/GPU.

    python perf/decode_report.py [--skip-runtime]   # on an H100 or H200, a few minutes

Runs, writing into --out (default perf/results/, names tagged with the GPU):
  1. perf/layers/bench_layers.py      -> layers_<gpu>.json, layers_<gpu>_{bf16,fp8}_afd.json
  2. perf/debug/profile_stages.py     -> profile_stages_<gpu>.json (per-kernel stage profile;
                                         --skip-profile leaves it out)
  3. perf/runtime/bench_decode.py     -> runtime_decode_<gpu>.json (--skip-runtime leaves it out)
  4. perf/afd_model.py --measured     -> afd_model_measured_<gpu>_{fp8,bf16}.{json,png}
then prints the summary table (also written as decode_report_<gpu>.json): each stage at the
paper's batch against its byte floor and its FLOP floor, both from ceilings measured in step 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_TGS = 4039


def gpu_tag() -> str:
    import torch
    name = torch.cuda.get_device_name()
    for tag in ("h200", "h100", "h800", "h20"):
        if tag in name.lower():
            return tag
    raise SystemExit(f"decode_report: no AFD-model hardware preset for {name!r}")


def run(*args: str) -> None:
    print("$ " + " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], check=True, cwd=ROOT)


def point(rows: list[dict], dtype: str, stage: str, size: int, ctx) -> dict:
    return next(r for r in rows if r["dtype"] == dtype and r["stage"] == stage
                and r["B/T"] == size and r["ctx"] == ctx)


LAYER_KEYS = ("dtype", "stage", "B/T", "ctx", "eager_us", "graph_us", "byte_floor_us",
              "flop_floor_us", "floor_us", "bound", "of_floor")


def summary(out: Path, tag: str) -> dict:
    layers = json.loads((out / f"layers_{tag}.json").read_text())
    runtime_file = out / f"runtime_decode_{tag}.json"
    runtime = json.loads(runtime_file.read_text())["rows"] if runtime_file.exists() else []
    rep = {"gpu": tag, "device": layers["device"], "ceilings": layers["ceilings"], "layers": [],
           "runtime": runtime, "projection": {}}
    for stage, size, ctx in (("attention", 128, 4096), ("attention", 256, 4096),
                             ("ffn_moe", 2048, ""), ("ffn_dense", 2048, "")):
        for dtype in ("bf16", "fp8"):
            p = point(layers["points"], dtype, stage, size, ctx)
            rep["layers"].append({k: p[k] for k in LAYER_KEYS})
    for dtype in ("fp8", "bf16"):
        m = json.loads((out / f"afd_model_measured_{tag}_{dtype}.json").read_text())
        best = m.get("best_2a2f") or {}
        rep["projection"][dtype] = {
            "paper_shape_tpot_ms": m["paper_point"]["tpot_ms"],
            "paper_shape_tokens_per_s_per_gpu": m["paper_point"]["tokens_per_s_per_gpu"],
            "at_sla_tokens_per_s_per_gpu": best.get("tokens_per_s_per_gpu"),
            "at_sla_tpot_ms": best.get("tpot_ms")}
    return rep


def print_summary(rep: dict) -> None:
    c = rep["ceilings"]
    print(f"\n== per-layer times, {rep['device']['gpu']}, under CUDA graphs (µs); floors from "
          f"copy {c['copy_tbs']:.2f} TB/s, BF16 {c['bf16_tflops']:.0f} / FP8 {c['fp8_tflops']:.0f} "
          "TFLOP/s measured in the same run")
    print(f"{'stage':<10} {'B/T':>5} {'ctx':>5} {'dtype':>5} {'eager':>7} {'graph':>7} "
          f"{'bytes fl':>8} {'FLOP fl':>8} {'of floor':>8}")
    for r in rep["layers"]:
        print(f"{r['stage']:<10} {r['B/T']:>5} {str(r['ctx']):>5} {r['dtype']:>5} "
              f"{r['eager_us']:>7.0f} {r['graph_us']:>7.0f} {r['byte_floor_us']:>8.0f} "
              f"{r['flop_floor_us']:>8.0f} {r['of_floor']:>8.0%}")
    print("\n== runtime decode step (bundled model), eager vs CUDA graphs"
          + ("" if rep["runtime"] else ": not run (--skip-runtime)"))
    for r in rep["runtime"]:
        print(f"batch {r['batch']:>3}: {r['eager_ms']:.2f} ms -> {r['graphs_ms']:.2f} ms "
              f"({r['speedup']:.1f}x)")
    print("\n== AFD projection, 2A2F, 4K context, from the measured layer times")
    for dtype, p in rep["projection"].items():
        sla = "no measured batch meets 50 ms" if p["at_sla_tokens_per_s_per_gpu"] is None else \
            f"{p['at_sla_tokens_per_s_per_gpu']:,.0f} tok/s/GPU (TPOT {p['at_sla_tpot_ms']:.1f} ms)"
        print(f"{dtype}: at 50 ms TPOT {sla}; at the paper's batch shape TPOT "
              f"{p['paper_shape_tpot_ms']:.0f} ms, {p['paper_shape_tokens_per_s_per_gpu']:,.0f} "
              f"tok/s/GPU; paper: {PAPER_TGS:,}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "perf" / "results")
    ap.add_argument("--gpu", help="results tag and AFD-model preset (default: this GPU's)")
    ap.add_argument("--summary-only", action="store_true",
                    help="print the summary of results already in --out")
    ap.add_argument("--skip-profile", action="store_true", help="leave out the stage profile")
    ap.add_argument("--skip-runtime", action="store_true",
                    help="leave out the runtime decode-step benchmark")
    args = ap.parse_args()
    tag = args.gpu or gpu_tag()
    out = args.out.resolve()
    if not args.summary_only:
        run("perf/layers/bench_layers.py", "--out", str(out / f"layers_{tag}.json"))
        if not args.skip_profile:
            run("perf/debug/profile_stages.py", "--out", str(out / f"profile_stages_{tag}.json"))
        if not args.skip_runtime:
            run("perf/runtime/bench_decode.py", "--out", str(out / f"runtime_decode_{tag}.json"))
        plot = [] if importlib.util.find_spec("matplotlib") else ["--no-plot"]
        for dtype in ("fp8", "bf16"):
            run("perf/afd_model.py", "--measured", str(out / f"layers_{tag}_{dtype}_afd.json"),
                "--gpu", tag, "--kv", dtype, "--weights", dtype, "--out", str(out),
                "--tag", f"measured_{tag}_{dtype}", *plot)
    rep = summary(out, tag)
    (out / f"decode_report_{tag}.json").write_text(json.dumps(rep, indent=1) + "\n")
    print_summary(rep)


if __name__ == "__main__":
    main()
