"""Paged KV-cache bookkeeping: fixed-size blocks, a block table per sequence, and (given a
`BlockHasher`) prefix caching: full blocks shared across sequences by content. Pure Python (no
tensors), so the scheduler that drives it is unit-testable on any machine.

Prefix caching. Once a full block's K/V are computed, the scheduler registers it under a hash
chained over its token ids and its parent block's hash, seeded with what else decides the K/V
(the engine's build digest, and content keys of non-text inputs at their positions). A new
sequence whose first full blocks hash the same starts with those blocks in its table: reference
counts, no copy. Only full blocks are registered and a sequence only appends after its last
block, so a shared block is never written again. A block that no sequence references keeps its
contents and its hash until its slot is needed: allocation takes free blocks without a hash
first, then cached ones, least recently released first. So cached blocks count as free, and
they are evicted before the scheduler has to preempt anyone.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass


class OutOfBlocks(RuntimeError):
    """Not enough free blocks; the scheduler preempts instead of failing the request."""


ID_MASK = 2**64 - 1
ContentKeys = Sequence[tuple[int, bytes]]  # (position, digest of a non-text input starting there)


@dataclass(frozen=True)
class BlockHasher:
    block_size: int
    seed: bytes  # what decides the K/V besides the tokens: the engine's build digest

    def extend(self, hashes: list[bytes], tokens: Sequence[int],
               content_keys: ContentKeys = ()) -> list[bytes]:
        """Append to `hashes` (those of the first full blocks of `tokens`) the hashes of the
        full blocks after them; returns `hashes`. A block's hash covers its parent's hash (the
        seed for block 0), its token ids and the content keys at its positions, so it names
        everything the K/V at its positions depend on."""
        bs = self.block_size
        for b in range(len(hashes), len(tokens) // bs):
            h = hashlib.sha256(hashes[-1] if hashes else b"step3-trt kv\0" + self.seed)
            block = tokens[b * bs:(b + 1) * bs]
            # ids as unsigned 64-bit: valid ids are unchanged, and no int makes this raise
            h.update(struct.pack(f"<{bs}Q", *(t & ID_MASK for t in block)))
            for position, digest in content_keys:
                if b * bs <= position < (b + 1) * bs:
                    h.update(struct.pack("<qq", position, len(digest)) + digest)
            hashes.append(h.digest()[:16])
        return hashes


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, hasher: BlockHasher | None = None):
        """`hasher`: share full blocks by content (prefix caching); None: never share."""
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, "
                             f"{block_size}")
        if hasher is not None and hasher.block_size != block_size:
            raise ValueError(f"the hasher's block size {hasher.block_size} is not the cache's "
                             f"{block_size}")
        self.num_blocks, self.block_size, self.hasher = num_blocks, block_size, hasher
        self._refs = [0] * num_blocks  # sequences whose table holds the block
        self._hash: list[bytes | None] = [None] * num_blocks  # registered content, if any
        self._index: dict[bytes, int] = {}  # hash -> the block registered under it
        self._empty: deque[int] = deque(range(num_blocks))  # free, nothing reusable in it
        self._cached: OrderedDict[int, None] = OrderedDict()  # free, registered; LRU first
        self._tables: dict[int, list[int]] = {}
        self._lengths: dict[int, int] = {}  # tokens whose KV has a slot, per sequence
        self._registered: dict[int, int] = {}  # leading blocks of a table that are registered

    @property
    def prefix_caching(self) -> bool:
        return self.hasher is not None

    @property
    def num_free(self) -> int:
        """Blocks an allocation may take: never used, or cached and unreferenced."""
        return len(self._empty) + len(self._cached)

    @property
    def num_used(self) -> int:
        """Blocks referenced by at least one sequence."""
        return self.num_blocks - self.num_free

    @property
    def num_cached(self) -> int:
        """Blocks registered under a hash (referenced or not): what a prefix can hit."""
        return len(self._index)

    def ref_count(self, block: int) -> int:
        return self._refs[block]

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
        table.extend(self._take() for _ in range(need))
        start = self._lengths.get(seq_id, 0)
        self._lengths[seq_id] = start + new_tokens
        bs = self.block_size
        return [table[p // bs] * bs + p % bs for p in range(start, start + new_tokens)]

    def _take(self) -> int:
        """A block for writing: a never-used one, else the least recently released cached one
        (its hash is dropped: what it holds is about to be overwritten)."""
        if self._empty:
            block = self._empty.popleft()
        else:
            block, _ = self._cached.popitem(last=False)
            del self._index[self._hash[block]]
            self._hash[block] = None
        self._refs[block] = 1
        return block

    # ---- prefix caching ---------------------------------------------------------------------
    def lookup(self, hashes: Sequence[bytes]) -> list[int]:
        """The cached blocks of the longest prefix of `hashes` (a sequence's full blocks)."""
        out = []
        for h in hashes:
            block = self._index.get(h)
            if block is None:
                break
            out.append(block)
        return out

    def can_share(self, shared: Sequence[int], new_tokens: int) -> bool:
        """Whether a sequence without blocks could start on `shared` (from `lookup`) and then
        append `new_tokens`: unreferenced shared blocks stop being free."""
        revived = sum(1 for b in shared if self._refs[b] == 0)
        return -(-new_tokens // self.block_size) <= self.num_free - revived

    def share(self, seq_id: int, shared: Sequence[int]) -> None:
        """Start `seq_id`'s table with cached full blocks (from `lookup`): its first
        len(shared) * block_size tokens have their K/V already."""
        if seq_id in self._tables:
            raise ValueError(f"sequence {seq_id} already has blocks")
        for block in shared:
            if self._hash[block] is None:
                raise ValueError(f"block {block} holds no cached prefix")
            if self._refs[block] == 0:
                del self._cached[block]
            self._refs[block] += 1
        self._tables[seq_id] = list(shared)
        self._lengths[seq_id] = len(shared) * self.block_size
        self._registered[seq_id] = len(shared)

    def register(self, seq_id: int, hashes: Sequence[bytes], full_blocks: int) -> None:
        """Make the first `full_blocks` blocks of `seq_id`'s table, whose K/V are computed and
        whose hashes are hashes[:full_blocks], findable by `lookup`. A block whose content is
        already registered under another block stays private (freed without a hash)."""
        if self.hasher is None:
            return
        table = self._tables.get(seq_id, [])
        if full_blocks * self.block_size > self._lengths.get(seq_id, 0) or \
                full_blocks > len(hashes):
            raise ValueError(f"sequence {seq_id} has no {full_blocks} full blocks to register "
                             f"({self._lengths.get(seq_id, 0)} tokens, {len(hashes)} hashes)")
        for i in range(self._registered.get(seq_id, 0), full_blocks):
            if hashes[i] not in self._index:
                self._index[hashes[i]] = table[i]
                self._hash[table[i]] = hashes[i]
        self._registered[seq_id] = max(self._registered.get(seq_id, 0), full_blocks)

    # ---- per sequence -----------------------------------------------------------------------
    def block_table(self, seq_id: int) -> list[int]:
        return list(self._tables.get(seq_id, ()))

    def length(self, seq_id: int) -> int:
        return self._lengths.get(seq_id, 0)

    def free(self, seq_id: int) -> None:
        """Drop a sequence's references (finished, cancelled or preempted). A block nobody
        references is free again; a registered one keeps its contents until reused. The table
        is released last block first, so a sequence's tail is evicted before its prefix."""
        for block in reversed(self._tables.pop(seq_id, ())):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                if self._hash[block] is None:
                    self._empty.append(block)
                else:
                    self._cached[block] = None
        self._lengths.pop(seq_id, None)
        self._registered.pop(seq_id, None)
