"""Where the time of a full-width layer stage goes: per-kernel GPU time of the engine graphs
(torch.profiler), and a sweep of the MoE kernel's tile settings at one FFN rank's share.

    python perf/debug/profile_stages.py [--out perf/results/profile_stages_h100.json]

A diagnosis tool for kernel work, not a benchmark of record (that is perf/layers/).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "perf" / "kernels"))

from common import bench_ms  # noqa: E402
from perf.layers.bench_layers import FFN_GPUS, attention_inputs, compiled, ffn_inputs  # noqa: E402
from perf.layers.weights import fp8_tensors, layer_tensors  # noqa: E402
from step3_trt.config import Step3Config  # noqa: E402
from step3_trt.presets import STEP3_TEXT  # noqa: E402


def kernel_table(fn, reps: int = 10, top: int = 12) -> list[dict]:
    """Per-kernel CUDA microseconds per call of fn(), largest first."""
    from torch.profiler import ProfilerActivity, profile
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    rows = [{"kernel": e.key[:90], "us": e.device_time_total / reps, "calls": e.count / reps}
            for e in prof.key_averages() if e.device_time_total > 0]
    rows.sort(key=lambda r: -r["us"])
    return rows[:top]


def moe_sweep(x, ids, w, weights, offset) -> list[dict]:
    """moe_experts at every tile config the tuner chooses from."""
    from plugins.triton_kernels.moe import CONFIGS, moe_experts
    out = []
    for cfg in CONFIGS:
        try:
            ms = bench_ms(lambda: moe_experts(x, ids, w, *weights, offset, config=cfg), warmup=3,
                          rep=20)
        except Exception as e:  # noqa: BLE001 -- out of resources: skip the config
            out.append({"config": list(cfg), "error": type(e).__name__})
            continue
        out.append({"config": list(cfg), "us": ms * 1e3})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="perf/results/profile_stages_h100.json")
    args = ap.parse_args()
    cfg = Step3Config.from_dict(STEP3_TEXT)
    work = Path(tempfile.mkdtemp(prefix="profile-"))
    bf16 = layer_tensors(cfg, FFN_GPUS)
    result = {"gpu": torch.cuda.get_device_name(), "stages": {}, "moe_sweep": {}}
    for fp8 in (False, True):
        tag = "fp8" if fp8 else "bf16"
        tensors = fp8_tensors(bf16) if fp8 else bf16
        attn = compiled("attn_decode", cfg, tensors, fp8, work)
        moe = compiled("ffn_moe", cfg, tensors, fp8, work)
        inp = attention_inputs(cfg, 128, 4096, torch.float8_e4m3fn if fp8 else torch.bfloat16)
        result["stages"][f"attention {tag} B=128 L=4096"] = kernel_table(lambda: attn(*inp))
        del inp
        finp = ffn_inputs(cfg, 2048, True)
        result["stages"][f"ffn_moe {tag} T=2048"] = kernel_table(lambda: moe(*finp))
        p = "model.layers.0.moe."
        if fp8:
            weights = [tensors[p + f"{n}_proj.weight"] for n in ("gate", "up", "down")] + \
                [tensors[p + f"{n}_proj.weight_scale"] for n in ("gate", "up", "down")]
        else:
            weights = [tensors[p + f"{n}_proj.weight"] for n in ("gate", "up", "down")] + [None] * 3
        result["moe_sweep"][tag] = moe_sweep(finp[0], finp[2], finp[1], weights, 0)
        del attn, moe
        torch.cuda.empty_cache()
    for name, rows in result["stages"].items():
        print(f"\n== {name}: {sum(r['us'] for r in rows):.0f} us in the top kernels")
        for r in rows:
            print(f"{r['us']:9.1f} us  x{r['calls']:<4g} {r['kernel']}")
    for tag, rows in result["moe_sweep"].items():
        ok = sorted((r for r in rows if "us" in r), key=lambda r: r["us"])
        print(f"\n== moe_experts {tag}, 2048 tokens, 3 of 48 experts local: best 6 of {len(rows)}")
        for r in ok[:6]:
            print(r)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
