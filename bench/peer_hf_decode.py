#!/usr/bin/env python3
"""Peer for `specmoe bench decode`: Hugging Face transformers decoding the same model, timed the same way.

The model is the bench's qwen3-30b-a3b preset (the exact config.json of src/cli/cmd_bench_decode.c, 48
layers, bf16), built from the config with random weights drawn on the device, so nothing is downloaded.
Per batch size B: B fresh sequences each prefill the same 32-token prompt as the C bench
((97i + 13q + 1) mod V), then every decode step feeds one token per sequence ((31s + 7q + 3) mod V) and
computes logits for all B rows; a step is timed on the host around the forward call with a device
synchronisation on each side, and the reported figure is the upper median (sorted[steps // 2]) of
--steps steps after --warmup untimed ones, as in src/cuda/bench_decode.c. (The C bench also copies the
fp32 logits to the host; here they stay on the device in bf16.)

Modes (--modes, comma separated; default all three):
  generate-eager            what model.generate does per token, without its sampling bookkeeping: eager
                            forward, DynamicCache, the default experts implementation (grouped_mm).
  static-compile-<impl>     StaticCache, the one-token decode forward under torch.compile
                            (--compile-mode, default reduce-overhead = inductor + CUDA graphs: decode is
                            launch-bound, and this is also the mode generate() picks for a static cache),
                            fullgraph; --dynamic auto (default, what generate() does) compiles batch 1 and
                            then one dynamic-batch graph that later batch sizes reuse with a fresh CUDA-graph
                            capture, --dynamic false compiles per batch size. <impl> is the transformers
                            experts implementation: batched_mm or grouped_mm (eager also accepted).
  dynamic-<impl>            like generate-eager with a named experts implementation.
The experts implementation is switched with model.set_experts_implementation(impl) (transformers 5:
config._experts_implementation, read by the @use_experts_implementation forward on every call), and
each mode first checks with one eager forward that the named function really runs in every MoE layer.
A mode or batch that fails prints the error (OOM is reported as such) and the rest still run;
--max-seconds skips a mode/batch that would likely end past it (default 540 s, to finish inside a 10-minute
job). The first decode step (compile and/or CUDA-graph capture) is reported apart as compile_s.
Compiling the 48-layer model takes minutes, so give each compiled mode its own run:

    python3 bench/peer_hf_decode.py --modes generate-eager --json
    python3 bench/peer_hf_decode.py --modes static-compile-grouped_mm --json
    python3 bench/peer_hf_decode.py --modes static-compile-batched_mm --json
    python3 bench/peer_hf_decode.py --layers 4 --steps 10                  # every mode, quick, shallow
    python3 bench/peer_hf_decode.py --device cpu --tiny --layers 2 --batch 1,2 --steps 3   # code-path check
"""
import argparse
import gc
import json
import sys
import time

PRESETS = {
    "qwen3-30b-a3b": {
        "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
        "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
        "intermediate_size": 6144, "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
        "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 151936,
        "max_position_embeddings": 40960, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False, "attention_bias": False, "bos_token_id": 151643, "eos_token_id": 151645,
    },
}
# --tiny: the same architecture shrunk so the code paths run on a CPU in seconds
TINY = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "intermediate_size": 128, "moe_intermediate_size": 32, "num_experts": 8, "num_experts_per_tok": 2,
        "vocab_size": 512, "bos_token_id": 1, "eos_token_id": 2}
DEFAULT_MODES = "generate-eager,static-compile-batched_mm,static-compile-grouped_mm"


def log(a, msg):
    print(msg, file=sys.stderr if a.json else sys.stdout, flush=True)


def build_config(a):
    cfg = dict(PRESETS[a.preset])
    if a.tiny:
        cfg.update(TINY)
    if a.config:
        with open(a.config) as f:
            cfg.update(json.load(f))
    if a.layers:
        cfg["num_hidden_layers"] = a.layers
    return cfg


def param_counts(cfg):
    """Total and per-token-active parameters (every layer MoE, as in the preset)."""
    H, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or H // cfg["num_attention_heads"]
    attn = H * hd * (2 * cfg["num_attention_heads"] + 2 * cfg["num_key_value_heads"]) + 2 * hd
    expert = 3 * H * cfg["moe_intermediate_size"]
    E, K = cfg["num_experts"], cfg["num_experts_per_tok"]
    per_layer = attn + 2 * H + E * H
    emb = V * H * (1 if cfg.get("tie_word_embeddings") else 2)
    return L * (per_layer + E * expert) + emb + H, L * (per_layer + K * expert) + emb + H


def parse_mode(mode):
    """(kind, experts implementation or None for the default) of a mode name."""
    if mode == "generate-eager":
        return "dynamic", None
    for kind in ("static-compile", "dynamic"):
        if mode.startswith(kind + "-"):
            return kind, mode[len(kind) + 1:]
    raise ValueError(f"unknown mode '{mode}' (generate-eager, static-compile-<impl>, dynamic-<impl>)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="qwen3-30b-a3b", choices=sorted(PRESETS))
    ap.add_argument("--config", help="JSON file whose keys override the preset's config")
    ap.add_argument("--layers", type=int, help="num_hidden_layers (default: the preset's 48)")
    ap.add_argument("--tiny", action="store_true", help="shrink hidden/heads/experts/vocab for a quick code-path check")
    ap.add_argument("--batch", default="1,4,16,64")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (compiled modes take at least 3)")
    ap.add_argument("--modes", default=DEFAULT_MODES)
    ap.add_argument("--compile-mode", default="reduce-overhead",
                    help="torch.compile mode: reduce-overhead (default), max-autotune, default, max-autotune-no-cudagraphs")
    ap.add_argument("--no-fullgraph", action="store_true", help="allow graph breaks in the compiled decode step")
    ap.add_argument("--dynamic", choices=("auto", "false"), default="auto",
                    help="auto (default, as generate() compiles): torch's automatic dynamic shapes, so the batch sizes "
                         "after the first two reuse one graph and cost only a CUDA-graph capture; false: one graph "
                         "specialised per batch size (a full compile each)")
    ap.add_argument("--max-seconds", type=float, default=540,
                    help="skip a mode/batch that would likely end past this many seconds from the start (default 540)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object with every result (log to stderr)")
    a = ap.parse_args()
    batches = [int(b) for b in a.batch.split(",")]
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    for m in modes:
        parse_mode(m)
    if a.prompt < 1 or a.steps < 1 or a.warmup < 0 or min(batches) < 1:
        ap.error("need --prompt >= 1, --steps >= 1, --warmup >= 0, batches >= 1")

    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, StaticCache
    from torch._dynamo.utils import counters
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    t_start = time.perf_counter()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("peer_hf_decode: no CUDA device (try --device cpu --tiny)", file=sys.stderr)
        return 1
    dtype = getattr(torch, a.dtype)
    dynamic = None if a.dynamic == "auto" else False
    cuda = dev.type == "cuda"
    dev_name = torch.cuda.get_device_name(dev) if cuda else "cpu"

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    def free():
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    cfg = build_config(a)
    label = a.preset + ("" if not (a.config or a.tiny or a.layers) else " (modified)")
    total_p, active_p = param_counts(cfg)
    cfg_args = dict(cfg)
    config = AutoConfig.for_model(cfg_args.pop("model_type"), **cfg_args)
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    # Built under the device context so every parameter is allocated and normal_-initialised there
    # (a 30B model initialised on a CPU would take many minutes); dtype makes them bf16 from the start.
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    sync()
    t_init = time.perf_counter() - t0
    default_impl = model.config._experts_implementation
    V, L = cfg["vocab_size"], cfg["num_hidden_layers"]
    n_moe = sum(1 for mod in model.modules() if type(mod).__name__.endswith("Experts"))
    log(a, f"# peer transformers decode {label}: {L} layers, {total_p / 1e9:.2f}B params ({active_p / 1e9:.2f}B active), "
           f"random weights ({a.dtype}), on {dev_name}; torch {torch.__version__}, transformers {transformers.__version__}")
    log(a, f"# init {t_init:.1f} s; default experts implementation {default_impl}; attention {model.config._attn_implementation}; "
           f"prompt {a.prompt} tokens per sequence; median of {a.steps} steps after {a.warmup} warm-up; "
           f"compile mode {a.compile_mode}{'' if a.no_fullgraph else ', fullgraph'}, dynamic {a.dynamic}")
    if cuda:
        log(a, f"# GPU memory after init {torch.cuda.memory_allocated(dev) / 2**30:.1f} GiB")

    def prompt_ids(B):
        return torch.tensor([[(97 * i + 13 * q + 1) % V for i in range(a.prompt)] for q in range(B)], device=dev)

    def step_inputs(B, n):
        ids = [torch.tensor([[(31 * s + 7 * q + 3) % V] for q in range(B)], device=dev) for s in range(n)]
        pos = [torch.full((B, 1), a.prompt + s, dtype=torch.long, device=dev) for s in range(n)]
        return ids, pos

    def check_dispatch(impl):
        """One eager forward with the named experts function wrapped in a counter: it must run in every MoE layer."""
        name = impl or default_impl
        if name not in ALL_EXPERTS_FUNCTIONS:
            return f"{name} (class forward, not checked)"
        fn, calls = ALL_EXPERTS_FUNCTIONS[name], [0]

        def spy(*args, **kwargs):
            calls[0] += 1
            return fn(*args, **kwargs)

        ALL_EXPERTS_FUNCTIONS[name] = spy
        try:
            with torch.inference_mode():
                model(input_ids=prompt_ids(1)[:, :2], use_cache=False)
        finally:
            del ALL_EXPERTS_FUNCTIONS[name]
        if calls[0] != n_moe:
            raise RuntimeError(f"experts dispatch check: {name} ran {calls[0]} times, expected {n_moe}")
        return f"{fn.__name__} x{calls[0]}"

    def make_compiled():
        return torch.compile(model, mode=None if a.compile_mode == "default" else a.compile_mode,
                             fullgraph=not a.no_fullgraph, dynamic=dynamic)

    log(a, f"{'mode':<28} {'batch':>5} {'ms/step':>10} {'tokens/s':>12}")
    results = []
    deadline = t_start + a.max_seconds
    longest = {"dynamic": 0.0, "static-compile": 0.0}  # longest (mode, batch) so far, to keep clear of the deadline
    for mode in modes:
        kind, impl = parse_mode(mode)
        compiled = None
        try:
            model.set_experts_implementation(impl or default_impl)
            if model.config._experts_implementation != (impl or default_impl):
                raise RuntimeError(f"set_experts_implementation({impl}) left {model.config._experts_implementation}")
            dispatch = check_dispatch(impl)
        except Exception as e:  # noqa: BLE001 - report and go on to the next mode
            log(a, f"{mode}: setup failed: {type(e).__name__}: {e}")
            for B in batches:
                results.append({"mode": mode, "batch": B, "status": f"error: {type(e).__name__}: {e}"[:300]})
            continue
        log(a, f"# {mode}: experts implementation {model.config._experts_implementation} -> {dispatch}")
        if kind == "static-compile":
            torch._dynamo.reset()
            # one graph per batch size (and per StaticCache object): stay clear of the recompile limit
            torch._dynamo.config.recompile_limit = max(64, torch._dynamo.config.recompile_limit)
            compiled = make_compiled()
        warmup = max(a.warmup, 3) if kind == "static-compile" else a.warmup
        for B in batches:
            r = {"mode": mode, "experts_implementation": model.config._experts_implementation, "batch": B}
            results.append(r)
            if time.perf_counter() + longest[kind] > deadline:
                r["status"] = "skipped (--max-seconds)"
                log(a, f"{mode:<28} {B:>5}  skipped (--max-seconds)")
                continue
            cache = None
            t_batch = time.perf_counter()
            try:
                n = warmup + a.steps
                if cuda:
                    torch.cuda.reset_peak_memory_stats(dev)
                skips0 = counters["inductor"]["cudagraph_skips"]
                ids, pos = step_inputs(B, n)
                with torch.inference_mode():
                    if kind == "static-compile":
                        cache = StaticCache(config=model.config, max_cache_len=a.prompt + n + 8)
                    else:
                        cache = DynamicCache(config=model.config)
                    model(input_ids=prompt_ids(B), past_key_values=cache, use_cache=True, logits_to_keep=1)
                    fwd = compiled if compiled is not None else model
                    times = []
                    for s in range(n):
                        if compiled is not None and cuda:
                            torch.compiler.cudagraph_mark_step_begin()
                        sync()
                        ts = time.perf_counter()
                        out = fwd(input_ids=ids[s], position_ids=pos[s], past_key_values=cache, use_cache=True)
                        sync()
                        times.append(time.perf_counter() - ts)
                        if not torch.isfinite(out.logits[:, -1, :8].float()).all():
                            raise RuntimeError(f"non-finite logits at step {s}")
                        del out
                timed = sorted(times[warmup:])
                med = timed[len(timed) // 2]
                r.update(status="ok", ms=round(med * 1e3, 3), tokens_per_s=round(B / med, 1),
                         min_ms=round(timed[0] * 1e3, 3), first_step_s=round(times[0], 2))
                extra = ""
                if kind == "static-compile":
                    r["compile_s"] = round(times[0], 1)
                    extra += f"   first step (compile) {times[0]:.1f} s"
                    if cuda and a.compile_mode in ("reduce-overhead", "max-autotune"):
                        # inductor falls back to plain launches (and says why on stderr) when a graph cannot be captured
                        skips = counters["inductor"]["cudagraph_skips"] - skips0
                        r["cudagraph_skips"] = skips
                        extra += f"   cudagraph skips {skips}" if skips else ""
                if cuda:
                    r["peak_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 1)
                    extra += f"   peak {r['peak_gib']:.1f} GiB"
                log(a, f"{mode:<28} {B:>5} {med * 1e3:>10.3f} {B / med:>12.1f}{extra}")
            except Exception as e:  # noqa: BLE001 - report and go on
                # inductor and CUDA-graph capture can re-raise an allocation failure as a plain RuntimeError
                oom = isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()
                r["status"] = "OOM" if oom else f"error: {type(e).__name__}: {e}"[:300]
                log(a, f"{mode:<28} {B:>5}  {r['status']}")
            finally:
                longest[kind] = max(longest[kind], time.perf_counter() - t_batch)
                del cache
                if r.get("status") != "ok" and compiled is not None:
                    # a failed capture can leave the CUDA-graph pool half built: start clean for the next batch
                    torch._dynamo.reset()
                    compiled = make_compiled()
                free()
        if compiled is not None:
            del compiled
            torch._dynamo.reset()
            free()

    best = []
    for B in batches:
        ok = [r for r in results if r["batch"] == B and r.get("status") == "ok"]
        if ok:
            b = min(ok, key=lambda r: r["ms"])
            best.append({"batch": B, "mode": b["mode"], "ms": b["ms"], "tokens_per_s": b["tokens_per_s"]})
    if a.json:
        print(json.dumps({"bench": "decode", "peer": "transformers", "shape": label, "layers": L,
                          "params": total_p, "active_params": active_p, "dtype": a.dtype, "device": dev_name,
                          "torch": torch.__version__, "transformers": transformers.__version__,
                          "prompt": a.prompt, "steps": a.steps, "warmup": a.warmup, "compile_mode": a.compile_mode, "dynamic": a.dynamic,
                          "fullgraph": not a.no_fullgraph, "default_experts_implementation": default_impl,
                          "init_s": round(t_init, 1), "results": results, "hf_best": best}))
    else:
        print(f"\n{'hf-best':<8} {'batch':>5} {'ms/step':>10} {'tokens/s':>12}  mode")
        for b in best:
            print(f"{'hf-best':<8} {b['batch']:>5} {b['ms']:>10.3f} {b['tokens_per_s']:>12.1f}  {b['mode']}")
        print(f"# total {time.perf_counter() - t_start:.0f} s")
    model = None  # the closures above share this cell: dropping it frees the weights
    free()
    return 0


if __name__ == "__main__":
    sys.exit(main())
