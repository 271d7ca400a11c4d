"""The Triton backend's connection to the AFD job's coordinator (ZeroMQ DEALER, JSON messages).

One I/O thread owns the socket: it sends queued requests and cancels, hands each request's
token deltas and result to that request's `Handler`, polls handlers for cancellation (a client
that disconnected or cancelled), and notices a dead job at once (the connection drops) or after
`heartbeat_timeout_s` without a heartbeat (a hung coordinator). Once the job is gone every
in-flight request fails with that reason and new ones are refused.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Protocol

from step3_trt.runtime.afd.messages import params_to_dict
from step3_trt.serve.request import GenerationRequest

CANCEL_POLL_S = 0.05


class JobUnavailable(RuntimeError):
    """The AFD job is not reachable (not started, failed, or shut down)."""


class Handler(Protocol):
    def on_tokens(self, tokens: list[int]) -> None: ...
    def on_finished(self, result: dict) -> None: ...  # output_ids + finish_reason, or error
    def is_cancelled(self) -> bool: ...


def handshake(socket, timeout_s: float) -> dict:
    """Say hello on a connected DEALER socket and wait for the coordinator's status."""
    socket.send(json.dumps({"type": "hello"}).encode())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if socket.poll(100):
            msg = json.loads(socket.recv())
            if msg.get("type") == "status":
                return msg
    raise JobUnavailable(f"the AFD coordinator did not answer within {timeout_s:g} s")


class JobClient:
    def __init__(self, endpoint: str, connect_timeout_s: float, heartbeat_timeout_s: float,
                 on_heartbeat: Callable[[dict], None] | None = None,
                 on_down: Callable[[str], None] | None = None):
        import zmq

        self.zmq, self.endpoint = zmq, endpoint
        self.heartbeat_timeout_s, self.on_heartbeat = heartbeat_timeout_s, on_heartbeat
        self.on_down = on_down
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        self.status = handshake(self.socket, connect_timeout_s)
        self.monitor = self.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.outbox: queue.Queue[bytes] = queue.Queue()
        self.handlers: dict[int, Handler] = {}
        self.cancelling: set[int] = set()
        self.lock = threading.Lock()
        self.failure: str | None = None
        self._next_id = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="afd-client", daemon=True)
        self._thread.start()

    @property
    def up(self) -> bool:
        return self.failure is None

    def submit(self, request: GenerationRequest, handler: Handler) -> int:
        with self.lock:
            if self.failure is not None:
                raise JobUnavailable(self.failure)
            rid = self._next_id
            self._next_id += 1
            self.handlers[rid] = handler
        try:
            payload = json.dumps({"type": "request", "id": rid, "prompt_ids": request.prompt_ids,
                                  "params": params_to_dict(request.params),
                                  "stream": request.stream, "bad_words": request.bad_words,
                                  "min_tokens": request.min_tokens}).encode()
        except (TypeError, ValueError):
            with self.lock:
                self.handlers.pop(rid, None)
            raise
        self.outbox.put(payload)
        return rid

    def close(self, reason: str = "the step3 model is being unloaded") -> None:
        """Stop the thread, cancel what is in flight, fail its handlers, close the socket."""
        self._stop.set()
        self._thread.join(timeout=5)
        while not self.outbox.empty():
            self.socket.send(self.outbox.get())
        for rid in list(self.handlers):
            self.socket.send(json.dumps({"type": "cancel", "id": rid}).encode())
        self._fail(reason)
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close(linger=100)  # let the cancels go out
        self.context.term()

    # ---- the I/O thread ------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._serve()
        except Exception as e:  # noqa: BLE001 - never leave requests waiting on a dead thread
            traceback.print_exc(file=sys.stderr)
            self._fail(f"internal error in the AFD client: {type(e).__name__}: {e}")

    def _serve(self) -> None:
        last_beat = last_cancel_poll = time.monotonic()
        while not self._stop.is_set() and self.failure is None:
            while not self.outbox.empty():
                self.socket.send(self.outbox.get())
            if self.monitor.poll(0):
                self.monitor.recv_multipart()
                self._fail("the AFD job stopped (its coordinator disconnected)")
                break
            if self.socket.poll(5):
                while self.socket.poll(0):
                    msg = json.loads(self.socket.recv())
                    if msg.get("type") == "heartbeat":
                        last_beat = time.monotonic()
                        if self.on_heartbeat is not None:
                            _guarded(self.on_heartbeat, msg)
                    elif msg.get("type") == "update":
                        last_beat = time.monotonic()
                        self._deliver(msg)
            now = time.monotonic()
            if now - last_beat > self.heartbeat_timeout_s:
                self._fail(f"the AFD job sent no heartbeat for {self.heartbeat_timeout_s:g} s")
            if now - last_cancel_poll > CANCEL_POLL_S:
                self._poll_cancelled()
                last_cancel_poll = now

    def _deliver(self, msg: dict) -> None:
        """Token deltas, then results; a request that finished in this update gets its last
        tokens with its result (one final response rather than a delta and an empty final)."""
        finishing = {r["id"] for r in msg["finished"]}
        for rid, tokens in msg["tokens"]:
            if rid not in finishing and (handler := self.handlers.get(rid)) is not None:
                _guarded(handler.on_tokens, tokens)
        for result in msg["finished"]:
            with self.lock:
                handler = self.handlers.pop(result["id"], None)
            self.cancelling.discard(result["id"])
            if handler is not None:
                _guarded(handler.on_finished, result)

    def _poll_cancelled(self) -> None:
        for rid, handler in list(self.handlers.items()):
            if rid not in self.cancelling and _guarded(handler.is_cancelled):
                self.cancelling.add(rid)
                self.socket.send(json.dumps({"type": "cancel", "id": rid}).encode())

    def _fail(self, reason: str) -> None:
        with self.lock:
            first = self.failure is None
            if first:
                self.failure = reason
            handlers, self.handlers = self.handlers, {}
        if first and self.on_down is not None:
            _guarded(self.on_down, reason)
        for rid, handler in handlers.items():
            _guarded(handler.on_finished, {"id": rid, "error": reason})


def _guarded(fn, *args):
    """A handler's failure (say, a response to a client that went away) must not stop the I/O
    thread that serves every other request: report it on stderr (the server log) instead."""
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - logged, and only this request is affected
        traceback.print_exc(file=sys.stderr)
        return False
