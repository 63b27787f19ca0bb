#!/usr/bin/env bash
# tests/gpu/run_forward_on_device.sh — the GPU forward in one device call: its tests, a
# compute-sanitizer memcheck of the kernel tests, generate on the GPU (plain and speculative) and
# `specmoe bench decode`. Builds nothing: carry a slim build (BUILD, default build-gslim) holding
# specmoe, test_gpu_forward and test_gpu_model_ops, e.g.
#   mkdir build-gslim && cp build-gfwd/specmoe build-gfwd/tests/test_gpu_{forward,model_ops} build-gslim/ && strip build-gslim/*
#   run(command="bash tests/gpu/run_forward_on_device.sh", carry=["build-gslim"])
set -u
B=${BUILD:-build-gslim}
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" SPECMOE_REQUIRE_GPU=1
status=0
for t in test_gpu_model_ops test_gpu_forward; do
  timeout 60 "$B/$t" > "$OUT/$t.log" 2>&1; rc=$?; echo "$t rc=$rc: $(tail -1 "$OUT/$t.log")"; [ $rc -ne 0 ] && status=1
done
CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [ -n "$CS" ]; then
  timeout 60 "$CS" --tool memcheck --error-exitcode 9 "$B/test_gpu_model_ops" > "$OUT/memcheck.log" 2>&1
  rc=$?; echo "memcheck test_gpu_model_ops rc=$rc: $(grep 'ERROR SUMMARY' "$OUT/memcheck.log")"; [ $rc -ne 0 ] && status=1
fi
timeout 30 "$B/specmoe" generate --model experiments/models/target --draft experiments/models/draft --k 4 --device cuda \
  --prompt "Once upon a time" --max-new-tokens 48 --json > "$OUT/generate_spec.json" 2>&1; echo "generate spec rc=$?"
timeout 120 "$B/specmoe" bench decode --preset qwen3-30b-a3b --batch 1,4,16,64 > "$OUT/bench_decode.txt" 2>&1
echo "bench decode rc=$?"; cat "$OUT/bench_decode.txt"
exit $status
