"""The coordinator's picture of each attention rank's prefix cache, for prefix-aware dispatch.

The coordinator keeps its own index of what it sent where rather than asking the ranks: the
block hashes of each prompt it dispatched to a rank (at once, so a second request with the same
new prefix follows the first even before the first is computed), and of prompt + outputs when
a request finishes there. Each rank's entries are kept least recently used first, at most as
many as the rank has KV blocks. The picture can be wrong both ways (the rank evicted a block,
or has not computed it yet); a wrong guess costs a cache miss, never a wrong token, since the
rank looks up its own cache. Nothing is added to the lockstep path.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from step3_trt.runtime.block_manager import BlockHasher
from step3_trt.runtime.ranks import RankId


@dataclass(frozen=True)
class PrefixRouting:
    """Prefix-aware dispatch: the ranks' block hasher, and the bound past which the rank with
    the longest cached prefix counts as overloaded: it is chosen only while it has at most
    `slack` more requests in flight than the least-loaded rank."""
    hasher: BlockHasher
    slack: int

    def __post_init__(self):
        if self.slack < 0:
            raise ValueError(f"prefix routing slack must be >= 0, got {self.slack}")

    def usable_hashes(self, tokens: Sequence[int]) -> list[bytes]:
        """Hashes of the full blocks a rank could take from its cache for this prompt (it always
        computes the last token)."""
        return self.hasher.extend([], tokens[:len(tokens) - 1])


def choose_rank(load: dict[RankId, int], hits: dict[RankId, int], slack: int) -> RankId:
    """The rank with the most cached blocks of the prompt (`hits`; ties: fewer requests in
    flight, then the lower index), unless it has more than `slack` requests more in flight than
    the least-loaded rank; then the least-loaded rank (ties: the lower index)."""
    least = min(load, key=lambda a: (load[a], a.index))
    best = min(load, key=lambda a: (-hits.get(a, 0), load[a], a.index))
    if hits.get(best, 0) > 0 and load[best] - load[least] <= slack:
        return best
    return least


class PrefixIndex:
    def __init__(self, ranks: Sequence[RankId]):
        self._blocks: dict[RankId, OrderedDict[bytes, None]] = {r: OrderedDict() for r in ranks}

    def hits(self, hashes: Sequence[bytes]) -> dict[RankId, int]:
        """Per rank: how many leading blocks of `hashes` it is thought to hold."""
        out = {}
        for rank, blocks in self._blocks.items():
            n = 0
            while n < len(hashes) and hashes[n] in blocks:
                n += 1
            out[rank] = n
        return out

    def add(self, rank: RankId, hashes: Sequence[bytes], capacity: int | None) -> None:
        """`rank` holds (or will) these blocks, a sequence's in order; keep its `capacity` most
        recent (None: all). A sequence's first block counts as the most recent of its blocks,
        as a rank evicts a released sequence's tail first."""
        blocks = self._blocks[rank]
        for h in reversed(hashes):
            blocks[h] = None
            blocks.move_to_end(h)
        while capacity is not None and len(blocks) > capacity:
            blocks.popitem(last=False)

    def size(self, rank: RankId) -> int:
        return len(self._blocks[rank])
