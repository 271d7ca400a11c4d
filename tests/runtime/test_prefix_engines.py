"""Prefix caching on the real engines, in process (the engine core over the attention and FFN
engines, paged KV cache): K/V read from cached blocks give the logits of a fresh prefill, and
greedy tokens are identical with caching on and off for conversations that share prefixes,
arrive while others run, are preempted in a tiny cache or cancelled in the middle of their
prefill."""

import pytest
import torch

from step3_trt.runtime.batch import make_batch
from step3_trt.runtime.block_manager import BlockManager
from step3_trt.runtime.core import EngineCore
from step3_trt.runtime.ffn import LocalFfn
from step3_trt.runtime.local import LocalRunner, prefix_hasher
from step3_trt.runtime.request import Request, Status
from step3_trt.runtime.scheduler import Scheduler, SchedulerConfig
from step3_trt.sampling import SamplingParams

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runner(engines_2a2f):
    return LocalRunner(engines_2a2f[1])


def make_core(runner, caching, num_blocks=None, budget=256, micro_batches=3):
    """An engine core over the runner's engines with its own scheduler (and prefix cache)."""
    blocks = BlockManager(num_blocks or runner.num_blocks, runner.build.kv_cache.block_size,
                          prefix_hasher(runner.build, caching))
    scheduler = Scheduler(blocks, SchedulerConfig(16, budget), 1024)
    return EngineCore(runner.attention, LocalFfn(runner.ffn), scheduler, (), micro_batches)


def ids(seed, n):
    return torch.randint(0, 300, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_reused_kv_gives_the_logits_of_a_fresh_prefill(runner):
    system, question = ids(1, 45), ids(2, 13)
    core = make_core(runner, True)
    core.add(Request(0, system + ids(3, 7), SamplingParams(max_new_tokens=3, greedy=True)))
    while core.has_work():
        core.step()
    follower = Request(1, system + question, SamplingParams(max_new_tokens=1, greedy=True))
    core.add(follower)
    (chunk,) = core.scheduler.schedule()
    assert chunk.start == 32 and follower.cached_tokens == 32  # 2 of the system prompt's blocks
    table = core.scheduler.blocks.block_table(1)
    got = runner.forward(make_batch([chunk], [table], runner.device), every_token=True)
    fresh = runner.prompt_logits([system + question])[0]  # no cache: every position computed
    # float32; the cached path attends over K/V computed in another chunk: sums reordered
    torch.testing.assert_close(got, fresh[32:], rtol=1e-4, atol=1e-4)


def drive(core, requests, arrivals, cancel=None, at_cancel=None):
    """Step the core; requests join at their arrival step; `cancel(request, step)` says when
    to cancel one (`at_cancel` gets each cancelled request's computed tokens then)."""
    pending = sorted(requests, key=lambda r: arrivals[r.request_id])
    step = 0
    while pending or core.has_work():
        while pending and arrivals[pending[0].request_id] <= step:
            core.add(pending.pop(0))
        for req in list(core.requests.values()):
            if cancel is not None and cancel(req, step):
                core.cancel(req.request_id)
                if at_cancel is not None:
                    at_cancel[req.request_id] = req.num_computed
        core.step()
        step += 1
        assert step < 2000
    assert core.scheduler.blocks.num_used == 0  # every request released its blocks
    return {r.request_id: r.output for r in requests if r.finish_reason != "cancelled"}


def chat(max_tokens=10):
    """Two conversations over one system prompt, each turn extending the previous one's
    prompt, and a third sharing only the system prompt; a long request to cancel."""
    system = ids(10, 40)
    turns = [system + ids(11, 9), system + ids(11, 9) + ids(12, 20),
             system + ids(11, 9) + ids(12, 20) + ids(13, 6), system + ids(14, 30),
             system + ids(14, 30) + ids(15, 17), ids(16, 5) + system, system + ids(17, 90)]
    return [Request(i, p, SamplingParams(max_new_tokens=max_tokens, greedy=True))
            for i, p in enumerate(turns)]


ARRIVALS = {0: 0, 1: 4, 2: 9, 3: 1, 4: 6, 5: 2, 6: 3}


@pytest.mark.parametrize("budget", [256, 24])  # 24: prefills span several steps
def test_greedy_tokens_are_identical_with_caching_on_and_off(runner, budget):
    def cancel(req, step):  # the 130-token request: mid-prefill at budget 24, else decoding
        return req.request_id == 6 and (
            32 <= req.num_computed < len(req.prompt) if budget == 24 else step == 5)

    off_reqs, on_reqs = chat(), chat()
    off = drive(make_core(runner, False, budget=budget), off_reqs, ARRIVALS, cancel)
    core = make_core(runner, True, budget=budget)
    at_cancel = {}
    on = drive(core, on_reqs, ARRIVALS, cancel, at_cancel)
    assert on == off and len(on) == 6
    cached = {r.request_id: r.cached_tokens for r in on_reqs}
    assert cached[0] == 0 and all(cached[i] >= 32 for i in (1, 2, 4))
    assert cached[5] == 0  # the system prompt is not at its start
    assert core.scheduler.prefill_tokens < sum(len(r.prompt) for r in on_reqs)
    assert on_reqs[6].finish_reason == "cancelled" and on_reqs[6].status is Status.FINISHED
    if budget == 24:  # cancelled with part of its prompt computed, and those blocks cached
        assert 32 <= at_cancel[6] < len(on_reqs[6].prompt)


def test_preemption_in_a_tiny_cache_gives_identical_tokens(runner):
    runs = {}
    for caching in (False, True):
        reqs = chat(max_tokens=40)[:5]
        core = make_core(runner, caching, num_blocks=10, budget=64)
        runs[caching] = drive(core, reqs, {i: 0 for i in range(5)})
        assert sum(r.preemptions for r in reqs) > 0
    assert runs[True] == runs[False]
