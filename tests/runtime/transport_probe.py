"""Run by tests/runtime/test_transport.py under mpiexec (3 ranks: coordinator, one attention
rank, one FFN rank): exchanges data messages over the data plane named on the command line and
prints what each rank saw as one JSON line."""

import json
import sys

import torch
from mpi4py import MPI

from step3_trt.runtime.messages import Vote
from step3_trt.runtime.ranks import JobLayout, RankId, Role
from step3_trt.runtime.transport.base import AfdError, Deadline, Slot
from step3_trt.runtime.transport.mpi import MpiControl, MpiDataPlane
from step3_trt.runtime.transport.torch_dist import TorchDataPlane

SLOTS = [Slot(torch.bfloat16, (4,)), Slot(torch.int32, (3,)), Slot(torch.float8_e4m3fn, (5,))]


def tensors(rows: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(rows, 4, generator=g).to(torch.bfloat16),
            torch.randint(-9, 9, (rows, 3), generator=g, dtype=torch.int32),
            torch.randn(rows, 5, generator=g).to(torch.float8_e4m3fn)]


def main() -> None:
    transport, mode = sys.argv[1], sys.argv[2]
    comm = MPI.COMM_WORLD
    layout = JobLayout(1, 1)
    me = layout.rank_id(comm.Get_rank())
    device = torch.device("cpu")
    if transport == "torch":
        data = TorchDataPlane.over_mpi(comm, layout, me, 10.0, device)
    else:
        data = MpiDataPlane(comm, layout, me, 10.0, device)
    control = MpiControl(comm, layout, me, 10.0)
    attention, ffn = RankId(Role.ATTENTION, 0), RankId(Role.FFN, 0)
    out = {"rank": str(me)}
    try:
        if me == attention and mode == "exchange":
            sends = [data.send(ffn, 0, k, tensors(rows, k)) for k, rows in enumerate((3, 0, 7))]
            replies = [data.wait(data.post_recv(ffn, 0, k, [Slot(torch.float32, (2,))]), "reply",
                                 ffn) for k in range(3)]
            for h in sends:
                data.wait(h, "acknowledgement", ffn)
            out["replies"] = [r[0].tolist() for r in replies]
            control.send_message(Vote(True, False), ffn)
        elif me == ffn and mode == "exchange":
            handles = [data.post_recv(attention, 0, k, SLOTS) for k in range(3)]
            got = [data.wait(h, "input", attention) for h in handles]
            out["same"] = [all(torch.equal(a.view(torch.uint8), b.view(torch.uint8))
                               for a, b in zip(g, tensors(rows, k)))
                           for k, (g, rows) in enumerate(zip(got, (3, 0, 7)))]
            out["shapes"] = [[list(t.shape) for t in g] for g in got]
            sends = [data.send(attention, 0, k, [torch.full((rows, 2), float(k))])
                     for k, rows in enumerate((3, 0, 7))]
            for h in sends:
                data.wait(h, "acknowledgement", attention)
            msg, sender = control.recv_message(attention, "vote")
            out["vote"] = [msg.has_work, msg.stopping, str(sender)]
        elif me == attention and mode == "mismatch":
            data.wait(data.send(ffn, 2, 1, tensors(1, 0)), "acknowledgement", ffn)
        elif me == ffn and mode == "mismatch":
            data.wait(data.post_recv(attention, 0, 1, SLOTS), "input", attention)
        elif me == ffn and mode == "silence":
            data.wait(data.post_recv(attention, 0, 0, SLOTS), "input", attention,
                      Deadline.after(1.0))
    except AfdError as e:
        out["error"] = str(e)
    comm.Barrier()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
