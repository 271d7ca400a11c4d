"""CPU tests of the reference ops against straightforward dense formulas (float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from plugins._common import FP8
from plugins.fp8 import expand_scale, fp8_dequantize_ref, fp8_quantize_ref
from tests.plugins.plugin_cases import expert_weights, logical_v, paged_cache, rel_err, routing

# Tolerances: the dense formulas run in float64; the references in float32 with outputs rounded
# to bf16 (relative step 2^-8), so ~4e-3 relative-norm error is rounding; 1e-2 leaves margin.
BF16_TOL = 1e-2
# FP8 caches (op version 2) also round Q (per head row) and P to e4m3 (relative step 2^-3):
# against float64 attention over the dequantized cache that measured 1.3e-3 (one token: P's
# rounding cancels in the normalization) to 4.4e-3..4.4e-2 (7..3000 random tokens, heads 5 x 24
# and 64 x 256, 16 draws); Q's rounding is most of it (fp16 P, per-block V scales: <= 2.9e-2).
FP8_ATTN_TOL = 6e-2


def _dense_keys(cache, bt_row, L, scale):
    """Token-by-token gather of one sequence's cache (float64) -- no block-level indexing."""
    BS = cache.shape[1]
    rows = []
    for j in range(L):
        blk = int(bt_row[j // BS])
        s = 1.0 if scale is None else float(scale.reshape(-1)[0 if scale.numel() == 1 else blk])
        rows.append(cache[blk, j % BS].double() * s)
    return torch.stack(rows) if rows else torch.zeros(0, cache.shape[2], dtype=torch.float64)


def _dense_attention(q, K, V, first_pos):
    """q [n, H, D] at positions first_pos.. against K, V [L, D]: causal softmax attention."""
    D = q.shape[-1]
    out = torch.zeros(q.shape, dtype=torch.float64)
    for i in range(q.shape[0]):
        p = first_pos + i
        if p < 0 or K.shape[0] == 0:
            continue
        s = q[i].double() @ K[:p + 1].T * D ** -0.5  # [H, p+1]
        out[i] = s.softmax(-1) @ V[:p + 1]
    return out


@pytest.mark.parametrize("cache_dtype,scale_mode", [(torch.bfloat16, None), (torch.float32, "tensor"),
                                                    (FP8, "tensor"), (FP8, "block")])
def test_mfa_decode_ref_matches_dense(cache_dtype, scale_mode):
    gen = torch.Generator().manual_seed(1)
    lens, BS, H, D = [1, 7, 8, 9, 33, 0], 8, 5, 24
    kc, vc, bt, ks, vs = paged_cache(lens, BS, D, cache_dtype, scale_mode, gen=gen)
    q = torch.randn(len(lens), H, D, generator=gen).bfloat16()
    out = torch.ops.step3.mfa_decode(q, kc, vc, bt, torch.tensor(lens, dtype=torch.int32), ks, vs)
    assert out.shape == q.shape and out.dtype == q.dtype
    for s, L in enumerate(lens):
        K, V = _dense_keys(kc, bt[s], L, ks), _dense_keys(logical_v(vc), bt[s], L, vs)
        ref = _dense_attention(q[s:s + 1], K, V, L - 1)
        if L == 0:
            assert torch.equal(out[s], torch.zeros_like(out[s]))
        else:
            assert rel_err(out[s:s + 1], ref) < (FP8_ATTN_TOL if cache_dtype == FP8 else BF16_TOL), s


def _fp8_formula(q, K, V, k_s, v_s, v_per_block):
    """plugins/mfa.py's FP8 numerics for one query row, head by head in float64. q [H, D];
    K, V [L, D] stored e4m3 values; k_s, v_s [L] token scales."""
    out = torch.zeros(q.shape, dtype=torch.float64)
    D = q.shape[-1]
    for h in range(q.shape[0]):
        qs = max(q[h].float().abs().max().item(), 1e-12) / 448
        qq = (q[h].float() / qs).clamp(-448, 448).to(FP8).double()
        t = (K.double() @ qq) * qs * k_s.double() * D ** -0.5 / math.log(2)
        p = torch.exp2(t - (math.ceil(t.max().item()) - 8))
        if v_per_block:
            w, den = (p * v_s.double()).to(torch.float16).double(), p.sum()
        else:
            w = p.to(FP8).double()
            den = w.sum() / v_s[0].double()
        out[h] = (w @ V.double()) / den
    return out


@pytest.mark.parametrize("scale_mode", ["tensor", "block"])
def test_mfa_decode_ref_fp8_numerics(scale_mode):
    """The FP8 reference computes the documented quantized formula (which the GPU kernel runs):
    only its float32 sums and the bf16 output differ from the float64 loop."""
    gen = torch.Generator().manual_seed(4)
    lens, BS, H, D = [1, 5, 16, 17, 300], 16, 4, 64
    kc, vc, bt, ks, vs = paged_cache(lens, BS, D, FP8, scale_mode, gen=gen)
    q = torch.randn(len(lens), H, D, generator=gen).bfloat16() * 3
    out = torch.ops.step3.mfa_decode(q, kc, vc, bt, torch.tensor(lens, dtype=torch.int32), ks, vs)
    for s, L in enumerate(lens):
        K, V = _dense_keys(kc, bt[s], L, None), _dense_keys(logical_v(vc), bt[s], L, None)
        k_s = _dense_keys(torch.ones_like(kc[..., :1]), bt[s], L, ks)[:, 0]
        v_s = _dense_keys(torch.ones_like(kc[..., :1]), bt[s], L, vs)[:, 0]
        ref = _fp8_formula(q[s], K, V, k_s, v_s, scale_mode == "block")
        assert rel_err(out[s], ref) < BF16_TOL, s
        exact = _dense_attention(q[s:s + 1], K * k_s[:, None], V * v_s[:, None], L - 1)[0]
        if L > 1:  # the quantization of Q and P is really there
            assert rel_err(out[s], exact) > 1e-2, s


def test_mfa_prefill_ref_matches_dense():
    gen = torch.Generator().manual_seed(2)
    chunks, ctx_before = [3, 1, 0, 12], [5, 0, 4, 9]
    lens = [c + n for c, n in zip(ctx_before, chunks)]
    BS, H, D = 4, 3, 16
    kc, vc, bt, ks, vs = paged_cache(lens, BS, D, torch.bfloat16, gen=gen)
    cu = torch.tensor([0] + torch.tensor(chunks).cumsum(0).tolist(), dtype=torch.int32)
    T = int(cu[-1]) + 2  # two padding rows past the last sequence
    q = torch.randn(T, H, D, generator=gen).bfloat16()
    out = torch.ops.step3.mfa_prefill(q, kc, vc, bt, torch.tensor(lens, dtype=torch.int32), cu)
    for s, L in enumerate(lens):
        a, b = int(cu[s]), int(cu[s + 1])
        if b > a:
            ref = _dense_attention(q[a:b], _dense_keys(kc, bt[s], L, None), _dense_keys(vc, bt[s], L, None),
                                   L - (b - a))
            assert rel_err(out[a:b], ref) < BF16_TOL, s
    assert torch.equal(out[-2:], torch.zeros_like(out[-2:]))


@pytest.mark.parametrize("cache_dtype,scale_mode", [(torch.bfloat16, None), (FP8, "tensor"), (FP8, "block")])
def test_kv_append_ref_then_decode_sees_new_token(cache_dtype, scale_mode):
    gen = torch.Generator().manual_seed(3)
    BS, D = 4, 8
    kc, vc, bt, ks, vs = paged_cache([5, 3], BS, D, cache_dtype, scale_mode, gen=gen)
    slots = torch.tensor([int(bt[0, 1]) * BS + 1, -1, int(bt[1, 0]) * BS + 3])  # after pos 4; pad; pos 3
    k = torch.randn(3, D, generator=gen).bfloat16() * 0.01
    v = torch.randn(3, D, generator=gen).bfloat16() * 0.01
    before = kc.clone()
    torch.ops.step3.kv_append(k, v, kc, vc, slots, ks, vs)
    changed = (kc.float() != before.float()).any(-1)
    assert changed.sum() <= 2
    for t in (0, 2):
        blk, off = int(slots[t]) // BS, int(slots[t]) % BS
        s = 1.0 if ks is None else float(ks.reshape(-1)[0 if ks.numel() == 1 else blk])
        got = kc[blk, off].double() * s
        # one rounding step of the cache dtype: 2^-8 (bf16) or 2^-3 (e4m3) relative to |k|
        step = 2 ** -3 if cache_dtype == FP8 else 2 ** -8
        assert torch.all((got - k[t].double()).abs() <= step * k[t].double().abs() + 1e-6)


def _moe_loop(x, ids, tw, wg, wu, wd, offset, round_h):
    """Per-token loop in float64 over the (token, slot) assignments that this rank owns."""
    out = torch.zeros(x.shape, dtype=torch.float64)
    for m in range(x.shape[0]):
        for k in range(ids.shape[1]):
            e = int(ids[m, k]) - offset
            if 0 <= e < wg.shape[0]:
                h = F.silu(wg[e] @ x[m]) * (wu[e] @ x[m])
                out[m] += float(tw[m, k]) * (wd[e] @ round_h(h))
    return out


@pytest.mark.parametrize("pattern,offset,E_local", [("random", 0, 6), ("random", 2, 3), ("one_expert", 0, 6)])
def test_moe_ref_bf16_matches_token_loop(pattern, offset, E_local):
    gen = torch.Generator().manual_seed(4)
    M, H, I, E_global = 11, 32, 24, 8
    x = torch.randn(M, H, generator=gen).bfloat16()
    ids, tw = routing(M, 3, E_global, gen, pattern)
    wg, wu, wd, *_ = expert_weights(E_local, I, H, torch.bfloat16, gen)
    out = torch.ops.step3.moe_experts(x, ids, tw, wg, wu, wd, expert_offset=offset)
    ref = _moe_loop(x.double(), ids, tw, wg.double(), wu.double(), wd.double(), offset,
                    lambda h: h.to(torch.bfloat16).double())
    assert out.dtype == x.dtype and rel_err(out, ref) < BF16_TOL
    owned = ((ids >= offset) & (ids < offset + E_local)).any(1)
    assert torch.equal(out[~owned], torch.zeros_like(out[~owned]))


@pytest.mark.parametrize("scales", ["block", "channel", "expert"])
def test_moe_ref_fp8_matches_token_loop(scales):
    gen = torch.Generator().manual_seed(5)
    M, H, I, E = 9, 256, 384, 4
    x = torch.randn(M, H, generator=gen).bfloat16()
    ids, tw = routing(M, 3, E, gen)
    wg, wu, wd, sg, su, sd = expert_weights(E, I, H, FP8, gen, scales)
    out = torch.ops.step3.moe_experts(x, ids, tw, wg, wu, wd, sg, su, sd, 0)
    deq = [torch.stack([fp8_dequantize_ref(w[e], s[e].reshape(-1, 1) if s.dim() == 2 else
                                           s[e].reshape(1) if s.dim() == 1 else s[e]) for e in range(E)]).double()
           for w, s in ((wg, sg), (wu, su), (wd, sd))]
    xq = fp8_dequantize_ref(*fp8_quantize_ref(x, "group")).double()

    def q_h(h):  # h rounded to bf16, then the same 1x128-group quantization, per token
        return fp8_dequantize_ref(*fp8_quantize_ref(h[None].to(torch.bfloat16), "group"))[0].double()
    ref = _moe_loop(xq, ids, tw, *deq, 0, q_h)
    # FP8 W8A8 against a loop that quantizes the same way: float32-vs-float64 sums can move an h
    # element across a bf16 / e4m3 rounding boundary (rare at these precisions); bf16 output
    # rounding dominates -> 1e-2.
    assert rel_err(out, ref) < BF16_TOL


def test_moe_ref_matches_reference_model_experts():
    from step3_trt.model.reference import MoE
    cfg = type("Cfg", (), dict(moe_num_experts=5, moe_intermediate_size=24, hidden_size=32, moe_top_k=3,
                               norm_expert_weight=False))()
    gen = torch.Generator().manual_seed(6)
    moe = MoE(cfg).to(torch.bfloat16)
    wg, wu, wd, *_ = expert_weights(5, 24, 32, torch.bfloat16, gen)
    with torch.no_grad():
        moe.gate_proj.weight.copy_(wg), moe.up_proj.weight.copy_(wu), moe.down_proj.weight.copy_(wd)
        moe.gate.weight.copy_(torch.randn(5, 32, generator=gen))
        x = torch.randn(13, 32, generator=gen).bfloat16()
        weights, ids = moe.route(x)
        ref = moe.experts(x, weights, ids)
    out = torch.ops.step3.moe_experts(x, ids, weights, wg, wu, wd)
    assert rel_err(out, ref) < 2 * BF16_TOL  # reference.py rounds g, u and silu to bf16 as well


@pytest.mark.parametrize("granularity", ["tensor", "token", "group", "block"])
def test_fp8_quantize_ref_roundtrip(granularity):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(130, 300, generator=gen) * torch.logspace(-2, 2, 300)
    q, s = torch.ops.step3.fp8_quantize(x, granularity)
    assert q.dtype == FP8 and q.shape == x.shape and s.dtype == torch.float32
    back = fp8_dequantize_ref(q, s)
    # e4m3 keeps 3 mantissa bits: |x - q*s| <= 2^-4 |x| for normals, plus the subnormal step s*2^-9
    bound = 2 ** -4 * x.abs() + 2 ** -9 * expand_scale(s, 130, 300) + 1e-12
    assert torch.all((back - x).abs() <= bound)
    assert q.float().abs().max() <= 448


def test_fp8_linear_ref_matches_dense():
    gen = torch.Generator().manual_seed(8)
    x, w = torch.randn(20, 260, generator=gen), torch.randn(150, 260, generator=gen)
    for xg, wg_ in (("tensor", "tensor"), ("token", "token"), ("group", "block")):
        xq, xs = fp8_quantize_ref(x, xg)
        wq, ws = fp8_quantize_ref(w, wg_)
        out = torch.ops.step3.fp8_linear(xq, xs, wq, ws)
        dense = fp8_dequantize_ref(xq, xs).double() @ fp8_dequantize_ref(wq, ws).double().T
        assert out.dtype == torch.bfloat16 and rel_err(out, dense) < BF16_TOL
        assert rel_err(out, x.double() @ w.double().T) < 0.1  # FP8 rounding of both operands
