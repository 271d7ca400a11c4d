"""`step3-trt convert --checkpoint DIR --config CFG --out DIR`."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="split a checkpoint into per-role, per-rank checkpoints",
                       description="Stream a Step-3 checkpoint into role checkpoints for an AFD "
                                   "deployment: attention/rank{i} (embedding, attention, router, "
                                   "lm_head) and ffn/rank{j} (owned experts, slices of the shared "
                                   "expert and dense MLPs), as the build config's mapping says. "
                                   "Memory stays near the largest tensor; the output directory "
                                   "appears only when complete.")
    p.add_argument("--checkpoint", required=True, help="Step-3 checkpoint directory")
    p.add_argument("--config", required=True, help="build config YAML (see build_configs/)")
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> int:
    from step3_trt.build_config import BuildConfig
    from step3_trt.convert.convert import convert
    from step3_trt.convert.memory_plan import memory_plan
    from step3_trt.checkpoint.reader import CheckpointReader

    build = BuildConfig.from_file(args.config)
    memory_plan(CheckpointReader(args.checkpoint).config, build)  # refuse a plan that cannot fit
    out = convert(args.checkpoint, build, args.out, overwrite=args.overwrite,
                  progress=not args.no_progress)
    print(f"wrote role checkpoints for `{build.name}` to {out}")
    return 0
