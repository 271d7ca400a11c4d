"""Transports between AFD ranks, behind one small interface.

Data plane: attention ranks send (y, routing) for one layer and micro-batch to every FFN rank
and receive each FFN rank's partial. Control plane: JSON messages (requests, progress, results,
shutdown). Every wait has a deadline and names the peer it was waiting for.

`MpiTransport` uses mpi4py with host buffers (the CPU default; GPU tensors are staged through
host memory). An NCCL transport (torch.distributed bootstrapped over MPI, device buffers) fits
the same interface; it is not written yet because no machine here has two GPUs to run it on.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

TAG_CONTROL = 1
TAG_DATA = 100  # + micro-batch index: attention -> FFN and back
HEADER = struct.Struct("<6q")  # layer, micro_batch, tokens, top_k, has_route, dtype code
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
CODE_DTYPES = {v: k for k, v in DTYPE_CODES.items()}
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


@dataclass
class FfnRequest:
    source: int  # world rank of the attention rank
    layer: int
    micro_batch: int
    y: torch.Tensor  # [T, H]
    route: tuple[torch.Tensor, torch.Tensor] | None  # weights [T, K], ids [T, K] int32


class Transport(Protocol):
    """What the workers and the coordinator use; `MpiTransport` implements it."""

    def send_json(self, obj: dict, dest: int) -> None: ...
    def poll_json(self, source: int | None = None) -> tuple[dict, int] | None: ...
    def recv_json(self, source: int | None = None, timeout_s: float | None = None): ...
    def send_ffn_request(self, dest: int, layer: int, micro_batch: int, y: torch.Tensor,
                         route) -> list: ...
    def recv_partial(self, source: int, micro_batch: int, like: torch.Tensor) -> torch.Tensor: ...
    def recv_ffn_request(self, hidden: int, device) -> FfnRequest | None: ...
    def send_partial(self, dest: int, micro_batch: int, partial: torch.Tensor) -> list: ...
    def reap(self, pending: list) -> list: ...
    def wait_all(self, pending: list, what: str = "send") -> None: ...


def _tensor(buf: np.ndarray, offset: int, nbytes: int, dtype, shape) -> torch.Tensor:
    """A tensor from a byte range of a receive buffer (copied, so it is aligned and owned)."""
    return torch.from_numpy(buf[offset:offset + nbytes].copy()).view(dtype).view(shape)


def _bytes(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy()


class MpiTransport:
    def __init__(self, comm, timeout_s: float, names: dict[int, str]):
        from mpi4py import MPI

        self.MPI, self.comm, self.timeout_s, self.names = MPI, comm, timeout_s, names
        self.rank = comm.Get_rank()

    # ---- waiting with deadlines ----------------------------------------------------------
    def _probe(self, source: int, tag: int, what: str, timeout_s: float | None = None):
        """Wait for a message; returns its status. Raises AfdError naming the peer on timeout."""
        status = self.MPI.Status()
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        backoff = Backoff()  # yield the core to ranks doing real work
        while not self.comm.Iprobe(source=source, tag=tag, status=status):
            if time.monotonic() > deadline:
                peer = self.names.get(source, "any rank")
                raise AfdError(f"{self.names[self.rank]}: no {what} from {peer} within "
                               f"{self.timeout_s:g} s")
            backoff.sleep()
        return status

    def _recv_bytes(self, source: int, tag: int, what: str, timeout_s=None) -> tuple[bytes, int]:
        status = self._probe(source, tag, what, timeout_s)
        buf = np.empty(status.Get_count(self.MPI.BYTE), dtype=np.uint8)
        self.comm.Recv([buf, self.MPI.BYTE], source=status.Get_source(), tag=status.Get_tag())
        return buf, status.Get_source()

    # ---- control plane -------------------------------------------------------------------
    def send_json(self, obj: dict, dest: int) -> None:
        data = np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)
        self.comm.Send([data, self.MPI.BYTE], dest=dest, tag=TAG_CONTROL)

    def poll_json(self, source: int | None = None) -> tuple[dict, int] | None:
        src = self.MPI.ANY_SOURCE if source is None else source
        if not self.comm.Iprobe(source=src, tag=TAG_CONTROL):
            return None
        return self.recv_json(src)

    def recv_json(self, source: int | None = None, timeout_s: float | None = None):
        src = self.MPI.ANY_SOURCE if source is None else source
        buf, origin = self._recv_bytes(src, TAG_CONTROL, "control message", timeout_s)
        return json.loads(buf.tobytes().decode()), origin

    # ---- data plane: attention side ------------------------------------------------------
    def send_ffn_request(self, dest: int, layer: int, micro_batch: int, y: torch.Tensor,
                         route) -> list:
        T, K = y.shape[0], route[1].shape[1] if route is not None else 0
        parts = [np.frombuffer(HEADER.pack(layer, micro_batch, T, K, route is not None,
                                           DTYPE_CODES[y.dtype]), dtype=np.uint8), _bytes(y)]
        if route is not None:
            parts += [_bytes(route[0]), _bytes(route[1].to(torch.int32))]
        msg = np.concatenate(parts)
        return [self.comm.Isend([msg, self.MPI.BYTE], dest=dest, tag=TAG_DATA + micro_batch),
                msg]  # keep the buffer alive until the send completes

    def recv_partial(self, source: int, micro_batch: int, like: torch.Tensor) -> torch.Tensor:
        buf, _ = self._recv_bytes(source, TAG_DATA + micro_batch, "FFN partial")
        return _tensor(buf, 0, buf.nbytes, like.dtype, like.shape).to(like.device)

    # ---- data plane: FFN side ------------------------------------------------------------
    def recv_ffn_request(self, hidden: int, device) -> FfnRequest | None:
        """The next request from any attention rank, or None if a control message came first."""
        status = self.MPI.Status()
        backoff = Backoff()
        while True:
            if self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=TAG_CONTROL):
                return None
            if self.comm.Iprobe(source=self.MPI.ANY_SOURCE, tag=self.MPI.ANY_TAG, status=status) \
                    and status.Get_tag() >= TAG_DATA:
                break
            backoff.sleep()
        buf, source = self._recv_bytes(status.Get_source(), status.Get_tag(), "FFN request")
        layer, mb, T, K, has_route, code = HEADER.unpack(buf[:HEADER.size].tobytes())
        dtype = CODE_DTYPES[code]
        off = HEADER.size
        n = T * hidden * dtype.itemsize
        y = _tensor(buf, off, n, dtype, (T, hidden))
        route = None
        if has_route:
            off += n
            w = _tensor(buf, off, T * K * dtype.itemsize, dtype, (T, K))
            off += T * K * dtype.itemsize
            ids = _tensor(buf, off, T * K * 4, torch.int32, (T, K))
            route = (w.to(device), ids.to(device))
        return FfnRequest(source, layer, mb, y.to(device), route)

    def send_partial(self, dest: int, micro_batch: int, partial: torch.Tensor) -> list:
        """Non-blocking: a blocking send of a large partial to one attention rank could wait on
        that rank while it waits on another FFN rank's reply (a cycle). Complete with `reap`."""
        data = _bytes(partial)
        return [self.comm.Isend([data, self.MPI.BYTE], dest=dest, tag=TAG_DATA + micro_batch),
                data]

    @staticmethod
    def reap(pending: list) -> list:
        """Drop completed sends; returns those still in flight."""
        return [p for p in pending if not p[0].Test()]

    def wait_all(self, pending: list, what: str = "send") -> None:
        """Complete sends, with the same deadline as every other wait."""
        deadline = time.monotonic() + self.timeout_s
        backoff = Backoff()
        while pending := self.reap(pending):
            if time.monotonic() > deadline:
                raise AfdError(f"{self.names[self.rank]}: a {what} did not complete within "
                               f"{self.timeout_s:g} s")
            backoff.sleep()
