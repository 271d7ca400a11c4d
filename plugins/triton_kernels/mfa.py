"""Triton kernels of the MFA attention ops: split-KV paged attention (decode and prefill).

All query heads of a token read the one shared K/V head, so a program takes the token's heads as
the M dimension of its tile products: each K/V tile is loaded once and serves every head
(``S = Q_heads @ K_tile^T``, ``O += P @ V_tile``). The KV range of a row is cut into splits
(flash-decoding) so few long sequences still fill the GPU; a second kernel merges the splits by
their log-sum-exp.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from plugins._common import FP8, cdiv, next_pow2, sm_count
from plugins.mfa import LOG2E, P_OFFSET
from plugins.triton_kernels.timing import time_ms

_P_OFFSET = tl.constexpr(P_OFFSET)


@triton.jit
def _fp8_tile(q, row_scale, m_i, l_i, acc, t0, end, k_ptr, v_ptr, bt_row, ks_ptr, vs_ptr,
              stride_kb, stride_kt, stride_vb, BS: tl.constexpr, D: tl.constexpr,
              BLOCK_N: tl.constexpr, K_SCALE: tl.constexpr, V_SCALE: tl.constexpr,
              MASKED: tl.constexpr, IN_BLOCK: tl.constexpr):
    """One BLOCK_N-token tile of the FP8 path: online-softmax update of (m_i, l_i, acc).

    IN_BLOCK (BS % BLOCK_N == 0): the tile lies in one cache block, so its V^T rows are
    BLOCK_N contiguous bytes (16-byte vector loads straight into shared memory); otherwise each
    token's block is gathered. MASKED: the split's last, partial tile (tokens >= end masked);
    full tiles load unmasked, so the V^T loads keep their width along the token dimension.
    The e4m3 P.V product runs transposed, O^T += V^T P^T (acc [D, BLOCK_H]): both operands come
    from shared memory (V^T as loaded, K-major; P^T stored by the program). The direct form
    P V, with P as the register operand of the FP8 wgmma, gave wrong results on an H200
    (Triton 3.6) where the same code was right in the interpreter and with 16 heads (mma.sync).
    """
    offs_d = tl.arange(0, D)
    t = t0 + tl.arange(0, BLOCK_N)
    t_ok = t < end
    if IN_BLOCK:
        blk = tl.load(bt_row + t0 // BS).to(tl.int64)
        slot = tl.multiple_of(t0 % BS, BLOCK_N) + tl.arange(0, BLOCK_N)
    else:
        blk = tl.load(bt_row + t // BS, mask=t_ok, other=0).to(tl.int64)
        slot = t % BS
    k_rows = blk * stride_kb + slot * stride_kt  # [BLOCK_N]
    v_cols = blk * stride_vb + slot  # [BLOCK_N]: token j, dim d of V^T at + d * BS
    if MASKED:
        k = tl.load(k_ptr + k_rows[:, None] + offs_d[None, :], mask=t_ok[:, None], other=0.0)
        vt = tl.load(v_ptr + v_cols[None, :] + offs_d[:, None] * BS, mask=t_ok[None, :], other=0.0)
    else:
        k = tl.load(k_ptr + k_rows[:, None] + offs_d[None, :])
        vt = tl.load(v_ptr + v_cols[None, :] + offs_d[:, None] * BS)  # [D, BLOCK_N]
    s = tl.dot(q, tl.trans(k)) * row_scale[:, None]  # [BLOCK_H, BLOCK_N] float32, e4m3 operands
    if K_SCALE == 2:
        if IN_BLOCK:
            s = s * tl.load(ks_ptr + blk)
        else:
            s = s * tl.load(ks_ptr + blk, mask=t_ok, other=0.0)[None, :]
    if MASKED:
        s = tl.where(t_ok[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.math.ceil(tl.max(s, 1)) - _P_OFFSET)
    alpha = tl.exp2(m_i - m_new)  # a whole power of two
    p = tl.exp2(s - m_new[:, None])  # (0, 2^P_OFFSET]
    if V_SCALE == 2:
        if IN_BLOCK:
            vs = tl.load(vs_ptr + blk)
        else:
            vs = tl.load(vs_ptr + blk, mask=t_ok, other=0.0)[None, :]
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot((p * vs).to(tl.float16), tl.trans(vt.to(tl.float16)))
    else:  # acc is O^T [D, BLOCK_H]: V^T (shared memory, K-major) x P^T, both e4m3
        p8 = p.to(tl.float8e4nv)
        l_i = l_i * alpha + tl.sum(p8.to(tl.float32), 1)
        acc = acc * alpha[None, :] + tl.dot(vt, tl.trans(p8))
    return m_new, l_i, acc


@triton.jit
def _attn_split_kernel(q_ptr, k_ptr, v_ptr, bt_ptr, seq_ptr, len_ptr, ks_ptr, vs_ptr, o_ptr, lse_ptr,
                       qk_scale, H, min_tokens,
                       stride_qr, stride_qh, stride_kb, stride_kt, stride_vb, stride_vt, stride_bt,
                       stride_or, stride_os, stride_oh, stride_lr, stride_ls,
                       BS: tl.constexpr, D: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr,
                       DECODE: tl.constexpr, K_SCALE: tl.constexpr, V_SCALE: tl.constexpr,
                       ONE_SPLIT: tl.constexpr, FP8: tl.constexpr):
    """Program (row r, split sp): heads of query row r against split sp of its sequence's
    kv_len cache tokens. A row uses min(#programs on axis 1, cdiv(kv_len, min_tokens)) equal
    splits (rounded to BLOCK_N); programs past them write an empty split. The grid is sized for
    the longest possible row, so under a CUDA graph whose block tables are as wide as the
    longest sequence allowed, short rows still spread over the programs instead of leaving one
    busy per row.

    DECODE: row r is sequence r and kv_len = seq_lens[r]; else seq = seq_ptr[r], kv_len = len_ptr[r]
    (causal prefill: position + 1). K_SCALE / V_SCALE: 0 none, 1 per tensor, 2 per cache block.
    ONE_SPLIT: write the normalized output; else the split's normalized output and its
    log2-sum-exp for the merge kernel.
    FP8 (e4m3 caches, plugins/mfa.py's FP8 numerics): q quantized per head row; QK^T and P.V
    as e4m3 tensor-core products (per-block V scales: P.V in fp16); the running max is an
    integer (minus P_OFFSET), so P's e4m3 rounding does not depend on tile or split bounds; V's
    blocks are stored transposed ([D, BS] per block, stride_vt unused); see `_fp8_tile`.
    """
    r = tl.program_id(0)
    sp = tl.program_id(1)
    if DECODE:
        seq = r
        kv_len = tl.load(len_ptr + r)
    else:
        seq = tl.load(seq_ptr + r)
        kv_len = tl.load(len_ptr + r)
    n_split = tl.minimum(tl.num_programs(1), tl.maximum(tl.cdiv(kv_len, min_tokens), 1))
    per_split = tl.cdiv(tl.cdiv(kv_len, n_split), BLOCK_N) * BLOCK_N
    start = sp * per_split
    end = tl.minimum(start + per_split, kv_len)
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, D)
    h_ok = offs_h < H
    q = tl.load(q_ptr + r.to(tl.int64) * stride_qr + offs_h[:, None] * stride_qh + offs_d[None, :],
                mask=h_ok[:, None], other=0.0)
    if K_SCALE == 1:
        k_scalar = tl.load(ks_ptr)
    if V_SCALE == 1:
        v_scalar = tl.load(vs_ptr)
    m_i = tl.full([BLOCK_H], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    if FP8 and V_SCALE != 2:
        acc = tl.zeros([D, BLOCK_H], dtype=tl.float32)  # O^T (see _fp8_tile)
    else:
        acc = tl.zeros([BLOCK_H, D], dtype=tl.float32)
    bt_row = bt_ptr + seq.to(tl.int64) * stride_bt
    if FP8:  # the fp8_quantize rule per head row (IEEE divisions, as the reference)
        qf = q.to(tl.float32)
        q_s = tl.math.div_rn(tl.maximum(tl.max(tl.abs(qf), 1), 1e-12), 448.0)
        q8 = tl.minimum(tl.maximum(tl.math.div_rn(qf, q_s[:, None]), -448.0), 448.0).to(tl.float8e4nv)
        row_scale = q_s * qk_scale
        if K_SCALE == 1:
            row_scale = row_scale * k_scalar
        full_end = start + tl.maximum(end - start, 0) // BLOCK_N * BLOCK_N
        for t0 in range(start, full_end, BLOCK_N):
            m_i, l_i, acc = _fp8_tile(q8, row_scale, m_i, l_i, acc, t0, end, k_ptr, v_ptr, bt_row,
                                      ks_ptr, vs_ptr, stride_kb, stride_kt, stride_vb, BS, D, BLOCK_N,
                                      K_SCALE, V_SCALE, False, BS % BLOCK_N == 0)
        if full_end < end:
            m_i, l_i, acc = _fp8_tile(q8, row_scale, m_i, l_i, acc, full_end, end, k_ptr, v_ptr,
                                      bt_row, ks_ptr, vs_ptr, stride_kb, stride_kt, stride_vb, BS, D,
                                      BLOCK_N, K_SCALE, V_SCALE, True, BS % BLOCK_N == 0)
    else:
        for t0 in range(start, end, BLOCK_N):
            t = t0 + tl.arange(0, BLOCK_N)
            t_ok = t < end
            blk = tl.load(bt_row + t // BS, mask=t_ok, other=0).to(tl.int64)
            slot = t % BS
            k = tl.load(k_ptr + (blk * stride_kb + slot * stride_kt)[:, None] + offs_d[None, :],
                        mask=t_ok[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k.to(q.dtype)))  # [BLOCK_H, BLOCK_N] float32
            if K_SCALE == 1:
                s = s * (k_scalar * qk_scale)
            elif K_SCALE == 2:
                s = s * (tl.load(ks_ptr + blk, mask=t_ok, other=0.0) * qk_scale)[None, :]
            else:
                s = s * qk_scale
            s = tl.where(t_ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_ptr + (blk * stride_vb + slot * stride_vt)[:, None] + offs_d[None, :],
                        mask=t_ok[:, None], other=0.0)
            if V_SCALE == 1:
                p = p * v_scalar
            elif V_SCALE == 2:
                p = p * tl.load(vs_ptr + blk, mask=t_ok, other=0.0)[None, :]
            acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v.to(q.dtype))
            m_i = m_new
    if FP8 and V_SCALE != 2:
        acc = tl.trans(acc)
    has = l_i > 0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    if FP8 and V_SCALE == 1:
        out = out * v_scalar
    o_ptrs = o_ptr + r.to(tl.int64) * stride_or + sp * stride_os + offs_h[:, None] * stride_oh \
        + offs_d[None, :]
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=h_ok[:, None])
    if not ONE_SPLIT:
        lse = tl.where(has, m_i + tl.log2(tl.where(has, l_i, 1.0)), float("-inf"))
        tl.store(lse_ptr + r.to(tl.int64) * stride_lr + sp * stride_ls + offs_h, lse, mask=h_ok)


@triton.jit
def _merge_kernel(po_ptr, lse_ptr, o_ptr, S, stride_pr, stride_ps, stride_ph, stride_lr, stride_ls,
                  stride_or, stride_oh, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr):
    """Program (row, head, d-block): out = sum_s w_s o_s, w_s = 2^(lse_s - max) / sum 2^(lse - max)."""
    r = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    offs_d = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    m = tl.full([BLOCK_S], float("-inf"), dtype=tl.float32)
    for s0 in range(0, S, BLOCK_S):
        ss = s0 + tl.arange(0, BLOCK_S)
        m = tl.maximum(m, tl.load(lse_ptr + r * stride_lr + ss * stride_ls + h, mask=ss < S,
                                  other=float("-inf")))
    m_all = tl.max(m, 0)
    m_all = tl.where(m_all == float("-inf"), 0.0, m_all)
    acc = tl.zeros([BLOCK_D], dtype=tl.float32)
    den = tl.zeros([BLOCK_S], dtype=tl.float32)
    for s0 in range(0, S, BLOCK_S):
        ss = s0 + tl.arange(0, BLOCK_S)
        w = tl.exp2(tl.load(lse_ptr + r * stride_lr + ss * stride_ls + h, mask=ss < S,
                            other=float("-inf")) - m_all)
        po = tl.load(po_ptr + r * stride_pr + ss[:, None] * stride_ps + h * stride_ph + offs_d[None, :],
                     mask=(ss < S)[:, None], other=0.0).to(tl.float32)
        acc += tl.sum(po * w[:, None], 0)
        den += w
    d = tl.sum(den, 0)
    out = acc / tl.where(d > 0, d, 1.0)
    tl.store(o_ptr + r * stride_or + h * stride_oh + offs_d, out.to(o_ptr.dtype.element_ty))


def pick_splits(rows: int, max_ctx: int, block_n: int, programs: int, min_tokens: int = 512) -> int:
    """Tokens per split: about `programs` (row, split) programs (one wave), each >= min_tokens."""
    tiles = max(1, cdiv(max_ctx, block_n))
    want = max(1, programs // max(rows, 1))
    splits = max(1, min(want, tiles // max(1, cdiv(min_tokens, block_n))))
    return cdiv(tiles, splits) * block_n


# (BLOCK_N, num_warps, num_stages, programs per SM). Offline sm_90 compiles (perf/kernels/
# compile_report.py): none spills; the 4-warp ones fit two programs per SM (<= 113 KB shared,
# <= 256 registers x 128 threads).
# FP8 tiles are 32 or 64 tokens wide: the e4m3 P.V product needs K >= 32, and a tile inside one
# 64-token cache block (the GPU configs' block size) reads V^T rows as contiguous vectors; 8 warps
# (4-warp FP8 programs spill 1.4 KB: the [64, 256] float32 accumulator takes 128 registers each).
CONFIGS = {False: [(64, 8, 2, 1), (32, 4, 3, 2), (16, 4, 4, 2), (64, 8, 3, 1)],
           True: [(64, 8, 3, 1), (32, 8, 3, 1), (64, 8, 2, 1)]}
_chosen: dict = {}


def _scale_mode(scale, num_blocks):
    if scale is None:
        return 0, None
    scale = scale.float().contiguous()
    return (1 if scale.numel() == 1 else 2), scale


def _launch(cfg, q, k_cache, v_cache, block_tables, sm_scale, ks, kmode, vs, vmode, lens, row_seq,
            tokens_per_split):
    R, H, D = q.shape
    BS = k_cache.shape[1]
    block_n, warps, stages, per_sm = cfg[:4]
    min_tokens = cfg[4] if len(cfg) > 4 else 512
    max_ctx = block_tables.shape[1] * BS
    tps = tokens_per_split or pick_splits(R, max_ctx, block_n, per_sm * sm_count(q.device.index or 0),
                                          min_tokens)
    tps = cdiv(tps, block_n) * block_n
    splits = cdiv(max_ctx, tps)
    min_tokens = tps if tokens_per_split else min_tokens
    out = torch.empty_like(q)
    one = splits == 1
    if one:
        po, lse = out, out  # lse unused
        so = (out.stride(0), 0, out.stride(1), 0, 0)
    else:
        po = torch.empty((R, splits, H, D), dtype=q.dtype, device=q.device)
        lse = torch.empty((R, splits, H), dtype=torch.float32, device=q.device)
        so = (po.stride(0), po.stride(1), po.stride(2), lse.stride(0), lse.stride(1))
    decode = row_seq is None
    _attn_split_kernel[(R, splits)](
        q, k_cache, v_cache, block_tables, lens if decode else row_seq, lens,
        ks if ks is not None else lens, vs if vs is not None else lens, po, lse,
        sm_scale * LOG2E, H, min_tokens, q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1),
        v_cache.stride(0), v_cache.stride(1), block_tables.stride(0), *so,
        BS=BS, D=D, BLOCK_H=max(16, next_pow2(H)), BLOCK_N=block_n, DECODE=decode, K_SCALE=kmode,
        V_SCALE=vmode, ONE_SPLIT=one, FP8=k_cache.dtype == FP8, num_warps=warps, num_stages=stages)
    if not one:
        block_d = min(D, 64)
        _merge_kernel[(R, H, D // block_d)](po, lse, out, splits, po.stride(0), po.stride(1), po.stride(2),
                                            lse.stride(0), lse.stride(1), out.stride(0), out.stride(1),
                                            BLOCK_D=block_d, BLOCK_S=min(64, next_pow2(splits)), num_warps=4)
    return out


def paged_attention(q, k_cache, v_cache, block_tables, sm_scale, k_scale, v_scale, *, seq_lens=None,
                    row_seq=None, row_len=None, tokens_per_split=None, config=None):
    """q [R, H, D] -> out [R, H, D]. Decode: seq_lens [R]. Prefill: row_seq, row_len [R].

    The tile config is tuned once per (cache dtype, heads, head_dim, block size, kind, rows and
    context buckets): each candidate (CONFIGS x shortest split) is timed on the first eager call of that key (never
    during CUDA-graph capture, nor with STEP3_MFA_TUNE=0: then the first candidate that compiles).
    """
    R, H, D = q.shape
    if R == 0:
        return torch.empty_like(q)
    lens = seq_lens if row_seq is None else row_len
    kmode, ks = _scale_mode(k_scale, k_cache.shape[0])
    vmode, vs = _scale_mode(v_scale, k_cache.shape[0])
    fp8 = k_cache.dtype == FP8
    args = (q, k_cache, v_cache, block_tables, sm_scale, ks, kmode, vs, vmode, lens, row_seq, tokens_per_split)
    if config is not None:
        return _launch(config, *args)
    key = (fp8, H, D, k_cache.shape[1], row_seq is None, min(next_pow2(R), 512),
           min(next_pow2(block_tables.shape[1] * k_cache.shape[1]), 1 << 17), tokens_per_split)
    if key in _chosen:
        return _launch(_chosen[key], *args)
    tune = q.is_cuda and not torch.cuda.is_current_stream_capturing() \
        and os.environ.get("STEP3_MFA_TUNE", "1") != "0"
    best, best_ms = None, float("inf")
    # candidates: tile config x shortest split (128 tokens: more parallelism for short or few
    # sequences; 512: less partial-output traffic)
    for cfg in [c + (m,) for m in (512, 128) for c in CONFIGS[fp8]]:
        try:
            out = _launch(cfg, *args)
        except triton.runtime.errors.OutOfResources:
            continue
        if not tune:
            return out
        ms = time_ms(lambda: _launch(cfg, *args))
        if ms < best_ms:
            best, best_ms = cfg, ms
    if best is None:
        raise RuntimeError("mfa attention: no kernel configuration fits this GPU")
    _chosen[key] = best
    return _launch(best, *args)
