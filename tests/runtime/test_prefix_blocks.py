"""Content-addressed KV blocks: stable chained hashes, sharing without copies, LRU eviction of
unreferenced cached blocks, and the block manager's invariants under random operations (no
block reused while referenced, a shared block always holds the tokens it was found for, nothing
leaks once every sequence is gone)."""

import random

import pytest

from step3_trt.runtime.block_manager import BlockHasher, BlockManager, OutOfBlocks

BS = 4


def hasher(seed=b"digest"):
    return BlockHasher(BS, seed)


def test_hashes_are_stable_chained_and_cover_only_full_blocks():
    h = hasher()
    hashes = h.extend([], list(range(10)))
    assert len(hashes) == 2  # tokens 8, 9 are a partial block: never hashed
    # a fixed function of (seed, tokens): the same in every process and on every machine
    assert hashes[0].hex() == "664276263bb54b235979318e1fcc0f93"
    assert h.extend([], list(range(10))) == hashes
    assert h.extend(hashes[:1], list(range(12)))[:2] == hashes  # incremental = from scratch
    # block 1 depends on block 0 through the chain, not only on its own tokens
    other = h.extend([], [9, 9, 9, 9] + list(range(4, 8)))
    assert other[0] != hashes[0] and other[1] != hashes[1]
    assert hasher(b"another engine").extend([], list(range(8))) != hashes
    # a content key (an image's digest at position 5) changes block 1 and what follows only
    keyed = h.extend([], list(range(12)), [(5, b"image-a")])
    assert keyed[0] == hashes[0] and keyed[1] != hashes[1]
    assert h.extend([], list(range(12)), [(5, b"image-b")])[1] != keyed[1]


def test_a_registered_prefix_is_shared_without_copies_and_outlives_its_sequence():
    bm = BlockManager(8, BS, hasher())
    tokens = list(range(10))
    hashes = hasher().extend([], tokens)
    bm.append(1, 10)
    bm.register(1, hashes, 2)
    assert bm.num_cached == 2 and bm.lookup(hashes) == bm.block_table(1)[:2]
    with pytest.raises(ValueError, match="no 3 full blocks"):
        bm.register(1, hasher().extend([], tokens + [0, 0]), 3)  # block 2 is not full
    shared = bm.lookup(hashes)
    bm.share(2, shared)
    assert bm.block_table(2) == shared and bm.length(2) == 8
    assert [bm.ref_count(b) for b in shared] == [2, 2] and bm.num_used == 3
    bm.free(1)
    assert [bm.ref_count(b) for b in shared] == [1, 1] and bm.num_used == 2
    bm.free(2)
    assert bm.num_used == 0 and bm.num_free == 8 and bm.num_cached == 2  # still findable
    bm.share(3, bm.lookup(hashes))
    assert bm.block_table(3) == shared and bm.num_used == 2


def test_never_used_blocks_go_first_then_cached_ones_least_recently_released_first():
    bm = BlockManager(4, BS, hasher())
    a, b = hasher().extend([], [1] * 4), hasher().extend([], [2] * 4)
    bm.append(1, 4)
    bm.register(1, a, 1)
    bm.append(2, 4)
    bm.register(2, b, 1)
    bm.free(2)
    bm.free(1)  # released after b: b is the least recently released
    assert bm.num_free == 4 and bm.num_cached == 2
    bm.append(3, 8)  # takes the two never-used blocks
    assert bm.lookup(a) and bm.lookup(b)
    bm.append(3, 4)  # one more: evicts b, the least recently released
    assert bm.lookup(a) and not bm.lookup(b) and bm.num_cached == 1
    assert not bm.can_share(bm.lookup(a), 1)  # reviving a takes the last free block
    assert bm.can_share(bm.lookup(a), 0)
    with pytest.raises(OutOfBlocks):
        bm.append(4, 8)


def test_a_duplicate_block_stays_private():
    bm = BlockManager(4, BS, hasher())
    h = hasher().extend([], [7] * 4)
    bm.append(1, 4)
    bm.append(2, 4)  # computed the same prefix before 1 was registered
    bm.register(1, h, 1)
    bm.register(2, h, 1)
    assert bm.lookup(h) == bm.block_table(1) and bm.num_cached == 1
    bm.free(2)
    bm.free(1)
    assert bm.num_cached == 1 and bm.num_free == 4


def test_without_a_hasher_nothing_is_shared():
    bm = BlockManager(4, BS)
    assert not bm.prefix_caching
    bm.append(1, 8)
    bm.register(1, hasher().extend([], [1] * 8), 2)  # a no-op without prefix caching
    assert bm.num_cached == 0 and bm.lookup(hasher().extend([], [1] * 8)) == []


@pytest.mark.parametrize("seed", range(4))
def test_random_operations_keep_every_invariant(seed):
    rng = random.Random(seed)
    h = hasher()
    bm = BlockManager(24, BS, h)
    prefixes = [[rng.randrange(50) for _ in range(rng.randint(0, 14))] for _ in range(4)]
    memory: dict[int, int] = {}  # slot -> token written there
    live: dict[int, list[int]] = {}  # sequence -> its tokens with a slot
    hashes: dict[int, list[bytes]] = {}
    next_id, hits, evictions = 0, 0, 0

    def check():
        tables = {s: bm.block_table(s) for s in live}
        for s, tokens in live.items():  # every sequence reads back exactly its own tokens
            t = tables[s]
            assert [memory[t[p // BS] * BS + p % BS] for p in range(len(tokens))] == tokens
        held = [b for t in tables.values() for b in t]
        for b in set(held):
            assert bm.ref_count(b) == held.count(b)
        assert bm.num_used == len(set(held)) and bm.num_free == 24 - len(set(held))

    def write(seq, n_new):
        nonlocal evictions
        cached = bm.num_cached
        slots = bm.append(seq, n_new)
        evictions += bm.num_cached < cached
        tokens = live[seq]
        for slot, tok in zip(slots, tokens[len(tokens) - n_new:]):
            assert bm.ref_count(slot // BS) == 1  # never a block another sequence holds
            memory[slot] = tok
        bm.register(seq, h.extend(hashes[seq], tokens), len(tokens) // BS)

    for _ in range(1500):
        op = rng.random()
        if op < 0.3 or not live:  # a new sequence: a known prefix, then its own tokens
            tokens = list(rng.choice(prefixes)) + [rng.randrange(50)
                                                   for _ in range(rng.randint(1, 9))]
            found = bm.lookup(h.extend([], tokens)[:(len(tokens) - 1) // BS])
            rest = len(tokens) - len(found) * BS
            if not bm.can_share(found, rest):
                continue
            for i, b in enumerate(found):  # a cache hit holds the very tokens looked up
                assert [memory[b * BS + k] for k in range(BS)] == tokens[i * BS:(i + 1) * BS]
            seq, next_id, hits = next_id, next_id + 1, hits + bool(found)
            bm.share(seq, found)
            live[seq], hashes[seq] = tokens, []
            write(seq, rest)
        elif op < 0.8:  # decode or a prefill chunk of an existing sequence
            seq = rng.choice(list(live))
            n = rng.randint(1, 6)
            if not bm.can_append(seq, n):
                continue
            live[seq] += [rng.randrange(50) for _ in range(n)]
            write(seq, n)
        else:  # finished, cancelled or preempted
            seq = rng.choice(list(live))
            bm.free(seq)
            del live[seq], hashes[seq]
        check()
    for seq in list(live):
        bm.free(seq)
    assert bm.num_used == 0 and bm.num_free == 24  # nothing leaks
    assert hits > 20 and evictions > 20  # the run did share and evict
    assert 0 < bm.num_cached <= 24
