#!/usr/bin/env bash
# Runs the TensorRT-LLM backend's own client scripts, unchanged, against `step3-trt serve` on
# the bundled model (issue 19), and writes every command with its output and exit code to LOG:
# first with the TensorRT-LLM models not decoupled (serve's default), then with --decoupled.
# The expected outputs come from the reference model (`step3-trt generate --dtype float32
# --greedy`) and are passed to the scripts' own checks (--check-outputs, --check-output).
#   perf/serve/trtllm_clients.sh CHECKOUT ENGINES LOG
# CHECKOUT: tensorrtllm_backend at release r24.10, outside this repository (its
# inflight_batcher_llm/client and tools/ folders); ENGINES: the bundled model's engines
# (`step3-trt build`). Run with this project's environment on PATH/PYTHONPATH; the scripts
# import tritonclient, transformers and torch, and end_to_end_test.py also pandas and tabulate
# (PYTHONPATH may add them).
set -uo pipefail
CHECKOUT="$(cd "$1" && pwd)"; ENGINES="$(cd "$2" && pwd)"; LOG="$3"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="$(mktemp -d)"
PROMPT="Return a new list containing"
N=24
HTTP=18300; GRPC=18301; METRICS=18302
: > "$LOG"

log() { printf '%s\n' "$*" >> "$LOG"; }
run() {  # the command as typed, its output, its exit code
    log ""; log "\$ $*"
    (cd "$CHECKOUT" && timeout 600 "$@") >> "$LOG" 2>&1
    log "[exit code $?]"
}

# the reference model's greedy tokens and the scripts' expected values from them
step3-trt generate --checkpoint "$ROOT/models/step3-tiny" --dtype float32 --greedy \
    --max-new-tokens "$N" --prompt "$PROMPT" --json > "$WORK/reference.json"
python - "$WORK" "$ROOT/models/step3-tiny" <<'EOF'
import json, sys
from pathlib import Path
from step3_trt.tokenizer import load_tokenizer
work, tokenizer = Path(sys.argv[1]), load_tokenizer(sys.argv[2])
ref = json.loads((work / "reference.json").read_text())
prompt, out = ref["prompt_ids"], ref["output_ids"]
(work / "expected_ids.csv").write_text(",".join(map(str, prompt + out)) + "\n")
(work / "full.json").write_text(json.dumps([tokenizer.decode(prompt + out)]))
(work / "new.json").write_text(json.dumps([tokenizer.decode(out)]))
(work / "dataset.json").write_text(json.dumps([
    {"input": "Return a new list", "instruction": "containing", "output": " ".join(["w"] * 18)},
    {"input": "The socket", "instruction": "module", "output": " ".join(["w"] * 12)}]))
EOF
log "reference (step3-trt generate --checkpoint models/step3-tiny --dtype float32 --greedy" \
    "--max-new-tokens $N --prompt \"$PROMPT\" --json):"
cat "$WORK/reference.json" >> "$LOG"
log "tensorrtllm_backend checkout: $CHECKOUT ${TRTLLM_BACKEND_REF:-}"
log "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores; $(date -u +%FT%TZ)"

serve() {  # start serve with the given flags and wait until it is ready
    log ""; log "\$ step3-trt serve --engines ENGINES --http-port $HTTP --grpc-port $GRPC" \
        "--metrics-port $METRICS $*"
    step3-trt serve --engines "$ENGINES" --run-dir "$WORK/run" --http-port "$HTTP" \
        --grpc-port "$GRPC" --metrics-port "$METRICS" "$@" > "$WORK/serve.log" 2>&1 &
    SERVE=$!
    for _ in $(seq 600); do
        grep -q "TensorRT-LLM backend models" "$WORK/serve.log" && break
        kill -0 "$SERVE" 2>/dev/null || break
        sleep 1
    done
    cat "$WORK/serve.log" >> "$LOG"
}
stop() { kill -TERM "$SERVE"; wait "$SERVE"; log "[serve exit code $?]"; rm -rf "$WORK/run"; }

E2E=inflight_batcher_llm/client/end_to_end_grpc_client.py
IFB=inflight_batcher_llm/client/inflight_batcher_llm_client.py
serve
for model in ensemble tensorrt_llm_bls; do
    run python "$E2E" -u "127.0.0.1:$GRPC" -p "$PROMPT" -o "$N" --model-name "$model" \
        --check-outputs --expected-outputs "$(cat "$WORK/full.json")"
done
run python "$IFB" -u "127.0.0.1:$GRPC" --tokenizer-dir "$ROOT/models/step3-tiny" \
    --text "$PROMPT" --request-output-len "$N" --output-tokens-csv "$WORK/expected_ids.csv" \
    --check-output
run python tools/inflight_batcher_llm/end_to_end_test.py -i http -u "127.0.0.1:$HTTP" \
    --max-input-len 100 --dataset "$WORK/dataset.json"
stop
serve --decoupled
for model in ensemble tensorrt_llm_bls; do
    run python "$E2E" -u "127.0.0.1:$GRPC" -p "$PROMPT" -o "$N" --model-name "$model" -S \
        --check-outputs --expected-outputs "$(cat "$WORK/new.json")"
    run python "$E2E" -u "127.0.0.1:$GRPC" -p "$PROMPT" -o "$N" --model-name "$model" \
        --check-outputs --expected-outputs "$(cat "$WORK/full.json")"
done
run python "$IFB" -u "127.0.0.1:$GRPC" --tokenizer-dir "$ROOT/models/step3-tiny" \
    --text "$PROMPT" --request-output-len "$N" --output-tokens-csv "$WORK/expected_ids.csv" \
    --check-output -S
run python "$IFB" -u "127.0.0.1:$GRPC" --tokenizer-dir "$ROOT/models/step3-tiny" \
    --text "$PROMPT" --request-output-len 200 -S --stop-after-ms 300 --stop-via-request-cancel
stop
rm -rf "$WORK"
