#!/usr/bin/env bash
# tests/gpu/run_k7_on_device.sh — one device call validating and timing the grouped MoE kernels
# (issue 7: decode-mma, prefill-mma next to decode, prefill). Builds nothing: it runs a carried
# slim build, BUILD (default build-k7-slim) holding specmoe and tests/test_gpu_* from a build
# configured with -DSPECMOE_CUDA=ON (sm_90a). From the repository root:
#
#     BUILD=build-k7-slim bash tests/gpu/run_k7_on_device.sh      # run(..., carry=["build-k7-slim"])
#
# Stages, most important first, each under a timeout cut to what is left of a 145 s budget:
#   1. test_gpu_kernels (every regime vs the CPU twin), test_gpu_runners twice (default AUTO, which takes the mma kernels,
#      then SPECMOE_MOE_DECODE=simt SPECMOE_MOE_PREFILL=wmma which keeps AUTO to the older kernels,
#      including the graph-replay test);
#   2. specmoe bench moe-layer, both presets, every regime, tokens 1,2,4,8,16,64,512,4096;
#   3. compute-sanitizer memcheck on test_gpu_kernels, then the remaining test_gpu_* binaries;
#   4. if time is left and torch imports: bench/peer_grouped_mm.py on the same points.
# Everything lands in $OUT/k7_logs.tar.gz (logs) and $OUT/SUMMARY.txt (also printed).
# Exit status: non-zero when a test or the sanitizer failed or a stage did not run.
set -u
ROOT=$(pwd)
BUILD=${BUILD:-build-k7-slim}
OUT=${OUT:-$ROOT/gpu-out}
TOKENS=${TOKENS:-1,2,4,8,16,64,512,4096}
REGIMES=${REGIMES:-auto,decode,decode-mma,prefill,prefill-mma}
BUDGET=${BUDGET:-145}
LOGS=$(mktemp -d)
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$ROOT/$BUILD:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export SPECMOE_REQUIRE_GPU=1 # a missing GPU fails the tests instead of skipping them
summary="$LOGS/SUMMARY.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
status=0
start=$SECONDS

# timeout for a stage: at most $1 seconds, and never past the budget; 0 = no time left
limit() {
  local left=$((BUDGET - (SECONDS - start)))
  [ "$left" -gt "$1" ] && left=$1
  [ "$left" -lt 3 ] && left=0
  echo "$left"
}

# run NAME LIMIT CMD...: log to $LOGS/NAME.log, note rc and the last line
run() {
  local name=$1 t
  t=$(limit "$2")
  shift 2
  if [ "$t" -eq 0 ]; then
    note "$name: NOT RUN (budget of ${BUDGET}s spent)"
    return 3
  fi
  local t0=$SECONDS
  timeout "$t" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  note "$name: rc=$rc in $((SECONDS - t0))s (limit ${t}s)  $(grep -v '^$' "$LOGS/$name.log" | tail -1 | cut -c1-160)"
  return $rc
}

if [ ! -x "$BUILD/specmoe" ] || [ ! -x "$BUILD/tests/test_gpu_kernels" ]; then
  note "run_k7_on_device: no build in $BUILD (carry a folder with specmoe and tests/test_gpu_*)"
  exit 2
fi
nvidia-smi > "$LOGS/nvidia-smi.txt" 2>&1 || true
note "device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
note "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)  dirty files: $(git status --porcelain 2>/dev/null | wc -l)  date: $(date -u +%Y-%m-%dT%H:%MZ)"

# 1. tests (fixture paths are relative to the repository root)
run test_gpu_kernels 40 "$BUILD/tests/test_gpu_kernels" || status=1
run test_gpu_runners 25 "$BUILD/tests/test_gpu_runners" || status=1
run test_gpu_runners_old_kernels 25 env SPECMOE_MOE_DECODE=simt SPECMOE_MOE_PREFILL=wmma "$BUILD/tests/test_gpu_runners" || status=1

# 2. the layer benchmark, every regime
for preset in mixtral-8x7b qwen3-30b-a3b; do
  run "bench_$preset" 30 "$BUILD/specmoe" bench moe-layer --preset "$preset" --tokens "$TOKENS" --regimes "$REGIMES" \
    || status=1
done

# 3. memcheck on the kernel tests
cs=$(command -v compute-sanitizer 2>/dev/null)
for d in /usr/local/cuda/bin /usr/local/cuda-*/bin /opt/nvidia/*/bin; do
  [ -z "$cs" ] && [ -x "$d/compute-sanitizer" ] && cs="$d/compute-sanitizer"
done
if [ -n "$cs" ]; then
  run memcheck_test_gpu_kernels 50 "$cs" --tool memcheck --error-exitcode 9 "$BUILD/tests/test_gpu_kernels" || status=1
  note "  $(grep -E 'ERROR SUMMARY' "$LOGS/memcheck_test_gpu_kernels.log" | tail -1)"
else
  note "compute-sanitizer: not found on this machine"
  status=1
fi

# 3b. remaining tests: the models through the runners, default and with the mma kernels in AUTO
for t in "$BUILD"/tests/test_gpu_*; do
  name=$(basename "$t")
  case $name in test_gpu_kernels | test_gpu_runners) continue ;; esac
  run "$name" 20 "$t" || status=1
done
[ -x "$BUILD/tests/test_gpu_model" ] && { run test_gpu_model_old_kernels 20 env SPECMOE_MOE_DECODE=simt SPECMOE_MOE_PREFILL=wmma \
  "$BUILD/tests/test_gpu_model" || status=1; }

# 4. the peer on the same points, if torch is there and time is left
if [ "$(limit 30)" -gt 20 ] && timeout 20 python3 -c "import torch; assert torch.cuda.is_available()" 2> /dev/null; then
  for preset in mixtral-8x7b qwen3-30b-a3b; do
    run "peer_$preset" 25 python3 bench/peer_grouped_mm.py --preset "$preset" --tokens "$TOKENS" || true
  done
else
  note "peer torch._grouped_mm: skipped (no torch with CUDA, or no time left)"
fi

note "total: $((SECONDS - start))s of ${BUDGET}s; exit status $status"
for f in "$LOGS"/bench_*.log "$LOGS"/peer_*.log; do
  [ -s "$f" ] && { echo; echo "== $(basename "$f")"; cat "$f"; } >> "$summary"
done
sed -n '/^== /,$p' "$summary"
cp "$summary" "$OUT/SUMMARY.txt"
tar -czf "$OUT/k7_logs.tar.gz" -C "$LOGS" .
rm -rf "$LOGS"
exit $status
