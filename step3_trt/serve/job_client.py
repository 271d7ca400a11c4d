"""The Triton backend's connection to the AFD job's coordinator (ZeroMQ DEALER, JSON messages).

One I/O thread owns the socket: it sends queued requests and cancels, hands each request's
token deltas and result to that request's `Handler`, polls handlers for cancellation (a client
that disconnected or cancelled), and notices a dead job at once (the connection drops) or after
`heartbeat_timeout_s` without a heartbeat (a hung coordinator). Then every in-flight request
fails with that reason, new ones are refused as "restarting", and the thread keeps saying hello
on a fresh socket until a coordinator (the restarted job's) answers; serving resumes from there.

The thread blocks while it waits: on the socket, the connection monitor and a wake-up pipe that
`submit` writes to, for at most CANCEL_POLL_S while requests are in flight (to poll their
cancellation) and IDLE_POLL_S otherwise, so an idle backend costs no CPU.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Protocol

from step3_trt.runtime import messages
from step3_trt.serve.request import GenerationRequest

CANCEL_POLL_S = 0.05
IDLE_POLL_S = 0.5  # nothing in flight: how often the thread checks the heartbeat deadline
RECONNECT_TRY_S = 2.0  # one attempt to reach a restarted coordinator: fresh socket, hello, wait


class JobUnavailable(RuntimeError):
    """The AFD job is not reachable (not started, failed, restarting, or shut down)."""


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


class Connection:
    """A DEALER socket that a coordinator answered, and a monitor of its disconnection."""

    def __init__(self, context, endpoint: str, timeout_s: float):
        import zmq

        self.socket = context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)
        try:
            self.status = handshake(self.socket, timeout_s)
        except BaseException:
            self.socket.close(linger=0)
            raise
        self.monitor = self.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)

    def close(self, linger_ms: int = 0) -> None:
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close(linger=linger_ms)


def request_payload(rid: int, request: GenerationRequest) -> bytes:
    return messages.encode(messages.Submit(rid, request.prompt_ids, request.params,
                                           request.stream, request.bad_words,
                                           request.min_tokens, request.stop_words))


class JobClient:
    def __init__(self, endpoint: str, connect_timeout_s: float, heartbeat_timeout_s: float,
                 on_heartbeat: Callable[[dict], None] | None = None,
                 on_down: Callable[[str], None] | None = None,
                 on_up: Callable[[], None] | None = None):
        import zmq

        self.zmq, self.endpoint = zmq, endpoint
        self.heartbeat_timeout_s, self.on_heartbeat = heartbeat_timeout_s, on_heartbeat
        self.on_down, self.on_up = on_down, on_up
        self.context = zmq.Context()
        try:
            self.conn: Connection | None = Connection(self.context, endpoint, connect_timeout_s)
        except BaseException:
            self.context.term()
            raise
        self.outbox: queue.Queue[bytes] = queue.Queue()
        self.handlers: dict[int, Handler] = {}
        self.cancelling: set[int] = set()
        self.lock = threading.Lock()
        self.failure: str | None = None
        self._next_id = 0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="afd-client", daemon=True)
        self._thread.start()

    @property
    def up(self) -> bool:
        return self.failure is None

    def submit(self, request: GenerationRequest, handler: Handler) -> int:
        with self.lock:  # one lock with _fail: a queued request always has a live handler
            if self.failure is not None:
                raise JobUnavailable(f"the AFD job is restarting after a failure "
                                     f"({self.failure}); retry later")
            rid = self._next_id
            payload = request_payload(rid, request)
            self._next_id += 1
            self.handlers[rid] = handler
            self.outbox.put(payload)
        self._wake()
        return rid

    def close(self, reason: str = "the step3 model is being unloaded") -> None:
        """Stop the thread, cancel what is in flight, fail its handlers, close the socket."""
        self._stop.set()
        self._wake()
        self._thread.join(timeout=5)
        if self.conn is not None:
            while not self.outbox.empty():
                self.conn.socket.send(self.outbox.get())
            for rid in list(self.handlers):
                self.conn.socket.send(json.dumps({"type": "cancel", "id": rid}).encode())
        self._fail(reason)
        if self.conn is not None:
            self.conn.close(linger_ms=100)  # let the cancels go out
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.context.term()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"w")
        except BlockingIOError:  # the pipe is full: a wake-up is pending anyway
            pass

    # ---- the I/O thread ------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                if self.conn is None:
                    self._reconnect()
                else:
                    self._serve(self.conn)
        except Exception as e:  # noqa: BLE001 - never leave requests waiting on a dead thread
            traceback.print_exc(file=sys.stderr)
            self._fail(f"internal error in the AFD client: {type(e).__name__}: {e}")

    def _serve(self, conn: Connection) -> None:
        """Until the connection is lost (then `_lose`) or the client is closed."""
        poller = self.zmq.Poller()
        for item in (conn.socket, conn.monitor, self._wake_r):
            poller.register(item, self.zmq.POLLIN)
        last_beat = last_cancel_poll = time.monotonic()
        while not self._stop.is_set():
            while not self.outbox.empty():
                conn.socket.send(self.outbox.get())
            timeout_s = CANCEL_POLL_S if self.handlers else IDLE_POLL_S
            ready = dict(poller.poll(int(timeout_s * 1000)))
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            if conn.monitor in ready:
                self._lose("the AFD job stopped: its coordinator disconnected")
                return
            if conn.socket in ready and self._receive(conn.socket):
                last_beat = time.monotonic()
            now = time.monotonic()
            if now - last_beat > self.heartbeat_timeout_s:
                self._lose(f"the AFD job sent no heartbeat for {self.heartbeat_timeout_s:g} s")
                return
            if now - last_cancel_poll > CANCEL_POLL_S:
                self._poll_cancelled(conn.socket)
                last_cancel_poll = now

    def _receive(self, socket) -> bool:
        """Handle every message waiting; True if any came from the coordinator's loop."""
        heard = False
        while socket.poll(0):
            msg = json.loads(socket.recv())
            if msg.get("type") == "heartbeat":
                heard = True
                if self.on_heartbeat is not None:
                    _guarded(self.on_heartbeat, msg)
            elif msg.get("type") == "update":
                heard = True
                self._deliver(msg)
        return heard

    def _lose(self, reason: str) -> None:
        """The job is gone: fail what is in flight, drop the socket, start reconnecting."""
        self._fail(reason)
        self.conn.close()
        self.conn = None
        print(f"[step3] {reason}; waiting for the job to restart", file=sys.stderr, flush=True)

    def _reconnect(self) -> None:
        """One attempt at a restarted coordinator; on success serving resumes."""
        try:
            conn = Connection(self.context, self.endpoint, RECONNECT_TRY_S)
        except JobUnavailable:
            return
        self.conn = conn
        self.cancelling.clear()
        with self.lock:
            self.failure = None
        if self.on_up is not None:
            _guarded(self.on_up)
        print("[step3] the AFD job answers again", file=sys.stderr, flush=True)

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

    def _poll_cancelled(self, socket) -> None:
        for rid, handler in list(self.handlers.items()):
            if rid not in self.cancelling and _guarded(handler.is_cancelled):
                self.cancelling.add(rid)
                socket.send(json.dumps({"type": "cancel", "id": rid}).encode())

    def _fail(self, reason: str) -> None:
        with self.lock:
            first = self.failure is None
            if first:
                self.failure = reason
            handlers, self.handlers = self.handlers, {}
            while not self.outbox.empty():  # their handlers are failed here: never send them
                self.outbox.get()
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
