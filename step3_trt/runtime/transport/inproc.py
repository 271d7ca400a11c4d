"""In-process transports: queues between ranks that run as threads of one process (unit tests,
and jobs run without MPI). Messages go through the same JSON encoding as over MPI, and data
messages are copied, so a thread sees what another rank would."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Sequence

import torch

from step3_trt.runtime import messages
from step3_trt.runtime.ranks import JobLayout, RankId
from step3_trt.runtime.transport.base import ControlChannel, DataPlane, Deadline, Handle, Slot, \
    poll_until


class InprocHub:
    """The queues of one in-process job; each rank takes its `control(rank)` and `data(rank)`."""

    def __init__(self, layout: JobLayout, timeout_s: float):
        self.layout, self.timeout_s = layout, timeout_s
        ranks = [layout.rank_id(w) for w in range(layout.world_size)]
        self.inbox: dict[RankId, queue.Queue] = {r: queue.Queue() for r in ranks}
        self.lock = threading.Lock()
        self.data: dict[tuple[RankId, RankId], deque] = {}  # (sender, receiver) -> messages

    def control(self, me: RankId) -> "InprocControl":
        return InprocControl(self, me)

    def data_plane(self, me: RankId, device: torch.device) -> "InprocDataPlane":
        return InprocDataPlane(self, me, device)


class InprocControl(ControlChannel):
    def __init__(self, hub: InprocHub, me: RankId):
        super().__init__(hub.layout, me, hub.timeout_s)
        self.hub = hub
        self.held: list[tuple[RankId, bytes]] = []  # taken from the inbox, not yet asked for

    def send_message(self, msg, peer: RankId) -> None:
        self.hub.inbox[peer].put((self.me, messages.encode(msg)))

    def poll_message(self, peer: RankId | None = None):
        inbox = self.hub.inbox[self.me]
        while True:
            try:
                self.held.append(inbox.get_nowait())
            except queue.Empty:
                break
        for i, (sender, data) in enumerate(self.held):
            if peer is None or sender == peer:
                del self.held[i]
                try:
                    return messages.decode(data), sender
                except messages.MessageError as e:
                    raise messages.MessageError(f"from {self.layout.name(sender)}: {e}") from None
        return None


class _Done(Handle):
    def wait(self, deadline: Deadline) -> bool:
        return True

    def result(self) -> list[torch.Tensor]:
        return []


class _Recv(Handle):
    def __init__(self, plane: "InprocDataPlane", peer: RankId, layer: int, micro_batch: int,
                 like: Sequence[Slot]):
        self.plane, self.peer, self.layer, self.micro_batch = plane, peer, layer, micro_batch
        self.like = list(like)
        self.tensors: list[torch.Tensor] | None = None

    def wait(self, deadline: Deadline) -> bool:
        return poll_until(self._try, deadline)

    def _try(self) -> bool:
        if self.tensors is None:
            hub = self.plane.hub
            with hub.lock:
                box = hub.data.get((self.peer, self.plane.me))
                got = box.popleft() if box else None
            if got is not None:
                layer, micro_batch, tensors = got
                self.plane.check_header(self.peer, self.layer, self.micro_batch,
                                        (layer, micro_batch))
                self.plane.check_slots(tensors, self.like)
                self.tensors = [t.to(self.plane.device) for t in tensors]
        return self.tensors is not None

    def result(self) -> list[torch.Tensor]:
        return self.tensors


class InprocDataPlane(DataPlane):
    def __init__(self, hub: InprocHub, me: RankId, device: torch.device):
        super().__init__(hub.layout, me, hub.timeout_s)
        self.hub, self.device = hub, device

    def send(self, peer: RankId, layer: int, micro_batch: int,
             tensors: Sequence[torch.Tensor]) -> Handle:
        copies = [t.detach().clone() for t in tensors]
        with self.hub.lock:
            self.hub.data.setdefault((self.me, peer), deque()).append((layer, micro_batch, copies))
        return _Done()

    def post_recv(self, peer: RankId, layer: int, micro_batch: int,
                  like: Sequence[Slot]) -> Handle:
        return _Recv(self, peer, layer, micro_batch, like)
