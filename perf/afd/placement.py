"""Where the shared expert and the dense MLPs live, and what that makes each FFN rank do and
each link carry (docs/afd-model.md §10.2). Routed experts are expert-parallel in every
placement: contiguous blocks of experts per FFN rank.

- ``sliced`` (P0, today's runtime): shared expert and dense MLPs sliced along their
  intermediate dimension across all FFN ranks; every token goes to every FFN rank.
- ``top1`` (P1): replicated on every FFN rank; a token's shared-expert work runs on the rank
  owning its top-1 expert (MoE fanout <= top_k); each dense-layer token goes to one FFN rank,
  round-robin (fanout 1).
- ``balanced`` (P2): as P1, but each attention rank gives a token's shared-expert work to the
  least-loaded (by the routed and shared work it has sent this micro-batch) of the ranks the
  token already visits, its top-1 rank on ties.
- ``instance`` (P3, the paper): FFN instances of ``instance_gpus`` GPUs; an attention rank sends
  each token to one GPU per instance (GPU index = attention rank mod instance size), the
  instance all-gathers its micro-batch over NVLink, every GPU computes its experts and its
  1/G_F slices on all tokens, and a reduce-scatter returns the partial sums.

Work arrays are [draws, ffn_ranks] (draws = sampled micro-batches of one layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .checks import AfdInputError, one_of, positive_int
from .step3 import Step3Dims

PLACEMENTS = ("sliced", "top1", "balanced", "instance")
LABELS = {"sliced": "P0", "top1": "P1", "balanced": "P2", "instance": "P3"}
REPLICATED = ("top1", "balanced")


@dataclass(frozen=True)
class Layout:
    """Ranks of one deployment as the placement sees them."""

    placement: str
    attn_ranks: int
    ffn_ranks: int
    experts: int
    instance_gpus: int = 8  # FFN GPUs per instance (``instance`` only)

    def __post_init__(self) -> None:
        one_of("placement", self.placement, PLACEMENTS)
        for name in ("attn_ranks", "ffn_ranks", "experts", "instance_gpus"):
            positive_int(name, getattr(self, name))
        if self.ffn_ranks > self.experts:
            raise AfdInputError(f"{self.ffn_ranks} FFN ranks for {self.experts} experts: expert "
                                f"parallelism needs at least one expert per rank")
        if self.placement == "instance" and self.ffn_ranks % self.instance_gpus:
            raise AfdInputError(f"instance placement: instance_gpus ({self.instance_gpus}) must "
                                f"divide the FFN ranks ({self.ffn_ranks})")

    @property
    def instances(self) -> int:
        """FFN instances (``instance``), else 1."""
        return self.ffn_ranks // self.instance_gpus if self.placement == "instance" else 1

    def expert_rank(self) -> np.ndarray:
        """[experts] the FFN rank holding each routed expert (contiguous, near-equal blocks)."""
        blocks = np.array_split(np.arange(self.experts), self.ffn_ranks)
        out = np.empty(self.experts, dtype=np.int64)
        for rank, block in enumerate(blocks):
            out[block] = rank
        return out

    def rail_sources(self) -> np.ndarray:
        """[instance_gpus] attention ranks sending to each GPU of an instance (``instance``)."""
        return np.bincount(np.arange(self.attn_ranks) % self.instance_gpus,
                           minlength=self.instance_gpus)


@dataclass(frozen=True)
class RankWork:
    """One layer's work per FFN rank and traffic per rank, for each sampled micro-batch."""

    kind: str  # "moe" or "dense"
    assignments: np.ndarray  # routed token-expert pairs on the rank
    experts_hit: np.ndarray  # local routed experts with >= 1 token
    shared_rows: np.ndarray  # rows multiplied by the rank's shared-expert / dense weights
    shared_fraction: float  # fraction of the shared / dense weights one rank holds
    tokens_in: np.ndarray  # token copies the rank receives from attention ranks
    tokens_out: np.ndarray  # [draws, attn_ranks] token copies each attention rank sends
    msgs_out: int  # messages per attention rank per call (empty ones included)
    msgs_in: int  # messages per FFN rank per call (the busiest)
    routing_slots: int  # (expert id, weight) pairs per token copy on the wire
    gathered: int  # tokens per FFN GPU after the instance all-gather (``instance``), else 0
    per_attn: int  # tokens per attention rank

    @property
    def fanout(self) -> float:
        """Mean FFN ranks (instances for ``instance``) a token is sent to."""
        per_token = self.tokens_out.sum(axis=1) / self.tokens
        return float(per_token.mean())

    @property
    def tokens(self) -> int:
        """Tokens in the micro-batch."""
        return int(self.tokens_out.shape[1] * self.per_attn)


def moe_work(layout: Layout, ids: np.ndarray, per_attn: int, top_k: int) -> RankWork:
    """Work of a MoE layer for micro-batches ``ids`` [draws, tokens, top_k] (global expert ids,
    top-1 first; tokens = per_attn x attention ranks, attention rank a owning rows a*per_attn..)."""
    draws, tokens, _ = ids.shape
    g_a, g_f = layout.attn_ranks, layout.ffn_ranks
    if tokens != per_attn * g_a:
        raise AfdInputError(f"{tokens} tokens is not {per_attn} x {g_a} attention ranks")
    ranks = layout.expert_rank()[ids.astype(np.int64)]  # [D, T, K]
    d_idx = np.arange(draws)[:, None, None]
    assignments = _count(d_idx * g_f + ranks, draws, g_f)
    hit = _count(d_idx[:, :, 0] * layout.experts + ids.astype(np.int64).reshape(draws, -1),
                 draws, layout.experts) > 0
    experts_hit = _count(np.arange(draws)[:, None] * g_f + layout.expert_rank()[None, :],
                         draws, g_f, weights=hit)
    p = layout.placement
    if p in ("sliced", "instance"):
        inst = layout.instances
        rows = np.full((draws, g_f), tokens)
        if p == "sliced":
            tin, out, m_out, m_in = np.full((draws, g_f), tokens), g_f * per_attn, g_f, g_a
        else:
            rail = np.tile(layout.rail_sources(), inst) * per_attn
            tin, out, m_out, m_in = np.broadcast_to(rail, (draws, g_f)), inst * per_attn, inst, \
                int(layout.rail_sources().max())
        return RankWork("moe", assignments, experts_hit, rows, 1.0 / g_f, tin,
                        np.full((draws, g_a), out), m_out, m_in, top_k,
                        tokens if p == "instance" else 0, per_attn)
    visited = np.zeros((draws, tokens, g_f), dtype=bool)
    visited[d_idx, np.arange(tokens)[None, :, None], ranks] = True
    tokens_in = visited.sum(axis=1)
    tokens_out = visited.sum(axis=2).reshape(draws, g_a, per_attn).sum(axis=2)
    if p == "top1":
        shared = _count(np.arange(draws)[:, None] * g_f + ranks[:, :, 0], draws, g_f)
    else:
        shared = _balanced_shared(ranks, g_a, g_f, per_attn)
    return RankWork("moe", assignments, experts_hit, shared, 1.0, tokens_in, tokens_out,
                    g_f, g_a, top_k + 1, 0, per_attn)


def dense_work(layout: Layout, per_attn: int) -> RankWork:
    """Work of a dense layer (deterministic: one draw)."""
    g_a, g_f = layout.attn_ranks, layout.ffn_ranks
    tokens = per_attn * g_a
    zeros = np.zeros((1, g_f), dtype=np.int64)
    if layout.placement in REPLICATED:  # token i of attention rank a -> rank (a*s + i) mod G_F
        rows = np.bincount(np.arange(tokens) % g_f, minlength=g_f)[None, :]
        return RankWork("dense", zeros, zeros, rows, 1.0, rows, np.full((1, g_a), per_attn),
                        g_f, g_a, 0, 0, per_attn)
    rows = np.full((1, g_f), tokens)
    if layout.placement == "sliced":
        return RankWork("dense", zeros, zeros, rows, 1.0 / g_f, rows,
                        np.full((1, g_a), g_f * per_attn), g_f, g_a, 0, 0, per_attn)
    inst = layout.instances
    rail = np.tile(layout.rail_sources(), inst)[None, :] * per_attn
    return RankWork("dense", zeros, zeros, rows, 1.0 / g_f, rail,
                    np.full((1, g_a), inst * per_attn), inst, int(layout.rail_sources().max()),
                    0, tokens, per_attn)


def ffn_weight_bytes(placement: str, dims: Step3Dims, ffn_ranks: int, weight_bytes: int) -> float:
    """FFN weight bytes on the busiest FFN rank: its routed experts of every MoE layer, plus the
    shared experts and dense MLPs whole (replicated placements) or a 1/ffn_ranks slice."""
    one_of("placement", placement, PLACEMENTS)
    experts = -(-dims.experts // ffn_ranks)
    routed = dims.moe_layers * experts * dims.expert_params()
    shared = dims.moe_layers * dims.shared_params() + dims.dense_layers * dims.dense_params()
    held = shared if placement in REPLICATED else shared / ffn_ranks
    return (routed + held) * weight_bytes


def _count(index: np.ndarray, rows: int, cols: int, weights=None) -> np.ndarray:
    """[rows, cols] counts of flat indices ``row * cols + col`` (optionally weighted)."""
    flat = np.bincount(index.ravel(), weights=None if weights is None else weights.ravel(),
                       minlength=rows * cols)
    return flat.reshape(rows, cols).astype(np.int64)


def _balanced_shared(ranks: np.ndarray, g_a: int, g_f: int, per_attn: int) -> np.ndarray:
    """[D, G_F] shared-expert rows under ``balanced``: each attention rank first counts the
    routed work it sends to each FFN rank, then walks its tokens in order and gives each one's
    shared work to the least-loaded of the token's ranks (the first listed, i.e. its top-1
    rank, on ties), counting it."""
    draws, _, k = ranks.shape
    groups = ranks.reshape(draws * g_a, per_attn, k)  # one row per (draw, attention rank)
    loads = _count(np.arange(draws * g_a)[:, None, None] * g_f + groups, draws * g_a, g_f)
    shared = np.zeros((draws * g_a, g_f), dtype=np.int64)
    rows = np.arange(draws * g_a)
    for i in range(per_attn):
        cand = groups[:, i, :]  # [D*G_A, K]
        pick = cand[rows, np.argmin(np.take_along_axis(loads, cand, axis=1), axis=1)]
        loads[rows, pick] += 1
        shared[rows, pick] += 1
    return shared.reshape(draws, g_a, g_f).sum(axis=1)
