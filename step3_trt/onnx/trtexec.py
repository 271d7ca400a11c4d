"""The trtexec command that builds a TensorRT engine from each ONNX graph of an engine directory.

Prints commands only (TensorRT is not installed where this project is tested, so no TensorRT
API is called). Dynamic dimensions get their ranges from the build config: tokens 1 ..
max_tokens_per_step, seqs 1 .. max_batch, blocks = the KV-cache blocks of the memory plan,
max_blocks 1 .. ceil(max_seq_len / block_size); opt = max. Weight inputs are static.

    python -m step3_trt.onnx.trtexec ENGINE_DIR [--plugins LIB]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnx
import sympy

from step3_trt.build_config import BuildConfig
from step3_trt.config import Step3Config
from step3_trt.manifest import ENGINES, read_manifest
from step3_trt.runtime.local import kv_blocks


def dim_ranges(engine_dir: Path) -> dict[str, tuple[int, int]]:
    """(min, max) of each named dynamic dimension."""
    build = BuildConfig.from_file(engine_dir / "build_config.yaml")
    meta = json.loads((engine_dir / "attention" / "rank0" / "engine.json").read_text())
    cfg = Step3Config.from_dict(meta["architecture"])
    max_seq = build.runtime.max_seq_len or cfg.max_position_embedding
    blocks = kv_blocks(cfg, build)
    return {"tokens": (1, build.runtime.max_tokens_per_step), "seqs": (1, build.runtime.max_batch),
            "blocks": (blocks, blocks), "max_blocks": (1, -(-max_seq // build.kv_cache.block_size))}


def _size(dim: onnx.TensorShapeProto.Dimension, ranges: dict, end: int) -> int:
    if dim.HasField("dim_value"):
        return dim.dim_value
    expr = sympy.sympify(dim.dim_param)
    return int(expr.subs({sympy.Symbol(n): r[end] for n, r in ranges.items()}))


def shape_specs(model: onnx.ModelProto, ranges: dict) -> tuple[str, str]:
    """trtexec's --minShapes and --maxShapes values for the inputs with dynamic dimensions."""
    specs = ([], [])
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            continue
        for end in (0, 1):
            specs[end].append(f"{inp.name}:" + "x".join(str(_size(d, ranges, end)) for d in dims))
    return ",".join(specs[0]), ",".join(specs[1])


def command(graph: Path, ranges: dict, plugins: str) -> str:
    low, high = shape_specs(onnx.load_model(graph, load_external_data=False), ranges)
    return (f"trtexec --onnx={graph} --staticPlugins={plugins} --stronglyTyped "
            f"--minShapes={low} --optShapes={high} --maxShapes={high} "
            f"--saveEngine={graph.with_suffix('.plan')} --skipInference")


def commands(engine_dir: Path, plugins: str) -> list[str]:
    ranges = dim_ranges(engine_dir)
    out = []
    for rank in read_manifest(engine_dir, ENGINES)["ranks"]:
        meta = json.loads((engine_dir / rank / "engine.json").read_text())
        out += [command(engine_dir / rank / e["file"], ranges, plugins)
                for e in meta["graphs"].values()]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m step3_trt.onnx.trtexec", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("engines", type=Path, help="ONNX engine directory (`build --backend onnx`)")
    p.add_argument("--plugins", default="libstep3_plugins.so",
                   help="the TensorRT plugin library implementing the step3 ops")
    args = p.parse_args(argv)
    if read_manifest(args.engines, ENGINES).get("backend") != "onnx":
        raise SystemExit(f"{args.engines} holds no ONNX engines; build with --backend onnx")
    print("\n".join(commands(args.engines, args.plugins)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
