"""Plot a serving benchmark JSON (perf/serve/bench.py) to a PNG next to it:
TTFT, inter-token latency, output tokens/s and request throughput against concurrency.

    python perf/serve/plot.py perf/results/serve_cpu.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(path: str) -> None:
    results = json.loads(Path(path).read_text())
    genai, pa = results["genai_perf"], results["perf_analyzer"]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    panels = [
        (axes[0, 0], "time to first token (ms)", [("genai-perf avg", genai, "ttft_avg_ms"),
                                                  ("genai-perf p99", genai, "ttft_p99_ms")]),
        (axes[0, 1], "inter-token latency (ms)",
         [("genai-perf avg", genai, "inter_token_latency_avg_ms"),
          ("genai-perf p99", genai, "inter_token_latency_p99_ms")]),
        (axes[1, 0], "output tokens/s", [("genai-perf", genai, "output_tokens_per_s")]),
        (axes[1, 1], "requests/s", [("genai-perf", genai, "requests_per_s"),
                                    ("perf_analyzer", pa, "requests_per_s")]),
    ]
    for ax, title, series in panels:
        for label, rows, key in series:
            if rows:
                ax.plot([r["concurrency"] for r in rows], [r[key] for r in rows], "o-",
                        label=label)
        ax.set_title(title)
        ax.set_xlabel("concurrent streaming requests")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"step3-trt serve on {results['cpu']} ({results['cores']} cores): "
                 f"{results['model']}\n{results['input_tokens']} input / "
                 f"{results['output_tokens']} output tokens per request", fontsize=10)
    fig.tight_layout()
    out = Path(path).with_suffix(".png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1])
