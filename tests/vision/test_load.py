"""Loading the vision tower from a random checkpoint in the released layout; bad vision tensors
refused with the tensor named; the text path unaffected by the tower."""

from __future__ import annotations

import json

import pytest
import torch

from step3_trt.checkpoint.layout import text_specs
from step3_trt.checkpoint.reader import CheckpointReader
from step3_trt.checkpoint.safetensors_header import CheckpointError
from step3_trt.config import Step3Config
from step3_trt.make_checkpoint import random_tensor, random_vision_tensors, write_checkpoint
from step3_trt.model.load import load_reference_model
from step3_trt.presets import TINY_TEXT, TINY_VISION, vlm_config
from step3_trt.tokenizer import byte_level_tokenizer
from step3_trt.vision.config import VisionConfig
from step3_trt.vision.layout import vision_specs
from step3_trt.vision.load import load_vision_tower

TEXT = Step3Config.from_dict(TINY_TEXT)
VISION = VisionConfig.from_dict(vlm_config(TINY_TEXT, TINY_VISION))


def build(path, mutate=lambda name, t: [(name, t)], vision=TINY_VISION):
    """The tiny text model plus the tiny tower, each vision tensor passed through `mutate`."""
    gen = torch.Generator().manual_seed(0)
    text = [(s.name, random_tensor(s, gen, torch.float32)) for s in text_specs(TEXT)]
    tower = [pair for name, t in random_vision_tensors(VISION, gen, torch.float32)
             for pair in mutate(name, t)]
    return write_checkpoint(path, TINY_TEXT, text, byte_level_tokenizer(), shards_bytes=200_000,
                            extra_tensors=tower, vision=vision)


def test_random_checkpoint_round_trips_names_and_shapes(tiny_checkpoint):
    reader = CheckpointReader(tiny_checkpoint).validate()
    tower = load_vision_tower(reader)
    specs = vision_specs(tower.config)
    state = tower.state_dict()
    assert list(state) == [s.name for s in specs]
    assert sorted(reader.vision_names) == sorted(state)
    for spec in specs:
        assert tuple(state[spec.name].shape) == spec.shape == reader.entries[spec.name].shape
        torch.testing.assert_close(state[spec.name], reader.get(spec.name), rtol=0, atol=0)
    assert tower.config.text_hidden_size == reader.config.hidden_size


def test_dtype_follows_the_checkpoint_or_the_request(tmp_path):
    reader = CheckpointReader(build(tmp_path / "c"))
    assert load_vision_tower(reader).vit_large_projector.weight.dtype == torch.float32
    assert load_vision_tower(reader, "bfloat16").vision_model.embeddings.class_embedding.dtype \
        == torch.bfloat16


BAD = {
    "missing": (lambda n, t: [] if n.endswith("layers.1.mlp.fc2.bias") else [(n, t)],
                "missing vision tensor `vision_model.transformer.layers.1.mlp.fc2.bias`"),
    "wrong shape": (lambda n, t: [(n, t[:, :-1] if n.endswith("qkv_proj.weight") else t)],
                    r"`vision_model.transformer.layers.0.self_attn.qkv_proj.weight` has shape "
                    r"\[144, 47\], expected \[144, 48\]"),
    "stray": (lambda n, t: [(n, t)] + ([("vit_downsampler3.weight", t)]
                                       if n == "vit_downsampler2.weight" else []),
              "unexpected vision tensor `vit_downsampler3.weight`"),
    "integer dtype": (lambda n, t: [(n, t.to(torch.int32) if n.endswith("class_embedding")
                                     else t)],
                      "`vision_model.embeddings.class_embedding` has dtype I32"),
}


@pytest.mark.parametrize("mutate, message", BAD.values(), ids=BAD.keys())
def test_bad_vision_tensors_are_refused(tmp_path, mutate, message):
    reader = CheckpointReader(build(tmp_path / "c", mutate))
    with pytest.raises(CheckpointError, match=message):
        load_vision_tower(reader)


def test_text_only_checkpoint_has_no_tower(tmp_path):
    path = build(tmp_path / "c", lambda n, t: [], vision=None)
    with pytest.raises(CheckpointError, match="config.json: config has no `vision_config`"):
        load_vision_tower(CheckpointReader(path))


@pytest.mark.parametrize("field, value, message", [
    ("intermediate_size", None, "missing required field.*vision_config.intermediate_size"),
    ("hidden_act", "gelu", "hidden_act"),
    ("num_attention_heads", 5, "multiple of `vision_config.num_attention_heads`"),
    ("patch_size", 15, "multiple of `vision_config.patch_size`"),
    ("num_channels", 4, "num_channels"),
    ("hidden_size", 0, "positive integer"),
])
def test_bad_vision_config_is_refused(tmp_path, field, value, message):
    path = build(tmp_path / "c")
    raw = json.loads((path / "config.json").read_text())
    if value is None:
        del raw["vision_config"][field]
    else:
        raw["vision_config"][field] = value
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=message):
        load_vision_tower(CheckpointReader(path))


def test_missing_projector_stride_is_refused(tmp_path):
    path = build(tmp_path / "c")
    raw = json.loads((path / "config.json").read_text())
    del raw["understand_projector_stride"]
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="understand_projector_stride"):
        load_vision_tower(CheckpointReader(path))


def test_text_path_ignores_the_tower(tmp_path):
    with_tower = CheckpointReader(build(tmp_path / "a")).validate()
    without = CheckpointReader(build(tmp_path / "b", lambda n, t: [], vision=None)).validate()
    assert with_tower.vision_names and not without.vision_names
    assert [n for n, _ in with_tower.iter_text()] == [s.name for s in text_specs(TEXT)]
    a = load_reference_model(with_tower, "float32")
    b = load_reference_model(without, "float32")
    assert not any(name.startswith(("vision_model", "vit_")) for name, _ in a.named_parameters())
    ids = torch.tensor([[256, 5, 17, 99]])
    with torch.no_grad():
        torch.testing.assert_close(a(ids), b(ids), rtol=0, atol=0)
