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
step "Reference model (plain PyTorch), greedy, in float32 like the engines (the checkpoint is bfloat16)" \
    step3-trt generate --checkpoint "$MODEL" --dtype float32 --greedy --max-new-tokens 40 \
    "${PROMPTS[@]}"
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

# ---- Serving (step3-trt serve): tritonserver + the AFD job, a streamed completion over gRPC,
# a short perf_analyzer measurement, then SIGTERM and a check that no process is left.
HTTP_PORT="${HTTP_PORT:-8000}" GRPC_PORT="${GRPC_PORT:-8001}" METRICS_PORT="${METRICS_PORT:-8002}"
OPENAI_PORT="${OPENAI_PORT:-8003}"
bash perf/serve/install_tools.sh
rm -rf "$WORK/serve-run"
printf '\n\033[1m== %s\033[0m\n$ %s\n' \
    "Serve: tritonserver and the OpenAI-compatible server with the AFD job behind them, in the background" \
    "step3-trt serve --engines $WORK/engines --run-dir $WORK/serve-run --openai-port $OPENAI_PORT &"
step3-trt serve --engines "$WORK/engines" --run-dir "$WORK/serve-run" --http-port "$HTTP_PORT" \
    --grpc-port "$GRPC_PORT" --metrics-port "$METRICS_PORT" --openai-port "$OPENAI_PORT" &
SERVE_PID=$!
trap 'kill -TERM $SERVE_PID 2>/dev/null || true; wait $SERVE_PID 2>/dev/null || true' EXIT
step "Stream a completion over gRPC (waits for readiness)" \
    python perf/serve/stream.py --url "127.0.0.1:$GRPC_PORT" --wait 600 \
    --prompt "Return a new list containing" --max-tokens 40
step "Chat through the OpenAI API with the official openai client (streamed; reasoning split at </think>)" \
    python scripts/openai_chat.py --url "http://127.0.0.1:$OPENAI_PORT/v1" --wait 600
echo
echo '{"data": [{"text_input": ["Return a new list containing"], "max_tokens": [16], "stream": [true]}]}' \
    > "$WORK/pa_input.json"
step "perf_analyzer: gRPC streaming, 4 concurrent requests, 12 requests" \
    bash -c "source build/perf-tools/env.sh && perf_analyzer -m step3 -i grpc --streaming \
    -u 127.0.0.1:$GRPC_PORT --input-data $WORK/pa_input.json --concurrency-range 4 \
    --request-count 12 --stability-percentage 999 | tail -n 2"
step "Stop the server (SIGTERM) and check that no rank or server process is left" \
    kill -TERM "$SERVE_PID"
wait "$SERVE_PID"
trap - EXIT
for f in "$WORK"/serve-run/job/rank*.pid; do
    pid="$(cut -d' ' -f1 "$f")"
    if kill -0 "$pid" 2>/dev/null; then echo "left behind: $f (pid $pid)"; exit 1; fi
done
echo "serve stopped; no process left behind"
