#!/usr/bin/env bash
# Set up .venv if needed, then walk the pipeline on the bundled default model:
# inspect -> reference generation -> convert -> build engines -> in-process engines -> AFD job.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
MODEL="${MODEL:-models/step3-tiny}"
CONFIG="${CONFIG:-build_configs/tiny-cpu-2a2f.yaml}"
WORK="${WORK:-build/demo}"
PROMPTS=(--prompt "Return a new list containing" --prompt "The socket module provides")
step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "The released Step-3 config: parameters, activated parameters, KV bytes per token" \
    step3-trt inspect --preset step3
step "The bundled model, and its memory plan under the 2A2F build config" \
    step3-trt inspect "$MODEL" --config "$CONFIG"
step "Reference model (plain PyTorch), greedy" \
    step3-trt generate --checkpoint "$MODEL" --greedy --max-new-tokens 40 "${PROMPTS[@]}"
step "Convert: role checkpoints for 2 attention ranks + 2 expert-parallel FFN ranks" \
    step3-trt convert --checkpoint "$MODEL" --config "$CONFIG" --out "$WORK/roles" --overwrite
step "Build: torch.export + AOTInductor engines per role and rank (cached after the first run)" \
    step3-trt build --checkpoint "$WORK/roles" --config "$CONFIG" --out "$WORK/engines"
step "Engines in one process (same tokens as the reference)" \
    step3-trt generate --engines "$WORK/engines" --greedy --max-new-tokens 40 "${PROMPTS[@]}"
step "AFD job under mpiexec: coordinator + 2 attention ranks + 2 FFN ranks, 3 micro-batches" \
    step3-trt run --engines "$WORK/engines" --greedy --max-new-tokens 40 "${PROMPTS[@]}" \
    --trace "$WORK/afd-trace.json"

# ---- FP8: ModelOpt calibration -> FP8 checkpoint -> FP8 engines -> accuracy gate -> AFD job
FP8_CONFIG=build_configs/tiny-cpu-fp8.yaml
step "Quantize: ModelOpt FP8 calibration on data/calib.txt (weights, activations, K/V cache)" \
    step3-trt quantize --checkpoint "$MODEL" --out "$WORK/fp8" --kv-cache fp8 --overwrite
step "Convert + build the FP8 checkpoint (FP8 weights and an 8-bit KV cache in the engines)" \
    step3-trt convert --checkpoint "$WORK/fp8" --config "$FP8_CONFIG" --out "$WORK/fp8-roles" \
    --overwrite
step3-trt build --checkpoint "$WORK/fp8-roles" --config "$FP8_CONFIG" --out "$WORK/fp8-engines"
step "Accuracy gate: FP8 engines against the BF16 model on held-out text" \
    step3-trt eval --engines "$WORK/fp8-engines" --reference "$MODEL" --data data/heldout.txt \
    --min-top1 0.95 --max-kl 0.005 --max-ppl-ratio 1.01
step "FP8 AFD job under mpiexec" \
    step3-trt run --engines "$WORK/fp8-engines" --greedy --max-new-tokens 40 "${PROMPTS[@]}"
echo
echo "AFD timeline (open in chrome://tracing or ui.perfetto.dev): $WORK/afd-trace.json"
