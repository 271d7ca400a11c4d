"""Entry point of every rank of an AFD job (started by `mpiexec`, see launch.py).

    python -m step3_trt.runtime.afd.main --engines DIR --serve ENDPOINT --run-dir DIR [...]

The coordinator binds the ZeroMQ endpoint and serves clients (the Triton backend, or the
`step3-trt run` launcher) until one asks it to shut down; attention and FFN ranks load their
engines and run the engine core and the FFN schedule. The control channel is MPI; the data
plane is the one `--transport` names.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import signal
import sys
import traceback
from pathlib import Path

import torch

from step3_trt.runtime.ranks import COORDINATOR, JobLayout, RankId, Role
from step3_trt.runtime.trace import Tracer
from step3_trt.runtime.transport import JOB_TRANSPORTS

# Loading engines (torch import, AOTInductor packages, weights) of every rank, on a loaded
# machine: generous, since it does not depend on the per-message timeout.
STARTUP_TIMEOUT_S = 600.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--engines", type=Path, required=True)
    p.add_argument("--serve", metavar="ENDPOINT", required=True,
                   help="ZeroMQ endpoint the coordinator binds, e.g. ipc:///tmp/x/afd.sock")
    p.add_argument("--run-dir", type=Path, required=True, help="pid files and traces go here")
    p.add_argument("--attention", type=int, required=True)
    p.add_argument("--ffn", type=int, required=True)
    p.add_argument("--transport", choices=JOB_TRANSPORTS,
                   required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--micro-batches", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--trace", action="store_true")
    p.add_argument("--no-prefix-caching", action="store_true",
                   help="never share KV blocks across requests (default: the build config's "
                        "kv_cache.prefix_caching)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    layout = JobLayout(args.attention, args.ffn)
    if comm.Get_size() != layout.world_size:
        print(f"expected {layout.world_size} MPI ranks, got {comm.Get_size()}", file=sys.stderr)
        return 2
    me = layout.rank_id(comm.Get_rank())
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints a rank's Python stacks
    (args.run_dir / f"rank{comm.Get_rank()}.pid").write_text(f"{os.getpid()}\n")
    tracer = Tracer(comm.Get_rank(), layout.name(me), enabled=args.trace)
    try:
        Rank(args, comm, layout, me, tracer).run()
    except Exception:  # noqa: BLE001 - any failure must take the whole job down, loudly
        sys.stderr.write(f"[{layout.name(me)}] failed:\n{traceback.format_exc()}")
        sys.stderr.flush()
        comm.Abort(3)
    if args.trace:
        (args.run_dir / f"trace{comm.Get_rank()}.json").write_text(json.dumps(tracer.events))
    return 0


def host_workers(comm, layout: JobLayout, me: RankId) -> tuple[int, int]:
    """(this rank's place among this host's workers, how many workers this host runs); the
    coordinator counts apart. Collective over `comm`."""
    from mpi4py import MPI

    worker = me in layout.workers
    workers = comm.Split(0 if worker else 1, layout.world(me))
    local = workers.Split_type(MPI.COMM_TYPE_SHARED, layout.world(me))
    index, count = local.Get_rank(), local.Get_size()
    local.Free()
    workers.Free()
    return index, count


def local_device(configured: str, worker: bool, index: int, count: int,
                 transport: str) -> torch.device:
    """This rank's device: CPU engines run on the CPU; on CUDA each worker takes the GPU of its
    place among this host's workers (`index` of `count`), several workers sharing a GPU when a
    host has fewer GPUs than workers (the mpi transport only: NCCL refuses two ranks on one
    GPU)."""
    if configured != "cuda" or not worker:
        return torch.device(configured if worker else "cpu")
    gpus = torch.cuda.device_count()
    if transport == "torch" and count > gpus:
        raise RuntimeError(f"{count} workers on this host but {gpus} GPUs: the torch transport "
                           f"(NCCL) needs one GPU per rank; use --transport mpi to share GPUs")
    return torch.device("cuda", index % gpus)


def cpu_threads(count: int) -> int:
    """Intra-op threads of a worker on the CPU: this process's cores shared among the host's
    `count` workers (at least 1), unless OMP_NUM_THREADS chose for every rank. Each rank's
    default (all cores) would have the ranks' OpenMP threads spin against each other."""
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    return max(1, len(os.sched_getaffinity(0)) // max(1, count))


class Rank:
    def __init__(self, args, comm, layout: JobLayout, me: RankId, tracer: Tracer):
        from step3_trt.build_config import BuildConfig
        from step3_trt.runtime.transport.mpi import MpiControl

        self.args, self.comm, self.layout, self.me, self.tracer = args, comm, layout, me, tracer
        self.build = BuildConfig.from_file(args.engines / "build_config.yaml")
        configured = args.device or self.build.device
        index, count = host_workers(comm, layout, me)
        self.device = torch.device(configured) if ":" in configured else \
            local_device(configured, me in layout.workers, index, count, args.transport)
        if self.device.type == "cpu":  # the coordinator runs no kernels: one thread
            torch.set_num_threads(cpu_threads(count) if me in layout.workers else 1)
        self.control = MpiControl(comm, layout, me, args.timeout)
        self.data = self._data_plane()
        if me != COORDINATOR:
            for plane in (self.control, self.data):
                plane.on_stall = self._report_stall
        self.micro_batches = args.micro_batches or self.build.runtime.micro_batches
        self.prefix_caching = self.build.kv_cache.prefix_caching and not args.no_prefix_caching

    def _data_plane(self):
        """The data plane `--transport` names (collective: every rank takes part)."""
        if self.args.transport == "torch":
            from step3_trt.runtime.transport.torch_dist import TorchDataPlane

            return TorchDataPlane.over_mpi(self.comm, self.layout, self.me, self.args.timeout,
                                           self.device)
        from step3_trt.runtime.transport.mpi import MpiDataPlane

        return MpiDataPlane(self.comm, self.layout, self.me, self.args.timeout, self.device)

    def _ready(self) -> None:
        """Report the engines loaded and wait until every worker's are (the coordinator's
        Begin); loading is bounded by the start-up timeout, not the per-message one."""
        from step3_trt.runtime.messages import Begin, Ready
        from step3_trt.runtime.transport.base import Deadline

        self.control.send_message(Ready(), COORDINATOR)
        deadline = Deadline.after(max(self.args.timeout, STARTUP_TIMEOUT_S))
        msg, _ = self.control.recv_message(COORDINATOR, "start signal", deadline)
        if not isinstance(msg, Begin):
            raise RuntimeError(f"the coordinator sent {msg.TYPE!r} before 'begin'")

    def _report_stall(self, peer: RankId, what: str, seconds: float) -> None:
        from step3_trt.runtime.messages import Stalled

        self.control.send_message(Stalled(self.layout.world(peer), what, seconds), COORDINATOR)

    def run(self) -> None:
        print(f"[{self.layout.name(self.me)}] transport {self.args.transport}, device "
              f"{self.device}, {torch.get_num_threads()} CPU threads", file=sys.stderr,
              flush=True)
        if self.me == COORDINATOR:
            self._coordinate()
        elif self.me.role is Role.ATTENTION:
            self._attend()
        else:
            self._serve_ffn()
        if self.data is not None:
            self.data.close()

    def _coordinate(self) -> None:
        from step3_trt.runtime.afd.coordinator import Coordinator
        from step3_trt.runtime.afd.dispatch import wait_ready
        from step3_trt.runtime.afd.frontend import Frontend

        wait_ready(self.layout, self.control, max(self.args.timeout, STARTUP_TIMEOUT_S))
        frontend = Frontend(self.args.serve)
        (self.args.run_dir / "ready").touch()
        try:
            Coordinator(self.layout, self.control, self.args.timeout, frontend,
                        self._routing()).run()
        finally:
            frontend.close()

    def _routing(self):
        """Prefix-aware dispatch when the ranks cache prefixes: the rank with the longest cached
        prefix is preferred while it has at most a quarter of a batch (at least 1) more requests
        in flight than the least-loaded rank."""
        from step3_trt.runtime.afd.prefix_index import PrefixRouting
        from step3_trt.runtime.local import prefix_hasher

        hasher = prefix_hasher(self.build, self.prefix_caching)
        if hasher is None:
            return None
        return PrefixRouting(hasher, slack=max(1, self.build.runtime.max_batch // 4))

    def _attend(self) -> None:
        from step3_trt.runtime.afd.attention_worker import AttentionWorker
        from step3_trt.runtime.core import EngineCore
        from step3_trt.runtime.engine import RankEngine
        from step3_trt.runtime.ffn import RemoteFfn
        from step3_trt.runtime.local import attention_executor, eos_token_ids, make_scheduler
        from step3_trt.tokenizer import load_tokenizer

        engines = self.args.engines
        engine = RankEngine(engines / self.me.dir, self.device, self.build.digest())
        executor = attention_executor(engines, self.build, engine)
        cfg = executor.config
        eos = eos_token_ids(engines, cfg)
        scheduler = make_scheduler(cfg, self.build, executor.k_cache.shape[1], eos,
                                   load_tokenizer(engines), self.prefix_caching)
        ffn = RemoteFfn.for_engine(self.data, self.layout, self.me, engine.meta, engine.device,
                                   self.tracer)
        core = EngineCore(executor, ffn, scheduler, eos, self.micro_batches, lockstep=True,
                          tracer=self.tracer)
        self._ready()
        AttentionWorker(core, self.control, self.layout, self.me).run()
        # what this rank put on the links, for the launcher's summary (`run --json`)
        (self.args.run_dir / f"links{self.layout.world(self.me)}.json").write_text(
            json.dumps(ffn.links.to_dict()))

    def _serve_ffn(self) -> None:
        from step3_trt.runtime.afd.ffn_worker import FfnWorker
        from step3_trt.runtime.cuda_graphs import GraphCache
        from step3_trt.runtime.engine import RankEngine
        from step3_trt.runtime.executors import FfnExecutor
        from step3_trt.runtime.wire_format import WireFormat

        engine = RankEngine(self.args.engines / self.me.dir, self.device, self.build.digest())
        executor = FfnExecutor(engine, GraphCache.for_engine(self.build.runtime, engine))
        self._ready()
        FfnWorker(executor, self.control, self.data, self.layout, self.micro_batches,
                  self.tracer, WireFormat.of_engine(engine.meta)).run()


if __name__ == "__main__":
    sys.exit(main())
