"""Continuous-batching scheduler: chunked prefill under a token budget, decode, and preemption by
recompute when KV blocks run out. Pure Python (no tensors): unit-testable on any machine.

A request's tokens are its prompt followed by its outputs; `num_computed` of them have K/V in the
cache. Each step computes a chunk of the rest for some requests; a request whose chunk reaches
its last token gets a next token sampled from that position's logits.

With prefix caching (a block manager with a hasher), a request starts, when admitted, after the
longest run of its full blocks that the cache holds, but always computes at least its last
token (so that logits exist to sample from); a full block is registered once a step has
computed its K/V (not when it is allocated: another micro-batch of the same step may read
before this one writes). Preemption and cancellation only drop references: what was computed
stays cached, so a preempted request usually resumes from its own blocks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass

from step3_trt.runtime.block_manager import BlockManager
from step3_trt.runtime.request import Request, Status


@dataclass(frozen=True)
class Chunk:
    request: Request
    start: int  # first position computed this step
    tokens: list[int]  # token ids at positions start .. start + len - 1
    slots: list[int]  # their KV slots
    samples: bool  # True if this chunk ends at the request's last token


@dataclass
class SchedulerConfig:
    max_batch: int = 16  # sequences per step
    max_tokens_per_step: int = 256  # tokens per step (prefill chunks + decodes)


class Scheduler:
    def __init__(self, blocks: BlockManager, config: SchedulerConfig, max_seq_len: int,
                 eos_token_ids: Collection[int] = (),
                 detokenize: Callable[[list[int]], str] | None = None):
        self.blocks, self.config = blocks, config
        self.max_seq_len, self.eos_token_ids = max_seq_len, frozenset(eos_token_ids)
        self.detokenize = detokenize  # for stop strings
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # in admission order (oldest first)
        # cumulative counts (a rank reports them): tokens looked up in the prefix cache at each
        # admission, tokens found there, tokens computed other than decoding a newest token
        self.prefix_query_tokens = self.prefix_hit_tokens = self.prefill_tokens = 0

    def add(self, request: Request) -> None:
        need = len(request.prompt) + request.params.max_new_tokens
        if not request.prompt:
            raise ValueError(f"request {request.request_id}: empty prompt")
        if request.params.stop_strings and self.detokenize is None:
            raise ValueError(f"request {request.request_id}: stop strings need a tokenizer")
        if need > self.max_seq_len:
            raise ValueError(f"request {request.request_id}: prompt ({len(request.prompt)}) + "
                             f"max_tokens ({request.params.max_new_tokens}) exceeds the "
                             f"maximum sequence length {self.max_seq_len}")
        if -(-need // self.blocks.block_size) > self.blocks.num_blocks:
            raise ValueError(f"request {request.request_id} can never fit in the KV cache "
                             f"({self.blocks.num_blocks} blocks of {self.blocks.block_size})")
        self.waiting.append(request)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> list[Chunk]:
        budget = self.config.max_tokens_per_step
        chunks: list[Chunk] = []
        # Running requests first, oldest first; preempt the newest when blocks run out.
        for req in list(self.running):
            if req not in self.running or budget == 0:  # preempted by an older request, or full
                continue
            n = min(req.num_tokens - req.num_computed, budget)
            while not self.blocks.can_append(req.request_id, n) and self._preempt_newest(req):
                pass
            if not self.blocks.can_append(req.request_id, n):
                self._preempt(req)
                continue
            chunks.append(self._chunk(req, n))
            budget -= n
        # Then admit waiting requests while sequences, tokens and blocks allow.
        while self.waiting and budget > 0 and len(self.running) < self.config.max_batch:
            req = self.waiting[0]
            cached = self._cached_prefix(req)
            n = min(req.num_tokens - len(cached) * self.blocks.block_size, budget)
            if not self.blocks.can_share(cached, n):
                break
            self.waiting.popleft()
            self._start(req, cached)
            chunks.append(self._chunk(req, n))
            budget -= n
        return chunks

    def _cached_prefix(self, req: Request) -> list[int]:
        """The cached blocks a request (holding no blocks) can start on: the longest run of its
        full blocks in the cache, leaving at least its last token to compute."""
        if not self.blocks.prefix_caching:
            return []
        self.blocks.hasher.extend(req.block_hashes, req.tokens, req.content_keys)
        usable = (req.num_tokens - 1) // self.blocks.block_size
        return self.blocks.lookup(req.block_hashes[:usable])

    def _start(self, req: Request, cached: list[int]) -> None:
        self.blocks.share(req.request_id, cached)
        req.num_computed = len(cached) * self.blocks.block_size
        if self.blocks.prefix_caching:
            self.prefix_query_tokens += req.num_tokens
            self.prefix_hit_tokens += req.num_computed
        if req.preemptions == 0:
            req.cached_tokens = min(req.num_computed, len(req.prompt))
        req.status = Status.RUNNING
        self.running.append(req)

    def _chunk(self, req: Request, n: int) -> Chunk:
        start = req.num_computed
        slots = self.blocks.append(req.request_id, n)
        decode = bool(req.output) and start == req.num_tokens - 1  # only the newest token
        self.prefill_tokens += n - decode
        return Chunk(req, start, req.tokens[start:start + n], slots, start + n == req.num_tokens)

    def _preempt_newest(self, req: Request) -> bool:
        """Preempt the newest running request admitted after `req` (those are not scheduled yet
        this step); False if there is none."""
        if self.running[-1] is req:
            return False
        self._preempt(self.running[-1])
        return True

    def _preempt(self, req: Request) -> None:
        """Free its blocks; it recomputes prompt + outputs so far when readmitted (first)."""
        self.blocks.free(req.request_id)
        self.running.remove(req)
        req.status, req.num_computed = Status.WAITING, 0
        req.preemptions += 1
        self.waiting.appendleft(req)

    def finish_step(self, chunks: list[Chunk], sampled: dict[int, int]) -> list[Request]:
        """Record a step's results (`sampled`: request id -> token, for chunks that sample;
        a sampling chunk without a token has failed and was retired already). Returns the
        requests that finished."""
        done = []
        for chunk in chunks:
            req = chunk.request
            if req.status is not Status.RUNNING:
                continue
            req.num_computed = chunk.start + len(chunk.tokens)
            self._register(req)
            if not chunk.samples or req.request_id not in sampled:
                continue
            req.output.append(sampled[req.request_id])
            req.finish_reason = req.stop_reason(self.eos_token_ids, self.detokenize)
            if req.finish_reason:
                self.finish(req)
                done.append(req)
        return done

    def _register(self, req: Request) -> None:
        """Make the request's full blocks whose K/V are now computed findable (prefix caching)."""
        if self.blocks.prefix_caching:
            bs = self.blocks.block_size
            full = req.num_computed // bs
            if full > len(req.block_hashes):
                self.blocks.hasher.extend(req.block_hashes, req.tokens[:full * bs],
                                          req.content_keys)
            self.blocks.register(req.request_id, req.block_hashes, full)

    def finish(self, req: Request, reason: str | None = None) -> None:
        """Retire a request (finished, cancelled or failed) and free its blocks."""
        req.finish_reason = req.finish_reason or reason
        req.status = Status.FINISHED
        self.blocks.free(req.request_id)
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
