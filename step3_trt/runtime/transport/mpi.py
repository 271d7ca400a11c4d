"""Transports over mpi4py: the control channel (JSON messages, one tag) and a host-buffer data
plane (a GPU tensor is staged through host memory). MPI keeps the order of messages between two
ranks on one tag, which the data plane's known schedule relies on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from step3_trt.runtime import messages
from step3_trt.runtime.ranks import JobLayout, RankId
from step3_trt.runtime.transport import wire
from step3_trt.runtime.transport.base import ControlChannel, DataPlane, Deadline, Handle, Slot, \
    poll_until

TAG_CONTROL = 1
TAG_DATA = 2


class MpiControl(ControlChannel):
    def __init__(self, comm, layout: JobLayout, me: RankId, timeout_s: float):
        from mpi4py import MPI

        super().__init__(layout, me, timeout_s)
        self.MPI, self.comm = MPI, comm

    def send_message(self, msg, peer: RankId) -> None:
        """A blocking send: returns at once for small messages (eager protocol); a large one
        (a step report with many results) waits until the receiver, which polls, takes it."""
        data = np.frombuffer(messages.encode(msg), dtype=np.uint8)
        self.comm.Send([data, self.MPI.BYTE], dest=self.layout.world(peer), tag=TAG_CONTROL)

    def poll_message(self, peer: RankId | None = None):
        source = self.MPI.ANY_SOURCE if peer is None else self.layout.world(peer)
        status = self.MPI.Status()
        if not self.comm.Iprobe(source=source, tag=TAG_CONTROL, status=status):
            return None
        buf = np.empty(status.Get_count(self.MPI.BYTE), dtype=np.uint8)
        self.comm.Recv([buf, self.MPI.BYTE], source=status.Get_source(), tag=TAG_CONTROL)
        sender = self.layout.rank_id(status.Get_source())
        try:
            return messages.decode(buf.tobytes()), sender
        except messages.MessageError as e:
            raise messages.MessageError(f"from {self.layout.name(sender)}: {e}") from None


class _MpiSend(Handle):
    def __init__(self, request, buffer):
        self.request, self.buffer = request, buffer  # the buffer lives until the send is done
        self.complete = False

    def wait(self, deadline: Deadline) -> bool:
        self.complete = self.complete or poll_until(self.request.Test, deadline)
        return self.complete

    def result(self) -> list[torch.Tensor]:
        return []


class _MpiRecv(Handle):
    def __init__(self, plane: "MpiDataPlane", peer: RankId, layer: int, micro_batch: int,
                 like: Sequence[Slot]):
        self.plane, self.peer, self.layer, self.micro_batch = plane, peer, layer, micro_batch
        self.like = list(like)
        self.tensors: list[torch.Tensor] | None = None

    def wait(self, deadline: Deadline) -> bool:
        return poll_until(self._try, deadline)

    def _try(self) -> bool:
        if self.tensors is None:
            self.tensors = self.plane._try_recv(self)
        return self.tensors is not None

    def result(self) -> list[torch.Tensor]:
        return self.tensors


class MpiDataPlane(DataPlane):
    def __init__(self, comm, layout: JobLayout, me: RankId, timeout_s: float,
                 device: torch.device):
        from mpi4py import MPI

        super().__init__(layout, me, timeout_s)
        self.MPI, self.comm, self.device = MPI, comm, device

    def send(self, peer: RankId, layer: int, micro_batch: int,
             tensors: Sequence[torch.Tensor]) -> Handle:
        head = wire.header(layer, micro_batch, tensors).numpy().view(np.uint8)
        payload = wire.pack(tensors, "cpu").numpy()
        buf = np.concatenate([head, payload])
        request = self.comm.Isend([buf, self.MPI.BYTE], dest=self.layout.world(peer),
                                  tag=TAG_DATA)
        return _MpiSend(request, buf)

    def post_recv(self, peer: RankId, layer: int, micro_batch: int,
                  like: Sequence[Slot]) -> Handle:
        return _MpiRecv(self, peer, layer, micro_batch, like)

    def _try_recv(self, h: _MpiRecv) -> list[torch.Tensor] | None:
        status = self.MPI.Status()
        source = self.layout.world(h.peer)
        if not self.comm.Iprobe(source=source, tag=TAG_DATA, status=status):
            return None
        buf = np.empty(status.Get_count(self.MPI.BYTE), dtype=np.uint8)
        self.comm.Recv([buf, self.MPI.BYTE], source=source, tag=TAG_DATA)
        n = wire.header_size(h.like) * 8
        head = torch.from_numpy(buf[:n].copy()).view(torch.int64).tolist()
        self.check_header(h.peer, h.layer, h.micro_batch, (head[0], head[1]))
        tensors = wire.unpack(head[2:], torch.from_numpy(buf[n:]), h.like)
        return [t.to(self.device) for t in tensors]
