"""Paged KV-cache bookkeeping: fixed-size blocks, a block table per sequence. Pure Python (no
tensors), so the scheduler that drives it is unit-testable on any machine."""

from __future__ import annotations

from collections import deque


class OutOfBlocks(RuntimeError):
    """Not enough free blocks; the scheduler preempts instead of failing the request."""


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, "
                             f"{block_size}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self._free: deque[int] = deque(range(num_blocks))
        self._tables: dict[int, list[int]] = {}
        self._lengths: dict[int, int] = {}  # tokens whose KV has a slot, per sequence

    @property
    def num_free(self) -> int:
        return len(self._free)

    def blocks_needed(self, seq_id: int, new_tokens: int) -> int:
        have = len(self._tables.get(seq_id, ()))
        total = self._lengths.get(seq_id, 0) + new_tokens
        return max(0, -(-total // self.block_size) - have)

    def can_append(self, seq_id: int, new_tokens: int) -> bool:
        return self.blocks_needed(seq_id, new_tokens) <= self.num_free

    def append(self, seq_id: int, new_tokens: int) -> list[int]:
        """Reserve slots for `new_tokens` more tokens of `seq_id`; returns their slot ids
        (block * block_size + offset), in order."""
        need = self.blocks_needed(seq_id, new_tokens)
        if need > self.num_free:
            raise OutOfBlocks(f"sequence {seq_id} needs {need} blocks, {self.num_free} free")
        table = self._tables.setdefault(seq_id, [])
        table.extend(self._free.popleft() for _ in range(need))
        start = self._lengths.get(seq_id, 0)
        self._lengths[seq_id] = start + new_tokens
        bs = self.block_size
        return [table[p // bs] * bs + p % bs for p in range(start, start + new_tokens)]

    def block_table(self, seq_id: int) -> list[int]:
        return list(self._tables.get(seq_id, ()))

    def length(self, seq_id: int) -> int:
        return self._lengths.get(seq_id, 0)

    def free(self, seq_id: int) -> None:
        """Return a sequence's blocks (finished, cancelled or preempted)."""
        self._free.extend(self._tables.pop(seq_id, ()))
        self._lengths.pop(seq_id, None)
