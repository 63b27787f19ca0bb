#!/usr/bin/env python3
"""Peer for `specmoe bench moe-layer`: one MoE layer with torch._grouped_mm, timed the same way.

Same shapes, same routing (the C bench's generator is replicated: per token count, top-k
distinct uniform experts from the same xorshift state), same method: the layer is captured once
in a CUDA graph; each timed replay follows a write of 2x the L2 size and is bracketed by CUDA
events; the median is reported, with achieved bandwidth over the bytes of the activated experts
next to the device copy bandwidth measured here (read + write), and TFLOP/s.

    python3 bench/peer_grouped_mm.py --preset qwen3-30b-a3b --tokens 1,8,64,4096 [--json]
"""
import argparse
import json
import statistics
import sys

PRESETS = {"qwen3-30b-a3b": (2048, 768, 128, 8), "mixtral-8x7b": (4096, 14336, 8, 2)}
MASK = (1 << 64) - 1


def routing_counts(tokens, experts, top_k, state):
    """Per-expert assignment counts; mirrors make_routing in src/cuda/bench_moe.c."""
    counts = [0] * experts
    for _ in range(tokens):
        picked = []
        for _ in range(top_k):
            while True:
                state ^= (state << 13) & MASK
                state ^= state >> 7
                state ^= (state << 17) & MASK
                e = state % experts
                if e not in picked:
                    break
            picked.append(e)
            counts[e] += 1
    return counts, state


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="qwen3-30b-a3b", choices=sorted(PRESETS))
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--ffn", type=int)
    ap.add_argument("--experts", type=int)
    ap.add_argument("--top-k", type=int)
    ap.add_argument("--tokens", default="1,2,4,8,16,32,64,128,256,512,1024,2048,4096")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("peer_grouped_mm: no CUDA device", file=sys.stderr)
        return 1
    H, F, E, K = PRESETS[a.preset]
    H, F, E, K = a.hidden or H, a.ffn or F, a.experts or E, a.top_k or K
    label = a.preset if not (a.hidden or a.ffn or a.experts or a.top_k) else "custom"
    tokens = [int(t) for t in a.tokens.split(",")]
    dev = torch.device("cuda")
    torch.manual_seed(a.seed)

    l2 = torch.cuda.get_device_properties(dev).L2_cache_size or (64 << 20)
    flush = torch.empty(2 * l2, dtype=torch.uint8, device=dev)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def time_graph(graph, iters, warmup):
        return time_fn(graph.replay, iters, warmup)

    def time_fn(fn, iters, warmup):
        ms = []
        for i in range(warmup + iters):
            flush.fill_(i & 0xFF)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            if i >= warmup:
                ms.append(start.elapsed_time(stop))
        return statistics.median(ms)

    def capture(fn):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(2):
                fn()  # warm-up outside the graph (lazy init, autotuning)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        return g

    # copy bandwidth, read + write; not in a graph, where the copy becomes a slower copy-engine
    # node (as in src/cuda/bench_moe.c)
    src = torch.empty(1 << 30, dtype=torch.uint8, device=dev).random_()
    dst = torch.empty_like(src)
    copy_ms = time_fn(lambda: dst.copy_(src), a.iters, 2)
    copy_bw = 2 * src.numel() / (copy_ms * 1e-3)
    del src, dst

    w_gu = (torch.rand(E, 2 * F, H, device=dev, dtype=torch.bfloat16) - 0.5) * 0.04  # [E, 2F, H]
    w_dn = (torch.rand(E, H, F, device=dev, dtype=torch.bfloat16) - 0.5) * 0.04  # [E, H, F]
    max_assign = max(tokens) * K
    x_all = torch.randn(max_assign, H, device=dev, dtype=torch.bfloat16)
    wt_all = torch.full((max_assign, 1), 1.0 / K, device=dev, dtype=torch.bfloat16)

    if not a.json:
        print(f"# peer torch._grouped_mm {label}: hidden {H} ffn {F} experts {E} top-k {K} on "
              f"{torch.cuda.get_device_name(dev)} (torch {torch.__version__}); copy bandwidth {copy_bw / 1e9:.0f} GB/s; "
              f"median of {a.iters} graph replays, L2 flushed")
        print(f"{'peer':<12} {'tokens':>6} {'assign':>7} {'active':>6} {'time_us':>10} {'GB/s':>9} {'%copy':>7} {'TFLOP/s':>8}")
    state = (a.seed * 2654435761 + 1) & MASK
    for t in tokens:
        counts, state = routing_counts(t, E, K, state)
        n = t * K
        offs = torch.tensor(counts, dtype=torch.int64).cumsum(0).to(torch.int32).to(dev)
        x, wt = x_all[:n], wt_all[:n]

        def layer():
            gu = torch._grouped_mm(x, w_gu.transpose(-2, -1), offs=offs)
            act = torch.nn.functional.silu(gu[:, :F]) * gu[:, F:] * wt
            return torch._grouped_mm(act, w_dn.transpose(-2, -1), offs=offs)

        ms = time_graph(capture(layer), a.iters, a.warmup)
        active = sum(1 for c in counts if c)
        nbytes = active * 3 * H * F * 2
        flops = 2 * n * 3 * H * F
        bw, tf = nbytes / (ms * 1e-3), flops / (ms * 1e-3)
        if a.json:
            print(json.dumps({"bench": "moe-layer", "shape": label, "hidden": H, "ffn": F, "experts": E, "top_k": K,
                              "runner": "torch._grouped_mm", "tokens": t, "assignments": n, "active_experts": active,
                              "us": round(ms * 1e3, 2), "bytes": nbytes, "gbps": round(bw / 1e9, 1),
                              "copy_gbps": round(copy_bw / 1e9, 1), "bw_ratio": round(bw / copy_bw, 3),
                              "tflops": round(tf / 1e12, 2)}))
        else:
            print(f"{'_grouped_mm':<12} {t:>6} {n:>7} {active:>6} {ms * 1e3:>10.1f} {bw / 1e9:>9.0f} "
                  f"{100 * bw / copy_bw:>6.1f}% {tf / 1e12:>8.2f}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
