"""The micro-batch pipeline: per-layer time, TPOT, tokens/s per GPU, the batch search.

Derivation (docs/afd-model.md §4): each micro-batch visits the stations attention -> A->F
link -> FFN -> F->A link (plus the FFN host's collectives when present) once per layer, and
each station serves one micro-batch at a time. This is a ring with ``m`` circulating
micro-batches; its period per layer is

    T_layer = max(m * max_s t_s, sum_s t_s)

(the slowest station's busy time, or one micro-batch's round trip when too few micro-batches
circulate to hide it). TPOT = sum over layers of T_layer + m * t_head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from .checks import AfdInputError, positive_int
from .deployment import Deployment
from .roofline import Capacity
from .step3 import Step3Dims, layer_kinds


class StageModel(Protocol):
    """What the pipeline needs from a source of stage times (Roofline, Measured)."""

    label: str
    dims: Step3Dims

    def stations(self, dep: Deployment, per_gpu: int, kind: str) -> dict[str, float] | None:
        """Station times (µs, one layer, one micro-batch) in ring order; None = no data."""

    def head_us(self, dep: Deployment, per_gpu: int) -> float:
        """lm_head time of one micro-batch on one attention GPU (µs)."""

    def capacity(self, dep: Deployment) -> Capacity:
        """Memory plan (KV room, FFN weights)."""

    def per_gpu_limit(self, dep: Deployment) -> int | None:
        """Largest per-GPU micro-batch the source covers (None: any)."""


def layer_time_us(stations: Sequence[float], micro_batches: int) -> float:
    """Per-layer period of the ring: max(m * max(t), sum(t)) in the stations' unit."""
    positive_int("micro_batches", micro_batches)
    if not stations:
        raise AfdInputError("a layer needs at least one station")
    if any(t < 0 for t in stations):
        raise AfdInputError(f"station times must be >= 0, got {list(stations)}")
    return max(micro_batches * max(stations), sum(stations))


def tpot_us(layer_us: dict[str, float], counts: dict[str, int], head_us: float,
            micro_batches: int) -> float:
    """TPOT in µs: sum over layer kinds of count * T_layer, plus m lm_head passes."""
    missing = set(counts) - set(layer_us)
    if missing:
        raise AfdInputError(f"no layer time for layer kind(s) {sorted(missing)}")
    return sum(counts[k] * layer_us[k] for k in counts) + micro_batches * head_us


def tokens_per_s_per_gpu(batch: int, tpot_ms: float, gpus: int) -> float:
    """Throughput per GPU: every sequence of the batch emits one token per TPOT."""
    return batch / (tpot_ms / 1e3) / gpus


@dataclass(frozen=True)
class OperatingPoint:
    """One evaluated configuration; times in µs unless the name says otherwise."""

    split: str
    gpus: int
    micro_batches: int
    per_gpu: int  # sequences per attention GPU per micro-batch
    batch: int  # all sequences in flight
    micro_batch_tokens: int
    context: int
    stations: dict[str, dict[str, float]]  # layer kind -> station -> µs
    layer_us: dict[str, float]
    head_us: float
    tpot_ms: float
    tokens_per_s_per_gpu: float

    def to_json(self) -> dict:
        """A JSON-ready dict."""
        return dict(self.__dict__)


def evaluate(model: StageModel, dep: Deployment, per_gpu: int) -> OperatingPoint | None:
    """The operating point with ``per_gpu`` sequences per attention GPU per micro-batch, or
    None when the model has no data there."""
    positive_int("per_gpu", per_gpu)
    counts = layer_kinds(model.dims)
    stations: dict[str, dict[str, float]] = {}
    for kind in counts:
        st = model.stations(dep, per_gpu, kind)
        if st is None:
            return None
        stations[kind] = st
    layer = {k: layer_time_us(list(v.values()), dep.micro_batches) for k, v in stations.items()}
    head = model.head_us(dep, per_gpu)
    tpot_ms = tpot_us(layer, counts, head, dep.micro_batches) / 1e3
    batch = dep.batch(per_gpu)
    return OperatingPoint(
        split=dep.name, gpus=dep.gpu_count, micro_batches=dep.micro_batches, per_gpu=per_gpu,
        batch=batch, micro_batch_tokens=dep.micro_batch(per_gpu), context=dep.context,
        stations=stations, layer_us=layer, head_us=head, tpot_ms=tpot_ms,
        tokens_per_s_per_gpu=tokens_per_s_per_gpu(batch, tpot_ms, dep.gpu_count))


@dataclass(frozen=True)
class SearchResult:
    """The best point under the SLA and what stops a larger batch."""

    point: OperatingPoint | None
    bound: str  # "sla", "kv-capacity", "measured-range", "ffn-memory"
    max_per_gpu_by_memory: int


def per_gpu_cap(model: StageModel, dep: Deployment) -> tuple[int, str]:
    """Largest per-GPU micro-batch allowed by KV memory and the data range, and which binds."""
    cap = model.capacity(dep)
    if not cap.ffn_fits:
        return 0, "ffn-memory"
    by_memory = cap.max_seqs_per_attn_gpu // dep.micro_batches
    limit = model.per_gpu_limit(dep)
    if limit is not None and limit < by_memory:
        return limit, "measured-range"
    return by_memory, "kv-capacity"


def curve(model: StageModel, dep: Deployment) -> list[OperatingPoint]:
    """Operating points for per_gpu = 1 .. the memory/data cap (SLA ignored); sizes the model
    has no data for (below a measured grid's first point) are skipped."""
    cap, _ = per_gpu_cap(model, dep)
    points = (evaluate(model, dep, n) for n in range(1, cap + 1))
    return [p for p in points if p is not None]


def best_under_sla(model: StageModel, dep: Deployment) -> SearchResult:
    """Largest-throughput point with TPOT <= ``dep.sla_ms``. Scans every per-GPU size up to the
    memory/data cap (no monotonicity assumed) and names the constraint that binds."""
    cap, cap_reason = per_gpu_cap(model, dep)
    points = curve(model, dep)
    feasible = [p for p in points if p.tpot_ms <= dep.sla_ms]
    best = max(feasible, key=lambda p: p.tokens_per_s_per_gpu, default=None)
    if best is None:
        bound = "sla" if points else (cap_reason if cap == 0 else "measured-range")
    elif any(p.per_gpu > best.per_gpu for p in points):
        bound = "sla"
    elif best.per_gpu < cap:
        bound = "measured-range"  # the data ran out before the memory bound
    else:
        bound = cap_reason
    return SearchResult(point=best, bound=bound, max_per_gpu_by_memory=cap)
