"""Benchmark `step3::moe_experts` (token-sorted grouped SwiGLU, FP8 W8A8 and BF16).

Step-3 shapes: 48 routed experts, top-3, hidden 7168, expert width 5120; tokens per micro-batch
in {128..4096}; the rank owns experts 0..E_local-1 (E_local in {3, 12, 48}). Bytes counted: the
weights of owned experts that got at least one token, x read, out written. FLOPs: 2*3*H*I per
owned (token, expert) assignment. Baseline (PERF.md): a torch loop over experts (gather rows,
three matmuls, index_add), BF16 weights, and the same loop with `torch._scaled_mm` on FP8
(per-token activation, per-channel weight scales); the routing bookkeeping of the baseline is done
before timing. Everything timed inside CUDA graphs.

    PYTHONPATH=. python perf/kernels/bench_moe_experts.py --out perf/results/kernels_moe_experts.json
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import device_info, graph_bench, measure_ceilings, table, write_json

import plugins  # noqa: F401
from plugins.moe import moe_experts_ref
from plugins.triton_kernels import moe as moe_k

E_ALL, TOPK, HID, INTER = 48, 3, 7168, 5120
TOKENS = [128, 512, 1024, 2048, 4096]
LOCAL = [3, 12, 48]


def quantize_experts(w, mode):
    """[E, out, in] bf16 -> (fp8, scales) per 128x128 block or per output channel."""
    E, O, I = w.shape
    if mode == "block":
        wb = w.float().view(E, O // 128, 128, I // 128, 128)
        s = wb.abs().amax(dim=(2, 4)).clamp_min(1e-12) / 448
        q = (wb / s[:, :, None, :, None]).clamp(-448, 448).to(torch.float8_e4m3fn).view(E, O, I)
        return q, s
    s = w.float().abs().amax(-1).clamp_min(1e-12) / 448
    return (w.float() / s[..., None]).clamp(-448, 448).to(torch.float8_e4m3fn), s


def loop_baseline(x, ids, tw, E, ws, fp8):
    """Per-expert torch loop; index bookkeeping precomputed (outside the timed region)."""
    groups = []
    for e in range(E):
        rows, slot = (ids == e).nonzero(as_tuple=True)
        if rows.numel():
            groups.append((e, rows, tw[rows, slot, None].float()))
    wg, wu, wd = ws[:3]
    if fp8:
        (gq, gs), (uq, us), (dq, ds) = ws[3:]

    def run():
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for e, rows, w in groups:
            xe = x[rows]
            if fp8:
                xs = xe.float().abs().amax(-1, keepdim=True).clamp_min(1e-12) / 448
                xq = (xe.float() / xs).to(torch.float8_e4m3fn)
                g = torch._scaled_mm(xq, gq[e].t(), xs, gs[e][None], out_dtype=torch.bfloat16)
                u = torch._scaled_mm(xq, uq[e].t(), xs, us[e][None], out_dtype=torch.bfloat16)
                h = F.silu(g) * u
                hs = h.float().abs().amax(-1, keepdim=True).clamp_min(1e-12) / 448
                hq = (h.float() / hs).to(torch.float8_e4m3fn)
                y = torch._scaled_mm(hq, dq[e].t(), hs, ds[e][None], out_dtype=torch.bfloat16)
            else:
                y = (F.silu(xe @ wg[e].T) * (xe @ wu[e].T)) @ wd[e].T
            out.index_add_(0, rows, y.float() * w)
        return out.to(x.dtype)
    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    info, ceil = device_info(), measure_ceilings()
    result = {"device": info, "ceilings": ceil, "rows": [], "configs": []}
    gen = torch.Generator(device="cuda").manual_seed(0)
    wg = torch.randn(E_ALL, INTER, HID, device="cuda", generator=gen, dtype=torch.bfloat16) / HID ** 0.5
    wu = torch.randn(E_ALL, INTER, HID, device="cuda", generator=gen, dtype=torch.bfloat16) / HID ** 0.5
    wd = torch.randn(E_ALL, HID, INTER, device="cuda", generator=gen, dtype=torch.bfloat16) / INTER ** 0.5
    blk = [quantize_experts(w, "block") for w in (wg, wu, wd)]
    chan = [quantize_experts(w, "channel") for w in (wg, wu, wd)]
    shapes = [(M, E) for E in LOCAL for M in TOKENS]
    if args.quick:
        shapes = [(128, 48), (4096, 48), (512, 3)]
    checked = set()
    for M, E in shapes:
        x = torch.randn(M, HID, device="cuda", generator=gen, dtype=torch.bfloat16)
        ids = torch.rand(M, E_ALL, device="cuda", generator=gen).argsort(-1)[:, :TOPK]
        tw = torch.rand(M, TOPK, device="cuda", generator=gen).to(torch.bfloat16)
        owned = ids < E
        n_assign = int(owned.sum())
        n_experts = int(torch.unique(ids[owned]).numel())
        flops = 2 * 3 * HID * INTER * n_assign
        w_fp8 = blk[0][0][:E], blk[1][0][:E], blk[2][0][:E], blk[0][1][:E], blk[1][1][:E], blk[2][1][:E]
        w_ch = chan[0][0][:E], chan[1][0][:E], chan[2][0][:E], chan[0][1][:E], chan[1][1][:E], chan[2][1][:E]
        w_bf = wg[:E], wu[:E], wd[:E]
        for name, ws in (("fp8", w_fp8), ("bf16", w_bf)):
            if name not in checked:  # correctness before timing (one shape per dtype)
                ref = moe_experts_ref(x, ids, tw, *ws, *([None] * 3 if name == "bf16" else []), 0)
                out = torch.ops.step3.moe_experts(x, ids, tw, *ws, expert_offset=0)
                err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
                print(f"check {name} M={M} E={E}: rel err {err:.2e}", flush=True)
                result.setdefault("checks", []).append({"dtype": name, "M": M, "E": E, "rel_err": err})
                checked.add(name)
        reps = lambda nbytes: max(1, min(8, -(-2_000_000_000 // nbytes)))  # noqa: E731
        base_bf = loop_baseline(x, ids, tw, E, w_bf, False)
        base_fp8 = loop_baseline(x, ids, tw, E, (*w_bf, *[(c[0][:E], c[1][:E]) for c in chan]), True)
        for name, ws, base in (("fp8", w_fp8, base_fp8), ("bf16", w_bf, base_bf), ("fp8_channel", w_ch, None)):
            nbytes = n_experts * 3 * HID * INTER * (2 if name == "bf16" else 1) + M * HID * 4
            r = reps(nbytes)
            t = graph_bench([lambda ws=ws: torch.ops.step3.moe_experts(x, ids, tw, *ws, expert_offset=0)] * r)
            row = {"M": M, "E_local": E, "w": name, "experts_hit": n_experts, "ms": t,
                   "tbs": nbytes / t / 1e9, "tflops": flops / t / 1e9}
            peak = ceil["fp8_tflops"] if name.startswith("fp8") else ceil["bf16_tflops"]
            row["frac_copy"] = row["tbs"] / ceil["copy_tbs"]
            row["frac_peak"] = row["tflops"] / peak
            t_mem, t_cmp = nbytes / ceil["copy_tbs"] / 1e9, flops / peak / 1e9
            row["bound"] = "weights" if t_mem >= t_cmp else "compute"
            row["frac_floor"] = max(t_mem, t_cmp) / t
            if base is not None:
                row["loop_ms"] = graph_bench([base])
                row["vs_loop"] = row["loop_ms"] / t
            result["rows"].append(row)
            print(f"M={M:5d} E={E:2d} {name:11s} {t * 1e3:8.1f} us  {row['tbs']:.2f} TB/s "
                  f"({100 * row['frac_copy']:.0f}% copy)  {row['tflops']:.0f} TFLOP/s "
                  f"({100 * row['frac_peak']:.0f}% peak) [{row['bound']}]"
                  + (f"  loop x{row['vs_loop']:.2f}" if "vs_loop" in row else ""), flush=True)
        if (M, E) in ((4096, 48), (128, 48), (128, 3), (2048, 3)):  # tile-config sweep, FP8
            for cfg in moe_k.CONFIGS:
                try:
                    t = graph_bench([lambda: moe_k.moe_experts(x, ids, tw, *w_fp8, 0, config=cfg)])
                except Exception as exc:  # noqa: BLE001  (e.g. out of shared memory)
                    print(f"config {cfg}: {type(exc).__name__}")
                    continue
                result["configs"].append({"M": M, "E_local": E, "config": str(cfg), "ms": t,
                                          "tflops": flops / t / 1e9})
        write_json(args.out, result)
        del x
    print(table(result["rows"], ["M", "E_local", "w", "ms", "tbs", "frac_copy", "tflops", "frac_peak", "bound",
                                 "vs_loop"]))
    if result["configs"]:
        print(table(result["configs"], ["M", "E_local", "config", "ms", "tflops"]))


if __name__ == "__main__":
    main()
