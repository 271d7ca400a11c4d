"""Serving benchmarks against a live `step3-trt serve`: perf_analyzer (gRPC streaming, request
throughput and latency) and genai-perf (`--endpoint-type kserve --backend tensorrtllm`, the
Triton + TensorRT-LLM-backend client path: TTFT, inter-token latency, output tokens/s) at
several concurrencies. Writes one JSON with both sweeps, labelled with the CPU.

    python perf/serve/bench.py --engines build/serve/engines --out perf/results/serve_cpu.json

Needs perf/serve/install_tools.sh first (perf_analyzer and genai-perf on PATH).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.serve.server import Server  # noqa: E402 - the same supervised server the tests use


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def perf_analyzer(server: Server, concurrency: int, work: Path, input_tokens: int,
                  output_tokens: int, requests: int) -> dict:
    data = work / "pa_input.json"
    prompt = " ".join(["word"] * (input_tokens - 1))  # BOS + one token per word
    data.write_text(json.dumps({"data": [{"text_input": [prompt], "max_tokens": [output_tokens],
                                          "min_length": [output_tokens], "stream": [True]}]}))
    out = work / f"pa_c{concurrency}.csv"
    cmd = ["perf_analyzer", "-m", "step3", "-i", "grpc", "--streaming", "-u", server.grpc,
           "--input-data", str(data), "--concurrency-range", str(concurrency),
           "--request-count", str(requests), "--stability-percentage", "999",  # one fixed window
           "-f", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    row = next(csv.DictReader(out.open()))
    return {"concurrency": concurrency, "requests_per_s": float(row["Inferences/Second"]),
            "responses_per_s": float(row["Response Throughput"]),  # streamed token responses
            "latency_p50_ms": float(row["p50 latency"]) / 1e3,
            "latency_p90_ms": float(row["p90 latency"]) / 1e3,
            "latency_p99_ms": float(row["p99 latency"]) / 1e3,
            "output_tokens": output_tokens, "input_tokens": input_tokens}


def genai_perf(server: Server, concurrency: int, work: Path, tokenizer: Path, input_tokens: int,
               output_tokens: int, requests: int) -> dict:
    artifacts = work / f"genai_c{concurrency}"
    shutil.rmtree(artifacts, ignore_errors=True)
    cmd = ["genai-perf", "profile", "-m", "step3", "--endpoint-type", "kserve",
           "--backend", "tensorrtllm", "--streaming", "-u", server.grpc,
           "--concurrency", str(concurrency), "--request-count", str(requests),
           "--num-dataset-entries", "16",  # no warm-up option: perf_analyzer 2.48 lacks it
           "--synthetic-input-tokens-mean", str(input_tokens),
           "--synthetic-input-tokens-stddev", "0", "--output-tokens-mean", str(output_tokens),
           "--output-tokens-mean-deterministic", "--tokenizer", str(tokenizer),
           "--artifact-dir", str(artifacts), "--random-seed", "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=work)
    found = list(artifacts.rglob("*genai_perf.json"))
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"genai-perf failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    stats = json.loads(found[0].read_text())

    def metric(name: str, key: str = "avg") -> float:
        return float(stats[name][key])

    return {"concurrency": concurrency,
            "ttft_avg_ms": metric("time_to_first_token"),
            "ttft_p99_ms": metric("time_to_first_token", "p99"),
            "inter_token_latency_avg_ms": metric("inter_token_latency"),
            "inter_token_latency_p99_ms": metric("inter_token_latency", "p99"),
            "output_tokens_per_s": metric("output_token_throughput"),
            "requests_per_s": metric("request_throughput"),
            "output_tokens_per_request_avg": metric("output_sequence_length"),
            "input_tokens_per_request_avg": metric("input_sequence_length")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--engines", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="results JSON")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "serve-bench")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--input-tokens", type=int, default=32)
    p.add_argument("--output-tokens", type=int, default=32)
    p.add_argument("--tools", nargs="+", default=["perf_analyzer", "genai-perf"],
                   choices=["perf_analyzer", "genai-perf"])
    args = p.parse_args(argv)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    server = Server(args.engines.resolve(), args.work / "run").start()
    results = {"cpu": cpu_name(), "cores": len(__import__("os").sched_getaffinity(0)),
               "engines": str(args.engines), "model": "step3-tiny (bundled), 2 attention + 2 FFN "
               "ranks, float32", "date": time.strftime("%Y-%m-%d"),
               "input_tokens": args.input_tokens, "output_tokens": args.output_tokens,
               "perf_analyzer": [], "genai_perf": []}
    try:
        for c in args.concurrency:
            n = max(8, 2 * c)
            if "perf_analyzer" in args.tools:
                results["perf_analyzer"].append(perf_analyzer(
                    server, c, args.work, args.input_tokens, args.output_tokens, n))
                print("perf_analyzer", results["perf_analyzer"][-1], flush=True)
            if "genai-perf" in args.tools:
                results["genai_perf"].append(genai_perf(
                    server, c, args.work, args.engines.resolve() / "tokenizer", args.input_tokens,
                    args.output_tokens, n))
                print("genai-perf", results["genai_perf"][-1], flush=True)
    finally:
        server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
