"""The CPU kernels against the per-sequence references they replace on CPU: batched paged
attention (`paged_attention_cpu`) vs `paged_attention_ref`, for decode and chunked prefill, every
cache dtype and scale layout, odd block sizes, empty sequences, padding rows and unused table
entries. Same float32 math in another order: the tolerance is float32 rounding of a softmax
and two products (the FP8 paths quantize identical values, so they agree as closely)."""

import pytest
import torch

from plugins._common import FP8
from plugins.mfa import paged_attention_cpu, paged_attention_ref
from tests.plugins.plugin_cases import paged_cache, rel_err

CASES = [(torch.float32, None), (torch.bfloat16, None), (torch.float32, "tensor"),
         (torch.float32, "block"), (FP8, "tensor"), (FP8, "block")]


def run_both(q, cache, lens, cu, sm_scale=None):
    k, v, bt, ks, vs = cache
    scale = q.shape[-1] ** -0.5 if sm_scale is None else sm_scale
    lens, cu = torch.tensor(lens, dtype=torch.int32), torch.tensor(cu, dtype=torch.int32)
    ref = paged_attention_ref(q, k, v, bt, lens, cu, ks, vs, scale)
    got = paged_attention_cpu(q, k, v, bt, lens, cu, ks, vs, scale)
    return got, ref


@pytest.mark.parametrize("cache_dtype,scale_mode", CASES)
@pytest.mark.parametrize("block_size", [1, 5, 16])
def test_batched_decode_matches_the_reference(cache_dtype, scale_mode, block_size):
    g = torch.Generator().manual_seed(block_size)
    lens = [1, 37, 0, 16, 90]  # a finished (empty) sequence, a full block, a long one
    cache = paged_cache(lens, block_size, 24, cache_dtype, scale_mode, gen=g)
    q = torch.randn(len(lens), 3, 24, generator=g)
    got, ref = run_both(q, cache, lens, list(range(len(lens) + 1)))
    assert rel_err(got, ref) < 2e-6
    assert got[2].abs().max() == 0  # the empty sequence's row stays zero


@pytest.mark.parametrize("cache_dtype,scale_mode", CASES)
def test_batched_prefill_matches_the_reference(cache_dtype, scale_mode):
    g = torch.Generator().manual_seed(7)
    lens = [9, 40, 3, 33]
    new = [9, 5, 0, 1]  # a whole prompt, a chunk after 35 cached tokens, nothing, one decode
    cu = [0]
    for n in new:
        cu.append(cu[-1] + n)
    cache = paged_cache(lens, 8, 16, cache_dtype, scale_mode, gen=g)
    q = torch.randn(cu[-1] + 2, 4, 16, generator=g)  # two padding rows past cu[S]
    got, ref = run_both(q, cache, lens, cu, sm_scale=0.3)
    assert rel_err(got, ref) < 2e-6
    assert got[cu[-1]:].abs().max() == 0


def test_stale_values_in_unused_blocks_never_leak():
    g = torch.Generator().manual_seed(3)
    lens = [5, 30]
    k, v, bt, ks, vs = paged_cache(lens, 4, 8, torch.float32, None, gen=g)
    used = set(bt[bt >= 0].tolist())
    for b in range(k.shape[0]):
        if b not in used:  # garbage where no sequence looks
            k[b], v[b] = float("nan"), float("inf")
    q = torch.randn(2, 2, 8, generator=g)
    got, ref = run_both(q, (k, v, bt, ks, vs), lens, [0, 1, 2])
    assert torch.isfinite(got).all() and rel_err(got, ref) < 2e-6
