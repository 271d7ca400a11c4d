"""Text tables, JSON files and the TGS-vs-TPOT plot of the AFD model's results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from .checks import AfdInputError
from .pipeline import OperatingPoint
from .projection import SplitResult
from .validation import Check


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A fixed-width text table; floats are printed by the caller."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0 or 0.01 <= abs(v) < 1e5:
        return f"{v:,.4g}" if abs(v) < 10 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{v:.3g}"


def checks_table(checks: Sequence[Check]) -> str:
    """Model vs paper, one row per check."""
    rows = []
    for c in checks:
        err = "-" if c.rel_error is None else f"{c.rel_error:+.1%}"
        tol = "info" if c.tolerance is None else f"±{c.tolerance:.1%}"
        verdict = {True: "ok", False: "FAIL", None: ""}[c.ok]
        rows.append([c.name, c.source, _num(c.paper), _num(c.model), c.unit, err, tol, verdict])
    return table(["check", "source", "paper", "model", "unit", "error", "tolerance", ""], rows)


def stations_table(p: OperatingPoint, sla_ms: float, layers: int) -> str:
    """Per-layer station times (µs) of one operating point, MoE and dense layers side by side."""
    kinds = list(p.stations)
    names: list[str] = []
    for k in kinds:
        names += [n for n in p.stations[k] if n not in names]
    rows = [[n] + [_num(p.stations[k].get(n)) for k in kinds] for n in names]
    m = p.micro_batches
    rows.append(["m x max station"] + [_num(m * max(p.stations[k].values())) for k in kinds])
    rows.append(["sum of stations"] + [_num(sum(p.stations[k].values())) for k in kinds])
    rows.append(["layer period"] + [_num(p.layer_us[k]) for k in kinds])
    budget = sla_ms * 1e3 / (m * layers)
    head = table(["station (µs / layer / micro-batch)"] + [f"{k} layer" for k in kinds], rows)
    return (f"{p.split}: {p.per_gpu} seqs/attention GPU/micro-batch, m={m}, batch {p.batch}, "
            f"context {p.context}; station budget {sla_ms:g} ms/({m}x{layers}) = {budget:.0f} µs\n"
            f"{head}\nlm_head {p.head_us:.0f} µs x {m} per step; TPOT {p.tpot_ms:.2f} ms; "
            f"{p.tokens_per_s_per_gpu:,.0f} tokens/s/GPU on {p.gpus} GPUs")


def splits_table(results: Sequence[SplitResult], reference: float) -> str:
    """Best point under the SLA per split, next to the paper's reference throughput."""
    rows = []
    for r in results:
        p = r.search.point
        if p is None:
            rows.append([r.split, "-", r.micro_batches, "-", "-", "-", "-", r.search.bound, "-"])
            continue
        rows.append([r.split, p.gpus, p.micro_batches, p.per_gpu, p.batch, f"{p.tpot_ms:.1f}",
                     f"{p.tokens_per_s_per_gpu:,.0f}", r.search.bound,
                     f"{p.tokens_per_s_per_gpu / reference:.2f}x"])
    return table(["split", "GPUs", "m", "seqs/GPU/mb", "batch", "TPOT ms", "tok/s/GPU", "bound",
                  f"vs {reference:,.0f}"], rows)


def context_table(rows: Sequence[dict]) -> str:
    """Best tokens/s/GPU under the SLA against context length."""
    return table(["context", "seqs/GPU/mb", "batch", "TPOT ms", "tok/s/GPU", "bound"],
                 [[r["context"], r["per_gpu"], r["batch"], _num(r["tpot_ms"]),
                   f"{r['tokens_per_s_per_gpu']:,.0f}", r["bound"]] for r in rows])


def write_json(path: Path, obj: dict) -> Path:
    """Write ``obj`` as indented JSON, creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=1)
    path.write_text(_inline_rows(text) + "\n")
    return path


def _inline_rows(text: str) -> str:
    """Put innermost numeric lists ([1, 2.5, 3]) on one line, to keep curve tables short."""
    import re
    return re.sub(r"\[\s+([-0-9.e, \n]+?)\s+\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def plot_curves(path: Path, results: Sequence[SplitResult], title: str, sla_ms: float,
                marks: Sequence[tuple[str, float, float]] = ()) -> Path:
    """Tokens/s/GPU against TPOT, one curve per split; ``marks`` = (label, TPOT ms, TGS)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise AfdInputError("plots need matplotlib: pip install -e '.[perf]', "
                            "or pass --no-plot") from None
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for r in results:
        if r.curve:
            ax.plot([c[1] for c in r.curve], [c[2] for c in r.curve], label=r.split, lw=1.6)
        if r.search.point is not None:
            p = r.search.point
            ax.plot([p.tpot_ms], [p.tokens_per_s_per_gpu], "o", color="black", ms=3)
    for label, tpot, tgs in marks:
        ax.plot([tpot], [tgs], "*", ms=12, label=label)
    ax.axvline(sla_ms, color="grey", ls="--", lw=1)
    ax.text(sla_ms, ax.get_ylim()[1] * 0.97, f" {sla_ms:g} ms SLA", color="grey", va="top")
    ax.set_xlim(0, sla_ms * 1.6)
    ax.set_xlabel("TPOT (ms)")
    ax.set_ylabel("tokens/s per GPU")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
