"""An AFD FFN rank. Each step the leader announces, it walks the schedule every attention rank
follows: for each layer and micro-batch, one message from each attention rank in order (the rows
dispatched to this rank, runtime/expert_dispatch.py: hidden states, for MoE layers the routing
slots of its experts and the rows whose shared-expert work it does; possibly no row), ONE FFN
call on all their rows, and each attention rank's rows of the partial sent back. It stops when
the leader says stop."""

from __future__ import annotations

from step3_trt.runtime.afd.step_sync import next_decision
from step3_trt.runtime.executors import FfnExecutor, FfnRows
from step3_trt.runtime.messages import Decision
from step3_trt.runtime.ranks import JobLayout
from step3_trt.runtime.trace import Tracer
from step3_trt.runtime.transport.base import ControlChannel, DataPlane
from step3_trt.runtime.wire_format import WireFormat


class FfnWorker:
    def __init__(self, executor: FfnExecutor, control: ControlChannel, data: DataPlane,
                 layout: JobLayout, micro_batches: int, tracer: Tracer, wire: WireFormat):
        self.executor, self.control, self.data, self.layout = executor, control, data, layout
        self.micro_batches, self.tracer, self.wire = micro_batches, tracer, wire
        self.slots = {moe: wire.request_slots(moe) for moe in (False, True)}
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
            parts = [self.wire.decode(self.data.wait(h, "FFN input", a), moe)
                     for a, h in zip(sources, handles)]
        work = FfnRows.cat(parts)
        if work.rows:
            with self.tracer.span(f"ffn L{layer}", lane=k, tokens=work.rows):
                partial = self.executor.partial(layer, work)
        else:
            partial = work.y  # no rows from anyone: [0, hidden]
        with self.tracer.span(f"reply L{layer}", lane=k):
            for a, piece in zip(sources, partial.split([p.rows for p in parts])):
                self.in_flight.append((a, self.data.send(a, layer, k, [piece])))
