"""The measured-layer-times file (``step3-afd-layers/1``, written by perf/layers/): typed
dataclasses and a validating loader. Field by field description: docs/afd-model.md §6.

Times are µs for one layer and one micro-batch on one GPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .checks import AfdInputError
from .interp import interp1, interp2

FORMAT = "step3-afd-layers/1"
KINDS = ("moe", "dense")


@dataclass(frozen=True)
class AttentionGrid:
    """Attention layer time on one attention GPU: ``us[i][j]`` at tokens[i] sequences (one
    micro-batch) and context[j] tokens of context each."""

    tokens: tuple[int, ...]
    context: tuple[int, ...]
    us: tuple[tuple[float, ...], ...]

    def at(self, tokens: int, context: int) -> float | None:
        """Interpolated µs, or None outside the grid."""
        return interp2(self.tokens, self.context, self.us, tokens, context)


@dataclass(frozen=True)
class FfnTable:
    """FFN layer time on one FFN GPU when the experts are spread over ``ffn_gpus`` GPUs:
    ``us[i]`` for a micro-batch of tokens[i] tokens (all attention GPUs together)."""

    ffn_gpus: int
    kind: str
    tokens: tuple[int, ...]
    us: tuple[float, ...]

    def at(self, tokens: int) -> float | None:
        """Interpolated µs, or None outside the table."""
        return interp1(self.tokens, self.us, tokens)


@dataclass(frozen=True)
class Link:
    """Bytes per token each way and the link they cross (optional in the file)."""

    a2f_bytes_per_token: float
    f2a_bytes_per_token: float
    bandwidth_GBps: float
    latency_us: float


@dataclass(frozen=True)
class LayerTimes:
    """The whole measured-times file."""

    device: str
    kv_bytes: int
    weight_bytes: int
    attention: AttentionGrid
    ffn: tuple[FfnTable, ...]
    link: Link | None = None
    head: tuple[tuple[int, ...], tuple[float, ...]] | None = None  # (tokens, us) per micro-batch
    kv_capacity_tokens: int | None = None  # per attention GPU
    notes: str = ""

    def ffn_table(self, ffn_gpus: int, kind: str) -> FfnTable | None:
        """The table for this expert spread and layer kind, if measured."""
        for t in self.ffn:
            if t.ffn_gpus == ffn_gpus and t.kind == kind:
                return t
        return None


def load_layer_times(path: str | Path) -> LayerTimes:
    """Read and validate a measured-times file; errors name the file and the field."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise AfdInputError(f"{p}: no such file") from None
    except json.JSONDecodeError as e:
        raise AfdInputError(f"{p}: not JSON ({e})") from None
    return parse_layer_times(raw, str(p))


def parse_layer_times(raw: object, where: str = "layer times") -> LayerTimes:
    """Validate the decoded JSON object ``raw`` (see docs/afd-model.md §6)."""
    r = _Reader(where)
    obj = r.mapping(raw, "")
    fmt = r.get(obj, "format", str)
    if fmt != FORMAT:
        raise AfdInputError(f"{where}: format must be {FORMAT!r}, got {fmt!r}")
    att = r.mapping(r.get(obj, "attention", dict), "attention")
    tokens = r.axis(r.get(att, "tokens", list, "attention"), "attention.tokens")
    context = r.axis(r.get(att, "context", list, "attention"), "attention.context")
    rows = r.get(att, "us", list, "attention")
    if len(rows) != len(tokens):
        raise AfdInputError(f"{where}: attention.us has {len(rows)} rows, expected "
                            f"{len(tokens)} (one per attention.tokens)")
    us = tuple(r.times(row, f"attention.us[{i}]", len(context)) for i, row in enumerate(rows))
    ffn_raw = r.get(obj, "ffn", list)
    if not ffn_raw:
        raise AfdInputError(f"{where}: ffn must list at least one table")
    ffn = []
    for i, t in enumerate(ffn_raw):
        t = r.mapping(t, f"ffn[{i}]")
        g = r.get(t, "ffn_gpus", int, f"ffn[{i}]")
        if g < 1:
            raise AfdInputError(f"{where}: ffn[{i}].ffn_gpus must be >= 1, got {g}")
        kind = r.get(t, "kind", str, f"ffn[{i}]")
        if kind not in KINDS:
            raise AfdInputError(f"{where}: ffn[{i}].kind must be one of {KINDS}, got {kind!r}")
        tk = r.axis(r.get(t, "tokens", list, f"ffn[{i}]"), f"ffn[{i}].tokens")
        ffn.append(FfnTable(g, kind, tk, r.times(r.get(t, "us", list, f"ffn[{i}]"),
                                                 f"ffn[{i}].us", len(tk))))
    link = None
    if "link" in obj:
        lk = r.mapping(obj["link"], "link")
        vals = {k: r.number(r.get(lk, k, (int, float), "link"), f"link.{k}") for k in
                ("a2f_bytes_per_token", "f2a_bytes_per_token", "bandwidth_GBps", "latency_us")}
        if vals["bandwidth_GBps"] <= 0:
            raise AfdInputError(f"{where}: link.bandwidth_GBps must be > 0")
        link = Link(**vals)
    head = None
    if "head" in obj:
        hd = r.mapping(obj["head"], "head")
        ht = r.axis(r.get(hd, "tokens", list, "head"), "head.tokens")
        head = (ht, r.times(r.get(hd, "us", list, "head"), "head.us", len(ht)))
    cap = obj.get("kv_capacity_tokens")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise AfdInputError(f"{where}: kv_capacity_tokens must be a positive integer")
    kv = r.get(obj, "kv_bytes", int)
    wb = r.get(obj, "weight_bytes", int)
    for name, v in (("kv_bytes", kv), ("weight_bytes", wb)):
        if v not in (1, 2):
            raise AfdInputError(f"{where}: {name} must be 1 (FP8) or 2 (BF16), got {v}")
    return LayerTimes(device=r.get(obj, "device", str), kv_bytes=kv, weight_bytes=wb,
                      attention=AttentionGrid(tokens, context, us), ffn=tuple(ffn), link=link,
                      head=head, kv_capacity_tokens=cap, notes=str(obj.get("notes", "")))


@dataclass
class _Reader:
    """Field access with errors that name the file and the JSON path."""

    where: str

    def mapping(self, v: object, path: str) -> dict:
        if not isinstance(v, dict):
            raise AfdInputError(f"{self.where}: {path or 'top level'} must be an object")
        return v

    def get(self, obj: dict, key: str, typ, parent: str = ""):
        path = f"{parent}.{key}" if parent else key
        if key not in obj:
            raise AfdInputError(f"{self.where}: missing field {path!r}")
        v = obj[key]
        bad_bool = isinstance(v, bool) and typ in (int, (int, float))
        if bad_bool or not isinstance(v, typ):
            raise AfdInputError(f"{self.where}: field {path!r} has the wrong type "
                                f"({type(v).__name__})")
        return v

    def number(self, v: object, path: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise AfdInputError(f"{self.where}: {path} must be a number >= 0, got {v!r}")
        return float(v)

    def axis(self, v: list, path: str) -> tuple[int, ...]:
        if not v or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in v):
            raise AfdInputError(f"{self.where}: {path} must be a non-empty list of positive "
                                f"integers, got {v!r}")
        if any(b <= a for a, b in zip(v, v[1:])):
            raise AfdInputError(f"{self.where}: {path} must be strictly increasing, got {v!r}")
        return tuple(v)

    def times(self, v: object, path: str, n: int) -> tuple[float, ...]:
        if not isinstance(v, list) or len(v) != n:
            got = len(v) if isinstance(v, list) else type(v).__name__
            raise AfdInputError(f"{self.where}: {path} must list {n} times, got {got}")
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not x > 0 for x in v):
            raise AfdInputError(f"{self.where}: {path} must hold positive microseconds, got {v!r}")
        return tuple(float(x) for x in v)
