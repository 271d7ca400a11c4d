"""The CPU side of the `mpi` transport, measured: MPI ping-pong between two ranks of one host
(shared memory), the host cost of posting one non-blocking send, and a single-core memcpy.

    mpiexec -n 2 python -m perf.afd.bench_mpi --out perf/results/afd_model_mpi_<cpu>.json

The `mpi` transport stages every message through host memory (device -> host copy, MPI, host ->
device copy; step3_trt/runtime/afd/transport.py); docs/afd-model.md §10 uses these numbers for
the MPI part. Buffers are numpy byte arrays, as the runtime's (no pickle).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

SIZES = (0, 64, 1024, 16 << 10, 64 << 10, 256 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20,
         8 << 20, 16 << 20)
POSTS = 32  # non-blocking sends posted back to back in the posting-cost test


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def ping_pong(comm, MPI, size: int, reps: int) -> list[float]:
    """Round-trip seconds of `reps` exchanges of `size` bytes between ranks 0 and 1."""
    buf = np.zeros(size, dtype=np.uint8)
    times = []
    for i in range(reps + 3):  # 3 warm-ups
        comm.Barrier()
        t0 = time.perf_counter()
        if comm.rank == 0:
            comm.Send([buf, MPI.BYTE], dest=1, tag=7)
            comm.Recv([buf, MPI.BYTE], source=1, tag=7)
        else:
            comm.Recv([buf, MPI.BYTE], source=0, tag=7)
            comm.Send([buf, MPI.BYTE], dest=0, tag=7)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return times


def posting_us(comm, MPI, reps: int = 20) -> float:
    """Median host µs to post one 1 KB Isend (rank 0), the receiver posting matching Irecvs."""
    msgs = [np.zeros(1024, dtype=np.uint8) for _ in range(POSTS)]
    per_post = []
    for _ in range(reps):
        comm.Barrier()
        if comm.rank == 0:
            t0 = time.perf_counter()
            reqs = [comm.Isend([m, MPI.BYTE], dest=1, tag=9) for m in msgs]
            per_post.append((time.perf_counter() - t0) / POSTS * 1e6)
        else:
            reqs = [comm.Irecv([m, MPI.BYTE], source=0, tag=9) for m in msgs]
        MPI.Request.Waitall(reqs)
    return statistics.median(per_post) if per_post else 0.0


def memcpy_gbps(nbytes: int = 16 << 20, reps: int = 20) -> float:
    """Single-core host copy rate (GB/s of bytes copied, median), as `.copy()` of a buffer."""
    src, dst = np.ones(nbytes, dtype=np.uint8), np.empty(nbytes, dtype=np.uint8)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return nbytes / statistics.median(times) / 1e9


def main(argv: list[str] | None = None) -> int:
    """Measure on two ranks; rank 0 prints the table and writes the JSON."""
    from mpi4py import MPI

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    comm = MPI.COMM_WORLD
    if comm.size != 2:
        raise SystemExit("run with exactly 2 ranks: mpiexec -n 2 python -m perf.afd.bench_mpi")
    rows = []
    for size in SIZES:
        reps = max(20, min(200, (256 << 20) // max(size, 1)))
        rtt = ping_pong(comm, MPI, size, reps)
        one_way = statistics.median(rtt) / 2
        rows.append({"bytes": size, "reps": reps, "one_way_us_median": one_way * 1e6,
                     "one_way_us_min": min(rtt) / 2 * 1e6,
                     "GBps": size / one_way / 1e9 if size else None})
    post = posting_us(comm, MPI)
    copy = memcpy_gbps() if comm.rank == 0 else 0.0
    if comm.rank == 0:
        result = {"format": "step3-afd-mpi/1", "cpu": cpu_name(),
                  "mpi": MPI.Get_library_version().splitlines()[0],
                  "mpi4py": __import__("mpi4py").__version__,
                  "ranks": "2 on one host (shared memory)", "ping_pong": rows,
                  "isend_post_us": post, "memcpy_GBps": copy,
                  "notes": "one-way = half the median round trip; GBps = bytes / one-way"}
        for r in rows:
            bw = f"{r['GBps']:.2f} GB/s" if r["GBps"] else ""
            print(f"{r['bytes']:>10} B  one-way {r['one_way_us_median']:9.1f} us  {bw}")
        print(f"Isend posting {post:.2f} us/message; memcpy {copy:.2f} GB/s")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
