"""The released vision tensors: every name and shape of the tower, from its config.

Linear weights are `[out, in]`, conv weights `[out, in, k, k]`, as stored. Components (for
reports): `vision_encoder` (the ViT, `vision_model.*`) and `vision_projector` (the two
downsampling convs and `vit_large_projector`).
"""

from __future__ import annotations

from step3_trt.checkpoint.layout import TensorSpec
from step3_trt.vision.config import VisionConfig

ENCODER, PROJECTOR = "vision_encoder", "vision_projector"


def _linear(name: str, out: int, inp: int, component: str, layer: int | None = None,
            bias: bool = True) -> list[TensorSpec]:
    specs = [TensorSpec(f"{name}.weight", (out, inp), component, layer)]
    return specs + ([TensorSpec(f"{name}.bias", (out,), component, layer)] if bias else [])


def _conv(name: str, out: int, inp: int, kernel: int, component: str) -> list[TensorSpec]:
    return [TensorSpec(f"{name}.weight", (out, inp, kernel, kernel), component),
            TensorSpec(f"{name}.bias", (out,), component)]


def _norm(name: str, width: int, layer: int) -> list[TensorSpec]:
    return [TensorSpec(f"{name}.weight", (width,), ENCODER, layer),
            TensorSpec(f"{name}.bias", (width,), ENCODER, layer)]


def vision_layer_specs(cfg: VisionConfig, i: int) -> list[TensorSpec]:
    C, I = cfg.hidden_size, cfg.intermediate_size
    p = f"vision_model.transformer.layers.{i}."
    return [*_linear(p + "self_attn.qkv_proj", 3 * C, C, ENCODER, i),
            *_linear(p + "self_attn.out_proj", C, C, ENCODER, i),
            *_norm(p + "layer_norm1", C, i),
            *_linear(p + "mlp.fc1", I, C, ENCODER, i),
            *_linear(p + "mlp.fc2", C, I, ENCODER, i),
            *_norm(p + "layer_norm2", C, i)]


def vision_specs(cfg: VisionConfig) -> list[TensorSpec]:
    """Every tensor of the vision tower, in model order."""
    C, O = cfg.hidden_size, cfg.output_hidden_size
    e = "vision_model.embeddings."
    specs = [TensorSpec(e + "class_embedding", (1, C), ENCODER),
             *_conv(e + "patch_embedding", C, cfg.num_channels, cfg.patch_size, ENCODER),
             TensorSpec(e + "position_embedding.weight", (cfg.num_positions, C), ENCODER)]
    for i in range(cfg.num_hidden_layers):
        specs += vision_layer_specs(cfg, i)
    return [*specs,
            *_conv("vit_downsampler", O, C, 2, PROJECTOR),
            *_conv("vit_downsampler2", cfg.projector_width, O, 3, PROJECTOR),
            *_linear("vit_large_projector", cfg.text_hidden_size, cfg.projector_width, PROJECTOR,
                     bias=cfg.projector_bias)]
