#!/usr/bin/env bash
# Serving benchmarks on this machine: install perf_analyzer + genai-perf (build/perf-tools),
# build the bundled model's 2A2F engines if needed, then sweep concurrency with both tools
# against `step3-trt serve` and write perf/results/serve_<cpu>.json and .png.
#   CONCURRENCY="1 2 4" perf/serve/run_all.sh       (default: 1 2 4 8 16)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
source scripts/bootstrap.sh
bash perf/serve/install_tools.sh
source build/perf-tools/env.sh
ENGINES="${ENGINES:-build/serve/engines}"
CONFIG=build_configs/tiny-cpu-2a2f.yaml
if [ ! -f "$ENGINES/manifest.json" ]; then
    step3-trt convert --checkpoint models/step3-tiny --config "$CONFIG" --out build/serve/roles --overwrite
    step3-trt build --checkpoint build/serve/roles --config "$CONFIG" --out "$ENGINES"
fi
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//; s/[^A-Za-z0-9]\+/-/g; s/-$//' | tr 'A-Z' 'a-z')"
OUT="${OUT:-perf/results/serve_${CPU:-cpu}.json}"
# shellcheck disable=SC2086
.venv/bin/python perf/serve/bench.py --engines "$ENGINES" --out "$OUT" --concurrency ${CONCURRENCY:-1 2 4 8 16}
build/perf-tools/venv/bin/python perf/serve/plot.py "$OUT"
