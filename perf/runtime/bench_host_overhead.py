"""Host time per (layer, micro-batch) call of the AFD runtime, engines stubbed out.

    python perf/runtime/bench_host_overhead.py [--steps 20] [--out perf/results/host_overhead_<cpu>.json]

For each data plane (mpi, torch/gloo) and shape, an mpiexec job runs the real engine core, the
real RemoteFfn and FfnWorker and the real transports, with stub engines that return preallocated
tensors (host_overhead_ranks.py); the in-process path (LocalFfn) is timed in this process. Per
call = a step's wall time / (layers x micro-batches); "host" leaves out the time a rank spent
waiting on its peers. At Step-3's 61 layers x 3 micro-batches a 50 ms step allows 273 us per
call for each of the three pipeline stages (attention, FFN, link).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from step3_trt.runtime.afd.launch import mpiexec_path

HERE = Path(__file__).resolve().parent
BUDGET_US = 50e3 / (61 * 3)
SHAPES = [  # (name, tokens per micro-batch per attention rank, hidden, dtype)
    ("bundled model, 1 token", 1, 256, "float32"),
    ("Step-3 width, 128 tokens", 128, 7168, "bfloat16"),
]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def job(transport: str, attention: int, ffn: int, tokens: int, hidden: int, dtype: str,
        steps: int, layers: int, micro_batches: int) -> dict:
    n = 1 + attention + ffn
    cmd = [mpiexec_path(), "-n", str(n), "--allow-run-as-root", "--oversubscribe",
           sys.executable, str(HERE / "host_overhead_ranks.py"), "--transport", transport,
           "--attention", str(attention), "--ffn", str(ffn), "--tokens", str(tokens),
           "--hidden", str(hidden), "--dtype", dtype, "--steps", str(steps),
           "--layers", str(layers), "--micro-batches", str(micro_batches)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd}: exit {proc.returncode}\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    ranks = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    calls = layers * micro_batches
    per = {}
    for role in ("attention", "FFN"):
        rows = [r for r in ranks if r["rank"].startswith(role)]
        per[role.lower()] = {
            "call_us": 1e6 * max(r["step_s"] for r in rows) / calls,
            "host_us": 1e6 * max(r["step_s"] - r["wait_s"] for r in rows) / calls}
    return per


def local(tokens: int, hidden: int, dtype: str, steps: int, layers: int) -> dict:
    sys.path.insert(0, str(HERE))
    from host_overhead_ranks import StubAttention, StubConfig, StubFfn, placement_of

    from step3_trt.runtime.core import EngineCore
    from step3_trt.runtime.ffn import LocalFfn

    cfg, dt = StubConfig(layers, hidden), getattr(torch, dtype)
    ffn = LocalFfn([StubFfn(cfg, dt, tokens, placement_of(cfg, 1), 0)])
    core = EngineCore(StubAttention(cfg, tokens, dt, 0), ffn, scheduler=None, eos_token_ids=())
    batch = [SimpleNamespace(num_tokens=tokens)]
    times = []
    for i in range(steps + 3):
        start = time.perf_counter()
        core.forward(batch)
        if i >= 3:
            times.append(time.perf_counter() - start)
    times.sort()
    return {"call_us": 1e6 * times[len(times) // 2] / layers}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--layers", type=int, default=61)
    p.add_argument("--micro-batches", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    rows = []
    for name, tokens, hidden, dtype in SHAPES:
        rows.append({"path": "in-process (LocalFfn)", "shape": name,
                     "attention": local(tokens, hidden, dtype, args.steps, args.layers)})
        for transport in ("mpi", "torch"):
            for a, f in ((1, 1), (2, 2)):
                r = job(transport, a, f, tokens, hidden, dtype, args.steps, args.layers,
                        args.micro_batches)
                rows.append({"path": f"AFD {a}A{f}F, {transport}", "shape": name, **r})
                att, ffn = r["attention"], r["ffn"]
                print(f"{rows[-1]['path']:>24} | {name:<26} | attention {att['call_us']:7.1f} "
                      f"us/call (host {att['host_us']:6.1f}) | FFN {ffn['call_us']:7.1f} "
                      f"(host {ffn['host_us']:6.1f})", flush=True)
    result = {"machine": cpu_name(), "cores": os.cpu_count(),
              "load_average": {"start": load_start, "end": os.getloadavg()},
              "budget_us_per_call": BUDGET_US, "layers": args.layers,
              "micro_batches": args.micro_batches, "steps": args.steps, "rows": rows}
    out = args.out or Path("perf/results") / f"host_overhead_{cpu_name().split()[0].lower()}.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"budget: {BUDGET_US:.0f} us per call and stage (50 ms / 183); wrote {out}")


if __name__ == "__main__":
    main()
