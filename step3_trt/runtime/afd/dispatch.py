"""The coordinator's side of the attention ranks: least-loaded dispatch, cancellation routed to
the owning rank, step reports, and a watchdog on busy ranks. Shared by the offline coordinator
(a fixed request list) and the serving coordinator (requests from Triton)."""

from __future__ import annotations

import time

from step3_trt.runtime.afd.layout import JobLayout
from step3_trt.runtime.afd.messages import cancel_message
from step3_trt.runtime.afd.transport import AfdError, Transport


def wait_ready(layout: JobLayout, transport: Transport, startup_timeout_s: float) -> None:
    """Every worker reports once its engines are loaded; the clock starts after that."""
    waiting = set(layout.attention_ranks + layout.ffn_ranks)
    while waiting:
        msg, source = transport.recv_json(timeout_s=startup_timeout_s)
        if msg["type"] != "ready":
            raise AfdError(f"{layout.name(source)} sent {msg['type']!r} before 'ready'")
        waiting.discard(source)


class Dispatcher:
    def __init__(self, layout: JobLayout, transport: Transport, timeout_s: float):
        self.layout, self.transport, self.timeout_s = layout, transport, timeout_s
        self.load = {a: 0 for a in layout.attention_ranks}
        self.last_heard = {a: time.monotonic() for a in self.load}
        self.owner: dict[int, int] = {}  # in-flight job request id -> attention rank
        self.served_by: dict[int, int] = {}
        self.stats: dict[int, dict] = {}  # latest scheduler/KV occupancy per attention rank

    def submit(self, msg: dict) -> int:
        """Send a `request` message to the least-loaded attention rank; returns that rank."""
        target = min(self.load, key=lambda a: (self.load[a], a))
        if self.load[target] == 0:
            self.last_heard[target] = time.monotonic()
        self.load[target] += 1
        self.owner[msg["id"]] = target
        self.served_by[msg["id"]] = target
        self.transport.send_json(msg, target)
        return target

    def cancel(self, request_id: int) -> bool:
        """Ask the owning rank to drop a request and free its KV blocks; False if it is not in
        flight (already finished, or unknown). The rank reports it finished as `cancelled`."""
        rank = self.owner.get(request_id)
        if rank is None:
            return False
        self.transport.send_json(cancel_message(request_id), rank)
        return True

    def poll(self) -> tuple[dict, int] | None:
        """The next step report from any attention rank (bookkeeping done), or None."""
        got = self.transport.poll_json()
        if got is None:
            return None
        msg, source = got
        if msg.get("type") != "step":
            raise AfdError(f"{self.layout.name(source)} sent {msg.get('type')!r}, expected 'step'")
        self.last_heard[source] = time.monotonic()
        if "stats" in msg:
            self.stats[source] = msg["stats"]
        for result in msg.get("finished", []):
            if self.owner.pop(result["id"], None) is not None:
                self.load[source] -= 1
        return msg, source

    def check_progress(self) -> None:
        """Twice the per-message timeout: a worker waiting on a dead or hung peer reports that
        peer itself first; this catches a hung attention rank."""
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
            self.transport.send_json({"type": "shutdown"}, rank)
