"""Custom Triton metrics (on the server's /metrics endpoint): the AFD job's state and each
attention rank's scheduler and KV-cache occupancy (from the coordinator's heartbeats), and the
requests answered by finish reason.

Every generating model (step3, tensorrt_llm, tensorrt_llm_bls) is a client of the job with its
own connection, so `step3_afd_job_up` is per model (label `model`); the other series are
the server's: Triton merges families of one name, and each model sets the same heartbeat
values and adds its answered requests to the same counters."""

from __future__ import annotations

GAUGES = {
    "running": ("step3_requests_running", "Requests in the attention rank's running batch"),
    "waiting": ("step3_requests_waiting", "Requests waiting on the attention rank"),
    "kv_blocks_used": ("step3_kv_cache_blocks_used", "KV-cache blocks in use on the rank"),
    "kv_blocks_total": ("step3_kv_cache_blocks_total", "KV-cache blocks of the rank"),
}


class JobMetrics:
    def __init__(self, pb_utils, model: str):
        gauge = pb_utils.MetricFamily.GAUGE
        self.families = {key: pb_utils.MetricFamily(name=name, description=text, kind=gauge)
                         for key, (name, text) in GAUGES.items()}
        # a MetricFamily must outlive its Metric objects: keep both
        self.job_families = [
            pb_utils.MetricFamily(name="step3_afd_job_up", kind=gauge,
                                  description="1 while the AFD job answers the model, else 0"),
            pb_utils.MetricFamily(name="step3_requests_in_flight", kind=gauge,
                                  description="Requests the AFD job is serving")]
        self.up = self.job_families[0].Metric(labels={"model": model})
        self.in_flight = self.job_families[1].Metric(labels={})
        self.per_rank: dict[tuple[str, str], object] = {}
        self.finished_family = pb_utils.MetricFamily(
            name="step3_requests_finished_total", kind=pb_utils.MetricFamily.COUNTER,
            description="Requests answered, by finish reason (length, stop, cancelled, error)")
        self.finished: dict[str, object] = {}

    def on_request_done(self, reason: str) -> None:
        metric = self.finished.get(reason)
        if metric is None:
            metric = self.finished[reason] = self.finished_family.Metric(labels={"reason": reason})
        metric.increment(1)

    def on_heartbeat(self, msg: dict) -> None:
        self.up.set(1)
        self.in_flight.set(msg.get("in_flight", 0))
        for rank, stats in msg.get("stats", {}).items():
            for key, family in self.families.items():
                metric = self.per_rank.get((key, rank))
                if metric is None:
                    metric = self.per_rank[(key, rank)] = family.Metric(labels={"rank": rank})
                metric.set(stats.get(key, 0))

    def on_up(self) -> None:
        self.up.set(1)

    def on_down(self, _reason: str) -> None:
        self.up.set(0)
