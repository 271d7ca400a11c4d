#!/usr/bin/env bash
# Install the serving benchmark tools into build/perf-tools (idempotent; TOOLCHAIN.md):
#   perf_analyzer  from the tritonclient==2.48.0 manylinux wheel (its bundled binary; the
#                  standalone perf-analyzer wheels need a newer glibc), plus Debian's libb64-0d
#                  and libcudart.so.12 from the nvidia-cuda-runtime-cu12 wheel (no GPU needed);
#   genai-perf     in its own venv (its pins conflict with the project's), driving that binary;
#   matplotlib     in the same venv, for the plots.
# Prints nothing but progress; afterwards source build/perf-tools/env.sh for PATH and
# LD_LIBRARY_PATH.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="${TOOLS:-$ROOT/build/perf-tools}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
mkdir -p "$TOOLS/wheels" "$TOOLS/bin" "$TOOLS/lib"

if ! ldconfig -p | grep -q 'libb64\.so\.0d'; then
    echo "[perf-tools] installing Debian libb64-0d"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libb64-0d >/dev/null
fi

if [ ! -x "$TOOLS/bin/perf_analyzer" ]; then
    echo "[perf-tools] extracting perf_analyzer from the tritonclient 2.48.0 wheel"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
        --python-version 3.11 -d "$TOOLS/wheels" "tritonclient==2.48.0"
    whl="$(ls "$TOOLS"/wheels/tritonclient-2.48.0-*.whl | head -n1)"
    "$PY" -m zipfile -e "$whl" "$TOOLS/wheels/tritonclient"
    install -m 755 "$TOOLS/wheels/tritonclient/tritonclient-2.48.0.data/data/bin/perf_analyzer" \
        "$TOOLS/bin/perf_analyzer"
fi

if [ ! -e "$TOOLS/lib/libcudart.so.12" ]; then
    echo "[perf-tools] fetching libcudart.so.12 (nvidia-cuda-runtime-cu12 wheel)"
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$TOOLS/wheels" \
        "nvidia-cuda-runtime-cu12==12.6.77"
    whl="$(ls "$TOOLS"/wheels/nvidia_cuda_runtime_cu12-*.whl | head -n1)"
    "$PY" -m zipfile -e "$whl" "$TOOLS/wheels/cudart"
    cp "$TOOLS/wheels/cudart/nvidia/cuda_runtime/lib/libcudart.so.12" "$TOOLS/lib/"
fi

if [ ! -x "$TOOLS/venv/bin/genai-perf" ]; then
    echo "[perf-tools] installing genai-perf and matplotlib into $TOOLS/venv"
    "$PY" -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/python" -m pip install -q "genai-perf==0.0.16" matplotlib
fi

ln -sf "$TOOLS/venv/bin/genai-perf" "$TOOLS/bin/genai-perf"  # not the venv's python on PATH
cat > "$TOOLS/env.sh" <<ENV
export PATH="$TOOLS/bin:\$PATH"
export LD_LIBRARY_PATH="$TOOLS/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
ENV
source "$TOOLS/env.sh"
perf_analyzer --version >/dev/null 2>&1 || perf_analyzer --help >/dev/null 2>&1 || {
    echo "[perf-tools] perf_analyzer does not run:"; perf_analyzer --help 2>&1 | head -n 5; exit 1; }
echo "[perf-tools] ready: $TOOLS (source $TOOLS/env.sh)"
