#!/usr/bin/env bash
# bench/run_on_device.sh — one device call: GPU tests, then the benchmarks whose figures go into
# bench/RESULTS.md, with the peers measured in the same call. Builds nothing: it runs a carried
# slim build (BUILD, default build-k7-slim: specmoe and tests/test_gpu_* from a -DSPECMOE_CUDA=ON
# build; bench/pack_for_device.sh packs it into build-carry/slim.tar.xz). From the repository root:
#
#     tar -xJf build-carry/slim.tar.xz &&
#       STAGES="tests decode profile layer peers hf" bash bench/run_on_device.sh   # run(..., carry=["build-carry"])
#
# Stages (each under its own timeout, cut to what is left of BUDGET seconds):
#   tests    every tests/test_gpu_* binary (SPECMOE_REQUIRE_GPU=1), then the SANITIZERS (default
#            memcheck racecheck) of compute-sanitizer on the SANITIZE_TESTS (kernel tests)
#   decode   specmoe bench decode (Qwen3-30B-A3B shape, 48 layers, random weights), graphs and eager,
#            and without the MoE blocks (--leave-out-moe: the rest of the step against its bytes)
#   ab       decode A/B in one call: specmoe under each of AB_ENVS (e.g. "- SPECMOE_MOE_DECODE=simt";
#            "A=1,B=2" sets two variables in one arm),
#            BASE_BIN (another build's specmoe, e.g. the previous commit's) and AB_BINS ("NAME=PATH ...")
#            when given; AB_BATCHES; AB_ROUNDS rounds, the arms interleaved; AB_ARGS: more options
#            for every arm (e.g. --leave-out-moe)
#   prefill  bench decode after PREFILL_TOKENS-token prompts (default 4096): its prefill line, with
#            the default MoE prefill kernel and with SPECMOE_MOE_PREFILL=mma, then with each
#            --chunked-prefill-size of PREFILL_CHUNKS (e.g. "1024 4096")
#   profile  Nsight Compute kernel durations of one eager step (PROFILE_BATCH rows, default 1) of a
#            PROFILE_LAYERS-layer cut; PROFILE_ARGS: more options (e.g. --leave-out-moe)
#   layer    specmoe bench moe-layer, both presets (LAYER_ARGS: more options, e.g. --regimes)
#   peers    bench/peer_grouped_mm.py on the same points
#   hf       bench/peer_hf_decode.py (transformers' decode settings)
#   exp      the GPU experiments (experiments/gpu_spec.lua, experiments/qwen3_30b_runners.lua) into
#            $OUT/gpu_experiments.db, with their reports
# Logs land in $OUT/logs.tar.gz and $OUT/SUMMARY.txt.
set -u
ROOT=$(pwd)
BUILD=${BUILD:-build-k7-slim}
OUT=${OUT:-$ROOT/gpu-out}
STAGES=${STAGES:-tests decode profile layer peers}
BUDGET=${BUDGET:-540}
BATCHES=${BATCHES:-1,2,4,8,16,32,64}
TOKENS=${TOKENS:-1,2,4,8,16,64,512,4096}
PROFILE_LAYERS=${PROFILE_LAYERS:-4}
SANITIZERS=${SANITIZERS-memcheck racecheck}  # set empty to skip compute-sanitizer in stage tests
SANITIZE_TESTS=${SANITIZE_TESTS:-kernels sample fused_ops gemv model_ops}
LOGS=$(mktemp -d)
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$ROOT/$BUILD:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export SPECMOE_REQUIRE_GPU=1
summary="$LOGS/SUMMARY.txt"
: > "$summary"
note() { echo "$*" | tee -a "$summary"; }
status=0
start=$SECONDS
limit() {
  local left=$((BUDGET - (SECONDS - start)))
  [ "$left" -gt "$1" ] && left=$1
  [ "$left" -lt 3 ] && left=0
  echo "$left"
}
run() {
  local name=$1 t
  t=$(limit "$2")
  shift 2
  if [ "$t" -eq 0 ]; then note "$name: NOT RUN (budget of ${BUDGET}s spent)"; return 3; fi
  local t0=$SECONDS
  timeout "$t" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  note "$name: rc=$rc in $((SECONDS - t0))s (limit ${t}s)  $(grep -v '^$' "$LOGS/$name.log" | tail -1 | cut -c1-160)"
  return $rc
}
# run_as PREFIX LIMIT SETTING CMD...: run under one environment setting ("-": none), logged as PREFIX_SETTING
run_as() {
  local prefix=$1 limit=$2 setting=$3 envs=()
  shift 3
  [ "$setting" != - ] && IFS=, read -ra envs <<< "$setting" # "A=1,B=2": several variables in one arm
  run "${prefix}_${setting//[^A-Za-z0-9]/_}" "$limit" env "${envs[@]}" "$@"
}
has() { case " $STAGES " in *" $1 "*) return 0 ;; esac; return 1; }
find_tool() {
  local t
  t=$(command -v "$1" 2>/dev/null)
  for d in /usr/local/cuda/bin /usr/local/cuda-*/bin /opt/nvidia/*/bin /opt/nvidia/nsight-compute/*; do
    [ -z "$t" ] && [ -x "$d/$1" ] && t="$d/$1"
  done
  echo "$t"
}

[ -x "$BUILD/specmoe" ] || { note "no build in $BUILD"; exit 2; }
note "device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
note "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)  dirty files: $(git status --porcelain 2>/dev/null | wc -l)  date: $(date -u +%Y-%m-%dT%H:%MZ)  stages: $STAGES"

if has tests; then
  for t in "$BUILD"/tests/test_gpu_*; do
    run "$(basename "$t")" 60 "$t" || status=1
  done
  cs=$(find_tool compute-sanitizer)
  if [ -n "$cs" ]; then
    for tool in $SANITIZERS; do
      for name in $SANITIZE_TESTS; do
        t="$BUILD/tests/test_gpu_$name"
        [ -x "$t" ] || continue
        args=()
        [ "$name" = fused_ops ] && args=(--no-bench) # its timing loops only cost sanitizer time
        # racecheck of the whole test_gpu_kernels ran past 280 s on an H100 (2026-12-07): in shards
        shards=1
        [ "$name" = kernels ] && shards=3
        for ((i = 0; i < shards; i++)); do
          log="${tool}_$(basename "$t")"
          if [ "$shards" -gt 1 ]; then log+="_shard$i"; args=(--shard "$i/$shards"); fi
          run "$log" "$([ "$tool" = racecheck ] && echo 300 || echo 120)" "$cs" --tool "$tool" --error-exitcode 9 "$t" "${args[@]}" || status=1
          note "  $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOGS/$log.log" | tail -1)"
        done
      done
    done
  else
    note "compute-sanitizer: not found"
  fi
fi
if has decode; then
  run decode_graphs 200 "$BUILD/specmoe" bench decode --preset qwen3-30b-a3b --batch "$BATCHES" --steps 20 || status=1
  run decode_eager 60 "$BUILD/specmoe" bench decode --preset qwen3-30b-a3b --batch 1 --steps 10 --eager || status=1
  # the step without its MoE blocks: attention, norms and lm_head against their own bytes
  run decode_without_moe 60 "$BUILD/specmoe" bench decode --preset qwen3-30b-a3b --batch 1,8,64 --steps 20 \
    --leave-out-moe || status=1
  for ctx in 160 2048; do # decode over longer contexts: attention's share of the step
    run "decode_context_$ctx" 60 "$BUILD/specmoe" bench decode --preset qwen3-30b-a3b --batch 1,8 --prompt "$ctx" \
      --steps 10 || status=1
  done
  run decode_cublaslt 120 "$BUILD/specmoe" bench decode --preset qwen3-30b-a3b --batch 1,2,4,8,16 --steps 20 \
    --moe-runner-backend cublaslt || status=1
fi
if has ab; then # same-call A/B of decode: AB_ENVS (settings for specmoe, "-" for none), and other builds
  ab_batches=${AB_BATCHES:-1,4,8}
  for round in $(seq 1 "${AB_ROUNDS:-1}"); do # rounds interleave the arms, so drift hits them alike
    if [ -n "${BASE_BIN:-}" ]; then
      run "decode_ab_base_r$round" 90 "$BASE_BIN" bench decode --preset qwen3-30b-a3b --batch "$ab_batches" --steps 20 ${AB_ARGS:-} || status=1
    fi
    for named in ${AB_BINS:-}; do # NAME=PATH: more builds
      run "decode_ab_${named%%=*}_r$round" 90 "${named#*=}" bench decode --preset qwen3-30b-a3b --batch "$ab_batches" \
        --steps 20 ${AB_ARGS:-} || status=1
    done
    for setting in ${AB_ENVS:--}; do
      run_as "decode_ab_r$round" 90 "$setting" "$BUILD/specmoe" bench decode --preset qwen3-30b-a3b \
        --batch "$ab_batches" --steps 20 ${AB_ARGS:-} || status=1
    done
  done
fi
if has prefill; then # end-to-end prefill of one long prompt, MoE prefill kernels compared (wgmma, mma.sync)
  for setting in - SPECMOE_MOE_PREFILL=mma; do
    run_as decode_prefill 120 "$setting" "$BUILD/specmoe" bench decode --preset qwen3-30b-a3b \
      --prompt "${PREFILL_TOKENS:-4096}" --batch 1,2,4 --steps 5 || status=1
  done
  for chunk in ${PREFILL_CHUNKS:-}; do # other --chunked-prefill-size values than the default (4096)
    run "decode_prefill_chunk_$chunk" 120 "$BUILD/specmoe" bench decode --preset qwen3-30b-a3b \
      --prompt "${PREFILL_TOKENS:-4096}" --batch 1,2 --steps 5 --chunked-prefill-size "$chunk" || status=1
  done
fi
if has profile; then
  ncu=$(find_tool ncu)
  if [ -n "$ncu" ]; then
    run profile_ncu 150 "$ncu" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
      --print-units base --log-file "$LOGS/profile.csv" "$BUILD/specmoe" bench decode --preset qwen3-30b-a3b \
      --layers "$PROFILE_LAYERS" --batch "${PROFILE_BATCH:-1}" --prompt 1 --warmup 0 --steps 1 --eager ${PROFILE_ARGS:-}
    run profile_summary 30 python3 bench/ncu_summary.py "$LOGS/profile.csv" --last 40
  else
    note "ncu: not found"
  fi
fi
if has layer; then
  for preset in qwen3-30b-a3b mixtral-8x7b; do
    # shellcheck disable=SC2086 # LAYER_ARGS: extra options, e.g. "--runners cuda --regimes auto,prefill-wgmma"
    run "layer_$preset" 90 "$BUILD/specmoe" bench moe-layer --preset "$preset" --tokens "$TOKENS" ${LAYER_ARGS:-} || status=1
  done
fi
if has peers; then
  for preset in qwen3-30b-a3b mixtral-8x7b; do
    run "peer_$preset" 60 python3 bench/peer_grouped_mm.py --preset "$preset" --tokens "$TOKENS" || true
  done
fi
if has exp; then
  for x in ${EXPS:-gpu_spec qwen3_30b_runners}; do
    run "exp_$x" 240 "$BUILD/specmoe" run "experiments/$x.lua" --db "$OUT/gpu_experiments.db" || status=1
    run "report_$x" 30 "$BUILD/specmoe" report "$OUT/gpu_experiments.db" --experiment "$x" || status=1
  done
  # where a step's time goes, per arm: the engine's own split (spec_steps) next to the ITL
  run report_step_split 30 python3 - "$OUT/gpu_experiments.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print("experiment           arm               steps  draft ms  verify ms  overhead ms")
for row in db.execute("""SELECT e.name, a.name, count(*), avg(s.draft_s) * 1e3, avg(s.verify_s) * 1e3,
                                avg(s.overhead_s) * 1e3
                         FROM spec_steps s JOIN runs r USING (run_id) JOIN arms a USING (arm_id)
                         JOIN experiments e USING (experiment_id) GROUP BY e.name, a.name ORDER BY e.name, a.arm_index"""):
    print("%-20s %-16s %6d %9.3f %10.3f %12.3f" % row)
PY
  xz -T0 -k -f "$OUT/gpu_experiments.db" 2>/dev/null && rm -f "$OUT/gpu_experiments.db"
fi
if has hf; then
  run hf_decode "${HF_LIMIT:-240}" python3 bench/peer_hf_decode.py ${HF_ARGS:-} || true
fi
note "total: $((SECONDS - start))s of ${BUDGET}s; exit status $status"
for f in "$LOGS"/decode_*.log "$LOGS"/profile_summary.log "$LOGS"/layer_*.log "$LOGS"/peer_*.log "$LOGS"/hf_*.log \
  "$LOGS"/report_*.log; do
  [ -s "$f" ] && { echo; echo "== $(basename "$f")"; cat "$f"; } >> "$summary"
done
cp "$summary" "$OUT/SUMMARY.txt"
tar -czf "$OUT/logs.tar.gz" -C "$LOGS" .
rm -rf "$LOGS"
exit $status
