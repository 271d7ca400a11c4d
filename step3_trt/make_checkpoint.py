"""Random Step-3 checkpoints in the released layout (VLM config, sharded safetensors, tokenizer)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from step3_trt.checkpoint.layout import TensorSpec, text_specs
from step3_trt.checkpoint.writer import atomic_directory, write_tensors
from step3_trt.config import Step3Config
from step3_trt.model.load import DTYPES
from step3_trt.presets import PRESETS, TINY_VISION_TENSORS, vlm_config
from step3_trt.tokenizer import Step3Tokenizer, byte_level_tokenizer


def random_tensor(spec: TensorSpec, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Norm weights near 1; matrices scaled by 1/sqrt(fan_in) so activations stay O(1)."""
    if len(spec.shape) == 1:
        t = 1.0 + 0.1 * torch.randn(spec.shape, generator=generator)
    else:
        t = torch.randn(spec.shape, generator=generator) / math.sqrt(spec.shape[-1])
    return t.to(dtype)


def write_checkpoint(out: str | Path, text_config: dict[str, Any],
                     tensors, tokenizer: Step3Tokenizer, *, shards_bytes: int,
                     extra_tensors=(), overwrite: bool = False) -> Path:
    """Write config.json, tokenizer files and shards of `tensors` ((name, tensor) pairs, held in
    memory: for small models; `convert` streams large ones)."""
    cfg = Step3Config.from_dict(text_config)  # validate before writing anything
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(vlm_config(cfg.to_text_dict()), indent=2) + "\n")
        tokenizer.save(tmp)
        write_tensors(tmp, [*tensors, *extra_tensors], max_shard_bytes=shards_bytes)
    return Path(out)


def make_random_checkpoint(out: str | Path, preset: str = "tiny", seed: int = 0,
                           dtype: str = "float32", overwrite: bool = False,
                           overrides: dict[str, Any] | None = None) -> Path:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if dtype not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    text = {**PRESETS[preset], **(overrides or {}), "torch_dtype": dtype}
    cfg = Step3Config.from_dict(text)
    tokenizer = byte_level_tokenizer()
    if tokenizer.tokenizer.get_vocab_size() > cfg.vocab_size:
        raise ValueError(f"vocab_size {cfg.vocab_size} is smaller than the byte tokenizer's "
                         f"{tokenizer.tokenizer.get_vocab_size()} tokens")
    gen = torch.Generator().manual_seed(seed)
    torch_dtype = DTYPES[dtype]
    specs = text_specs(cfg)
    total = sum(math.prod(s.shape) for s in specs) * torch_dtype.itemsize
    tensors = ((s.name, random_tensor(s, gen, torch_dtype)) for s in specs)
    vision = ((name, random_tensor(TensorSpec(name, shape, "vision"), gen, torch_dtype))
              for name, shape in TINY_VISION_TENSORS.items())
    # About four shards, whatever the model size, so the index path is always exercised.
    return write_checkpoint(out, text, tensors, tokenizer, shards_bytes=max(total // 4, 1),
                            extra_tensors=vision, overwrite=overwrite)
