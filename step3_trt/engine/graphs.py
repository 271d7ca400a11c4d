"""Role graphs: what each engine computes for one layer (or the head pieces), with every weight a
graph input so one compiled graph serves every layer. Built from plain torch ops plus the
`step3::*` plugin ops, which the compiler keeps as opaque nodes.

Tokens are flattened across sequences: T tokens, S sequences, H hidden, Q share_q_dim,
N query heads, D head_dim, K top-k, E local experts, I local expert width, B KV blocks,
P block size, M max blocks per sequence, V vocab.
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import nn

import plugins  # noqa: F401  (registers the step3::* ops)
from plugins._common import quantize_with
from step3_trt.engine.signatures import Fp8Layout


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE in float32; x [..., D], cos/sin broadcastable."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


def linear(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor | None = None,
           x_scale: torch.Tensor | None = None) -> torch.Tensor:
    """x [T, in] @ w [out, in]^T. FP8 weights (with `w_scale`) run the FP8 plugin GEMM on x
    quantized with its static scale `x_scale` [1], or per 1x128 group on the fly without one."""
    if w_scale is None:
        return F.linear(x, w)
    if x_scale is None:
        x_q, x_s = torch.ops.step3.fp8_quantize(x, "group")
    else:
        x_q, x_s = quantize_with(x, x_scale), x_scale
    return torch.ops.step3.fp8_linear(x_q, x_s, w, w_scale).to(x.dtype)


def fp8_scales(layout: Fp8Layout | None, scales: tuple) -> defaultdict:
    """The trailing scale inputs of a graph, by name (`Fp8Layout.unpack`); any name a graph
    without FP8 weights asks for gets (None, None): its linears run in high precision."""
    out = defaultdict(lambda: (None, None))
    if layout is not None:
        out.update(layout.unpack(scales))
    return out


def swiglu(x, w_gate, w_up, w_down, s=((None, None),) * 3):
    """SwiGLU MLP; `s` = (gate, up, down) (weight scale, input scale) pairs for FP8 weights."""
    sg, su, sd = s
    return linear(F.silu(linear(x, w_gate, *sg)) * linear(x, w_up, *su), w_down, *sd)


class Embed(nn.Module):
    def forward(self, ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, table)  # [T] -> [T, H]


class Attention(nn.Module):
    """input_layernorm -> MFA (append K/V to the paged cache, attend) -> o_proj -> residual ->
    post_attention_layernorm. Returns h (the residual stream) and y (the FFN input)."""

    def __init__(self, num_heads: int, head_dim: int, eps: float, decode: bool,
                 fp8: Fp8Layout | None = None):
        super().__init__()
        self.num_heads, self.head_dim, self.eps, self.decode = num_heads, head_dim, eps, decode
        self.fp8 = fp8

    def forward(self, x, positions, k_cache, v_cache, slot_mapping, block_tables, seq_lens,
                cu_seqlens_q, rope_cos, rope_sin,
                w_input_norm, w_q, w_inter_norm, w_wq, w_k, w_v, w_o, w_post_norm, *scales):
        # x [T, H]; positions, slot_mapping [T]; rope_* [max_pos, D]; *_cache [B, P, D];
        # block_tables [S, M]; seq_lens [S] (cached + new); cu_seqlens_q [S + 1]
        # scales (FP8 checkpoints): see Fp8Layout; k/v cache scales [1] for an 8-bit cache
        T = x.shape[0]
        s = fp8_scales(self.fp8, scales)
        k_scale, v_scale = s["kv"]
        a = rms_norm(x, w_input_norm, self.eps)
        q = linear(rms_norm(linear(a, w_q, *s["q_proj"]), w_inter_norm, self.eps), w_wq, *s["wq"])
        q = q.view(T, self.num_heads, self.head_dim)
        cos, sin = rope_cos[positions], rope_sin[positions]  # [T, D] float32
        q = rope(q, cos[:, None], sin[:, None])
        k = rope(linear(a, w_k, *s["k_proj"]), cos, sin)
        v = linear(a, w_v, *s["v_proj"])
        torch.ops.step3.kv_append(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale)
        scale = self.head_dim ** -0.5
        if self.decode:  # one new token per sequence
            o = torch.ops.step3.mfa_decode(q, k_cache, v_cache, block_tables, seq_lens,
                                           k_scale, v_scale, sm_scale=scale)
        else:
            o = torch.ops.step3.mfa_prefill(q, k_cache, v_cache, block_tables, seq_lens,
                                            cu_seqlens_q, k_scale, v_scale, sm_scale=scale)
        h = x + linear(o.reshape(T, -1), w_o, *s["o_proj"])
        return h, rms_norm(h, w_post_norm, self.eps)


class Router(nn.Module):
    """Softmax (float32) over all experts, top-k; renormalised only if the model says so."""

    def __init__(self, top_k: int, renormalize: bool):
        super().__init__()
        self.top_k, self.renormalize = top_k, renormalize

    def forward(self, y: torch.Tensor, w_gate: torch.Tensor):
        probs = F.linear(y, w_gate).float().softmax(dim=-1)
        weights, ids = probs.topk(self.top_k, dim=-1)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights.to(y.dtype), ids.to(torch.int32)  # [T, K], [T, K]


class MoeFfn(nn.Module):
    """This FFN rank's routed experts on the rows it received (placement P2: the shared expert
    is `SwiGluMlp` on the rows assigned to this rank). Expert ids are global; `expert_offset`
    ([] int) maps them to this rank's local experts, and ids outside [0, E) (other ranks' experts,
    or -1) cost nothing."""

    def __init__(self, fp8: Fp8Layout | None = None):
        super().__init__()
        self.fp8 = fp8

    def forward(self, y, topk_weights, topk_ids, expert_offset, w_gate, w_up, w_down, *scales):
        local = topk_ids - expert_offset  # ids outside [0, E) belong to other ranks
        s = fp8_scales(self.fp8, scales)
        return torch.ops.step3.moe_experts(y, local, topk_weights, w_gate, w_up, w_down,
                                           s["gate_proj"][0], s["up_proj"][0],
                                           s["down_proj"][0])  # [T, H]


class SwiGluMlp(nn.Module):
    """A replicated SwiGLU MLP (placement P2) on the rows given to this rank: a dense layer's MLP
    (`ffn_dense`) or a MoE layer's shared expert (`ffn_shared`), whole or this rank's TP slice."""

    def __init__(self, fp8: Fp8Layout | None = None):
        super().__init__()
        self.fp8 = fp8

    def forward(self, y, w_gate, w_up, w_down, *scales):
        s = fp8_scales(self.fp8, scales)
        return swiglu(y, w_gate, w_up, w_down, (s["gate"], s["up"], s["down"]))  # [T, H]


class Head(nn.Module):
    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, w_norm: torch.Tensor, w_lm_head: torch.Tensor):
        return F.linear(rms_norm(x, w_norm, self.eps), w_lm_head).float()  # [S, V]
