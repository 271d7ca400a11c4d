"""Bytes an attention rank puts on the links, counted per (layer, micro-batch) call.

`a2f_bytes` / `f2a_bytes` count the tensors' data of every message (wire_format.py's layout),
not the per-message header (8 bytes per tensor plus 16) or the 16-byte alignment of each tensor.
`tokens` counts each token of a step once (at layer 0); per token = over all layers. `copies`:
token rows sent (a token sent to 3 FFN ranks counts 3), by layer kind.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from step3_trt.runtime.wire_format import nbytes


@dataclass
class LinkStats:
    tokens: int = 0
    a2f_bytes: int = 0
    f2a_bytes: int = 0
    a2f_messages: int = 0
    empty_calls: int = 0  # (layer, micro-batch) calls without a token (they keep the schedule)
    empty_messages: int = 0  # messages without a token in calls with tokens: idle FFN ranks
    moe_tokens: int = 0  # token-layers of MoE layers
    moe_copies: int = 0
    dense_tokens: int = 0
    dense_copies: int = 0

    def sent(self, layer: int, moe: bool, tokens: int, messages: list[list]) -> None:
        """One call's A -> F messages (each a list of tensors, first dimension = its rows)."""
        if layer == 0:
            self.tokens += tokens
        copies = sum(m[0].shape[0] for m in messages)
        self.a2f_bytes += sum(nbytes(m) for m in messages)
        self.a2f_messages += len(messages)
        if tokens:
            self.empty_messages += sum(m[0].shape[0] == 0 for m in messages)
        else:
            self.empty_calls += 1
        if moe:
            self.moe_tokens, self.moe_copies = self.moe_tokens + tokens, self.moe_copies + copies
        else:
            self.dense_tokens += tokens
            self.dense_copies += copies

    def received(self, partials: list) -> None:
        self.f2a_bytes += nbytes(partials)

    def add(self, other: "LinkStats") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "LinkStats":
        return cls(**{f.name: int(raw[f.name]) for f in fields(cls)})

    def summary(self) -> dict:
        """The counters and what they make per token (None before any token)."""
        return {**self.to_dict(),
                "a2f_bytes_per_token": _ratio(self.a2f_bytes, self.tokens),
                "f2a_bytes_per_token": _ratio(self.f2a_bytes, self.tokens),
                "moe_fanout": _ratio(self.moe_copies, self.moe_tokens),
                "dense_fanout": _ratio(self.dense_copies, self.dense_tokens)}


def _ratio(n: int, d: int) -> float | None:
    return round(n / d, 3) if d else None
