"""The FP8 checkpoint format: quantization_config round trip, refusals, scale tensor shapes."""

import pytest

from step3_trt.checkpoint.layout import layer_specs
from step3_trt.config import Step3Config
from step3_trt.presets import STEP3_TEXT
from step3_trt.quant.scheme import Fp8Scheme, QuantConfigError


@pytest.mark.parametrize("scheme", [Fp8Scheme("per-tensor", "static", True),
                                    Fp8Scheme("per-channel", "static", False),
                                    Fp8Scheme("block128", "dynamic", True)])
def test_config_round_trip(scheme):
    assert Fp8Scheme.from_config({"quantization_config": scheme.to_config()}) == scheme


def test_a_deepseek_style_block_fp8_config_reads_as_block128():
    q = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
         "weight_block_size": [128, 128]}
    assert Fp8Scheme.from_config({"quantization_config": q}) == Fp8Scheme("block128", "dynamic")
    assert Fp8Scheme.from_config({}) is None


@pytest.mark.parametrize("q, field", [
    ({"quant_method": "awq"}, "quant_method"), ({"quant_method": "fp8", "fmt": "e5m2"}, "fmt"),
    ({"quant_method": "fp8", "weight_block_size": [64, 64]}, "weight_block_size"),
    ({"quant_method": "fp8", "kv_cache_dtype": "int8"}, "kv_cache_dtype"),
    ({"quant_method": "fp8", "weight_granularity": "per-row"}, "weight_granularity"),
])
def test_unsupported_configs_name_the_field(q, field):
    with pytest.raises(QuantConfigError, match=field):
        Fp8Scheme.from_config({"quantization_config": q})


def test_scale_tensors_of_a_full_size_moe_layer():
    cfg = Step3Config.from_dict(STEP3_TEXT)
    specs = {s.name: s for s in Fp8Scheme("block128", "dynamic", True).checkpoint_specs(
        layer_specs(cfg, 4))}
    p = "model.layers.4."
    assert specs[p + "moe.gate_proj.weight"].dtype == "float8_e4m3fn"
    assert specs[p + "moe.gate_proj.weight_scale_inv"].shape == (48, 40, 56)  # 5120/128, 7168/128
    assert specs[p + "self_attn.wq.weight_scale_inv"].shape == (128, 16)
    assert specs[p + "self_attn.k_scale"].shape == (1,)
    assert p + "moe.gate.weight_scale_inv" not in specs and specs[p + "moe.gate.weight"].dtype is None
    assert not any(n.endswith("input_scale") for n in specs)  # dynamic activations
    static = {s.name: s for s in Fp8Scheme("per-channel", "static").checkpoint_specs(
        layer_specs(cfg, 4))}
    assert static[p + "moe.down_proj.weight_scale"].shape == (48, 7168)
    assert static[p + "share_expert.down_proj.weight_scale"].shape == (7168, 1)
    assert static[p + "share_expert.down_proj.input_scale"].shape == (1,)
    assert p + "moe.down_proj.input_scale" not in static  # experts quantize inputs per group
