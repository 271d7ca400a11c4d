"""Projection over several AFD splits: the best point under the SLA and the TGS-vs-TPOT curve."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .deployment import Deployment
from .pipeline import OperatingPoint, SearchResult, StageModel, best_under_sla, curve, evaluate

DEFAULT_SPLITS = ("1A1F", "2A1F", "1A2F", "2A2F", "3A2F", "4A2F", "3A3F")
PAPER_PER_GPU = 128  # the paper's 2A2F: 2,048-token micro-batches over 16 attention GPUs
CONTEXTS = (2048, 4096, 8192, 16384, 32768)


@dataclass(frozen=True)
class SplitResult:
    """One split at its best micro-batch count: the SLA search and the curve
    (per_gpu, TPOT ms, tokens/s/GPU)."""

    split: str
    micro_batches: int
    search: SearchResult
    curve: list[tuple[int, float, float]]

    def to_json(self) -> dict:
        """A JSON-ready dict."""
        p = self.search.point
        return {"split": self.split, "micro_batches": self.micro_batches,
                "bound": self.search.bound,
                "max_per_gpu_by_memory": self.search.max_per_gpu_by_memory,
                "best": p.to_json() if p else None,
                "curve": {"columns": ["per_gpu", "tpot_ms", "tokens_per_s_per_gpu"],
                          "rows": [[n, round(t, 3), round(g, 1)] for n, t, g in _thin(self.curve)]}}


def _thin(rows: list, keep: int = 48) -> list:
    """At most ``keep`` evenly spaced rows of a curve, always with its last row."""
    if len(rows) <= keep:
        return rows
    step = -(-len(rows) // keep)
    return rows[::step] + ([rows[-1]] if (len(rows) - 1) % step else [])


def project(model: StageModel, base: Deployment, splits: tuple[str, ...],
            micro_batches: tuple[int, ...] = ()) -> list[SplitResult]:
    """Search every split of ``splits`` with the settings of ``base``; with several
    ``micro_batches`` counts, keep the one giving the most tokens/s/GPU under the SLA."""
    out = []
    for split in splits:
        best: SplitResult | None = None
        for m in micro_batches or (base.micro_batches,):
            dep = replace(base.with_split(split), micro_batches=m)
            res = SplitResult(split, m, best_under_sla(model, dep),
                              [(p.per_gpu, p.tpot_ms, p.tokens_per_s_per_gpu)
                               for p in curve(model, dep)])
            if best is None or _tgs(res) > _tgs(best):
                best = res
        out.append(best)
    return out


def _tgs(r: SplitResult) -> float:
    return r.search.point.tokens_per_s_per_gpu if r.search.point else -1.0


def at_paper_point(model: StageModel, base: Deployment) -> OperatingPoint | None:
    """2A2F with 128 sequences per attention GPU per micro-batch (the paper's batch shape,
    scaled to ``base.micro_batches``)."""
    return evaluate(model, base.with_split("2A2F"), PAPER_PER_GPU)


def context_sweep(model: StageModel, base: Deployment, split: str = "2A2F",
                  contexts: tuple[int, ...] = CONTEXTS) -> list[dict]:
    """Best tokens/s/GPU under the SLA for ``split`` at each context length."""
    rows = []
    for ctx in contexts:
        res = best_under_sla(model, replace(base.with_split(split), context=ctx))
        p = res.point
        rows.append({"context": ctx, "bound": res.bound,
                     "per_gpu": p.per_gpu if p else 0, "batch": p.batch if p else 0,
                     "tpot_ms": p.tpot_ms if p else None,
                     "tokens_per_s_per_gpu": p.tokens_per_s_per_gpu if p else 0.0})
    return rows
