"""`step3-trt quantize` on a random checkpoint: calibration data checks, the scales ModelOpt
calibrated against the activations themselves, FP8 weights, and `convert` of the result."""

import json

import pytest
import torch

from step3_trt.build_config import BuildConfig, BuildConfigError
from step3_trt.checkpoint.reader import CheckpointReader, TensorStore
from step3_trt.checkpoint.safetensors_header import CheckpointError
from step3_trt.convert.convert import convert
from step3_trt.model.load import load_reference_model
from step3_trt.quant.calib_data import CalibrationDataError, calibration_windows
from step3_trt.quant.quantize import QuantizeOptions, quantize_checkpoint
from step3_trt.quant.scheme import Fp8Scheme
from step3_trt.tokenizer import Step3Tokenizer
from tests.conftest import REPO

CALIB = REPO / "data" / "calib.txt"
OPTS = dict(calib_size=4, calib_seq_len=32, batch_size=2)


@pytest.fixture(scope="module")
def fp8_static(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "fp8"
    opts = QuantizeOptions(CALIB, **OPTS, scheme=Fp8Scheme("per-channel", "static", True))
    return quantize_checkpoint(tiny_checkpoint, out, opts, progress=False)


def test_calibration_data_errors(tmp_path, tiny_checkpoint):
    tok = Step3Tokenizer.from_dir(tiny_checkpoint)
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(CalibrationDataError, match="is empty"):
        calibration_windows(tmp_path / "empty.txt", tok, 1, 8)
    with pytest.raises(CalibrationDataError, match="needs 100000 tokens"):
        calibration_windows(CALIB, tok, 1000, 100)
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"txt": 1}\n')
    with pytest.raises(CalibrationDataError, match="bad.jsonl:2"):
        calibration_windows(tmp_path / "bad.jsonl", tok, 1, 2)
    with pytest.raises(CalibrationDataError, match="does not exist"):
        calibration_windows(tmp_path / "none.txt", tok, 1, 2)


def test_activation_and_kv_scales_are_the_calibration_amax(fp8_static, tiny_checkpoint):
    """Recompute, with the plain reference model on the same windows, the inputs ModelOpt saw."""
    reader = CheckpointReader(fp8_static).validate()
    assert reader.quant == Fp8Scheme("per-channel", "static", True)
    model = load_reference_model(CheckpointReader(tiny_checkpoint), "float32")
    tokens = calibration_windows(CALIB, Step3Tokenizer.from_dir(tiny_checkpoint), 4, 32)
    seen = {}
    layer = model.model.layers[1]
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: seen.setdefault(n, []).append(i[0]))
             for n, m in [("q_proj", layer.self_attn.q_proj), ("o_proj", layer.self_attn.o_proj),
                          ("v_out", layer.self_attn.v_proj)]]
    with torch.no_grad():
        model(tokens)
    for h in hooks:
        h.remove()
    p = "model.layers.1.self_attn."
    for name in ("q_proj", "o_proj"):
        amax = torch.cat([t.flatten() for t in seen[name]]).abs().max().item()
        assert reader.get(p + name + ".input_scale").item() * 448 == pytest.approx(amax, rel=1e-5)
    v_amax = layer.self_attn.v_proj(seen["v_out"][0]).abs().max().item()
    assert reader.get(p + "v_scale").item() * 448 == pytest.approx(v_amax, rel=1e-5)


def test_fp8_weights_dequantize_within_e4m3_rounding(fp8_static, tiny_checkpoint):
    ref, q = CheckpointReader(tiny_checkpoint), CheckpointReader(fp8_static)
    name = "model.layers.1.moe.up_proj.weight"
    assert q.get(name).dtype == torch.float8_e4m3fn
    w, deq = ref.get(name).float(), dict(q.iter_text())[name]
    scale = q.get("model.layers.1.moe.up_proj.weight_scale")  # [E, out]
    # e4m3 keeps 3 mantissa bits: round-to-nearest error <= 2^-4 relative for normal values,
    # <= half the smallest subnormal step (2^-10 * scale) near zero
    bound = w.abs() * 2**-4 + scale[..., None] * 2**-10
    assert ((deq - w).abs() <= bound).all()
    assert (deq - w).abs().max() > 0  # it did quantize


def test_quantize_refuses_an_fp8_checkpoint_and_convert_needs_a_matching_config(
        fp8_static, tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="already quantized"):
        quantize_checkpoint(fp8_static, tmp_path / "x", QuantizeOptions(CALIB, **OPTS))
    assert not (tmp_path / "x").exists()
    plain = BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu-2a2f.yaml")
    with pytest.raises(BuildConfigError, match="is an FP8 checkpoint"):
        convert(fp8_static, plain, tmp_path / "r", progress=False)
    fp8 = BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu-fp8.yaml")
    with pytest.raises(BuildConfigError, match="run `step3-trt quantize`"):
        convert(tiny_checkpoint, fp8, tmp_path / "r", progress=False)


def test_convert_slices_scales_with_their_weights(fp8_static, tmp_path):
    fp8 = BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu-fp8.yaml")  # EP 2
    roles = convert(fp8_static, fp8, tmp_path / "roles", progress=False)
    src = CheckpointReader(fp8_static)
    rank1 = TensorStore(roles / "ffn" / "rank1")
    cfg = json.loads((roles / "ffn" / "rank1" / "config.json").read_text())
    e0, n = cfg["mapping"]["expert_offset"], cfg["mapping"]["num_local_experts"]
    name = "model.layers.1.moe.down_proj.weight"
    assert torch.equal(rank1.get(name + "_scale"), src.get(name + "_scale")[e0:e0 + n])
    assert torch.equal(rank1.get(name).view(torch.uint8), src.get(name)[e0:e0 + n].view(torch.uint8))
    lo, hi = cfg["mapping"]["shared_expert"]
    s = "model.layers.1.share_expert.up_proj.weight_scale"  # per channel [out, 1]
    assert torch.equal(rank1.get(s), src.get(s)[lo:hi])
    assert cfg["quantization"]["weight_granularity"] == "per-channel"
