"""The stage model built on measured per-layer times (layers_json.LayerTimes).

Anything the file does not give (the link, the lm_head, the KV capacity) comes from the
roofline model of the named GPU preset (docs/afd-model.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .checks import AfdInputError
from .deployment import Deployment
from .interp import interp1
from .layers_json import LayerTimes
from .roofline import Capacity, Roofline


@dataclass(frozen=True)
class Measured:
    """Stage model from measured layer times; link, head and capacity fall back to ``fallback``."""

    data: LayerTimes
    fallback: Roofline
    label: str = "measured"

    @property
    def dims(self):
        """Model dimensions (those of the fallback roofline)."""
        return self.fallback.dims

    def check(self, dep: Deployment) -> None:
        """Refuse a deployment whose dtypes differ from the measurement's."""
        if (dep.kv_bytes, dep.weight_bytes) != (self.data.kv_bytes, self.data.weight_bytes):
            raise AfdInputError(
                f"deployment has kv_bytes={dep.kv_bytes}, weight_bytes={dep.weight_bytes} but "
                f"the measurement has {self.data.kv_bytes}, {self.data.weight_bytes}")

    def stations(self, dep: Deployment, per_gpu: int, kind: str) -> dict[str, float] | None:
        """attention, a2f, ffn, f2a in µs (the measured FFN includes its host's collectives)."""
        self.check(dep)
        att = self.data.attention.at(per_gpu, dep.context)
        table = self.data.ffn_table(dep.ffn_gpu_count, kind) \
            or self.data.ffn_table(dep.ffn_gpu_count, "moe")  # dense falls back to MoE (slower)
        if att is None or table is None:
            return None
        ffn = table.at(dep.micro_batch(per_gpu))
        if ffn is None:
            return None
        a2f, f2a = self.link_us(dep, per_gpu)
        return {"attention": att, "a2f": a2f, "ffn": ffn, "f2a": f2a}

    def link_us(self, dep: Deployment, per_gpu: int) -> tuple[float, float]:
        """(A->F, F->A) µs: from the file's link block if given, else the roofline link."""
        if self.data.link is None:
            comm = replace(self.fallback, intra_collectives=False).comm_us(dep, per_gpu)
            return comm["a2f"], comm["f2a"]
        lk = self.data.link
        if dep.fanout == "instance":
            dests, ffn_tokens = dep.ffn_instances, dep.micro_batch(per_gpu) / dep.ffn_gpus
        else:
            dests, ffn_tokens = dep.ffn_gpu_count, float(dep.micro_batch(per_gpu))
        tokens = max(per_gpu * dests, ffn_tokens)
        bw = lk.bandwidth_GBps * 1e9 / 1e6  # bytes per µs
        return (tokens * lk.a2f_bytes_per_token / bw + lk.latency_us,
                tokens * lk.f2a_bytes_per_token / bw + lk.latency_us)

    def head_us(self, dep: Deployment, per_gpu: int) -> float:
        """Measured lm_head µs if the file has it (clamped to its range), else roofline."""
        if self.data.head is None:
            return self.fallback.head_us(dep, per_gpu)
        tokens, us = self.data.head
        x = min(max(per_gpu, tokens[0]), tokens[-1])
        return interp1(tokens, us, x) or 0.0

    def capacity(self, dep: Deployment) -> Capacity:
        """The fallback's memory plan, with the file's KV capacity when it gives one."""
        cap = self.fallback.capacity(dep)
        if self.data.kv_capacity_tokens is None:
            return cap
        return replace(cap, max_seqs_per_attn_gpu=self.data.kv_capacity_tokens // dep.context)

    def per_gpu_limit(self, dep: Deployment) -> int | None:
        """The largest attention tokens measured (and FFN tokens / attention GPUs)."""
        limit = self.data.attention.tokens[-1]
        table = self.data.ffn_table(dep.ffn_gpu_count, "moe")
        if table is None:
            return 0
        return min(limit, table.tokens[-1] // dep.attn_gpu_count)
