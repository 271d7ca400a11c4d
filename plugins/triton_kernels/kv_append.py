"""Triton kernel of `step3::kv_append`: write new K/V rows into the paged cache (FP8: quantize)."""

from __future__ import annotations

import triton
import triton.language as tl

from plugins._common import FP8
from plugins.triton_kernels.mfa import _scale_mode


@triton.jit
def _kv_append_kernel(k_ptr, v_ptr, kc_ptr, vc_ptr, slot_ptr, ks_ptr, vs_ptr, stride_k, stride_v,
                      stride_kb, stride_kt, stride_vb, stride_vt,
                      BS: tl.constexpr, D: tl.constexpr, SCALE: tl.constexpr, QUANT: tl.constexpr):
    """Program t writes k[t], v[t] into cache slot slot[t] (skipped when negative). QUANT (FP8
    caches): clamp to +-448, and V goes to its block's transposed layout (d * BS + offset)."""
    t = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot >= 0:
        blk = slot // BS
        off = slot % BS
        d = tl.arange(0, D)
        k = tl.load(k_ptr + t * stride_k + d).to(tl.float32)
        v = tl.load(v_ptr + t * stride_v + d).to(tl.float32)
        if SCALE == 1:
            k = tl.math.div_rn(k, tl.load(ks_ptr))
            v = tl.math.div_rn(v, tl.load(vs_ptr))
        elif SCALE == 2:
            k = tl.math.div_rn(k, tl.load(ks_ptr + blk))
            v = tl.math.div_rn(v, tl.load(vs_ptr + blk))
        if QUANT:
            k = tl.minimum(tl.maximum(k, -448.0), 448.0)
            v = tl.minimum(tl.maximum(v, -448.0), 448.0)
        tl.store(kc_ptr + blk * stride_kb + off * stride_kt + d, k.to(kc_ptr.dtype.element_ty))
        if QUANT:
            tl.store(vc_ptr + blk * stride_vb + d * BS + off, v.to(vc_ptr.dtype.element_ty))
        else:
            tl.store(vc_ptr + blk * stride_vb + off * stride_vt + d, v.to(vc_ptr.dtype.element_ty))


def kv_append(k, v, k_cache, v_cache, slot_mapping, k_scale, v_scale) -> None:
    T, D = k.shape
    if T == 0:
        return
    NB, BS, _ = k_cache.shape
    quant = k_cache.dtype == FP8
    mode, ks = _scale_mode(k_scale, NB)
    vmode, vs = _scale_mode(v_scale, NB)
    assert mode == vmode, "kv_append: k_scale and v_scale must have the same layout"
    _kv_append_kernel[(T,)](k, v, k_cache, v_cache, slot_mapping, ks if ks is not None else k,
                            vs if vs is not None else v, k.stride(0), v.stride(0), k_cache.stride(0),
                            k_cache.stride(1), v_cache.stride(0), v_cache.stride(1), BS=BS, D=D,
                            SCALE=mode, QUANT=quant, num_warps=4 if D >= 256 else 1)
