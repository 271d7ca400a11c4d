"""Entry point of every rank of an AFD job (started by `mpiexec`, see launch.py).

    python -m step3_trt.runtime.afd.main --engines DIR --requests FILE --run-dir DIR [...]
    python -m step3_trt.runtime.afd.main --engines DIR --serve ENDPOINT --run-dir DIR [...]

With --requests the coordinator runs a fixed request list and prints results (`step3-trt run`);
with --serve it binds a ZeroMQ endpoint and serves requests from Triton backends until a client
asks it to shut down (`step3-trt serve`).
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

from step3_trt.runtime.afd.layout import JobLayout
from step3_trt.runtime.afd.messages import params_from_dict
from step3_trt.runtime.afd.transport import MpiTransport
from step3_trt.runtime.trace import Tracer


# Loading engines (torch import, AOTInductor packages, weights) of every rank, on a loaded
# machine: generous, since it does not depend on the per-message timeout.
STARTUP_TIMEOUT_S = 600.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--engines", type=Path, required=True)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--requests", type=Path, help="JSONL written by the launcher")
    mode.add_argument("--serve", metavar="ENDPOINT",
                      help="serving mode: ZeroMQ endpoint to bind, e.g. ipc:///tmp/x/afd.sock")
    p.add_argument("--run-dir", type=Path, required=True, help="pid files and traces go here")
    p.add_argument("--attention", type=int, required=True)
    p.add_argument("--ffn", type=int, required=True)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--micro-batches", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--trace", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    layout = JobLayout(args.attention, args.ffn)
    if comm.Get_size() != layout.world_size:
        print(f"expected {layout.world_size} MPI ranks, got {comm.Get_size()}", file=sys.stderr)
        return 2
    world = comm.Get_rank()
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints a rank's Python stacks
    role, index = layout.role_of(world)
    (args.run_dir / f"rank{world}.pid").write_text(f"{os.getpid()} {role} {index}\n")
    transport = MpiTransport(comm, args.timeout, layout.names())
    tracer = Tracer(world, layout.name(world), enabled=args.trace)
    try:
        run_role(role, index, args, layout, transport, tracer)
    except Exception:  # noqa: BLE001 - any failure must take the whole job down, loudly
        sys.stderr.write(f"[{layout.name(world)}] failed:\n{traceback.format_exc()}")
        sys.stderr.flush()
        comm.Abort(3)
    if args.trace:
        (args.run_dir / f"trace{world}.json").write_text(json.dumps(tracer.events))
    return 0


def run_role(role, index, args, layout, transport, tracer) -> None:
    if role == "coordinator" and args.serve:
        from step3_trt.runtime.afd.dispatch import wait_ready
        from step3_trt.runtime.afd.frontend import Frontend
        from step3_trt.runtime.afd.serve_coordinator import ServeCoordinator

        wait_ready(layout, transport, max(args.timeout, STARTUP_TIMEOUT_S))
        frontend = Frontend(args.serve)
        (args.run_dir / "ready").touch()
        try:
            ServeCoordinator(layout, transport, args.timeout, frontend).run()
        finally:
            frontend.close()
    elif role == "coordinator":
        from step3_trt.runtime.afd.coordinator import Coordinator, JobRequest
        from step3_trt.tokenizer import load_tokenizer

        requests = [JobRequest(r["id"], r["prompt_ids"], params_from_dict(r["params"]),
                               r.get("arrival_s", 0.0))
                    for r in map(json.loads, args.requests.read_text().splitlines())]
        coordinator = Coordinator(requests, layout, transport, load_tokenizer(args.engines),
                                  args.timeout,
                                  stats_file=args.run_dir / "stats.json")
        coordinator.wait_ready(max(args.timeout, STARTUP_TIMEOUT_S))
        (args.run_dir / "ready").touch()
        coordinator.run()
    elif role == "attention":
        from step3_trt.runtime.afd.attention_worker import AttentionWorker

        worker = AttentionWorker(args.engines, index, layout, transport, tracer, args.device,
                                 args.micro_batches)
        transport.send_json({"type": "ready"}, JobLayout.COORDINATOR)
        worker.run()
    else:
        from step3_trt.runtime.afd.ffn_worker import FfnWorker

        worker = FfnWorker(args.engines, index, layout, transport, tracer, args.device)
        transport.send_json({"type": "ready"}, JobLayout.COORDINATOR)
        worker.run()


if __name__ == "__main__":
    sys.exit(main())
