"""Shared pieces of the kernel benchmarks: ceilings measured in the same run, timing, JSON.

Ceilings (measured, never datasheet): device copy bandwidth (read + write bytes of a 2 GiB copy),
read-only bandwidth (a 2 GiB bf16 `sum`), BF16 GEMM peak (8192^3 `torch.matmul`) and FP8 GEMM
peak (8192^3 `torch._scaled_mm`, the better of plain and fast accumulation), all on random data.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import triton.testing  # noqa: E402


def bench_ms(fn, warmup: int = 25, rep: int = 100) -> float:
    """Median milliseconds of fn() (triton.testing.do_bench: CUDA events, L2 flushed each rep)."""
    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def device_info() -> dict:
    p = torch.cuda.get_device_properties(0)
    return {"gpu": p.name, "sms": p.multi_processor_count, "memory_gib": round(p.total_memory / 2**30, 1),
            "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def measure_ceilings() -> dict:
    n = 1 << 30  # 2 GiB of bf16
    src = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    copy_ms = bench_ms(lambda: dst.copy_(src))
    read_ms = bench_ms(lambda: src.sum())
    del dst
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    bf16_ms = bench_ms(lambda: a @ b)
    a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t().contiguous().t()
    one = torch.ones((), device="cuda")
    fp8_ms = bench_ms(lambda: torch._scaled_mm(a8, b8, one, one, out_dtype=torch.bfloat16))
    fp8_fast_ms = bench_ms(lambda: torch._scaled_mm(a8, b8, one, one, out_dtype=torch.bfloat16,
                                                    use_fast_accum=True))
    flops = 2 * 8192 ** 3
    out = {"copy_tbs": 2 * 2 * n / copy_ms / 1e9, "read_tbs": 2 * n / read_ms / 1e9,
           "bf16_tflops": flops / bf16_ms / 1e9, "fp8_tflops_plain": flops / fp8_ms / 1e9,
           "fp8_tflops_fast": flops / fp8_fast_ms / 1e9}
    out["fp8_tflops"] = max(out["fp8_tflops_plain"], out["fp8_tflops_fast"])
    del src, a, b, a8, b8
    torch.cuda.empty_cache()
    print("ceilings: " + ", ".join(f"{k} {v:.0f}" if v > 10 else f"{k} {v:.2f}" for k, v in out.items()),
          flush=True)
    return out


def write_json(path: str | None, data: dict) -> None:
    if not path:
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in cols]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(fmt(r.get(c, "")).rjust(w) for c, w in zip(cols, widths)) for r in rows]
    return "\n".join(lines)


def graph_bench(calls) -> float:
    """Milliseconds per call: every call captured back to back in one CUDA graph, replays timed
    with `bench_ms` (launch overhead excluded; pass calls on distinct buffers to defeat L2)."""
    for c in calls:  # compile and warm up outside the capture
        c()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for c in calls:
            c()
    ms = bench_ms(graph.replay) / len(calls)
    del graph
    return ms
