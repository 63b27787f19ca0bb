#!/usr/bin/env bash
# specmoe run stopped from outside: SIGINT mid-run keeps every finished run, marks the current
# one 'interrupted' (its rows rolled back), exits 130; SIGKILL mid-run keeps finished runs and a
# readable database; both resume to completion. A database file nobody may write: a clear
# message and nothing lost.
# Runs use open-loop arrivals (about 2 s each, mostly waiting), so "mid-run" is not a race.
set -u
BIN=$(realpath "${1:?usage: test_interrupt.sh path/to/specmoe}")
T=$(mktemp -d /tmp/specmoe_exp_int.XXXXXX)
trap 'chmod -R u+w "$T" 2>/dev/null; rm -rf "$T"' EXIT
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
FIX=$PWD/tests/fixtures/loader/ckpt/qwen3_moe_hub

cat >"$T/slow.lua" <<LUA
local sm = require "specmoe"
return sm.experiment {
  name = "slow",
  target = sm.model { path = "$FIX" },
  workload = { num_prompts = 8, random_input_len = 4, max_new_tokens = 8, request_rate = 4 },
  repeats = 2, seed = 3,
  arms = { sm.arm { name = "baseline" }, sm.arm { name = "ngram", drafter = "ngram", k = 2 } },
}
LUA

# start_and_wait DB: starts a run in the background (pid in $PID) and returns once one run is
# complete and the next one is under way.
start_and_wait() {
  local db=$1
  "$BIN" run "$T/slow.lua" --db "$db" >"$T/out" 2>"$T/err" &
  PID=$!
  for _ in $(seq 300); do
    sleep 0.05
    kill -0 $PID 2>/dev/null || { fail "run ended before it could be stopped: $(cat "$T/err")"; return 1; }
    local state
    state=$(sqlite3 "$db" "SELECT SUM(status = 'ok') || '/' || SUM(status = 'running') FROM runs" 2>/dev/null)
    [ "$state" = "1/1" ] && return 0
  done
  fail "no second run started within 15 s"
  return 1
}

# ---- SIGINT
DB="$T/int.db"
if start_and_wait "$DB"; then
  t0=$(date +%s.%N)
  kill -INT $PID
  wait $PID
  rc=$?
  t1=$(date +%s.%N)
  [ $rc = 130 ] || fail "SIGINT: exit $rc, expected 130"
  python3 -c "import sys; sys.exit(0 if $t1 - $t0 < 3 else 1)" || fail "SIGINT: took $(python3 -c "print($t1 - $t0)") s to stop"
  grep -q "stopped; completed runs are kept" "$T/err" || fail "SIGINT message: $(cat "$T/err")"
  q() { sqlite3 "$DB" "$1"; }
  [ "$(q "PRAGMA integrity_check")" = ok ] || fail "SIGINT: integrity_check"
  [ "$(q "SELECT group_concat(status, ',') FROM (SELECT status FROM runs ORDER BY run_id)")" = "ok,interrupted" ] \
    || fail "SIGINT: runs are $(q "SELECT group_concat(status) FROM runs")"
  [ "$(q "SELECT COUNT(*) FROM requests WHERE run_id = (SELECT run_id FROM runs WHERE status = 'ok')")" = 8 ] \
    || fail "SIGINT: the finished run lost requests"
  [ "$(q "SELECT COUNT(*) FROM requests WHERE run_id = (SELECT run_id FROM runs WHERE status = 'interrupted')")" = 0 ] \
    || fail "SIGINT: the interrupted run left partial rows"
  q "SELECT error_message FROM runs WHERE status = 'interrupted'" | grep -q "interrupted" || fail "SIGINT: run message"
  # resume runs the interrupted run and the two never started
  "$BIN" run "$T/slow.lua" --db "$DB" >"$T/out" 2>"$T/err" || fail "resume after SIGINT: $(cat "$T/err")"
  grep -q "3 runs recorded, 1 skipped" "$T/out" || fail "resume after SIGINT: $(cat "$T/out")"
  [ "$(q "SELECT COUNT(*) FROM runs WHERE status = 'ok'")" = 4 ] || fail "resume after SIGINT: ok runs"
fi

# ---- SIGKILL: no handler runs; the finished run is committed, the current one left 'running'
DB="$T/kill.db"
if start_and_wait "$DB"; then
  kill -KILL $PID
  wait $PID 2>/dev/null
  q() { sqlite3 "$DB" "$1"; }
  [ "$(q "PRAGMA integrity_check")" = ok ] || fail "SIGKILL: integrity_check"
  [ "$(q "SELECT group_concat(status, ',') FROM (SELECT status FROM runs ORDER BY run_id)")" = "ok,running" ] \
    || fail "SIGKILL: runs are $(q "SELECT group_concat(status) FROM runs")"
  [ "$(q "SELECT COUNT(*) FROM requests")" = 8 ] || fail "SIGKILL: requests of the finished run"
  "$BIN" run "$T/slow.lua" --db "$DB" >"$T/out" 2>"$T/err" || fail "resume after SIGKILL: $(cat "$T/err")"
  [ "$(q "SELECT COUNT(*) FROM runs WHERE status = 'ok'")" = 4 ] || fail "resume after SIGKILL: ok runs"
fi

# ---- a database file without write permission. Root writes regardless of permissions, so the
# attempt runs as nobody when the test runs as root.
DB="$T/kill.db"
as_user=()
if [ "$(id -u)" = 0 ]; then
  if command -v setpriv >/dev/null; then as_user=(setpriv --reuid=65534 --regid=65534 --clear-groups); else
    echo "exp_interrupt: root without setpriv: read-only file check skipped"; fi
fi
if [ "$(id -u)" != 0 ] || [ ${#as_user[@]} -gt 0 ]; then
  before=$(md5sum "$DB" | cut -d' ' -f1)
  chmod 755 "$T"
  chmod a-w "$DB"
  chmod a-w "$T" # no journal or WAL file can be created next to it either
  "${as_user[@]}" "$BIN" run "$T/slow.lua" --fresh --db "$DB" >"$T/out" 2>"$T/err" && fail "a read-only file was accepted"
  grep -q "the database is read-only (check the file's permissions); nothing was written" "$T/err" \
    || fail "read-only message: $(cat "$T/err")"
  chmod u+w "$T" "$DB"
  [ "$(md5sum "$DB" | cut -d' ' -f1)" = "$before" ] || fail "the read-only attempt changed the file"
  [ "$(sqlite3 "$DB" "SELECT COUNT(*) FROM runs WHERE status = 'ok'")" = 4 ] || fail "read-only attempt lost runs"
fi

[ $FAILS = 0 ] && echo "exp_interrupt: all checks passed"
exit $((FAILS > 0))
