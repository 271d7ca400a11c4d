"""An AFD deployment: how many attention and FFN instances, GPUs each, micro-batches, context.

The paper's notation "xAyF" means x attention instances and y FFN instances (§7.3), each one
8-GPU server. Attention is data-parallel per GPU (§7.1); FFN experts are spread over all FFN
GPUs (EP, TP inside experts when there are more GPUs than experts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from .checks import AfdInputError, one_of, positive, positive_int

FANOUTS = ("instance", "rank")


@dataclass(frozen=True)
class WireFormat:
    """Bytes per token on the attention<->FFN link (docs/afd-model.md §3).

    Defaults: A->F is FP8 hidden + one fp32 scale per 128-element group + top-k int32 ids and
    bf16 weights; F->A is the bf16 FFN output (paper §7.1, Figure 6).
    """

    hidden_bytes: int = 1
    scale_group: int = 128
    scale_bytes: int = 4
    id_bytes: int = 4
    weight_bytes: int = 2
    return_bytes: int = 2

    def __post_init__(self) -> None:
        for name in ("hidden_bytes", "scale_group", "return_bytes"):
            positive_int(f"wire.{name}", getattr(self, name))
        for name in ("scale_bytes", "id_bytes", "weight_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise AfdInputError(f"wire.{name} must be an integer >= 0, got {value!r}")

    def a2f_bytes_per_token(self, hidden: int, top_k: int) -> int:
        """Bytes one token carries from attention to FFN (hidden, scales, routing)."""
        scales = 0 if self.hidden_bytes > 1 else -(-hidden // self.scale_group) * self.scale_bytes
        return hidden * self.hidden_bytes + scales + top_k * (self.id_bytes + self.weight_bytes)

    def f2a_bytes_per_token(self, hidden: int) -> int:
        """Bytes one token's FFN output carries back to attention."""
        return hidden * self.return_bytes


@dataclass(frozen=True)
class Deployment:
    """One AFD configuration. Counts are instances; ``*_gpus`` are GPUs per instance."""

    attn_instances: int
    ffn_instances: int
    attn_gpus: int = 8
    ffn_gpus: int = 8
    micro_batches: int = 3
    context: int = 4096  # tokens of context per sequence (the paper's "4K context")
    kv_bytes: int = 1  # bytes per KV element: 1 = FP8 / INT8, 2 = BF16
    weight_bytes: int = 1  # bytes per weight element: 1 = FP8
    fanout: str = "instance"  # "instance": one copy per FFN instance (paper); "rank": per FFN GPU
    oproj_tp: int = 1  # o_proj tensor-parallel degree inside an attention instance (paper: 8)
    sla_ms: float = 50.0
    wire: WireFormat = field(default_factory=WireFormat)

    def __post_init__(self) -> None:
        for name in ("attn_instances", "ffn_instances", "attn_gpus", "ffn_gpus",
                     "micro_batches", "context", "oproj_tp"):
            positive_int(name, getattr(self, name))
        for name in ("kv_bytes", "weight_bytes"):
            if getattr(self, name) not in (1, 2):
                raise AfdInputError(f"{name} must be 1 (FP8) or 2 (BF16), got "
                                    f"{getattr(self, name)!r}")
        one_of("fanout", self.fanout, FANOUTS)
        positive("sla_ms", self.sla_ms)
        if self.attn_gpus % self.oproj_tp:
            raise AfdInputError(f"oproj_tp ({self.oproj_tp}) must divide attn_gpus "
                                f"({self.attn_gpus})")

    @property
    def name(self) -> str:
        """The paper's notation for 8-GPU instances, e.g. ``2A2F``; else attention + FFN GPUs
        (``2+6``)."""
        if self.attn_gpus == self.ffn_gpus == 8:
            return f"{self.attn_instances}A{self.ffn_instances}F"
        return f"{self.attn_gpu_count}+{self.ffn_gpu_count}"

    @property
    def attn_gpu_count(self) -> int:
        """All attention GPUs."""
        return self.attn_instances * self.attn_gpus

    @property
    def ffn_gpu_count(self) -> int:
        """All FFN GPUs."""
        return self.ffn_instances * self.ffn_gpus

    @property
    def gpu_count(self) -> int:
        """All GPUs of the deployment (the denominator of tokens/s per GPU)."""
        return self.attn_gpu_count + self.ffn_gpu_count

    def batch(self, per_gpu: int) -> int:
        """Total batch (sequences) when each attention GPU holds ``per_gpu`` per micro-batch."""
        return per_gpu * self.micro_batches * self.attn_gpu_count

    def micro_batch(self, per_gpu: int) -> int:
        """Tokens in one micro-batch (all attention GPUs together)."""
        return per_gpu * self.attn_gpu_count

    def with_split(self, split: str) -> "Deployment":
        """A copy shaped as ``split``: ``"3A2F"`` (instances of 8 GPUs) or ``"2+6"`` (attention
        and FFN GPUs, one instance each)."""
        m = _HOST_SPLIT.match(split)
        if m:
            a, f = int(m.group(1)), int(m.group(2))
            if a < 1 or f < 1:
                raise AfdInputError(f"split {split!r} needs at least one attention and one FFN "
                                    f"GPU")
            return replace(self, attn_instances=1, ffn_instances=1, attn_gpus=a, ffn_gpus=f)
        a, f = parse_split(split)
        return replace(self, attn_instances=a, ffn_instances=f, attn_gpus=8, ffn_gpus=8)


_SPLIT = re.compile(r"^\s*(\d+)\s*A\s*(\d+)\s*F\s*$", re.IGNORECASE)
_HOST_SPLIT = re.compile(r"^\s*(\d+)\s*\+\s*(\d+)\s*$")


def parse_split(split: str) -> tuple[int, int]:
    """``"2A2F"`` -> ``(2, 2)``; raises for anything else (zero counts included)."""
    m = _SPLIT.match(split)
    if not m:
        raise AfdInputError(f"split must look like 2A2F (attention and FFN instances of 8 GPUs) "
                            f"or 2+6 (attention and FFN GPUs), got {split!r}")
    a, f = int(m.group(1)), int(m.group(2))
    if a < 1 or f < 1:
        raise AfdInputError(f"split {split!r} needs at least one attention and one FFN instance")
    return a, f
