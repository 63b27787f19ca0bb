#!/usr/bin/env bash
# specmoe run / report end to end on the tiny random-weight fixture: script validation errors
# (file:line, did you mean, database untouched), --dry-run, a run, the views checked against a
# direct computation in Python, resume, a read-only database, the report text.
set -u
BIN=${1:?usage: test_cli.sh path/to/specmoe}
T=$(mktemp -d /tmp/specmoe_exp_cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
FIX=tests/fixtures/loader/ckpt/qwen3_moe_hub

# expect_error SCRIPT PATTERN...: run must fail, stderr must match every pattern, no database.
expect_error() {
  local script=$1; shift
  rm -f "$T/err.db"
  if "$BIN" run "$script" --db "$T/err.db" >"$T/out" 2>"$T/err"; then fail "$script: expected failure"; fi
  for pat in "$@"; do grep -qE -- "$pat" "$T/err" || fail "$script: stderr lacks /$pat/: $(cat "$T/err")"; done
  [ -e "$T/err.db" ] && fail "$script: the database was created although validation failed"
  return 0
}

cat >"$T/typo.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  target = sm.model { path = "$FIX" },
  arms = {
    sm.arm { name = "a" },
    sm.arm { name = "b", temprature = 0.5 },
  },
}
LUA
expect_error "$T/typo.lua" "typo.lua:6:" "unknown key 'temprature'" "did you mean 'temperature'"

cat >"$T/type.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  target = sm.model { path = "$FIX" },
  workload = { max_new_tokens = "many" },
}
LUA
expect_error "$T/type.lua" "type.lua:2:" "max_new_tokens' must be an integer, got string"

cat >"$T/backend.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  target = sm.model { path = "$FIX", moe_runner_backend = "reff" },
}
LUA
expect_error "$T/backend.lua" "backend.lua:3:" "unknown MoE runner backend .*'reff'" "did you mean 'ref'"

cat >"$T/dtype.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  target = sm.model { path = "$FIX", moe_runner_backend = "ref", dtype = "f16" },
}
LUA
expect_error "$T/dtype.lua" "dtype.lua:3:" "target_dtype 'f16': MoE runner backend 'ref' takes expert weights in f32, bf16"

# a dtype the runner stores reaches the model (a bf16 fixture: same tokens as f32)
cat >"$T/bf16.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  name = "bf16",
  target = sm.model { path = "$FIX", dtype = "bfloat16" },
  workload = { num_prompts = 2, random_input_len = 4, max_new_tokens = 4 },
}
LUA
"$BIN" run "$T/bf16.lua" --db "$T/bf16.db" >"$T/bf16" 2>&1 || fail "bf16 run: $(cat "$T/bf16")"
[ "$(sqlite3 "$T/bf16.db" "SELECT target_dtype FROM arms")" = bf16 ] || fail "bf16: arms.target_dtype not the canonical name"
# a CPU run records its device in the arms table and the arm's JSON
[ "$(sqlite3 "$T/bf16.db" "SELECT target_device || ',' || IFNULL(draft_device, 'null') || ',' ||
      json_extract(settings_json, '\$.target_device') FROM arms")" = "cpu,null,cpu" ] \
  || fail "cpu run: device not recorded: $(sqlite3 "$T/bf16.db" "SELECT target_device, draft_device, settings_json FROM arms")"

# device: a typo is caught with file:line and a did-you-mean; nothing runs
cat >"$T/device.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  target = sm.model { path = "$FIX" },
  arms = { sm.arm { name = "d", drafter = "model", k = 2,
    draft = sm.model { path = "$FIX", device = "cdua" } } },
}
LUA
expect_error "$T/device.lua" "device.lua:5:" "unknown device \(draft_device\) 'cdua'" "did you mean 'cuda'"

# "cuda" in a build without CUDA: a clear error (the run help says which devices this build has)
"$BIN" run --help >"$T/help" 2>&1 || fail "run --help: $(cat "$T/help")"
grep -q "devices for sm.model" "$T/help" || fail "run --help does not list devices: $(cat "$T/help")"
cat >"$T/cuda.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  target = sm.model { path = "$FIX", device = "cuda" },
}
LUA
if grep -q "built without CUDA" "$T/help"; then
  expect_error "$T/cuda.lua" "cuda.lua:3:" "target_device = \"cuda\", but this specmoe was built without CUDA"
else
  "$BIN" run "$T/cuda.lua" --dry-run >"$T/cuda" 2>&1 || fail "cuda dry-run in a CUDA build: $(cat "$T/cuda")"
  grep -qE "target_device +cuda" "$T/cuda" || fail "cuda dry-run lacks target_device cuda: $(cat "$T/cuda")"
fi

cat >"$T/missing.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  target = sm.model { path = "no/such/model" },
}
LUA
expect_error "$T/missing.lua" "missing.lua:3:" "'no/such/model' does not exist"

mkdir -p "$T/bigvocab"
sed 's/"vocab_size": 16/"vocab_size": 32/' "$FIX/config.json" >"$T/bigvocab/config.json"
cat >"$T/compat.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  target = sm.model { path = "$FIX" },
  arms = { sm.arm { name = "spec", drafter = "model", k = 2, draft = sm.model { path = "$T/bigvocab" } } },
}
LUA
expect_error "$T/compat.lua" "compat.lua:4:" "vocab_size 32 but target .* has 16"

cat >"$T/nodraft.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  target = sm.model { path = "$FIX" },
  arms = { { name = "x", drafter = "modle" } },
}
LUA
expect_error "$T/nodraft.lua" "nodraft.lua:2:" "unknown drafter 'modle'" "did you mean 'model'"

# an error of the script itself (Lua runtime): still file:line
printf 'local sm = require "specmoe"\nreturn sm.experiment(nil .. "x")\n' >"$T/runtime.lua"
expect_error "$T/runtime.lua" "runtime.lua:2:"

# --dry-run: resolved arms and the interleaved order; nothing written
"$BIN" run tests/exp/tiny.lua --dry-run --db "$T/dry.db" >"$T/dry" 2>&1 || fail "dry-run failed: $(cat "$T/dry")"
grep -q "3 arms x 2 repeats = 6 runs, order interleaved" "$T/dry" || fail "dry-run header: $(head -3 "$T/dry")"
grep -q "run order: baseline#0, self_draft#0, ngram#0, baseline#1, self_draft#1, ngram#1" "$T/dry" || fail "dry-run order"
grep -q "prompt_lookup_max  *4" "$T/dry" || fail "dry-run: ngram defaults not resolved"
grep -qE "target_device +cpu" "$T/dry" || fail "dry-run: no target_device"
[ "$(grep -cE "draft_device +cpu" "$T/dry")" = 1 ] || fail "dry-run: draft_device only for the model drafter arm"
[ -e "$T/dry.db" ] && fail "dry-run created a database"

# grid helper: 2 drafters x 2 k = 4 arms, named by the template
cat >"$T/grid.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  target = sm.model { path = "$FIX" }, draft = sm.model { path = "$FIX" },
  order = "sequential", repeats = 2,
  arms = sm.arms(sm.arm { name = "base" }, sm.grid { name = "{drafter}_k{k}", drafter = { "model", "ngram" }, k = { 1, 3 } }),
}
LUA
"$BIN" run "$T/grid.lua" --dry-run >"$T/grid" 2>&1 || fail "grid dry-run: $(cat "$T/grid")"
grep -q "5 arms x 2 repeats = 10 runs, order sequential" "$T/grid" || fail "grid count: $(head -1 "$T/grid")"
grep -q "run order: base#0, base#1, model_k1#0, model_k1#1, model_k3#0" "$T/grid" || fail "grid order/names: $(tail -1 "$T/grid")"

# the real run
DB="$T/results.db"
"$BIN" run tests/exp/tiny.lua --db "$DB" >"$T/run" 2>&1 || fail "run failed: $(cat "$T/run")"
grep -q "6 runs recorded" "$T/run" || fail "run summary: $(cat "$T/run")"
q() { sqlite3 "$DB" "$1"; }
[ "$(q "SELECT COUNT(*) FROM runs WHERE status = 'ok'")" = 6 ] || fail "runs ok"
[ "$(q "SELECT COUNT(*) FROM requests")" = 36 ] || fail "requests: $(q "SELECT COUNT(*) FROM requests")"
[ "$(q "SELECT COUNT(*) FROM request_token_check WHERE consistent = 0")" = 0 ] || fail "tokens counted != tokens emitted"
[ "$(q "SELECT SUM(output_tokens) FROM requests")" = "$(q "SELECT SUM(n_tokens) FROM token_emissions")" ] || fail "token sums"
[ "$(q "SELECT COUNT(*) FROM arm_acceptance WHERE acceptance_rate < 0 OR acceptance_rate > 1")" = 0 ] || fail "acceptance range"
[ "$(q "SELECT COUNT(*) FROM latency_percentiles WHERE p99_s < p50_s OR p999_s < p99_s")" = 0 ] || fail "p99 < p50"
[ "$(q "SELECT ROUND(acceptance_rate, 6) FROM arm_acceptance WHERE arm = 'self_draft'")" = 1.0 ] \
  || fail "a draft identical to the target must be accepted always (greedy): $(q "SELECT acceptance_rate FROM arm_acceptance WHERE arm = 'self_draft'")"
[ "$(q "SELECT COUNT(*) FROM moe_layer_events WHERE model = 'target'")" -gt 0 ] || fail "no MoE events"
[ "$(q "SELECT COUNT(*) FROM moe_layer_events e JOIN runs USING (run_id) JOIN arms a USING (arm_id)
       WHERE a.name = 'self_draft' AND e.model = 'draft' AND e.pass = 'draft'")" -gt 0 ] \
  || fail "no MoE events of the draft model"
[ "$(q "SELECT COUNT(*) FROM moe_layer_events e JOIN runs USING (run_id) JOIN arms a USING (arm_id)
       WHERE a.name = 'ngram' AND e.model = 'draft'")" = 0 ] || fail "draft-model MoE events for the n-gram drafter"
# the self drafter's cheaper pass (the target's fork, one expert per token) is observed as the draft
cat >"$T/selfd.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  name = "selfd",
  target = sm.model { path = "$FIX", moe_runner_backend = "ref" },
  workload = { num_prompts = 2, random_input_len = 4, max_new_tokens = 6 },
  arms = { sm.arm { name = "self1", drafter = "self", k = 2, self_draft_top_k = 1 } },
}
LUA
"$BIN" run "$T/selfd.lua" --db "$T/selfd.db" >"$T/selfdrun" 2>&1 || fail "self drafter run: $(cat "$T/selfdrun")"
[ "$(sqlite3 "$T/selfd.db" "SELECT COUNT(*) FROM moe_layer_events WHERE model = 'draft' AND pass = 'draft'")" -gt 0 ] \
  || fail "no MoE events of the self drafter's pass"
[ "$(sqlite3 "$T/selfd.db" "SELECT MAX(distinct_experts) <= MAX(n_tokens) FROM moe_layer_events WHERE model = 'draft'")" = 1 ] \
  || fail "self drafter with one expert per token touched more experts than tokens"
[ "$(q "SELECT git_commit IS NOT NULL AND cpu_count > 0 FROM environment")" = 1 ] || fail "environment row"
# percentiles of the views against Python's own nearest-rank computation
python3 - "$DB" <<'PY' || fail "view percentiles differ from a direct computation"
import math, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
def rank(v, p):
    v = sorted(v); return v[max(1, math.ceil(p / 100 * len(v) - 1e-9)) - 1]
bad = 0
for arm_id, arm in db.execute("SELECT arm_id, name FROM arms"):
    rows = db.execute("""SELECT q.arrival_s, q.first_token_s, q.finish_s, q.output_tokens, q.run_id, q.request_index
                         FROM requests q JOIN runs r USING (run_id) WHERE r.arm_id = ? AND r.status = 'ok'""", (arm_id,)).fetchall()
    ttft = [f - a for a, f, _, _, _, _ in rows]
    e2e = [e - a for a, _, e, _, _, _ in rows]
    itl = []
    for *_, run, req in rows:
        t = [x for (x,) in db.execute("SELECT time_s FROM token_emissions WHERE run_id = ? AND request_index = ? ORDER BY emission_index", (run, req))]
        itl += [b - a for a, b in zip(t, t[1:])]
    for metric, vals in (("ttft", ttft), ("e2e", e2e), ("itl", itl)):
        n, p50, p99 = db.execute("SELECT n, p50_s, p99_s FROM latency_percentiles WHERE arm_id = ? AND metric = ?", (arm_id, metric)).fetchone()
        if n != len(vals) or abs(p50 - rank(vals, 50)) > 1e-12 or abs(p99 - rank(vals, 99)) > 1e-12:
            print(arm, metric, n, len(vals), p50, rank(vals, 50), p99, rank(vals, 99)); bad += 1
sys.exit(1 if bad else 0)
PY

# every worked query runs in the plain sqlite3 shell
for f in db/queries/*.sql; do
  sqlite3 -bail "$DB" <"$f" >"$T/query" 2>&1 || fail "$f: $(cat "$T/query")"
done
sqlite3 -csv "$DB" <db/queries/acceptance_by_arm.sql | grep -q '^ngram,ngram,2,' || fail "acceptance_by_arm.sql: no ngram row"

# progress: a line per run on a terminal (arm, repeat, requests, tokens/s), nothing otherwise
if command -v script >/dev/null; then
  script -qec "$BIN run tests/exp/tiny.lua --db $T/tty.db" /dev/null >"$T/tty" 2>&1 || fail "run on a tty: $(cat "$T/tty")"
  for pat in "\[1/6\] arm baseline, repeat 0: 6/6 requests, 72 tokens, [0-9.]+ tok/s" "\[6/6\] arm ngram, repeat 1: 6/6 requests"; do
    tr '\r' '\n' <"$T/tty" | grep -qE "$pat" || fail "tty progress lacks /$pat/: $(tr '\r' '\n' <"$T/tty" | head -5)"
  done
fi
"$BIN" run tests/exp/tiny.lua --fresh --db "$T/quiet.db" >/dev/null 2>"$T/quiet" || fail "quiet run failed"
[ -s "$T/quiet" ] && fail "progress written to a stderr that is not a terminal: $(head -c 300 "$T/quiet")"

# resume: the same script again skips every completed run
"$BIN" run tests/exp/tiny.lua --db "$DB" >"$T/run2" 2>&1 || fail "resume failed: $(cat "$T/run2")"
grep -q "0 runs recorded, 6 skipped" "$T/run2" || fail "resume: $(cat "$T/run2")"
[ "$(q "SELECT COUNT(*) FROM runs")" = 6 ] || fail "resume added runs"

# a validation error leaves an existing database byte-for-byte alone
sum_before=$(md5sum "$DB" | cut -d' ' -f1)
"$BIN" run "$T/typo.lua" --db "$DB" >/dev/null 2>&1 && fail "typo script succeeded"
[ "$(md5sum "$DB" | cut -d' ' -f1)" = "$sum_before" ] || fail "a failed validation changed the database"

# a database that cannot be written: clear error, nothing lost
"$BIN" run tests/exp/tiny.lua --fresh --db "file:$DB?mode=ro" >"$T/ro" 2>&1 && fail "read-only database accepted"
grep -q "read-only" "$T/ro" || fail "read-only message: $(cat "$T/ro")"
[ "$(q "SELECT COUNT(*) FROM runs WHERE status = 'ok'")" = 6 ] || fail "read-only attempt lost runs"

# a version-1 database (schema of specmoe before devices) with a recorded experiment: run
# migrates it (arms gain target_device/draft_device = 'cpu', old data stays) and records on.
V1="$T/v1.db"
sqlite3 "$V1" <tests/fixtures/db/schema_v1.sql || fail "building a version-1 database"
sqlite3 "$V1" "INSERT INTO experiments (experiment_id, name, settings_json, created_at) VALUES (1, 'old', '{}', 0);
  INSERT INTO arms (experiment_id, arm_index, name, target_model_path, target_moe_runner_backend, target_dtype,
    target_moe_a2a_backend, draft_model_path, draft_moe_runner_backend, draft_dtype, draft_moe_a2a_backend, drafter,
    num_speculative_tokens, temperature, top_p, top_k, seed, workload_kind, num_prompts, max_new_tokens, settings_json)
  VALUES (1, 0, 'old_spec', 'm', 'ref', 'auto', 'local', 'd', 'ref', 'auto', 'local', 'model', 2, 0, 1, 0, 0,
    'random', 2, 4, '{}');
  INSERT INTO runs VALUES (1, 1, 0, 0, 'ok', NULL, 100, 110);"
"$BIN" report "$V1" >/dev/null 2>"$T/v1err" && fail "report read a version-1 database without migrating"
grep -q "specmoe run. with this database migrates it" "$T/v1err" || fail "report on v1: $(cat "$T/v1err")"
"$BIN" run "$T/bf16.lua" --db "$V1" >"$T/v1run" 2>&1 || fail "run on a version-1 database: $(cat "$T/v1run")"
v1() { sqlite3 "$V1" "$1"; }
[ "$(v1 "PRAGMA user_version")" = 4 ] || fail "v1 database not migrated: version $(v1 "PRAGMA user_version")"
[ "$(v1 "SELECT COUNT(*) FROM arms WHERE name = 'old_spec' AND target_chunked_prefill_size IS NULL
          AND draft_chunked_prefill_size IS NULL")" = 1 ] || fail "migrated arm: chunk sizes not NULL (the default)"
[ "$(v1 "SELECT target_weights || ',' || IFNULL(draft_weights, '-') FROM arms WHERE name = 'old_spec'")" = "checkpoint,checkpoint" ] \
  || fail "migrated arm weights: $(v1 "SELECT target_weights, draft_weights FROM arms WHERE name = 'old_spec'")"
[ "$(v1 "SELECT target_device || ',' || draft_device FROM arms WHERE name = 'old_spec'")" = "cpu,cpu" ] \
  || fail "migrated arm devices: $(v1 "SELECT target_device, draft_device FROM arms WHERE name = 'old_spec'")"
[ "$(v1 "SELECT COUNT(*) FROM runs WHERE status = 'ok'")" = 2 ] || fail "migrated database: old run lost or new one missing"
[ "$(v1 "SELECT target_device FROM arms JOIN experiments USING (experiment_id) WHERE experiments.name = 'bf16'")" = cpu ] \
  || fail "new arm in a migrated database: no device"
"$BIN" report "$V1" --experiment bf16 >/dev/null 2>"$T/v1rep" || fail "report on the migrated database: $(cat "$T/v1rep")"

# random weights: GPU only, said with the sm.model line; kept out of the arm JSON while unset
cat >"$T/randw.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  target = sm.model { path = "$FIX", weights = "random", weights_seed = 7 },
}
LUA
expect_error "$T/randw.lua" "randw.lua:3:" "target_weights = \"random\" needs target_device = \"cuda\""
sed 's/weights = "random"/weights = "randm"/' "$T/randw.lua" >"$T/randw2.lua"
expect_error "$T/randw2.lua" "randw2.lua:3:" "unknown weights \(target_weights\) 'randm'" "did you mean 'random'"
sed 's/weights = "random", weights_seed = 7/weights = "random", weights_seed = 7, device = "cuda"/' "$T/randw.lua" >"$T/randw3.lua"
if grep -q "built without CUDA" "$T/help"; then
  expect_error "$T/randw3.lua" "randw3.lua:3:" "built without CUDA"
else
  "$BIN" run "$T/randw3.lua" --dry-run >"$T/randw3" 2>&1 || fail "random-weights dry-run: $(cat "$T/randw3")"
  grep -qE "target_weights +random" "$T/randw3" && grep -qE "target_weights_seed +7" "$T/randw3" \
    || fail "dry-run lacks the random weights: $(cat "$T/randw3")"
fi

# chunked prefill size: GPU only and 1..65536, said with the sm.model line; kept out of the arm
# JSON while unset (a new column since version 4), shown by --dry-run when set
cat >"$T/chunk.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  target = sm.model { path = "$FIX", chunked_prefill_size = 256 },
}
LUA
expect_error "$T/chunk.lua" "chunk.lua:3:" "target_chunked_prefill_size needs target_device = \"cuda\""
sed 's/chunked_prefill_size = 256/chunked_prefill_size = 0, device = "cuda"/' "$T/chunk.lua" >"$T/chunk2.lua"
sed 's/chunked_prefill_size = 256/chunked_prefill_size = 256, device = "cuda"/' "$T/chunk.lua" >"$T/chunk3.lua"
if grep -q "built without CUDA" "$T/help"; then
  expect_error "$T/chunk3.lua" "chunk3.lua:3:" "built without CUDA"
else
  expect_error "$T/chunk2.lua" "chunk2.lua:3:" "target_chunked_prefill_size must be 1..65536 rows, got 0"
  "$BIN" run "$T/chunk3.lua" --dry-run >"$T/chunk3" 2>&1 || fail "chunked prefill dry-run: $(cat "$T/chunk3")"
  grep -qE "target_chunked_prefill_size +256" "$T/chunk3" || fail "dry-run lacks the chunk size: $(cat "$T/chunk3")"
fi

# warm-up requests: untimed, unrecorded, announced by --dry-run; a negative count is an error
cat >"$T/warm.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  name = "warm",
  target = sm.model { path = "$FIX", moe_runner_backend = "ref" },
  workload = { num_prompts = 4, random_input_len = 6, max_new_tokens = 3 },
  warmup_requests = 3,
  arms = { sm.arm { name = "only" } },
}
LUA
"$BIN" run "$T/warm.lua" --db "$T/warm.db" --dry-run >"$T/warmdry" 2>&1 || fail "warm-up dry-run: $(cat "$T/warmdry")"
grep -q "3 untimed warm-up requests per run" "$T/warmdry" || fail "dry-run does not announce the warm-up: $(head -3 "$T/warmdry")"
"$BIN" run "$T/warm.lua" --db "$T/warm.db" >"$T/warmrun" 2>&1 || fail "warm-up run: $(cat "$T/warmrun")"
grep -q "warm-up before arm 'only' repeat 0: 3 requests, 9 tokens (not recorded)" "$T/warmrun" \
  || fail "the warm-up did not run 3 requests of 3 tokens: $(cat "$T/warmrun")"
[ "$(sqlite3 "$T/warm.db" "SELECT target_weights || ',' || target_weights_seed FROM arms")" = "checkpoint,0" ] \
  || fail "arm weights column: $(sqlite3 "$T/warm.db" "SELECT target_weights, target_weights_seed FROM arms")"
sqlite3 "$T/warm.db" "SELECT settings_json FROM arms" | grep -qE "weights|chunked" \
  && fail "default weights or chunk size written into the arm JSON (older experiments would not resume)"
[ "$(sqlite3 "$T/warm.db" "SELECT COALESCE(target_chunked_prefill_size, 'null') FROM arms")" = null ] \
  || fail "unset chunk size not NULL: $(sqlite3 "$T/warm.db" "SELECT target_chunked_prefill_size FROM arms")"
[ "$(sqlite3 "$T/warm.db" "SELECT COUNT(*) FROM requests")" = 4 ] \
  || fail "warm-up requests were recorded: $(sqlite3 "$T/warm.db" "SELECT COUNT(*) FROM requests") requests for 4 prompts"
sed 's/warmup_requests = 3/warmup_requests = -1/' "$T/warm.lua" >"$T/warmbad.lua"
expect_error "$T/warmbad.lua" "warmbad.lua:2:" "warmup_requests must be >= 0, got -1"

# report: table, A/B with intervals, verdicts
"$BIN" report "$DB" >"$T/report" 2>&1 || fail "report failed: $(cat "$T/report")"
for pat in "experiment 'tiny'" "self_draft .* 1.000" "A = baseline, B = self_draft" "95% CI \[" "acceptance_rate .* n/a" "significant"; do
  grep -qE -- "$pat" "$T/report" || fail "report lacks /$pat/"
done
grep -q "device (t/d)" "$T/report" && fail "report shows a device column although every arm ran on the cpu"
# arms that differ by device show it (rewritten here: a CPU-only machine cannot record a GPU arm)
cp "$DB" "$T/dev.db"
sqlite3 "$T/dev.db" "UPDATE arms SET target_device = 'cuda' WHERE name = 'baseline'"
"$BIN" report "$T/dev.db" >"$T/devrep" 2>&1 || fail "report with devices: $(cat "$T/devrep")"
for pat in "device \(t/d\)" "^baseline +cuda +2 " "^self_draft +cpu/cpu +2 " "^ngram +cpu +2 "; do
  grep -qE -- "$pat" "$T/devrep" || fail "device report lacks /$pat/: $(head -6 "$T/devrep")"
done
grep -q "chunk (t/d)" "$T/devrep" && fail "report shows a chunk column although no arm sets chunked_prefill_size"
# arms that differ by chunked_prefill_size show it the same way ("-": the default)
sqlite3 "$T/dev.db" "UPDATE arms SET target_chunked_prefill_size = 1024 WHERE name = 'baseline'"
"$BIN" report "$T/dev.db" >"$T/chunkrep" 2>&1 || fail "report with chunk sizes: $(cat "$T/chunkrep")"
for pat in "chunk \(t/d\)" "^baseline +cuda +1024 +2 " "^self_draft +cpu/cpu +-/- +2 " "^ngram +cpu +- +2 "; do
  grep -qE -- "$pat" "$T/chunkrep" || fail "chunk report lacks /$pat/: $(head -6 "$T/chunkrep")"
done
"$BIN" report "$DB" --experiment nope >/dev/null 2>"$T/rerr" && fail "unknown experiment accepted"
grep -q "no experiment named 'nope'" "$T/rerr" || fail "report error: $(cat "$T/rerr")"

# --chunked-prefill-size is checked before any device is touched (also on a machine without a GPU)
"$BIN" bench decode --chunked-prefill-size -1 >/dev/null 2>"$T/cerr"
[ $? = 2 ] || fail "bench decode --chunked-prefill-size -1: exit status not 2"
grep -q -- "--chunked-prefill-size >= 1" "$T/cerr" || fail "bench decode chunk error: $(cat "$T/cerr")"
"$BIN" generate --model "$FIX" --prompt-ids 1,2 --chunked-prefill-size -5 >/dev/null 2>"$T/cerr"
[ $? = 2 ] || fail "generate --chunked-prefill-size -5: exit status not 2"
grep -q -- "--chunked-prefill-size >= 1" "$T/cerr" || fail "generate chunk error: $(cat "$T/cerr")"

[ $FAILS = 0 ] && echo "exp_cli: all checks passed"
exit $((FAILS > 0))
