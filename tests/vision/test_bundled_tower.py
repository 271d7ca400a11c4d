"""The bundled model (models/step3-tiny) carries a complete random tower in the released layout;
its trained text weights are the ones committed before the tower was added."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from step3_trt.checkpoint.layout import text_specs
from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.presets import STDLIB_TINY, VISION_PRESETS, vlm_config
from step3_trt.vision.config import VisionConfig
from step3_trt.vision.load import load_vision_tower
from step3_trt.vision.processor import ImageProcessor

MODEL = Path(__file__).resolve().parents[2] / "models" / "step3-tiny"
# sha256 over (name, bytes) of every text tensor in model order, computed on the checkpoint as
# committed in 92b734d, before the vision tower replaced the 4-tensor stand-in.
TEXT_DIGEST = "b7d42d457bf515f9c9ff943975b4df7d2d65c1cf68cbbfa30124ede52ab5b1fc"


@pytest.fixture(scope="module")
def reader():
    return CheckpointReader(MODEL).validate()


def test_text_weights_are_unchanged(reader):
    h = hashlib.sha256()
    for spec in text_specs(reader.config):
        h.update(spec.name.encode())
        h.update(reader.get(spec.name).contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    assert h.hexdigest() == TEXT_DIGEST


def test_bundled_tower_is_the_tiny_preset(reader):
    assert VisionConfig.from_dict(reader.raw_config) == \
        VisionConfig.from_dict(vlm_config(STDLIB_TINY, VISION_PRESETS["stdlib-tiny"]))


def test_bundled_tower_embeds_an_image(reader):
    tower = load_vision_tower(reader, "float32")
    processor = ImageProcessor(tower.config)
    pixels = np.random.default_rng(0).integers(0, 256, (600, 1000, 3), dtype=np.uint8)
    out = processor(Image.fromarray(pixels, "RGB"))
    with torch.no_grad():
        embeddings = tower.embed_image(out.global_view, out.windows)
    assert embeddings.shape == (out.placeholder.num_embeddings, reader.config.hidden_size)
    assert out.placeholder.num_embeddings == 2 * 81 + 169
    assert embeddings.isfinite().all() and embeddings.std() > 0
