#!/usr/bin/env bash
# tests/gpu/run_on_device.sh — everything GPU for the MoE runners in one device call. Builds
# nothing: it expects a CUDA build carried in BUILD (default build-cuda, configured with
# -DSPECMOE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a). Run from the repository root:
#
#     bash tests/gpu/run_on_device.sh            # logs under $OUT (default ./gpu-out)
#     STAGES="tests bench" bash tests/gpu/run_on_device.sh
#
# Stages (all by default): tests (ctest -L gpu), sanitizer (compute-sanitizer memcheck on
# test_gpu_runners, racecheck on test_gpu_kernels), bench (specmoe bench moe-layer for both
# presets) and peer (bench/peer_grouped_mm.py, torch._grouped_mm, same shapes and routing).
# Every stage writes its full log to $OUT/<stage>*.log; a short summary is printed last and kept
# in $OUT/SUMMARY.txt. Exit status: non-zero when a test or sanitizer run failed.
set -u
ROOT=$(pwd)
BUILD=${BUILD:-build-cuda}
OUT=${OUT:-$ROOT/gpu-out}
STAGES=${STAGES:-"tests sanitizer bench peer"}
TOKENS=${TOKENS:-1,2,4,8,16,32,64,128,256,512,1024,2048,4096}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$ROOT/$BUILD:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export SPECMOE_REQUIRE_GPU=1        # a missing GPU fails the tests instead of skipping them
export NCCL_NVLS_ENABLE=0
summary="$OUT/SUMMARY.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
status=0

if [ ! -x "$BUILD/specmoe" ] || [ ! -x "$BUILD/tests/test_gpu_runners" ]; then
  note "run_on_device: no CUDA build in $BUILD (carry it: run(..., carry=[\"$BUILD\"]))"
  exit 2
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
note "device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
note "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)  date: $(date -u +%Y-%m-%dT%H:%MZ)"

# ctest files hold the absolute source path of the build machine; make it resolve here.
src_dir=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BUILD/CMakeCache.txt" 2>/dev/null)
if [ -n "$src_dir" ] && [ "$src_dir" != "$ROOT" ] && [ ! -e "$src_dir" ]; then
  mkdir -p "$(dirname "$src_dir")" 2>/dev/null && ln -s "$ROOT" "$src_dir" 2>/dev/null \
    && note "linked $src_dir -> $ROOT for ctest"
fi

gpu_tests="test_gpu_kernels test_gpu_runners test_gpu_model"
run_tests() {
  if [ -n "$src_dir" ] && [ -e "$src_dir" ]; then
    (cd "$BUILD" && timeout 300 ctest -L gpu --output-on-failure) > "$OUT/tests.log" 2>&1
    local rc=$?
    note "ctest -L gpu: rc=$rc  $(grep -E 'tests passed|tests failed' "$OUT/tests.log" | tail -1)"
    grep -E "^ *[0-9]+/[0-9]+ Test" "$OUT/tests.log" | tee -a "$summary"
    return $rc
  fi
  # fallback: run the binaries directly from the repository root
  local rc=0
  for t in $gpu_tests; do
    timeout 300 "$BUILD/tests/$t" > "$OUT/tests_$t.log" 2>&1
    local r=$?
    note "$t (direct): rc=$r  $(tail -1 "$OUT/tests_$t.log")"
    [ $r -ne 0 ] && rc=1
  done
  return $rc
}

find_sanitizer() {
  command -v compute-sanitizer 2>/dev/null && return
  for d in /usr/local/cuda/bin /usr/local/cuda-*/bin /opt/nvidia/*/bin; do
    [ -x "$d/compute-sanitizer" ] && { echo "$d/compute-sanitizer"; return; }
  done
}

for stage in $STAGES; do
  case $stage in
  tests)
    run_tests || status=1
    ;;
  sanitizer)
    cs=$(find_sanitizer)
    if [ -z "$cs" ]; then note "compute-sanitizer: not found on this machine"; continue; fi
    timeout 200 "$cs" --tool memcheck --error-exitcode 9 "$BUILD/tests/test_gpu_runners" \
      > "$OUT/sanitizer_memcheck.log" 2>&1
    rc=$?; note "compute-sanitizer memcheck test_gpu_runners: rc=$rc  $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer_memcheck.log" | tail -1)"
    [ $rc -ne 0 ] && status=1
    timeout 240 "$cs" --tool racecheck --error-exitcode 9 "$BUILD/tests/test_gpu_kernels" \
      > "$OUT/sanitizer_racecheck.log" 2>&1
    rc=$?; note "compute-sanitizer racecheck test_gpu_kernels: rc=$rc  $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/sanitizer_racecheck.log" | tail -1)"
    [ $rc -ne 0 ] && status=1
    ;;
  bench)
    for preset in qwen3-30b-a3b mixtral-8x7b; do
      timeout 300 "$BUILD/specmoe" bench moe-layer --preset $preset --tokens "$TOKENS" \
        > "$OUT/bench_$preset.txt" 2> "$OUT/bench_$preset.err"
      note "bench moe-layer $preset: rc=$?"
    done
    ;;
  peer)
    for preset in qwen3-30b-a3b mixtral-8x7b; do
      timeout 300 python3 bench/peer_grouped_mm.py --preset $preset --tokens "$TOKENS" \
        > "$OUT/peer_$preset.txt" 2> "$OUT/peer_$preset.err"
      note "peer torch._grouped_mm $preset: rc=$?"
    done
    ;;
  *) note "unknown stage $stage" ;;
  esac
done

# short table last: ours next to the peer, per preset
for preset in qwen3-30b-a3b mixtral-8x7b; do
  for f in "$OUT/bench_$preset.txt" "$OUT/peer_$preset.txt"; do
    [ -s "$f" ] && { echo; cat "$f"; } | tee -a "$summary"
  done
done
exit $status
