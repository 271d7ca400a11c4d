import json

import pytest

from step3_trt.config import ConfigError, Step3Config
from step3_trt.presets import STEP3_TEXT, TINY_TEXT, vlm_config


def test_released_config_in_vlm_form():
    cfg = Step3Config.from_dict(vlm_config(STEP3_TEXT))
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (7168, 61, 128815)
    assert (cfg.num_attention_heads, cfg.num_attention_groups, cfg.head_dim) == (64, 1, 256)
    assert (cfg.share_q_dim, cfg.intermediate_size) == (2048, 18432)
    assert (cfg.moe_num_experts, cfg.moe_top_k, cfg.moe_intermediate_size) == (48, 3, 5120)
    assert cfg.share_expert_dim == 5120 and cfg.rms_norm_eps == 1e-5 and cfg.rope_theta == 500000
    assert cfg.max_position_embedding == 65536 and cfg.norm_expert_weight is False
    assert cfg.moe_layers == tuple(range(4, 60))
    assert cfg.dense_layers == (0, 1, 2, 3, 60)
    assert cfg.q_width == 16384


def test_bare_text_config_and_round_trip():
    cfg = Step3Config.from_dict(TINY_TEXT)
    again = Step3Config.from_dict(json.loads(json.dumps(cfg.to_text_dict())))
    assert again == cfg
    assert cfg.to_text_dict()["moe_layers_enum"] == "1,3"


def test_image_token_id_from_top_level():
    raw = vlm_config(STEP3_TEXT)
    raw["image_token_id"] = 128001
    assert Step3Config.from_dict(raw).image_token_id == 128001


def test_moe_layers_enum_as_list_and_with_spaces():
    assert Step3Config.from_dict({**TINY_TEXT, "moe_layers_enum": [3, 1]}).moe_layers == (1, 3)
    assert Step3Config.from_dict({**TINY_TEXT, "moe_layers_enum": " 1, 3 "}).moe_layers == (1, 3)
    assert Step3Config.from_dict({**TINY_TEXT, "moe_layers_enum": ""}).moe_layers == ()


@pytest.mark.parametrize("change, field", [
    ({"num_attention_groups": 2}, "num_attention_groups"),
    ({"moe_top_k": 7}, "moe_top_k"),
    ({"moe_layers_enum": "1,4"}, "moe_layers_enum"),
    ({"moe_layers_enum": "1,1"}, "moe_layers_enum"),
    ({"moe_layers_enum": "1,x"}, "moe_layers_enum"),
    ({"moe_layers_enum": 5}, "moe_layers_enum"),
    ({"head_dim": 25}, "head_dim"),
    ({"hidden_size": 0}, "hidden_size"),
    ({"hidden_size": 96.0}, "hidden_size"),
    ({"vocab_size": "320"}, "vocab_size"),
    ({"moe_num_experts": True}, "moe_num_experts"),
    ({"rms_norm_eps": -1}, "rms_norm_eps"),
    ({"rope_theta": 0}, "rope_theta"),
    ({"torch_dtype": "int8"}, "torch_dtype"),
    ({"eos_token_id": 320}, "eos_token_id"),
    ({"norm_expert_weight": "no"}, "norm_expert_weight"),
])
def test_bad_field_is_named(change, field):
    with pytest.raises(ConfigError, match=f"`{field}`"):
        Step3Config.from_dict({**TINY_TEXT, **change})


def test_missing_fields_are_listed():
    raw = {k: v for k, v in TINY_TEXT.items() if k not in ("share_q_dim", "head_dim")}
    with pytest.raises(ConfigError, match="head_dim.*share_q_dim|share_q_dim.*head_dim"):
        Step3Config.from_dict(raw)


@pytest.mark.parametrize("value", ["absent", None])
def test_missing_moe_layers_enum_means_every_layer_but_the_first(value):
    """The reference loaders' fallback (vLLM step3_text.py, SGLang step3_vl.py, the HF remote
    code): `range(1, num_hidden_layers)` are MoE layers, layer 0 is dense."""
    raw = {k: v for k, v in STEP3_TEXT.items() if k != "moe_layers_enum"}
    if value is None:
        raw["moe_layers_enum"] = None
    cfg = Step3Config.from_dict(raw)
    assert cfg.moe_layers == tuple(range(1, 61)) and cfg.dense_layers == (0,)
    assert Step3Config.from_dict(cfg.to_text_dict()) == cfg


def test_eos_token_id_one_or_a_list():
    one = Step3Config.from_dict(TINY_TEXT)
    assert one.eos_token_ids == (257,) and one.eos_token_id == 257
    several = Step3Config.from_dict({**TINY_TEXT, "eos_token_id": [257, 3, 9]})
    assert several.eos_token_ids == (257, 3, 9)
    with pytest.raises(ConfigError, match="eos_token_ids"):
        several.eos_token_id  # a single-id reader must not silently drop ids
    assert Step3Config.from_dict(several.to_text_dict()) == several
    assert several.to_text_dict()["eos_token_id"] == [257, 3, 9]
    none = Step3Config.from_dict({k: v for k, v in TINY_TEXT.items() if k != "eos_token_id"})
    assert none.eos_token_ids == () and none.eos_token_id is None
    # Only the VLM's top level has it: read from there.
    top = Step3Config.from_dict({"text_config": {k: v for k, v in TINY_TEXT.items()
                                                 if k != "eos_token_id"}, "eos_token_id": [4, 5]})
    assert top.eos_token_ids == (4, 5)


@pytest.mark.parametrize("value", [[1, "2"], [1, 1], [-1], 2.0, [True], {"id": 1}])
def test_bad_eos_token_id_is_named(value):
    with pytest.raises(ConfigError, match="`eos_token_id`"):
        Step3Config.from_dict({**TINY_TEXT, "eos_token_id": value})


def test_plural_max_position_embeddings():
    singular = {k: v for k, v in TINY_TEXT.items() if k != "max_position_embedding"}
    cfg = Step3Config.from_dict({**singular, "max_position_embeddings": 2048})
    assert cfg.max_position_embedding == 2048
    both = Step3Config.from_dict({**TINY_TEXT, "max_position_embeddings": 1024})
    assert both.max_position_embedding == 1024
    with pytest.raises(ConfigError, match="`max_position_embedding`.*`max_position_embeddings`"):
        Step3Config.from_dict({**TINY_TEXT, "max_position_embeddings": 4096})


@pytest.mark.parametrize("rope", [None, {}, {"rope_type": "default"}, {"type": "default"},
                                  {"rope_type": "default", "rope_theta": 10000}])
@pytest.mark.parametrize("key", ["rope_scaling", "rope_parameters"])
def test_default_rope_is_accepted(key, rope):
    cfg = Step3Config.from_dict({**TINY_TEXT, key: rope})
    assert cfg.rope_theta == 10000


def test_rope_theta_from_rope_parameters():
    raw = {k: v for k, v in TINY_TEXT.items() if k != "rope_theta"}
    cfg = Step3Config.from_dict({**raw, "rope_parameters": {"rope_type": "default",
                                                            "rope_theta": 123456.0}})
    assert cfg.rope_theta == 123456.0


@pytest.mark.parametrize("key, rope, match", [
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "rope_type 'yarn'"),
    ("rope_scaling", {"type": "linear", "factor": 2.0}, "rope_type 'linear'"),
    ("rope_parameters", {"rope_type": "llama3", "factor": 8.0}, "rope_type 'llama3'"),
    ("rope_scaling", {"rope_type": "default", "factor": 2.0}, "factor"),
    ("rope_parameters", {"rope_type": "default", "partial_rotary_factor": 0.5}, "partial_rotary"),
    ("rope_parameters", {"rope_type": "default", "rope_theta": 5}, "disagree"),
    ("rope_scaling", "yarn", "JSON object"),
])
def test_non_default_rope_is_refused(key, rope, match):
    with pytest.raises(ConfigError, match=match) as e:
        Step3Config.from_dict({**TINY_TEXT, key: rope})
    assert f"`{key}" in str(e.value)


def test_from_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        Step3Config.from_file(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Step3Config.from_file(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"text_config": [1]}))
    with pytest.raises(ConfigError, match="text_config"):
        Step3Config.from_file(tmp_path)
