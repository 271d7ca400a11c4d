"""Analytic stage times: bytes / bandwidth and FLOPs / peak per operation (docs/afd-model.md §2-4).

Every time here is for ONE layer and ONE micro-batch, in microseconds. ``per_gpu`` is the
number of sequences (= decoded tokens) each attention GPU holds in one micro-batch; the
micro-batch has ``per_gpu * attention GPUs`` tokens and every one of them reaches the FFN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .checks import AfdInputError, fraction, nonnegative
from .deployment import Deployment
from .hardware import GIB, Hardware
from .step3 import Step3Dims

US = 1e6  # microseconds per second
# lm_head is never quantized (step3_trt/quant/scheme.py NOT_CONVERTED) and the `head` graph runs
# in the activation dtype, BF16 on GPU: its weights are 2 bytes in every engine, FP8 included.
HEAD_WEIGHT_BYTES = 2
LOGIT_BYTES = 4  # the head graph returns float32 logits [S, V]


def op_us(nbytes: float, flops: float, bw: float, peak: float) -> float:
    """Roofline time of one kernel in µs: max(bytes / bw, flops / peak), bw in bytes/s and peak
    in FLOP/s."""
    return max(nbytes / bw, flops / peak) * US


@dataclass(frozen=True)
class Capacity:
    """Memory plan of one attention GPU and one FFN GPU (bytes)."""

    attn_weight_bytes: float
    kv_bytes_per_seq: float
    max_seqs_per_attn_gpu: int
    ffn_weight_bytes: float
    ffn_fits: bool


@dataclass(frozen=True)
class Roofline:
    """Stage times from ceilings (optionally derated) of one GPU type.

    ``attention_fit`` = (µs at zero KV, µs per MB of KV read) replaces the attention roofline by
    a measured line (the paper's Table 9 gives one for H800); efficiencies divide the ceilings.
    """

    hw: Hardware
    dims: Step3Dims = field(default_factory=Step3Dims)
    hbm_eff: float = 1.0  # attention and lm_head memory streams
    ffn_hbm_eff: float = 1.0  # FFN weight streams
    flop_eff: float = 1.0
    net_eff: float = 1.0
    stage_overhead_us: float = 0.0  # added to the attention and FFN stages (launches, syncs)
    reserve_bytes: float = 8 * GIB  # per GPU: activations, workspaces, graphs
    intra_collectives: bool = True  # "instance" fanout: all-gather / reduce-scatter in the FFN host
    include_head: bool = True  # lm_head on the attention GPUs, once per micro-batch per step
    ffn_imbalance: float = 1.0  # busiest FFN GPU's routed tokens / the uniform share
    attention_fit: tuple[float, float] | None = None
    label: str = "roofline"

    def __post_init__(self) -> None:
        for name in ("hbm_eff", "ffn_hbm_eff", "flop_eff", "net_eff"):
            fraction(name, getattr(self, name))
        nonnegative("stage_overhead_us", self.stage_overhead_us)
        nonnegative("reserve_bytes", self.reserve_bytes)
        if self.ffn_imbalance < 1:
            raise AfdInputError(f"ffn_imbalance must be >= 1, got {self.ffn_imbalance!r}")
        if self.attention_fit is not None:
            t0, slope = self.attention_fit
            nonnegative("attention_fit[0]", t0)
            nonnegative("attention_fit[1]", slope)

    # ---------------- attention (docs §2.1) ----------------
    def attention_us(self, dep: Deployment, per_gpu: int, kind: str) -> float:
        """One attention GPU, one layer, ``per_gpu`` sequences at ``dep.context`` (µs)."""
        d, wb = self.dims, dep.weight_bytes
        kv = per_gpu * dep.context * d.kv_elems_per_token() * dep.kv_bytes
        if self.attention_fit is not None:
            t0, us_per_mb = self.attention_fit
            return t0 + us_per_mb * kv / 1e6 + self.stage_overhead_us
        bw, gemm = self.hw.hbm_bw * self.hbm_eff, self.hw.gemm_flops(wb) * self.flop_eff
        router = d.router_params() if kind == "moe" else 0
        w_in = d.attn_in_params() + router
        t = op_us(w_in * wb + per_gpu * d.hidden * 2, 2.0 * per_gpu * w_in, bw, gemm)
        core_peak = self.hw.gemm_flops(dep.kv_bytes) * self.flop_eff
        t += op_us(kv, per_gpu * dep.context * d.attn_core_flops_per_ctx_token(), bw, core_peak)
        w_out = d.attn_out_params()
        t += op_us(w_out * wb / dep.oproj_tp, 2.0 * per_gpu * w_out, bw, gemm)
        return t + self.stage_overhead_us

    # ---------------- FFN (docs §2.2) ----------------
    def ffn_us(self, dep: Deployment, tokens: int, kind: str) -> float:
        """One FFN GPU, one layer, a micro-batch of ``tokens`` tokens (µs)."""
        d, wb, g = self.dims, dep.weight_bytes, dep.ffn_gpu_count
        bw, gemm = self.hw.hbm_bw * self.ffn_hbm_eff, self.hw.gemm_flops(wb) * self.flop_eff
        act = dep.wire.hidden_bytes + 2  # read the dispatched input, write a bf16 output
        if kind == "dense":
            w = d.dense_params()
            return op_us(w * wb / g + tokens * d.hidden * act, 2.0 * tokens * w / g, bw, gemm) \
                + self.stage_overhead_us
        e_max = math.ceil(d.experts / g) if g <= d.experts else d.experts / g
        hit = expected_hit_fraction(tokens, d.top_k, d.experts)
        assigned = tokens * d.top_k * e_max / d.experts * self.ffn_imbalance
        w_e = d.expert_params()
        t = op_us(e_max * hit * w_e * wb + assigned * d.hidden * act,
                  2.0 * assigned * w_e, bw, gemm)
        w_s = d.shared_params()
        t += op_us(w_s * wb / g + tokens * d.hidden * act, 2.0 * tokens * w_s / g, bw, gemm)
        return t + self.stage_overhead_us

    # ---------------- link (docs §3) ----------------
    def comm_us(self, dep: Deployment, per_gpu: int) -> dict[str, float]:
        """Transfer stations of one micro-batch, one layer (µs): a2f, f2a and, for the paper's
        per-instance fanout, the FFN host's all-gather and reduce-scatter over NVLink."""
        d = self.dims
        a2f = dep.wire.a2f_bytes_per_token(d.hidden, d.top_k)
        f2a = dep.wire.f2a_bytes_per_token(d.hidden)
        tokens = dep.micro_batch(per_gpu)
        if dep.fanout == "instance":
            dests, ffn_tokens = dep.ffn_instances, tokens / dep.ffn_gpus
        else:
            dests, ffn_tokens = dep.ffn_gpu_count, float(tokens)
        nic, lat = self.hw.nic_bw * self.net_eff, self.hw.link_latency_s * US
        out = {
            "a2f": max(per_gpu * dests, ffn_tokens) * a2f / nic * US + lat,
            "f2a": max(per_gpu * dests, ffn_tokens) * f2a / nic * US + lat,
        }
        if dep.fanout == "instance" and self.intra_collectives and dep.ffn_gpus > 1:
            share = (dep.ffn_gpus - 1) / dep.ffn_gpus * tokens / self.hw.nvlink_bw * US
            out["ffn_gather"] = share * a2f
            out["ffn_scatter"] = share * f2a
        return out

    # ---------------- the common interface (pipeline.StageModel) ----------------
    def stations(self, dep: Deployment, per_gpu: int, kind: str) -> dict[str, float]:
        """Ring stations in pipeline order for one layer of ``kind`` (µs per micro-batch)."""
        comm = self.comm_us(dep, per_gpu)
        order = {"attention": self.attention_us(dep, per_gpu, kind), "a2f": comm["a2f"]}
        if "ffn_gather" in comm:
            order["ffn_gather"] = comm["ffn_gather"]
        order["ffn"] = self.ffn_us(dep, dep.micro_batch(per_gpu), kind)
        if "ffn_scatter" in comm:
            order["ffn_scatter"] = comm["ffn_scatter"]
        order["f2a"] = comm["f2a"]
        return order

    def head_us(self, dep: Deployment, per_gpu: int) -> float:
        """Final norm + lm_head on one attention GPU for one micro-batch (µs); 0 if excluded.
        BF16 weights whatever the engine's weight dtype (``HEAD_WEIGHT_BYTES``), float32 logits
        written."""
        if not self.include_head:
            return 0.0
        d, w = self.dims, self.dims.vocab * self.dims.hidden
        nbytes = w * HEAD_WEIGHT_BYTES + per_gpu * (d.hidden * 2 + d.vocab * LOGIT_BYTES)
        return op_us(nbytes, 2.0 * per_gpu * w, self.hw.hbm_bw * self.hbm_eff,
                     self.hw.gemm_flops(HEAD_WEIGHT_BYTES) * self.flop_eff)

    def capacity(self, dep: Deployment) -> Capacity:
        """KV room on an attention GPU and the FFN weights per FFN GPU (docs §5)."""
        d, wb = self.dims, dep.weight_bytes
        per_layer = d.attn_in_params() * wb + d.attn_out_params() * wb / dep.oproj_tp
        attn_w = d.layers * per_layer + d.moe_layers * d.router_params() * wb \
            + d.vocab * d.hidden * (2 + HEAD_WEIGHT_BYTES)  # bf16 embedding and lm_head
        kv_seq = dep.context * d.layers * d.kv_elems_per_token() * dep.kv_bytes
        free = self.hw.memory_bytes - self.reserve_bytes - attn_w
        ffn_w = d.ffn_weight_params_total() * wb / dep.ffn_gpu_count
        return Capacity(attn_weight_bytes=attn_w, kv_bytes_per_seq=kv_seq,
                        max_seqs_per_attn_gpu=max(0, int(free // kv_seq)),
                        ffn_weight_bytes=ffn_w,
                        ffn_fits=ffn_w + self.reserve_bytes <= self.hw.memory_bytes)

    def per_gpu_limit(self, dep: Deployment) -> int | None:
        """Largest ``per_gpu`` the model has data for (None: unlimited)."""
        return None


def expected_hit_fraction(tokens: float, top_k: int, experts: int) -> float:
    """Expected fraction of experts that receive >= 1 of ``tokens`` tokens under uniform top-k
    routing: 1 - (1 - k/E)^tokens (docs §2.2)."""
    if tokens <= 0:
        return 0.0
    return 1.0 - (1.0 - top_k / experts) ** tokens
