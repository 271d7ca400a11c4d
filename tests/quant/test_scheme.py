"""The FP8 checkpoint format: quantization_config round trip, refusals, scale tensor shapes,
modules left unquantized (matched as transformers matches them)."""

import pytest

from step3_trt.checkpoint.layout import layer_specs, text_specs
from step3_trt.config import Step3Config
from step3_trt.presets import STEP3_TEXT
from step3_trt.quant.scheme import Fp8Scheme, QuantConfigError


@pytest.mark.parametrize("scheme", [Fp8Scheme("per-tensor", "static", True),
                                    Fp8Scheme("per-channel", "static", False),
                                    Fp8Scheme("block128", "dynamic", True),
                                    Fp8Scheme("block128", "dynamic", False, ("lm_head", "o_proj"))])
def test_config_round_trip(scheme):
    assert Fp8Scheme.from_config({"quantization_config": scheme.to_config()}) == scheme


def test_a_deepseek_style_block_fp8_config_reads_as_block128():
    q = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
         "weight_block_size": [128, 128]}
    block = Fp8Scheme("block128", "dynamic", not_converted=())
    assert Fp8Scheme.from_config({"quantization_config": q}) == block
    assert Fp8Scheme.from_config({"quantization_config": {**q, "fmt": "float8_e4m3fn"}}) == block
    assert Fp8Scheme.from_config({}) is None
    both = {**q, "modules_to_not_convert": ["lm_head", "o_proj"], "ignored_layers": ["o_proj", "x"]}
    assert Fp8Scheme.from_config({"quantization_config": both}).not_converted == \
        ("lm_head", "o_proj", "x")


@pytest.mark.parametrize("q, field", [
    ({"quant_method": "awq"}, "quant_method"), ({"quant_method": "fp8", "fmt": "e5m2"}, "fmt"),
    ({"quant_method": "fp8", "weight_block_size": [64, 64]}, "weight_block_size"),
    ({"quant_method": "fp8", "kv_cache_dtype": "int8"}, "kv_cache_dtype"),
    ({"quant_method": "fp8", "weight_granularity": "per-row"}, "weight_granularity"),
    ({"quant_method": "fp8", "weight_block_size": [128, 128], "activation_scheme": "static"},
     "activation_scheme"),
    ({"quant_method": "fp8", "modules_to_not_convert": "lm_head"}, "modules_to_not_convert"),
    ({"quant_method": "fp8", "ignored_layers": [1]}, "ignored_layers"),
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


MODULE_PATTERNS = ["lm_head", "model.layers.1", "model.layers.1.self_attn", "o_proj", "mlp.gate",
                   "moe.gate", "moe.gate_proj", r"model\.layers\.\d+\.self_attn\.(q|k)_proj",
                   "model.layers.*.mlp", "layers.4.moe", "share_expert", "wq", "proj", "norm"]


@pytest.mark.parametrize("pattern", MODULE_PATTERNS)
def test_not_converted_modules_match_as_in_transformers(pattern):
    transformers_rule = pytest.importorskip("transformers.quantizers.quantizers_utils")
    scheme = Fp8Scheme(not_converted=(pattern,))
    cfg = Step3Config.from_dict(STEP3_TEXT)
    modules = [s.name.removesuffix(".weight") for s in text_specs(cfg)[:1 + 2 * 15]]
    modules += [s.name.removesuffix(".weight") for i in (11, 14) for s in layer_specs(cfg, i)]
    for module in modules:
        assert scheme.converts(module) == transformers_rule.should_convert_module(
            module, [pattern]), module


def test_glob_entries_of_earlier_checkpoints_still_match():
    scheme = Fp8Scheme(not_converted=("*.moe.gate", "*norm", "*.layers.2.self_attn.*"))
    assert not scheme.converts("model.layers.4.moe.gate")
    assert scheme.converts("model.layers.4.moe.gate_proj")
    assert not scheme.converts("model.layers.2.self_attn.q_proj")
    assert scheme.converts("model.layers.20.self_attn.q_proj")


def test_unconverted_linears_have_no_fp8_weight_or_scale():
    cfg = Step3Config.from_dict(STEP3_TEXT)
    scheme = Fp8Scheme("block128", "dynamic", not_converted=("model.layers.4.self_attn.q_proj",
                                                             "layers.4.moe.down_proj"))
    specs = {s.name: s for s in scheme.checkpoint_specs(layer_specs(cfg, 4))}
    p = "model.layers.4."
    assert specs[p + "self_attn.q_proj.weight"].dtype is None
    assert p + "self_attn.q_proj.weight_scale_inv" not in specs
    assert specs[p + "moe.down_proj.weight"].dtype is None
    assert specs[p + "moe.up_proj.weight"].dtype == "float8_e4m3fn"
    assert specs[p + "self_attn.k_proj.weight_scale_inv"].stored == ("float32", "bfloat16",
                                                                     "float16")
