"""Random Step-3 checkpoints in the released layout (VLM config, sharded safetensors, a complete
vision tower, tokenizer)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from step3_trt.checkpoint.layout import TensorSpec, text_specs
from step3_trt.checkpoint.writer import atomic_directory, write_tensors
from step3_trt.config import Step3Config
from step3_trt.model.load import DTYPES
from step3_trt.model.vision import Step3VisionTower, VisionEmbeddings
from step3_trt.presets import PRESETS, VISION_PRESETS, vlm_config
from step3_trt.tokenizer import Step3Tokenizer, byte_level_tokenizer
from step3_trt.vision.config import VisionConfig
from step3_trt.vision.layout import vision_specs


def random_tensor(spec: TensorSpec, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Norm weights near 1; matrices scaled by 1/sqrt(fan_in) so activations stay O(1)."""
    if len(spec.shape) == 1:
        t = 1.0 + 0.1 * torch.randn(spec.shape, generator=generator)
    else:
        t = torch.randn(spec.shape, generator=generator) / math.sqrt(spec.shape[-1])
    return t.to(dtype)


def random_vision_tensors(cfg: VisionConfig, generator: torch.Generator,
                          dtype: torch.dtype) -> list[tuple[str, torch.Tensor]]:
    """A random (untrained) tower in layout order, initialised by module type so activations
    stay O(1): linear and conv weights N(0, 1/fan_in) with small biases, LayerNorms near the
    identity, class and position embeddings N(0, 1/width). Builds the tower in memory: for
    small configs."""
    with torch.device("meta"):
        tower = Step3VisionTower(cfg)
    tower = tower.to_empty(device="cpu")

    def normal(shape, std: float) -> torch.Tensor:
        return std * torch.randn(shape, generator=generator)

    with torch.no_grad():
        for module in tower.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(normal(module.weight.shape, fan_in ** -0.5))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias.shape, 0.02))
            elif isinstance(module, nn.LayerNorm):
                module.weight.copy_(1 + normal(module.weight.shape, 0.1))
                module.bias.copy_(normal(module.bias.shape, 0.02))
            elif isinstance(module, nn.Embedding):
                module.weight.copy_(normal(module.weight.shape, module.embedding_dim ** -0.5))
            elif isinstance(module, VisionEmbeddings):
                width = module.class_embedding.shape[-1]
                module.class_embedding.copy_(normal(module.class_embedding.shape, width ** -0.5))
    state = tower.state_dict()
    return [(spec.name, state[spec.name].to(dtype)) for spec in vision_specs(cfg)]


def write_checkpoint(out: str | Path, text_config: dict[str, Any],
                     tensors, tokenizer: Step3Tokenizer, *, shards_bytes: int,
                     extra_tensors=(), overwrite: bool = False,
                     vision: dict[str, Any] | None = None) -> Path:
    """Write config.json, tokenizer files and shards of `tensors` ((name, tensor) pairs, held in
    memory: for small models; `convert` streams large ones). `vision` (a VISION_PRESETS entry)
    goes into config.json; its tensors come in `extra_tensors`."""
    cfg = Step3Config.from_dict(text_config)  # validate before writing anything
    config = vlm_config(cfg.to_text_dict(), vision)
    if vision is not None:
        VisionConfig.from_dict(config)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
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
    tensors = [(s.name, random_tensor(s, gen, torch_dtype)) for s in specs]
    vision = VISION_PRESETS[preset]
    vision_cfg = VisionConfig.from_dict(vlm_config(text, vision))
    # About four shards, whatever the model size, so the index path is always exercised.
    return write_checkpoint(out, text, tensors, tokenizer, shards_bytes=max(total // 4, 1),
                            extra_tensors=random_vision_tensors(vision_cfg, gen, torch_dtype),
                            overwrite=overwrite, vision=vision)
