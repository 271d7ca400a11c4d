"""`step3-trt build --checkpoint ROLE_DIR --config CFG --out ENGINE_DIR`."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("build", help="compile role checkpoints into per-rank engines",
                       description="Export each role graph (embedding, attention, router, head; "
                                   "MoE and dense FFN) with torch.export and compile it ahead of "
                                   "time with AOTInductor, per role and rank, with dynamic token "
                                   "counts. Weights stay graph inputs, so one compiled graph "
                                   "serves every layer. Compiled graphs are cached by content "
                                   "(replicas and repeated builds reuse them); an ENGINE_DIR "
                                   "built from the same inputs is left as it is.")
    p.add_argument("--checkpoint", required=True, help="role checkpoint directory from `convert`")
    p.add_argument("--config", required=True, help="the build config YAML used by `convert`")
    p.add_argument("--out", required=True, help="engine directory")
    p.add_argument("--backend", choices=["onnx"], default=None,
                   help="build ONNX engines (graphs with step3-domain plugin nodes, see "
                        "docs/onnx.md) instead of the config's backend; the role checkpoints "
                        "need no re-conversion")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="compiled-graph cache (default: ~/.cache/step3-trt/graphs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args) -> int:
    import warnings

    from step3_trt.build_config import BuildConfig
    from step3_trt.engine.build import build_engines

    warnings.filterwarnings("ignore", ".*LeafSpec.*", FutureWarning)  # torch.export internals
    build = BuildConfig.from_file(args.config)
    if args.backend == "onnx":
        from step3_trt.onnx.build import build_onnx_engines
        out, reused = build_onnx_engines(args.checkpoint, build, args.out,
                                         cache_dir=args.cache_dir, progress=not args.no_progress)
    else:
        out, reused = build_engines(args.checkpoint, build, args.out, cache_dir=args.cache_dir,
                                    progress=not args.no_progress)
    print(f"engines in {out} are up to date" if reused else f"built engines into {out}")
    return 0
