#!/usr/bin/env python3
"""Per-kernel times of one step from a PDL trace (kernels/pdl_trace.h; `specmoe bench decode
--pdl-trace PATH` in a -DSPECMOE_PDL_TRACE=ON build writes PATH.b<batch>).

    python3 scripts/pdl_trace_report.py TRACE [--period P] [--skip S]

Kernels are listed in launch order (%gridid). For each: its block count; `release`, when its
first block's griddepcontrol.wait returned (the kernel before it had completed), in us from the
first release of the step; `crit`, the time to the next kernel's release (the kernel's share of
the step's critical path); `early`, how many of its blocks reached the wait before the release
(resident early: they requested their weights during the kernel before); `late`, how long after
the release the last block reached the wait (blocks that had no room until others left).
With --period P (kernels per layer), the kernels after the first S are also averaged by their
place in the layer.
"""
import argparse
import collections
import statistics
import sys


def load(path):
    grids = collections.OrderedDict()
    with open(path) as f:
        for line in f:
            if line.startswith('#'):
                if 'OVERFLOW' in line:
                    print('warning: the trace overflowed; later kernels are missing', file=sys.stderr)
                continue
            g, block, nblocks, sm, kind, t0, t1 = map(int, line.split())
            grids.setdefault(g, {'blocks': nblocks, 'trig': [], 'wait': []})
            (grids[g]['wait'] if kind == 1 else grids[g]['trig']).append((t0, t1, block, sm))
    return [dict(grid=g, **v) for g, v in sorted(grids.items())]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('trace')
    ap.add_argument('--period', type=int, default=0)
    ap.add_argument('--skip', type=int, default=1)
    ap.add_argument('--show', type=int, default=40, help='kernels listed one by one')
    a = ap.parse_args()
    ks = [k for k in load(a.trace) if k['wait']]
    if not ks:
        sys.exit('no kernel with a PDL wait in the trace')
    for k in ks:
        k['release'] = min(t1 for _, t1, _, _ in k['wait'])
        k['early'] = sum(1 for t0, _, _, _ in k['wait'] if t0 < k['release'])
        k['late'] = max(t0 for t0, _, _, _ in k['wait']) - k['release']
        k['first'] = min([t0 for t0, _, _, _ in k['wait']] + [t0 for t0, _, _, _ in k['trig']])
    base = ks[0]['release']
    for i, k in enumerate(ks):
        k['crit'] = (ks[i + 1]['release'] - k['release']) if i + 1 < len(ks) else float('nan')
    total = (ks[-1]['release'] - base) / 1e3
    print(f'{len(ks)} kernels with a PDL wait; first release to last release {total:.1f} us')
    print(f'{"#":>4} {"blocks":>7} {"release":>9} {"crit":>7} {"early":>6} {"late":>7} {"arrived":>8}')
    for i, k in enumerate(ks[:a.show]):
        print(f'{i:>4} {k["blocks"]:>7} {(k["release"] - base) / 1e3:>9.2f} {k["crit"] / 1e3:>7.2f} '
              f'{k["early"]:>6} {k["late"] / 1e3:>7.2f} {(k["first"] - k["release"]) / 1e3:>8.2f}')
    if a.period:
        body = ks[a.skip:]
        n = len(body) // a.period
        print(f'\naveraged over {n} layers (period {a.period}, after {a.skip} kernels): '
              f'{sum(k["crit"] for k in body[:n * a.period]) / 1e3 / max(n, 1):.2f} us a layer')
        print(f'{"place":>5} {"blocks":>7} {"crit":>7} {"early":>7} {"late":>7} {"arrived":>8}')
        for p in range(a.period):
            sel = [body[j * a.period + p] for j in range(n)]
            print(f'{p:>5} {sel[0]["blocks"]:>7} {statistics.mean(k["crit"] for k in sel) / 1e3:>7.2f} '
                  f'{statistics.mean(k["early"] for k in sel):>7.1f} {statistics.mean(k["late"] for k in sel) / 1e3:>7.2f} '
                  f'{statistics.mean(k["first"] - k["release"] for k in sel) / 1e3:>8.2f}')
        tail = ks[a.skip + n * a.period:]
        for k in tail:
            print(f'tail  {k["blocks"]:>7} {k["crit"] / 1e3:>7.2f} {k["early"]:>7} {k["late"] / 1e3:>7.2f}')


if __name__ == '__main__':
    main()
