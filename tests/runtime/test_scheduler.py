"""The scheduler against a fake model whose next token is a function of the full token history,
so any scheduling bug (a lost, repeated or reordered chunk) changes the output."""

import random

import pytest

from step3_trt.runtime.block_manager import BlockManager
from step3_trt.runtime.request import Request, Status
from step3_trt.runtime.scheduler import Scheduler, SchedulerConfig
from step3_trt.sampling import SamplingParams


def next_token(history: list[int]) -> int:
    return (sum((i + 1) * t for i, t in enumerate(history)) * 31 + 7) % 97


def expected(prompt, n):
    toks = list(prompt)
    for _ in range(n):
        toks.append(next_token(toks))
    return toks[len(prompt):]


def run(scheduler: Scheduler, requests, arrivals=None):
    """Drive the scheduler; a simulated KV store checks each chunk sees exactly the history."""
    arrivals = arrivals or {r.request_id: 0 for r in requests}
    kv: dict[int, list[int]] = {}  # slot -> token stored there
    step = 0
    pending = sorted(requests, key=lambda r: arrivals[r.request_id])
    while pending or scheduler.has_work():
        while pending and arrivals[pending[0].request_id] <= step:
            scheduler.add(pending.pop(0))
        chunks = scheduler.schedule()
        sampled = {}
        tokens_this_step = 0
        for c in chunks:
            tokens_this_step += len(c.tokens)
            assert c.tokens == c.request.tokens[c.start:c.start + len(c.tokens)]
            for slot, tok in zip(c.slots, c.tokens):
                kv[slot] = (c.request.request_id, tok)
            table = scheduler.blocks.block_table(c.request.request_id)
            bs = scheduler.blocks.block_size
            history = [kv[table[p // bs] * bs + p % bs] for p in range(c.start + len(c.tokens))]
            assert all(owner == c.request.request_id for owner, _ in history)
            if c.samples:
                sampled[c.request.request_id] = next_token([t for _, t in history])
        assert tokens_this_step <= scheduler.config.max_tokens_per_step
        assert len(scheduler.running) <= scheduler.config.max_batch
        scheduler.finish_step(chunks, sampled)
        step += 1
        assert step < 10_000
    return step


def make(n, rng, max_new=12):
    return [Request(i, [rng.randrange(97) for _ in range(rng.randint(1, 40))],
                    SamplingParams(max_new_tokens=rng.randint(1, max_new), greedy=True))
            for i in range(n)]


@pytest.mark.parametrize("num_blocks, budget, max_batch", [(200, 256, 16), (200, 7, 3),
                                                           (14, 32, 8), (9, 5, 16)])
def test_every_request_completes_with_the_right_tokens(num_blocks, budget, max_batch):
    rng = random.Random(num_blocks * budget)
    reqs = make(20, rng)
    sched = Scheduler(BlockManager(num_blocks, 8), SchedulerConfig(max_batch, budget), 128)
    run(sched, reqs, {r.request_id: rng.randint(0, 30) for r in reqs})
    for r in reqs:
        assert r.status is Status.FINISHED and r.finish_reason == "length"
        assert r.output == expected(r.prompt, r.params.max_new_tokens)
    assert sched.blocks.num_free == num_blocks


def test_tiny_cache_forces_preemption_without_losing_requests():
    rng = random.Random(1)
    reqs = make(10, rng, max_new=30)
    sched = Scheduler(BlockManager(10, 8), SchedulerConfig(8, 64), 80)
    run(sched, reqs)
    assert sum(r.preemptions for r in reqs) > 0
    assert all(r.output == expected(r.prompt, r.params.max_new_tokens) for r in reqs)


def test_stop_tokens_and_eos():
    prompt = [3, 1, 4]
    gold = expected(prompt, 10)
    r1 = Request(1, prompt, SamplingParams(max_new_tokens=10, greedy=True,
                                           stop_token_ids=(gold[3],)))
    sched = Scheduler(BlockManager(20, 4), SchedulerConfig(), 64, eos_token_ids=[gold[5]])
    r2 = Request(2, prompt, SamplingParams(max_new_tokens=10, greedy=True))
    run(sched, [r1, r2])
    assert r1.output == gold[:gold.index(gold[3]) + 1] and r1.finish_reason == "stop"
    assert r2.output == gold[:gold.index(gold[5]) + 1] and r2.finish_reason == "stop"


def test_requests_that_cannot_fit_are_refused_up_front():
    sched = Scheduler(BlockManager(4, 4), SchedulerConfig(), 64)
    with pytest.raises(ValueError, match="exceeds the maximum sequence length 64"):
        sched.add(Request(1, [1] * 60, SamplingParams(max_new_tokens=10)))
    with pytest.raises(ValueError, match="can never fit in the KV cache"):
        sched.add(Request(2, [1] * 20, SamplingParams(max_new_tokens=10)))
    with pytest.raises(ValueError, match="empty prompt"):
        sched.add(Request(3, [], SamplingParams()))


def test_stop_strings_end_a_request_once_its_text_contains_one():
    prompt = [3, 1, 4]
    gold = expected(prompt, 10)
    detok = lambda ids: "".join(chr(65 + t % 26) for t in ids)  # noqa: E731
    stop = detok(gold[4:6])
    req = Request(1, prompt, SamplingParams(max_new_tokens=10, greedy=True, stop_strings=(stop,)))
    sched = Scheduler(BlockManager(20, 4), SchedulerConfig(), 64, detokenize=detok)
    run(sched, [req])
    first = next(i for i in range(10) if stop in detok(gold[:i + 1]))
    assert req.output == gold[:first + 1] and req.finish_reason == "stop"
    with pytest.raises(ValueError, match="stop strings need a tokenizer"):
        Scheduler(BlockManager(20, 4), SchedulerConfig(), 64).add(
            Request(2, prompt, SamplingParams(stop_strings=("x",))))


def test_bans_block_the_last_token_of_a_bad_word_and_eos_before_min_tokens():
    req = Request(0, [5, 6, 7], SamplingParams(max_new_tokens=8, stop_token_ids=(3,)),
                  bad_words=[[7, 9], [4], []], min_tokens=2)
    assert req.has_bans and req.banned({1}) == {9, 4, 1, 3}
    req.output += [2, 8]  # min_tokens reached, and the sequence no longer ends with 7
    assert req.banned({1}) == {4}
    assert Request(1, [1], SamplingParams()).has_bans is False
