"""Chrome-trace timelines (chrome://tracing, Perfetto): complete events per rank and lane."""

from __future__ import annotations

import contextlib
import time


class Tracer:
    def __init__(self, pid: int, process_name: str, enabled: bool = True):
        self.pid, self.enabled = pid, enabled
        self.events: list[dict] = []
        if enabled:
            self.events.append({"name": "process_name", "ph": "M", "pid": pid,
                                "args": {"name": process_name}})

    @staticmethod
    def now_us() -> float:
        """Wall clock: every rank of a job on one host shares it, so timelines line up."""
        return time.time() * 1e6

    @contextlib.contextmanager
    def span(self, name: str, lane: int = 0, **args):
        if not self.enabled:
            yield
            return
        start = self.now_us()
        try:
            yield
        finally:
            self.events.append({"name": name, "ph": "X", "pid": self.pid, "tid": lane,
                                "ts": start, "dur": self.now_us() - start, "args": args})

    def counter(self, name: str, **values: float) -> None:
        """A counter sample (drawn as a graph per rank): the values at this moment."""
        if self.enabled:
            self.events.append({"name": name, "ph": "C", "pid": self.pid, "ts": self.now_us(),
                                "args": values})
