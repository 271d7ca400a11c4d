"""Compose per-layer times from the measured kernel benchmarks (perf/results/kernels_*.json)
into a ``step3-afd-layers/1`` file, until perf/layers/ measures whole layers.

    python -m perf.afd.from_kernels [--kernels perf/results] [--out FILE]

Attention layer = ``mfa_decode`` (FP8 KV) + the q/k/v, wq and o_proj GEMMs; FFN layer on one
FFN GPU of EP-16 = ``moe_experts`` (3 local experts, FP8 128x128 blocks) + its 1/16 slice of the
shared expert (dense layers: of the dense MLP) + the roofline all-gather / reduce-scatter in
its 8-GPU host. GEMMs are timed at the FLOP rate ``fp8_linear`` (rowwise) measured at the same
M on [M,7168]x[7168,10240]: a shape-transfer assumption, stated in docs/afd-model.md §8.
Norms, RoPE, quantization and the router are left out, so the result is optimistic.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .deployment import Deployment
from .hardware import hardware
from .interp import interp1
from .layers_json import FORMAT, parse_layer_times
from .roofline import Roofline
from .step3 import Step3Dims

RESULTS = Path(__file__).resolve().parents[1] / "results"
DEFAULT_OUT = RESULTS / "afd_model_kernel_layers_h100.json"


def gemm_rate(rows: list[dict]) -> tuple[list[int], list[float]]:
    """(M, FLOP/s) of the rowwise FP8 linear benchmark, M increasing."""
    pts = sorted((r["M"], r["tflops"] * 1e12) for r in rows if r["variant"] == "rowwise")
    return [m for m, _ in pts], [f for _, f in pts]


def gemm_us(m: int, params: float, rate: tuple[list[int], list[float]]) -> float:
    """µs of an [m, K] x [K, N] FP8 GEMM with K*N = ``params`` at the measured rate for ``m``
    (below the smallest measured M the GEMM is weight-bound: same time as there)."""
    ms, flops = rate
    m_eff = min(max(m, ms[0]), ms[-1])
    r = interp1(ms, flops, m_eff)
    return 2.0 * m_eff * params / r * 1e6 * (m / m_eff if m > ms[-1] else 1.0)


def compose(kernels: Path, dims: Step3Dims | None = None) -> dict:
    """The layer-times object built from the three kernel result files under ``kernels``."""
    dims = dims or Step3Dims()
    load = lambda name: json.loads((kernels / f"kernels_{name}.json").read_text())  # noqa: E731
    mfa, moe, lin = load("mfa_decode"), load("moe_experts"), load("fp8_linear")
    rate = gemm_rate(lin["rows"])
    decode = {(r["B"], r["L"]): r["ms"] * 1e3 for r in mfa["rows"] if r["kv"] == "fp8"}
    tokens = sorted({b for b, _ in decode})
    context = sorted({c for _, c in decode})
    qkv = dims.hidden * (dims.q_rank + 2 * dims.kv_heads * dims.head_dim)
    wq, wo = dims.q_rank * dims.heads * dims.head_dim, dims.attn_out_params()
    att = [[decode[(b, c)] + sum(gemm_us(b, w, rate) for w in (qkv, wq, wo)) for c in context]
           for b in tokens]
    experts = {(r["M"], r["E_local"]): r["ms"] * 1e3 for r in moe["rows"] if r["w"] == "fp8"}
    m_list = sorted({m for m, _ in experts})
    roof = Roofline(hardware("h100"))
    ffn = []
    for g, local in ((16, 3), (8, 6)):
        dep = Deployment(1, g // 8)  # g FFN GPUs in 8-GPU hosts
        for kind in ("moe", "dense"):
            us = []
            for m in m_list:  # each FFN host all-gathers the whole m-token micro-batch
                coll = roof.comm_us(dep, m // dep.attn_gpu_count)
                t = coll.get("ffn_gather", 0.0) + coll.get("ffn_scatter", 0.0)
                if kind == "moe":
                    lo, hi = experts[(m, 3)], experts[(m, 12)]
                    t += lo + (hi - lo) * (local - 3) / 9 + gemm_us(m, dims.shared_params() / g,
                                                                      rate)
                else:
                    t += gemm_us(m, dims.dense_params() / g, rate)
                us.append(t)
            ffn.append({"ffn_gpus": g, "kind": kind, "tokens": m_list, "us": us})
    return {"format": FORMAT, "device": mfa["device"]["gpu"], "kv_bytes": 1, "weight_bytes": 1,
            "notes": "composed from kernel benchmarks by perf/afd/from_kernels.py, not a layer "
                     "measurement; ffn_gpus=8 interpolates 3 and 12 local experts to 6; norms, "
                     "RoPE, quantization and router omitted; FFN-host collectives are roofline",
            "attention": {"tokens": tokens, "context": context, "us": att}, "ffn": ffn}


def main(argv: list[str] | None = None) -> int:
    """Write the composed layer-times file and print where."""
    ap = argparse.ArgumentParser(description="compose AFD layer times from kernel benchmarks")
    ap.add_argument("--kernels", type=Path, default=RESULTS)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    obj = compose(args.kernels)
    parse_layer_times(obj, str(args.out))  # validate before writing
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(obj, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
