"""Random weights of Step-3's real shapes for one layer of each role graph (BF16 or FP8)."""

from __future__ import annotations

import torch

from step3_trt.config import Step3Config
from step3_trt.engine.signatures import SIGNATURES, fp8_layout, with_fp8
from step3_trt.model.reference import rope_cos_sin
from step3_trt.quant.calibrate import quantize_weight
from step3_trt.quant.scheme import Fp8Scheme

SCHEME = Fp8Scheme("per-tensor", "static", kv_cache_fp8=True)  # `quantize`'s default + FP8 KV


def _rand(shape, std=0.02):
    return torch.randn(shape, device="cuda", dtype=torch.bfloat16) * std


def layer_tensors(cfg: Step3Config, ffn_gpus: int) -> dict[str, torch.Tensor]:
    """Layer 0 as attention sees it plus, for the FFN, one of `ffn_gpus` EP ranks' share:
    48 / ffn_gpus experts and 1/ffn_gpus of the shared expert and dense MLP widths."""
    H, Q, D, p = cfg.hidden_size, cfg.share_q_dim, cfg.head_dim, "model.layers.0."
    E, I = cfg.moe_num_experts // ffn_gpus, cfg.moe_intermediate_size
    S, F = cfg.share_expert_dim // ffn_gpus, cfg.intermediate_size // ffn_gpus
    shapes = {
        "input_layernorm.weight": (H,), "post_attention_layernorm.weight": (H,),
        "self_attn.q_proj.weight": (Q, H), "self_attn.inter_norm.weight": (Q,),
        "self_attn.wq.weight": (cfg.q_width, Q), "self_attn.k_proj.weight": (D, H),
        "self_attn.v_proj.weight": (D, H), "self_attn.o_proj.weight": (H, cfg.q_width),
        "moe.gate.weight": (cfg.moe_num_experts, H),
        "moe.gate_proj.weight": (E, I, H), "moe.up_proj.weight": (E, I, H),
        "moe.down_proj.weight": (E, H, I),
        "share_expert.gate_proj.weight": (S, H), "share_expert.up_proj.weight": (S, H),
        "share_expert.down_proj.weight": (H, S),
        "mlp.gate_proj.weight": (F, H), "mlp.up_proj.weight": (F, H), "mlp.down_proj.weight": (H, F),
    }
    out = {p + k: (1 + _rand(s) if k.endswith("norm.weight") else _rand(s)) for k, s in shapes.items()}
    cos, sin = rope_cos_sin(torch.arange(cfg.max_position_embedding), D, cfg.rope_theta)
    out["rope.cos"], out["rope.sin"] = cos.cuda(), sin.cuda()
    return out


def fp8_tensors(bf16: dict[str, torch.Tensor], act_amax: float = 4.0) -> dict[str, torch.Tensor]:
    """The same layer as an FP8 checkpoint would hold it: FP8 weights + scales, static input
    and K/V cache scales (amax `act_amax`)."""
    out = {}
    for name, w in bf16.items():
        base = name.removesuffix(".weight")
        if name.endswith(("proj.weight", ".wq.weight")):
            q, s = quantize_weight(w, SCHEME.weight_granularity)
            out[name], out[SCHEME.scale_name(name)] = q, s.cuda()
            out[base + ".input_scale"] = torch.tensor([act_amax / 448], device="cuda")
        else:
            out[name] = w
    for kv in "kv":
        out[f"model.layers.0.self_attn.{kv}_scale"] = torch.tensor([act_amax / 448], device="cuda")
    return out


def signature(graph: str, fp8: bool):
    layout = fp8_layout(graph, SCHEME, kv_fp8=True) if fp8 else None
    return with_fp8(SIGNATURES[graph], layout), layout


def weights_for(sig, tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [tensors[t.format(layer=0)] for t in sig.weights]
