"""Decode steps of the in-process runtime on a GPU, eager vs replayed from the runtime's per-layer
CUDA graphs (`runtime.cuda_graphs`): the before/after of the graphs in the real runtime path.

    python perf/runtime/bench_decode.py --out perf/results/runtime_decode_h100.json

Builds the bundled model's engines for CUDA (bf16, 2 expert-parallel FFN ranks in-process, like
tiny-cpu-2a2f.yaml), prefills B prompts, then times whole decode steps (batch construction,
embedding, every layer's attention and FFN engines, the head) with the GPU synchronized around
each step. The bundled model is small, so this measures the host overhead graphs remove, not
Step-3's GPU time (per-layer full-width times: perf/layers/).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from step3_trt.build_config import BuildConfig  # noqa: E402
from step3_trt.convert.convert import convert  # noqa: E402
from step3_trt.engine.build import build_engines  # noqa: E402
from step3_trt.presets import DEFAULT_CHECKPOINT  # noqa: E402
from step3_trt.runtime.block_manager import BlockManager  # noqa: E402
from step3_trt.runtime.local import LocalRunner  # noqa: E402
from step3_trt.runtime.request import Request
from step3_trt.runtime.scheduler import Chunk  # noqa: E402
from step3_trt.sampling import SamplingParams  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def cuda_build(max_batch: int, context: int) -> BuildConfig:
    raw = BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu-2a2f.yaml").to_dict()
    raw.update(name="tiny-cuda-bf16", device="cuda", graph_format="exported")
    raw["dtypes"] = {"weights": "bfloat16", "activations": "bfloat16", "kv_cache": "bfloat16"}
    raw["runtime"].update(max_batch=max_batch, max_tokens_per_step=max_batch * context)
    raw["kv_cache"]["max_tokens"] = max_batch * (context + 64)
    raw["memory"]["per_rank_gb"] = 8
    return BuildConfig.from_dict(raw)


def decode_steps_ms(runner: LocalRunner, batch: int, context: int, steps: int,
                    warmup: int = 3) -> list[float]:
    """Wall milliseconds of each decode step after `warmup` (which captures the graphs)."""
    blocks = BlockManager(runner.num_blocks, runner.build.kv_cache.block_size)
    g = torch.Generator().manual_seed(batch)
    reqs = [Request(i, torch.randint(0, 300, (context,), generator=g).tolist(), SamplingParams())
            for i in range(batch)]
    chunks = [Chunk(r, 0, r.prompt, blocks.append(r.request_id, context), True) for r in reqs]
    runner.forward(runner.attention.batch(chunks, [blocks.block_table(r.request_id)
                                                   for r in reqs]))
    times = []
    for t in range(warmup + steps):
        chunks = [Chunk(r, context + t, [11], blocks.append(r.request_id, 1), True) for r in reqs]
        tables = [blocks.block_table(r.request_id) for r in reqs]
        torch.cuda.synchronize()
        start = time.perf_counter()
        runner.forward(runner.attention.batch(chunks, tables))
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    for r in reqs:
        blocks.free(r.request_id)
    return times[warmup:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="perf/results/runtime_decode_h100.json")
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    work = Path(tempfile.mkdtemp(prefix="decode-bench-"))
    build = cuda_build(max(batches), args.context)
    roles = convert(DEFAULT_CHECKPOINT, build, work / "roles", progress=False)
    engines, _ = build_engines(roles, build, work / "engines", cache_dir=work / "cache",
                               progress=False)
    runners = {"eager": LocalRunner(engines, cuda_graphs=False),
               "graphs": LocalRunner(engines, cuda_graphs=True)}
    rows = []
    for B in batches:
        ms = {mode: statistics.median(decode_steps_ms(r, B, args.context, args.steps))
              for mode, r in runners.items()}
        rows.append({"batch": B, "context": args.context, "eager_ms": ms["eager"],
                     "graphs_ms": ms["graphs"], "speedup": ms["eager"] / ms["graphs"],
                     "graphs_tokens_per_s": B / ms["graphs"] * 1e3})
    gpu = torch.cuda.get_device_name()
    print(f"decode step, bundled model ({runners['eager'].config.num_hidden_layers} layers, bf16, "
          f"2 FFN ranks in-process), {gpu}")
    print(f"{'batch':>5} {'eager ms':>9} {'graphs ms':>9} {'speedup':>8} {'tokens/s':>9}")
    for r in rows:
        print(f"{r['batch']:>5} {r['eager_ms']:>9.2f} {r['graphs_ms']:>9.2f} "
              f"{r['speedup']:>7.1f}x {r['graphs_tokens_per_s']:>9.0f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(
        {"device": gpu, "torch": torch.__version__, "model": str(DEFAULT_CHECKPOINT.name),
         "build": build.to_dict(), "steps": args.steps, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
