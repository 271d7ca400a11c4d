"""An AFD attention rank: requests from the coordinator, its own engine core (scheduler, paged
KV cache, sampling) whose FFN is the FFN ranks over the data plane, and lockstep steps with the
other attention ranks (step_sync.py). Each step it reports to the coordinator: results, token
deltas of streaming requests, and its occupancy with the prefix cache's counts; so does a round
that took control messages while idle."""

from __future__ import annotations

from step3_trt.runtime.core import EngineCore
from step3_trt.runtime.messages import Cancel, Decision, RankStats, Result, StepReport, Submit
from step3_trt.runtime.messages import Shutdown
from step3_trt.runtime.ranks import COORDINATOR, JobLayout, RankId
from step3_trt.runtime.request import Request
from step3_trt.runtime.scheduler import Scheduler
from step3_trt.runtime.afd.step_sync import StepSync
from step3_trt.runtime.transport.base import Backoff, ControlChannel


def result_of(req: Request) -> Result:
    if req.error is not None:
        return Result(req.request_id, error=req.error)
    return Result(req.request_id, list(req.output), req.finish_reason, req.preemptions,
                  cached_tokens=req.cached_tokens)


def rank_stats(s: Scheduler) -> RankStats:
    return RankStats(len(s.running), len(s.waiting), s.blocks.num_used, s.blocks.num_blocks,
                     s.blocks.num_cached, s.prefix_query_tokens, s.prefix_hit_tokens,
                     s.prefill_tokens)


class AttentionWorker:
    def __init__(self, core: EngineCore, control: ControlChannel, layout: JobLayout, me: RankId):
        self.core, self.control, self.layout = core, control, layout
        self.sync = StepSync(control, layout, me)

    def run(self) -> None:
        """Serve until every attention rank was told to shut down and has no work left."""
        stopping, idle = False, Backoff()
        while True:
            finished, changed, stop = self._drain()
            stopping |= stop
            action = self.sync.round(self.core.has_work(), stopping, changed or stop)
            if action == Decision.STOP:
                return
            if action == Decision.STEP:
                idle = Backoff()
                had_work = self.core.has_work()
                finished += [result_of(r) for r in self.core.step()]
                if had_work or changed:
                    self._report(finished)
            else:
                if changed:
                    self._report(finished)
                idle.sleep()

    def _drain(self) -> tuple[list[Result], bool, bool]:
        """Every control message waiting from the coordinator: (results they produced,
        whether anything changed, whether shutdown was asked)."""
        finished, changed, stop = [], False, False
        while (got := self.control.poll_message(COORDINATOR)) is not None:
            msg, _ = got
            if isinstance(msg, Shutdown):
                stop = True
            elif isinstance(msg, Cancel):
                req = self.core.cancel(msg.id)
                if req is not None:
                    finished.append(result_of(req))
                changed = True
            elif isinstance(msg, Submit):
                finished += self._admit(msg)
                changed = True
            else:
                raise RuntimeError(f"the coordinator sent {msg.TYPE!r} to an attention rank")
        return finished, changed, stop

    def _admit(self, msg: Submit) -> list[Result]:
        req = Request(msg.id, list(msg.prompt_ids), msg.params, bad_words=msg.bad_words,
                      min_tokens=msg.min_tokens, stream=msg.stream)
        try:
            self.core.add(req)
        except ValueError as e:
            return [Result(msg.id, error=str(e))]
        return []

    def _report(self, finished: list[Result]) -> None:
        done = {r.id for r in finished}
        tokens = [(rid, new) for rid, req in self.core.requests.items()
                  if req.stream and rid not in done and (new := req.take_new_tokens())]
        self.control.send_message(StepReport(tokens, finished, rank_stats(self.core.scheduler)),
                                  COORDINATOR)
