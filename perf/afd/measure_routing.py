"""Measure a model's expert routing on held-out text (reference model, CPU) and check the
sampler of routing.py against it.

    python -m perf.afd.measure_routing [--checkpoint models/step3-tiny] [--data data/heldout.txt]
        [--out perf/results/afd_model_routing_step3-tiny.json]

Runs every 256-token window of the text (``[BOS] + window[:-1]``, as ``step3-trt eval``)
through the reference model in float32 and records, per MoE layer, each token's top-k experts
from the router (softmax in float32 over all experts, top-k: the model's own routing). Writes
``step3-afd-routing/1``: per layer, each expert's inclusion and top-1 fractions; plus, on the
measured model's own expert-parallel splits, the busiest rank's load in micro-batches drawn
from the measured tokens next to the same figure from routing.py's sampler fed with the
measured fractions (the check that independent Plackett-Luce draws describe the measured
micro-batches). docs/afd-model.md §11 says what this does and does not tell about Step-3.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.evaluate import eval_windows
from step3_trt.model.load import load_reference_model
from step3_trt.presets import DEFAULT_CHECKPOINT
from step3_trt.tokenizer import load_tokenizer

from .placement import Layout, moe_work
from .routing import FORMAT, RoutingSampler, parse_routing

ROOT = Path(__file__).resolve().parents[2]
SEQ_LEN = 256
CHECK_TOKENS = (64, 256, 1024)  # micro-batch sizes of the sampler check
DRAWS = 64


def routed_ids(checkpoint: Path, text: str) -> tuple[dict[int, np.ndarray], dict]:
    """{layer: [tokens, top_k] expert ids, top-1 first} for every scored token of ``text``,
    and a description of the run."""
    reader = CheckpointReader(checkpoint)
    model = load_reference_model(reader, "float32")
    tokenizer = load_tokenizer(checkpoint)
    ids = tokenizer.tokenizer.encode(text, add_special_tokens=False).ids
    inputs, _ = eval_windows(ids, SEQ_LEN, len(ids), tokenizer.bos_token_id)
    captured: dict[int, list[torch.Tensor]] = {}
    hooks = []
    for index, layer in enumerate(model.model.layers):
        if layer.is_moe:
            captured[index] = []
            hooks.append(layer.moe.gate.register_forward_hook(_capture(captured[index],
                                                                       model.config.moe_top_k)))
    with torch.no_grad():
        for window in inputs:
            model(window[None, :])
    for h in hooks:
        h.remove()
    out = {i: torch.cat(v).numpy().astype(np.int64) for i, v in captured.items()}
    return out, {"windows": int(inputs.shape[0]), "seq_len": SEQ_LEN}


def _capture(sink: list, top_k: int):
    """A forward hook on a router's gate: the layer's top-k experts as MoE.route picks them."""
    def hook(_module, _inputs, logits):
        probs = logits.reshape(-1, logits.shape[-1]).float().softmax(dim=-1)
        sink.append(probs.topk(top_k, dim=-1).indices)
    return hook


def fractions(ids: np.ndarray, experts: int) -> tuple[list[float], list[float]]:
    """(inclusion, top-1) fractions of each expert over the tokens of ``ids`` [tokens, k]."""
    n = ids.shape[0]
    inc = np.bincount(ids.ravel(), minlength=experts) / n
    top1 = np.bincount(ids[:, 0], minlength=experts) / n
    return [float(x) for x in inc], [float(x) for x in top1]


def busiest_load(ids: np.ndarray, ranks: int, experts: int) -> float:
    """Mean over micro-batches ``ids`` [draws, tokens, k] of the busiest rank's routed
    assignments over the mean rank's (expert parallelism in contiguous blocks)."""
    work = moe_work(Layout("top1", 1, ranks, experts), ids, ids.shape[1], ids.shape[2])
    a = work.assignments
    return float((a.max(axis=1) / a.mean(axis=1)).mean())


def sampler_check(measured: dict[int, np.ndarray], stats, experts: int, top_k: int,
                  seed: int = 0) -> list[dict]:
    """Busiest-rank load from measured micro-batches and from the sampler, per split and size."""
    rng = np.random.default_rng(seed)
    sampler = RoutingSampler(stats, experts, top_k, layers=len(stats.layers), pool=1 << 15,
                             seed=seed)
    rows = []
    splits = [r for r in (2, 4, 8) if r <= experts]
    for tokens in CHECK_TOKENS:
        model_ids = sampler.draws(tokens, DRAWS // len(stats.layers))
        for ranks in splits:
            meas = []
            for layer_ids in measured.values():
                # random tokens, and (as the sampler does) a random placement of the experts
                draws = [rng.permutation(experts)[layer_ids[rng.choice(layer_ids.shape[0],
                                                                       tokens, replace=False)]]
                         for _ in range(DRAWS // len(measured))]
                meas.append(busiest_load(np.stack(draws), ranks, experts))
            rows.append({"tokens": tokens, "ffn_ranks": ranks,
                         "measured_busiest_over_mean": float(np.mean(meas)),
                         "sampler_busiest_over_mean": busiest_load(model_ids, ranks, experts)})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Measure, check, write the JSON and print a summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "heldout.txt")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "perf" / "results" / "afd_model_routing_step3-tiny.json")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    cfg = CheckpointReader(args.checkpoint).config
    measured, run = routed_ids(args.checkpoint, args.data.read_text())
    experts, top_k = cfg.moe_num_experts, cfg.moe_top_k
    layers = []
    for index, ids in measured.items():
        inc, top1 = fractions(ids, experts)
        layers.append({"layer": index, "inclusion": inc, "top1": top1})
    tokens = int(next(iter(measured.values())).shape[0])
    obj = {"format": FORMAT, "source": f"{args.checkpoint.name} on {args.data.name}",
           "experts": experts, "top_k": top_k, "tokens": tokens, "layers": layers,
           "run": {**run, "dtype": "float32", "device": "cpu",
                   "checkpoint": str(args.checkpoint.relative_to(ROOT))
                   if args.checkpoint.is_relative_to(ROOT) else str(args.checkpoint),
                   "data": args.data.name},
           "notes": "inclusion: fraction of scored tokens routing to the expert (sums to top_k); "
                    "top1: fraction whose highest-weight expert it is"}
    stats = parse_routing(obj, str(args.out))
    obj["sampler_check"] = sampler_check(measured, stats, experts, top_k)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(obj, indent=1) + "\n")
    for lay, mm in zip(stats.layers, stats.max_over_mean()):
        print(f"layer {lay.layer}: expert shares {min(lay.inclusion) / top_k:.3f}-"
              f"{max(lay.inclusion) / top_k:.3f} (max/mean {mm:.2f})")
    for r in obj["sampler_check"]:
        print(f"{r['tokens']:5d} tokens on {r['ffn_ranks']} ranks: busiest/mean measured "
              f"{r['measured_busiest_over_mean']:.3f}, "
              f"sampler {r['sampler_busiest_over_mean']:.3f}")
    print(f"wrote {args.out} ({tokens} tokens x {len(layers)} MoE layers)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
