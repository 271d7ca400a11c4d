"""The coordinator in serving mode: requests arrive over time from Triton backends (ZeroMQ),
go to the least-loaded attention rank, and their token deltas, finish reasons and errors go
back to the client that sent them. Clients may cancel; a cancel reaches the owning attention
rank, which frees the request's KV blocks. Every client that said hello gets a heartbeat with
each attention rank's occupancy, so it notices a dead job without waiting on a request.

Client -> coordinator: {"type": "hello"}, {"type": "request", "id", "prompt_ids", "params",
"stream", "bad_words", "min_tokens"}, {"type": "cancel", "id"}, {"type": "shutdown"}.
Coordinator -> client: {"type": "status", "ready", ...}, {"type": "update", "tokens": [[id,
[tokens]]], "finished": [{"id", "output_ids", "finish_reason"} | {"id", "error"}]},
{"type": "heartbeat", "stats"}, {"type": "error", "id", "error"}.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from step3_trt.runtime.afd.dispatch import Dispatcher
from step3_trt.runtime.afd.frontend import Frontend
from step3_trt.runtime.afd.layout import JobLayout
from step3_trt.runtime.afd.messages import params_from_dict, request_message
from step3_trt.runtime.afd.transport import Transport

HEARTBEAT_S = 0.5
DRAIN_S = 30.0  # at shutdown: how long to wait for cancelled requests to be reported
FAST_POLL_MS = 1  # with requests in flight: how long to wait on clients between rank polls


@dataclass(frozen=True)
class Route:
    client: bytes
    client_id: int


class ServeCoordinator:
    def __init__(self, layout: JobLayout, transport: Transport, timeout_s: float,
                 frontend: Frontend):
        self.layout, self.frontend = layout, frontend
        self.dispatch = Dispatcher(layout, transport, timeout_s)
        self.routes: dict[int, Route] = {}  # job request id -> who asked
        self.job_ids: dict[Route, int] = {}
        self.clients: set[bytes] = set()
        self._next_id = 0

    def run(self) -> None:
        """Serve until a client sends shutdown; then cancel what is in flight and stop."""
        stopping, last_beat = False, 0.0
        while not stopping:
            busy = False
            while (got := self.dispatch.poll()) is not None:
                self._forward(got[0])
                busy = True
            wait_ms = 0 if busy else self._wait_ms(last_beat)
            for client, msg in self.frontend.poll(timeout_ms=wait_ms):
                stopping |= self._handle(client, msg)
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

    def _handle(self, client: bytes, msg: dict) -> bool:
        kind = msg.get("type")
        if kind == "hello":
            self.clients.add(client)
            self.frontend.send(client, {"type": "status", "ready": True,
                                        "attention_ranks": self.layout.attention,
                                        "ffn_ranks": self.layout.ffn})
        elif kind == "request":
            self._submit(client, msg)
        elif kind == "cancel":
            job_id = self.job_ids.get(Route(client, msg.get("id")))
            if job_id is not None:
                self.dispatch.cancel(job_id)
        elif kind == "shutdown":
            return True
        else:
            self.frontend.send(client, {"type": "error", "id": msg.get("id"),
                                        "error": f"unknown message type {kind!r}"})
        return False

    def _submit(self, client: bytes, msg: dict) -> None:
        route = Route(client, msg.get("id"))
        try:
            if not isinstance(route.client_id, int) or route in self.job_ids:
                raise ValueError(f"request id {route.client_id!r} is not a new integer")
            params = params_from_dict(msg["params"])
            job_msg = request_message(self._next_id, list(msg["prompt_ids"]), params,
                                      stream=bool(msg.get("stream")),
                                      bad_words=msg.get("bad_words") or [],
                                      min_tokens=int(msg.get("min_tokens") or 0))
        except (KeyError, TypeError, ValueError) as e:
            self._finish(route, {"error": f"bad request message: {e}"})
            return
        self.routes[self._next_id] = route
        self.job_ids[route] = self._next_id
        self._next_id += 1
        self.dispatch.submit(job_msg)

    def _finish(self, route: Route, result: dict) -> None:
        self.frontend.send(route.client, {"type": "update", "tokens": [],
                                          "finished": [{**result, "id": route.client_id}]})

    def _forward(self, report: dict) -> None:
        """One attention rank's step report, split per client, ids mapped back."""
        updates: dict[bytes, dict] = {}

        def update(route: Route) -> dict:
            return updates.setdefault(route.client, {"type": "update", "tokens": [],
                                                     "finished": []})

        for job_id, tokens in report.get("tokens", []):
            if (route := self.routes.get(job_id)) is not None:
                update(route)["tokens"].append([route.client_id, tokens])
        for result in report.get("finished", []):
            route = self.routes.pop(result["id"], None)
            if route is not None:
                del self.job_ids[route]
                update(route)["finished"].append({**result, "id": route.client_id})
        for client, msg in updates.items():
            self.frontend.send(client, msg)

    def _heartbeat(self) -> None:
        stats = {self.layout.name(rank): s for rank, s in sorted(self.dispatch.stats.items())}
        for client in self.clients:
            self.frontend.send(client, {"type": "heartbeat", "stats": stats,
                                        "in_flight": self.dispatch.in_flight})

    def _drain(self) -> None:
        """Cancel every request in flight and wait (bounded) until the ranks report them."""
        for job_id in list(self.routes):
            self.dispatch.cancel(job_id)
        deadline = time.monotonic() + DRAIN_S
        while self.dispatch.in_flight and time.monotonic() < deadline:
            if (got := self.dispatch.poll()) is not None:
                self._forward(got[0])
            else:
                time.sleep(1e-3)
