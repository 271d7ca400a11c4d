"""The released Step-3 checkpoint layout: every text tensor's name and shape, from the config.

Shapes are `[out, in]` as stored; MoE experts are stacked along a leading expert axis.
"""

from __future__ import annotations

from dataclasses import dataclass

from step3_trt.config import Step3Config

# Tensors of the vision tower and its projector: recognised and skipped by the text path.
VISION_PREFIXES = ("vision_model.", "vit_downsampler", "vit_large_projector.")


def is_vision_tensor(name: str) -> bool:
    return name.startswith(VISION_PREFIXES)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    component: str  # for reports: embedding, attention, norm, dense_mlp, router, experts, ...
    layer: int | None = None
    dtype: str | None = None  # the dtype used (FP8 weights, float32 scales); None: any float
    stored: tuple[str, ...] = ()  # dtypes a checkpoint may store it in, if not exactly `dtype`


def layer_specs(cfg: Step3Config, i: int) -> list[TensorSpec]:
    """The tensors of decoder layer `i`."""
    H, D, Q = cfg.hidden_size, cfg.head_dim, cfg.share_q_dim
    p = f"model.layers.{i}."
    specs = [
        TensorSpec(p + "input_layernorm.weight", (H,), "norm", i),
        TensorSpec(p + "post_attention_layernorm.weight", (H,), "norm", i),
        TensorSpec(p + "self_attn.q_proj.weight", (Q, H), "attention", i),
        TensorSpec(p + "self_attn.k_proj.weight", (D, H), "attention", i),
        TensorSpec(p + "self_attn.v_proj.weight", (D, H), "attention", i),
        TensorSpec(p + "self_attn.inter_norm.weight", (Q,), "attention", i),
        TensorSpec(p + "self_attn.wq.weight", (cfg.q_width, Q), "attention", i),
        TensorSpec(p + "self_attn.o_proj.weight", (H, cfg.q_width), "attention", i),
    ]
    if cfg.is_moe_layer(i):
        E, I, S = cfg.moe_num_experts, cfg.moe_intermediate_size, cfg.share_expert_dim
        specs += [
            TensorSpec(p + "moe.gate.weight", (E, H), "router", i),
            TensorSpec(p + "moe.gate_proj.weight", (E, I, H), "experts", i),
            TensorSpec(p + "moe.up_proj.weight", (E, I, H), "experts", i),
            TensorSpec(p + "moe.down_proj.weight", (E, H, I), "experts", i),
            TensorSpec(p + "share_expert.gate_proj.weight", (S, H), "shared_expert", i),
            TensorSpec(p + "share_expert.up_proj.weight", (S, H), "shared_expert", i),
            TensorSpec(p + "share_expert.down_proj.weight", (H, S), "shared_expert", i),
        ]
    else:
        F = cfg.intermediate_size
        specs += [
            TensorSpec(p + "mlp.gate_proj.weight", (F, H), "dense_mlp", i),
            TensorSpec(p + "mlp.up_proj.weight", (F, H), "dense_mlp", i),
            TensorSpec(p + "mlp.down_proj.weight", (H, F), "dense_mlp", i),
        ]
    return specs


def text_specs(cfg: Step3Config) -> list[TensorSpec]:
    """Every tensor of the text model, in model order."""
    H, V = cfg.hidden_size, cfg.vocab_size
    specs = [TensorSpec("model.embed_tokens.weight", (V, H), "embedding")]
    for i in range(cfg.num_hidden_layers):
        specs += layer_specs(cfg, i)
    specs += [TensorSpec("model.norm.weight", (H,), "norm"),
              TensorSpec("lm_head.weight", (V, H), "lm_head")]
    return specs
