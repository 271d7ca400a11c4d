"""Step-3 layers at full width on one GPU: one attention step and one FFN step per layer, timed
through the engines' own graphs (exported and compiled as `build` does for `graph_format:
exported`), BF16 and FP8, eager and under CUDA graphs, each against its byte floor and its FLOP
floor from ceilings measured in the same run (copy bandwidth; BF16 or FP8 GEMM peak).

Bytes: weights (with scales), the K/V cache read, the activations in and out, each once.
FLOPs: 2 per multiply-add of every linear layer and, for attention, of QK^T and P.V over the
context; an FFN rank's routed experts count only the (token, expert) pairs it owns in the inputs.

    python perf/layers/bench_layers.py --out perf/results/layers_h100.json

Writes `step3-afd-layers/1` JSON (docs/afd-model.md §6) per dtype for `perf/afd_model.py
--measured`, plus every point with its floor and the eager/graph comparison.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "kernels")))

from common import bench_ms, device_info, measure_ceilings, table, write_json  # noqa: E402
from perf.layers.weights import fp8_tensors, layer_tensors, signature, weights_for  # noqa: E402
from step3_trt.config import Step3Config  # noqa: E402
from step3_trt.engine.export import compile_graph  # noqa: E402
from step3_trt.presets import STEP3_TEXT  # noqa: E402
from step3_trt.runtime.engine import load_inductor_graph  # noqa: E402
import plugins  # noqa: E402

P = 64  # KV block size (h100-1gpu.yaml)
FFN_GPUS = 16  # the paper's 2A2F: 2 FFN instances x 8 GPUs, 3 experts per GPU


def compiled(graph: str, cfg: Step3Config, tensors, fp8: bool, work: Path):
    sig, layout = signature(graph, fp8)
    act, kv = torch.bfloat16, torch.float8_e4m3fn if fp8 else torch.bfloat16
    out = work / f"{graph}-{'fp8' if fp8 else 'bf16'}.pt2"
    compile_graph(sig, cfg.to_text_dict(), weights_for(sig, tensors), act, kv, P, "cuda",
                  plugins.OP_VERSIONS, out, work / "cache", "exported", layout)
    fn = load_inductor_graph(out, "exported")
    return lambda *runtime: fn(*runtime, *weights_for(sig, tensors))


def graph_ms(fn, args) -> float:
    """Median ms of one call replayed from a CUDA graph (launch overhead excluded)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn(*args)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn(*args)
    return bench_ms(g.replay, warmup=5, rep=50)


def attention_inputs(cfg: Step3Config, B: int, L: int, kv_dtype):
    nb = -(-L // P)
    i32 = dict(device="cuda", dtype=torch.int32)
    tables = torch.arange(B * nb, **i32).view(B, nb)
    cache = [(torch.randn(B * nb + 1, P, cfg.head_dim, device="cuda") * 0.5).to(kv_dtype)
             for _ in range(2)]
    pos = torch.full((B,), L - 1, device="cuda", dtype=torch.int64)
    slots = (tables[:, -1].long() * P + (L - 1) % P)
    return [torch.randn(B, cfg.hidden_size, device="cuda", dtype=torch.bfloat16), pos, *cache,
            slots, tables, torch.full((B,), L, **i32), torch.arange(B + 1, **i32)]


def ffn_inputs(cfg: Step3Config, T: int, moe: bool):
    y = torch.randn(T, cfg.hidden_size, device="cuda", dtype=torch.bfloat16)
    if not moe:
        return [y]
    ids = torch.rand(T, cfg.moe_num_experts, device="cuda").topk(cfg.moe_top_k, -1).indices
    w = torch.rand(T, cfg.moe_top_k, device="cuda", dtype=torch.bfloat16)
    return [y, w, ids.to(torch.int32), torch.zeros((), device="cuda", dtype=torch.int32)]


def nbytes(tensors, names) -> int:
    return sum(tensors[n].numel() * tensors[n].element_size() for n in names)


def matmul_params(tensors, names) -> int:
    """Multiply-adds per token of the linear layers among `names` (2-D and stacked 3-D weights)."""
    return sum(tensors[n].numel() for n in names
               if tensors[n].dim() >= 2 and "rope" not in n and not n.endswith("scale"))


def floors(nbytes_: int, flops: float, ceil: dict, fp8: bool) -> dict:
    """Byte and FLOP floors (µs) from the measured ceilings; the larger is the floor."""
    byte_us = nbytes_ / (ceil["copy_tbs"] * 1e12) * 1e6
    flop_us = flops / ((ceil["fp8_tflops"] if fp8 else ceil["bf16_tflops"]) * 1e12) * 1e6
    return {"bytes": nbytes_, "flops": flops, "byte_floor_us": byte_us, "flop_floor_us": flop_us,
            "floor_us": max(byte_us, flop_us), "bound": "bytes" if byte_us >= flop_us else "flops"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="perf/results/layers_h100.json")
    ap.add_argument("--batches", default="32,64,128,256")
    ap.add_argument("--contexts", default="4096,16384,65536")
    ap.add_argument("--ffn-tokens", default="512,1024,2048,4096")
    args = ap.parse_args()
    cfg = Step3Config.from_dict(STEP3_TEXT)
    batches = [int(b) for b in args.batches.split(",")]
    contexts = [int(c) for c in args.contexts.split(",")]
    tokens = [int(t) for t in args.ffn_tokens.split(",")]
    info, ceil = device_info(), measure_ceilings()
    work = Path(tempfile.mkdtemp(prefix="layers-"))
    bf16 = layer_tensors(cfg, FFN_GPUS)
    rows, result = [], {"device": info, "ceilings": ceil, "points": []}
    for fp8 in (False, True):
        tensors = fp8_tensors(bf16) if fp8 else bf16
        tag, kvb = ("fp8", 1) if fp8 else ("bf16", 2)
        attn = compiled("attn_decode", cfg, tensors, fp8, work)
        router = compiled("router", cfg, tensors, False, work)
        moe = compiled("ffn_moe", cfg, tensors, fp8, work)
        dense = compiled("ffn_dense", cfg, tensors, fp8, work)
        sig, _ = signature("attn_decode", fp8)
        r_sig, _ = signature("router", False)
        names = [t.format(layer=0) for t in sig.weights if "rope" not in t]
        r_names = [t.format(layer=0) for t in r_sig.weights]
        w_attn = nbytes(tensors, names) + nbytes(tensors, r_names)
        macs = matmul_params(tensors, names) + matmul_params(tensors, r_names)
        Hd, heads, D = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
        grid = []
        for B in batches:
            line = []
            for L in contexts:
                inp = attention_inputs(cfg, B, L, torch.float8_e4m3fn if fp8 else torch.bfloat16)
                eager = bench_ms(lambda: router(attn(*inp)[1]), warmup=3, rep=20)
                ms = graph_ms(lambda *a: router(attn(*a)[1]), inp)
                f = floors(w_attn + B * L * 2 * D * kvb + 3 * B * Hd * 2,  # x in; h, y out
                           2 * B * macs + 4 * B * heads * L * D, ceil, fp8)
                line.append(ms * 1e3)
                rows.append({"dtype": tag, "stage": "attention", "B/T": B, "ctx": L,
                             "eager_us": eager * 1e3, "graph_us": ms * 1e3, **f,
                             "of_floor": f["floor_us"] / (ms * 1e3)})
                del inp
            grid.append(line)
        ffn_tables = []
        for kind, fn in (("moe", moe), ("dense", dense)):
            sig, _ = signature(f"ffn_{kind}", fp8)
            names = [t.format(layer=0) for t in sig.weights]
            w_ffn = nbytes(tensors, names)
            experts = [n for n in names if ".moe." in n and tensors[n].dim() == 3]
            per_token = matmul_params(tensors, [n for n in names if n not in experts])
            per_pair = matmul_params(tensors, experts) // max(1, cfg.moe_num_experts // FFN_GPUS)
            us = []
            for T in tokens:
                inp = ffn_inputs(cfg, T, kind == "moe")
                eager = bench_ms(lambda: fn(*inp), warmup=3, rep=20)
                ms = graph_ms(fn, inp)
                pairs = int((inp[2] < cfg.moe_num_experts // FFN_GPUS).sum()) if kind == "moe" else 0
                f = floors(w_ffn + 2 * T * cfg.hidden_size * 2,  # y in, out
                           2 * (T * per_token + pairs * per_pair), ceil, fp8)
                us.append(ms * 1e3)
                rows.append({"dtype": tag, "stage": f"ffn_{kind}", "B/T": T, "ctx": "",
                             "eager_us": eager * 1e3, "graph_us": ms * 1e3, **f,
                             "of_floor": f["floor_us"] / (ms * 1e3)})
            ffn_tables.append({"ffn_gpus": FFN_GPUS, "kind": kind, "tokens": tokens, "us": us})
        result[tag] = {"format": "step3-afd-layers/1", "device": info["gpu"], "kv_bytes": kvb,
                       "weight_bytes": kvb, "attention": {"tokens": batches, "context": contexts,
                                                          "us": grid},
                       "ffn": ffn_tables,
                       "notes": "perf/layers/bench_layers.py: engine graphs under CUDA graphs; "
                                "attention = attn_decode + router; FFN = one of 16 EP ranks"}
        print(table([r for r in rows if r["dtype"] == tag],
                    ["dtype", "stage", "B/T", "ctx", "eager_us", "graph_us", "byte_floor_us",
                     "flop_floor_us", "bound", "of_floor"]), flush=True)
        write_json(args.out, {**result, "points": rows})
        del attn, router, moe, dense
        torch.cuda.empty_cache()
    out = Path(args.out)
    for tag in ("bf16", "fp8"):
        write_json(str(out.with_name(out.stem + f"_{tag}_afd.json")), result[tag])


if __name__ == "__main__":
    main()
