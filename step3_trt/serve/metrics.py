"""Custom Triton metrics (on the server's /metrics endpoint): the AFD job's state and each
attention rank's scheduler, KV-cache and prefix-cache figures (from the coordinator's
heartbeats), and the requests answered by finish reason."""

from __future__ import annotations

GAUGES = {
    "running": ("step3_requests_running", "Requests in the attention rank's running batch"),
    "waiting": ("step3_requests_waiting", "Requests waiting on the attention rank"),
    "kv_blocks_used": ("step3_kv_cache_blocks_used", "KV-cache blocks in use on the rank"),
    "kv_blocks_total": ("step3_kv_cache_blocks_total", "KV-cache blocks of the rank"),
    "kv_blocks_cached": ("step3_prefix_cache_blocks",
                         "KV-cache blocks holding a prefix a request can reuse, on the rank"),
}
# The ranks report these as running totals; the counters advance by what is new.
COUNTERS = {
    "prefix_hit_tokens": ("step3_prefix_cache_hit_tokens_total",
                          "Tokens whose KV came from the rank's prefix cache"),
    "prefix_query_tokens": ("step3_prefix_cache_query_tokens_total",
                            "Tokens looked up in the rank's prefix cache, at each admission"),
    "prefill_tokens": ("step3_prefill_tokens_total",
                       "Tokens computed by the rank other than decoding a newest token"),
}


class JobMetrics:
    def __init__(self, pb_utils):
        gauge = pb_utils.MetricFamily.GAUGE
        self.families = {key: pb_utils.MetricFamily(name=name, description=text, kind=gauge)
                         for key, (name, text) in GAUGES.items()}
        # a MetricFamily must outlive its Metric objects: keep both
        self.job_families = [
            pb_utils.MetricFamily(name="step3_afd_job_up", kind=gauge,
                                  description="1 while the AFD job answers, else 0"),
            pb_utils.MetricFamily(name="step3_requests_in_flight", kind=gauge,
                                  description="Requests the AFD job is serving")]
        self.up, self.in_flight = (f.Metric(labels={}) for f in self.job_families)
        self.per_rank: dict[tuple[str, str], object] = {}
        counter = pb_utils.MetricFamily.COUNTER
        self.counter_families = {key: pb_utils.MetricFamily(name=name, description=text,
                                                            kind=counter)
                                 for key, (name, text) in COUNTERS.items()}
        self.reported: dict[tuple[str, str], int] = {}  # the job's running total, per rank
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
                self._rank_metric(family, key, rank).set(stats.get(key, 0))
            for key, family in self.counter_families.items():
                metric = self._rank_metric(family, key, rank)
                total, seen = stats.get(key, 0), self.reported.get((key, rank), 0)
                new = total - seen if total >= seen else total  # a restarted job counts from 0
                if new:
                    metric.increment(new)
                self.reported[(key, rank)] = total

    def _rank_metric(self, family, key: str, rank: str):
        metric = self.per_rank.get((key, rank))
        if metric is None:
            metric = self.per_rank[(key, rank)] = family.Metric(labels={"rank": rank})
        return metric

    def on_up(self) -> None:
        self.up.set(1)

    def on_down(self, _reason: str) -> None:
        self.up.set(0)
        self.reported.clear()  # the job that comes back starts its totals from 0
