"""`step3-trt make-checkpoint --preset tiny --out DIR`."""

from __future__ import annotations

from step3_trt.config import CHECKPOINT_DTYPES
from step3_trt.presets import RANDOM_CHECKPOINT_PRESETS


def add_parser(sub) -> None:
    p = sub.add_parser("make-checkpoint", help="write a random checkpoint in the released layout",
                       description="Write a random Step-3 checkpoint in the released layout: VLM "
                                   "config.json, several safetensors shards with an index, stacked "
                                   "expert tensors, a complete (random) vision tower and "
                                   "byte-level tokenizer files. For tests and trying the pipeline.")
    p.add_argument("--preset", default="tiny", choices=RANDOM_CHECKPOINT_PRESETS,
                   help="model size (default: tiny)")
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--dtype", default="float32", choices=CHECKPOINT_DTYPES,
                   help="tensor dtype (default: float32)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(run=run)


def run(args) -> int:
    from step3_trt.make_checkpoint import make_random_checkpoint

    out = make_random_checkpoint(args.out, preset=args.preset, seed=args.seed, dtype=args.dtype,
                                 overwrite=args.overwrite)
    print(f"wrote {args.preset} checkpoint ({args.dtype}, seed {args.seed}) to {out}")
    return 0
