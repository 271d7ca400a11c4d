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
    raw = {k: v for k, v in TINY_TEXT.items() if k not in ("share_q_dim", "moe_layers_enum")}
    with pytest.raises(ConfigError, match="share_q_dim.*moe_layers_enum"):
        Step3Config.from_dict(raw)


def test_from_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        Step3Config.from_file(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Step3Config.from_file(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"text_config": [1]}))
    with pytest.raises(ConfigError, match="text_config"):
        Step3Config.from_file(tmp_path)
