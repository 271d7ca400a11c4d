"""Model presets: the released Step-3 text config and small configs with the same architecture.

Each preset is the text config dict as a Step-3 `config.json` holds it under `text_config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The trained tiny model committed with the project: the default for the demo and `generate`.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "models" / "step3-tiny"

STEP3_TEXT: dict[str, Any] = {
    "model_type": "step3_text",
    "architectures": ["Step3TextForCausalLM"],
    "hidden_size": 7168,
    "num_hidden_layers": 61,
    "vocab_size": 128815,
    "num_attention_heads": 64,
    "num_attention_groups": 1,
    "head_dim": 256,
    "share_q_dim": 2048,
    "intermediate_size": 18432,
    "moe_num_experts": 48,
    "moe_top_k": 3,
    "moe_intermediate_size": 5120,
    "share_expert_dim": 5120,
    "moe_layers_enum": ",".join(str(i) for i in range(4, 60)),
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000,
    "max_position_embedding": 65536,
    "torch_dtype": "bfloat16",
    "bos_token_id": 0,
    "eos_token_id": 1,
}

# Small enough to run in seconds on 2 CPU cores; deliberately awkward sizes (non-powers of two,
# shared expert narrower than the routed experts, dense and MoE layers interleaved).
TINY_TEXT: dict[str, Any] = {
    "model_type": "step3_text",
    "architectures": ["Step3TextForCausalLM"],
    "hidden_size": 96,
    "num_hidden_layers": 4,
    "vocab_size": 320,
    "num_attention_heads": 6,
    "num_attention_groups": 1,
    "head_dim": 24,
    "share_q_dim": 40,
    "intermediate_size": 176,
    "moe_num_experts": 6,
    "moe_top_k": 2,
    "moe_intermediate_size": 48,
    "share_expert_dim": 36,
    "moe_layers_enum": "1,3",
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000,
    "max_position_embedding": 1024,
    "torch_dtype": "float32",
    "bos_token_id": 256,
    "eos_token_id": 257,
}

# The bundled model's text config ("stdlib-tiny"): dense layers first and last as in Step-3, MoE
# in between; one K/V head, low-rank queries; a shared expert narrower than the routed experts.
STDLIB_TINY: dict[str, Any] = {
    "model_type": "step3_text",
    "architectures": ["Step3TextForCausalLM"],
    "hidden_size": 256,
    "num_hidden_layers": 6,
    "vocab_size": 4096,
    "num_attention_heads": 4,
    "num_attention_groups": 1,
    "head_dim": 64,
    "share_q_dim": 128,
    "intermediate_size": 768,
    "moe_num_experts": 8,
    "moe_top_k": 2,
    "moe_intermediate_size": 192,
    "share_expert_dim": 128,
    "moe_layers_enum": "1,2,3,4",
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000,
    "max_position_embedding": 1024,
    "torch_dtype": "bfloat16",
    "bos_token_id": 0,
    "eos_token_id": 1,
    "image_token_id": 4095,
}

PRESETS: dict[str, dict[str, Any]] = {"step3": STEP3_TEXT, "tiny": TINY_TEXT,
                                       "stdlib-tiny": STDLIB_TINY}
# Presets small enough to materialise as random checkpoints on a 24 GB machine.
RANDOM_CHECKPOINT_PRESETS = ("tiny",)

# Vision towers in the released `config.json` spelling: `vision_config` plus the projector fields
# that `Step3VLConfig` keeps at the top level. The projector's output width is the text model's
# `hidden_size`, so a tower fits any text config.
STEP3_VISION: dict[str, Any] = {
    "vision_config": {
        "model_type": "step3_vision_encoder",
        "hidden_size": 1792,
        # Not in any indexed source: 15360 is derived from the model card's 321B (VLM) - 316B
        # (LLM) and the paper's "vision encoder of 5 billion parameters" (docs/step3-facts.md).
        "intermediate_size": 15360,
        "output_hidden_size": 4096,
        "num_hidden_layers": 63,
        "num_attention_heads": 16,
        "num_channels": 3,
        "image_size": 728,
        "patch_size": 14,
        "hidden_act": "quick_gelu",
    },
    # 2, not the config class's default 1: the released processor's 169 / 81 embeddings per
    # 728 / 504 view need a stride-2 `vit_downsampler`.
    "understand_projector_stride": 2,
    "projector_bias": True,
}

# A tiny but complete tower with the released geometry (728 / 504 views, patch 14, stride 2: 169
# and 81 embeddings per view), so the released processor's output runs through it; awkward sizes
# (odd head count, the MLP narrower than 4x) as in the text presets.
TINY_VISION: dict[str, Any] = {
    "vision_config": {
        "model_type": "step3_vision_encoder",
        "hidden_size": 48,
        "intermediate_size": 88,
        "output_hidden_size": 40,
        "num_hidden_layers": 2,
        "num_attention_heads": 3,
        "num_channels": 3,
        "image_size": 728,
        "patch_size": 14,
        "hidden_act": "quick_gelu",
    },
    "understand_projector_stride": 2,
    "projector_bias": True,
}

# The vision tower that goes with each text preset.
VISION_PRESETS: dict[str, dict[str, Any]] = {"step3": STEP3_VISION, "tiny": TINY_VISION,
                                             "stdlib-tiny": TINY_VISION}


def vlm_config(text: dict[str, Any], vision: dict[str, Any] | None = None) -> dict[str, Any]:
    """Wrap a text config (and a vision tower, e.g. a VISION_PRESETS entry) in the released VLM
    nesting (`Step3VLConfig`); without `vision` the config has no tower (text only)."""
    out = {
        "architectures": ["Step3VLForConditionalGeneration"],
        "model_type": "step3_vl",
        "torch_dtype": text["torch_dtype"],
        "image_token_id": text.get("image_token_id", text["vocab_size"] - 1),
        "text_config": dict(text),
    }
    if vision is not None:
        out.update({k: (dict(v) if isinstance(v, dict) else v) for k, v in vision.items()})
    return out
