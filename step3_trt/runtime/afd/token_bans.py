"""Per-request bans applied to the logits before sampling (the TensorRT-LLM backend's inputs):
`bad_words`, token sequences never to complete, and `min_length`, end-of-sequence and stop
tokens banned until a request has that many output tokens."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from step3_trt.runtime.scheduler import Chunk, Request


@dataclass
class TokenBans:
    eos_token_id: int | None
    sequences: dict[int, list[list[int]]] = field(default_factory=dict)  # request id -> banned
    min_tokens: dict[int, int] = field(default_factory=dict)  # request id -> min output tokens

    def add(self, request_id: int, sequences: list[list[int]], min_tokens: int) -> None:
        if sequences:
            self.sequences[request_id] = [list(s) for s in sequences if s]
        if min_tokens > 0:
            self.min_tokens[request_id] = min_tokens

    def forget(self, request_id: int) -> None:
        self.sequences.pop(request_id, None)
        self.min_tokens.pop(request_id, None)

    def banned(self, req: Request) -> set[int]:
        """Tokens `req` may not sample next."""
        out = set()
        tokens = req.tokens
        for seq in self.sequences.get(req.request_id, []):
            head = seq[:-1]
            if not head or tokens[len(tokens) - len(head):] == head:
                out.add(seq[-1])
        if len(req.output) < self.min_tokens.get(req.request_id, 0):
            out.update(req.params.stop_token_ids)
            if self.eos_token_id is not None:
                out.add(self.eos_token_id)
        return out

    def apply(self, logits: torch.Tensor, chunks: list[Chunk]) -> torch.Tensor:
        """logits [len(chunks), V] (row i: chunk i) with banned tokens at -inf."""
        rows = [(i, self.banned(c.request)) for i, c in enumerate(chunks)
                if c.samples and (c.request.request_id in self.sequences
                                  or c.request.request_id in self.min_tokens)]
        rows = [(i, ids) for i, ids in rows if ids]
        if not rows:
            return logits
        logits = logits.clone()
        for i, ids in rows:
            logits[i, sorted(ids)] = float("-inf")
        return logits
