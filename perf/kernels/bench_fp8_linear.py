"""Benchmark `step3::fp8_linear` and `step3::fp8_quantize` on the expert-GEMM shape of PERF.md.

y[M, 10240] = x[M, 7168] @ w[10240, 7168]^T for M in {16..4096}, plus 8192^3. Variants: row-wise
scales (the op's cuBLASLt `_scaled_mm` path), 1x128 x 128x128 block scales (the op's Triton
kernel); baselines: `_scaled_mm` per-tensor and BF16 `matmul`. Weights rotated over copies
(>= 512 MB) inside CUDA graphs so L2 holds none of them.

    PYTHONPATH=. python perf/kernels/bench_fp8_linear.py --out perf/results/kernels_fp8_linear.json
"""

from __future__ import annotations

import argparse

import torch

from common import device_info, graph_bench, measure_ceilings, table, write_json

import plugins  # noqa: F401
from plugins.fp8 import fp8_linear_ref

SHAPES = [(m, 10240, 7168) for m in (16, 64, 128, 256, 1024, 4096)] + [(8192, 8192, 8192)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    args = ap.parse_args()
    info, ceil = device_info(), measure_ceilings()
    result = {"device": info, "ceilings": ceil, "rows": []}
    gen = torch.Generator(device="cuda").manual_seed(0)
    one = torch.ones((), device="cuda")
    for M, N, K in SHAPES:
        copies = max(1, -(-(512 << 20) // (N * K)))
        x = torch.randn(M, K, device="cuda", generator=gen, dtype=torch.bfloat16)
        ws = [torch.randn(N, K, device="cuda", generator=gen, dtype=torch.bfloat16) for _ in range(min(copies, 8))]
        xq_t, xs_t = torch.ops.step3.fp8_quantize(x, "token")
        xq_g, xs_g = torch.ops.step3.fp8_quantize(x, "group")
        wq_c = [torch.ops.step3.fp8_quantize(w, "token") for w in ws]
        wq_b = [torch.ops.step3.fp8_quantize(w, "block") for w in ws]
        for name, xq, xs, wl in (("rowwise", xq_t, xs_t, wq_c), ("block", xq_g, xs_g, wq_b)):
            out = torch.ops.step3.fp8_linear(xq, xs, *wl[0])
            ref = fp8_linear_ref(xq, xs, *wl[0])
            err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
            t = graph_bench([lambda w=w: torch.ops.step3.fp8_linear(xq, xs, *w) for w in wl])
            result["rows"].append({"M": M, "N": N, "K": K, "variant": name, "ms": t, "rel_err": err})
        t = graph_bench([lambda w=w: torch._scaled_mm(xq_t, w[0].t(), one, one, out_dtype=torch.bfloat16)
                         for w in wq_c])
        result["rows"].append({"M": M, "N": N, "K": K, "variant": "scaled_mm_tensor", "ms": t})
        t = graph_bench([lambda w=w: x @ w.T for w in ws])
        result["rows"].append({"M": M, "N": N, "K": K, "variant": "bf16_matmul", "ms": t})
        t = graph_bench([lambda: torch.ops.step3.fp8_quantize(x, "group")])
        result["rows"].append({"M": M, "N": 0, "K": K, "variant": "quantize_group", "ms": t})
        for r in result["rows"]:
            if r["M"] == M and "tflops" not in r:
                if r["variant"] == "quantize_group":
                    r["tbs"] = M * K * 3 / r["ms"] / 1e9
                    continue
                wbytes = N * K * (2 if r["variant"] == "bf16_matmul" else 1)
                r["tflops"] = 2 * M * N * K / r["ms"] / 1e9
                r["weight_tbs"] = wbytes / r["ms"] / 1e9
                peak = ceil["bf16_tflops"] if r["variant"] == "bf16_matmul" else ceil["fp8_tflops"]
                r["frac_peak"] = r["tflops"] / peak
                r["frac_copy"] = r["weight_tbs"] / ceil["copy_tbs"]
        print(table([r for r in result["rows"] if r["M"] == M],
                    ["M", "N", "K", "variant", "ms", "tflops", "frac_peak", "weight_tbs", "frac_copy", "rel_err"]),
              flush=True)
        write_json(args.out, result)
        del x, ws, wq_c, wq_b
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
