"""The OpenAI server's metrics, in Prometheus' text format on its own `/metrics` (one registry
per server, no global state). The AFD job's own metrics (KV-cache blocks, running and waiting
requests per attention rank) stay on tritonserver's metrics port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

ENDPOINTS = ("chat", "completions")


class ServerMetrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.finished = Counter(
            "step3_openai_requests_finished", "OpenAI requests answered, by endpoint and finish "
            "reason (stop, length, cancelled, error; rejected: refused before reaching the job)",
            ["endpoint", "reason"], registry=self.registry)
        self.in_flight = Gauge("step3_openai_requests_in_flight",
                               "OpenAI requests the AFD job is serving", registry=self.registry)
        self.prompt_tokens = Counter("step3_openai_prompt_tokens",
                                     "Prompt tokens of the requests sent to the AFD job",
                                     registry=self.registry)
        self.completion_tokens = Counter("step3_openai_completion_tokens",
                                         "Tokens generated for OpenAI requests",
                                         registry=self.registry)
        self.job_up = Gauge("step3_openai_job_up", "1 while the AFD job answers this server",
                            registry=self.registry)

    def rejected(self, endpoint: str) -> None:
        self.finished.labels(endpoint, "rejected").inc()

    def done(self, endpoint: str, result: dict) -> None:
        """From the job client's I/O thread (prometheus_client is thread-safe)."""
        self.in_flight.dec()
        self.completion_tokens.inc(len(result.get("output_ids", ())))
        reason = "error" if "error" in result else result.get("finish_reason") or "error"
        self.finished.labels(endpoint, reason).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
