# tests/scripts/lib.sh — what every script test starts with: a scratch folder removed on exit,
# `fail` (the exit status), and the checks they report with ("ok   NAME" / "FAIL NAME: why").
# Sourced, not run.
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
check() { # name, got, want
    if [ "$2" != "$3" ]; then echo "FAIL $1: got '$2', want '$3'"; fail=1; else echo "ok   $1"; fi
}
expect() { # name, want-exit, want-substring (of stdout and stderr together), command...
    local name="$1" want_rc="$2" want="$3" out rc
    shift 3
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" != "$want_rc" ]; then echo "FAIL $name: exit $rc, want $want_rc: $out"; fail=1
    elif ! grep -qF -- "$want" <<<"$out"; then echo "FAIL $name: no '$want' in: $out"; fail=1
    else echo "ok   $name"; fi
}
expect_error() { # name, want-exit, want-substring of stderr alone (messages go there), command...
    local name="$1" want_rc="$2" want="$3" rc
    shift 3
    "$@" >"$tmp/out" 2>"$tmp/err"; rc=$?
    if [ "$rc" != "$want_rc" ]; then echo "FAIL $name: exit $rc, want $want_rc: $(cat "$tmp/err")"; fail=1
    elif ! grep -qF -- "$want" "$tmp/err"; then echo "FAIL $name: stderr lacks '$want': $(cat "$tmp/err")"; fail=1
    else echo "ok   $name"; fi
}
