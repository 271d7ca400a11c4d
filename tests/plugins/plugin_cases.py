"""Random inputs for the plugin tests (shared by the CPU and GPU tests)."""

from __future__ import annotations

import torch

from plugins._common import FP8, quantize_with
from plugins.fp8 import fp8_quantize_ref
from plugins.mfa import fp8_v_blocks


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64 (NaN if out holds a NaN)."""
    out, ref = out.double(), ref.double()
    if torch.isnan(out).any():
        return float("nan")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def paged_cache(lens, block_size, D, cache_dtype, scale_mode=None, device="cpu", gen=None,
                num_blocks=None, spare_cols=1):
    """A shuffled block pool holding len(lens) sequences.

    Returns (k_cache, v_cache, block_tables int32 [S, max_blocks] (unused entries -1), k_scale,
    v_scale). scale_mode: None, "tensor" ([1]) or "block" ([num_blocks]); FP8 caches hold values
    quantized with those scales (so they stand for ~N(0, 1) data), the V cache in its stored
    layout (blocks transposed; `logical_v` undoes it).
    """
    need = [-(-int(L) // block_size) for L in lens]
    max_blocks = max(need + [1]) + spare_cols
    num_blocks = num_blocks or sum(need) + 3
    perm = torch.randperm(num_blocks, generator=gen)
    bt = torch.full((len(lens), max_blocks), -1, dtype=torch.int32)
    used = 0
    for s, n in enumerate(need):
        bt[s, :n] = perm[used:used + n].int()
        used += n
    data = [torch.randn(num_blocks, block_size, D, generator=gen) for _ in range(2)]
    scales = [None, None]
    if scale_mode == "tensor":
        scales = [torch.rand(1, generator=gen) * 0.02 + 0.01 for _ in range(2)]
    elif scale_mode == "block":
        scales = [torch.rand(num_blocks, generator=gen) * 0.02 + 0.01 for _ in range(2)]
    caches = []
    for i, (x, s) in enumerate(zip(data, scales)):
        if cache_dtype == FP8:
            sb = s.reshape(-1, 1, 1) if s is not None else torch.ones(1, 1, 1)
            q = quantize_with(x, sb)
            caches.append(q if i == 0 else q.transpose(1, 2).contiguous().view(q.shape))
        else:
            caches.append((x / s.reshape(-1, 1, 1) if s is not None else x).to(cache_dtype))
    to = (lambda t: None if t is None else t.to(device))
    return (to(caches[0]), to(caches[1]), to(bt), to(scales[0]), to(scales[1]))


def logical_v(v_cache: torch.Tensor) -> torch.Tensor:
    """A value cache as [NB, BS, D] token rows (an FP8 one is stored with its blocks transposed)."""
    return fp8_v_blocks(v_cache).transpose(1, 2) if v_cache.dtype == FP8 else v_cache


def routing(M, K, num_experts, gen=None, pattern="random"):
    """topk ids [M, K] (distinct per row) over global experts, weights [M, K] in (0, 1)."""
    if pattern == "one_expert":  # every token's first choice is expert 0
        rest = torch.stack([torch.randperm(num_experts - 1, generator=gen)[:K - 1] + 1
                            for _ in range(M)]) if M else torch.zeros(0, K - 1, dtype=torch.long)
        ids = torch.cat([torch.zeros(M, 1, dtype=torch.long), rest], 1)
    else:
        ids = torch.stack([torch.randperm(num_experts, generator=gen)[:K] for _ in range(M)]) \
            if M else torch.zeros(0, K, dtype=torch.long)
    weights = torch.rand(M, K, generator=gen)
    return ids, weights


def expert_weights(E, I, H, dtype, gen=None, scales=None):
    """(w_gate, w_up, w_down, s_gate, s_up, s_down): ~unit-output scaled random weights; FP8 ones
    quantized per expert with scales 'block' ([E, I/128, H/128]), 'channel' ([E, out]) or
    'expert' ([E]). Each 128x128 block is multiplied by its own factor in [1/4, 4], so block
    scales differ a lot and a kernel that applies the wrong one is far off."""
    def spread(E, O, In):
        f = 2.0 ** (torch.rand(E, -(-O // 128), -(-In // 128), generator=gen) * 4 - 2)
        return f.repeat_interleave(128, 1)[:, :O].repeat_interleave(128, 2)[:, :, :In]
    ws = [torch.randn(E, I, H, generator=gen) / H ** 0.5 * spread(E, I, H),
          torch.randn(E, I, H, generator=gen) / H ** 0.5 * spread(E, I, H),
          torch.randn(E, H, I, generator=gen) / I ** 0.5 * spread(E, H, I)]
    if dtype != FP8:
        return (*[w.to(dtype) for w in ws], None, None, None)
    qs, ss = [], []
    for w in ws:
        if scales == "block":
            pairs = [fp8_quantize_ref(w[e], "block") for e in range(E)]
        elif scales == "channel":
            pairs = [(q, s.reshape(-1)) for q, s in (fp8_quantize_ref(w[e], "token") for e in range(E))]
        else:
            pairs = [(q, s.reshape(())) for q, s in (fp8_quantize_ref(w[e], "tensor") for e in range(E))]
        qs.append(torch.stack([q for q, _ in pairs]))
        ss.append(torch.stack([s for _, s in pairs]))
    return (*qs, *ss)
