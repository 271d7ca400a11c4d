"""The scheduler with prefix caching, against a fake model whose next token is a function of the
whole history read back from a simulated KV store: a request that starts on cached blocks must
find exactly its own prefix there, so a wrong hit, a lost chunk or a block reused while shared
changes the output. Conversations share prefixes, arrive staggered, get preempted in tiny
caches and cancelled mid-prefill; outputs must equal those of the scheduler without caching."""

import random

import pytest

from step3_trt.runtime.block_manager import BlockHasher, BlockManager
from step3_trt.runtime.request import Request, Status
from step3_trt.runtime.scheduler import Scheduler, SchedulerConfig
from step3_trt.sampling import SamplingParams
from tests.runtime.test_scheduler import expected, next_token

BS = 8


def scheduler(num_blocks, budget, max_batch, caching):
    hasher = BlockHasher(BS, b"engine") if caching else None
    return Scheduler(BlockManager(num_blocks, BS, hasher), SchedulerConfig(max_batch, budget), 160)


def drive(sched, requests, arrivals, cancels=None):
    """Run to completion; cancels: request id -> step at which it is cancelled (if unfinished).
    Every chunk's history is read back from the slots of the request's block table."""
    cancels = cancels or {}
    memory: dict[int, int] = {}  # slot -> token whose K/V are there
    pending = sorted(requests, key=lambda r: arrivals[r.request_id])
    step = 0
    while pending or sched.has_work():
        while pending and arrivals[pending[0].request_id] <= step:
            sched.add(pending.pop(0))
        for r in requests:
            if cancels.get(r.request_id) == step and r.status is not Status.FINISHED:
                sched.finish(r, "cancelled")
        chunks = sched.schedule()
        sampled = {}
        for c in chunks:
            assert c.start + len(c.tokens) <= c.request.num_tokens and c.tokens
            for slot, tok in zip(c.slots, c.tokens):
                memory[slot] = tok
        for c in chunks:  # after the whole step's writes, as the engine reads them
            table = sched.blocks.block_table(c.request.request_id)
            history = [memory[table[p // BS] * BS + p % BS] for p in range(c.start + len(c.tokens))]
            assert history == c.request.tokens[:len(history)]
            if c.samples:
                sampled[c.request.request_id] = next_token(history)
        sched.finish_step(chunks, sampled)
        step += 1
        assert step < 10_000
    assert sched.blocks.num_used == 0  # every reference was released


def conversations(rng, n, max_new=10):
    """Requests in families that share a system prompt, some extending an earlier request's
    whole prompt (the next turn of a conversation), some identical to another."""
    systems = [[rng.randrange(97) for _ in range(rng.randint(5, 30))] for _ in range(3)]
    prompts = []
    for i in range(n):
        kind = rng.random()
        if prompts and kind < 0.3:
            base = rng.choice([p for p in prompts if len(p) < 70] or [[]])
            prompts.append(base + [rng.randrange(97) for _ in range(rng.randint(1, 20))])
        elif prompts and kind < 0.4:
            prompts.append(list(rng.choice(prompts)))
        else:
            prompts.append(rng.choice(systems) + [rng.randrange(97)
                                                  for _ in range(rng.randint(1, 25))])
    return [Request(i, p, SamplingParams(max_new_tokens=rng.randint(1, max_new), greedy=True))
            for i, p in enumerate(prompts)]


def copies(requests):
    return [Request(r.request_id, list(r.prompt), r.params) for r in requests]


@pytest.mark.parametrize("num_blocks, budget, max_batch", [(200, 256, 16), (200, 9, 3),
                                                           (24, 32, 8), (16, 7, 16)])
def test_outputs_equal_caching_off_and_prefixes_are_reused(num_blocks, budget, max_batch):
    rng = random.Random(num_blocks * budget + max_batch)
    reqs = conversations(rng, 24)
    arrivals = {r.request_id: rng.randint(0, 60) for r in reqs}
    off, on = copies(reqs), copies(reqs)
    plain = scheduler(num_blocks, budget, max_batch, False)
    drive(plain, off, arrivals)
    sched = scheduler(num_blocks, budget, max_batch, True)
    drive(sched, on, arrivals)
    for a, b in zip(off, on):
        assert a.output == b.output == expected(a.prompt, a.params.max_new_tokens)
        assert b.finish_reason == "length" and b.cached_tokens % BS == 0
        assert b.cached_tokens < len(b.prompt)  # the last prompt token is always computed
    assert sched.prefix_hit_tokens > 0 and sum(r.cached_tokens for r in on) > 0
    assert sched.prefill_tokens < plain.prefill_tokens


def test_a_later_turn_starts_after_the_cached_prompt_and_output_of_the_earlier_one():
    sched = scheduler(64, 256, 8, True)
    first = Request(0, list(range(1, 21)), SamplingParams(max_new_tokens=6, greedy=True))
    drive(sched, [first], {0: 0})
    # 20 prompt + 6 outputs, of which the last has no K/V: 25 computed, 3 full blocks
    turn = first.prompt + first.output + [50, 51, 52]
    second = Request(1, turn, SamplingParams(max_new_tokens=4, greedy=True))
    # wholly cached: its last block is computed again, for the logits of its last token
    same = Request(2, list(turn[:24]), SamplingParams(max_new_tokens=1, greedy=True))
    sched.add(second)
    sched.add(same)
    chunks = sched.schedule()
    assert [(c.request.request_id, c.start, len(c.tokens)) for c in chunks] == \
        [(1, 24, 5), (2, 16, 8)]
    assert second.cached_tokens == 24 and same.cached_tokens == 16
    assert sched.blocks.block_table(2) == sched.blocks.block_table(1)[:2] + \
        sched.blocks.block_table(2)[2:]  # the same blocks, not copies
    assert sched.prefix_query_tokens == 20 + 29 + 24 and sched.prefix_hit_tokens == 24 + 16


def test_preemption_in_a_tiny_cache_releases_references_and_resumes_from_its_own_blocks():
    rng = random.Random(5)
    reqs = conversations(rng, 12, max_new=30)
    arrivals = {r.request_id: 0 for r in reqs}
    off, on = copies(reqs), copies(reqs)
    drive(scheduler(10, 64, 8, False), off, arrivals)
    sched = scheduler(10, 64, 8, True)
    drive(sched, on, arrivals)
    assert sum(r.preemptions for r in on) > 0
    assert [r.output for r in on] == [r.output for r in off]
    assert all(r.output == expected(r.prompt, r.params.max_new_tokens) for r in on)
    # re-admissions after preemption found their own blocks: hits beyond the first admissions
    assert sched.prefix_hit_tokens > sum(r.cached_tokens for r in on)


def test_cancelled_mid_prefill_releases_its_blocks_and_what_it_computed_is_reused():
    system = list(range(3, 43))  # 40 tokens: 5 blocks
    long = Request(0, system + [1] * 30, SamplingParams(max_new_tokens=5, greedy=True))
    follower = Request(1, system + [2, 2], SamplingParams(max_new_tokens=5, greedy=True))
    sched = scheduler(40, 16, 4, True)  # 16 tokens a step: the prefill takes 5 steps
    drive(sched, [long, follower], {0: 0, 1: 3}, cancels={0: 2})
    assert long.finish_reason == "cancelled" and long.output == []
    # the two chunks computed before the cancel (32 tokens) were registered and are reused
    assert follower.cached_tokens == 32
    assert follower.output == expected(follower.prompt, 5)
    assert sched.blocks.num_cached >= 4


def test_the_build_config_turns_it_on_and_the_flag_off():
    from step3_trt.build_config import BuildConfig
    from step3_trt.runtime.local import prefix_hasher

    on, off = BuildConfig(), BuildConfig.from_dict({"kv_cache": {"prefix_caching": False}})
    assert on.kv_cache.prefix_caching  # the default
    assert prefix_hasher(on) == BlockHasher(16, on.digest().encode())
    assert prefix_hasher(off) is None and prefix_hasher(on, prefix_caching=False) is None


def test_content_keys_share_blocks_only_between_equal_inputs():
    sched = scheduler(64, 256, 8, True)
    prompt = list(range(1, 41))  # 5 blocks of 8; an "image" at position 20, in block 2
    first = Request(0, prompt, SamplingParams(max_new_tokens=1, greedy=True),
                    content_keys=((20, b"image a"),))
    same = Request(1, prompt, SamplingParams(max_new_tokens=1, greedy=True),
                   content_keys=((20, b"image a"),))
    other = Request(2, prompt, SamplingParams(max_new_tokens=1, greedy=True),
                    content_keys=((20, b"image b"),))
    drive(sched, [first, same, other], {0: 0, 1: 3, 2: 3})
    assert same.cached_tokens == 32 and other.cached_tokens == 16  # blocks 0-1 only
