/* src/cuda/model_cuda_weights.c — the GPU model's memory plan and its BF16 device weights, read
 * from a checkpoint (any of F32/BF16/F16, converted once) or drawn at random from a seed. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "attention.h"
#include "core/dtype.h"
#include "cuda/cuda_check.h"
#include "cuda/gemm_lt.h"
#include "cuda/model_cuda_internal.h"
#include "cuda/moe_device.h"
#include "fill_random.h"
#include "moe_pointers.h"
#include "moe/runners/runners.h"

#define ALIGN_UP(n) (((n) + 255) / 256 * 256)
#define GIB(b) ((double)(b) / (double)(1ull << 30))

sm_status sm_cuda_model_pick_runner(const char *name, const sm_runner_backend **out, sm_error *err) {
    /* auto: `cuda` routes on the device, so the whole step can be captured in a CUDA graph */
    const char *n = !name || !strcmp(name, "auto") ? "cuda" : name;
    const sm_runner_backend *b = sm_runner_find(n, false);
    if (!b || !sm_runner_has_device_path(b))
        return sm_fail(err, SM_EINVAL, "MoE runner backend '%s' cannot run in a GPU model (GPU runners: cuda, cublaslt)", n);
    *out = b;
    return SM_OK;
}

/* ---- memory plan --------------------------------------------------------------------------- */

static size_t qkv_rows(const sm_model_config *c) {
    return (size_t)(c->num_heads + 2 * c->num_kv_heads) * c->head_dim;
}

size_t sm_cuda_model_weight_bytes(const sm_model_config *c, const sm_runner_backend *runner) {
    size_t H = (size_t)c->hidden_size, V = (size_t)c->vocab_size, qd = (size_t)c->num_heads * c->head_dim;
    size_t kvd = (size_t)c->num_kv_heads * c->head_dim, b = 0;
    b += ALIGN_UP(V * H * 2) + ALIGN_UP(H * 2);
    if (!c->tie_word_embeddings) b += ALIGN_UP(V * H * 2);
    size_t hp = (size_t)sm_moe_device_stride(c->hidden_size), fp = (size_t)sm_moe_device_stride(c->moe_intermediate_size);
    for (int l = 0; l < c->num_layers; l++) {
        b += 2 * ALIGN_UP(H * 2) + ALIGN_UP(qkv_rows(c) * H * 2) + ALIGN_UP(H * qd * 2);
        if (c->qkv_bias) b += ALIGN_UP(qkv_rows(c) * 2);
        if (c->qk_norm == SM_QK_NORM_PER_HEAD) b += 2 * ALIGN_UP((size_t)c->head_dim * 2);
        if (c->qk_norm == SM_QK_NORM_FULL) b += ALIGN_UP(qd * 2) + ALIGN_UP(kvd * 2);
        bool moe = c->layer_is_moe && c->layer_is_moe[l];
        if (!moe) {
            b += 3 * ALIGN_UP((size_t)c->intermediate_size * H * 2);
            continue;
        }
        b += ALIGN_UP((size_t)c->num_experts * H * 2);
        b += (size_t)c->num_experts * 3 * fp * hp * 2; /* the runner's expert slabs */
        if (c->shared_expert_intermediate_size > 0)
            b += 3 * ALIGN_UP((size_t)c->shared_expert_intermediate_size * H * 2) + ALIGN_UP(H * 2);
    }
    (void)runner;
    return b;
}

size_t sm_cuda_model_kv_bytes(const sm_model_config *c, int max_seqs, int max_context) {
    return 2 * (size_t)c->num_layers * (size_t)max_seqs * (size_t)max_context * (size_t)c->num_kv_heads * c->head_dim * 2;
}

size_t sm_cuda_model_workspace_bytes(const sm_model_config *c, const sm_runner_backend *runner, int chunk_rows) {
    size_t R = (size_t)chunk_rows, K = (size_t)(c->num_experts_per_tok > 0 ? c->num_experts_per_tok : 1);
    size_t A = R * K, H = (size_t)c->hidden_size, qd = (size_t)c->num_heads * c->head_dim, E = (size_t)c->num_experts;
    size_t hp = (size_t)sm_moe_device_stride(c->hidden_size), fp = (size_t)sm_moe_device_stride(c->moe_intermediate_size);
    size_t F = (size_t)c->intermediate_size;
    if ((size_t)c->shared_expert_intermediate_size > F) F = (size_t)c->shared_expert_intermediate_size;
    size_t b = 0;
    b += R * H * 4 + R * H * 2 + R * qd * 2 + R * qkv_rows(c) * 4;      /* x, h, attention out, qkv */
    b += R * 2 * F * 2 + R * F * 2;                                     /* dense / shared MLP */
    b += (size_t)sm_cuda_logit_rows(chunk_rows) * c->vocab_size * 4;    /* logits */
    b += sm_cuda_attention_split_bytes(c->num_heads, c->head_dim);      /* split-context attention */
    if (E) {
        b += R * E * 4 + 2 * A * 4 + (E + 1) * 4 + 3 * A * 4 + R * 4; /* router, top-k, permutation, gate */
        b += 2 * A * hp * 2;                                            /* permuted inputs and outputs */
        b += A * fp * 2;                                                /* runner: SwiGLU activations */
        if (runner == &sm_runner_cublaslt) /* gate|up outputs, pointer-array tables, cuBLASLt workspace */
            b += A * 2 * fp * 2 + A * (SM_MOE_PTR_EXPERT_TABLES + SM_MOE_PTR_ROW_TABLES) * sizeof(void *) +
                 ((size_t)32 << 20);
    }
    b += 16 * 256 + 4 * R * 4;                                          /* alignment, row tables */
    return b + sm_gemm_lt_device_bytes();
}

sm_status sm_cuda_model_check_fit(const char *what, const dev_plan *p, sm_error *err) {
    SM_TRY(sm_cuda_device_ready(err));
    size_t free_b = 0, total_b = 0;
    SM_TRY(sm_cuda_check(cudaMemGetInfo(&free_b, &total_b), err, "%s: querying free device memory", what));
    size_t need = p->weights + p->kv + p->workspace;
    if (need <= free_b) return SM_OK;
    struct cudaDeviceProp prop;
    const char *gpu = cudaGetDeviceProperties(&prop, 0) == cudaSuccess ? prop.name : "the GPU";
    return sm_fail(err, SM_ENOMEM,
                   "%s: needs %.2f GiB (weights %.2f, KV cache %.2f, workspace %.2f), %.2f GiB free on %s", what,
                   GIB(need), GIB(p->weights), GIB(p->kv), GIB(p->workspace), GIB(free_b), gpu);
}

/* ---- device weights ------------------------------------------------------------------------ */

typedef struct carver {
    char *base;
    size_t used, cap;
} carver;

static sm_bf16_bits *carve(carver *a, size_t elems) {
    sm_bf16_bits *p = (sm_bf16_bits *)(a->base + a->used);
    a->used += ALIGN_UP(elems * 2);
    return a->used <= a->cap ? p : NULL;
}

/* t (any float dtype) as BF16 at dst + offset elements. */
static sm_status upload(sm_bf16_bits *dst, const sm_tensor *t, sm_error *err) {
    int64_t n = sm_tensor_numel(t);
    if (t->dtype == SM_DTYPE_BF16)
        return sm_cuda_check(cudaMemcpy(dst, t->data, (size_t)n * 2, cudaMemcpyHostToDevice), err, "copying %s to the device",
                             t->name);
    float *f;
    sm_bf16_bits *h;
    SM_TRY(sm_alloc((void **)&f, (size_t)n * sizeof *f, t->name, err));
    sm_status s = sm_tensor_to_f32(t, f, n, err);
    if (!s) s = sm_alloc((void **)&h, (size_t)n * sizeof *h, t->name, err);
    if (!s) {
        for (int64_t i = 0; i < n; i++) h[i] = sm_f32_to_bf16(f[i]);
        s = sm_cuda_check(cudaMemcpy(dst, h, (size_t)n * 2, cudaMemcpyHostToDevice), err, "copying %s to the device", t->name);
        free(h);
    }
    free(f);
    return s;
}

typedef struct filler {
    bool random;
    uint64_t seed, counter;
    const sm_bf16_bits *ones;  /* device, long enough for any norm weight */
    cudaStream_t stream;
} filler;

/* A weight matrix: read from t, or uniform in ±1/sqrt(fan_in) (keeps activations O(1)). */
static sm_status fill(filler *f, sm_bf16_bits *dst, const sm_tensor *t, size_t elems, int fan_in, sm_error *err) {
    if (!f->random) return upload(dst, t, err);
    return sm_cuda_fill_uniform_bf16(f->stream, dst, elems, f->seed * 1000003ull + f->counter++,
                                     1.0f / sqrtf((float)fan_in), err);
}

/* A norm weight: read, or all ones. */
static sm_status fill_norm(filler *f, sm_bf16_bits *dst, const sm_tensor *t, size_t elems, sm_error *err) {
    if (!f->random) return upload(dst, t, err);
    return sm_cuda_check(cudaMemcpyAsync(dst, f->ones, elems * 2, cudaMemcpyDeviceToDevice, f->stream), err,
                         "setting a norm weight to ones");
}

static sm_status load_layer(dev_weights *w, filler *f, carver *a, int l, sm_error *err) {
    const sm_model_config *c = w->cfg;
    const sm_layer_tensors *T = w->ck ? &w->ck->layers[l] : NULL;
    static const sm_tensor none = {0};
#define TS(field) (T ? &T->field : &none)
    dev_layer *L = &w->layers[l];
    size_t H = (size_t)c->hidden_size, qd = (size_t)c->num_heads * c->head_dim;
    size_t kvd = (size_t)c->num_kv_heads * c->head_dim;
    L->attn_norm = carve(a, H);
    L->mlp_norm = carve(a, H);
    L->qkv = carve(a, qkv_rows(c) * H);
    L->o = carve(a, H * qd);
    SM_TRY(fill_norm(f, L->attn_norm, TS(attn_norm), H, err));
    SM_TRY(fill_norm(f, L->mlp_norm, TS(mlp_norm), H, err));
    SM_TRY(fill(f, L->qkv, TS(q), qd * H, (int)H, err));
    SM_TRY(fill(f, L->qkv + qd * H, TS(k), kvd * H, (int)H, err));
    SM_TRY(fill(f, L->qkv + (qd + kvd) * H, TS(v), kvd * H, (int)H, err));
    SM_TRY(fill(f, L->o, TS(o), H * qd, (int)qd, err));
    if (c->qkv_bias) {
        L->qkv_bias = carve(a, qkv_rows(c));
        SM_TRY(fill(f, L->qkv_bias, TS(q_bias), qd, 1024, err));
        SM_TRY(fill(f, L->qkv_bias + qd, TS(k_bias), kvd, 1024, err));
        SM_TRY(fill(f, L->qkv_bias + qd + kvd, TS(v_bias), kvd, 1024, err));
    }
    if (c->qk_norm != SM_QK_NORM_NONE) {
        bool per_head = c->qk_norm == SM_QK_NORM_PER_HEAD;
        size_t qn = per_head ? (size_t)c->head_dim : qd, kn = per_head ? (size_t)c->head_dim : kvd;
        L->q_norm = carve(a, qn);
        L->k_norm = carve(a, kn);
        SM_TRY(fill_norm(f, L->q_norm, TS(q_norm), qn, err));
        SM_TRY(fill_norm(f, L->k_norm, TS(k_norm), kn, err));
    }
    L->is_moe = c->layer_is_moe && c->layer_is_moe[l];
    const sm_expert_tensors *mlp = NULL;
    if (!L->is_moe) {
        L->ffn = c->intermediate_size;
        mlp = T ? &T->dense : NULL;
    } else {
        L->router = carve(a, (size_t)c->num_experts * H);
        SM_TRY(fill(f, L->router, TS(router), (size_t)c->num_experts * H, (int)H, err));
        if (c->shared_expert_intermediate_size > 0) {
            L->ffn = c->shared_expert_intermediate_size;
            mlp = T ? &T->shared : NULL;
            if (c->shared_expert_gate) {
                L->shared_gate = carve(a, H);
                SM_TRY(fill(f, L->shared_gate, TS(shared_gate), H, (int)H, err));
            }
        }
    }
    if (L->ffn > 0) {
        size_t F = (size_t)L->ffn;
        L->gate_up = carve(a, 2 * F * H);
        L->down = carve(a, H * F);
        static const sm_expert_tensors no_mlp = {0};
        if (!mlp) mlp = &no_mlp;
        SM_TRY(fill(f, L->gate_up, &mlp->gate, F * H, (int)H, err));
        SM_TRY(fill(f, L->gate_up + F * H, &mlp->up, F * H, (int)H, err));
        SM_TRY(fill(f, L->down, &mlp->down, H * F, (int)F, err));
    }
#undef TS
    if (!a->base || a->used > a->cap)
        return sm_fail(err, SM_EINTERNAL, "%s: the weight arena is smaller than layer %d needs", w->dir, l);
    return SM_OK;
}

static sm_status load_experts(dev_weights *w, filler *f, sm_error *err) {
    const sm_model_config *c = w->cfg;
    for (int l = 0; l < c->num_layers; l++) {
        if (!w->layers[l].is_moe) continue;
        if (f->random) {
            float scale = 1.0f / sqrtf((float)c->hidden_size);
            sm_status s = sm_runner_device_random_layer(w->runner_backend, w->runner, l, f->seed * 7919ull + (uint64_t)l,
                                                        scale, err);
            if (s) return sm_error_prefix(err, "%s: random experts of layer %d: ", w->dir, l);
            continue;
        }
        for (int e = 0; e < c->num_experts; e++) {
            const sm_expert_tensors *x = &w->ck->layers[l].experts[e];
            if (x->gate.dtype != x->up.dtype || x->gate.dtype != x->down.dtype)
                return sm_fail(err, SM_EUNSUPPORTED, "%s: expert %d of layer %d mixes dtypes", w->dir, e, l);
            sm_expert_weights ew = {.dtype = x->gate.dtype, .gate = x->gate.data, .up = x->up.data, .down = x->down.data};
            if (w->runner_backend->load_expert(w->runner, l, e, &ew, err))
                return sm_error_prefix(err, "%s: loading expert %d of layer %d: ", w->dir, e, l);
        }
    }
    return SM_OK;
}

void sm_cuda_weights_release(dev_weights *w) {
    if (!w || --w->refcount > 0) return;
    cudaDeviceSynchronize(); /* no forward of any instance may still read what is freed */
    if (w->runner) w->runner_backend->destroy(w->runner);
    cudaFree(w->arena);
    free(w->layers);
    sm_tokenizer_free(w->tok);
    if (w->ck) sm_checkpoint_close(w->ck);
    else sm_config_free(&w->own_cfg);
    free(w);
}

static sm_status weights_fill(dev_weights *w, const sm_model_opts *opts, size_t arena_bytes, sm_error *err) {
    const sm_model_config *c = w->cfg;
    SM_TRY(sm_cuda_check(cudaMalloc(&w->arena, arena_bytes), err, "%s: allocating %.2f GiB of weights", w->dir,
                         GIB(arena_bytes)));
    filler f = {.random = opts->random_weights, .seed = opts->seed, .stream = 0};
    sm_bf16_bits *ones = NULL;
    size_t longest = (size_t)c->hidden_size;
    size_t qd = (size_t)c->num_heads * c->head_dim;
    if (qd > longest) longest = qd;
    if (f.random) {
        sm_bf16_bits *h;
        SM_TRY(sm_alloc((void **)&h, longest * 2, "ones", err));
        for (size_t i = 0; i < longest; i++) h[i] = sm_f32_to_bf16(1.0f);
        sm_status s = sm_cuda_check(cudaMalloc((void **)&ones, longest * 2), err, "allocating norm weights");
        if (!s) s = sm_cuda_check(cudaMemcpy(ones, h, longest * 2, cudaMemcpyHostToDevice), err, "copying norm weights");
        free(h);
        if (s) { cudaFree(ones); return s; }
        f.ones = ones;
    }
    carver a = {.base = w->arena, .cap = arena_bytes};
    static const sm_tensor none = {0};
    size_t H = (size_t)c->hidden_size, V = (size_t)c->vocab_size;
    sm_status s = SM_OK;
    w->embed = carve(&a, V * H);
    w->final_norm = carve(&a, H);
    w->lm_head = c->tie_word_embeddings ? w->embed : carve(&a, V * H);
    if (!s) s = fill(&f, w->embed, w->ck ? &w->ck->embed : &none, V * H, 1, err);
    if (!s) s = fill_norm(&f, w->final_norm, w->ck ? &w->ck->final_norm : &none, H, err);
    if (!s && !c->tie_word_embeddings) s = fill(&f, w->lm_head, w->ck ? &w->ck->lm_head : &none, V * H, (int)H, err);
    if (!s) s = sm_calloc((void **)&w->layers, (size_t)c->num_layers, sizeof *w->layers, "GPU layers", err);
    for (int l = 0; l < c->num_layers && !s; l++) s = load_layer(w, &f, &a, l, err);
    if (!s && sm_config_is_moe(c)) {
        sm_moe_shape shape = {.num_layers = c->num_layers, .num_experts = c->num_experts, .hidden = c->hidden_size,
                              .ffn = c->moe_intermediate_size, .top_k = c->num_experts_per_tok,
                              .max_rows = w->chunk_rows};
        sm_runner_opts ropts = {.weight_dtype = SM_DTYPE_BF16};
        s = w->runner_backend->create(&shape, &ropts, &w->runner, err);
        if (!s) s = load_experts(w, &f, err);
        if (!s) s = sm_runner_device_reserve(w->runner_backend, w->runner, w->assign_cap, err);
        if (!s) w->device_routing_max_assign = sm_runner_device_routing_max_assign(w->runner_backend, w->runner);
    }
    if (!s) s = sm_cuda_check(cudaDeviceSynchronize(), err, "%s: uploading weights", w->dir);
    cudaFree(ones);
    return s;
}

sm_status sm_cuda_weights_load(const char *dir, const sm_model_opts *opts, int max_seqs, int max_context,
                               dev_weights **out, sm_error *err) {
    dev_weights *w;
    SM_TRY(sm_calloc((void **)&w, 1, sizeof *w, "GPU model weights", err));
    w->refcount = 1;
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    sm_status s;
    if (opts->random_weights) {
        char path[4200];
        snprintf(path, sizeof path, "%s/config.json", dir);
        s = sm_config_load(path, &w->own_cfg, err);
        if (s) { free(w); return s; }
        w->cfg = &w->own_cfg;
    } else {
        s = sm_checkpoint_open(dir, &w->ck, err);
        if (s) { free(w); return s; }
        w->cfg = &w->ck->cfg;
    }
    const sm_model_config *c = w->cfg;
    w->device_routing_max_assign = INT_MAX; /* no routing at all in a dense model; a MoE runner says below */
    w->chunk_rows = opts->chunked_prefill_size > 0 ? opts->chunked_prefill_size : SM_CUDA_DEFAULT_CHUNK_ROWS;
    if (w->chunk_rows > SM_CUDA_MAX_CHUNK_ROWS) {
        s = sm_fail(err, SM_EINVAL, "%s: chunked_prefill_size %d is over %d rows", dir, w->chunk_rows,
                    SM_CUDA_MAX_CHUNK_ROWS);
        goto fail;
    }
    w->assign_cap = w->chunk_rows * (c->num_experts_per_tok > 0 ? c->num_experts_per_tok : 1);
    if ((s = sm_tokenizer_load_dir(dir, &w->tok, err))) goto fail;
    if (sm_config_is_moe(c)) {
        if ((s = sm_cuda_model_pick_runner(opts->moe_runner_backend, &w->runner_backend, err))) goto fail;
    }
    if (c->head_dim > 256 || c->head_dim % 2) {
        s = sm_fail(err, SM_EUNSUPPORTED, "%s: head_dim %d: the GPU attention takes even head_dim up to 256", dir, c->head_dim);
        goto fail;
    }
    if (opts->random_weights && sm_config_is_moe(c) && (c->hidden_size % 8 || c->moe_intermediate_size % 8)) {
        s = sm_fail(err, SM_EUNSUPPORTED, "%s: random expert weights need hidden_size and moe_intermediate_size "
                    "multiples of 8", dir);
        goto fail;
    }
    /* Everything is planned before the first allocation. */
    dev_plan plan = {.weights = sm_cuda_model_weight_bytes(c, w->runner_backend),
                     .kv = sm_cuda_model_kv_bytes(c, max_seqs, max_context),
                     .workspace = sm_cuda_model_workspace_bytes(c, w->runner_backend, w->chunk_rows)};
    char what[4300];
    snprintf(what, sizeof what, "%s (%d sequences x %d positions)", dir, max_seqs, max_context);
    if ((s = sm_cuda_model_check_fit(what, &plan, err))) goto fail;
    /* the arena holds every dense weight; experts live in the runner */
    size_t arena = plan.weights;
    if (sm_config_is_moe(c)) {
        size_t hp = (size_t)sm_moe_device_stride(c->hidden_size), fp = (size_t)sm_moe_device_stride(c->moe_intermediate_size);
        for (int l = 0; l < c->num_layers; l++)
            if (c->layer_is_moe && c->layer_is_moe[l]) arena -= (size_t)c->num_experts * 3 * fp * hp * 2;
    }
    if ((s = weights_fill(w, opts, arena, err))) goto fail;
    *out = w;
    return SM_OK;
fail:
    sm_cuda_weights_release(w);
    return s;
}
