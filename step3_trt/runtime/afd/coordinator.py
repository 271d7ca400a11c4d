"""The coordinator (MPI rank 0): the job's entry point. Clients (the Triton backend, `step3-trt
run`) connect to its ZeroMQ endpoint; their requests go to an attention rank (the one thought to
hold the longest cached prefix of the prompt unless it is overloaded, else the least-loaded),
token deltas, results and errors go back to the client that asked, cancels reach the owning
rank (which frees the request's KV blocks), and every client that said hello gets a heartbeat
with each attention rank's occupancy, so it notices a dead job without waiting on a request.

Every client message is decoded and validated (runtime/messages.py) before anything acts on it:
a malformed one is answered with an error and changes nothing else.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace

from step3_trt.runtime import messages
from step3_trt.runtime.afd.dispatch import Dispatcher
from step3_trt.runtime.afd.frontend import Frontend
from step3_trt.runtime.afd.prefix_index import PrefixRouting
from step3_trt.runtime.messages import (Cancel, ErrorReply, Heartbeat, Hello, MessageError, Result,
                                        Shutdown, Status, StepReport, Submit, Update)
from step3_trt.runtime.ranks import JobLayout, RankId
from step3_trt.runtime.transport.base import ControlChannel

HEARTBEAT_S = 0.5
DRAIN_S = 30.0  # at shutdown: how long to wait for cancelled requests to be reported
FAST_POLL_MS = 1  # with requests in flight: how long to wait on clients between rank polls
CLIENT_MESSAGES = (Hello, Submit, Cancel, Shutdown)


@dataclass(frozen=True)
class Route:
    client: bytes
    client_id: int


class Coordinator:
    def __init__(self, layout: JobLayout, control: ControlChannel, timeout_s: float,
                 frontend: Frontend, routing: PrefixRouting | None = None):
        """`routing`: prefix-aware dispatch when the ranks cache prefixes (dispatch.py)."""
        self.layout, self.frontend = layout, frontend
        self.dispatch = Dispatcher(layout, control, timeout_s, routing)
        self.routes: dict[int, Route] = {}  # job request id -> who asked
        self.job_ids: dict[Route, int] = {}
        self.served_by: dict[int, RankId] = {}
        self.clients: set[bytes] = set()
        self._next_id = 0

    def run(self) -> None:
        """Serve until a client sends shutdown; then cancel what is in flight and stop."""
        stopping, last_beat = False, 0.0
        while not stopping:
            busy = False
            while (got := self.dispatch.poll()) is not None:
                self._forward(*got)
                busy = True
            wait_ms = 0 if busy else self._wait_ms(last_beat)
            for client, payload in self.frontend.poll(timeout_ms=wait_ms):
                stopping |= self._handle(client, payload)
            if time.monotonic() - last_beat > HEARTBEAT_S:
                self._heartbeat()
                last_beat = time.monotonic()
            self.dispatch.check_progress()
        self._drain()
        self.dispatch.shutdown()

    def _wait_ms(self, last_beat: float) -> int:
        """How long to block on the clients' socket when no step report is waiting: briefly
        while requests are in flight (their reports come over MPI, which cannot wake us), else
        until the next heartbeat is due, since a rank reports only on what we send it: an idle
        coordinator sleeps, and a new request still wakes it at once."""
        if self.dispatch.in_flight:
            return FAST_POLL_MS
        return max(1, int(1000 * (last_beat + HEARTBEAT_S - time.monotonic())) + 1)

    def _handle(self, client: bytes, payload: bytes) -> bool:
        """One client message; True if it asks the job to shut down."""
        try:
            msg = messages.decode(payload, expect=CLIENT_MESSAGES)
        except MessageError as e:
            self._refuse(client, payload, str(e))
            return False
        if isinstance(msg, Hello):
            self.clients.add(client)
            self.frontend.send(client, Status(True, self.layout.attention, self.layout.ffn))
        elif isinstance(msg, Submit):
            self._submit(client, msg)
        elif isinstance(msg, Cancel):
            job_id = self.job_ids.get(Route(client, msg.id))
            if job_id is not None:
                self.dispatch.cancel(job_id)
        return isinstance(msg, Shutdown)

    def _refuse(self, client: bytes, payload: bytes, error: str) -> None:
        """A message that did not decode: a request whose id can be read fails with the error
        (the client is waiting on it); anything else gets an error reply."""
        try:
            raw = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raw = None
        rid = raw.get("id") if isinstance(raw, dict) and raw.get("type") == "request" else None
        if isinstance(rid, int) and not isinstance(rid, bool) and \
                Route(client, rid) not in self.job_ids:
            self._finish(Route(client, rid), Result(rid, error=f"bad request message: {error}"))
        else:
            self.frontend.send(client, ErrorReply(error, rid if isinstance(rid, int) else None))

    def _submit(self, client: bytes, msg: Submit) -> None:
        route = Route(client, msg.id)
        if route in self.job_ids:
            self._finish(route, Result(msg.id, error=f"request id {msg.id} is already in flight"))
            return
        job_id, self._next_id = self._next_id, self._next_id + 1
        self.routes[job_id] = route
        self.job_ids[route] = job_id
        self.served_by[job_id] = self.dispatch.submit(replace(msg, id=job_id))

    def _finish(self, route: Route, result: Result) -> None:
        self.frontend.send(route.client, Update([], [replace(result, id=route.client_id)]))

    def _forward(self, report: StepReport, source: RankId) -> None:
        """One attention rank's step report, split per client, ids mapped back."""
        updates: dict[bytes, Update] = {}

        def update(route: Route) -> Update:
            return updates.setdefault(route.client, Update([], []))

        for job_id, tokens in report.tokens:
            if (route := self.routes.get(job_id)) is not None:
                update(route).tokens.append((route.client_id, tokens))
        for result in report.finished:
            route = self.routes.pop(result.id, None)
            if route is not None:
                del self.job_ids[route]
                served_by = self.layout.name(self.served_by.pop(result.id, source))
                update(route).finished.append(replace(result, id=route.client_id,
                                                      served_by=served_by))
        for client, msg in updates.items():
            self.frontend.send(client, msg)

    def _heartbeat(self) -> None:
        stats = {self.layout.name(rank): s for rank, s in
                 sorted(self.dispatch.stats.items(), key=lambda kv: kv[0].index)}
        for client in self.clients:
            self.frontend.send(client, Heartbeat(stats, self.dispatch.in_flight))

    def _drain(self) -> None:
        """Cancel every request in flight and wait (bounded) until the ranks report them."""
        for job_id in list(self.routes):
            self.dispatch.cancel(job_id)
        deadline = time.monotonic() + DRAIN_S
        while self.dispatch.in_flight and time.monotonic() < deadline:
            if (got := self.dispatch.poll()) is not None:
                self._forward(*got)
            else:
                time.sleep(1e-3)
