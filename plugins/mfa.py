"""MFA attention over a paged KV cache: `step3::mfa_decode`, `step3::mfa_prefill`, `step3::kv_append`.

Step-3's multi-matrix factorization attention has H query heads (64) and ONE shared K/V head of
width D (256). The cache is a pool of fixed-size blocks, one pool for K and one for V:

    k_cache, v_cache   [num_blocks, block_size, D]   bf16 / fp16 / fp32, or float8_e4m3fn
    block_tables       [S, max_blocks] int32          physical block of each logical block
    seq_lens           [S] int32                      tokens cached per sequence (incl. new ones)
    k_scale, v_scale   None | [1] | [num_blocks] f32  dequantization scale (per tensor / block)

Cache token j of sequence s lives at ``cache[block_tables[s, j // block_size], j % block_size]``
and stands for ``cache[...] * scale``. An FP8 value cache stores each block transposed: the
block's ``block_size * D`` bytes hold ``V_block^T`` ([D, block_size], see `fp8_v_blocks`), the
K-major operand FP8 tensor-core products read; its tensor shape stays [num_blocks, block_size,
D], so every cache is allocated alike, and only these three ops read or write its contents.
A query at position p sees cache tokens 0..p:

    out[r, h] = sum_j softmax_j(sm_scale * q[r, h] . K[j]) V[j]      (float32 scores and softmax)

with ``sm_scale = D ** -0.5`` by default. Rows that see no token get zeros.

FP8 caches (op version 2) compute both products in e4m3, as the GPU kernel's tensor cores do:

* Q: each (row, head) vector is quantized to e4m3 with its own scale ``max(amax, 1e-12) / 448``
  (the `fp8_quantize` rule); ``t_j = log2(e) * sm_scale * q_s * k_s(j) * (q_q . k_q[j])``.
* P: with ``m = ceil(max_j t_j) - 8`` (an integer), ``p_j = exp2(t_j - m)`` lies in (0, 256];
  ``out = (sum_j P_j V_j) * v_s / sum_j P_j`` with ``P_j = e4m3(p_j)`` and V's stored e4m3
  values (the weights the product uses sum to one); with per-block V scales
  ``out = (sum_j fp16(p_j * v_s(j)) V_j) / sum_j p_j``, V widened to fp16 (exact).
Because m is an integer, the kernel's per-tile running maxima differ from the reference's row
maximum by whole powers of two, which scale e4m3 values exactly: the kernel rounds the same
P values as this reference (up to e4m3 subnormals, weights below 2^-13 of the row's largest).
"""

from __future__ import annotations

from typing import Optional

import torch

from plugins._common import FP8, FP8_MAX, cdiv, check, use_triton
from plugins.fp8 import fp8_quantize_ref


P_OFFSET = 8  # FP8 P: p = exp2(t - m) with m = ceil(max t) - P_OFFSET, so p <= 2^8 (< 448)
LOG2E = 1.4426950408889634


def fp8_v_blocks(v_cache: torch.Tensor) -> torch.Tensor:
    """An FP8 value cache [NB, BS, D] seen as its stored layout [NB, D, BS] (blocks transposed)."""
    NB, BS, D = v_cache.shape
    return v_cache.view(NB, D, BS)


def _values(cache: torch.Tensor, blocks: torch.Tensor, L: int, transposed: bool) -> torch.Tensor:
    """Stored values of a sequence's first L cache tokens, float32 [L, D] (no scale applied)."""
    x = fp8_v_blocks(cache)[blocks].transpose(1, 2) if transposed else cache[blocks]
    return x.float().reshape(-1, cache.shape[-1])[:L]


def _token_scales(scale: Optional[torch.Tensor], blocks: torch.Tensor, BS: int, L: int,
                  device) -> torch.Tensor:
    """Dequantization scale of each of the first L tokens, float32 [L] (ones without a scale)."""
    if scale is None:
        return torch.ones(L, device=device)
    s = scale.float().reshape(-1)
    s = s.expand(blocks.numel()) if s.numel() == 1 else s[blocks]
    return s.repeat_interleave(BS)[:L]


def attend(q, K, V, ks, vs, visible, fp8: bool, v_per_block: bool,
           sm_scale: float) -> torch.Tensor:
    """The attention math of the module docstring, batched: q [B, n, H, D] (B sequences of n
    query rows), K, V [B, L, D] stored values (float32, FP8 values as stored), ks, vs [B, L]
    token scales, visible [B, n, L]. Returns float32 [B, n, H, D]; rows that see no key get 0."""
    V = torch.where(visible.any(1)[..., None], V, 0.0)  # never-visible slots may hold anything
    if not fp8:
        scores = torch.einsum("bnhd,bld->bnhl", q.float(), K * ks[..., None]) * sm_scale
        scores = scores.masked_fill(~visible[:, :, None, :], float("-inf"))
        p = scores.softmax(-1).nan_to_num(0.0)  # a row with no visible key -> zeros
        return torch.einsum("bnhl,bld->bnhd", p, V * vs[..., None])
    qq, qs = fp8_quantize_ref(q, "token")  # per (row, head) over D: [B, n, H, D], [B, n, H, 1]
    t = torch.einsum("bnhd,bld->bnhl", qq.float(), K) * (qs * (sm_scale * LOG2E)) \
        * ks[:, None, None, :]
    t = t.masked_fill(~visible[:, :, None, :], float("-inf"))
    m = torch.ceil(t.amax(-1, keepdim=True)) - P_OFFSET  # [B, n, H, 1]
    p = torch.exp2(t - torch.where(torch.isfinite(m), m, 0.0))  # a row seeing no key: all 0
    if v_per_block:
        l = p.sum(-1, keepdim=True)
        pv = torch.einsum("bnhl,bld->bnhd",
                          (p * vs[:, None, None, :]).to(torch.float16).float(), V)
    else:
        p8 = p.to(FP8).float()
        l = p8.sum(-1, keepdim=True)
        pv = torch.einsum("bnhl,bld->bnhd", p8, V) * vs[:, :1, None, None]
    return pv / torch.where(l > 0, l, 1.0)


def paged_attention_ref(q, k_cache, v_cache, block_tables, seq_lens, cu_seqlens_q, k_scale, v_scale,
                        sm_scale: float) -> torch.Tensor:
    """Reference: sequence s owns query rows cu[s]:cu[s+1], the last n_s of its seq_lens[s]
    tokens; one sequence at a time (the oracle the kernels are tested against)."""
    out = torch.zeros_like(q)
    BS = k_cache.shape[1]
    fp8 = k_cache.dtype == FP8
    v_per_block = fp8 and v_scale is not None and v_scale.numel() > 1
    cu, lens = cu_seqlens_q.tolist(), seq_lens.tolist()
    for s, L in enumerate(lens):
        a, b = cu[s], cu[s + 1]
        if b <= a or L <= 0:
            continue
        blocks = block_tables[s, :cdiv(L, BS)].long()
        K = _values(k_cache, blocks, L, False)
        V = _values(v_cache, blocks, L, v_cache.dtype == FP8)
        ks = _token_scales(k_scale, blocks, BS, L, q.device)
        vs = _token_scales(v_scale, blocks, BS, L, q.device)
        pos = torch.arange(L - (b - a), L, device=q.device)  # positions of the new tokens
        visible = torch.arange(L, device=q.device)[None, :] <= pos[:, None]  # [n, L]
        out[a:b] = attend(q[None, a:b], K[None], V[None], ks[None], vs[None], visible[None], fp8,
                          v_per_block, sm_scale)[0].to(q.dtype)
    return out


def paged_attention_cpu(q, k_cache, v_cache, block_tables, seq_lens, cu_seqlens_q, k_scale,
                        v_scale, sm_scale: float) -> torch.Tensor:
    """Every sequence at once (the CPU kernel; same math as `paged_attention_ref`): query rows
    padded to [S, n_max, H, D], each sequence's first L_max cache tokens gathered to
    [S, L_max, D], one batched product per stage, rows scattered back."""
    out = torch.zeros_like(q)
    S, BS = seq_lens.shape[0], k_cache.shape[1]
    lens = seq_lens.long()
    cu = cu_seqlens_q.long()
    n = (cu[1:] - cu[:-1]).clamp_min(0) * (lens > 0)  # query rows per sequence
    if S == 0 or int(n.sum()) == 0:
        return out
    n_max, L_max = int(n.max()), int(lens.max())
    nb = cdiv(L_max, BS)
    blocks = block_tables[:, :nb].long().clamp_min(0)  # unused entries (-1) are never visible
    fp8 = k_cache.dtype == FP8
    K = k_cache[blocks].float().reshape(S, nb * BS, -1)[:, :L_max]
    V = (fp8_v_blocks(v_cache)[blocks].transpose(2, 3) if v_cache.dtype == FP8 else
         v_cache[blocks]).float().reshape(S, nb * BS, -1)[:, :L_max]
    ks, vs = (_token_scales_batched(sc, blocks, BS, L_max, q.device) for sc in (k_scale, v_scale))
    i = torch.arange(n_max, device=q.device)
    real = i[None, :] < n[:, None]  # [S, n_max]
    rows = (cu[:-1, None] + i[None, :]).clamp(0, max(q.shape[0] - 1, 0))
    pos = lens[:, None] - n[:, None] + i[None, :]  # [S, n_max]
    visible = (torch.arange(L_max, device=q.device)[None, None, :] <= pos[:, :, None]) \
        & real[:, :, None]
    v_per_block = fp8 and v_scale is not None and v_scale.numel() > 1
    res = attend(q[rows], K, V, ks, vs, visible, fp8, v_per_block, sm_scale)
    out[rows[real]] = res[real].to(q.dtype)
    return out


def _token_scales_batched(scale: Optional[torch.Tensor], blocks: torch.Tensor, BS: int, L: int,
                          device) -> torch.Tensor:
    """`_token_scales` for every sequence of `blocks` [S, nb]: float32 [S, L]."""
    S = blocks.shape[0]
    if scale is None:
        return torch.ones(S, L, device=device)
    s = scale.float().reshape(-1)
    s = s.expand(blocks.shape) if s.numel() == 1 else s[blocks]
    return s.repeat_interleave(BS, dim=1)[:, :L]


def _check_attn(q, k_cache, v_cache, block_tables, seq_lens):
    check(q.dim() == 3, f"MFA attention: q must be [tokens, heads, head_dim], got {tuple(q.shape)}")
    check(k_cache.dim() == 3 and k_cache.shape == v_cache.shape and k_cache.shape[2] == q.shape[2],
          "MFA attention: k_cache/v_cache must be [num_blocks, block_size, head_dim] like q's head_dim")
    check(block_tables.dim() == 2 and seq_lens.dim() == 1 and seq_lens.shape[0] == block_tables.shape[0],
          "MFA attention: block_tables [seqs, max_blocks] and seq_lens [seqs] expected")
    check(k_cache.dtype == v_cache.dtype, "MFA attention: k_cache and v_cache must share a dtype")
    check(v_cache.dtype != FP8 or v_cache.stride()[1:] == (v_cache.shape[2], 1),
          "MFA attention: an FP8 v_cache needs contiguous blocks (each stores V^T, see fp8_v_blocks)")


def kernel_head_dim(D: int) -> bool:
    """Head dims the Triton attention and KV-append kernels take (others run the reference):
    powers of two from 32 (an FP8 tensor-core product needs K >= 32)."""
    return D >= 32 and D & (D - 1) == 0


def _triton_ok(q, k_cache, v_cache) -> bool:
    return (use_triton(q, k_cache, v_cache) and q.dtype in (torch.bfloat16, torch.float16)
            and kernel_head_dim(q.shape[-1]) and k_cache.stride(-1) == 1
            and v_cache.stride(-1) == 1)


def _i32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.int32).contiguous()


@torch.library.custom_op("step3::mfa_decode", mutates_args=())
def mfa_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
               block_tables: torch.Tensor, seq_lens: torch.Tensor,
               k_scale: Optional[torch.Tensor] = None, v_scale: Optional[torch.Tensor] = None,
               sm_scale: Optional[float] = None) -> torch.Tensor:
    """Decode attention: one query token per sequence, ``q [S, H, D] -> out [S, H, D]`` (q.dtype).

    Row s attends to all ``seq_lens[s]`` cached tokens of sequence s (its own new token was
    appended with `kv_append` first). CUDA: split-KV Triton kernel, heads as the tile M dimension
    (each K/V tile loaded once for all heads); otherwise `paged_attention_cpu`.
    """
    _check_attn(q, k_cache, v_cache, block_tables, seq_lens)
    check(q.shape[0] == seq_lens.shape[0], "mfa_decode: one query token per sequence")
    scale = q.shape[-1] ** -0.5 if sm_scale is None else sm_scale
    if _triton_ok(q, k_cache, v_cache):
        from plugins.triton_kernels.mfa import paged_attention
        return paged_attention(q.contiguous(), k_cache, v_cache, _i32(block_tables), scale, k_scale,
                               v_scale, seq_lens=_i32(seq_lens))
    cu = torch.arange(q.shape[0] + 1, device=q.device)
    return paged_attention_cpu(q, k_cache, v_cache, block_tables, seq_lens, cu, k_scale, v_scale,
                               scale)


@mfa_decode.register_fake
def _(q, k_cache, v_cache, block_tables, seq_lens, k_scale=None, v_scale=None, sm_scale=None):
    _check_attn(q, k_cache, v_cache, block_tables, seq_lens)
    return torch.empty_like(q)


@torch.library.custom_op("step3::mfa_prefill", mutates_args=())
def mfa_prefill(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                block_tables: torch.Tensor, seq_lens: torch.Tensor, cu_seqlens_q: torch.Tensor,
                k_scale: Optional[torch.Tensor] = None, v_scale: Optional[torch.Tensor] = None,
                sm_scale: Optional[float] = None) -> torch.Tensor:
    """Causal chunked-prefill attention, varlen: ``q [T, H, D] -> out [T, H, D]`` (q.dtype).

    cu_seqlens_q [S+1] int32: sequence s owns rows cu[s]:cu[s+1], its n_s newest tokens, already
    appended to the cache (seq_lens[s] counts them), so row cu[s]+i sits at position
    p = seq_lens[s] - n_s + i and sees cache tokens 0..p. Rows past cu[S] get zeros.
    CUDA: the decode kernel with one row per token and a per-row causal length; otherwise
    `paged_attention_cpu`.
    """
    _check_attn(q, k_cache, v_cache, block_tables, seq_lens)
    check(cu_seqlens_q.shape == (seq_lens.shape[0] + 1,), "mfa_prefill: cu_seqlens_q must be [seqs + 1]")
    scale = q.shape[-1] ** -0.5 if sm_scale is None else sm_scale
    if _triton_ok(q, k_cache, v_cache):
        from plugins.triton_kernels.mfa import paged_attention
        cu = _i32(cu_seqlens_q)
        tok = torch.arange(q.shape[0], device=q.device, dtype=torch.int32)
        seq = torch.searchsorted(cu[1:].contiguous(), tok, right=True).clamp_max(seq_lens.shape[0] - 1)
        pos = seq_lens.to(torch.int32)[seq] - (cu[seq + 1] - cu[seq]) + (tok - cu[seq])
        row_len = torch.where(tok < cu[-1], pos + 1, 0).clamp_min(0)
        return paged_attention(q.contiguous(), k_cache, v_cache, _i32(block_tables), scale, k_scale,
                               v_scale, row_seq=_i32(seq), row_len=_i32(row_len))
    return paged_attention_cpu(q, k_cache, v_cache, block_tables, seq_lens, cu_seqlens_q, k_scale,
                               v_scale, scale)


@mfa_prefill.register_fake
def _(q, k_cache, v_cache, block_tables, seq_lens, cu_seqlens_q, k_scale=None, v_scale=None,
      sm_scale=None):
    _check_attn(q, k_cache, v_cache, block_tables, seq_lens)
    return torch.empty_like(q)


def kv_append_ref(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale) -> None:
    """cache[slot // bs, slot % bs] = x / scale (clamped to +-448 for FP8; an FP8 V cache
    stores its blocks transposed); negative slots skipped."""
    BS = k_cache.shape[1]
    valid = slot_mapping >= 0
    slots = slot_mapping[valid].long()
    blk, off = slots // BS, slots % BS
    for x, cache, scale, is_v in ((k, k_cache, k_scale, False), (v, v_cache, v_scale, True)):
        val = x[valid].float()
        if scale is not None:
            s = scale.float().reshape(-1)
            val = val / (s if s.numel() == 1 else s[blk][:, None])
        if cache.dtype != FP8:
            cache[blk, off] = val.to(cache.dtype)
        elif is_v:
            fp8_v_blocks(cache)[blk, :, off] = val.clamp(-FP8_MAX, FP8_MAX).to(FP8)
        else:
            cache[blk, off] = val.clamp(-FP8_MAX, FP8_MAX).to(FP8)


@torch.library.custom_op("step3::kv_append", mutates_args=("k_cache", "v_cache"))
def kv_append(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
              slot_mapping: torch.Tensor, k_scale: Optional[torch.Tensor] = None,
              v_scale: Optional[torch.Tensor] = None) -> None:
    """Write new keys/values ``k, v [T, D]`` into the paged cache in place (quantizing for FP8).

    slot_mapping [T] (int32/int64): ``block * block_size + offset``; negative = padding, skipped.
    Scales as in the module docstring (fixed, e.g. calibrated: the cache stores ``x / scale``).
    CUDA: one Triton program per token; CPU: `kv_append_ref`.
    """
    check(k.dim() == 2 and k.shape == v.shape and k.shape[1] == k_cache.shape[2],
          "kv_append: k, v must be [tokens, head_dim] matching the cache")
    check(k_cache.shape == v_cache.shape and k_cache.dtype == v_cache.dtype,
          "kv_append: k_cache and v_cache must share a shape and dtype")
    check(v_cache.dtype != FP8 or v_cache.stride()[1:] == (v_cache.shape[2], 1),
          "kv_append: an FP8 v_cache needs contiguous blocks (each stores V^T, see fp8_v_blocks)")
    if use_triton(k, k_cache) and k.stride(-1) == 1 and v.stride(-1) == 1 \
            and k_cache.stride(-1) == 1 and kernel_head_dim(k.shape[1]):
        from plugins.triton_kernels.kv_append import kv_append as kv_append_gpu
        kv_append_gpu(k, v, k_cache, v_cache, slot_mapping.contiguous(), k_scale, v_scale)
        return
    kv_append_ref(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale)


@kv_append.register_fake
def _(k, v, k_cache, v_cache, slot_mapping, k_scale=None, v_scale=None):
    return None
