import json
import shutil

import pytest
import torch

from step3_trt.checkpoint.layout import TensorSpec, text_specs
from step3_trt.checkpoint.reader import INDEX_FILE, CheckpointReader
from step3_trt.checkpoint.safetensors_header import CheckpointError
from step3_trt.config import Step3Config
from step3_trt.make_checkpoint import random_tensor, write_checkpoint
from step3_trt.presets import TINY_TEXT
from step3_trt.tokenizer import byte_level_tokenizer
from step3_trt.vision.config import VisionConfig
from step3_trt.vision.layout import vision_specs

CFG = Step3Config.from_dict(TINY_TEXT)


def build(tmp_path, mutate=lambda name, t: [(name, t)], shards_bytes=200_000, extra=()):
    """Write the tiny layout, passing every tensor through `mutate` (which may drop/rename)."""
    gen = torch.Generator().manual_seed(0)

    def tensors():
        for spec in text_specs(CFG):
            yield from mutate(spec.name, random_tensor(spec, gen, torch.float32))

    return write_checkpoint(tmp_path / "ckpt", TINY_TEXT, tensors(), byte_level_tokenizer(),
                            shards_bytes=shards_bytes, extra_tensors=extra)


def test_valid_checkpoint_is_sharded_and_lazy(tiny_checkpoint):
    reader = CheckpointReader(tiny_checkpoint).validate()
    assert (tiny_checkpoint / INDEX_FILE).is_file()
    assert len({e.file for e in reader.entries.values()}) >= 3
    assert sorted(reader.vision_names) == sorted(s.name for s in vision_specs(
        VisionConfig.from_dict(reader.raw_config)))  # the complete tower, skipped by the text path
    name = "model.layers.1.moe.down_proj.weight"
    full = reader.get(name)
    assert full.shape == (6, 96, 48)
    torch.testing.assert_close(reader.get_rows(name, 2, 4), full[2:4], rtol=0, atol=0)


def test_single_file_checkpoint(tmp_path):
    path = build(tmp_path, shards_bytes=1 << 40)
    assert (path / "model.safetensors").is_file() and not (path / INDEX_FILE).exists()
    CheckpointReader(path).validate()


def test_missing_tensor_is_named(tmp_path):
    drop = "model.layers.2.self_attn.wq.weight"
    path = build(tmp_path, lambda n, t: [] if n == drop else [(n, t)])
    with pytest.raises(CheckpointError, match=f"missing tensor `{drop}`"):
        CheckpointReader(path).validate()


def test_unexpected_tensor_is_named(tmp_path):
    path = build(tmp_path, extra=[("model.layers.0.mlp.bias", torch.zeros(3))])
    with pytest.raises(CheckpointError, match=r"unexpected tensor `model.layers.0.mlp.bias`"):
        CheckpointReader(path).validate()


def test_misshaped_tensor_names_tensor_and_file(tmp_path):
    bad = "model.layers.1.moe.gate_proj.weight"
    path = build(tmp_path, lambda n, t: [(n, t[:-1] if n == bad else t)])
    with pytest.raises(CheckpointError, match=rf"model-\d+-of-\d+\.safetensors: tensor `{bad}` "
                                              r"has shape \[5, 48, 96\], expected \[6, 48, 96\]"):
        CheckpointReader(path).validate()


def test_mistyped_tensor(tmp_path):
    bad = "model.norm.weight"
    path = build(tmp_path, lambda n, t: [(n, t.to(torch.int32) if n == bad else t)])
    with pytest.raises(CheckpointError, match=f"`{bad}` has dtype I32"):
        CheckpointReader(path).validate()


def test_vision_tensors_are_skipped_not_rejected(tmp_path):
    path = build(tmp_path, extra=[("vision_model.anything.weight", torch.zeros(2, 2)),
                                  ("vit_downsampler2.weight", torch.zeros(3))])
    assert sorted(CheckpointReader(path).validate().vision_names) == [
        "vision_model.anything.weight", "vit_downsampler2.weight"]


def _largest_shard(path):
    return max(path.glob("*.safetensors"), key=lambda p: p.stat().st_size)


def test_truncated_shard(tmp_path):
    path = build(tmp_path)
    shard = _largest_shard(path)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match=f"{shard.name}: file is truncated"):
        CheckpointReader(path)


def test_corrupt_header(tmp_path):
    path = build(tmp_path)
    shard = _largest_shard(path)
    data = bytearray(shard.read_bytes())
    data[8:12] = b"\xff\xfe{["
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{shard.name}: corrupt header"):
        CheckpointReader(path)
    shard.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="truncated"):
        CheckpointReader(path)


def test_index_points_to_missing_file(tmp_path):
    path = build(tmp_path)
    shard = _largest_shard(path)
    shard.unlink()
    with pytest.raises(CheckpointError, match=f"maps to missing file {shard.name}"):
        CheckpointReader(path)


def test_index_names_tensor_not_in_shard(tmp_path):
    path = build(tmp_path)
    index = json.loads((path / INDEX_FILE).read_text())
    index["weight_map"]["model.layers.9.ghost.weight"] = next(iter(index["weight_map"].values()))
    (path / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="`model.layers.9.ghost.weight` maps to .* which "
                                              "does not contain it"):
        CheckpointReader(path)


def test_malformed_index_and_missing_weights(tmp_path):
    path = build(tmp_path)
    (path / INDEX_FILE).write_text("[]")
    with pytest.raises(CheckpointError, match="weight_map"):
        CheckpointReader(path)
    shutil.rmtree(path)
    path.mkdir()
    (path / "config.json").write_text(json.dumps(TINY_TEXT))
    with pytest.raises(CheckpointError, match="no model.safetensors.index.json"):
        CheckpointReader(path)


def test_config_mismatch_is_reported_as_shape_error(tiny_checkpoint, tmp_path):
    """Weights of one config under another config.json: the first differing tensor is named."""
    path = tmp_path / "mismatch"
    shutil.copytree(tiny_checkpoint, path)
    raw = json.loads((path / "config.json").read_text())
    raw["text_config"]["share_q_dim"] = 41
    (path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match="q_proj.weight` has shape \\[40, 96\\], "
                                              "expected \\[41, 96\\]"):
        CheckpointReader(path).validate()


def test_layout_covers_every_parameter_of_the_reference_model():
    from step3_trt.model.reference import Step3ForCausalLM

    with torch.device("meta"):
        model = Step3ForCausalLM(CFG)
    layout = {s.name: s.shape for s in text_specs(CFG)}
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert layout == params
    assert isinstance(text_specs(CFG)[0], TensorSpec)


@pytest.mark.parametrize("name", ["tokenizer.json", "tokenizer_config.json",
                                  "generation_config.json", "chat_template.jinja"])
def test_digest_covers_the_files_that_travel_with_the_tokenizer(tmp_path, name):
    """Engines are reused while the digest is unchanged: a new tokenizer, chat template or
    generation config must change it, or engines would keep stale copies."""
    from step3_trt.checkpoint.reader import checkpoint_digest

    root = build(tmp_path)
    before = checkpoint_digest(CheckpointReader(root))
    assert checkpoint_digest(CheckpointReader(root)) == before
    path = root / name
    path.write_bytes((path.read_bytes() if path.is_file() else b"{}") + b" ")
    assert checkpoint_digest(CheckpointReader(root)) != before
