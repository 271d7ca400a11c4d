"""FP8 checkpoints from other producers (DeepSeek-style block FP8, as the Step-3 FP8 release is
loaded by vLLM): the README's block-128 claims ("converts without re-quantizing": bytes equal;
"an off-block mapping is refused"), `fmt: float8_e4m3fn`, BF16-stored scales, and the linear
layers `modules_to_not_convert` / `ignored_layers` leave unquantized."""

from __future__ import annotations

import json

import pytest
import torch

from step3_trt.build_config import BuildConfig, BuildConfigError
from step3_trt.checkpoint.layout import text_specs
from step3_trt.checkpoint.reader import CheckpointReader, TensorStore
from step3_trt.checkpoint.safetensors_header import CheckpointError
from step3_trt.config import Step3Config
from step3_trt.convert.convert import convert
from step3_trt.convert.plan import plan_conversion
from step3_trt.make_checkpoint import random_tensor, write_checkpoint
from step3_trt.model.load import load_reference_model
from step3_trt.quant.calibrate import quantize_weight
from step3_trt.quant.scheme import Fp8Scheme
from step3_trt.tokenizer import byte_level_tokenizer
from tests.conftest import REPO

# Every FFN width a multiple of 256, so two FFN ranks cut on 128-blocks and four do not.
TEXT = {"hidden_size": 256, "num_hidden_layers": 3, "vocab_size": 320, "num_attention_heads": 2,
        "num_attention_groups": 1, "head_dim": 64, "share_q_dim": 128, "intermediate_size": 512,
        "moe_num_experts": 4, "moe_top_k": 2, "moe_intermediate_size": 256,
        "share_expert_dim": 256, "moe_layers_enum": "1", "rope_theta": 10000,
        "max_position_embedding": 256, "torch_dtype": "bfloat16", "bos_token_id": 256,
        "eos_token_id": 257}


def block_fp8_checkpoint(out, *, scale_dtype=torch.float32, fmt="e4m3", not_converted=(),
                         key="modules_to_not_convert", listed=None):
    """A random BF16 model written as DeepSeek-style block FP8 (weight_scale_inv per 128x128).
    `not_converted`: modules stored BF16; `listed`: what quantization_config lists (default:
    `not_converted`)."""
    cfg = Step3Config.from_dict(TEXT)
    gen = torch.Generator().manual_seed(0)
    scheme = Fp8Scheme("block128", "dynamic", not_converted=tuple(not_converted))
    tensors = []
    for spec in text_specs(cfg):
        w = random_tensor(spec, gen, torch.bfloat16)
        if scheme.quantizes(spec):
            q, s = quantize_weight(w, "block128")
            tensors += [(spec.name, q), (scheme.scale_name(spec.name), s.to(scale_dtype))]
        else:
            tensors.append((spec.name, w))
    write_checkpoint(out, TEXT, tensors, byte_level_tokenizer(), shards_bytes=1 << 20)
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "fmt": fmt,
                                     "activation_scheme": "dynamic",
                                     "weight_block_size": [128, 128],
                                     key: list(not_converted if listed is None else listed)}
    (out / "config.json").write_text(json.dumps(config))
    return out


def fp8_build(ffn_ep: int, ffn_tp: int) -> BuildConfig:
    raw = BuildConfig.from_file(REPO / "build_configs" / "tiny-cpu-fp8.yaml").to_dict()
    raw["dtypes"]["kv_cache"] = "auto"  # a block-FP8 release has no K/V scales
    raw["mapping"] = {"attention": {"ranks": 1}, "ffn": {"ep": ffn_ep, "tp": ffn_tp}}
    raw["runtime"]["max_seq_len"] = 256
    return BuildConfig.from_dict(raw)


def as_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(-1).view(torch.uint8)


def test_block_fp8_converts_without_requantizing(tmp_path):
    src = block_fp8_checkpoint(tmp_path / "fp8")
    reader = CheckpointReader(src).validate()
    assert reader.quant == Fp8Scheme("block128", "dynamic", not_converted=())
    build = fp8_build(2, 1)
    roles = convert(src, build, tmp_path / "roles", progress=False)
    checked = 0
    for plan in plan_conversion(reader.config, build, reader.quant):
        store = TensorStore(roles / plan.name)
        for piece in plan.pieces:
            want = reader.get(piece.source)[tuple(slice(a, b) for a, b in piece.index)]
            got = store.get(piece.target)
            if want.dtype in (torch.float8_e4m3fn, torch.float32):
                assert got.dtype == want.dtype and torch.equal(as_bytes(got), as_bytes(want)), \
                    piece.target
                checked += 1
    fp8 = [s for s in reader.specs if s.dtype == "float8_e4m3fn"]
    assert checked >= 2 * len(fp8)  # every FP8 weight and its scale, on some rank, as bytes


def test_an_off_block_mapping_is_refused_with_the_tensor_name(tmp_path):
    src = block_fp8_checkpoint(tmp_path / "fp8")
    with pytest.raises(BuildConfigError, match=r"`model\.layers\.\d\.\S+\.weight`.*128-wide"):
        convert(src, fp8_build(1, 4), tmp_path / "roles", progress=False)  # 256 / 4 = 64 rows
    assert not (tmp_path / "roles").exists()


def test_float8_e4m3fn_and_bf16_scales_read_as_the_float32_ones(tmp_path):
    ref = CheckpointReader(block_fp8_checkpoint(tmp_path / "a")).validate()
    bf16 = CheckpointReader(block_fp8_checkpoint(tmp_path / "b", scale_dtype=torch.bfloat16,
                                                 fmt="float8_e4m3fn")).validate()
    name = "model.layers.1.moe.up_proj.weight_scale_inv"
    assert bf16.get(name).dtype == torch.bfloat16
    for (n1, t1), (n2, t2) in zip(ref.iter_text(), bf16.iter_text()):
        assert n1 == n2
        # the scale differs only by its bf16 rounding: at most 2^-8 relative
        assert torch.allclose(t1, t2, rtol=2**-8, atol=0), n1
    roles = convert(tmp_path / "b", fp8_build(2, 1), tmp_path / "roles", progress=False)
    got = TensorStore(roles / "ffn" / "rank0").get(name)
    assert got.dtype == torch.float32
    assert torch.equal(got, bf16.get(name)[0:2].float())  # exact widening, experts 0-1


@pytest.mark.parametrize("key", ["modules_to_not_convert", "ignored_layers"])
def test_modules_listed_as_not_converted_stay_bf16(tmp_path, key):
    skipped = ("model.layers.0.self_attn.q_proj", "layers.1.moe.down_proj", "share_expert.up_proj")
    src = block_fp8_checkpoint(tmp_path / "fp8", not_converted=skipped, key=key)
    reader = CheckpointReader(src).validate()
    specs = {s.name: s for s in reader.specs}
    for name in ("model.layers.0.self_attn.q_proj", "model.layers.1.moe.down_proj",
                 "model.layers.1.share_expert.up_proj"):
        assert specs[name + ".weight"].dtype is None and name + ".weight_scale_inv" not in specs
        assert reader.get(name + ".weight").dtype == torch.bfloat16
    assert specs["model.layers.0.self_attn.k_proj.weight"].dtype == "float8_e4m3fn"
    text = dict(reader.iter_text())
    assert torch.equal(text["model.layers.0.self_attn.q_proj.weight"],
                       reader.get("model.layers.0.self_attn.q_proj.weight"))  # not dequantized
    model = load_reference_model(reader, dtype="float32")
    assert model(torch.tensor([[256, 1, 2, 3]])).isfinite().all()
    roles = convert(src, fp8_build(2, 1), tmp_path / "roles", progress=False)
    assert TensorStore(roles / "ffn" / "rank1").get(
        "model.layers.1.moe.down_proj.weight").dtype == torch.bfloat16


def test_an_unlisted_bf16_linear_or_a_listed_fp8_one_is_refused(tmp_path):
    unlisted = block_fp8_checkpoint(tmp_path / "a", not_converted=("o_proj",), listed=())
    with pytest.raises(CheckpointError, match=r"`model\.layers\.0\.self_attn\.o_proj\.weight` is "
                                              r"BF16 without .*modules_to_not_convert"):
        CheckpointReader(unlisted).validate()
    listed = block_fp8_checkpoint(tmp_path / "b", not_converted=(), listed=("o_proj",))
    with pytest.raises(CheckpointError, match=r"unexpected tensor `model\.layers\.0\.self_attn"
                                              r"\.o_proj\.weight_scale_inv`"):
        CheckpointReader(listed).validate()
