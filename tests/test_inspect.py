import json
from pathlib import Path

import pytest

from step3_trt.build_config import BuildConfig
from step3_trt.checkpoint.safetensors_header import CheckpointError
from step3_trt.config import Step3Config
from step3_trt.convert.memory_plan import vision_memory
from step3_trt.inspect import inspect_config, inspect_path, parameter_counts, preset_configs
from step3_trt.presets import STEP3_TEXT, STEP3_VISION, TINY_TEXT, TINY_VISION, vlm_config
from step3_trt.vision.config import VisionConfig
from tests.sizes import ODD_SIZES

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "build_configs"


def independent_count(H, L, V, N, D, Q, F, E, K, I, S, n_moe):
    """Step-3 parameters from the architecture description, written out by hand."""
    attention = Q * H + 2 * D * H + Q + N * D * Q + H * N * D  # q, k, v, inter_norm, wq, o
    norms = 2 * H
    dense = 3 * F * H
    experts = 3 * E * I * H
    shared = 3 * S * H
    router = E * H
    n_dense = L - n_moe
    total = (V * H + L * (attention + norms) + n_dense * dense
             + n_moe * (experts + shared + router) + H + V * H)
    active = (L * (attention + norms) + n_dense * dense
              + n_moe * (experts * K // E + shared + router) + H + V * H)
    return total, active


def independent_vision_count(C, I, O, L, P, side, T, bias=True):
    """The vision tower from its description: patch conv + class + positions, L blocks of fused
    qkv + out + 2 LayerNorms + 2-layer MLP (all with biases), the 2x2 and 3x3 convs, projector."""
    embeddings = 3 * P * P * C + C + C + ((side // P) ** 2 + 1) * C
    block = (3 * C * C + 3 * C) + (C * C + C) + 2 * (2 * C) + (I * C + I) + (C * I + C)
    convs = (4 * C * O + O) + (9 * O * 2 * O + 2 * O)
    return embeddings + L * block + convs + 2 * O * T + (T if bias else 0)


def test_released_config_counts(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(vlm_config(STEP3_TEXT, STEP3_VISION)))
    report = inspect_path(tmp_path / "config.json")
    text, active = independent_count(7168, 61, 128815, 64, 256, 2048, 18432, 48, 3, 5120, 5120,
                                     56)
    vision = independent_vision_count(1792, 15360, 4096, 63, 14, 728, 7168)
    assert report["total_parameters"] == text + vision
    assert report["vision_parameters"] == vision
    assert report["activated_parameters"] == active  # the tower runs per image, not per token
    assert 315.5e9 < text < 316.5e9  # model card: "Total Parameters (LLM) 316B"
    assert 4.5e9 < vision < 5.5e9  # paper: "an additional vision encoder of 5 billion parameters"
    assert 320.5e9 < text + vision < 321.5e9  # model card: "Total Parameters (VLM) 321B"
    assert 37.5e9 < active < 38.5e9
    assert report["vision"]["embeddings_per_global_view"] == 169
    assert report["vision"]["embeddings_per_window"] == 81
    # K and V, 256 elements each, per layer: 512 elements x 61 layers
    assert report["kv_cache_bytes_per_token"] == {"bf16": 512 * 61 * 2, "fp8": 512 * 61}
    assert report["weight_bytes"] == {"bfloat16": 2 * (text + vision)}
    assert report["weight_bytes_estimated"]


def test_preset_matches_the_written_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(vlm_config(STEP3_TEXT, STEP3_VISION)))
    cfg, vision = preset_configs("step3")
    assert inspect_config(cfg, "x", vision)["total_parameters"] == \
        inspect_path(tmp_path / "config.json")["total_parameters"]


def test_text_only_config_has_no_vision_rows(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(vlm_config(STEP3_TEXT)))
    report = inspect_path(tmp_path / "config.json")
    assert "vision" not in report
    assert not any(c.startswith("vision") for c in report["parameters"])


def test_odd_config_counts_match_the_formula():
    cfg = Step3Config.from_dict({**TINY_TEXT, **ODD_SIZES})
    counts = parameter_counts(cfg)
    total, active = independent_count(72, 5, 263, 5, 18, 34, 100, 5, 3, 28, 44, 3)
    assert sum(c["total"] for c in counts.values()) == total
    assert sum(c["activated"] for c in counts.values()) == active
    vision = VisionConfig.from_dict(vlm_config({**TINY_TEXT, **ODD_SIZES}, TINY_VISION))
    with_tower = parameter_counts(cfg, vision)
    assert sum(c["total"] for c in with_tower.values()) == total + independent_vision_count(
        48, 88, 40, 2, 14, 728, 72)
    assert sum(c["activated"] for c in with_tower.values()) == active


def test_checkpoint_report_reads_bytes_from_headers(odd_checkpoint):
    report = inspect_path(odd_checkpoint)
    vision = independent_vision_count(48, 88, 40, 2, 14, 728, 72)
    assert report["weight_bytes"] == {"F32": 4 * (report["total_parameters"] - vision)}
    assert report["vision_tensors"] == {"count": 4 + 2 * 12 + 6, "bytes": 4 * vision}
    assert "weight_bytes_estimated" not in report


def test_checkpoint_with_a_wrong_vision_tensor_is_refused(odd_checkpoint, tmp_path):
    raw = json.loads((odd_checkpoint / "config.json").read_text())
    raw["vision_config"]["intermediate_size"] += 1
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in odd_checkpoint.iterdir():
        (bad / f.name).symlink_to(f)
    (bad / "config.json").unlink()
    (bad / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"`vision_model.transformer.layers.0.mlp.fc1."
                                              r"weight` has shape \[88, 48\], expected \[89, 48\]"):
        inspect_path(bad)


@pytest.mark.parametrize("build_config, element_bytes", [("step3-2a2f-h800.yaml", 2),
                                                           ("tiny-cpu-fp8.yaml", 2),
                                                           ("tiny-cpu.yaml", 4)])
def test_memory_plan_counts_the_tower_in_the_activation_dtype(build_config, element_bytes):
    """BF16 for BF16 and FP8 builds (the tower is not quantized), 4 bytes in float32 builds."""
    cfg, vision = preset_configs("step3")
    tower = vision_memory(vision, cfg, BuildConfig.from_file(REPO_CONFIGS / build_config))
    params = independent_vision_count(1792, 15360, 4096, 63, 14, 728, 7168)
    assert (tower.parameters, tower.weight_bytes) == (params, element_bytes * params)
