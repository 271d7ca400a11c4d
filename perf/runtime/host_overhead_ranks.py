"""One rank of the host-overhead benchmark (started by bench_host_overhead.py under mpiexec).

Attention ranks run the real engine core's layer loop (`EngineCore.forward`) and the real
`RemoteFfn`; FFN ranks run the real `FfnWorker` schedule; the transports are the real ones. Only
the engines are stubs that hand back preallocated tensors, so what is timed is the runtime's own
work per (layer, micro-batch) call: bookkeeping, dispatch (placement P2 over the FFN ranks,
hidden states in the activation dtype), the exchange, the partials' combine.
Each rank prints one JSON line: seconds per step, and the part of it spent waiting on peers.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from mpi4py import MPI

from step3_trt.convert.placement import FfnPlacement
from step3_trt.runtime.afd.ffn_worker import FfnWorker
from step3_trt.runtime.core import EngineCore
from step3_trt.runtime.executors import FfnRows
from step3_trt.runtime.expert_dispatch import ExpertDispatch
from step3_trt.runtime.ffn import RemoteFfn
from step3_trt.runtime.ranks import COORDINATOR, JobLayout, Role
from step3_trt.runtime.trace import Tracer
from step3_trt.runtime.transport.mpi import MpiControl, MpiDataPlane
from step3_trt.runtime.transport.torch_dist import TorchDataPlane
from step3_trt.runtime.wire_format import WireFormat


@dataclass(frozen=True)
class StubConfig:
    num_hidden_layers: int
    hidden_size: int
    moe_top_k: int = 3
    moe_num_experts: int = 48
    vocab_size: int = 128815

    def is_moe_layer(self, layer: int) -> bool:
        return 4 <= layer < self.num_hidden_layers - 1  # Step-3: layers 4..59 of 61


class StubAttention:
    """The executor interface the core uses, answering with preallocated tensors."""

    def __init__(self, cfg: StubConfig, tokens: int, dtype: torch.dtype, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.config, self.dtype = cfg, dtype
        self.engine = SimpleNamespace(device=torch.device("cpu"))
        self.h = torch.randn(tokens, cfg.hidden_size, generator=g).to(dtype)
        self.y = torch.randn(tokens, cfg.hidden_size, generator=g).to(dtype)
        self.route = (torch.rand(tokens, cfg.moe_top_k, generator=g).to(dtype),
                      torch.randint(0, cfg.moe_num_experts, (tokens, cfg.moe_top_k),
                                    generator=g, dtype=torch.int32))

    def embed(self, batch):
        return self.h

    def attention(self, layer, x, batch):
        return self.h, self.y, self.route if self.config.is_moe_layer(layer) else None


class StubFfn:
    """The FFN executor interface (`partial` on the rows a rank was sent), answering with a
    preallocated tensor; its `engine` carries what LocalFfn reads from an engine.json."""

    def __init__(self, cfg: StubConfig, dtype: torch.dtype, max_tokens: int,
                 placement: FfnPlacement, rank: int):
        self.config, self.dtype = cfg, dtype
        self.out = torch.zeros(max_tokens, cfg.hidden_size, dtype=dtype)
        name = str(dtype).removeprefix("torch.")
        self.engine = SimpleNamespace(
            device=torch.device("cpu"), rank=rank, mapping={"placement": placement.to_dict()},
            meta={"dtypes": {"activations": name}, "wire": {"hidden": name},
                  "architecture": {"hidden_size": cfg.hidden_size, "moe_top_k": cfg.moe_top_k}})

    def partial(self, layer: int, work: FfnRows) -> torch.Tensor:
        return self.out[:work.rows]


def placement_of(cfg: StubConfig, ffn_ranks: int) -> FfnPlacement:
    """Placement P2 over `ffn_ranks` EP groups (tp 1)."""
    return FfnPlacement(cfg.moe_num_experts, ffn_ranks, 1)


def wire_of(cfg: StubConfig, dtype: torch.dtype) -> WireFormat:
    """Hidden states in the activation dtype (the wire of BF16 / float32 engines)."""
    return WireFormat(cfg.hidden_size, cfg.moe_top_k, dtype, fp8=False)


class TimedPlane:
    """A data plane whose waits are timed (everything else passes through)."""

    def __init__(self, plane):
        self.plane, self.waited = plane, 0.0

    def __getattr__(self, name):
        return getattr(self.plane, name)

    def wait(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.plane.wait(*args, **kwargs)
        finally:
            self.waited += time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--transport", choices=["mpi", "torch"], required=True)
    p.add_argument("--attention", type=int, default=1)
    p.add_argument("--ffn", type=int, default=1)
    p.add_argument("--layers", type=int, default=61)
    p.add_argument("--micro-batches", type=int, default=3)
    p.add_argument("--tokens", type=int, required=True, help="tokens per micro-batch per rank")
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    comm = MPI.COMM_WORLD
    layout = JobLayout(args.attention, args.ffn)
    me = layout.rank_id(comm.Get_rank())
    dtype = getattr(torch, args.dtype)
    cfg = StubConfig(args.layers, args.hidden)
    cpu = torch.device("cpu")
    plane = TorchDataPlane.over_mpi(comm, layout, me, 60.0, cpu) if args.transport == "torch" \
        else MpiDataPlane(comm, layout, me, 60.0, cpu)
    data = TimedPlane(plane) if plane is not None else None
    control = MpiControl(comm, layout, me, 60.0)
    if me.role is Role.ATTENTION:
        attention = StubAttention(cfg, args.tokens, dtype, seed=me.index)
        wire = wire_of(cfg, dtype)
        dispatch = ExpertDispatch(placement_of(cfg, args.ffn), wire, me.index, args.attention,
                                  cpu)
        core = EngineCore(attention, RemoteFfn(data, layout, dispatch, wire), scheduler=None,
                          eos_token_ids=(), micro_batches=args.micro_batches, lockstep=True)
        batches = [SimpleNamespace(num_tokens=args.tokens)] * args.micro_batches
        step = lambda: core.forward(batches)  # noqa: E731
    elif me.role is Role.FFN:
        stub = StubFfn(cfg, dtype, args.tokens * args.attention, placement_of(cfg, args.ffn),
                       me.index)
        worker = FfnWorker(stub, control, data, layout, args.micro_batches,
                           Tracer(0, "", enabled=False), wire_of(cfg, dtype))
        step = worker.step
    times, waits = [], []
    for i in range(args.warmup + args.steps):
        comm.Barrier()
        if me == COORDINATOR:
            continue
        data.waited = 0.0
        start = time.perf_counter()
        step()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
            waits.append(data.waited)
    comm.Barrier()
    if me != COORDINATOR:
        times.sort()
        waits.sort()
        print(json.dumps({"rank": str(me), "step_s": times[len(times) // 2],
                          "wait_s": waits[len(waits) // 2]}), flush=True)


if __name__ == "__main__":
    main()
