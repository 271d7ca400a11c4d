"""The coordinator's side of the attention ranks: dispatch (prefix-aware with prefix caching:
the rank thought to hold the longest cached prefix of the prompt unless it is overloaded, see
prefix_index.py; else the least-loaded rank), cancellation routed to the owning rank, step
reports, and a watchdog on busy ranks."""

from __future__ import annotations

import time

from step3_trt.runtime.afd.prefix_index import PrefixIndex, PrefixRouting, choose_rank
from step3_trt.runtime.afd.stalls import StallWatch
from step3_trt.runtime.messages import Begin, Cancel, RankStats, Ready, Result, Shutdown, Stalled, \
    StepReport, Submit
from step3_trt.runtime.ranks import JobLayout, RankId
from step3_trt.runtime.transport.base import AfdError, ControlChannel, Deadline


def wait_ready(layout: JobLayout, control: ControlChannel, startup_timeout_s: float) -> None:
    """Every worker reports once its engines are loaded; then all are told to begin, so no
    wait between workers starts while one is still loading."""
    waiting = set(layout.workers)
    deadline = Deadline.after(startup_timeout_s)
    while waiting:
        msg, source = control.recv_message(None, "ready report", deadline)
        if not isinstance(msg, Ready):
            raise AfdError(f"{layout.name(source)} sent {msg.TYPE!r} before 'ready'")
        waiting.discard(source)
    for worker in layout.workers:
        control.send_message(Begin(), worker)


class Dispatcher:
    def __init__(self, layout: JobLayout, control: ControlChannel, timeout_s: float,
                 routing: PrefixRouting | None = None):
        """`routing`: prefix-aware dispatch (the ranks cache prefixes); None: least-loaded."""
        self.layout, self.control, self.timeout_s = layout, control, timeout_s
        self.load = {a: 0 for a in layout.attention_ranks}
        self.last_heard = {a: time.monotonic() for a in self.load}
        self.owner: dict[int, RankId] = {}  # in-flight job request id -> attention rank
        self.stats: dict[RankId, RankStats] = {}  # latest occupancy per attention rank
        self.stalls = StallWatch(layout, timeout_s)
        self.routing = routing
        self.index = PrefixIndex(layout.attention_ranks)
        self.prompts: dict[int, list[int]] = {}  # in-flight request id -> prompt (routing only)

    def submit(self, msg: Submit) -> RankId:
        """Send a request to the rank `choose_rank` picks; returns that rank."""
        hashes = self.routing.usable_hashes(msg.prompt_ids) if self.routing else []
        hits = self.index.hits(hashes) if hashes else {}
        target = choose_rank(self.load, hits, self.routing.slack if self.routing else 0)
        if self.load[target] == 0:
            self.last_heard[target] = time.monotonic()
        self.load[target] += 1
        self.owner[msg.id] = target
        if self.routing is not None:
            self.prompts[msg.id] = list(msg.prompt_ids)
            self.index.add(target, hashes, self._capacity(target))
        self.control.send_message(msg, target)
        return target

    def _capacity(self, rank: RankId) -> int | None:
        stats = self.stats.get(rank)
        return None if stats is None else stats.kv_blocks_total

    def _learn(self, result: Result, rank: RankId) -> None:
        """A request finished on `rank`: its prompt and outputs (but the last, whose K/V are
        never computed) are in that rank's cache now, unless it failed or was cancelled."""
        prompt = self.prompts.pop(result.id, None)
        if prompt is not None and result.error is None and result.finish_reason != "cancelled":
            tokens = prompt + result.output_ids
            self.index.add(rank, self.routing.usable_hashes(tokens), self._capacity(rank))

    def cancel(self, request_id: int) -> bool:
        """Ask the owning rank to drop a request and free its KV blocks; False if it is not in
        flight (already finished, or unknown). The rank reports it finished as `cancelled`."""
        rank = self.owner.get(request_id)
        if rank is None:
            return False
        self.control.send_message(Cancel(request_id), rank)
        return True

    def poll(self) -> tuple[StepReport, RankId] | None:
        """The next step report from any attention rank (bookkeeping done), or None. Stall
        reports of any worker are taken on the way."""
        while (got := self.control.poll_message()) is not None and isinstance(got[0], Stalled):
            self.stalls.report(got[1], got[0])
        if got is None:
            return None
        msg, source = got
        if not isinstance(msg, StepReport):
            raise AfdError(f"{self.layout.name(source)} sent {msg.TYPE!r}, expected a step report")
        self.last_heard[source] = time.monotonic()
        self.stalls.progress(source)
        self.stats[source] = msg.stats
        for result in msg.finished:
            if self.owner.pop(result.id, None) is not None:
                self.load[source] -= 1
                self._learn(result, source)
        return msg, source

    def check_progress(self) -> None:
        """A rank that others' stall reports show to be hung (stalls.py); and, past twice the
        per-message timeout, a busy attention rank that sent no step report."""
        self.stalls.check()
        now = time.monotonic()
        for rank, n in self.load.items():
            if n and now - self.last_heard[rank] > 2 * self.timeout_s:
                raise AfdError(f"{self.layout.name(rank)} made no progress for "
                               f"{2 * self.timeout_s:g} s with {n} requests in flight")

    @property
    def in_flight(self) -> int:
        return len(self.owner)

    def shutdown(self) -> None:
        for rank in self.layout.attention_ranks:
            self.control.send_message(Shutdown(), rank)
