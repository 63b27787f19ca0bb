#!/usr/bin/env bash
# specmoe report --html renders in headless Chromium and its plots carry one series per arm.
# Skipped (exit 0 with a message) where Chromium is not installed: `apt-get install -y chromium`.
set -u
BIN=${1:?usage: test_html.sh path/to/specmoe}
CHROME=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$CHROME" ]; then echo "SKIPPED: chromium not installed (apt-get install -y chromium)"; exit 0; fi
T=$(mktemp -d /tmp/specmoe_exp_html.XXXXXX)
trap 'rm -rf "$T"' EXIT
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
"$BIN" run tests/exp/tiny.lua --db "$T/r.db" >/dev/null 2>"$T/err" || { echo "FAIL: run: $(cat "$T/err")"; exit 1; }
"$BIN" report "$T/r.db" --html "$T/r.html" >/dev/null 2>"$T/err" || { echo "FAIL: report: $(cat "$T/err")"; exit 1; }
grep -qE '<script|src="http|href="http' "$T/r.html" && fail "page is not self-contained"
timeout 60 "$CHROME" --headless --no-sandbox --disable-gpu --dump-dom "file://$T/r.html" >"$T/dom" 2>"$T/chrome.log" \
  || fail "chromium could not render the page: $(tail -3 "$T/chrome.log")"
count() { grep -o "data-plot=\"$1\" data-arm=\"$2\"" "$T/dom" | wc -l; }
for m in ttft itl tpot e2e; do
  for arm in baseline self_draft ngram; do
    [ "$(count "cdf-$m" "$arm")" = 1 ] || fail "CDF of $m lacks the series of $arm"
  done
done
# p50 / p99 / p99.9 markers on every CDF series: 4 metrics x 3 arms x 3
[ "$(grep -o 'class="marker" data-percentile="p[0-9.]*"' "$T/dom" | wc -l)" = 36 ] || fail "percentile markers"
for arm in self_draft ngram; do
  [ "$(count acceptance-by-position "$arm")" = 1 ] || fail "acceptance by position lacks $arm"
  [ "$(count accept-length-histogram "$arm")" = 1 ] || fail "acceptance length histogram lacks $arm"
done
[ "$(count acceptance-by-position baseline)" = 0 ] || fail "the baseline drafts nothing and must not be plotted"
for arm in baseline self_draft ngram; do [ "$(count expert-load "$arm")" = 1 ] || fail "expert load lacks $arm"; done
grep -q 'id="report-text"' "$T/dom" || fail "tables missing"
[ $FAILS = 0 ] && echo "exp_html_chromium: all checks passed"
exit $((FAILS > 0))
