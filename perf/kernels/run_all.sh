#!/usr/bin/env bash
# One device call: GPU tests of the plugins, then every kernel benchmark. Run from the repo root:
#   TAG=h200 bash perf/kernels/run_all.sh [tests|mfa|moe|fp8 ...]   (default: all); results under
#   $OUT (default perf/results), file names ending in _$TAG (the GPU).
export PYTHONPATH=. PYTHONUNBUFFERED=1
OUT=${OUT:-perf/results}
TAG=${TAG:?set TAG to the GPU, e.g. TAG=h200}
mkdir -p "$OUT"
stages=${*:-tests mfa moe fp8}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
for s in $stages; do
  case $s in
    tests) STEP3_MFA_TUNE=0 timeout 150 python3 -m pytest -q -n 4 -m gpu tests/plugins --noconftest -p no:cacheprovider \
             -W ignore::DeprecationWarning 2>&1 | tee "$OUT/kernels_pytest_$TAG.log" | tail -25 ;;
    mfa) timeout 150 python3 perf/kernels/bench_mfa_decode.py --out "$OUT/kernels_mfa_decode_$TAG.json" \
           > "$OUT/kernels_mfa_decode_$TAG.log" 2>&1; tail -45 "$OUT/kernels_mfa_decode_$TAG.log" ;;
    moe) timeout 90 python3 perf/kernels/bench_moe_experts.py --out "$OUT/kernels_moe_experts_$TAG.json" \
           > "$OUT/kernels_moe_experts_$TAG.log" 2>&1; tail -60 "$OUT/kernels_moe_experts_$TAG.log" ;;
    fp8) timeout 60 python3 perf/kernels/bench_fp8_linear.py --out "$OUT/kernels_fp8_linear_$TAG.json" \
           > "$OUT/kernels_fp8_linear_$TAG.log" 2>&1; tail -12 "$OUT/kernels_fp8_linear_$TAG.log" ;;
  esac
done
