"""The FFN as the engine core sees it: `submit` a layer's (y, routing) for one micro-batch, later
`collect` the partials ((rows, partial) per FFN rank, in rank order) for `executors.combine`.
Both clients dispatch as placement P2 says (expert_dispatch.py) and encode as the engines' wire
format says (wire_format.py): `LocalFfn` runs the FFN engines in this process on exactly what the
FFN ranks would receive, `RemoteFfn` sends it to the FFN ranks over a data plane. Both count the
bytes each link carries (link_stats.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from step3_trt.convert.placement import FfnPlacement
from step3_trt.runtime.executors import FfnExecutor, Partials, Route
from step3_trt.runtime.expert_dispatch import ExpertDispatch, Packet
from step3_trt.runtime.link_stats import LinkStats
from step3_trt.runtime.ranks import JobLayout, RankId
from step3_trt.runtime.trace import Tracer
from step3_trt.runtime.transport.base import AfdError, DataPlane, Handle
from step3_trt.runtime.wire_format import WireFormat


class FfnClient(Protocol):
    def submit(self, layer: int, micro_batch: int, y: torch.Tensor, route: Route | None): ...
    def collect(self, ticket) -> Partials: ...


class LocalFfn:
    """Every FFN engine in this process (rank order); `submit` computes at once, each rank on
    its packet decoded as its FFN rank would decode it. With several micro-batches in flight the
    partials are cloned (a CUDA graph's output is overwritten by the next call of its bucket)."""

    def __init__(self, executors: list[FfnExecutor], micro_batches: int = 1):
        engine = executors[0].engine
        placement = FfnPlacement.from_dict(engine.mapping["placement"])
        ranks = [ex.engine.rank for ex in executors]
        if ranks != list(range(placement.ranks)):
            raise ValueError(f"LocalFfn needs the FFN ranks 0..{placement.ranks - 1} in order, "
                             f"got {ranks}")
        self.executors, self.keep = executors, micro_batches > 1
        self.wire = WireFormat.of_engine(engine.meta)
        self.dispatch = ExpertDispatch(placement, self.wire, 0, 1, engine.device)
        self.links = LinkStats()

    def submit(self, layer: int, micro_batch: int, y: torch.Tensor,
               route: Route | None) -> Partials:
        moe = route is not None
        packets = self.dispatch.packets(y, route)
        self.links.sent(layer, moe, y.shape[0], [p.tensors for p in packets])
        out = []
        for ex, packet in zip(self.executors, packets):
            partial = ex.partial(layer, self.wire.decode(packet.tensors, moe))
            out.append((packet.rows, partial.clone() if self.keep else partial))
        self.links.received([p for _, p in out])
        return out

    def collect(self, ticket: Partials) -> Partials:
        return ticket


@dataclass
class _Ticket:
    packets: list[Packet]
    recvs: list[tuple[RankId, Handle]]
    sends: list[tuple[RankId, Handle]]


class RemoteFfn:
    """The FFN ranks of an AFD job: each (layer, micro-batch) sends every FFN rank its packet
    (empty ones too, so every FFN rank walks the same schedule) and receives its partial for the
    packet's rows. The receives are posted before the sends. The link counters go into the trace
    as counter events ("link bytes")."""

    def __init__(self, data: DataPlane, layout: JobLayout, dispatch: ExpertDispatch,
                 wire: WireFormat, tracer: Tracer | None = None):
        self.data, self.layout, self.ffn_ranks = data, layout, layout.ffn_ranks
        if dispatch.placement.ranks != layout.ffn:
            raise ValueError(f"the engines place FFN work on {dispatch.placement.ranks} ranks, "
                             f"the job has {layout.ffn}")
        self.dispatch, self.wire = dispatch, wire
        self.tracer = tracer or Tracer(0, "", enabled=False)
        self.links = LinkStats()

    @classmethod
    def for_engine(cls, data: DataPlane, layout: JobLayout, me: RankId, meta: dict,
                   device: torch.device, tracer: Tracer | None = None) -> "RemoteFfn":
        """Attention rank `me`'s client, from its engine.json (`meta`)."""
        wire = WireFormat.of_engine(meta)
        placement = FfnPlacement.from_dict(meta["mapping"]["placement"])
        return cls(data, layout, ExpertDispatch(placement, wire, me.index, layout.attention,
                                                device), wire, tracer)

    def submit(self, layer: int, micro_batch: int, y: torch.Tensor,
               route: Route | None) -> _Ticket:
        packets = self.dispatch.packets(y, route)
        reply = self.wire.reply_slots()
        recvs = [(f, self.data.post_recv(f, layer, micro_batch, reply)) for f in self.ffn_ranks]
        sends = [(f, self.data.send(f, layer, micro_batch, p.tensors))
                 for f, p in zip(self.ffn_ranks, packets)]
        self.links.sent(layer, route is not None, y.shape[0], [p.tensors for p in packets])
        return _Ticket(packets, recvs, sends)

    def collect(self, ticket: _Ticket) -> Partials:
        # receive first: a reply comes once its request arrived; waiting on our own sends first
        # could deadlock with FFN ranks replying to other attention ranks
        out = []
        for (f, h), packet in zip(ticket.recvs, ticket.packets):
            partial = self.data.wait(h, "FFN partial", f)[0]
            if partial.shape[0] != packet.rows.shape[0]:
                raise AfdError(f"{self.layout.name(f)} returned {partial.shape[0]} rows for "
                               f"a message of {packet.rows.shape[0]}")
            out.append((packet.rows, partial))
        for f, h in ticket.sends:
            self.data.wait(h, "acknowledgement of a data message", f)
        self.links.received([p for _, p in out])
        self.tracer.counter("link bytes", **{"A->F": self.links.a2f_bytes,
                                             "F->A": self.links.f2a_bytes})
        return out
