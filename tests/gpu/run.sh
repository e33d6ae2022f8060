#!/usr/bin/env bash
# tests/gpu/run.sh - the CUDA backend's checks and benchmarks on a GPU machine,
# in one call (about 5-7 minutes on an H100 with 16 cores). Everything it
# measures or checks lands in $OUT (default ./gpu-out):
#   summary.txt          one line per step: PASS / FAIL / SKIP and the key numbers
#   nvidia-smi.txt       the device
#   configure.log, build.log
#   gen-0.6B.log, gen-4B.log   random checkpoints (make_random_qwen3.py, bf16)
#   ctest.log            gpu_* tests (attention vs CPU, forward vs CPU on the fixture,
#                        greedy tokens, device block bytes) + the backend unit test
#   cli-auto.log, cli-cuda.log  kvtier-worker run: auto picks cuda; --backend cuda --chat
#   forward-models.log   logits CPU vs CUDA on random Qwen3-0.6B and -4B shapes
#   memcheck-*.log       compute-sanitizer --tool memcheck on both GPU test programs
#                        (the forward one with KVTIER_GPU_QUICK=1: fixture logits, bf16)
#   gpu_bench-4B.log/json  decode tok/s at 1k and 8k, prefill tok/s, HBM roofline
#                        fraction, tiering at 20% hot: decode ratio, PCIe bytes/token
#   engine_bench-0.6B.log  engine_bench --backend cuda
# Steps run in order of importance; none starts after KVTIER_GPU_BUDGET_S (450 s).
# Usage: OUT=DIR tests/gpu/run.sh [--no-4b]
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
B=${KVTIER_GPU_BUILD:-build-gpu}
CK=${KVTIER_GPU_CKPT:-/tmp/kvtier-gpu-ckpt}
NO4B=0
[ "${1:-}" = "--no-4b" ] && NO4B=1
export PATH=$PATH:/usr/local/cuda/bin
J=$(nproc)
t0=$(date +%s)
log() { echo "[$(($(date +%s) - t0))s] $*" | tee -a "$OUT/summary.txt"; }
BUDGET=${KVTIER_GPU_BUDGET_S:-450} # no step starts after this many seconds (the call must end < 8 min)
step() { # step NAME LOG TIMEOUT CMD...: runs, logs PASS/FAIL/SKIP(77)
  local name=$1 lg=$2 to=$3
  shift 3
  local left=$((BUDGET + 60 - $(date +%s) + t0))
  if [ "$left" -le 60 ]; then
    log "SKIP $name (time budget of ${BUDGET}s spent)"
    return 0
  fi
  [ "$to" -gt "$left" ] && to=$left
  timeout "$to" "$@" > "$OUT/$lg" 2>&1
  local rc=$?
  case $rc in
    0) log "PASS $name" ;;
    77) log "SKIP $name ($(tail -1 "$OUT/$lg"))" ;;
    124) log "FAIL $name (timeout ${to}s, see $lg)" ;;
    *) log "FAIL $name (exit $rc, see $lg)" ;;
  esac
  return $rc
}

: > "$OUT/summary.txt"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || log "nvidia-smi failed"
log "start on $(hostname), $J cores, $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)"

# random checkpoints, in the background while the build runs
mkdir -p "$CK"
gen() { # gen SHAPE
  [ -f "$CK/$1/model.safetensors" ] && return 0
  /usr/bin/python3 tests/fixtures/make_random_qwen3.py --shape "$1" --out "$CK/$1" > "$OUT/gen-$1.log" 2>&1
}
(gen 0.6B; [ $NO4B = 1 ] || gen 4B) &
genpid=$!

step configure configure.log 120 cmake -S . -B "$B" -DKVTIER_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CUDA_ARCHITECTURES=90 || { log "cannot configure: see configure.log"; exit 1; }
grep -m1 "kvtier: CUDA backend" "$OUT/configure.log" | tee -a "$OUT/summary.txt"
step build build.log 360 cmake --build "$B" -j"$J" --target test_cuda_attention test_cuda_forward \
  gpu_bench engine_bench kvtier-worker test_backend || exit 1

step ctest ctest.log 240 ctest --test-dir "$B" --output-on-failure -V -R 'gpu_|engine_test_backend'
grep -E "Test +#[0-9]+: " "$OUT/ctest.log" | sed 's/^/  /' >> "$OUT/summary.txt"
grep -E "^[0-9]+: +(prompt|[0-9]+-token)" "$OUT/ctest.log" | head -20 >> "$OUT/summary.txt"
# the CLI on the GPU: auto picks cuda, explicit cuda runs, the JSON says so
fx=tests/fixtures/tiny-qwen3
step cli-auto cli-auto.log 60 sh -c "'$B/worker/kvtier-worker' run --model $fx --prompt-ids 1,2,3,4,5 \
  --max-new-tokens 16 --json | grep -q '\"backend\":[[:space:]]*\"cuda\"'"
step cli-cuda cli-cuda.log 60 "$B/worker/kvtier-worker" run --model $fx --backend cuda --chat \
  --prompt "The capital of France is" --max-new-tokens 24

wait $genpid
models=""
[ -f "$CK/0.6B/model.safetensors" ] && models="$CK/0.6B" || log "no 0.6B checkpoint (gen-0.6B.log)"
if [ $NO4B = 0 ]; then
  [ -f "$CK/4B/model.safetensors" ] && models="$models:$CK/4B" || log "no 4B checkpoint (gen-4B.log)"
fi
if [ -n "$models" ]; then
  KVTIER_GPU_MODELS=${models#:} step forward-models forward-models.log 240 \
    "$B/tests/gpu/test_cuda_forward"
  grep -E "token prefill|^\s+/" "$OUT/forward-models.log" >> "$OUT/summary.txt"
fi
big=$CK/4B
[ -f "$big/model.safetensors" ] || big=$CK/0.6B
if [ -f "$big/model.safetensors" ]; then
  step gpu_bench "gpu_bench-$(basename "$big").log" 300 "$B/tests/gpu/gpu_bench" --model "$big" \
    --contexts 1024,8192 --steps 32 --prefill 2048 --tier-prompt 2048 --tier-tokens 128 --budget 0.2 \
    --json "$OUT/gpu_bench-$(basename "$big").json"
  grep -vE "^\s*$" "$OUT/gpu_bench-$(basename "$big").log" >> "$OUT/summary.txt"
fi
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/compute-sanitizer/compute-sanitizer \
  /opt/nvidia/*/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$CS" ]; then
  step memcheck-attention memcheck-attention.log 150 "$CS" --tool memcheck --error-exitcode 9 \
    "$B/tests/gpu/test_cuda_attention"
  KVTIER_GPU_QUICK=1 step memcheck-forward memcheck-forward.log 180 "$CS" --tool memcheck --error-exitcode 9 \
    "$B/tests/gpu/test_cuda_forward"
  grep -h "ERROR SUMMARY" "$OUT"/memcheck-*.log >> "$OUT/summary.txt"
else
  log "SKIP memcheck (compute-sanitizer not found on PATH or under /usr/local/cuda*)"
fi

if [ -f "$CK/0.6B/model.safetensors" ]; then
  step engine_bench "engine_bench-0.6B.log" 90 "$B/tests/bench/engine_bench" --model "$CK/0.6B" \
    --backend cuda --contexts 1024,8192 --steps 16 --prefill 1024 --stream-mib 256
fi
log "done in $(($(date +%s) - t0)) s"
