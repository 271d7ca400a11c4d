"""FFN rank times from measured FFN layer tables, for work other than the measured one
(docs/afd-model.md §10.3).

A measured table times one of G_m expert-parallel ranks (E / G_m local experts, uniform random
routing, a 1/G_m slice of the shared expert / dense MLP on every row) against the micro-batch
size T. Today's MoE kernel is far from its byte floor and its time grows with the work it is
given (perf/results/layers_h100.json), so a rank's time is read off the table at the micro-batch
whose work equals the rank's ("equivalent tokens"), plus the weights it streams beyond the
measured rank's at the kernel's own marginal rate:

    t = table(T_eq) + (W_rank - W_measured(T_eq)) / stream_rate
    T_eq = work units of the rank / work units per token of the measured rank

Work units count expert-sized rows: a routed assignment is 1, a row through a slice f of the
shared expert is f * shared/expert parameters; dense rows count f of the MLP. Stream rates are
measured: the marginal cost of one more local expert of the MoE kernel at M = 128
(perf/results/kernels_moe_experts.json, E_local 3 -> 12) and the weight-bound FP8 / BF16 GEMM
rate at M <= 256 (perf/results/kernels_fp8_linear.json). The additive rule is what the MoE
kernel data show (time grows linearly with local experts at fixed M); for a dense GEMM that
becomes weight-bound it is an upper bound.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checks import AfdInputError
from .layers_json import FfnTable
from .placement import RankWork
from .roofline import expected_hit_fraction
from .step3 import Step3Dims

RESULTS = Path(__file__).resolve().parents[1] / "results"


@dataclass(frozen=True)
class StreamRates:
    """Bytes/s at which one more weight matrix streams through the FFN kernels."""

    moe: float
    dense: float
    source: str


def stream_rates(weight_bytes: int, dims: Step3Dims, results: Path = RESULTS) -> StreamRates:
    """The rates for ``weight_bytes`` (1 = FP8, 2 = BF16) from the kernel benchmark files."""
    try:
        moe = json.loads((results / "kernels_moe_experts.json").read_text())["rows"]
        lin = json.loads((results / "kernels_fp8_linear.json").read_text())["rows"]
    except FileNotFoundError as e:
        raise AfdInputError(f"kernel benchmark results missing: {e.filename}") from None
    w, variant = ("fp8", "rowwise") if weight_bytes == 1 else ("bf16", "bf16_matmul")
    at = {r["E_local"]: r["ms"] for r in moe if r["w"] == w and r["M"] == 128}
    if 3 not in at or 12 not in at:
        raise AfdInputError(f"kernels_moe_experts.json has no {w} rows at M=128, E_local 3/12")
    per_expert_us = (at[12] - at[3]) * 1e3 / 9
    moe_rate = dims.expert_params() * weight_bytes / (per_expert_us * 1e-6)
    gemm = [r["weight_tbs"] for r in lin if r.get("variant") == variant and r["M"] <= 256]
    if not gemm:
        raise AfdInputError(f"kernels_fp8_linear.json has no {variant} rows at M <= 256")
    dense_rate = statistics.median(gemm) * 1e12
    return StreamRates(moe_rate, dense_rate,
                       f"one more {w} expert of the MoE kernel at M=128: {per_expert_us:.1f} µs "
                       f"({moe_rate / 1e12:.2f} TB/s); {variant} GEMM at M<=256: median "
                       f"{dense_rate / 1e12:.2f} TB/s of weights")


@dataclass(frozen=True)
class MeasuredFfn:
    """Rank times from a measured table of the same layer kind."""

    table: FfnTable
    dims: Step3Dims
    weight_bytes: int
    rates: StreamRates

    def units_per_token(self) -> float:
        """Work units per micro-batch token of the measured rank."""
        d, g = self.dims, self.table.ffn_gpus
        if self.table.kind == "dense":
            return 1.0 / g
        return (d.top_k + d.shared_params() / d.expert_params()) / g

    def units(self, work: RankWork) -> np.ndarray:
        """[draws, ranks] work units of each rank."""
        if work.kind == "dense":
            return work.shared_rows * work.shared_fraction
        d = self.dims
        return work.assignments + work.shared_rows * work.shared_fraction \
            * d.shared_params() / d.expert_params()

    def weights(self, work: RankWork) -> np.ndarray:
        """[draws, ranks] weight bytes each rank reads."""
        d, wb = self.dims, self.weight_bytes
        if work.kind == "dense":
            return np.full(work.shared_rows.shape, d.dense_params() * work.shared_fraction * wb)
        shared = work.shared_fraction * d.shared_params() if work.shared_fraction < 1 \
            else (work.shared_rows > 0) * d.shared_params()
        return (work.experts_hit * d.expert_params() + shared) * wb

    def measured_weights(self, tokens: np.ndarray) -> np.ndarray:
        """Weight bytes the measured rank reads at micro-batch sizes ``tokens``."""
        d, g, wb = self.dims, self.table.ffn_gpus, self.weight_bytes
        if self.table.kind == "dense":
            return np.full(np.shape(tokens), d.dense_params() / g * wb)
        local = d.experts / g
        hit = np.vectorize(expected_hit_fraction)(tokens, d.top_k, d.experts)
        return (local * hit * d.expert_params() + d.shared_params() / g) * wb

    def rank_us(self, work: RankWork) -> np.ndarray | None:
        """[draws, ranks] µs, or None when a rank's equivalent micro-batch is beyond the table.
        A rank with less work than the table's first point is priced at that point (an upper
        bound: the busiest rank, which sets the station, is never below it unless all are)."""
        t_eq = self.units(work) / self.units_per_token()
        busy = t_eq > 0
        if np.any(t_eq[busy] > self.table.tokens[-1]):
            return None
        t_eq = np.maximum(t_eq, self.table.tokens[0])
        base = np.interp(t_eq, self.table.tokens, self.table.us)
        rate = self.rates.dense if work.kind == "dense" else self.rates.moe
        extra = (self.weights(work) - self.measured_weights(t_eq)) / rate * 1e6
        return np.where(busy, np.maximum(base + extra, 0.0), 0.0)
