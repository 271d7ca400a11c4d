"""Small vision configs and random towers for the vision tests."""

from __future__ import annotations

import pytest
import torch

from step3_trt.make_checkpoint import random_vision_tensors
from step3_trt.model.vision import Step3VisionTower
from step3_trt.vision.config import VisionConfig


def vision_config(**changes) -> VisionConfig:
    """Odd sizes: 5 heads of width 6, an MLP narrower than 2x, positions trained for a 13 x 13
    grid (91 / 7), text width 22."""
    vision = {"hidden_size": 30, "intermediate_size": 44, "output_hidden_size": 14,
              "num_hidden_layers": 2, "num_attention_heads": 5, "image_size": 91,
              "patch_size": 7}
    top = {"understand_projector_stride": 2, "projector_bias": True}
    for key, value in changes.items():
        (top if key in top else vision)[key] = value
    return VisionConfig.from_dict({"vision_config": vision, "text_config": {"hidden_size": 22},
                                   **top})


def random_tower(cfg: VisionConfig, dtype: torch.dtype = torch.float64,
                 seed: int = 0) -> Step3VisionTower:
    tensors = dict(random_vision_tensors(cfg, torch.Generator().manual_seed(seed), dtype))
    tower = Step3VisionTower(cfg).to(dtype)
    tower.load_state_dict(tensors, strict=True)
    return tower.eval()


@pytest.fixture(scope="module")
def odd_config() -> VisionConfig:
    return vision_config()
