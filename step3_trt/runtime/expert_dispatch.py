"""Dispatch, the attention side of placement P2 (`balanced`, convert/placement.py): which FFN
ranks get which rows of one (layer, micro-batch), packed as wire_format.py says.

MoE layers: a token goes to the EP groups owning its top-k experts, each getting the routing
slots of its own experts (the others: weight 0, id -1). Its shared-expert work goes to one of
those groups: this attention rank first counts the routed assignments it sends each group in the
micro-batch, then walks its tokens in order and gives each one's shared work to the least-loaded
of its groups (the first of its slots, i.e. its top-1 expert's group, among equals), counting it.
Dense layers: token i of attention rank a goes to group (a * s + i) mod ep, s = max(1, ep //
attention ranks), so the attention ranks start on different groups. Every FFN rank of a group
(its TP slices) gets the group's message. A token thus reaches at most top_k groups, and one for
dense layers, whatever the number of FFN ranks; a rank that gets no token gets an empty message,
so every FFN rank walks the same schedule.

The partials come back in the same packing (each rank's rows in ascending token order) and
`executors.combine` sums them per token in FFN-rank order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from step3_trt.convert.placement import FfnPlacement
from step3_trt.runtime.executors import Route
from step3_trt.runtime.wire_format import WireFormat


@dataclass(frozen=True)
class Packet:
    """One FFN rank's message of a (layer, micro-batch)."""
    rows: torch.Tensor  # int64 [n]: the micro-batch rows it carries, ascending (not sent)
    tensors: list[torch.Tensor]  # the message, WireFormat.request_slots' layout


def balanced_shared(groups: list[list[int]], num_groups: int) -> list[int]:
    """The EP group doing each token's shared-expert work, from each token's groups per top-k
    slot (top-1 first): the least-loaded of its groups after counting the routed assignments,
    its earliest slot's among equals; each choice counts one unit of load."""
    loads = [0] * num_groups
    for slots in groups:
        for g in slots:
            loads[g] += 1
    out = []
    for slots in groups:
        best = slots[0]
        for g in slots[1:]:
            if loads[g] < loads[best]:
                best = g
        loads[best] += 1
        out.append(best)
    return out


class ExpertDispatch:
    def __init__(self, placement: FfnPlacement, wire: WireFormat, attention_rank: int,
                 attention_ranks: int, device: torch.device):
        self.placement, self.wire, self.device = placement, wire, device
        self.group_of_expert = torch.tensor(placement.expert_groups(), dtype=torch.int64,
                                            device=device)
        self.dense_start = attention_rank * max(1, placement.ep // attention_ranks)

    def packets(self, y: torch.Tensor, route: Route | None) -> list[Packet]:
        """One packet per FFN rank (rank order) for the micro-batch's y [T, H] and, for MoE
        layers, its routing (weights [T, K], ids [T, K] int32)."""
        hidden = self.wire.encode_hidden(y)
        per_group = self._dense(y.shape[0]) if route is None else self._moe(*route)
        out = []
        for rank in range(self.placement.ranks):
            rows, extra = per_group[self.placement.group_of(rank)]
            out.append(Packet(rows, [t[rows] for t in hidden] + extra))
        return out

    def _dense(self, tokens: int) -> list[tuple[torch.Tensor, list]]:
        ep = self.placement.ep
        firsts = [(g - self.dense_start) % ep for g in range(ep)]
        return [(torch.arange(first, max(first, tokens), ep, device=self.device), [])
                for first in firsts]

    def _moe(self, weights: torch.Tensor, ids: torch.Tensor) -> list[tuple[torch.Tensor, list]]:
        groups = self.group_of_expert[ids.long()]  # [T, K]
        shared = torch.tensor(balanced_shared(groups.tolist(), self.placement.ep),
                              dtype=torch.int64, device=self.device)  # [T]
        zero, none = torch.zeros_like(weights), torch.full_like(ids, -1)
        out = []
        for g in range(self.placement.ep):
            mine = groups == g  # [T, K]
            rows = mine.any(dim=1).nonzero().squeeze(1)  # [n]
            here = (shared[rows] == g).nonzero().squeeze(1).to(torch.int32)  # [n_s]
            out.append((rows, [torch.where(mine, weights, zero)[rows],
                               torch.where(mine, ids, none)[rows], here]))
        return out
