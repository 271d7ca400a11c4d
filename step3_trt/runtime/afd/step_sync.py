"""Lockstep steps across the workers of an AFD job.

Every FFN rank walks one schedule per step: for each layer, each micro-batch, each attention
rank in order, one message in and one partial out (runtime/afd/ffn_worker.py). So the attention
ranks run their steps together, and the leader (attention rank 0) decides for all in rounds: it
sends each other attention rank a Round, each answers with a Vote (has work, asked to stop), and
the leader sends every attention rank the Decision (step if anyone has work, stop once everyone is
stopping and idle, else idle), and the FFN ranks when they must act (step or stop). An attention
rank without work of its own runs the step with empty micro-batches.

While stepping, rounds follow each other. Once the decision is idle, no round runs until
something changes: the leader starts one when its own coordinator messages change its state or
another attention rank, whose state changed, sends it a Nudge. Idle ranks only poll their
inboxes (with the transports' backoff), so an idle job costs about what idle probing costs.
"""

from __future__ import annotations

from step3_trt.runtime.messages import Decision, Nudge, Round, Vote
from step3_trt.runtime.ranks import JobLayout, RankId
from step3_trt.runtime.transport.base import NEVER, ControlChannel


class StepSync:
    def __init__(self, control: ControlChannel, layout: JobLayout, me: RankId):
        self.control, self.layout, self.me = control, layout, me
        self.followers = [a for a in layout.attention_ranks if a != layout.leader]
        self.stepping = False  # the last decision was STEP: the next round follows at once

    @property
    def leading(self) -> bool:
        return self.me == self.layout.leader

    def round(self, has_work: bool, stopping: bool, changed: bool) -> str:
        """This rank's part in the next round, if one runs now: the Decision action (STEP, IDLE
        or STOP), the same on every attention rank; IDLE as well when no round ran."""
        action = self._lead(has_work, stopping, changed) if self.leading else \
            self._follow(has_work, stopping, changed)
        self.stepping = action == Decision.STEP
        return action

    def _lead(self, has_work: bool, stopping: bool, changed: bool) -> str:
        nudged = self._take_nudges()
        if not (self.stepping or changed or nudged):
            return Decision.IDLE
        for peer in self.followers:
            self.control.send_message(Round(), peer)
        votes = [Vote(has_work, stopping)] + [self._vote_of(peer) for peer in self.followers]
        if any(v.has_work for v in votes):
            action = Decision.STEP
        elif all(v.stopping for v in votes):
            action = Decision.STOP
        else:
            action = Decision.IDLE
        for peer in self.followers:
            self.control.send_message(Decision(action), peer)
        if action != Decision.IDLE:
            for ffn in self.layout.ffn_ranks:
                self.control.send_message(Decision(action), ffn)
        return action

    def _take_nudges(self) -> bool:
        nudged = False
        for peer in self.followers:
            while (got := self.control.poll_message(peer)) is not None:
                self._expect(got[0], Nudge, peer)
                nudged = True
        return nudged

    def _vote_of(self, peer: RankId) -> Vote:
        while True:
            msg, _ = self.control.recv_message(peer, "step vote")
            if not isinstance(msg, Nudge):  # a nudge sent before our round reached it
                return self._expect(msg, Vote, peer)

    def _follow(self, has_work: bool, stopping: bool, changed: bool) -> str:
        leader = self.layout.leader
        if self.stepping:  # the leader starts the next round as soon as its step is done
            msg, _ = self.control.recv_message(leader, "round start")
        else:
            if changed:
                self.control.send_message(Nudge(), leader)
            got = self.control.poll_message(leader)
            if got is None:
                return Decision.IDLE
            msg = got[0]
        self._expect(msg, Round, leader)
        self.control.send_message(Vote(has_work, stopping), leader)
        msg, _ = self.control.recv_message(leader, "step decision")
        return self._expect(msg, Decision, leader).action

    def _expect(self, msg, kind: type, peer: RankId):
        if not isinstance(msg, kind):
            raise RuntimeError(f"{self.layout.name(peer)} sent {msg.TYPE!r}, expected "
                               f"{kind.TYPE!r}")
        return msg


def next_decision(control: ControlChannel, layout: JobLayout) -> str:
    """An FFN rank's wait for the leader's next step or stop (no deadline: a job may idle)."""
    msg, _ = control.recv_message(layout.leader, "step decision", NEVER)
    if not isinstance(msg, Decision) or msg.action == Decision.IDLE:
        raise RuntimeError(f"{layout.name(layout.leader)} sent {msg!r}, expected step or stop")
    return msg.action
