"""Batched generation with the reference model: one prefill of unequal prompts, then decode."""

from __future__ import annotations

import torch

from step3_trt.model.kv_cache import ContiguousKVCache
from step3_trt.model.reference import Step3ForCausalLM
from step3_trt.sampling import SamplingParams, apply_penalties, sample


@torch.no_grad()
def generate(model: Step3ForCausalLM, prompts: list[list[int]],
             params: SamplingParams | list[SamplingParams],
             eos_token_id: int | None = None) -> list[list[int]]:
    """Generate for each prompt; returns the new token ids (stop token included, if hit)."""
    cfg = model.config
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if any(not 0 <= t < cfg.vocab_size for p in prompts for t in p):
        raise ValueError(f"prompt token ids must be in [0, {cfg.vocab_size})")
    per_seq = params if isinstance(params, list) else [params] * len(prompts)
    B = len(prompts)
    device = next(model.parameters()).device
    max_len = max(len(p) + sp.max_new_tokens for p, sp in zip(prompts, per_seq))
    if max_len > cfg.max_position_embedding:
        raise ValueError(f"prompt + max_new_tokens ({max_len}) exceeds max_position_embedding "
                         f"({cfg.max_position_embedding})")
    cache = ContiguousKVCache.allocate(cfg.num_hidden_layers, B, max_len, cfg.head_dim,
                                       next(model.parameters()).dtype, device)
    generators = [sp.generator() for sp in per_seq]
    stops = [set(sp.stop_token_ids) | ({eos_token_id} if eos_token_id is not None else set())
             for sp in per_seq]

    lengths = torch.tensor([len(p) for p in prompts], device=device)
    ids = torch.zeros(B, int(lengths.max()), dtype=torch.int64, device=device)
    for b, p in enumerate(prompts):
        ids[b, :len(p)] = torch.tensor(p)
    logits = model(ids, cache, lengths)
    last = logits[torch.arange(B), lengths - 1]  # [B, V]

    outputs: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    while True:
        for b in range(B):
            if done[b]:
                continue
            row = apply_penalties(last[b], prompts[b] + outputs[b], per_seq[b]) \
                if per_seq[b].has_penalties else last[b]
            tok = sample(row, per_seq[b], generators[b])
            outputs[b].append(tok)
            done[b] = tok in stops[b] or len(outputs[b]) >= per_seq[b].max_new_tokens
        if all(done):
            return outputs
        step = torch.tensor([[o[-1]] for o in outputs], device=device)
        active = torch.tensor([0 if d else 1 for d in done], device=device)
        last = model(step, cache, active)[:, 0]
