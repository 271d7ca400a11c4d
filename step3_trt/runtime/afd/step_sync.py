"""Lockstep steps across the workers of an AFD job.

Every FFN rank walks one schedule per step: for each layer, each micro-batch, each attention
rank in order, one message in and one partial out (runtime/afd/ffn_worker.py). So the attention
ranks run their steps together: each round, every attention rank tells the leader (attention
rank 0) whether it has work and whether the coordinator asked it to stop; the leader decides
for all (step if anyone has work, stop once everyone is stopping and idle, else idle) and tells
every attention rank, and the FFN ranks when they must act (step or stop). An attention rank
without work of its own runs the step with empty micro-batches.
"""

from __future__ import annotations

from step3_trt.runtime.messages import Decision, Vote
from step3_trt.runtime.ranks import JobLayout, RankId
from step3_trt.runtime.transport.base import NEVER, ControlChannel


class StepSync:
    def __init__(self, control: ControlChannel, layout: JobLayout, me: RankId):
        self.control, self.layout, self.me = control, layout, me
        self.followers = [a for a in layout.attention_ranks if a != layout.leader]

    @property
    def leading(self) -> bool:
        return self.me == self.layout.leader

    def round(self, has_work: bool, stopping: bool) -> str:
        """This round's Decision action (STEP, IDLE or STOP), the same on every attention rank."""
        if not self.leading:
            self.control.send_message(Vote(has_work, stopping), self.layout.leader)
            msg, _ = self.control.recv_message(self.layout.leader, "step decision")
            return self._decision(msg)
        votes = [Vote(has_work, stopping)]
        for peer in self.followers:
            msg, _ = self.control.recv_message(peer, "step vote")
            if not isinstance(msg, Vote):
                raise RuntimeError(f"{self.layout.name(peer)} sent {msg.TYPE!r}, expected a vote")
            votes.append(msg)
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

    def _decision(self, msg) -> str:
        if not isinstance(msg, Decision):
            raise RuntimeError(f"{self.layout.name(self.layout.leader)} sent {msg.TYPE!r}, "
                               f"expected a step decision")
        return msg.action


def next_decision(control: ControlChannel, layout: JobLayout) -> str:
    """An FFN rank's wait for the leader's next step or stop (no deadline: a job may idle)."""
    msg, _ = control.recv_message(layout.leader, "step decision", NEVER)
    if not isinstance(msg, Decision) or msg.action == Decision.IDLE:
        raise RuntimeError(f"{layout.name(layout.leader)} sent {msg!r}, expected step or stop")
    return msg.action
