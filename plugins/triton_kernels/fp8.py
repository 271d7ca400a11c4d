"""Triton kernels of `step3::fp8_quantize` (row / group / tensor) and `step3::fp8_linear`."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from plugins._common import FP8, GROUP, cdiv, next_pow2, scale_of


@triton.jit
def _quant_kernel(x_ptr, q_ptr, s_ptr, K, stride_x, stride_q, stride_s, group,
                  BLOCK: tl.constexpr, STATIC: tl.constexpr):
    """Program (row, g) quantizes x[row, g*group : (g+1)*group] with one scale."""
    row = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1)
    lo = g * group
    hi = tl.minimum(lo + group, K)
    if STATIC:
        scale = tl.load(s_ptr)
    else:
        amax = tl.zeros([BLOCK], dtype=tl.float32)
        for k0 in range(lo, hi, BLOCK):
            offs = k0 + tl.arange(0, BLOCK)
            x = tl.load(x_ptr + row * stride_x + offs, mask=offs < hi, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.abs(x))
        scale = tl.math.div_rn(tl.maximum(tl.max(amax, 0), 1e-12), 448.0)
        tl.store(s_ptr + row * stride_s + g, scale)
    for k0 in range(lo, hi, BLOCK):
        offs = k0 + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * stride_x + offs, mask=offs < hi, other=0.0).to(tl.float32)
        v = tl.minimum(tl.maximum(tl.math.div_rn(x, scale), -448.0), 448.0)
        tl.store(q_ptr + row * stride_q + offs, v.to(q_ptr.dtype.element_ty), mask=offs < hi)


@triton.jit
def quantize_groups(x, n_ok):
    """[R, 128] float32 tile, one 1x128 group per row (columns past n_ok ignored) ->
    (FP8 values, float32 scales [R]): the `fp8_quantize` group rule, IEEE division."""
    amax = tl.max(tl.where(n_ok, tl.abs(x), 0.0), 1)
    scale = tl.math.div_rn(tl.maximum(amax, 1e-12), 448.0)
    v = tl.minimum(tl.maximum(tl.math.div_rn(x, scale[:, None]), -448.0), 448.0)
    return v.to(tl.float8e4nv), scale


@triton.jit
def _group_quant_kernel(x_ptr, q_ptr, s_ptr, K, G, stride_x, stride_q, stride_s,
                        GPB: tl.constexpr, GROUP_SIZE: tl.constexpr):
    """Program (row, b) quantizes groups b*GPB .. b*GPB+GPB-1 of one row, a [GPB, 128] tile."""
    row = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1) * GPB + tl.arange(0, GPB)
    offs = g[:, None] * GROUP_SIZE + tl.arange(0, GROUP_SIZE)[None, :]
    ok = (g[:, None] < G) & (offs < K)
    x = tl.load(x_ptr + row * stride_x + offs, mask=ok, other=0.0).to(tl.float32)
    q, scale = quantize_groups(x, ok)
    tl.store(s_ptr + row * stride_s + g, scale, mask=g < G)
    tl.store(q_ptr + row * stride_q + offs, q, mask=ok)


def quantize_rows(x: torch.Tensor, granularity: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., K] -> (q fp8 like x, scale) for granularity tensor | token | group."""
    shape, K = x.shape, x.shape[-1]
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    R = x2.shape[0]
    q = torch.empty((R, K), dtype=FP8, device=x.device)
    if granularity == "tensor":
        s = scale_of(x, x.abs().amax().reshape(1))
        group, static, scale_shape = K, True, [1]
    elif granularity == "token":
        s = torch.empty((R, 1), dtype=torch.float32, device=x.device)
        group, static, scale_shape = K, False, [*shape[:-1], 1]
    else:
        s = torch.empty((R, cdiv(K, GROUP)), dtype=torch.float32, device=x.device)
        group, static, scale_shape = GROUP, False, [*shape[:-1], cdiv(K, GROUP)]
    block = min(1024, next_pow2(group))
    if R > 0 and granularity == "group":  # [16 groups, 128] tiles: 2K elements per program
        G = cdiv(K, GROUP)
        _group_quant_kernel[(R, cdiv(G, 16))](x2, q, s, K, G, x2.stride(0), q.stride(0),
                                              s.stride(0), GPB=16, GROUP_SIZE=GROUP, num_warps=4)
    elif R > 0:
        _quant_kernel[(R, cdiv(K, group))](x2, q, s, K, x2.stride(0), q.stride(0), s.stride(0),
                                           group, BLOCK=block, STATIC=static, num_warps=4)
    return q.reshape(shape), s.reshape(scale_shape)


@triton.jit
def _fp8_gemm_kernel(x_ptr, xs_ptr, w_ptr, ws_ptr, y_ptr, M, N, K, GK,
                     stride_xm, stride_wn, stride_ym, stride_xsm,
                     W_BLOCK: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
                     GROUP_M: tl.constexpr):
    """y = sum over 128-wide K slices kg of dot(x_q, w_q^T) * xs[:, kg] (* ws[n-block, kg]).

    xs [M, GK] (one scale per row and K slice); ws [N] per channel, applied in the epilogue,
    or [ceil(N/128), GK] per 128x128 block (BN divides 128, so a tile sits in one block row).
    """
    pid = tl.program_id(0)
    num_m, num_n = tl.cdiv(M, BM), tl.cdiv(N, BN)
    group = GROUP_M * num_n  # grouped launch order: neighbouring programs share weight tiles
    first_m = (pid // group) * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % size_m
    pid_n = (pid % group) // size_m
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    m_ok, n_ok = offs_m < M, offs_n < N
    x_rows = x_ptr + offs_m.to(tl.int64)[:, None] * stride_xm
    w_cols = w_ptr + offs_n.to(tl.int64)[None, :] * stride_wn
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for kg in range(0, GK):
        k = kg * BK + offs_k
        a = tl.load(x_rows + k[None, :], mask=m_ok[:, None] & (k[None, :] < K), other=0.0)
        b = tl.load(w_cols + k[:, None], mask=n_ok[None, :] & (k[:, None] < K), other=0.0)
        xs = tl.load(xs_ptr + offs_m * stride_xsm + kg, mask=m_ok, other=0.0)
        if W_BLOCK:
            ws = tl.load(ws_ptr + ((pid_n * BN) // 128) * GK + kg)
            acc += tl.dot(a, b) * (xs[:, None] * ws)
        else:
            acc += tl.dot(a, b) * xs[:, None]
    if not W_BLOCK:
        acc = acc * tl.load(ws_ptr + offs_n, mask=n_ok, other=0.0)[None, :]
    y_ptrs = y_ptr + offs_m.to(tl.int64)[:, None] * stride_ym + offs_n[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


def _rowwise(s: torch.Tensor, rows: int) -> torch.Tensor | None:
    """A tensor ([1]) or row ([rows, 1]) scale as float32 [rows, 1]; None for other layouts."""
    if s.numel() == 1:
        return s.float().reshape(1, 1).expand(rows, 1).contiguous()
    if tuple(s.shape) == (rows, 1):
        return s.float().contiguous()
    return None


def linear(x_q, x_scale, w_q, w_scale) -> torch.Tensor:
    M, K = x_q.shape
    N = w_q.shape[0]
    xs_row, ws_row = _rowwise(x_scale, M), _rowwise(w_scale, N)
    if xs_row is not None and ws_row is not None and K % 16 == 0 and N % 16 == 0:
        # cuBLASLt FP8 GEMM; row-wise scaling: scale_a [M, 1], scale_b [1, N]
        return torch._scaled_mm(x_q.contiguous(), w_q.contiguous().t(), scale_a=xs_row,
                                scale_b=ws_row.reshape(1, N), out_dtype=torch.bfloat16)
    GK = cdiv(K, GROUP)
    xs = xs_row.expand(M, GK).contiguous() if xs_row is not None else x_scale.float().contiguous()
    w_block = ws_row is None
    ws = w_scale.float().contiguous() if w_block else ws_row.reshape(N)
    x_q, w_q = x_q.contiguous(), w_q.contiguous()
    y = torch.empty((M, N), dtype=torch.bfloat16, device=x_q.device)
    BM = 64 if M <= 64 else 128
    BN = 64 if M <= 64 else 128
    grid = (cdiv(M, BM) * cdiv(N, BN),)
    _fp8_gemm_kernel[grid](x_q, xs, w_q, ws, y, M, N, K, GK, x_q.stride(0), w_q.stride(0),
                           y.stride(0), xs.stride(0), W_BLOCK=w_block, BM=BM, BN=BN, BK=GROUP,
                           GROUP_M=8, num_warps=8 if BM == 128 else 4, num_stages=4)
    return y
