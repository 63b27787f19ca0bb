#!/usr/bin/env python3
"""Where a graphed decode step's time goes: kernel start/end times from an Nsight Systems trace.

    nsys profile --cuda-graph-trace=node -o tl <program>
    nsys stats --report cuda_gpu_trace --format csv --output tl tl.nsys-rep   # -> tl_cuda_gpu_trace.csv
    python3 bench/nsys_timeline.py tl_cuda_gpu_trace.csv [--last N]

Unlike Nsight Compute, which serialises kernels, this shows them as the graph ran them, with
programmatic dependent launch overlapping neighbours. Prints per kernel name: launches, busy µs
(sum of durations), and the µs of the timeline on which it was the only kernel running that it
ends (its exposed time); then, with --last N, the last N kernels in start order with start
offset, duration and the gap (negative: overlap) to the end of the kernel before."""
import argparse
import collections
import csv
import re


def short(name):
    name = re.sub(r"^void |\(anonymous namespace\)::|<unnamed>::", "", name)
    return re.split(r"[(<]", name)[0].strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--last", type=int, default=0)
    ap.add_argument("--skip-prefix", default="fill_", help="kernel names to leave out (weight init)")
    a = ap.parse_args()
    with open(a.csv, newline="") as f:
        lines = [ln for ln in f if "," in ln]
    rows = []
    for r in csv.DictReader(lines):
        name = r.get("Name") or r.get("Kernel Name") or ""
        start, dur = r.get("Start (ns)"), r.get("Duration (ns)")
        if not start or not dur or "[CUDA mem" in name:
            continue
        name = short(name)
        if name.startswith(a.skip_prefix):
            continue
        rows.append((float(start), float(dur), name))
    rows.sort()
    if not rows:
        print("no kernels in", a.csv)
        return
    # exposed time: the part of each kernel's span past the latest end of the kernels before it
    agg = collections.OrderedDict()
    latest = rows[0][0]
    for start, dur, name in rows:
        end = start + dur
        exposed = max(0.0, end - max(start, latest))
        latest = max(latest, end)
        n, busy, exp = agg.get(name, (0, 0.0, 0.0))
        agg[name] = (n + 1, busy + dur / 1e3, exp + exposed / 1e3)
    span = (latest - rows[0][0]) / 1e3
    print(f"{'kernel':40s} {'launches':>8s} {'busy us':>10s} {'exposed us':>11s} {'share':>7s}")
    for name, (n, busy, exp) in sorted(agg.items(), key=lambda kv: -kv[1][2]):
        print(f"{name[:40]:40s} {n:8d} {busy:10.1f} {exp:11.1f} {100 * exp / span:6.1f}%")
    print(f"{'timeline':40s} {len(rows):8d} {sum(v[1] for v in agg.values()):10.1f} {span:11.1f}")
    if a.last:
        tail = rows[-a.last:]
        t0, prev_end = tail[0][0], None
        print(f"\nlast {len(tail)} kernels (µs from the first of them):")
        for start, dur, name in tail:
            gap = "" if prev_end is None else f"{(start - prev_end) / 1e3:+8.2f}"
            print(f"  {(start - t0) / 1e3:9.2f}  {dur / 1e3:8.2f}  {gap:>8s}  {name[:60]}")
            prev_end = start + dur if prev_end is None else max(prev_end, start + dur)


if __name__ == "__main__":
    main()
