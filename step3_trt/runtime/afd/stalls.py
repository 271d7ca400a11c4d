"""Finding the rank a stalled AFD job waits on.

Workers run in lockstep, so one hung rank (stopped, or stuck in a kernel) soon blocks every
other: the attention ranks wait on FFN partials, the FFN ranks on attention inputs, followers on
the leader. Each wait that lasts the job's timeout sends the coordinator a `Stalled` report (who
waits, on whom, for what). The rank that others wait on but that reports no wait of its own is
the one that stopped answering; once it has been waited on for a grace period (time for every
blocked rank to report), the coordinator fails the job naming it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from step3_trt.runtime.messages import Stalled
from step3_trt.runtime.ranks import JobLayout, RankId
from step3_trt.runtime.transport.base import AfdError


@dataclass
class _Wait:
    waiter: RankId
    what: str
    seconds: float
    since: float  # when the report came


class StallWatch:
    def __init__(self, layout: JobLayout, timeout_s: float):
        self.layout, self.grace_s = layout, 0.5 * timeout_s + 1.0
        self.waits: dict[RankId, list[_Wait]] = {}  # peer waited on -> reports about it
        self.waiting: dict[RankId, float] = {}  # rank -> when it last reported a stall

    def report(self, waiter: RankId, msg: Stalled) -> None:
        now = time.monotonic()
        peer = self.layout.rank_id(msg.peer)
        self.waits.setdefault(peer, []).append(_Wait(waiter, msg.what, msg.seconds, now))
        self.waiting[waiter] = now

    def progress(self, rank: RankId) -> None:
        """`rank` made progress (a step report): its earlier stalls are over."""
        self.waiting.pop(rank, None)
        for peer in list(self.waits):
            self.waits[peer] = [w for w in self.waits[peer] if w.waiter != rank]
            if not self.waits[peer]:
                del self.waits[peer]

    def check(self) -> None:
        """AfdError naming a rank that has been waited on past the grace period and reports
        no wait of its own."""
        now = time.monotonic()
        for peer, waits in self.waits.items():
            first = min(waits, key=lambda w: w.since)
            if peer not in self.waiting and now - first.since > self.grace_s:
                raise AfdError(f"{self.layout.name(peer)} stopped answering: "
                               f"{self.layout.name(first.waiter)} got no {first.what} from it "
                               f"within {first.seconds:g} s")
