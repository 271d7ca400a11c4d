"""Expert routing statistics (``step3-afd-routing/1``) and how they become Step-3 micro-batches.

A statistics file gives, per measured MoE layer, the fraction of tokens that route to each
expert (``inclusion``, summing to top_k) and whose top-1 is each expert (``top1``); it is written
by ``perf/afd/measure_routing.py``. Step-3 micro-batches are drawn from it as follows
(docs/afd-model.md §11):

1. Popularity transfer: a measured layer's expert shares (inclusion / top_k), sorted, define a
   Lorenz curve; Step-3's shares are that curve sampled at 48 experts (with 8 measured experts,
   each measured expert's share is split over 6 Step-3 experts: max/mean and the spread are kept).
2. Placement: each synthetic Step-3 layer puts those shares on expert ids by its own random
   permutation (expert ids carry no popularity order).
3. Tokens: each token draws its top-k experts without replacement, Plackett-Luce (Gumbel top-k,
   top-1 first), with weights calibrated so that each expert's inclusion matches its target
   share x top_k. Tokens are independent, as decode tokens of different sequences are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checks import AfdInputError, positive_int

FORMAT = "step3-afd-routing/1"
UNIFORM = "uniform"


@dataclass(frozen=True)
class RoutingLayer:
    """One measured MoE layer: per-expert fractions of the measured tokens."""

    layer: int
    inclusion: tuple[float, ...]  # tokens routing to the expert / tokens (sums to top_k)
    top1: tuple[float, ...]  # tokens whose top-1 is the expert / tokens (sums to 1)


@dataclass(frozen=True)
class RoutingStats:
    """Routing statistics of one model on one data set (or uniform routing)."""

    source: str
    experts: int
    top_k: int
    tokens: int
    layers: tuple[RoutingLayer, ...]
    notes: str = ""

    def shares(self) -> list[np.ndarray]:
        """Per layer, each expert's share of the assignments (inclusion / top_k, sums to 1)."""
        return [np.asarray(lay.inclusion, dtype=np.float64) / self.top_k for lay in self.layers]

    def max_over_mean(self) -> list[float]:
        """Per layer, the most popular expert's share over the mean share (1 = uniform)."""
        return [float(s.max() * self.experts) for s in self.shares()]


def uniform_routing(experts: int, top_k: int) -> RoutingStats:
    """Every expert equally likely: the uniform assumption, as a statistics object."""
    positive_int("experts", experts)
    positive_int("top_k", top_k)
    lay = RoutingLayer(0, (top_k / experts,) * experts, (1 / experts,) * experts)
    return RoutingStats(UNIFORM, experts, top_k, 0, (lay,), "uniform top-k routing")


def load_routing(path: str | Path) -> RoutingStats:
    """Read and validate a routing-statistics file (errors name the file and the field)."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise AfdInputError(f"{p}: no such file") from None
    except json.JSONDecodeError as e:
        raise AfdInputError(f"{p}: not JSON ({e})") from None
    return parse_routing(raw, str(p))


def parse_routing(raw: object, where: str = "routing statistics") -> RoutingStats:
    """Validate the decoded JSON object ``raw`` (docs/afd-model.md §11)."""
    if not isinstance(raw, dict):
        raise AfdInputError(f"{where}: top level must be an object")
    if raw.get("format") != FORMAT:
        raise AfdInputError(f"{where}: format must be {FORMAT!r}, got {raw.get('format')!r}")
    ints = {}
    for key in ("experts", "top_k", "tokens"):
        v = raw.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise AfdInputError(f"{where}: {key} must be a positive integer, got {v!r}")
        ints[key] = v
    experts, top_k = ints["experts"], ints["top_k"]
    if top_k > experts:
        raise AfdInputError(f"{where}: top_k ({top_k}) must be <= experts ({experts})")
    layers_raw = raw.get("layers")
    if not isinstance(layers_raw, list) or not layers_raw:
        raise AfdInputError(f"{where}: layers must be a non-empty list")
    layers = []
    for i, lay in enumerate(layers_raw):
        if not isinstance(lay, dict):
            raise AfdInputError(f"{where}: layers[{i}] must be an object")
        idx = lay.get("layer")
        if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
            raise AfdInputError(f"{where}: layers[{i}].layer must be an integer >= 0")
        inc = _fractions(lay.get("inclusion"), experts, top_k, f"{where}: layers[{i}].inclusion")
        top1 = _fractions(lay.get("top1"), experts, 1, f"{where}: layers[{i}].top1")
        if any(t > c + 1e-9 for t, c in zip(top1, inc)):
            raise AfdInputError(f"{where}: layers[{i}].top1 exceeds inclusion for some expert")
        layers.append(RoutingLayer(idx, inc, top1))
    return RoutingStats(str(raw.get("source", where)), experts, top_k, ints["tokens"],
                        tuple(layers), str(raw.get("notes", "")))


def _fractions(v: object, n: int, total: int, what: str) -> tuple[float, ...]:
    """n fractions in [0, 1] summing to ``total`` (to 1e-6)."""
    if not isinstance(v, list) or len(v) != n:
        raise AfdInputError(f"{what} must list {n} fractions")
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x <= 1 for x in v):
        raise AfdInputError(f"{what} must hold fractions in [0, 1], got {v!r}")
    if abs(sum(v) - total) > 1e-6:
        raise AfdInputError(f"{what} must sum to {total}, got {sum(v):.6f}")
    return tuple(float(x) for x in v)


def transfer_shares(shares: np.ndarray, experts: int) -> np.ndarray:
    """Shares of ``experts`` experts (descending, sum 1) with the Lorenz curve of ``shares``:
    the cumulative share of the most popular fraction u of experts, piecewise linear between
    the measured experts, sampled at u = j / experts."""
    positive_int("experts", experts)
    s = np.sort(np.asarray(shares, dtype=np.float64))[::-1]
    s = s / s.sum()
    knots = np.linspace(0.0, 1.0, len(s) + 1)
    curve = np.concatenate([[0.0], np.cumsum(s)])
    out = np.diff(np.interp(np.linspace(0.0, 1.0, experts + 1), knots, curve))
    return out / out.sum()


def sample_topk(weights: np.ndarray, tokens: int, top_k: int, rng: np.random.Generator,
                chunk: int = 8192) -> np.ndarray:
    """[tokens, top_k] int16 expert indices drawn without replacement (Plackett-Luce via Gumbel
    keys), each row ordered by key: column 0 is the token's top-1."""
    log_w = np.log(np.asarray(weights, dtype=np.float64))
    out = np.empty((tokens, top_k), dtype=np.int16)
    for start in range(0, tokens, chunk):
        n = min(chunk, tokens - start)
        keys = log_w[None, :] + rng.gumbel(size=(n, log_w.size))
        top = np.argpartition(-keys, top_k - 1, axis=1)[:, :top_k]
        order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
        out[start:start + n] = np.take_along_axis(top, order, axis=1)
    return out


def inclusion(weights: np.ndarray, top_k: int, panels: int = 16, points: int = 24) -> np.ndarray:
    """Exact probability that each expert is among a Plackett-Luce top-k draw with ``weights``.

    Plackett-Luce order = order of independent arrival times T_j ~ Exp(w_j), so
    P(e in top-k) = integral over t of w_e exp(-w_e t) P(at most k-1 others arrived by t);
    the count of others is Poisson-binomial (a DP over experts), the integral composite
    Gauss-Legendre on [0, T] with weights normalized to sum 1 and T = 40 + 40 k."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    if top_k >= w.size:
        return np.ones(w.size)
    x, q = np.polynomial.legendre.leggauss(points)
    edges = np.linspace(0.0, 40.0 + 40.0 * top_k, panels + 1)
    half = np.diff(edges)[:, None] / 2
    t = (edges[:-1, None] + half * (x[None, :] + 1)).ravel()  # [T]
    dt = (half * q[None, :]).ravel()
    arrived = 1.0 - np.exp(-np.outer(t, w))  # [T, E]: expert j arrived by t
    n = w.size
    counts = np.zeros((t.size, n, top_k))  # P(c of the others arrived), c < top_k, per e
    counts[:, :, 0] = 1.0
    for j in range(n):
        qj = np.broadcast_to(arrived[:, j:j + 1], (t.size, n)).copy()
        qj[:, j] = 0.0  # e = j does not count itself
        shifted = np.concatenate([np.zeros((t.size, n, 1)), counts[:, :, :-1]], axis=2)
        counts = counts * (1.0 - qj[:, :, None]) + shifted * qj[:, :, None]
    density = w[None, :] * np.exp(-np.outer(t, w))  # [T, E]
    out = (dt[:, None] * density * counts.sum(axis=2)).sum(axis=0)
    if abs(out.sum() - top_k) > 1e-6:  # inclusion probabilities always sum to k
        raise AfdInputError(f"inclusion integral did not converge (sum {out.sum():.6f}, "
                            f"expected {top_k}): weights too uneven")
    return out


def calibrate(target: np.ndarray, top_k: int, iters: int = 200, tol: float = 1e-9) -> np.ndarray:
    """Plackett-Luce weights whose top-k inclusion (``inclusion``) equals ``target`` (per expert,
    summing to top_k), by multiplicative fixed-point iteration."""
    target = np.asarray(target, dtype=np.float64)
    if np.any(target <= 0) or np.any(target >= 1):
        raise AfdInputError("every expert's inclusion target must lie in (0, 1)")
    w = target / target.sum()
    if np.allclose(target, target[0]) or top_k == 1:
        return w
    for _ in range(iters):
        got = inclusion(w, top_k)
        if np.max(np.abs(got / target - 1)) < tol:
            break
        w = w * target / got
        w = w / w.sum()
    return w


@dataclass
class RoutingSampler:
    """Draws Step-3 routings for micro-batches: ``layers`` synthetic MoE layers cycling over the
    statistics' measured layers, each with its own expert permutation; a pool of ``pool``
    tokens per measured layer, from which micro-batches are consecutive slices."""

    stats: RoutingStats
    experts: int
    top_k: int
    layers: int = 8
    pool: int = 32768
    seed: int = 0
    _pools: list[np.ndarray] = field(init=False, repr=False)
    _perms: list[np.ndarray] = field(init=False, repr=False)
    targets: list[np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        positive_int("experts", self.experts)
        positive_int("top_k", self.top_k)
        positive_int("layers", self.layers)
        positive_int("pool", self.pool)
        if self.top_k > self.experts:
            raise AfdInputError(f"top_k ({self.top_k}) must be <= experts ({self.experts})")
        rng = np.random.default_rng(self.seed)
        self.targets, self._pools = [], []
        for shares in self.stats.shares():
            share = transfer_shares(shares, self.experts)
            self.targets.append(share * self.top_k)
            weights = calibrate(share * self.top_k, self.top_k)
            self._pools.append(sample_topk(weights, self.pool, self.top_k, rng))
        self._perms = [rng.permutation(self.experts) for _ in range(self.layers)]

    def draws(self, tokens: int, per_layer: int = 4) -> np.ndarray:
        """[layers * per_layer, tokens, top_k] global expert ids of micro-batches of ``tokens``
        tokens (top-1 first in each row)."""
        positive_int("tokens", tokens)
        out = np.empty((self.layers, per_layer, tokens, self.top_k), dtype=np.int16)
        for layer, perm in enumerate(self._perms):
            pool = self._pools[layer % len(self._pools)]
            for d in range(per_layer):
                start = ((layer // len(self._pools)) * per_layer + d) * tokens
                idx = (start + np.arange(tokens)) % self.pool
                out[layer, d] = perm[pool[idx]]
        return out.reshape(self.layers * per_layer, tokens, self.top_k)
