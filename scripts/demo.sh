#!/usr/bin/env bash
# Set up .venv if needed, then walk the pipeline on the bundled default model.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
MODEL="${MODEL:-models/step3-tiny}"
step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "The released Step-3 config: parameters, activated parameters, KV bytes per token" \
    step3-trt inspect --preset step3
step "The bundled default model (Step-3 architecture, trained on Python's own docs)" \
    step3-trt inspect "$MODEL"
step "Greedy generation from the bundled model" \
    step3-trt generate --checkpoint "$MODEL" --greedy --max-new-tokens 40 \
    --prompt "Return a new list containing" --prompt "The socket module provides"
