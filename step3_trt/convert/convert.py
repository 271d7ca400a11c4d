"""`step3-trt convert`: stream a Step-3 checkpoint into per-role, per-rank role checkpoints.

Output layout (appears atomically):
    OUT/manifest.json, OUT/build_config.yaml, OUT/tokenizer/... (also the chat templates and
    generation_config.json)
    OUT/attention/rank{i}/{config.json, *.safetensors}   (replicas share files via hard links)
    OUT/ffn/rank{j}/{config.json, *.safetensors}
Peak memory is a few copies of the largest single block read (one source tensor, or one rank's
rows of it), never the checkpoint.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from step3_trt.build_config import BuildConfig, BuildConfigError
from step3_trt.chat.template import TEMPLATE_DIR as CHAT_TEMPLATE_DIR
from step3_trt.checkpoint.reader import CheckpointReader, checkpoint_digest
from step3_trt.checkpoint.writer import (PlannedTensor, StreamingShardWriter, atomic_directory,
                                         link_or_copy)
from step3_trt.convert.plan import Piece, RankPlan, plan_conversion
from step3_trt.manifest import FORMAT_VERSION, ROLE_CHECKPOINT, TOKENIZER_FILES, write_json

SHARD_BYTES = 4 * 1024**3


def weight_dtype(build: BuildConfig, reader: CheckpointReader) -> str:
    """The dtype of the tensors that are not FP8 (every tensor, without quantization)."""
    if (build.quantization == "fp8") != (reader.quant is not None):
        if reader.quant is None:
            raise BuildConfigError("`quantization: fp8` needs an FP8 checkpoint: run "
                                   "`step3-trt quantize` on this checkpoint first")
        raise BuildConfigError(f"{reader.root} is an FP8 checkpoint; convert it with a build "
                               f"config that says `quantization: fp8`")
    if reader.quant is not None:
        return build.dtypes.resolved(reader.config.torch_dtype)[1]  # norms, embedding, router
    return build.dtypes.resolved(reader.config.torch_dtype)[0]


def read_piece(reader: CheckpointReader, piece: Piece) -> torch.Tensor:
    """Read only the dim-0 rows the piece needs, then cut the other dimensions."""
    (r0, r1), rest = piece.index[0], piece.index[1:]
    block = reader.get_rows(piece.source, r0, r1)
    for dim, (start, stop) in enumerate(rest, start=1):
        block = block.narrow(dim, start, stop - start)
    return block


def convert(checkpoint: str | Path, build: BuildConfig, out: str | Path, *,
            overwrite: bool = False, progress: bool = True) -> Path:
    reader = CheckpointReader(checkpoint).validate()
    cfg = reader.config
    dtype = weight_dtype(build, reader)
    plans = plan_conversion(cfg, build, reader.quant)
    stored = {s.name: s.dtype or dtype for s in reader.specs}  # FP8 stays FP8, scales float32
    # Attention ranks are identical replicas: write the first, hard-link the others' shards.
    written = [p for p in plans if p.role == "ffn" or p.rank == 0]
    wanted: dict[str, list[tuple[RankPlan, Piece]]] = defaultdict(list)
    for plan in written:
        for piece in plan.pieces:
            wanted[piece.source].append((plan, piece))
    total = sum(piece.numel * getattr(torch, stored[piece.source]).itemsize
                for plan in written for piece in plan.pieces)

    with atomic_directory(out, overwrite=overwrite) as tmp:
        writers = {}
        for plan in written:
            (tmp / plan.name).mkdir(parents=True)
            layout = [PlannedTensor(p.target, p.shape, stored[p.source]) for p in plan.pieces]
            writers[plan.name] = StreamingShardWriter(tmp / plan.name, layout, SHARD_BYTES)
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="convert", disable=not progress)
        for spec in reader.specs:
            for plan, piece in wanted[spec.name]:
                block = read_piece(reader, piece).to(getattr(torch, stored[spec.name]))
                writers[plan.name].write(piece.target, block)
                bar.update(block.numel() * block.element_size())
                del block
        bar.close()
        files = {name: w.close() for name, w in writers.items()}
        source = {"path": str(Path(checkpoint).resolve()), "digest": checkpoint_digest(reader)}
        for plan in plans:
            rank_dir = tmp / plan.name
            if plan not in written:
                rank_dir.mkdir(parents=True)
                for f in files["attention/rank0"]:
                    link_or_copy(tmp / "attention/rank0" / f, rank_dir / f)
            write_json(rank_dir / "config.json", {
                "format": ROLE_CHECKPOINT, "format_version": FORMAT_VERSION,
                "role": plan.role, "rank": plan.rank, "dtype": dtype,
                "architecture": cfg.to_text_dict(), "mapping": plan.mapping,
                "quantization": {"method": build.quantization, **(
                    reader.quant.to_config() if reader.quant else {})}, "source": source,
                "build_config": {"name": build.name, "digest": build.digest()}})
        (tmp / "tokenizer").mkdir()  # tokenizer, chat templates, generation config
        for name in TOKENIZER_FILES:
            if (reader.root / name).is_file():
                shutil.copy2(reader.root / name, tmp / "tokenizer" / name)
        if (reader.root / CHAT_TEMPLATE_DIR).is_dir():
            shutil.copytree(reader.root / CHAT_TEMPLATE_DIR, tmp / "tokenizer" / CHAT_TEMPLATE_DIR)
        (tmp / "build_config.yaml").write_text(yaml.safe_dump(build.to_dict(), sort_keys=False))
        write_json(tmp / "manifest.json", {
            "format": ROLE_CHECKPOINT, "format_version": FORMAT_VERSION, "source": source,
            "build_config": {"name": build.name, "digest": build.digest()}, "dtype": dtype,
            "ranks": [p.name for p in plans]})
    return Path(out)
