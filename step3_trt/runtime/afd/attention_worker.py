"""An AFD attention rank: requests from the coordinator, its own scheduler and paged KV cache,
and per layer an exchange with every FFN rank, several micro-batches in flight.

Within a step, for each layer, micro-batch k's attention runs while the FFN ranks work on
micro-batch k-1 (ping-pong): the send of (y, routing) for k is non-blocking, and the partials
for k are collected only when k's next layer needs them.
"""

from __future__ import annotations

from pathlib import Path

import torch

from step3_trt.build_config import BuildConfig
from step3_trt.config import Step3Config
from step3_trt.runtime.afd.layout import JobLayout
from step3_trt.runtime.afd.messages import params_from_dict, result_message
from step3_trt.runtime.afd.token_bans import TokenBans
from step3_trt.runtime.afd.transport import Transport
from step3_trt.runtime.cuda_graphs import GraphCache
from step3_trt.runtime.engine import RankEngine
from step3_trt.runtime.executors import AttentionExecutor
from step3_trt.runtime.local import kv_blocks, make_scheduler, max_seq_len, sample_chunks
from step3_trt.runtime.scheduler import Chunk, Request
from step3_trt.runtime.trace import Tracer
from step3_trt.tokenizer import load_tokenizer


def split_micro_batches(chunks: list[Chunk], parts: int) -> list[list[Chunk]]:
    """Contiguous groups of chunks with near-equal token counts (at most `parts`, none empty)."""
    parts = max(1, min(parts, len(chunks)))
    total = sum(len(c.tokens) for c in chunks)
    groups: list[list[Chunk]] = [[]]
    acc = 0
    for i, c in enumerate(chunks):
        left_chunks, left_groups = len(chunks) - i, parts - len(groups)
        if groups[-1] and (acc >= total * len(groups) / parts or left_chunks <= left_groups):
            groups.append([])
        groups[-1].append(c)
        acc += len(c.tokens)
    return groups


class AttentionWorker:
    def __init__(self, engine_dir: Path, index: int, layout: JobLayout, transport: Transport,
                 tracer: Tracer, device: str | None, micro_batches: int | None):
        build = BuildConfig.from_file(engine_dir / "build_config.yaml")
        engine = RankEngine(engine_dir / "attention" / f"rank{index}", device or build.device,
                            build.digest())
        cfg = Step3Config.from_dict(engine.arch)
        num_blocks = kv_blocks(cfg, build)
        self.executor = AttentionExecutor(engine, num_blocks, max_seq_len(cfg, build),
                                          GraphCache.for_engine(build.runtime, engine))
        self.scheduler = make_scheduler(cfg, build, num_blocks, cfg.eos_token_id,
                                        load_tokenizer(engine_dir))
        self.micro_batches = micro_batches or build.runtime.micro_batches
        self.layout, self.transport, self.tracer = layout, transport, tracer
        self.device = engine.device
        self.generators: dict[int, torch.Generator | None] = {}
        self.requests: dict[int, Request] = {}  # admitted and not yet reported finished
        self.streamed: dict[int, int] = {}  # streaming request id -> output tokens reported
        self.bans = TokenBans(cfg.eos_token_id)  # bad_words and min_length per request

    def run(self) -> None:
        """Serve requests until the coordinator says shutdown and every request is done. Each
        step reports to the coordinator (finished requests, streamed tokens, occupancy), and so
        does every batch of control messages that changed something while idle."""
        coordinator, stopping = JobLayout.COORDINATOR, False
        while not stopping or self.scheduler.has_work():
            idle = not self.scheduler.has_work()
            # idle: block until the coordinator sends something (its death aborts the job)
            got = self.transport.recv_json(coordinator, timeout_s=float("inf")) if idle \
                else self.transport.poll_json(coordinator)
            finished, changed = [], False
            while got is not None:
                msg, _ = got
                if msg["type"] == "shutdown":
                    stopping = True
                elif msg["type"] == "cancel":
                    finished += self._cancel(msg["id"])
                    changed = True
                else:
                    finished += self._admit(msg)
                    changed = True
                got = self.transport.poll_json(coordinator)
            if self.scheduler.has_work():
                done = self.step()
                finished += [result_message(r) for r in done]
                self._forget(done)
                self._report(finished)
            elif changed:
                self._report(finished)
        for ffn in self.layout.ffn_ranks:
            self.transport.send_json({"type": "done"}, ffn)

    def _admit(self, msg: dict) -> list[dict]:
        req = Request(msg["id"], msg["prompt_ids"], params_from_dict(msg["params"]))
        try:
            self.scheduler.add(req)
        except ValueError as e:
            return [{"id": req.request_id, "error": str(e)}]
        self.requests[req.request_id] = req
        self.generators[req.request_id] = req.params.generator()
        if msg.get("stream"):
            self.streamed[req.request_id] = 0
        self.bans.add(req.request_id, msg.get("bad_words", []), msg.get("min_tokens", 0))
        return []

    def _cancel(self, request_id: int) -> list[dict]:
        """Retire a request now and free its KV blocks (unknown ids: it already finished)."""
        req = self.requests.get(request_id)
        if req is None:
            return []
        self.scheduler.finish(req, "cancelled")
        self._forget([req])
        return [result_message(req)]

    def _forget(self, done: list[Request]) -> None:
        for req in done:
            self.requests.pop(req.request_id, None)
            self.generators.pop(req.request_id, None)
            self.bans.forget(req.request_id)

    def _deltas(self, finished: list[dict]) -> list[list]:
        """New output tokens of streaming requests since the last report: [[id, [tokens]]]."""
        outputs = {rid: self.requests[rid].output for rid in self.streamed if rid in self.requests}
        outputs.update({r["id"]: r.get("output_ids", []) for r in finished
                        if r["id"] in self.streamed})
        out = []
        for rid, output in outputs.items():
            if len(output) > self.streamed[rid]:
                out.append([rid, output[self.streamed[rid]:]])
                self.streamed[rid] = len(output)
        for r in finished:
            self.streamed.pop(r["id"], None)
        return out

    def _report(self, finished: list[dict]) -> None:
        blocks = self.scheduler.blocks
        stats = {"running": len(self.scheduler.running), "waiting": len(self.scheduler.waiting),
                 "kv_blocks_used": blocks.num_blocks - blocks.num_free,
                 "kv_blocks_total": blocks.num_blocks}
        self.transport.send_json({"type": "step", "tokens": self._deltas(finished),
                                  "finished": finished,
                                  "stats": stats}, JobLayout.COORDINATOR)

    def step(self) -> list[Request]:
        chunks = self.scheduler.schedule()
        if not chunks:
            raise RuntimeError("the scheduler could not place any request (KV cache too small)")
        groups = split_micro_batches(chunks, self.micro_batches)
        blocks = self.scheduler.blocks
        batches = [self.executor.batch(g, [blocks.block_table(c.request.request_id) for c in g])
                   for g in groups]
        ex, ffn = self.executor, self.layout.ffn_ranks
        xs = [ex.embed(b) for b in batches]
        hs: list[torch.Tensor | None] = [None] * len(batches)
        sends: list[list] = [[] for _ in batches]
        for layer in range(ex.config.num_hidden_layers):
            for k, batch in enumerate(batches):
                if layer > 0:
                    xs[k] = self._collect(k, hs[k], sends[k], layer - 1)
                with self.tracer.span(f"attention L{layer}", lane=k, tokens=batch.num_tokens):
                    hs[k], y, route = ex.attention(layer, xs[k], batch)
                with self.tracer.span(f"send L{layer}", lane=k):
                    sends[k] = [self.transport.send_ffn_request(f, layer, k, y, route)
                                for f in ffn]
        last = ex.config.num_hidden_layers - 1
        logits = []
        for k, batch in enumerate(batches):
            xs[k] = self._collect(k, hs[k], sends[k], last)
            with self.tracer.span("head", lane=k):
                logits.append(ex.logits(xs[k], batch))
        flat_chunks = [c for g in groups for c in g]
        logits = self.bans.apply(torch.cat(logits), flat_chunks)
        sampled = sample_chunks(flat_chunks, logits, self.generators)
        return self.scheduler.finish_step(flat_chunks, sampled)

    def _collect(self, k: int, h: torch.Tensor, sends: list, layer: int) -> torch.Tensor:
        with self.tracer.span(f"wait L{layer}", lane=k):
            # receive first: a reply can only come once its request arrived, and waiting on
            # our own sends first could deadlock with FFN ranks replying to other ranks
            partials = [self.transport.recv_partial(f, k, h) for f in self.layout.ffn_ranks]
            self.transport.wait_all(sends, "send to the FFN ranks")
        return self.executor.combine(h, partials)

