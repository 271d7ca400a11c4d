import random

import pytest

from step3_trt.runtime.block_manager import BlockManager, OutOfBlocks


def test_slots_follow_the_block_table():
    bm = BlockManager(num_blocks=8, block_size=4)
    slots = bm.append(1, 6)
    table = bm.block_table(1)
    assert len(table) == 2 and bm.num_free == 6
    assert slots == [table[p // 4] * 4 + p % 4 for p in range(6)]
    assert bm.append(1, 1) == [table[1] * 4 + 2]  # position 6 -> block 1, offset 2
    assert bm.append(1, 2)[-1] == bm.block_table(1)[2] * 4 + 0  # position 8 opens block 2
    assert bm.length(1) == 9


def test_out_of_blocks_and_free():
    bm = BlockManager(num_blocks=3, block_size=2)
    bm.append(1, 4)
    assert not bm.can_append(2, 3) and bm.can_append(2, 2)
    with pytest.raises(OutOfBlocks, match="sequence 2 needs 2 blocks, 1 free"):
        bm.append(2, 3)
    assert bm.block_table(2) == [] and bm.length(2) == 0  # a failed append changes nothing
    bm.free(1)
    assert bm.num_free == 3 and bm.block_table(1) == []
    bm.append(2, 6)


def test_random_interleaving_never_shares_a_slot():
    rng = random.Random(0)
    bm = BlockManager(num_blocks=40, block_size=3)
    owner: dict[int, int] = {}
    live: set[int] = set()
    for _ in range(2000):
        seq = rng.randrange(12)
        if seq in live and rng.random() < 0.1:
            for slot in [s for s, o in owner.items() if o == seq]:
                del owner[slot]
            bm.free(seq)
            live.discard(seq)
            continue
        n = rng.randint(1, 5)
        if not bm.can_append(seq, n):
            continue
        for slot in bm.append(seq, n):
            assert slot not in owner
            owner[slot] = seq
        live.add(seq)
    used = sum(len(bm.block_table(s)) for s in live)
    assert used + bm.num_free == 40
