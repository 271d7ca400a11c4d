"""An AFD FFN rank. Each step the leader announces, it walks the schedule every attention rank
follows: for each layer and micro-batch, one message from each attention rank in order (y and,
for MoE layers, the top-k routing; possibly empty), ONE FFN call on all their tokens, and each
attention rank's rows of the partial sent back. It stops when the leader says stop."""

from __future__ import annotations

import torch

from step3_trt.runtime.afd.step_sync import next_decision
from step3_trt.runtime.executors import FfnExecutor
from step3_trt.runtime.ffn import RemoteFfn
from step3_trt.runtime.messages import Decision
from step3_trt.runtime.ranks import JobLayout
from step3_trt.runtime.trace import Tracer
from step3_trt.runtime.transport.base import ControlChannel, DataPlane


class FfnWorker:
    def __init__(self, executor: FfnExecutor, control: ControlChannel, data: DataPlane,
                 layout: JobLayout, micro_batches: int, tracer: Tracer):
        self.executor, self.control, self.data, self.layout = executor, control, data, layout
        self.micro_batches, self.tracer = micro_batches, tracer
        cfg = executor.config
        self.slots = {moe: RemoteFfn.request_slots(cfg.hidden_size, cfg.moe_top_k,
                                                   executor.dtype, moe) for moe in (False, True)}
        self.in_flight: list = []  # this step's (peer, send handle)

    def run(self) -> None:
        while next_decision(self.control, self.layout) == Decision.STEP:
            self.step()

    def step(self) -> None:
        cfg = self.executor.config
        for layer in range(cfg.num_hidden_layers):
            moe = cfg.is_moe_layer(layer)
            for k in range(self.micro_batches):
                self._serve(layer, k, moe)
        for peer, handle in self.in_flight:  # the attention ranks take them to end their step
            self.data.wait(handle, "acknowledgement of a partial", peer)
        self.in_flight = []

    def _serve(self, layer: int, k: int, moe: bool) -> None:
        sources = self.layout.attention_ranks
        handles = [self.data.post_recv(a, layer, k, self.slots[moe]) for a in sources]
        with self.tracer.span(f"recv L{layer}", lane=k):
            parts = [self.data.wait(h, "FFN input", a) for a, h in zip(sources, handles)]
        rows = [p[0].shape[0] for p in parts]
        if sum(rows):
            y = torch.cat([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
            route = None
            if moe:
                route = tuple(torch.cat([p[i] for p in parts]) if len(parts) > 1 else parts[0][i]
                              for i in (1, 2))
            with self.tracer.span(f"ffn L{layer}", lane=k, tokens=y.shape[0]):
                partial = self.executor.partial(layer, y, route)
        else:
            partial = parts[0][0]  # no tokens from anyone: [0, hidden]
        with self.tracer.span(f"reply L{layer}", lane=k):
            for a, piece in zip(sources, partial.split(rows)):
                self.in_flight.append((a, self.data.send(a, layer, k, [piece])))
