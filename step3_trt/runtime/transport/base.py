"""What transports implement: a control channel for typed messages and a data plane for
the per-layer activations, each wait bounded by a deadline that names the peer.

Data plane: a message is a list of tensors, each [rows_i, *tail_i]; the receiver knows the
dtypes and tails (`Slot`s: hidden width, top-k) and learns the row counts from the message, so
one (peer, layer, micro-batch) exchange is `post_recv` + `send` + `wait`. Between two peers,
messages arrive in the order they were sent; the receiver walks a schedule both sides know (the
step's layers and micro-batches, the attention ranks in order), so no receive is ever from "any
source" (NCCL has none). Each message carries its (layer, micro-batch) and a receiver that gets
another one than it expected fails loudly.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from step3_trt.runtime.ranks import JobLayout, RankId

FAST_PAUSE_S = 2e-3  # longest sleep between probes while a wait is young
IDLE_PAUSE_S = 5e-3  # longest sleep once a wait has lasted IDLE_PAUSE_S / IDLE_FRACTION
IDLE_FRACTION = 0.02  # a sleep never exceeds this fraction of the time waited so far


class AfdError(RuntimeError):
    """A peer rank did not answer in time, or sent something malformed."""


class Backoff:
    """The sleeps between probes of one wait (Open MPI's blocking calls spin a core). They
    start at 10 us and double up to 2 ms, so a peer with work in flight is heard within
    milliseconds; as the wait goes on they may grow to 2% of the time waited, at most 5 ms, so
    an idle rank wakes about 200 times a second (about 1% of a core) and the message that ends
    an idle spell is noticed at most 5 ms late. Each wait starts fast again."""

    def __init__(self):
        self.start = time.monotonic()
        self.pause = 1e-5

    def sleep(self) -> None:
        time.sleep(self.pause)
        waited = time.monotonic() - self.start
        limit = max(FAST_PAUSE_S, min(IDLE_PAUSE_S, IDLE_FRACTION * waited))
        self.pause = min(self.pause * 2, limit)


@dataclass(frozen=True)
class Deadline:
    """When a wait gives up; `what` and the peer go into the error."""
    at: float  # time.monotonic()
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        return cls(time.monotonic() + seconds, seconds)

    @property
    def passed(self) -> bool:
        return time.monotonic() > self.at


NEVER = Deadline(float("inf"), float("inf"))


@dataclass(frozen=True)
class Slot:
    """What a receiver expects for one tensor of a data message: [rows, *tail] of `dtype`."""
    dtype: torch.dtype
    tail: tuple[int, ...]


def poll_until(test, deadline: Deadline) -> bool:
    """Call `test` (non-blocking) with backoff sleeps until it is true (True) or the deadline
    passes (False)."""
    backoff = Backoff()
    while not test():
        if deadline.passed:
            return False
        backoff.sleep()
    return True


class Handle(abc.ABC):
    """A send or receive in flight."""

    @abc.abstractmethod
    def wait(self, deadline: Deadline) -> bool:
        """Block until complete (True) or the deadline passes (False)."""

    @abc.abstractmethod
    def result(self) -> list[torch.Tensor]:
        """The received tensors (an empty list for a send); only once waited for."""


class _Peered:
    """Naming of this rank and its peers in errors, and what happens when a wait stalls.

    A wait that lasts the job's timeout is reported through `on_stall(peer, what, seconds)`
    (set by the job: a `Stalled` message to the coordinator, which finds the rank that everyone
    waits on and fails the job naming it) and goes on for twice as long again before this rank
    fails by itself. In lockstep a hung rank blocks every other, so the first wait to expire is
    often on a rank that is itself only waiting; the coordinator's view names the right one."""

    STALL_FACTOR = 2.0  # after a reported stall, how many more timeouts a wait goes on

    def __init__(self, layout: JobLayout, me: RankId, timeout_s: float):
        self.layout, self.me, self.timeout_s = layout, me, timeout_s
        self.on_stall = None  # Callable[[RankId, str, float], None] | None

    def _wait(self, test_wait, what: str, peer: RankId | None, deadline: Deadline | None):
        """Run `test_wait(deadline) -> bool` under the given deadline, or by default for the
        job's timeout plus STALL_FACTOR more, reporting the stall when the job's timeout passes
        (from a timer thread: a gloo wait blocks, and cannot be resumed once it times out)."""
        if deadline is not None:
            if not test_wait(deadline):
                raise self.timeout(what, peer, deadline)
            return
        total = (1 + self.STALL_FACTOR) * self.timeout_s
        timer = None
        if self.on_stall is not None and peer is not None:
            timer = threading.Timer(self.timeout_s, self.on_stall, (peer, what, self.timeout_s))
            timer.daemon = True
            timer.start()
        try:
            done = test_wait(Deadline.after(total))
        finally:
            if timer is not None:
                timer.cancel()
        if not done:
            raise self.timeout(what, peer, Deadline(0.0, total))

    def timeout(self, what: str, peer: RankId | None, deadline: Deadline) -> AfdError:
        source = self.layout.name(peer) if peer is not None else "any rank"
        return AfdError(f"{self.layout.name(self.me)}: no {what} from {source} within "
                        f"{deadline.seconds:g} s")


class ControlChannel(_Peered, abc.ABC):
    """Typed messages (runtime/messages.py) between any two ranks of a job."""

    @abc.abstractmethod
    def send_message(self, msg, peer: RankId) -> None:
        """Send a message; never blocks on the receiver."""

    @abc.abstractmethod
    def poll_message(self, peer: RankId | None = None):
        """(message, sender) if one is waiting (from `peer`, or from anyone), else None. A
        message that does not decode raises `MessageError` naming the sender."""

    def recv_message(self, peer: RankId | None, what: str, deadline: Deadline | None = None):
        """(message, sender), waiting until `deadline` (default: the job's per-message timeout,
        with stall reporting)."""
        got = None

        def arrived() -> bool:
            nonlocal got
            got = self.poll_message(peer)
            return got is not None

        self._wait(lambda d: poll_until(arrived, d), what, peer, deadline)
        return got


class DataPlane(_Peered, abc.ABC):
    """The per-layer activations between attention and FFN ranks."""

    @abc.abstractmethod
    def send(self, peer: RankId, layer: int, micro_batch: int,
             tensors: Sequence[torch.Tensor]) -> Handle:
        """Start sending `tensors` (each [rows, ...]); they must stay unchanged until done."""

    @abc.abstractmethod
    def post_recv(self, peer: RankId, layer: int, micro_batch: int,
                  like: Sequence[Slot]) -> Handle:
        """Start receiving the next data message from `peer`, expected for (layer, micro_batch)."""

    def wait(self, handle: Handle, what: str, peer: RankId,
             deadline: Deadline | None = None) -> list[torch.Tensor]:
        """The handle's tensors once it completes; AfdError naming `peer` at the deadline
        (default: the job's per-message timeout, with stall reporting)."""
        self._wait(handle.wait, what, peer, deadline)
        return handle.result()

    def close(self) -> None:
        """Release what the data plane holds (after the job's last message)."""

    def check_header(self, peer: RankId, layer: int, micro_batch: int, got: tuple[int, int]):
        if got != (layer, micro_batch):
            raise AfdError(f"{self.layout.name(self.me)}: {self.layout.name(peer)} sent data "
                           f"for layer {got[0]} micro-batch {got[1]}, expected layer {layer} "
                           f"micro-batch {micro_batch} (the ranks' schedules differ)")

    @staticmethod
    def check_slots(tensors: Sequence[torch.Tensor], like: Sequence[Slot]) -> None:
        """The tensors a receiver got have the dtypes and tails it expected."""
        if len(tensors) != len(like) or any(
                t.dtype != s.dtype or tuple(t.shape[1:]) != s.tail for t, s in zip(tensors, like)):
            got = [(t.dtype, tuple(t.shape[1:])) for t in tensors]
            raise AfdError(f"a data message has tensors {got}, expected "
                           f"{[(s.dtype, s.tail) for s in like]}")


DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2, torch.int32: 3,
               torch.int64: 4, torch.float8_e4m3fn: 5, torch.uint8: 6}
CODE_DTYPES = {v: k for k, v in DTYPE_CODES.items()}
