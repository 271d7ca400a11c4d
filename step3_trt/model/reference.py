"""Step-3 text decoder in plain PyTorch: the oracle that engines and kernels are tested against.

Module and parameter names match the released checkpoint, so `state_dict()` keys are the HF
tensor names. No loading, quantization or sharding here (see `load.py`). Attention scores,
softmax and the MoE accumulation run in float32; everything else in the parameters' dtype.

Shapes: B batch, T new tokens, S cache length, H hidden, Q share_q_dim, N query heads,
D head_dim, E experts, K top-k, I expert width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from step3_trt.config import Step3Config
from step3_trt.model.kv_cache import ContiguousKVCache


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float):
    """cos, sin of shape [*positions.shape, head_dim] (float32), rotate-half layout."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64,
                                            device=positions.device) / head_dim)
    angles = positions.to(torch.float64)[..., None] * inv_freq  # [..., D/2]
    angles = torch.cat([angles, angles], dim=-1)  # [..., D]
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., D] with cos/sin broadcastable to it; rotate-half (NeoX) style, in float32."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


class MFAttention(nn.Module):
    """Multi-matrix factorization attention: low-rank queries, one shared K/V head."""

    def __init__(self, cfg: Step3Config, layer: int):
        super().__init__()
        H, Q, D = cfg.hidden_size, cfg.share_q_dim, cfg.head_dim
        self.layer, self.num_heads, self.head_dim, self.theta = layer, cfg.num_attention_heads, D, \
            cfg.rope_theta
        self.q_proj = nn.Linear(H, Q, bias=False)
        self.inter_norm = RMSNorm(Q, cfg.rms_norm_eps)
        self.wq = nn.Linear(Q, cfg.q_width, bias=False)
        self.k_proj = nn.Linear(H, D, bias=False)
        self.v_proj = nn.Linear(H, D, bias=False)
        self.o_proj = nn.Linear(cfg.q_width, H, bias=False)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: ContiguousKVCache | None,
                num_new: torch.Tensor) -> torch.Tensor:
        """With a cache, new K/V are appended and all cached keys are attended; without one
        (training, full-sequence scoring) the T tokens attend causally among themselves."""
        B, T, _ = x.shape
        q = self.wq(self.inter_norm(self.q_proj(x))).view(B, T, self.num_heads, self.head_dim)
        k, v = self.k_proj(x), self.v_proj(x)  # [B, T, D]
        cos, sin = rope_cos_sin(positions, self.head_dim, self.theta)  # [B, T, D]
        q = apply_rope(q, cos[:, :, None], sin[:, :, None])
        k = apply_rope(k, cos, sin)
        if cache is None:
            keys, values, key_pos = k.float(), v.float(), positions  # [B, S=T, D], [B, S]
        else:
            cache.write(self.layer, k, v, num_new)
            keys, values = cache.k[self.layer].float(), cache.v[self.layer].float()  # [B, S, D]
            key_pos = torch.arange(cache.max_len, device=x.device).expand(B, -1)  # [B, S]
        scores = torch.einsum("btnd,bsd->bnts", q.float(), keys) * self.head_dim ** -0.5
        visible = key_pos[:, None, :] <= positions[:, :, None]  # [B, T, S]
        scores = scores.masked_fill(~visible[:, None], float("-inf"))
        out = torch.einsum("bnts,bsd->btnd", scores.softmax(-1), values)  # [B, T, N, D]
        return self.o_proj(out.reshape(B, T, -1).to(x.dtype))


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, width: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, width, bias=False)
        self.up_proj = nn.Linear(hidden, width, bias=False)
        self.down_proj = nn.Linear(width, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class StackedExperts(nn.Module):
    """One weight per expert stacked on a leading axis, stored as `<name>.weight` [E, out, in]."""

    def __init__(self, experts: int, out_features: int, in_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(experts, out_features, in_features))


class MoE(nn.Module):
    """Routed experts, stacked: softmax (float32) over all experts, then top-k (renormalised
    only if `norm_expert_weight`, which Step-3 leaves off)."""

    def __init__(self, cfg: Step3Config):
        super().__init__()
        E, I, H = cfg.moe_num_experts, cfg.moe_intermediate_size, cfg.hidden_size
        self.top_k, self.renormalize = cfg.moe_top_k, cfg.norm_expert_weight
        self.gate = nn.Linear(H, E, bias=False)
        self.gate_proj = StackedExperts(E, I, H)
        self.up_proj = StackedExperts(E, I, H)
        self.down_proj = StackedExperts(E, H, I)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [M, H] -> (weights [M, K] in x.dtype, expert ids [M, K] int64)."""
        probs = self.gate(x).float().softmax(dim=-1)
        weights, ids = probs.topk(self.top_k, dim=-1)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights.to(x.dtype), ids

    def experts(self, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """sum_k weights[m, k] * SwiGLU_{ids[m, k]}(x[m]) -> [M, H]."""
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for e in ids.unique().tolist():
            rows, slot = (ids == e).nonzero(as_tuple=True)
            xe = x[rows]
            h = F.silu(xe @ self.gate_proj.weight[e].T) * (xe @ self.up_proj.weight[e].T)
            y = (h @ self.down_proj.weight[e].T) * weights[rows, slot, None]
            out.index_add_(0, rows, y.float())
        return out.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        weights, ids = self.route(x)
        return self.experts(x, weights, ids).view(shape)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Step3Config, layer: int):
        super().__init__()
        self.is_moe = cfg.is_moe_layer(layer)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = MFAttention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if self.is_moe:
            self.moe = MoE(cfg)
            self.share_expert = SwiGLU(cfg.hidden_size, cfg.share_expert_dim)
        else:
            self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, positions, cache, num_new):
        h = x + self.self_attn(self.input_layernorm(x), positions, cache, num_new)
        y = self.post_attention_layernorm(h)
        if self.is_moe:
            return h + self.moe(y) + self.share_expert(y)
        return h + self.mlp(y)


class Step3TextModel(nn.Module):
    def __init__(self, cfg: Step3Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Step3ForCausalLM(nn.Module):
    def __init__(self, cfg: Step3Config):
        super().__init__()
        self.config = cfg
        self.model = Step3TextModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor, cache: ContiguousKVCache | None = None,
                num_new: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B, T] (right-padded; row b has num_new[b] real tokens) -> logits [B, T, V].

        New tokens of row b sit at positions cache.lengths[b] + t (t without a cache); the cache
        advances by num_new. Logits of padded positions are meaningless.
        """
        B, T = input_ids.shape
        if num_new is None:
            num_new = torch.full((B,), T, dtype=torch.int64, device=input_ids.device)
        positions = torch.arange(T, device=input_ids.device).expand(B, -1)  # [B, T]
        if cache is not None:
            positions = cache.lengths[:, None] + positions
        x = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            x = layer(x, positions, cache, num_new)
        if cache is not None:
            cache.advance(num_new)
        return self.lm_head(self.model.norm(x)).float()
