import json

from step3_trt.config import Step3Config
from step3_trt.inspect import inspect_config, inspect_path, parameter_counts
from step3_trt.presets import STEP3_TEXT, TINY_TEXT, vlm_config
from tests.sizes import ODD_SIZES


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


def test_released_config_counts(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(vlm_config(STEP3_TEXT)))
    report = inspect_path(tmp_path / "config.json")
    total, active = independent_count(7168, 61, 128815, 64, 256, 2048, 18432, 48, 3, 5120, 5120, 56)
    assert report["total_parameters"] == total
    assert report["activated_parameters"] == active
    assert 315e9 < total < 317e9  # "321B" in the paper includes the ~5B vision tower
    assert 37.5e9 < active < 38.5e9
    # K and V, 256 elements each, per layer: 512 elements x 61 layers
    assert report["kv_cache_bytes_per_token"] == {"bf16": 512 * 61 * 2, "fp8": 512 * 61}
    assert report["weight_bytes"] == {"bfloat16": 2 * total} and report["weight_bytes_estimated"]


def test_odd_config_counts_match_the_formula():
    cfg = Step3Config.from_dict({**TINY_TEXT, **ODD_SIZES})
    counts = parameter_counts(cfg)
    total, active = independent_count(72, 5, 263, 5, 18, 34, 100, 5, 3, 28, 44, 3)
    assert sum(c["total"] for c in counts.values()) == total
    assert sum(c["activated"] for c in counts.values()) == active


def test_checkpoint_report_reads_bytes_from_headers(odd_checkpoint):
    report = inspect_path(odd_checkpoint)
    assert report["weight_bytes"] == {"F32": 4 * report["total_parameters"]}
    assert report["vision_tensors"] == {"count": 4, "bytes": 4 * (16 * 3 * 4 * 4 + 32 * 16
                                                                  + 16 * 16 * 2 * 2 + 96 * 16)}
    assert "weight_bytes_estimated" not in report
