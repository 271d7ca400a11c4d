"""The engine core: one step loop for every path (`generate --engines`, the AFD attention ranks,
serving). A step is schedule -> split into micro-batches -> per layer: attention, then FFN
submit / collect -> head -> sample -> finish. The FFN is behind `FfnClient` (runtime/ffn.py):
in this process, or FFN ranks over a data plane.

With several micro-batches, micro-batch k's attention runs while the FFN works on k-1 (ping-pong):
k's FFN work is submitted, and its partials are collected only when k's next layer needs them.
In `lockstep` (AFD jobs) every step has exactly `micro_batches` micro-batches, empty ones
included, and a step runs even when this rank has no work, so every FFN rank can walk the same
(layer, micro-batch, attention rank) schedule.

Everything about one request lives on its `Request`; a request-level failure (sampling on its
parameters) retires that request with an error and nothing else.
"""

from __future__ import annotations

from collections.abc import Collection

import torch

from step3_trt.runtime.batch import StepBatch
from step3_trt.runtime.executors import AttentionExecutor, combine
from step3_trt.runtime.ffn import FfnClient
from step3_trt.runtime.request import Request
from step3_trt.runtime.scheduler import Chunk, Scheduler
from step3_trt.runtime.trace import Tracer
from step3_trt.sampling import apply_penalties, sample


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


class EngineCore:
    def __init__(self, attention: AttentionExecutor, ffn: FfnClient, scheduler: Scheduler,
                 eos_token_ids: Collection[int], micro_batches: int = 1, lockstep: bool = False,
                 tracer: Tracer | None = None):
        self.attention, self.ffn, self.scheduler = attention, ffn, scheduler
        self.eos_token_ids = frozenset(eos_token_ids)
        self.micro_batches, self.lockstep = max(1, micro_batches), lockstep
        self.tracer = tracer or Tracer(0, "", enabled=False)
        self.config = attention.config
        device, top_k = attention.engine.device, self.config.moe_top_k
        hidden = self.config.hidden_size
        self.empty_y = torch.empty(0, hidden, dtype=attention.dtype, device=device)
        self.empty_route = (torch.empty(0, top_k, dtype=attention.dtype, device=device),
                            torch.empty(0, top_k, dtype=torch.int32, device=device))
        self.requests: dict[int, Request] = {}  # admitted, not finished
        self.steps = 0

    # ---- requests -----------------------------------------------------------------------
    def add(self, request: Request) -> None:
        """Admit a request; ValueError (saying why) if it can never run here."""
        if request.request_id in self.requests:
            raise ValueError(f"request {request.request_id} is already running")
        vocab = self.config.vocab_size
        if any(not 0 <= t < vocab for t in request.prompt):
            raise ValueError(f"request {request.request_id}: prompt token ids must be in "
                             f"[0, {vocab})")
        if any(not 0 <= t < vocab for w in request.bad_words for t in w):
            raise ValueError(f"request {request.request_id}: bad_words token ids must be in "
                             f"[0, {vocab})")
        if any(not 0 <= t < vocab for w in request.stop_words for t in w):
            raise ValueError(f"request {request.request_id}: stop_words token ids must be in "
                             f"[0, {vocab})")
        if request.min_tokens < 0:
            raise ValueError(f"request {request.request_id}: min_tokens must be >= 0")
        self.scheduler.add(request)
        self.requests[request.request_id] = request

    def cancel(self, request_id: int) -> Request | None:
        """Retire a request now and free its KV blocks; None if it is not running here."""
        req = self.requests.pop(request_id, None)
        if req is not None:
            self.scheduler.finish(req, "cancelled")
        return req

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    # ---- one step -----------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> list[Request]:
        """Run one step; returns the requests that finished in it (stopped, at their length, or
        failed: `finish_reason` "error" and `error` set)."""
        chunks = self.scheduler.schedule() if self.scheduler.has_work() else []
        if self.scheduler.has_work() and not chunks:
            raise RuntimeError("the scheduler could not place any request (KV cache too small)")
        if not chunks and not self.lockstep:
            return []
        self.steps += 1
        groups = split_micro_batches(chunks, self.micro_batches) if chunks else []
        if self.lockstep:
            groups += [[] for _ in range(self.micro_batches - len(groups))]
        ex, blocks = self.attention, self.scheduler.blocks
        batches = [ex.batch(g, [blocks.block_table(c.request.request_id) for c in g]) if g
                   else None for g in groups]
        xs = self.forward(batches)
        logits = []
        for k, (x, batch) in enumerate(zip(xs, batches)):
            if batch is not None:
                with self.tracer.span("head", lane=k):
                    logits.append(ex.logits(x, batch))
        flat = [c for g in groups for c in g]
        failed = []
        sampled = self._sample(flat, torch.cat(logits), failed) if flat else {}
        done = self.scheduler.finish_step(flat, sampled)
        for req in failed + done:
            self.requests.pop(req.request_id, None)
        return failed + done

    def forward(self, batches: list[StepBatch | None]) -> list[torch.Tensor | None]:
        """The layers over each micro-batch's batch (None: an empty micro-batch): the final
        hidden states [T, hidden] of each (None for empty ones)."""
        ex, tr = self.attention, self.tracer
        xs = [ex.embed(b) if b is not None else None for b in batches]
        hs: list[torch.Tensor | None] = [None] * len(batches)
        tickets: list = [None] * len(batches)
        layers = self.config.num_hidden_layers
        for layer in range(layers):
            moe = self.config.is_moe_layer(layer)
            for k, batch in enumerate(batches):
                if layer > 0:
                    xs[k] = self._collect(k, layer - 1, hs[k], tickets[k])
                if batch is None:
                    tickets[k] = self.ffn.submit(layer, k, self.empty_y,
                                                 self.empty_route if moe else None)
                    continue
                with tr.span(f"attention L{layer}", lane=k, tokens=batch.num_tokens):
                    hs[k], y, route = ex.attention(layer, xs[k], batch)
                with tr.span(f"send L{layer}", lane=k):
                    tickets[k] = self.ffn.submit(layer, k, y, route)
        return [self._collect(k, layers - 1, hs[k], tickets[k]) for k in range(len(batches))]

    def _collect(self, k: int, layer: int, h: torch.Tensor | None, ticket) -> torch.Tensor | None:
        with self.tracer.span(f"wait L{layer}", lane=k):
            partials = self.ffn.collect(ticket)
        return None if h is None else combine(h, partials)

    def _sample(self, chunks: list[Chunk], logits: torch.Tensor,
                failed: list[Request]) -> dict[int, int]:
        """Next token of every chunk that ends at its request's last token (logits row i:
        chunk i). Plain greedy rows share one argmax; a request whose sampling fails is retired
        with the error and left out."""
        rows = [i for i, c in enumerate(chunks) if c.samples]
        plain = [i for i in rows if chunks[i].request.params.is_greedy
                 and not chunks[i].request.has_bans
                 and not chunks[i].request.params.has_penalties]
        out = {}
        if plain:
            picks = logits[plain].argmax(-1).tolist()
            out = {chunks[i].request.request_id: t for i, t in zip(plain, picks)}
        for i in rows:
            req = chunks[i].request
            if req.request_id in out:
                continue
            try:
                row = logits[i]
                if req.params.has_penalties:
                    row = apply_penalties(row, req.tokens, req.params)  # a fresh tensor
                banned = req.banned(self.eos_token_ids) if req.has_bans else ()
                if banned:
                    row = row.clone()
                    row[sorted(banned)] = float("-inf")
                out[req.request_id] = sample(row, req.params, req.generator)
            except (RuntimeError, ValueError) as e:  # this request's parameters, not the engine
                req.error = f"sampling failed: {e}"
                self.scheduler.finish(req, "error")
                failed.append(req)
        return out
