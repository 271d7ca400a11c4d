"""A data plane over torch.distributed point-to-point operations: gloo with CPU tensors on CPU
engines, NCCL with device tensors on CUDA engines, one code path.

The process group spans the workers (attention and FFN ranks; not the coordinator) and is
bootstrapped over MPI: worker 0 opens a TCPStore (on loopback when every worker shares one host)
and broadcasts its port. The group object is used directly (`pg.send` / `pg.recv`), never
installed as torch's global default group.

A message is two operations: a header (int64: layer, micro-batch, rows of each tensor) and, when
it has any bytes, one uint8 payload. NCCL matches operations between two ranks in the order
they are posted and has no tags, so a receiver posts the header of the next message from a peer
only once the previous message's payload receive is posted (`_PeerQueue`).
"""

from __future__ import annotations

import datetime
import socket
import time
from collections import deque
from collections.abc import Sequence

import torch

from step3_trt.runtime.ranks import JobLayout, RankId
from step3_trt.runtime.transport import wire
from step3_trt.runtime.transport.base import DataPlane, Deadline, Handle, Slot, poll_until

TAG = 0


def bootstrap_group(comm, layout: JobLayout, me: RankId, device: torch.device,
                    timeout_s: float):
    """The workers' process group (gloo on CPU, NCCL on CUDA) and this rank's index in it.
    Collective over `comm` (MPI COMM_WORLD): the coordinator takes part and gets (None, None)."""
    from mpi4py import MPI

    worker = layout.world(me) - 1 if me in layout.workers else None
    sub = comm.Split(0 if worker is not None else MPI.UNDEFINED, layout.world(me))
    if worker is None:
        return None, None
    hosts = sub.allgather(socket.gethostname())
    host = "127.0.0.1" if len(set(hosts)) == 1 else socket.gethostbyname(hosts[0])
    timeout = datetime.timedelta(seconds=max(timeout_s, 60.0))
    if worker == 0:
        store = torch.distributed.TCPStore(host, 0, len(hosts), is_master=True, timeout=timeout,
                                           wait_for_workers=False)
        port = sub.bcast(store.port, root=0)
    else:
        port = sub.bcast(None, root=0)
        store = torch.distributed.TCPStore(host, port, len(hosts), is_master=False,
                                           timeout=timeout)
    sub.Free()
    if device.type == "cuda":
        torch.cuda.set_device(device)
        group = torch.distributed.ProcessGroupNCCL(store, worker, len(hosts))
    else:
        group = torch.distributed.ProcessGroupGloo(store, worker, len(hosts), timeout)
    return group, worker


class _Send(Handle):
    def __init__(self, plane: "TorchDataPlane", works: list, keep: list[torch.Tensor]):
        self.plane, self.works, self.keep = plane, works, keep  # tensors live until done

    def wait(self, deadline: Deadline) -> bool:
        return all(self.plane._wait_work(w, deadline) for w in self.works)

    def result(self) -> list[torch.Tensor]:
        return []


class _Recv(Handle):
    def __init__(self, plane: "TorchDataPlane", peer: RankId, layer: int, micro_batch: int,
                 like: Sequence[Slot]):
        self.plane, self.peer, self.layer, self.micro_batch = plane, peer, layer, micro_batch
        self.like = list(like)
        self.header = torch.empty(wire.header_size(like), dtype=torch.int64, device=plane.device)
        self.header_work = None
        self.rows: list[int] | None = None
        self.payload: torch.Tensor | None = None
        self.payload_work = None
        self.tensors: list[torch.Tensor] | None = None

    def wait(self, deadline: Deadline) -> bool:
        if self.tensors is None:
            if not self.plane._complete(self, deadline):
                return False
            self.tensors = wire.unpack(self.rows, self.payload, self.like)
        return True

    def result(self) -> list[torch.Tensor]:
        return self.tensors


class TorchDataPlane(DataPlane):
    def __init__(self, group, worker_of: dict[RankId, int], layout: JobLayout, me: RankId,
                 timeout_s: float, device: torch.device):
        super().__init__(layout, me, timeout_s)
        self.group, self.worker_of = group, worker_of
        self.device = torch.device("cpu") if device.type == "cpu" else device
        self.queues: dict[RankId, deque[_Recv]] = {}

    @classmethod
    def over_mpi(cls, comm, layout: JobLayout, me: RankId, timeout_s: float,
                 device: torch.device) -> "TorchDataPlane | None":
        group, _ = bootstrap_group(comm, layout, me, device, timeout_s)
        if group is None:
            return None
        workers = {r: layout.world(r) - 1 for r in layout.workers}
        return cls(group, workers, layout, me, timeout_s, device)

    def send(self, peer: RankId, layer: int, micro_batch: int,
             tensors: Sequence[torch.Tensor]) -> Handle:
        dst = self.worker_of[peer]
        head = wire.header(layer, micro_batch, tensors).to(self.device)
        works, keep = [self.group.send([head], dst, TAG)], [head]
        payload = wire.pack(tensors, self.device)
        if payload.numel():
            works.append(self.group.send([payload], dst, TAG))
            keep.append(payload)
        return _Send(self, works, keep)

    def post_recv(self, peer: RankId, layer: int, micro_batch: int,
                  like: Sequence[Slot]) -> Handle:
        handle = _Recv(self, peer, layer, micro_batch, like)
        self.queues.setdefault(peer, deque()).append(handle)
        self._post_front(peer)
        return handle

    def _post_front(self, peer: RankId) -> None:
        """Post the header receive of the oldest message from `peer` whose header is unread."""
        queue = self.queues[peer]
        if queue and queue[0].header_work is None:
            queue[0].header_work = self.group.recv([queue[0].header], self.worker_of[peer], TAG)

    def _complete(self, h: _Recv, deadline: Deadline) -> bool:
        """Receive `h`: first the headers of every earlier message from its peer (each
        followed by its payload receive, the order the peer sends them in), then its own."""
        queue = self.queues[h.peer]
        while h in queue:
            front = queue[0]
            if not self._wait_work(front.header_work, deadline):
                return False
            head = front.header.tolist()
            self.check_header(front.peer, front.layer, front.micro_batch, (head[0], head[1]))
            front.rows = head[2:]
            size = wire.payload_size(front.rows, front.like)
            front.payload = torch.empty(size, dtype=torch.uint8, device=self.device)
            if size:
                front.payload_work = self.group.recv([front.payload], self.worker_of[h.peer], TAG)
            queue.popleft()
            self._post_front(h.peer)
        return h.payload_work is None or self._wait_work(h.payload_work, deadline)

    def _wait_work(self, work, deadline: Deadline) -> bool:
        """Gloo completes an operation only inside `wait` (with a timeout); NCCL's completion
        is polled (its `wait` only orders the CUDA stream)."""
        if self.device.type == "cuda":
            return poll_until(work.is_completed, deadline)
        seconds = max(0.0, deadline.at - time.monotonic())
        try:
            work.wait(datetime.timedelta(seconds=min(seconds, 1e6)))
        except RuntimeError:  # gloo's timeout (the job fails on it)
            return False
        return True

    def close(self) -> None:
        if hasattr(self.group, "shutdown"):
            self.group.shutdown()
