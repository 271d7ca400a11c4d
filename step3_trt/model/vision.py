"""Step-3's vision tower in plain PyTorch: the ViT, the two downsampling convs and the projector
to the text width. The reference that a vision engine is tested against.

Module and parameter names match the released checkpoint (`vision_model.*`, `vit_downsampler*`,
`vit_large_projector.*`), so `state_dict()` keys are its tensor names; loading is
`step3_trt.vision.load`. Attention, layer norms and the position-table resize run in float32
(float64 for a float64 tower), everything else in the parameters' dtype. Architecture facts and
their sources: docs/step3-facts.md, "Vision".

Shapes: B views, S view side in pixels, P patch, G = S / P tokens per side, L = 4 + G^2 ViT tokens,
C ViT width, O `output_hidden_size`, T text hidden size, E = embeddings per view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from step3_trt.vision.config import VisionConfig

# The class token is repeated so the sequence has this many leading tokens (the release's
# `pad_tp_size`); they are dropped after the encoder.
LEADING_TOKENS = 4
# The publisher's modeling code and SGLang build the encoder's LayerNorms with eps 1e-6 (vLLM
# reads `layer_norm_eps`, default 1e-5); we follow the publisher.
LAYER_NORM_EPS = 1e-6


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def interpolate_positions(table: torch.Tensor, grid: int) -> torch.Tensor:
    """Position table [1 + g^2, C] -> [1 + grid^2, C]: the class row unchanged, the g x g patch
    rows resized bicubically (antialiased, float32) to grid x grid, as released."""
    cls, patches = table[:1], table[1:]
    src = int(round(patches.shape[0] ** 0.5))
    if src == grid:
        return table
    square = at_least_float32(patches.reshape(1, src, src, -1).permute(0, 3, 1, 2))  # [1,C,g,g]
    resized = F.interpolate(square, size=(grid, grid), mode="bicubic", antialias=True,
                            align_corners=False)
    return torch.cat([cls, resized[0].permute(1, 2, 0).reshape(grid * grid, -1).to(table.dtype)])


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        C, P = cfg.hidden_size, cfg.patch_size
        self.patch_size = P
        self.class_embedding = nn.Parameter(torch.empty(1, C))
        self.patch_embedding = nn.Conv2d(cfg.num_channels, C, kernel_size=P, stride=P, bias=True)
        self.position_embedding = nn.Embedding(cfg.num_positions, C)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> [B, L, C]: class token + patches with positions, the class token's
        row repeated in front to LEADING_TOKENS rows."""
        B, _, S, _ = pixel_values.shape
        grid = S // self.patch_size
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # [B, G^2, C]
        x = torch.cat([self.class_embedding.expand(B, 1, -1), patches], dim=1)  # [B, 1+G^2, C]
        x = x + interpolate_positions(self.position_embedding.weight, grid)
        return torch.cat([x[:, :1].expand(B, LEADING_TOKENS - 1, -1), x], dim=1)


class VisionAttention(nn.Module):
    """Bidirectional multi-head attention with a fused q/k/v projection (rows: q, then k, v)."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        C = cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.qkv_proj = nn.Linear(C, 3 * C, bias=True)
        self.out_proj = nn.Linear(C, C, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        qkv = self.qkv_proj(x).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = at_least_float32(qkv).permute(2, 0, 3, 1, 4).unbind(0)  # each [B, N, L, D]
        out = F.scaled_dot_product_attention(q, k, v, scale=self.head_dim ** -0.5)
        return self.out_proj(out.transpose(1, 2).reshape(B, L, C).to(x.dtype))


class VisionMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=True)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(quick_gelu(self.fc1(x)))


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm computed in (at least) float32, returned in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(at_least_float32(x), self.normalized_shape,
                            at_least_float32(self.weight), at_least_float32(self.bias),
                            self.eps).to(x.dtype)


class VisionEncoderLayer(nn.Module):
    """The norms act on each branch's output: h + LN1(attn(h)), then h + LN2(mlp(h))."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.self_attn = VisionAttention(cfg)
        self.layer_norm1 = LayerNorm(cfg.hidden_size, eps=LAYER_NORM_EPS)
        self.mlp = VisionMLP(cfg)
        self.layer_norm2 = LayerNorm(cfg.hidden_size, eps=LAYER_NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_norm1(self.self_attn(x))
        return x + self.layer_norm2(self.mlp(x))


class VisionEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(VisionEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class VisionTransformer(nn.Module):
    """The ViT (`vision_model.*`): no norm before or after the encoder layers, as released."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.embeddings = VisionEmbeddings(cfg)
        self.transformer = VisionEncoder(cfg)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> [B, L, C], leading tokens included."""
        return self.transformer(self.embeddings(pixel_values))


class Step3VisionTower(nn.Module):
    """Pixels of square views -> image embeddings in the text model's width."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.config = cfg
        O = cfg.output_hidden_size
        self.vision_model = VisionTransformer(cfg)
        self.vit_downsampler = nn.Conv2d(cfg.hidden_size, O, kernel_size=2,
                                         stride=cfg.projector_stride, bias=True)
        self.vit_downsampler2 = nn.Conv2d(O, cfg.projector_width, kernel_size=3, stride=2,
                                          padding=1, bias=True)
        self.vit_large_projector = nn.Linear(cfg.projector_width, cfg.text_hidden_size,
                                             bias=cfg.projector_bias)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> ViT features [B, G^2, C] (leading tokens dropped)."""
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.config.num_channels \
                or pixel_values.shape[2] != pixel_values.shape[3]:
            raise ValueError(f"pixel_values must be [B, {self.config.num_channels}, S, S], got "
                             f"{list(pixel_values.shape)}")
        self.config.patch_grid(pixel_values.shape[-1])  # S must be a multiple of the patch
        dtype = self.vit_large_projector.weight.dtype
        return self.vision_model(pixel_values.to(dtype))[:, LEADING_TOKENS:]

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """ViT features [B, G^2, C] -> embeddings [B, E, T]: two convs on the G x G grid (no
        activation between them), then the linear projector."""
        B, N, C = features.shape
        grid = int(round(N ** 0.5))
        x = features.transpose(1, 2).reshape(B, C, grid, grid)
        x = self.vit_downsampler2(self.vit_downsampler(x))  # [B, 2O, E^0.5, E^0.5]
        return self.vit_large_projector(x.flatten(2).transpose(1, 2))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, S, S] -> [B, E, T]."""
        return self.project(self.encode(pixel_values))

    def embed_image(self, global_view: torch.Tensor, windows: torch.Tensor) -> torch.Tensor:
        """One image's embeddings in prompt order: every window's (row-major), then the global
        view's. global_view [3, S, S], windows [N, 3, W, W] -> [N * E_W + E_S, T]."""
        parts = [self(windows).flatten(0, 1)] if windows.shape[0] else []
        parts.append(self(global_view[None])[0])
        return torch.cat(parts)
