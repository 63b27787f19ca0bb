#!/usr/bin/env bash
# scripts/pdl_trace_report.py on a hand-made trace whose answer is known: three kernels (launch
# numbers out of order in the file), releases at 1, 4 and 9 us; the second kernel has two of its
# three blocks waiting before its release and its last block arriving 0.5 us after it.
set -u
src="${SPECMOE_SOURCE_DIR:-.}"
source "$src/tests/scripts/lib.sh"
cat > "$tmp/trace" <<'T'
# grid block grid_blocks sm kind t_before t_after
11 0 3 5 1 3000 4000
11 1 3 6 1 3500 4100
11 2 3 7 1 4500 4600
11 0 3 5 0 2900 2900
10 0 2 1 1 500 1000
10 1 2 2 1 600 1200
12 0 1 3 1 8000 9000
T
out=$(python3 "$src/scripts/pdl_trace_report.py" "$tmp/trace")
check "kernels counted" "$(echo "$out" | head -1)" "3 kernels with a PDL wait; first release to last release 8.0 us"
check "first kernel" "$(echo "$out" | awk '$1 == 0 {print $2, $3, $4, $5}')" "2 0.00 3.00 2"
check "second kernel" "$(echo "$out" | awk '$1 == 1 {print $2, $3, $4, $5, $6, $7}')" "3 3.00 5.00 2 0.50 -1.10"
check "period average" "$(python3 "$src/scripts/pdl_trace_report.py" "$tmp/trace" --period 1 --skip 1 | grep -c 'averaged over 2 layers')" "1"
: > "$tmp/empty"
python3 "$src/scripts/pdl_trace_report.py" "$tmp/empty" > /dev/null 2>&1
check "an empty trace is an error" "$?" "1"
exit $fail
