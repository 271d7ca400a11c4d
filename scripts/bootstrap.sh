#!/usr/bin/env bash
# Create the project environment in .venv (inside the checkout) and install step3-trt into it.
# Idempotent: re-runs only when pyproject.toml or this script changed. Sourced by demo.sh/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
TORCH_CPU_PIN="torch==2.13.0"   # the CPU build served to this project's machines (TOOLCHAIN.md)

if [ ! -x .venv/bin/python ]; then
    echo "[bootstrap] creating .venv"
    if "$PYTHON" -c 'import torch' 2>/dev/null; then
        # A machine that brings its own torch (a GPU box): reuse it rather than download another.
        "$PYTHON" -m venv --system-site-packages .venv
    else
        "$PYTHON" -m venv .venv
    fi
fi
stamp=.venv/.step3-trt-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/bootstrap.sh -nt "$stamp" ]; then
    if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
        echo "[bootstrap] installing $TORCH_CPU_PIN (CPU build)"
        .venv/bin/python -m pip install -q "$TORCH_CPU_PIN"
    fi
    echo "[bootstrap] installing step3-trt and its dependencies into .venv"
    .venv/bin/python -m pip install -q -e '.[test]'
    .venv/bin/python -c 'import step3_trt, torch, safetensors, tokenizers'
    touch "$stamp"
fi
export PATH="$ROOT/.venv/bin:$PATH"
