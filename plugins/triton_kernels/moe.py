"""Triton kernels of `step3::moe_experts`: token-sorted grouped SwiGLU GEMMs, BF16 or FP8.

1. Routing (torch ops, no host sync; a counting sort): the M*K (token, slot) assignments are sorted by local
   expert; each expert's run is padded to a multiple of BM rows, so every BM-row block belongs to
   one expert (`block_expert`; blocks past the last used one exit at once, experts with no tokens
   own no block). Assignments of experts this rank does not own are dropped.
2. `_moe_up_kernel`: h = silu(x Wg^T) * (x Wu^T) for a BM x BN tile (gate and up share the
   gathered x tile), rounded to x.dtype, one row per sorted assignment; FP8: the tile is 128
   wide, so each of its rows is one 1x128 group of h, quantized in the epilogue with the
   `fp8_quantize` rule (the same bits as quantizing the stored h afterwards).
3. `_moe_down_kernel`: y = (h Wd^T) * routing weight, one float32 row per sorted assignment.
4. `_moe_sum_kernel`: out[m] = sum over token m's owned slots of its y rows (float32, slot
   order), written once in x.dtype; tokens with no owned slot get zeros. (No float32 zero-fill
   of [M, Hd], no atomics, no conversion pass: only the owned assignments' rows are touched.)
FP8 weights use FP8 `tl.dot` over 128-wide K slices, scaled per slice by the activation group
scale (and the 128x128 weight block scale), or by a per-channel weight scale in the epilogue.
Tile configs (`CONFIGS`: BM, warps, stages) are tuned per shape bucket on the first eager call.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from plugins._common import FP8, GROUP, cdiv, next_pow2
from plugins.triton_kernels.fp8 import quantize_groups, quantize_rows
from plugins.triton_kernels.timing import time_ms


@triton.jit
def _scaled_dot(acc, a, b, xs, s_ptr, kg, FP8_W: tl.constexpr, W_BLOCK: tl.constexpr,
                IMPRECISE: tl.constexpr):
    """FP8: acc += dot(a, b) * scales, promoted to float32 every 128-wide K slice (IMPRECISE:
    None = the tensor cores' fast FP8 accumulation inside the slice, 32 = add each k32 step in fp32)."""
    if FP8_W:
        if W_BLOCK:
            acc += tl.dot(a, b, max_num_imprecise_acc=IMPRECISE) * (xs[:, None] * tl.load(s_ptr + kg))
        else:
            acc += tl.dot(a, b, max_num_imprecise_acc=IMPRECISE) * xs[:, None]
    else:
        acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def _moe_up_kernel(x_ptr, xs_ptr, wg_ptr, wu_ptr, sg_ptr, su_ptr, h_ptr, hs_ptr, sorted_ptr,
                   bexp_ptr, A, TOPK, E, I, HD, stride_x, stride_xs, stride_we, stride_wn,
                   stride_se, stride_sn, stride_h, stride_hs,
                   FP8_W: tl.constexpr, W_BLOCK: tl.constexpr, IMPRECISE: tl.constexpr,
                   H_DTYPE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_b = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(bexp_ptr + pid_b)
    if e < E:
        rows = pid_b * BM + tl.arange(0, BM)
        a_id = tl.load(sorted_ptr + rows)
        row_ok = a_id < A
        tok = (a_id // TOPK).to(tl.int64)
        offs_n = pid_n * BN + tl.arange(0, BN)
        n_ok = offs_n < I
        offs_k = tl.arange(0, BK)
        e64 = e.to(tl.int64)
        x_rows = x_ptr + tok[:, None] * stride_x
        w_off = e64 * stride_we + offs_n[None, :].to(tl.int64) * stride_wn
        s_off = e64 * stride_se + ((pid_n * BN) // 128) * stride_sn  # block scale row of this tile
        acc_g = tl.zeros([BM, BN], dtype=tl.float32)
        acc_u = tl.zeros([BM, BN], dtype=tl.float32)
        xs = tl.zeros([BM], dtype=tl.float32)
        for kg in range(0, tl.cdiv(HD, BK)):
            k = kg * BK + offs_k
            a = tl.load(x_rows + k[None, :], mask=row_ok[:, None] & (k[None, :] < HD), other=0.0)
            w_mask = n_ok[None, :] & (k[:, None] < HD)
            if FP8_W:
                xs = tl.load(xs_ptr + tok * stride_xs + kg, mask=row_ok, other=0.0)
            bg = tl.load(wg_ptr + w_off + k[:, None], mask=w_mask, other=0.0)
            acc_g = _scaled_dot(acc_g, a, bg, xs, sg_ptr + s_off, kg, FP8_W, W_BLOCK, IMPRECISE)
            bu = tl.load(wu_ptr + w_off + k[:, None], mask=w_mask, other=0.0)
            acc_u = _scaled_dot(acc_u, a, bu, xs, su_ptr + s_off, kg, FP8_W, W_BLOCK, IMPRECISE)
        if FP8_W and not W_BLOCK:  # per-channel weight scales [E, I]
            acc_g = acc_g * tl.load(sg_ptr + e64 * stride_se + offs_n, mask=n_ok, other=0.0)[None, :]
            acc_u = acc_u * tl.load(su_ptr + e64 * stride_se + offs_n, mask=n_ok, other=0.0)[None, :]
        h = (acc_g * tl.sigmoid(acc_g) * acc_u).to(H_DTYPE)  # the reference rounds h to x.dtype
        h_ptrs = h_ptr + rows.to(tl.int64)[:, None] * stride_h + offs_n[None, :]
        if FP8_W:  # BN == 128: the tile's row is one 1x128 group of h, quantized here
            q, scale = quantize_groups(h.to(tl.float32), n_ok[None, :])
            tl.store(h_ptrs, q, mask=n_ok[None, :])
            tl.store(hs_ptr + rows.to(tl.int64) * stride_hs + pid_n, scale)
        else:
            tl.store(h_ptrs, h, mask=n_ok[None, :])


@triton.jit
def _moe_down_kernel(h_ptr, hs_ptr, wd_ptr, sd_ptr, tw_ptr, y_ptr, sorted_ptr, bexp_ptr,
                     A, E, I, HD, stride_h, stride_hs, stride_we, stride_wn,
                     stride_se, stride_sn, stride_y,
                     FP8_W: tl.constexpr, W_BLOCK: tl.constexpr, IMPRECISE: tl.constexpr,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pid_b = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(bexp_ptr + pid_b)
    if e < E:
        rows = pid_b * BM + tl.arange(0, BM)
        a_id = tl.load(sorted_ptr + rows)
        row_ok = a_id < A
        offs_n = pid_n * BN + tl.arange(0, BN)
        n_ok = offs_n < HD
        offs_k = tl.arange(0, BK)
        e64 = e.to(tl.int64)
        h_rows = h_ptr + rows.to(tl.int64)[:, None] * stride_h
        w_off = e64 * stride_we + offs_n[None, :].to(tl.int64) * stride_wn
        s_off = e64 * stride_se + ((pid_n * BN) // 128) * stride_sn
        acc = tl.zeros([BM, BN], dtype=tl.float32)
        hs = tl.zeros([BM], dtype=tl.float32)
        for kg in range(0, tl.cdiv(I, BK)):
            k = kg * BK + offs_k
            a = tl.load(h_rows + k[None, :], mask=k[None, :] < I, other=0.0)
            if FP8_W:
                hs = tl.load(hs_ptr + rows.to(tl.int64) * stride_hs + kg)
            b = tl.load(wd_ptr + w_off + k[:, None], mask=n_ok[None, :] & (k[:, None] < I), other=0.0)
            acc = _scaled_dot(acc, a, b, hs, sd_ptr + s_off, kg, FP8_W, W_BLOCK, IMPRECISE)
        if FP8_W and not W_BLOCK:
            acc = acc * tl.load(sd_ptr + e64 * stride_se + offs_n, mask=n_ok, other=0.0)[None, :]
        tw = tl.load(tw_ptr + a_id, mask=row_ok, other=0.0).to(tl.float32)
        acc = acc * tw[:, None]
        tl.store(y_ptr + rows.to(tl.int64)[:, None] * stride_y + offs_n[None, :], acc,
                 mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _moe_sum_kernel(y_ptr, row_ptr, out_ptr, HD, stride_y, stride_o, TOPK: tl.constexpr,
                    BLOCK: tl.constexpr):
    """Program (token m, column block): out[m] = sum_k y[row[m, k]] over owned slots (row >= 0)."""
    m = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < HD
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for k in tl.static_range(TOPK):
        row = tl.load(row_ptr + m * TOPK + k)
        if row >= 0:
            acc += tl.load(y_ptr + row.to(tl.int64) * stride_y + offs, mask=ok, other=0.0)
    tl.store(out_ptr + m * stride_o + offs, acc.to(out_ptr.dtype.element_ty), mask=ok)


_TL_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def route(ids: torch.Tensor, num_local: int, offset: int, BM: int):
    """Sorted, BM-padded assignment order -> (sorted_ids [rows], block_expert [blocks],
    row_of [A]).

    sorted_ids holds assignment indices m*K+k (A = M*K marks padding); block_expert[b] is the
    local expert of rows b*BM..(b+1)*BM-1, or E for unused blocks; row_of[a] is the sorted row
    of assignment a, or -1 where another rank owns its expert.
    """
    E, A, dev = num_local, ids.numel(), ids.device
    local = ids.reshape(-1).long() - offset
    local = torch.where((local >= 0) & (local < E), local, E)
    # counting sort (E + 1 buckets, stable): an assignment's rank among its expert's is the
    # running count of its row of the [E + 1, A] one-hot matrix (a scan along the contiguous
    # dimension: one pass per bucket, not one thread per column); cheaper than a radix sort
    onehot = (local[None, :] == torch.arange(E + 1, device=dev)[:, None]).int()
    counts = onehot.sum(1)
    rank = onehot.cumsum(1).gather(0, local[None, :]).squeeze(0) - 1
    blocks = (counts[:E] + BM - 1) // BM
    pad_start = (torch.cumsum(blocks, 0) - blocks) * BM
    max_blocks = cdiv(A, BM) + E
    dest = torch.where(local < E, pad_start[local.clamp_max(E - 1)] + rank, max_blocks * BM)
    sorted_ids = torch.full((max_blocks * BM + 1,), A, dtype=torch.int32, device=dev)
    sorted_ids.scatter_(0, dest, torch.arange(A, dtype=torch.int32, device=dev))
    block_end = torch.cumsum(blocks, 0)
    block_expert = torch.searchsorted(block_end, torch.arange(max_blocks, device=dev), right=True)
    row_of = torch.where(local < E, dest, -1).to(torch.int32)
    return sorted_ids[:-1], block_expert.to(torch.int32), row_of


def _wscale(s, E, out):
    """Weight scale -> (tensor, is_block): [E] -> per-channel [E, out]; [E, out]; [E, GO, GI]."""
    s = s.float()
    if s.dim() == 1:
        s = s[:, None].expand(E, out)
    return s.contiguous(), s.dim() == 3


# (BM, num_warps, num_stages): the tuning candidates, first = the untuned default (one 8-warp
# program per SM, 160 KB of FP8 buffers); BM < 64 runs mma.sync instead of wgmma (fewer padding
# rows when an expert gets few tokens) and fits two 4-warp programs per SM (<= 108 KB shared).
# Offline sm_90 compiles: perf/kernels/compile_report.py; measured picks: docs/plugins-perf.md.
CONFIGS = [(64, 8, 4), (64, 8, 3), (64, 4, 3), (32, 4, 4), (16, 4, 4), (128, 8, 3)]
_chosen: dict = {}


def _launch(cfg, x, ids, tw, wg, wu, wd, sg, su, sd, offset, imprecise):
    BM, warps, stages = cfg
    M, HD = x.shape
    E, I, _ = wg.shape
    K = ids.shape[1]
    A = M * K
    fp8 = wg.dtype == FP8
    sorted_ids, bexp, row_of = route(ids, E, offset, BM)
    nblk = bexp.shape[0]
    if fp8:
        xq, xs = quantize_rows(x, "group")
        (sg, blk), (su, _), (sd, _) = _wscale(sg, E, I), _wscale(su, E, I), _wscale(sd, E, HD)
        BK = GROUP
    else:
        xq, xs, blk = x, x, False
        sg = su = sd = x
        BK = 64
    # FP8: up tiles are one 128-group wide, so the up kernel quantizes h itself
    BN1 = GROUP if fp8 else (64 if BM == 128 else 128)
    rows = nblk * BM
    h = torch.empty((rows, I), dtype=FP8 if fp8 else x.dtype, device=x.device)
    hs = torch.empty((rows, cdiv(I, GROUP)), dtype=torch.float32, device=x.device) if fp8 else h
    _moe_up_kernel[(nblk, cdiv(I, BN1))](
        xq, xs, wg, wu, sg, su, h, hs, sorted_ids, bexp, A, K, E, I, HD,
        xq.stride(0), xs.stride(0), wg.stride(0), wg.stride(1),
        sg.stride(0), sg.stride(1) if sg.dim() > 1 else 0, h.stride(0), hs.stride(0),
        FP8_W=fp8, W_BLOCK=blk, IMPRECISE=imprecise, H_DTYPE=_TL_DTYPES[x.dtype], BM=BM, BN=BN1,
        BK=BK, num_warps=warps, num_stages=stages)
    y = torch.empty((rows, HD), dtype=torch.float32, device=x.device)
    BN2 = 128
    _moe_down_kernel[(nblk, cdiv(HD, BN2))](
        h, hs, wd, sd, tw, y, sorted_ids, bexp, A, E, I, HD,
        h.stride(0), hs.stride(0), wd.stride(0), wd.stride(1),
        sd.stride(0), sd.stride(1) if sd.dim() > 1 else 0, y.stride(0),
        FP8_W=fp8, W_BLOCK=blk, IMPRECISE=imprecise, BM=BM, BN=BN2, BK=BK, num_warps=warps,
        num_stages=stages)
    out = torch.empty_like(x)
    block = 1024
    _moe_sum_kernel[(M, cdiv(HD, block))](y, row_of, out, HD, y.stride(0), out.stride(0), TOPK=K,
                                          BLOCK=block, num_warps=4)
    return out


def moe_experts(x, ids, tw, wg, wu, wd, sg, su, sd, offset, config=None, imprecise=None):
    """x [M, Hd] -> out [M, Hd] (x.dtype). `config` (BM, warps, stages) forces a tile config;
    otherwise the one tuned for this shape bucket (each candidate timed on the first eager CUDA
    call of the bucket; during CUDA-graph capture, before any eager call: CONFIGS[0])."""
    x, tw = x.contiguous(), tw.contiguous()
    args = (x, ids, tw, wg, wu, wd, sg, su, sd, offset, imprecise)
    if config is not None:
        return _launch(config, *args)
    E, I, HD = wg.shape
    key = (wg.dtype, None if sg is None else sg.dim(), E, I, HD, ids.shape[1],
           min(next_pow2(x.shape[0]), 1 << 14), imprecise)
    if key in _chosen:
        return _launch(_chosen[key], *args)
    if not x.is_cuda or torch.cuda.is_current_stream_capturing():
        return _launch(CONFIGS[0], *args)
    best, best_ms = None, float("inf")
    for cfg in CONFIGS:
        try:
            _launch(cfg, *args)
        except triton.runtime.errors.OutOfResources:
            continue
        ms = time_ms(lambda: _launch(cfg, *args))
        if ms < best_ms:
            best, best_ms = cfg, ms
    if best is None:
        raise RuntimeError("moe_experts: no kernel configuration fits this GPU")
    _chosen[key] = best
    return _launch(best, *args)
