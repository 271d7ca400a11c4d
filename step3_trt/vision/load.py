"""Validate a checkpoint's vision tensors against its vision config and build the reference
tower from them, one tensor at a time (positioned reads through the checkpoint reader; no
pickle, no mmap)."""

from __future__ import annotations

import torch

from step3_trt.checkpoint.reader import FLOAT_CODES, CheckpointReader
from step3_trt.checkpoint.safetensors_header import CheckpointError
from step3_trt.config import ConfigError
from step3_trt.model.load import resolve_dtype
from step3_trt.model.vision import Step3VisionTower
from step3_trt.vision.config import VisionConfig
from step3_trt.vision.layout import vision_specs


def vision_config(reader: CheckpointReader) -> VisionConfig:
    """The checkpoint's vision config; a CheckpointError naming config.json if it has none or
    it is invalid."""
    try:
        return VisionConfig.from_dict(reader.raw_config)
    except ConfigError as e:
        raise CheckpointError(f"{reader.root / 'config.json'}: {e}") from None


def validate_vision(reader: CheckpointReader, cfg: VisionConfig) -> None:
    """Every vision tensor present with its shape and a float dtype, and no stray ones; the
    first problem in model order is reported."""
    expected = {s.name: s for s in vision_specs(cfg)}
    present = set(reader.vision_names)
    missing = [n for n in expected if n not in present]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{reader.root}: missing vision tensor `{missing[0]}`{more}")
    stray = sorted(present - set(expected))
    if stray:
        raise CheckpointError(f"{reader.entries[stray[0]].file}: unexpected vision tensor "
                              f"`{stray[0]}` (not part of the Step-3 vision tower for this config)")
    for name, spec in expected.items():
        entry = reader.entries[name]
        if entry.shape != spec.shape:
            raise CheckpointError(f"{entry.file}: tensor `{name}` has shape {list(entry.shape)}, "
                                  f"expected {list(spec.shape)}")
        if entry.dtype not in FLOAT_CODES:
            raise CheckpointError(f"{entry.file}: tensor `{name}` has dtype {entry.dtype}, "
                                  f"expected one of {', '.join(FLOAT_CODES)}")


def load_vision_tower(reader: CheckpointReader, dtype: str | None = None,
                      device: str | torch.device = "cpu") -> Step3VisionTower:
    """The reference tower with the checkpoint's weights; `dtype` None or "auto": the
    checkpoint's `torch_dtype`."""
    cfg = vision_config(reader)
    validate_vision(reader, cfg)
    with torch.device("meta"):
        tower = Step3VisionTower(cfg)
    tower = tower.to_empty(device=device).to(resolve_dtype(dtype, reader))
    params = dict(tower.named_parameters())
    for spec in vision_specs(cfg):
        with torch.no_grad():
            params.pop(spec.name).copy_(reader.get(spec.name))
    if params:
        raise AssertionError(f"tower parameters missing from the vision layout: {sorted(params)}")
    return tower.eval()
