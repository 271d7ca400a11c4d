"""Prefix-aware dispatch: the coordinator sends a request to the attention rank it believes holds
the longest cached prefix of the prompt (what it sent there, prompts at once and outputs once
finished) unless that rank has more than `slack` requests more in flight than the least-loaded
one; without prefix caching it dispatches by load alone. Over the in-process control channel,
with the messages the ranks would get."""

from step3_trt.runtime.afd.dispatch import Dispatcher
from step3_trt.runtime.afd.prefix_index import PrefixIndex, PrefixRouting, choose_rank
from step3_trt.runtime.block_manager import BlockHasher
from step3_trt.runtime.messages import RankStats, Result, StepReport, Submit
from step3_trt.runtime.ranks import JobLayout, RankId, Role
from step3_trt.runtime.transport.inproc import InprocHub
from step3_trt.sampling import SamplingParams

A0, A1, A2 = (RankId(Role.ATTENTION, i) for i in range(3))
HASHER = BlockHasher(4, b"engine")


def test_the_rule():
    load = {A0: 3, A1: 1, A2: 1}
    assert choose_rank(load, {}, 2) == A1  # no hits anywhere: least loaded, lower index
    assert choose_rank(load, {A0: 2, A2: 1}, 2) == A0  # 3 - 1 <= slack 2
    assert choose_rank(load, {A0: 2, A2: 1}, 1) == A1  # A0 overloaded: least loaded
    assert choose_rank(load, {A0: 2, A2: 2}, 2) == A2  # equal hits: the less loaded
    assert choose_rank({A0: 0, A1: 0, A2: 0}, {A1: 1, A2: 1}, 0) == A1


def test_the_index_keeps_the_most_recent_blocks_and_drops_a_sequence_tail_first():
    index = PrefixIndex([A0, A1])
    first = HASHER.extend([], list(range(16)))  # 4 blocks
    index.add(A0, first, capacity=None)
    assert index.hits(first) == {A0: 4, A1: 0}
    assert index.hits(HASHER.extend([], list(range(8)) + [99] * 8)) == {A0: 2, A1: 0}
    other = HASHER.extend([], [7] * 8)
    index.add(A0, other, capacity=5)  # 6 blocks > 5: the oldest tail block goes
    assert index.hits(first)[A0] == 3 and index.hits(other)[A0] == 2 and index.size(A0) == 5


def job(routing):
    layout = JobLayout(2, 1)
    hub = InprocHub(layout, timeout_s=5.0)
    ranks = {a: hub.control(a) for a in layout.attention_ranks}
    return Dispatcher(layout, hub.control(RankId(Role.COORDINATOR, 0)), 5.0, routing), ranks


def submit(dispatch, rid, prompt):
    return dispatch.submit(Submit(rid, prompt, SamplingParams(max_new_tokens=4)))


def test_requests_follow_their_prefix_until_the_rank_is_overloaded():
    dispatch, ranks = job(PrefixRouting(HASHER, slack=2))
    chat, other = list(range(20)), [50 + i for i in range(20)]
    assert submit(dispatch, 0, chat) == A0
    assert submit(dispatch, 1, other) == A1  # nothing in common: the least loaded
    # next turns of the chat follow it to A0 while it has at most 2 requests more than A1
    assert [submit(dispatch, i, chat + [i] * 5) for i in (2, 3, 4)] == [A0, A0, A0]
    assert submit(dispatch, 5, chat + [5] * 5) == A1  # A0 has 4 in flight, A1 1: overloaded
    got = ranks[A0].poll_message()
    assert isinstance(got[0], Submit) and got[0].prompt_ids == chat  # the rank gets the request
    # A1 finishes request 1; its prompt and outputs are now in A1's cache, as the index knows
    ranks[A1].send_message(StepReport([], [Result(1, [90, 91, 92, 93], "length")],
                                      RankStats(0, 0, 0, 64)), RankId(Role.COORDINATOR, 0))
    while dispatch.poll() is not None:
        pass
    assert dispatch.load == {A0: 4, A1: 1}
    turn = other + [90, 91, 92, 93, 94]
    # 5 blocks: the prompt's 5th block (tokens 20-23) is known from the outputs alone
    assert dispatch.index.hits(HASHER.extend([], turn[:-1])) == {A0: 0, A1: 5}


def test_without_prefix_caching_dispatch_is_by_load_alone():
    dispatch, _ = job(None)
    chat = list(range(20))
    assert [submit(dispatch, i, chat) for i in range(4)] == [A0, A1, A0, A1]


def test_token_ids_no_rank_would_take_do_not_break_dispatch():
    dispatch, ranks = job(PrefixRouting(HASHER, slack=2))
    assert submit(dispatch, 0, [2**64 - 1, -5, 3, 4, 5, 6]) == A0  # the rank refuses it
    assert isinstance(ranks[A0].poll_message()[0], Submit)
