"""The FFN as the engine core sees it: `submit` a layer's (y, routing) for one micro-batch, later
`collect` the partials (one per FFN rank, in rank order) and combine them. `LocalFfn` runs the
FFN engines in this process; `RemoteFfn` sends to the FFN ranks over a data plane."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from step3_trt.runtime.executors import FfnExecutor, Route
from step3_trt.runtime.ranks import JobLayout, RankId
from step3_trt.runtime.transport.base import DataPlane, Handle, Slot


class FfnClient(Protocol):
    def submit(self, layer: int, micro_batch: int, y: torch.Tensor, route: Route | None): ...
    def collect(self, ticket) -> list[torch.Tensor]: ...


class LocalFfn:
    """Every FFN engine in this process; `submit` computes at once. With several micro-batches
    in flight the partials are cloned (a CUDA graph's output is overwritten by the next call of
    its bucket)."""

    def __init__(self, executors: list[FfnExecutor], micro_batches: int = 1):
        self.executors, self.keep = executors, micro_batches > 1

    def submit(self, layer: int, micro_batch: int, y: torch.Tensor,
               route: Route | None) -> list[torch.Tensor]:
        partials = [f.partial(layer, y, route) for f in self.executors]
        return [p.clone() for p in partials] if self.keep else partials

    def collect(self, ticket: list[torch.Tensor]) -> list[torch.Tensor]:
        return ticket


@dataclass
class _Ticket:
    recvs: list[tuple[RankId, Handle]]
    sends: list[tuple[RankId, Handle]]


class RemoteFfn:
    """The FFN ranks of an AFD job: each (layer, micro-batch) sends y and the routing to every
    FFN rank and receives each one's partial [T, hidden]. Empty micro-batches are sent too, so
    every FFN rank walks the same schedule. The receives are posted before the sends."""

    def __init__(self, data: DataPlane, layout: JobLayout, hidden: int, dtype: torch.dtype):
        self.data, self.ffn_ranks = data, layout.ffn_ranks
        self.reply = [Slot(dtype, (hidden,))]

    @staticmethod
    def request_slots(hidden: int, top_k: int, dtype: torch.dtype, moe: bool) -> list[Slot]:
        """What an FFN rank receives per (layer, micro-batch): y, and for MoE layers the top-k
        weights and int32 expert ids."""
        y = Slot(dtype, (hidden,))
        return [y, Slot(dtype, (top_k,)), Slot(torch.int32, (top_k,))] if moe else [y]

    def submit(self, layer: int, micro_batch: int, y: torch.Tensor,
               route: Route | None) -> _Ticket:
        tensors = [y] if route is None else [y, route[0], route[1].to(torch.int32)]
        recvs = [(f, self.data.post_recv(f, layer, micro_batch, self.reply))
                 for f in self.ffn_ranks]
        sends = [(f, self.data.send(f, layer, micro_batch, tensors)) for f in self.ffn_ranks]
        return _Ticket(recvs, sends)

    def collect(self, ticket: _Ticket) -> list[torch.Tensor]:
        # receive first: a reply comes once its request arrived; waiting on our own sends first
        # could deadlock with FFN ranks replying to other attention ranks
        partials = [self.data.wait(h, "FFN partial", f)[0] for f, h in ticket.recvs]
        for f, h in ticket.sends:
            self.data.wait(h, "acknowledgement of a data message", f)
        return partials
