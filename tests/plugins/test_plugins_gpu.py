"""GPU tests: every Triton kernel against its reference on fresh random inputs and awkward shapes.

Outputs are poisoned first: `_poison()` fills freed CUDA allocator blocks with NaN, so buffers the
ops allocate start as NaN and any element a kernel fails to write shows up as NaN.
Tolerances (relative Frobenius error vs the float32 reference):
  * attention, BF16 output: P and split partials are rounded to bf16 (2^-8 relative) -> ~3e-3;
    we allow 1e-2. FP8 caches: the reference dequantizes the same stored e4m3 values, so the
    FP8 rounding itself is shared and the same 1e-2 applies.
  * FP8 linear, BF16 MoE: bf16 output rounding and float32 summation order -> ~3e-3, allow 1e-2.
  * FP8 MoE: the reference quantizes x and h by the same 1x128-group rule, but h is computed
    from FP8 tensor-core sums, which (fast FP8 accumulation inside each 128-wide K slice, as
    DeepGEMM does) differ from the float32 reference by ~1e-4..1e-3 relative; h is then rounded
    to bf16 and e4m3 (steps 2^-8, 2^-3), so such differences flip a fraction of h elements by one
    e4m3 step. Measured on an H100: up to 2.3% output difference (0.5% typical); we allow 4e-2.
    With precise accumulation (max_num_imprecise_acc=32, one fp32 add per k32 step) the same
    check must pass at 1e-2. Wrong experts, rows or block scales (spread 16x) give >= 20%.
  * fp8_quantize and kv_append: both sides divide in IEEE float32 and round to nearest even,
    so results are compared exactly.
"""

from __future__ import annotations

import pytest
import torch

from plugins._common import FP8
from plugins.fp8 import fp8_linear_ref, fp8_quantize_ref
from plugins.mfa import kv_append_ref, paged_attention_ref
from plugins.moe import moe_experts_ref
from tests.plugins.plugin_cases import expert_weights, paged_cache, rel_err, routing

pytestmark = pytest.mark.gpu
TOL = 1e-2


DEV = "cuda" if torch.cuda.is_available() else "cpu"  # "cpu": Triton interpreter runs


def _poison():
    if DEV != "cuda":
        return
    bufs = [torch.full((1 << 28,), float("nan"), device="cuda")]
    bufs += [torch.full((1 << 18,), float("nan"), device="cuda") for _ in range(64)]
    del bufs


def _cuda(*ts):
    return [None if t is None else t.to(DEV) for t in ts]


def _gen(seed):
    return torch.Generator().manual_seed(seed)


ATTN_CASES = [  # (heads, head_dim, block_size, lens)
    (64, 256, 16, [1, 15, 16, 17, 255, 256, 257, 1000]),
    (16, 128, 64, [1, 2, 3]),
    (64, 256, 32, [int(x) for x in torch.randint(1, 3000, (7,), generator=_gen(0))]),
    (64, 256, 16, [20000, 3]),
]
CACHES = [(torch.bfloat16, None), (FP8, "tensor"), (FP8, "block")]


@pytest.mark.parametrize("case", range(len(ATTN_CASES)))
@pytest.mark.parametrize("cache_dtype,scale_mode", CACHES)
def test_mfa_decode_kernel(case, cache_dtype, scale_mode):
    H, D, BS, lens = ATTN_CASES[case]
    gen = _gen(100 + case)
    kc, vc, bt, ks, vs = paged_cache(lens, BS, D, cache_dtype, scale_mode, gen=gen)
    q = torch.randn(len(lens), H, D, generator=gen).bfloat16()
    sl = torch.tensor(lens, dtype=torch.int32)
    ref = paged_attention_ref(q, kc, vc, bt, sl, torch.arange(len(lens) + 1), ks, vs, D ** -0.5)
    _poison()
    out = torch.ops.step3.mfa_decode(*_cuda(q, kc, vc, bt, sl, ks, vs))
    assert rel_err(out.cpu(), ref) < TOL


@pytest.mark.parametrize("tokens_per_split", [64, 128, 192])
@pytest.mark.parametrize("cache_dtype,scale_mode", CACHES)
def test_mfa_decode_forced_splits_and_empty_sequence(tokens_per_split, cache_dtype, scale_mode):
    from plugins.triton_kernels.mfa import paged_attention
    lens, H, D, BS = [0, 1, 63, 64, 65, 700, 129], 64, 256, 16
    gen = _gen(7)
    kc, vc, bt, ks, vs = paged_cache(lens, BS, D, cache_dtype, scale_mode, gen=gen)
    q = torch.randn(len(lens), H, D, generator=gen).bfloat16()
    sl = torch.tensor(lens, dtype=torch.int32)
    ref = paged_attention_ref(q, kc, vc, bt, sl, torch.arange(len(lens) + 1), ks, vs, D ** -0.5)
    qc, kcc, vcc, btc, slc, ksc, vsc = _cuda(q, kc, vc, bt, sl, ks, vs)
    _poison()
    out = paged_attention(qc, kcc, vcc, btc, D ** -0.5, ksc, vsc, seq_lens=slc,
                          tokens_per_split=tokens_per_split).cpu()
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert rel_err(out[1:], ref[1:]) < TOL


@pytest.mark.parametrize("cache_dtype,scale_mode", CACHES)
def test_mfa_decode_wide_tables_and_padding_rows(cache_dtype, scale_mode):
    """As the runtime's CUDA graphs call it: block tables as wide as the longest sequence
    allowed (64K tokens here), most rows far shorter, padding rows of length 0 at the end. The
    grid is sized for the table width; each row spreads its own length over the splits."""
    from plugins.triton_kernels.mfa import paged_attention
    lens, H, D, BS = [4096, 1, 700, 2049, 0, 0], 64, 256, 64
    gen = _gen(9)
    kc, vc, bt, ks, vs = paged_cache(lens, BS, D, cache_dtype, scale_mode, gen=gen)
    wide = torch.zeros(len(lens), 65536 // BS, dtype=bt.dtype)
    wide[:, :bt.shape[1]] = bt
    q = torch.randn(len(lens), H, D, generator=gen).bfloat16()
    sl = torch.tensor(lens, dtype=torch.int32)
    ref = paged_attention_ref(q, kc, vc, bt, sl, torch.arange(len(lens) + 1), ks, vs, D ** -0.5)
    qc, kcc, vcc, btc, slc, ksc, vsc = _cuda(q, kc, vc, wide, sl, ks, vs)
    _poison()
    out = paged_attention(qc, kcc, vcc, btc, D ** -0.5, ksc, vsc, seq_lens=slc).cpu()
    assert torch.equal(out[4:], torch.zeros_like(out[4:]))
    assert rel_err(out[:4], ref[:4]) < TOL


@pytest.mark.parametrize("config", range(5))
@pytest.mark.parametrize("cache_dtype,scale_mode", CACHES)
def test_mfa_decode_every_tuning_candidate(config, cache_dtype, scale_mode):
    from plugins.triton_kernels.mfa import CONFIGS, paged_attention
    cands = CONFIGS[cache_dtype == FP8]
    if config >= len(cands):
        pytest.skip("fewer candidates for this cache dtype")
    lens, H, D, BS = [1, 63, 64, 65, 700, 129, 2000], 64, 256, 16
    gen = _gen(8)
    kc, vc, bt, ks, vs = paged_cache(lens, BS, D, cache_dtype, scale_mode, gen=gen)
    q = torch.randn(len(lens), H, D, generator=gen).bfloat16()
    sl = torch.tensor(lens, dtype=torch.int32)
    ref = paged_attention_ref(q, kc, vc, bt, sl, torch.arange(len(lens) + 1), ks, vs, D ** -0.5)
    args = _cuda(q, kc, vc, bt)
    ksc, vsc, slc = _cuda(ks, vs, sl)
    for tps in (None, 96):
        _poison()
        out = paged_attention(*args, D ** -0.5, ksc, vsc, seq_lens=slc, tokens_per_split=tps,
                              config=cands[config])
        assert rel_err(out.cpu(), ref) < TOL, tps


PREFILL_CASES = [  # (ctx_before, chunk) per sequence, heads, head_dim, block_size
    ([(0, 1), (5, 1), (0, 33), (100, 17), (15, 16), (0, 130), (7, 0)], 64, 256, 16),
    ([(5000, 40)], 64, 256, 32),
    ([(3, 5), (0, 2)], 16, 64, 8),
]


@pytest.mark.parametrize("case", range(len(PREFILL_CASES)))
@pytest.mark.parametrize("cache_dtype,scale_mode", [(torch.bfloat16, None), (FP8, "block")])
def test_mfa_prefill_kernel(case, cache_dtype, scale_mode):
    seqs, H, D, BS = PREFILL_CASES[case]
    gen = _gen(200 + case)
    lens = [c + n for c, n in seqs]
    kc, vc, bt, ks, vs = paged_cache(lens, BS, D, cache_dtype, scale_mode, gen=gen)
    cu = torch.tensor([0] + torch.tensor([n for _, n in seqs]).cumsum(0).tolist(), dtype=torch.int32)
    q = torch.randn(int(cu[-1]) + 3, H, D, generator=gen).bfloat16()  # 3 padding rows
    sl = torch.tensor(lens, dtype=torch.int32)
    ref = paged_attention_ref(q, kc, vc, bt, sl, cu, ks, vs, D ** -0.5)
    _poison()
    out = torch.ops.step3.mfa_prefill(*_cuda(q, kc, vc, bt, sl, cu, ks, vs)).cpu()
    assert torch.equal(out[-3:], torch.zeros_like(out[-3:]))
    assert rel_err(out, ref) < TOL


@pytest.mark.parametrize("cache_dtype,scale_mode", CACHES)
def test_kv_append_kernel(cache_dtype, scale_mode):
    gen = _gen(300)
    D, BS = 256, 16
    kc, vc, bt, ks, vs = paged_cache([40, 70, 5], BS, D, cache_dtype, scale_mode, gen=gen)
    T = 37
    slots = torch.randperm(kc.shape[0] * BS, generator=gen)[:T]
    slots[::5] = -1  # padding rows
    k = torch.randn(T, D, generator=gen).bfloat16() * 0.02
    v = torch.randn(T, D, generator=gen).bfloat16() * 0.02
    kr, vr = kc.clone(), vc.clone()
    kv_append_ref(k, v, kr, vr, slots, ks, vs)
    kg, vg = _cuda(kc, vc)
    torch.ops.step3.kv_append(*_cuda(k, v), kg, vg, *_cuda(slots, ks, vs))
    assert torch.equal(kg.cpu().view(torch.uint8), kr.view(torch.uint8))
    assert torch.equal(vg.cpu().view(torch.uint8), vr.view(torch.uint8))


MOE_CASES = [  # (weights, scales, M, E_local, E_global, offset, pattern)
    (torch.bfloat16, None, 1, 4, 4, 0, "random"),
    (torch.bfloat16, None, 37, 5, 8, 2, "random"),
    (torch.bfloat16, None, 1500, 6, 6, 0, "random"),
    (torch.bfloat16, None, 100, 6, 6, 0, "one_expert"),
    (FP8, "block", 37, 6, 6, 0, "one_expert"),
    (FP8, "block", 1100, 8, 8, 0, "random"),
    (FP8, "block", 3, 8, 8, 0, "random"),  # most experts get no token
    (FP8, "channel", 64, 3, 12, 3, "random"),  # most assignments belong to other ranks
    (FP8, "expert", 5, 4, 4, 0, "random"),
]


FP8_MOE_TOL = 4e-2


@pytest.mark.parametrize("case", range(len(MOE_CASES)))
def test_moe_experts_kernel(case):
    from plugins.triton_kernels.moe import moe_experts as moe_gpu
    dtype, scales, M, E, E_global, offset, pattern = MOE_CASES[case]
    gen = _gen(400 + case)
    H, I = 256, 384
    x = torch.randn(M, H, generator=gen).bfloat16()
    ids, tw = routing(M, 3, E_global, gen, pattern)
    ws = expert_weights(E, I, H, dtype, gen, scales)
    args = _cuda(x, ids, tw, *ws)
    ref = moe_experts_ref(*args, offset)
    _poison()
    out = torch.ops.step3.moe_experts(*args, offset)
    assert out.dtype == x.dtype and rel_err(out, ref) < (FP8_MOE_TOL if dtype == FP8 else TOL)
    if dtype == FP8:
        _poison()
        assert rel_err(moe_gpu(*args, offset, imprecise=32), ref) < TOL


@pytest.mark.parametrize("config", range(6))
@pytest.mark.parametrize("case", [1, 4, 7])
def test_moe_experts_every_tuning_candidate(config, case):
    """Each tile config the tuner may pick, on BF16, FP8 block and FP8 per-channel weights
    (precise accumulation for FP8, so the bf16 tolerance applies)."""
    from plugins.triton_kernels.moe import CONFIGS, moe_experts as moe_gpu
    assert len(CONFIGS) == 6
    dtype, scales, M, E, E_global, offset, pattern = MOE_CASES[case]
    gen = _gen(460 + case)
    x = torch.randn(M, 256, generator=gen).bfloat16()
    ids, tw = routing(M, 3, E_global, gen, pattern)
    args = _cuda(x, ids, tw, *expert_weights(E, 384, 256, dtype, gen, scales))
    ref = moe_experts_ref(*args, offset)
    _poison()
    out = moe_gpu(*args, offset, config=CONFIGS[config], imprecise=32 if dtype == FP8 else None)
    assert rel_err(out, ref) < TOL


def test_moe_experts_kernel_full_width_fp8():
    gen = _gen(450)
    M, H, I, E = 48, 7168, 512, 4
    x = torch.randn(M, H, generator=gen).bfloat16()
    ids, tw = routing(M, 3, E, gen)
    args = _cuda(x, ids, tw, *expert_weights(E, I, H, FP8, gen, "block"))
    ref = moe_experts_ref(*args, 0)
    _poison()
    assert rel_err(torch.ops.step3.moe_experts(*args, 0), ref) < FP8_MOE_TOL


@pytest.mark.parametrize("granularity", ["tensor", "token", "group"])
@pytest.mark.parametrize("shape,dtype", [((5, 7, 300), torch.bfloat16), ((1000, 7168), torch.float32),
                                         ((3, 128), torch.bfloat16)])
def test_fp8_quantize_kernel(granularity, shape, dtype):
    x = (torch.randn(shape, generator=_gen(500)) * 3).to(dtype)
    q_ref, s_ref = fp8_quantize_ref(x, granularity)
    _poison()
    q, s = torch.ops.step3.fp8_quantize(x.to(DEV), granularity)
    assert torch.equal(s.cpu(), s_ref)
    assert torch.equal(q.cpu().view(torch.uint8), q_ref.view(torch.uint8))


@pytest.mark.parametrize("mnk", [(1, 256, 512), (77, 300, 384), (200, 1024, 7168)])
@pytest.mark.parametrize("xg,wg", [("tensor", "tensor"), ("token", "token"), ("group", "block"),
                                   ("token", "block"), ("group", "token")])
def test_fp8_linear_kernel(mnk, xg, wg):
    M, N, K = mnk
    gen = _gen(600)
    xq, xs = fp8_quantize_ref(torch.randn(M, K, generator=gen), xg)
    wq, ws = fp8_quantize_ref(torch.randn(N, K, generator=gen), wg)
    ref = fp8_linear_ref(xq, xs, wq, ws)
    _poison()
    out = torch.ops.step3.fp8_linear(*_cuda(xq, xs, wq, ws))
    assert out.dtype == torch.bfloat16 and rel_err(out.cpu(), ref) < TOL


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_ops_capture_in_a_cuda_graph():
    """No host synchronization inside the GPU paths: decode, append and MoE replay in a graph."""
    gen = _gen(700)
    kc, vc, bt, ks, vs = _cuda(*paged_cache([300, 17, 4000], 16, 256, FP8, "block", gen=gen))
    sl = torch.tensor([300, 17, 4000], dtype=torch.int32, device="cuda")
    q = torch.randn(3, 64, 256, generator=gen).bfloat16().cuda()
    x = torch.randn(40, 256, generator=gen).bfloat16().cuda()
    ids, tw = _cuda(*routing(40, 3, 6, gen))
    ws = _cuda(*expert_weights(6, 384, 256, FP8, gen, "block"))
    slots = (bt[:, 0].long() * 16 + 5).contiguous()
    knew = torch.randn(3, 256, generator=gen).bfloat16().cuda() * 0.02

    def step():
        torch.ops.step3.kv_append(knew, knew, kc, vc, slots, ks, vs)
        return torch.ops.step3.mfa_decode(q, kc, vc, bt, sl, ks, vs), \
            torch.ops.step3.moe_experts(x, ids, tw, *ws, 0)
    eager = step()  # also compiles the kernels
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = step()
    graph.replay()
    torch.cuda.synchronize()
    for o, e in zip(outs, eager):
        assert rel_err(o, e) < 1e-3  # same kernels and tuned configs
