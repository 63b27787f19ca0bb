#!/usr/bin/env python3
"""Train a small target MoE and a draft MoE on Python source code.

Everything needed exists on the training machine (no downloads): the corpus is
the *.py source of the running interpreter (standard library and site-packages).

  1. collects the corpus and splits it by file (~5% held out, chosen by a hash
     of the relative path, never from test directories),
  2. trains a byte-level BPE tokenizer (Qwen2-style split regex, vocab 4096),
  3. trains the TARGET (Qwen3MoeForCausalLM layout, ~15M params, 16 experts,
     top-2) with a load-balancing aux loss,
  4. trains the DRAFT (same family, ~2M params) with 0.2*CE + 0.8*KL(target)
     distillation from the trained target,
  5. saves both with save_pretrained (BF16 safetensors) + tokenizer files,
  6. reloads them with AutoModelForCausalLM, generates samples, estimates the
     greedy k=4 speculative acceptance rate, measures expert load balance on
     the held-out files, and writes MODEL_CARD.md and held-out prompts.

The number of optimizer steps is fixed before training starts (from a short
timing probe and an epoch cap) so that, with the same step counts, a rerun
does the same training.  Pass --target-steps/--draft-steps to reproduce a
recorded run exactly without re-timing.

Usage (GPU machine, ~5-6 min on one H100/H200):
    PYTHONUNBUFFERED=1 python3 experiments/train/train.py
Smoke test (tiny models, a few files, CPU is fine):
    python3 experiments/train/train.py --smoke --device cpu --minutes 0.3 \
        --out /tmp/smoke/models --prompts-out /tmp/smoke/prompts
"""

import os

# cuBLAS needs this set before CUDA is initialised to be deterministic.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import argparse
import hashlib
import json
import math
import platform
import random
import sys
import sysconfig
import time

import torch
import torch.nn.functional as F

import tokenizers
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

EOT = "<|endoftext|>"
# The Qwen2 / Llama-3 pre-tokenizer split pattern.
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}
TEST_DIRS = {"test", "tests", "idle_test"}
HELDOUT_PERCENT = 5

T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:7.1f}s]", *a, flush=True)


# --------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------


def path_hash(rel):
    return int(hashlib.sha256(rel.encode()).hexdigest(), 16)


def collect_corpus(smoke, corpus, max_mb):
    """*.py source present on the machine, sorted by relative path.

    corpus "stdlib": the interpreter's standard library; "stdlib+site": also its
    site-packages (torch, transformers, ...), which gives several times more text.
    When the candidates exceed max_mb, a fixed fraction of files is kept, chosen
    by a hash of the path (deterministic for a given file set; the list and its
    hash go into the model card).

    Returns (roots, files) with files = [(relpath, text, is_heldout)], relpath
    prefixed by "stdlib/" or "site/".  Held-out membership is a hash of the path
    (stable across machines and file-list changes); files in test directories
    always stay in training so the held-out prompts are ordinary library code.
    """
    roots = {"stdlib": sysconfig.get_paths()["stdlib"]}
    if corpus == "stdlib+site":
        roots["site"] = sysconfig.get_paths()["purelib"]
    cands = []
    for label, root in roots.items():
        skip = SKIP_DIRS if label == "stdlib" else {"__pycache__"}
        for d, dirs, fnames in os.walk(root):
            dirs[:] = sorted(x for x in dirs if x not in skip)
            for f in fnames:
                full = os.path.join(d, f)
                if f.endswith(".py") and os.path.isfile(full) and os.path.getsize(full) < 1_000_000:
                    cands.append((label + "/" + os.path.relpath(full, root), full))
    cands.sort()
    if smoke:
        cands = cands[:120]
    total = sum(os.path.getsize(full) for _, full in cands)
    keep_per_10k = 10_000 if total <= max_mb * 1e6 else int(10_000 * max_mb * 1e6 / total)
    files = []
    for rel, full in cands:
        if path_hash(rel) % 10_000 >= keep_per_10k:
            continue
        with open(full, "rb") as fh:
            raw = fh.read()
        # A few test files have deliberately broken encodings; keep them
        # readable and deterministic rather than skipping silently.
        text = raw.decode("utf-8", errors="replace")
        if not text.strip():
            continue
        in_test = any(part in TEST_DIRS for part in rel.split("/")[:-1])
        held = (not in_test) and ((path_hash(rel) >> 32) % 100 < HELDOUT_PERCENT)
        files.append((rel, text, held))
    if smoke and not any(f[2] for f in files):  # make sure the smoke run has a val split
        files = [(r, t, i % 10 == 0) for i, (r, t, _) in enumerate(files)]
    return roots, files


def corpus_sha256(files):
    h = hashlib.sha256()
    for rel, text, _ in files:
        h.update(rel.encode() + b"\0" + text.encode("utf-8") + b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------


def train_tokenizer(train_texts, vocab_size):
    """Byte-level BPE like Qwen2: regex split, then byte-level mapping."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],  # id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: no <unk> ever
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(train_texts, trainer=trainer)
    return tok


def save_tokenizer(tok, out_dir, max_len):
    os.makedirs(out_dir, exist_ok=True)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOT,
        bos_token=EOT,
        pad_token=EOT,
        model_max_length=max_len,
        clean_up_tokenization_spaces=False,
    )
    hf_tok.save_pretrained(out_dir)
    # Also the raw tokenizers file (save_pretrained writes one too; this makes
    # sure it is exactly the trained object).
    tok.save(os.path.join(out_dir, "tokenizer.json"))


def encode_stream(tok, texts, eot_id):
    """Concatenate every file's ids, each file followed by <|endoftext|>."""
    ids = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(eot_id)
    return torch.tensor(ids, dtype=torch.long)


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------


def model_config(kind, vocab, eot_id, smoke):
    if smoke:
        dims = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    head_dim=16, moe_intermediate_size=64, num_experts=4, intermediate_size=128)
    elif kind == "target":
        # ~15M params total (16 experts x 3 x 256 x 256 per layer dominates),
        # ~3M active per token.
        dims = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                    head_dim=32, moe_intermediate_size=256, num_experts=16, intermediate_size=768)
    else:
        # ~2.3M params: several times smaller and shallower than the target.
        dims = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    head_dim=32, moe_intermediate_size=192, num_experts=8, intermediate_size=384)
    return Qwen3MoeConfig(
        vocab_size=vocab,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        max_position_embeddings=1024,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        attention_bias=False,
        hidden_act="silu",
        initializer_range=0.02,
        # The aux loss is requested per forward call during training
        # (output_router_logits=True there); keeping the saved config False
        # means plain inference does not compute it.
        output_router_logits=False,
        router_aux_loss_coef=0.05,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
        use_sliding_window=False,
        **dims,
    )


def param_counts(model):
    cfg = model.config
    total = sum(p.numel() for p in model.parameters())
    expert = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    active = total - expert + expert * cfg.num_experts_per_tok // cfg.num_experts
    embed = model.model.embed_tokens.weight.numel()
    return dict(total=total, experts=expert, active_per_token=active,
                active_non_embedding=active - embed)


def make_train_experts_impl():
    """Grouped-GEMM experts forward that runs the GEMMs in the autocast dtype.

    transformers' grouped_mm experts path casts activations to the *weight*
    dtype; with fp32 master weights under bf16 autocast that means fp32
    grouped GEMMs (torch's grouped_mm is not autocast-aware).  This is the
    same computation (sort tokens by expert, one grouped GEMM for gate_up,
    one for down, weighted sum over the top-k), with weights cast to bf16.
    Used for training only; saved checkpoints are plain Qwen3Moe.
    """
    grouped_mm = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)

    def forward(self, hidden_states, top_k_index, top_k_weights):
        num_tokens, hidden = hidden_states.shape
        k = top_k_index.shape[-1]
        dev = hidden_states.device
        dt = torch.get_autocast_dtype(dev.type) if torch.is_autocast_enabled(dev.type) else hidden_states.dtype
        expert_ids = top_k_index.reshape(-1)
        sorted_ids, perm = torch.sort(expert_ids, stable=True)
        x = hidden_states[perm // k].to(dt)
        hist_in = sorted_ids.float() if dev.type == "cpu" else sorted_ids.int()
        counts = torch.histc(hist_in, bins=self.num_experts, min=0, max=self.num_experts - 1)
        offs = torch.cumsum(counts, dim=0, dtype=torch.int32)
        gate_up = grouped_mm(x, self.gate_up_proj.to(dt).transpose(-2, -1), offs=offs)
        gate, up = gate_up.chunk(2, dim=-1)
        h = self.act_fn(gate) * up
        out = grouped_mm(h, self.down_proj.to(dt).transpose(-2, -1), offs=offs)
        out = out.float() * top_k_weights.reshape(-1)[perm].float().unsqueeze(-1)
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.numel(), device=dev)
        return out[inv].view(num_tokens, k, hidden).sum(dim=1).to(hidden_states.dtype)

    return forward if grouped_mm is not None else None


def build_model(cfg, seed, device, experts_impl):
    torch.manual_seed(seed)  # init on CPU first: same weights on any device
    model = Qwen3MoeForCausalLM(cfg)
    if experts_impl:
        model.set_experts_implementation(experts_impl)
    return model.to(device)


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


class Batcher:
    """Random windows of seq_len+1 tokens from a token stream (seeded)."""

    def __init__(self, data, seq_len, batch, seed, device):
        self.data = data.to(device)
        self.seq_len, self.batch, self.device = seq_len, batch, device
        self.gen = torch.Generator().manual_seed(seed)
        self.ar = torch.arange(seq_len + 1, device=device)

    def next(self):
        starts = torch.randint(0, self.data.numel() - self.seq_len - 1, (self.batch,), generator=self.gen)
        w = self.data[starts.to(self.device)[:, None] + self.ar]
        return w[:, :-1], w[:, 1:]


def make_optimizer(model, lr, device):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]  # norms
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=(device.type == "cuda"))


def lr_at(step, total, peak):
    warm = max(10, total // 30)
    if step < warm:
        return peak * (step + 1) / warm
    prog = (step - warm) / max(1, total - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, prog))))


def autocast(device):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=True)


def per_layer_balance_loss(router_logits, top_k):
    """Switch-style load-balancing loss computed per layer, then averaged (1.0 = balanced).

    transformers' own aux loss pools the router logits of all layers before balancing, so
    one layer can starve experts while another over-serves them and the pooled loss still
    looks balanced; balancing each layer keeps every expert of every layer alive."""
    losses = []
    for logits in router_logits:
        logits = logits.float().reshape(-1, logits.shape[-1])
        n_exp = logits.shape[-1]
        probs = torch.softmax(logits, dim=-1)
        chosen = torch.topk(probs, top_k, dim=-1).indices
        frac_tokens = F.one_hot(chosen, n_exp).float().sum(1).mean(0) / top_k
        losses.append(n_exp * (frac_tokens * probs.mean(0)).sum())
    return torch.stack(losses).mean()


def loss_terms(model, x, y, teacher=None, kd_weight=0.8):
    """(total loss, ce, kl or None, aux) for one batch."""
    out = model(input_ids=x, output_router_logits=True, use_cache=False)
    logits = out.logits.float()
    ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1))
    aux = per_layer_balance_loss(out.router_logits, model.config.num_experts_per_tok) \
        if out.router_logits else out.aux_loss.float()
    coef = model.config.router_aux_loss_coef
    if teacher is None:
        return ce + coef * aux, ce, None, aux
    with torch.no_grad():
        t_logits = teacher(input_ids=x, use_cache=False).logits.float()
    # KL(teacher || student), per token, averaged.
    kl = F.kl_div(
        F.log_softmax(logits, -1).view(-1, logits.shape[-1]),
        F.log_softmax(t_logits, -1).view(-1, logits.shape[-1]),
        log_target=True,
        reduction="batchmean",
    )
    return (1 - kd_weight) * ce + kd_weight * kl + coef * aux, ce, kl, aux


def train_step(model, opt, batcher, device, teacher=None):
    x, y = batcher.next()
    with autocast(device):
        loss, ce, kl, aux = loss_terms(model, x, y, teacher)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss, ce, kl, aux


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def probe_step_time(cfg, args, device, train_data, teacher, experts_impl):
    """Seconds per optimizer step, measured on a throw-away model."""
    model = build_model(cfg, 12345, device, experts_impl).train()
    opt = make_optimizer(model, 1e-4, device)
    b = Batcher(train_data, args.seq_len, args.batch, 999, device)
    n_warm, n_timed = (2, 3) if args.smoke else (5, 20)
    for _ in range(n_warm):
        train_step(model, opt, b, device, teacher)
    sync(device)
    t = time.time()
    for _ in range(n_timed):
        train_step(model, opt, b, device, teacher)
    sync(device)
    dt = (time.time() - t) / n_timed
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return dt


@torch.no_grad()
def evaluate(model, windows, device, batch, teacher=None, gate_counts=None):
    """Mean CE over fixed windows (and KL to teacher if given)."""
    model.eval()
    tot_ce, tot_kl, n = 0.0, 0.0, 0
    for i in range(0, windows.shape[0], batch):
        w = windows[i:i + batch].to(device)
        x, y = w[:, :-1], w[:, 1:]
        with autocast(device):
            logits = model(input_ids=x, use_cache=False).logits.float()
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
            tot_ce += float(ce)
            if teacher is not None:
                t = teacher(input_ids=x, use_cache=False).logits.float()
                tot_kl += float(F.kl_div(F.log_softmax(logits, -1), F.log_softmax(t, -1),
                                         log_target=True, reduction="sum"))
        n += y.numel()
    model.train()
    return tot_ce / n, (tot_kl / n if teacher is not None else None)


def fixed_windows(data, seq_len, max_windows):
    n = min(max_windows, (data.numel() - 1) // seq_len)
    return torch.stack([data[i * seq_len: i * seq_len + seq_len + 1] for i in range(n)])


def train_model(name, cfg, args, device, train_data, val_windows, budget_s, experts_impl,
                teacher=None, forced_steps=None, lr=2e-3, seed=0):
    tokens_per_step = args.batch * args.seq_len
    epoch_cap = int(args.max_epochs * train_data.numel() / tokens_per_step)
    if forced_steps:
        steps, step_s, reason = forced_steps, None, "given on the command line"
    else:
        step_s = probe_step_time(cfg, args, device, train_data, teacher, experts_impl)
        time_steps = max(1, int(budget_s / step_s))
        steps = max(1, min(time_steps, epoch_cap))
        reason = (f"time budget {budget_s:.0f}s / {step_s * 1000:.1f} ms per step = {time_steps}"
                  f"; epoch cap ({args.max_epochs} epochs) = {epoch_cap}")
    log(f"{name}: {steps} steps ({reason}); {tokens_per_step} tokens/step, "
        f"{steps * tokens_per_step / train_data.numel():.2f} epochs")

    model = build_model(cfg, seed, device, experts_impl).train()
    opt = make_optimizer(model, lr, device)
    batcher = Batcher(train_data, args.seq_len, args.batch, seed + 1, device)
    eval_every = max(1, steps // 8)
    curve, recent = [], []
    sync(device)
    t_start = time.time()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr)
        loss, ce, kl, aux = train_step(model, opt, batcher, device, teacher)
        if step >= steps - 50:
            recent.append(ce.detach())
        if (step + 1) % eval_every == 0 or step == steps - 1:
            vce, _ = evaluate(model, val_windows[:64], device, args.batch)
            kl_s = f" kl {float(kl):.3f}" if kl is not None else ""
            log(f"{name} step {step + 1}/{steps} loss {float(loss):.3f} ce {float(ce):.3f}{kl_s} "
                f"aux {float(aux):.3f} val_ce {vce:.3f} lr {opt.param_groups[0]['lr']:.2e}")
            curve.append(dict(step=step + 1, train_ce=round(float(ce), 4), val_ce=round(vce, 4)))
    sync(device)
    wall = time.time() - t_start
    model.eval()
    stats = dict(
        steps=steps,
        step_reason=reason,
        probe_ms_per_step=None if step_s is None else round(step_s * 1000, 2),
        train_seconds=round(wall, 1),
        tokens_per_step=tokens_per_step,
        epochs=round(steps * tokens_per_step / train_data.numel(), 3),
        peak_lr=lr,
        final_train_ce_last50=round(float(torch.stack(recent).mean()), 4),
        curve=curve,
    )
    return model, stats


@torch.no_grad()
def expert_load(model, windows, device, batch):
    """Tokens routed to each expert, per MoE layer, over the given windows."""
    counts = {}
    hooks = []
    for i, layer in enumerate(model.model.layers):
        gate = getattr(layer.mlp, "gate", None)
        if gate is None:
            continue
        counts[i] = torch.zeros(model.config.num_experts, dtype=torch.long)

        def hook(mod, inp, out, i=i):
            counts[i] += torch.bincount(out[2].reshape(-1).cpu(), minlength=model.config.num_experts)

        hooks.append(gate.register_forward_hook(hook))
    evaluate(model, windows, device, batch)
    for h in hooks:
        h.remove()
    res = {}
    for i, c in counts.items():
        mean = c.float().mean()
        res[i] = dict(counts=c.tolist(), max_over_mean=round(float(c.max() / mean), 3),
                      min_over_mean=round(float(c.min() / mean), 3), all_used=bool((c > 0).all()))
    return res


# --------------------------------------------------------------------------
# Prompts, generation and speculative acceptance
# --------------------------------------------------------------------------


def make_heldout_prompts(tok, held_files, n, seed):
    """~n chunks of held-out source, each 32-96 tokens, cut at line boundaries."""
    rng = random.Random(seed)
    prompts = []
    files = [f for f in held_files if len(f[1]) > 400]
    rounds = 0
    while len(prompts) < n and files and rounds < 20:
        rounds += 1
        for rel, text, _ in files:
            if len(prompts) >= n:
                break
            lines = text.splitlines(keepends=True)
            if len(lines) < 8:
                continue
            start = rng.randrange(0, max(1, len(lines) - 8))
            want = rng.randint(32, 96)
            chunk = ""
            for line in lines[start:]:
                cand = chunk + line
                if len(tok.encode(cand).ids) > 96:
                    break
                chunk = cand
                if len(tok.encode(chunk).ids) >= want:
                    break
            ntok = len(tok.encode(chunk).ids)
            if ntok < 32 or len(chunk.strip()) < 20 or any(p["text"] == chunk for p in prompts):
                continue
            prompts.append({"id": f"heldout-{len(prompts):03d}", "source": rel, "n_tokens": ntok, "text": chunk})
    return prompts


SHORT_PROMPTS = [
    "def fibonacci(n):",
    "import os\nimport sys\n\n",
    "class Stack:\n    def __init__(self):",
    "def read_json(path):\n    \"\"\"Read a JSON file and return the parsed object.\"\"\"",
    "for i in range(10):",
    "if __name__ == \"__main__\":",
    "    def __repr__(self):",
    "# Copyright (C) 2024 Python Software Foundation\n",
]


@torch.no_grad()
def greedy_next(model, ids):
    return int(model(input_ids=ids, use_cache=False).logits[0, -1].argmax())


@torch.no_grad()
def speculative_acceptance(target, draft, prompts_ids, device, k=4, max_new=64, eot_id=0):
    """Greedy speculative decoding, counted: draft proposes k tokens greedily,
    the target checks them in one pass; the longest matching prefix is kept,
    plus the target's own next token.  No KV cache: simple and exact."""
    proposed = accepted = target_calls = generated = 0
    hist = [0] * (k + 1)
    for p in prompts_ids:
        ctx = torch.tensor([p], device=device)
        new = 0
        while new < max_new:
            d_ctx = ctx
            props = []
            for _ in range(k):
                t = greedy_next(draft, d_ctx)
                props.append(t)
                d_ctx = torch.cat([d_ctx, torch.tensor([[t]], device=device)], 1)
            logits = target(input_ids=d_ctx, use_cache=False).logits[0]
            target_calls += 1
            # target's greedy choice after ctx, after ctx+prop[0], ...
            choices = logits[ctx.shape[1] - 1:].argmax(-1).tolist()
            n_ok = 0
            while n_ok < k and props[n_ok] == choices[n_ok]:
                n_ok += 1
            hist[n_ok] += 1
            proposed += k
            accepted += n_ok
            keep = props[:n_ok] + [choices[n_ok]]
            ctx = torch.cat([ctx, torch.tensor([keep], device=device)], 1)
            new += len(keep)
            generated += len(keep)
            if eot_id in keep:
                break
    return dict(k=k, prompts=len(prompts_ids), proposed=proposed, accepted=accepted,
                acceptance_rate=round(accepted / max(1, proposed), 4),
                tokens_per_target_call=round(generated / max(1, target_calls), 3),
                accepted_len_histogram=hist)


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="experiments/models", help="models + MODEL_CARD.md go here")
    ap.add_argument("--prompts-out", default="experiments/prompts", help="heldout.jsonl, prompts.txt")
    ap.add_argument("--minutes", type=float, default=5.0,
                    help="training time budget, split 65%% target / 35%% draft")
    ap.add_argument("--corpus", choices=["stdlib", "stdlib+site"], default="stdlib+site",
                    help="which Python sources to train on")
    ap.add_argument("--corpus-mb", type=float, default=40.0, help="cap on corpus size (files sampled by path hash)")
    ap.add_argument("--max-epochs", type=float, default=3.0,
                    help="cap on passes over the training tokens (the corpus is small)")
    ap.add_argument("--target-steps", type=int, default=0, help="fix the step count (skips timing)")
    ap.add_argument("--draft-steps", type=int, default=0, help="fix the step count (skips timing)")
    ap.add_argument("--batch", type=int, default=0, help="sequences per step (default 64; smoke 8)")
    ap.add_argument("--seq-len", type=int, default=0, help="default 256; smoke 64")
    ap.add_argument("--vocab", type=int, default=0, help="default 4096; smoke 512")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny models and corpus, for a quick check")
    ap.add_argument("--stock-experts", action="store_true",
                    help="train with transformers' own experts implementation (slower, no custom grouped GEMM)")
    args = ap.parse_args()
    args.batch = args.batch or (8 if args.smoke else 64)
    args.seq_len = args.seq_len or (64 if args.smoke else 256)
    args.vocab = args.vocab or (512 if args.smoke else 4096)
    device = torch.device(args.device)

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    # Deterministic kernels where PyTorch has them; warn (not fail) elsewhere
    # (e.g. some attention backward kernels).
    torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = f"CPU ({platform.processor() or platform.machine()})"
    log(f"python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, tokenizers {tokenizers.__version__}, device {hardware}")

    # ---- corpus -----------------------------------------------------------
    roots, files = collect_corpus(args.smoke, args.corpus, args.corpus_mb)
    root = ", ".join(f"{k}={v}" for k, v in roots.items())
    train_files = [f for f in files if not f[2]]
    held_files = [f for f in files if f[2]]
    sha = corpus_sha256(files)
    n_bytes = sum(len(t.encode()) for _, t, _ in files)
    log(f"corpus: {len(files)} files under {root} ({n_bytes / 1e6:.1f} MB), "
        f"{len(held_files)} held out; sha256 {sha[:16]}...")

    # ---- tokenizer --------------------------------------------------------
    tok = train_tokenizer([t for _, t, _ in train_files], args.vocab)
    eot_id = tok.token_to_id(EOT)
    train_data = encode_stream(tok, [t for _, t, _ in train_files], eot_id)
    val_data = encode_stream(tok, [t for _, t, _ in held_files], eot_id)
    val_windows = fixed_windows(val_data, args.seq_len, 32 if args.smoke else 512)
    log(f"tokenizer: vocab {tok.get_vocab_size()}, eot id {eot_id}; train {train_data.numel()} tokens "
        f"({n_bytes / max(1, train_data.numel() + val_data.numel()):.2f} bytes/token), "
        f"val {val_data.numel()} tokens, {val_windows.shape[0]} val windows")

    experts_impl = None
    fwd = make_train_experts_impl()
    if fwd is not None and device.type == "cuda" and not args.stock_experts:
        try:
            from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

            ALL_EXPERTS_FUNCTIONS.register("train_grouped_bf16", fwd)
            experts_impl = "train_grouped_bf16"
        except ImportError as e:  # another transformers version: the stock path is only slower
            log(f"custom experts implementation unavailable ({e}); using the stock one")

    budget = args.minutes * 60
    # ---- target -----------------------------------------------------------
    t_cfg = model_config("target", tok.get_vocab_size(), eot_id, args.smoke)
    target, t_stats = train_model("target", t_cfg, args, device, train_data, val_windows, 0.65 * budget,
                                  experts_impl, forced_steps=args.target_steps, lr=2e-3, seed=args.seed)
    t_stats["val_ce"], _ = evaluate(target, val_windows, device, args.batch)
    t_stats["train_ce_eval"], _ = evaluate(target, fixed_windows(train_data, args.seq_len, val_windows.shape[0]),
                                           device, args.batch)
    log(f"target: val ce {t_stats['val_ce']:.4f} (ppl {math.exp(t_stats['val_ce']):.2f}), "
        f"train ce {t_stats['train_ce_eval']:.4f}")

    # ---- draft (distilled from the frozen target) -------------------------
    for p in target.parameters():
        p.requires_grad_(False)
    d_cfg = model_config("draft", tok.get_vocab_size(), eot_id, args.smoke)
    draft, d_stats = train_model("draft", d_cfg, args, device, train_data, val_windows, 0.35 * budget,
                                 experts_impl, teacher=target, forced_steps=args.draft_steps, lr=3e-3,
                                 seed=args.seed + 1)
    d_stats["val_ce"], d_stats["val_kl_to_target"] = evaluate(draft, val_windows, device, args.batch, teacher=target)
    d_stats["train_ce_eval"], _ = evaluate(draft, fixed_windows(train_data, args.seq_len, val_windows.shape[0]),
                                           device, args.batch)
    log(f"draft: val ce {d_stats['val_ce']:.4f} (ppl {math.exp(d_stats['val_ce']):.2f}), "
        f"val KL(target||draft) {d_stats['val_kl_to_target']:.4f}, train ce {d_stats['train_ce_eval']:.4f}")

    # ---- expert load on held-out text ------------------------------------
    loads = {"target": expert_load(target, val_windows, device, args.batch),
             "draft": expert_load(draft, val_windows, device, args.batch)}
    for name, ld in loads.items():
        for i, r in ld.items():
            log(f"{name} layer {i}: max/mean {r['max_over_mean']}, min/mean {r['min_over_mean']}, "
                f"all experts used: {r['all_used']}")

    # ---- save -------------------------------------------------------------
    gen_cfg = GenerationConfig(bos_token_id=eot_id, eos_token_id=eot_id, pad_token_id=eot_id,
                               do_sample=False, max_new_tokens=128)
    counts = {}
    for name, model in (("target", target), ("draft", draft)):
        d = os.path.join(args.out, name)
        model.generation_config = gen_cfg
        counts[name] = param_counts(model)
        # Back to the stock experts implementation so the saved config carries
        # nothing training-specific, then BF16 weights.
        model.set_experts_implementation("eager")
        model.to(torch.bfloat16).save_pretrained(d)
        save_tokenizer(tok, d, t_cfg.max_position_embeddings)
        model.to(torch.float32)
        log(f"saved {d}: {counts[name]['total'] / 1e6:.2f}M params "
            f"({counts[name]['active_per_token'] / 1e6:.2f}M active per token)")
    del target, draft
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # ---- prompts ----------------------------------------------------------
    os.makedirs(args.prompts_out, exist_ok=True)
    prompts = make_heldout_prompts(tok, held_files, 64, args.seed)
    with open(os.path.join(args.prompts_out, "heldout.jsonl"), "w") as fh:
        for p in prompts:
            fh.write(json.dumps(p, ensure_ascii=False) + "\n")
    with open(os.path.join(args.prompts_out, "prompts.txt"), "w") as fh:
        for p in SHORT_PROMPTS:
            fh.write(json.dumps(p) + "\n")
    log(f"wrote {len(prompts)} held-out prompts and {len(SHORT_PROMPTS)} short prompts to {args.prompts_out}")

    # ---- reload with transformers and sanity-check -------------------------
    hf_tok = AutoTokenizer.from_pretrained(os.path.join(args.out, "target"))
    loaded = {}
    for name in ("target", "draft"):
        # fp32 from the bf16 files: the same numbers the C engine computes with.
        m = AutoModelForCausalLM.from_pretrained(os.path.join(args.out, name), dtype=torch.float32)
        loaded[name] = m.to(device).eval()
        assert type(m).__name__ == "Qwen3MoeForCausalLM", type(m).__name__
    samples = []
    for p in prompts[:3]:
        ids = hf_tok(p["text"], return_tensors="pt").input_ids.to(device)
        out = {}
        for name, m in loaded.items():
            g = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False)
            out[name] = hf_tok.decode(g[0, ids.shape[1]:], skip_special_tokens=False)
        samples.append(dict(id=p["id"], prompt=p["text"], **out))
        print("=" * 70 + f"\nPROMPT {p['id']} ({p['source']}):\n{p['text']}\n--- target:\n{out['target']}"
              f"\n--- draft:\n{out['draft']}\n", flush=True)
    short_samples = []
    for sp in SHORT_PROMPTS[:2]:
        ids = hf_tok(sp, return_tensors="pt").input_ids.to(device)
        g = loaded["target"].generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False)
        short_samples.append(dict(prompt=sp, target=hf_tok.decode(g[0, ids.shape[1]:])))
        print(f"PROMPT {sp!r} -> target: {short_samples[-1]['target']!r}", flush=True)

    # Reference logits for specmoe's CPU backend: fp32 on the CPU from the saved bf16 weights,
    # eager attention, on the first held-out prompt (what tests/model.cmake compares against).
    ref_ids = tok.encode(prompts[0]["text"]).ids
    for name in ("target", "draft"):
        m = AutoModelForCausalLM.from_pretrained(os.path.join(args.out, name), dtype=torch.float32,
                                                 attn_implementation="eager").eval()
        ids = torch.tensor([ref_ids])
        with torch.no_grad():
            logits = m(input_ids=ids, use_cache=False).logits[0].float()
            m.generation_config.eos_token_id = None  # exactly 24 argmax tokens, EOS included
            g = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                           pad_token_id=eot_id)
        ref = dict(arch=type(m).__name__, input_ids=ref_ids, positions=list(range(len(ref_ids) - 4, len(ref_ids))),
                   logits=[[float(f"{v:.9g}") for v in row.tolist()] for row in logits[-4:]],
                   greedy=g[0, len(ref_ids):].tolist(), source=prompts[0]["id"],
                   note="transformers fp32 on CPU from the bf16 checkpoint; logits of the last 4 prompt positions")
        with open(os.path.join(args.out, f"reference_{name}.json"), "w") as fh:
            json.dump(ref, fh, separators=(",", ":"))
        log(f"wrote reference logits for {name} ({len(ref_ids)} prompt tokens)")

    acc = speculative_acceptance(loaded["target"], loaded["draft"],
                                 [tok.encode(p["text"]).ids for p in prompts[:16]], device,
                                 k=4, max_new=16 if args.smoke else 64, eot_id=eot_id)
    log(f"transformers-side greedy acceptance (k=4, {acc['prompts']} prompts): "
        f"{acc['acceptance_rate']:.3f}, {acc['tokens_per_target_call']:.2f} tokens per target call, "
        f"histogram {acc['accepted_len_histogram']}")

    # ---- model card -------------------------------------------------------
    wall = time.time() - T0
    stats = dict(
        seed=args.seed, smoke=args.smoke, hardware=hardware, wall_seconds=round(wall, 1),
        versions=dict(python=platform.python_version(), torch=torch.__version__,
                      transformers=transformers.__version__, tokenizers=tokenizers.__version__),
        corpus=dict(root=root, n_files=len(files), n_train_files=len(train_files), n_heldout_files=len(held_files),
                    bytes=n_bytes, sha256=sha, train_tokens=train_data.numel(), val_tokens=val_data.numel(),
                    heldout_files=[f[0] for f in held_files]),
        tokenizer=dict(vocab=tok.get_vocab_size(), eot_id=eot_id,
                       sha256=hashlib.sha256(tok.to_str().encode()).hexdigest()),
        args=vars(args), target=t_stats, draft=d_stats, params=counts, expert_load=loads,
        acceptance=acc, samples=samples, short_samples=short_samples,
    )
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "train_stats.json"), "w") as fh:
        json.dump(stats, fh, indent=1)
    with open(os.path.join(args.out, "corpus_files.txt"), "w") as fh:
        for rel, _, held in files:
            fh.write(f"{'heldout' if held else 'train'}\t{rel}\n")
    write_card(os.path.join(args.out, "MODEL_CARD.md"), stats, t_cfg, d_cfg)
    log(f"done in {wall:.0f}s; wrote {args.out}/MODEL_CARD.md")


def write_card(path, s, t_cfg, d_cfg):
    c, t, d, pc = s["corpus"], s["target"], s["draft"], s["params"]

    def arch(cfg):
        return (f"Qwen3MoeForCausalLM: hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, "
                f"{cfg.num_attention_heads} heads / {cfg.num_key_value_heads} KV heads, head_dim {cfg.head_dim}, "
                f"{cfg.num_experts} experts top-{cfg.num_experts_per_tok} (norm_topk_prob {cfg.norm_topk_prob}), "
                f"moe_intermediate {cfg.moe_intermediate_size}, vocab {cfg.vocab_size}, "
                f"max positions {cfg.max_position_embeddings}, rope theta "
                f"{cfg.rope_parameters['rope_theta']:g}, untied embeddings")

    def load_table(ld):
        rows = ["| layer | max/mean | min/mean | all experts used | tokens per expert |", "|---|---|---|---|---|"]
        for i, r in ld.items():
            rows.append(f"| {i} | {r['max_over_mean']} | {r['min_over_mean']} | {r['all_used']} | "
                        f"{' '.join(map(str, r['counts']))} |")
        return "\n".join(rows)

    a = s["acceptance"]
    smp = s["samples"][0] if s["samples"] else None
    lines = [
        "# specmoe toy target / draft MoE models",
        "",
        "Trained from scratch by `experiments/train/train.py`" + (" (SMOKE RUN: tiny, not for use)" if s["smoke"] else "")
        + ". Toy models for testing speculative decoding in the engine; they write plausible-looking Python.",
        "",
        "## Data",
        f"- Corpus: `*.py` files (< 1 MB) of the Python {s['versions']['python']} interpreter at `{c['root']}` "
        f"(standard library without its site-packages, plus the interpreter's own site-packages; when over "
        f"{s['args']['corpus_mb']} MB, files kept by sha256(path) mod 10000): {c['n_files']} files, "
        f"{c['bytes'] / 1e6:.2f} MB, sha256 of the corpus (path NUL text NUL, in order) `{c['sha256']}`.",
        f"- Held out: {c['n_heldout_files']} files (sha256(path) mod 100 < {HELDOUT_PERCENT}, never from test dirs); "
        f"{c['n_train_files']} files for training. Full list in `corpus_files.txt`.",
        f"- Tokens: {c['train_tokens']:,} train, {c['val_tokens']:,} held-out.",
        f"- Tokenizer: byte-level BPE (Qwen2 split regex + ByteLevel), vocab {s['tokenizer']['vocab']}, "
        f"`<|endoftext|>` = id {s['tokenizer']['eot_id']} (eos/bos/pad), trained on the training files only; "
        f"sha256 of tokenizer.json content `{s['tokenizer']['sha256'][:16]}...`.",
        "",
        "## Models",
        f"- target: {arch(t_cfg)}. Params {pc['target']['total']:,} total, "
        f"{pc['target']['active_per_token']:,} active per token.",
        f"- draft: {arch(d_cfg)}. Params {pc['draft']['total']:,} total, "
        f"{pc['draft']['active_per_token']:,} active per token.",
        "- Weights stored as BF16 `model.safetensors` (transformers save_pretrained layout), plus "
        "config.json, generation_config.json, tokenizer.json, tokenizer_config.json.",
        "",
        "## Training",
        f"- Seed {s['seed']}; hardware {s['hardware']}; total wall time {s['wall_seconds']:.0f}s; "
        f"torch {s['versions']['torch']}, transformers {s['versions']['transformers']}, "
        f"tokenizers {s['versions']['tokenizers']}.",
        f"- AdamW (betas 0.9/0.95, wd 0.1 on matrices), warmup then cosine to 10%, grad clip 1.0, bf16 autocast, "
        f"sequence length {s['args']['seq_len']}, batch {s['args']['batch']} sequences; router load-balancing aux loss "
        f"(Switch-style, per layer, averaged) coef {t_cfg.router_aux_loss_coef}.",
        f"- target: {t['steps']} steps ({t['step_reason']}), {t['epochs']} epochs, peak lr {t['peak_lr']}, "
        f"{t['train_seconds']}s.",
        f"- draft: {d['steps']} steps ({d['step_reason']}), {d['epochs']} epochs, peak lr {d['peak_lr']}, "
        f"{d['train_seconds']}s; loss 0.2 CE + 0.8 KL(target || draft) + aux (distilled).",
        f"- Reproduce exactly: `python3 experiments/train/train.py --seed {s['seed']} --target-steps {t['steps']} "
        f"--draft-steps {d['steps']}` (same software; GPU kernels are not all bitwise deterministic).",
        "",
        "## Results (cross-entropy in nats/token)",
        "| model | train CE (last 50 steps) | train CE (eval) | held-out CE | held-out ppl |",
        "|---|---|---|---|---|",
        f"| target | {t['final_train_ce_last50']} | {t['train_ce_eval']:.4f} | {t['val_ce']:.4f} | "
        f"{math.exp(t['val_ce']):.2f} |",
        f"| draft | {d['final_train_ce_last50']} | {d['train_ce_eval']:.4f} | {d['val_ce']:.4f} | "
        f"{math.exp(d['val_ce']):.2f} |",
        "",
        f"Draft held-out KL(target || draft): {d['val_kl_to_target']:.4f} nats/token.",
        "",
        "Held-out CE during training (first 64 val windows): target "
        + ", ".join(f"{p['step']}: {p['val_ce']}" for p in t["curve"])
        + "; draft " + ", ".join(f"{p['step']}: {p['val_ce']}" for p in d["curve"]) + ".",
        "",
        "## Expert load on the held-out files",
        "Tokens routed to each expert (each token counts top-k times).",
        "",
        "### target",
        load_table(s["expert_load"]["target"]),
        "",
        "### draft",
        load_table(s["expert_load"]["draft"]),
        "",
        "## Speculative acceptance (transformers-side estimate)",
        f"Greedy, fp32 from the saved bf16 weights, k={a['k']}, first {a['prompts']} prompts of "
        f"`prompts/heldout.jsonl`, up to 64 new tokens each: draft tokens accepted "
        f"{a['accepted']}/{a['proposed']} = **{a['acceptance_rate']:.3f}**, "
        f"{a['tokens_per_target_call']:.2f} tokens per target forward; histogram of accepted length 0..{a['k']}: "
        f"{a['accepted_len_histogram']}. The engine measures its own.",
    ]
    if smp:
        lines += [
            "",
            "## Sample (greedy, 40 tokens, reloaded with AutoModelForCausalLM)",
            f"Prompt `{smp['id']}`:",
            "```python",
            smp["prompt"].rstrip("\n"),
            "```",
            "target continuation:",
            "```python",
            smp["target"],
            "```",
            "draft continuation:",
            "```python",
            smp["draft"],
            "```",
        ]
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
