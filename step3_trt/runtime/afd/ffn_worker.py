"""An AFD FFN rank: serves (y, routing) from any attention rank with its experts and slices,
returns the partial, and stops once every attention rank has said it is done."""

from __future__ import annotations

from pathlib import Path

from step3_trt.build_config import BuildConfig
from step3_trt.runtime.afd.layout import JobLayout
from step3_trt.runtime.afd.transport import Transport
from step3_trt.runtime.cuda_graphs import GraphCache
from step3_trt.runtime.engine import RankEngine
from step3_trt.runtime.executors import FfnExecutor
from step3_trt.runtime.trace import Tracer


class FfnWorker:
    def __init__(self, engine_dir: Path, index: int, layout: JobLayout, transport: Transport,
                 tracer: Tracer, device: str | None):
        build = BuildConfig.from_file(engine_dir / "build_config.yaml")
        engine = RankEngine(engine_dir / "ffn" / f"rank{index}", device or build.device,
                            build.digest())
        self.executor = FfnExecutor(engine, GraphCache.for_engine(build.runtime, engine))
        self.layout, self.transport, self.tracer = layout, transport, tracer

    def run(self) -> None:
        hidden = self.executor.config.hidden_size
        done, in_flight = set(), []
        while len(done) < self.layout.attention:
            in_flight = self.transport.reap(in_flight)
            req = self.transport.recv_ffn_request(hidden, self.executor.engine.device)
            if req is None:  # a control message: an attention rank has finished
                msg, source = self.transport.recv_json()
                if msg["type"] != "done":
                    raise RuntimeError(f"FFN rank got unexpected control message {msg['type']}")
                done.add(source)
                continue
            with self.tracer.span(f"ffn L{req.layer}", lane=req.micro_batch,
                                  source=req.source, tokens=req.y.shape[0]):
                partial = self.executor.partial(req.layer, req.y, req.route)
            with self.tracer.span(f"reply L{req.layer}", lane=req.micro_batch):
                in_flight.append(self.transport.send_partial(req.source, req.micro_batch,
                                                             partial))
        self.transport.wait_all(in_flight, "reply to an attention rank")
