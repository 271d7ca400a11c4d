"""The stage model of this project's AFD runtime as it is being built (docs/afd-model.md §10).

Lockstep steps: every attention rank runs every step with the same micro-batch count; per
(layer, micro-batch) each FFN rank receives one message from each attention rank (empty ones
allowed), runs ONE FFN call on the union of the tokens routed to it, and returns one partial per
token; attention ranks combine the partials in a fixed order. What a token costs depends on
the placement (placement.py), the wire format, the transport (links.py), the host time per call
and the device work around the graphs (dataplane.py).

Ring stations per layer: attention host, attention GPU, A->F, [instance all-gather], FFN host,
FFN GPU (the busiest FFN rank, averaged over sampled routings), [reduce-scatter], F->A. Host
time is its own station: the rank's thread and its GPU work on different micro-batches at once,
but one micro-batch's round trip passes both.

Stage times come from ``base``: a Roofline, or measured layer times (Measured); with measured
FFN tables each rank's time is read off the table at its equivalent work (measured_ffn.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .checks import AfdInputError, nonnegative, one_of, positive_int
from .dataplane import DeviceCosts, attention_side_us, ffn_side_us, head_side_us
from .deployment import Deployment, WireFormat
from .links import Transport, torch_transport
from .measured import Measured
from .measured_ffn import MeasuredFfn, StreamRates, stream_rates
from .placement import LABELS, PLACEMENTS, Layout, RankWork, dense_work, ffn_weight_bytes, \
    moe_work
from .rank_time import BUCKETS, ffn_rank_us
from .roofline import Capacity, Roofline
from .routing import RoutingSampler, RoutingStats, load_routing

RESULTS = Path(__file__).resolve().parents[1] / "results"
DEFAULT_ROUTING = RESULTS / "afd_model_routing_step3-tiny.json"
WIRES = ("engine", "fp8", "bf16", "fp32")
# Assumed until the runtime-core issue measures it: the in-process decode step of the bundled
# model under CUDA graphs at batch 1 on the H100 took 1.80 ms for 20 graph calls (embed, 6 x
# attention, 12 x FFN, head; perf/results/runtime_decode_h100.json): <= 90 µs per call, GPU
# time of the small model's kernels included, and no transport.
DEFAULT_HOST_OVERHEAD_US = 90.0
DEFAULT_OP_US = 2.0  # one small kernel on the rank's stream (assumed)
TABLE_WIDTH = 65536 // 64  # block-table entries: max_seq_len / block_size of h100-1gpu.yaml
GRID = tuple(int(b) for b in BUCKETS if b <= 1024)  # per-attention-rank sizes sampled exactly


def wire_format(name: str, weight_bytes: int) -> WireFormat:
    """The wire of the runtime: FP8 hidden states + fp32 group scales + int32 ids + routing
    weights in the activation dtype A->F and activation-dtype partials F->A. ``engine``: FP8 for
    FP8 engines, BF16 for BF16 ones (the GPU activation dtype)."""
    one_of("wire", name, WIRES)
    if name == "engine":
        name = "fp8" if weight_bytes == 1 else "bf16"
    size = {"fp8": 1, "bf16": 2, "fp32": 4}[name]
    act = 4 if name == "fp32" else 2
    return WireFormat(hidden_bytes=size, weight_bytes=act, return_bytes=act)


@dataclass(frozen=True)
class RuntimeSpec:
    """What the runtime is made of; every field is a model input (docs §10.1)."""

    placement: str = "balanced"
    transport: Transport = field(default_factory=torch_transport)
    wire: str = "engine"
    host_overhead_us: tuple[float, float] = (DEFAULT_HOST_OVERHEAD_US, DEFAULT_HOST_OVERHEAD_US)
    routing: RoutingStats = field(default_factory=lambda: load_routing(DEFAULT_ROUTING))
    instance_gpus: int = 8  # FFN GPUs per instance (``instance`` placement)
    host_gpus: int = 8  # GPUs per host: a deployment this small runs on one host
    op_us: float = DEFAULT_OP_US
    sampler_layers: int = 8
    draws_per_layer: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        one_of("placement", self.placement, PLACEMENTS)
        one_of("wire", self.wire, WIRES)
        if len(self.host_overhead_us) != 2:
            raise AfdInputError("host_overhead_us must be (attention side, FFN side)")
        for side, v in zip(("attention", "FFN"), self.host_overhead_us):
            nonnegative(f"host overhead ({side} side)", v)
        for name in ("instance_gpus", "host_gpus", "sampler_layers", "draws_per_layer"):
            positive_int(name, getattr(self, name))
        nonnegative("op_us", self.op_us)

    @property
    def label(self) -> str:
        """Short description, e.g. ``P2 balanced / torch``."""
        return f"{LABELS[self.placement]} {self.placement} / {self.transport.name}"


class RuntimeModel:
    """StageModel (pipeline.py) of the runtime on top of ``base`` stage times."""

    def __init__(self, base: Roofline | Measured, spec: RuntimeSpec,
                 sampler: RoutingSampler | None = None):
        self.base, self.spec = base, spec
        self.roof: Roofline = base if isinstance(base, Roofline) else base.fallback
        self.label = f"runtime {spec.label}, {base.label} layer times"
        self.sampler = sampler or make_sampler(spec, self.dims)
        if (self.sampler.stats, self.sampler.layers) != (spec.routing, spec.sampler_layers):
            raise AfdInputError("the sampler was made for other routing statistics")
        self._figures: dict[tuple, dict[str, float]] = {}
        self._stream: dict[int, StreamRates] = {}

    @property
    def dims(self):
        """Model dimensions (those of the base)."""
        return self.base.dims

    # ---------------- the StageModel interface ----------------
    def stations(self, dep: Deployment, per_gpu: int, kind: str) -> dict[str, float] | None:
        """Ring stations (µs, one layer, one micro-batch); None where the base has no data."""
        attention = self._attention_us(dep, per_gpu, kind)
        if attention is None:
            return None
        f = self.figures(dep, per_gpu, kind)
        if np.isnan(f["ffn_us"]):
            return None
        host_a, host_f = self.spec.host_overhead_us
        out = {"attn_host": host_a, "attention": attention + f["attention_dataplane_us"],
               "a2f": f["a2f_us"]}
        if "gather_us" in f:
            out["ffn_gather"] = f["gather_us"]
        out["ffn_host"] = host_f
        out["ffn"] = f["ffn_us"] + f["ffn_dataplane_us"]
        if "scatter_us" in f:
            out["ffn_scatter"] = f["scatter_us"]
        out["f2a"] = f["f2a_us"]
        return out

    def head_us(self, dep: Deployment, per_gpu: int) -> float:
        """Embedding + head of one micro-batch per step: the base's head time, the graphs'
        copies and clones, and the host time of those two calls."""
        return self.base.head_us(dep, per_gpu) + head_side_us(self._device(), self.dims,
                                                              per_gpu) \
            + 2 * self.spec.host_overhead_us[0]

    def capacity(self, dep: Deployment) -> Capacity:
        """The base's memory plan with the placement's FFN weights per rank."""
        cap = self.base.capacity(dep)
        w = ffn_weight_bytes(self.spec.placement, self.dims, dep.ffn_gpu_count, dep.weight_bytes)
        fits = w + self.roof.reserve_bytes <= self.roof.hw.memory_bytes
        return replace(cap, ffn_weight_bytes=w, ffn_fits=fits)

    def per_gpu_limit(self, dep: Deployment) -> int | None:
        """The measured grids' limit (attention sequences, FFN tokens / attention GPUs)."""
        if isinstance(self.base, Roofline):
            return None
        data = self.base.data
        tables = [t for t in data.ffn if t.kind == "moe"]
        return min(data.attention.tokens[-1], tables[0].tokens[-1] // dep.attn_gpu_count)

    # ---------------- routing-dependent figures ----------------
    def figures(self, dep: Deployment, per_gpu: int, kind: str) -> dict[str, float]:
        """Link, FFN and data-plane times and traffic figures at ``per_gpu`` sequences per
        attention rank: exact on GRID, linear between its points (exact where a neighbouring
        point is outside a measured FFN table)."""
        if per_gpu in GRID or per_gpu > GRID[-1]:
            return self._figures_at(dep, per_gpu, kind)
        hi = next(g for g in GRID if g > per_gpu)
        lo = GRID[GRID.index(hi) - 1]
        a, b = self._figures_at(dep, lo, kind), self._figures_at(dep, hi, kind)
        if np.isnan(a["ffn_us"]) or np.isnan(b["ffn_us"]):  # a neighbour is off the table
            return self._figures_at(dep, per_gpu, kind)
        t = (per_gpu - lo) / (hi - lo)
        return {k: a[k] + (b[k] - a[k]) * t for k in a}

    def work(self, dep: Deployment, per_gpu: int, kind: str) -> RankWork:
        """Sampled work of every FFN rank for micro-batches of this deployment."""
        layout = self.layout(dep)
        if kind == "dense":
            return dense_work(layout, per_gpu)
        ids = self.sampler.draws(dep.micro_batch(per_gpu), self.spec.draws_per_layer)
        return moe_work(layout, ids, per_gpu, self.dims.top_k)

    def layout(self, dep: Deployment) -> Layout:
        """Ranks of ``dep`` under this placement."""
        return Layout(self.spec.placement, dep.attn_gpu_count, dep.ffn_gpu_count,
                      self.dims.experts, self.spec.instance_gpus)

    def same_host(self, dep: Deployment) -> bool:
        """Whether all of ``dep`` fits in one host (else attention and FFN are on separate
        hosts, as xAyF instances are)."""
        return dep.gpu_count <= self.spec.host_gpus

    def _figures_at(self, dep: Deployment, per_gpu: int, kind: str) -> dict[str, float]:
        key = (dep.attn_gpu_count, dep.ffn_gpu_count, dep.weight_bytes, dep.wire, per_gpu, kind)
        if key not in self._figures:
            self._figures[key] = self._compute(dep, per_gpu, kind)
        return self._figures[key]

    def _compute(self, dep: Deployment, per_gpu: int, kind: str) -> dict[str, float]:
        work, wire, d = self.work(dep, per_gpu, kind), dep.wire, self.dims
        tr, same = self.spec.transport, self.same_host(dep)
        a2f_tok = wire.a2f_bytes_per_token(d.hidden, work.routing_slots)
        f2a_tok = wire.f2a_bytes_per_token(d.hidden)
        out_max = work.tokens_out.max(axis=1).astype(float)  # [draws]
        in_max = work.tokens_in.max(axis=1).astype(float)
        ranks = self.ffn_rank_us(dep, work)
        dev = self._device()
        rows = float(work.gathered) if work.gathered else float(in_max.mean())
        fig = {
            "ffn_us": float(ranks.max(axis=1).mean()) if ranks is not None else float("nan"),
            "ffn_imbalance": float((ranks.max(axis=1) / ranks.mean(axis=1)).mean())
            if ranks is not None else float("nan"),
            "a2f_us": transfer_us(tr, same, out_max * a2f_tok, work.msgs_out,
                                  in_max * a2f_tok, work.msgs_in),
            "f2a_us": transfer_us(tr, same, in_max * f2a_tok, work.msgs_in,
                                  out_max * f2a_tok, work.msgs_out),
            "attention_dataplane_us": attention_side_us(dev, d, wire, per_gpu,
                                                        float(out_max.mean()),
                                                        work.routing_slots, kind == "moe"),
            "ffn_dataplane_us": ffn_side_us(dev, d, wire, rows, work.routing_slots),
            "fanout": work.fanout,
            "a2f_bytes_per_token": work.fanout * a2f_tok,
            "f2a_bytes_per_token": work.fanout * f2a_tok,
            "ffn_tokens_in_max": float(in_max.mean()),
        }
        if work.gathered:
            g = self.spec.instance_gpus
            share = work.tokens_in.mean()
            fig["gather_us"] = collective_us(tr, share * a2f_tok, g)
            fig["scatter_us"] = collective_us(tr, share * f2a_tok, g)
        return fig

    # ---------------- base stage times ----------------
    def _attention_us(self, dep: Deployment, per_gpu: int, kind: str) -> float | None:
        if isinstance(self.base, Roofline):
            return self.base.attention_us(dep, per_gpu, kind)
        self.base.check(dep)
        return self.base.data.attention.at(per_gpu, dep.context)

    def ffn_rank_us(self, dep: Deployment, work: RankWork) -> np.ndarray | None:
        """[draws, ranks] µs of each FFN rank: the roofline, or measured tables (None outside
        them)."""
        if isinstance(self.base, Roofline):
            return ffn_rank_us(self.roof, dep, work)
        return self.measured_ffn(dep, work.kind).rank_us(work)

    def measured_ffn(self, dep: Deployment, kind: str) -> MeasuredFfn:
        """The measured table for this FFN rank count, else the first of this kind (then its
        ranks' work is converted: §10.3)."""
        data = self.base.data
        table = data.ffn_table(dep.ffn_gpu_count, kind) or next(
            (t for t in data.ffn if t.kind == kind), None)
        if table is None:
            raise AfdInputError(f"the runtime model needs a measured {kind!r} FFN table")
        return MeasuredFfn(table, self.dims, dep.weight_bytes,
                           self._rates(dep.weight_bytes))

    def _rates(self, weight_bytes: int) -> StreamRates:
        if weight_bytes not in self._stream:
            self._stream[weight_bytes] = stream_rates(weight_bytes, self.dims)
        return self._stream[weight_bytes]

    def _device(self) -> DeviceCosts:
        hw = self.roof.hw
        return DeviceCosts(hw.hbm_bw * self.roof.hbm_eff, self.spec.op_us, TABLE_WIDTH)


def make_sampler(spec: RuntimeSpec, dims) -> RoutingSampler:
    """The routing sampler ``spec`` asks for (share one among models of the same routing)."""
    return RoutingSampler(spec.routing, dims.experts, dims.top_k, layers=spec.sampler_layers,
                          seed=spec.seed)


def transfer_us(t: Transport, same_host: bool, out_bytes: np.ndarray, msgs_out: int,
                in_bytes: np.ndarray, msgs_in: int) -> float:
    """One exchange direction of one (layer, micro-batch), mean over draws (µs): the busiest
    sender's ``out_bytes`` in ``msgs_out`` messages against the busiest receiver's ``in_bytes``
    in ``msgs_in``. Messages of one rank are serialized where the link is a measured MPI table
    (CPU copies), concurrent otherwise (one latency, the bandwidth shared, a cost per message
    posted); host-staged transports add one device->host copy on the sending side and one
    host->device copy on the receiving side."""
    link = t.link(same_host)
    if link.table is not None:
        send = msgs_out * np.vectorize(link.message_us)(out_bytes / msgs_out)
        recv = msgs_in * np.vectorize(link.message_us)(in_bytes / msgs_in)
        wire = np.maximum(send, recv)
    else:
        wire = link.latency_us + np.maximum(out_bytes, in_bytes) / link.bandwidth * 1e6 \
            + link.per_message_us * max(msgs_out, msgs_in)
    staged = np.vectorize(t.staging_us)
    return float(np.mean(staged(out_bytes) + wire + staged(in_bytes)))


def collective_us(t: Transport, share_bytes: float, gpus: int) -> float:
    """Ring all-gather (or reduce-scatter) inside one host: ``gpus - 1`` steps of one GPU's
    ``share_bytes`` each (µs); staged transports copy the share out and the rest in."""
    if gpus < 2:
        return 0.0
    link, steps = t.intra, gpus - 1
    if link.table is not None:
        wire = steps * link.message_us(share_bytes)
    else:
        wire = steps * (link.latency_us + link.per_message_us) \
            + steps * share_bytes / link.bandwidth * 1e6
    return wire + t.staging_us(share_bytes) + t.staging_us(steps * share_bytes)
