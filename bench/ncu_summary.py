#!/usr/bin/env python3
"""Summarise an Nsight Compute CSV of kernel durations (gpu__time_duration.sum) by kernel name.

    ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
        --print-units base --log-file prof.csv <program>
    python3 bench/ncu_summary.py prof.csv [--last N]

Prints per kernel name: launches, total µs, mean µs, share; then, with --last N, the last N
launches in order (one decode step of a model, to read per layer)."""
import argparse
import collections
import csv
import re


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--last", type=int, default=0)
    ap.add_argument("--skip-prefix", default="fill_", help="kernel names to leave out (weight init)")
    a = ap.parse_args()
    rows = []
    with open(a.csv, newline="") as f:
        lines = [ln for ln in f if ln.startswith('"')]  # ncu prints its own ==PROF== lines too
    for r in csv.DictReader(lines):
        if r.get("Metric Name") != "gpu__time_duration.sum":
            continue
        # demangled names: "void (anonymous namespace)::rmsnorm_kernel<256>(const float *, ...)",
        # or "<unnamed>::fill_kernel(...)" as ncu writes them
        name = re.sub(r"^void |\(anonymous namespace\)::|<unnamed>::", "", r["Kernel Name"])
        name = re.split(r"[(<]", name)[0].strip()
        if name.startswith(a.skip_prefix):
            continue
        ns = float(r["Metric Value"].replace(",", ""))
        rows.append((name, ns / 1e3, r.get("Grid Size", ""), r.get("Block Size", "")))
    agg = collections.OrderedDict()
    for name, us, _, _ in rows:
        n, t = agg.get(name, (0, 0.0))
        agg[name] = (n + 1, t + us)
    total = sum(t for _, t in agg.values()) or 1.0
    print(f"{'kernel':48s} {'launches':>8s} {'total us':>10s} {'mean us':>9s} {'share':>7s}")
    for name, (n, t) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"{name[:48]:48s} {n:8d} {t:10.1f} {t / n:9.2f} {100 * t / total:6.1f}%")
    print(f"{'all':48s} {len(rows):8d} {total:10.1f}")
    if a.last:
        print(f"\nlast {a.last} launches:")
        for name, us, grid, block in rows[-a.last:]:
            print(f"  {us:9.2f} us  {name[:60]:60s} grid {grid} block {block}")


if __name__ == "__main__":
    main()
