/* src/cuda/model_cuda.c — the model on the GPU (device "cuda"): BF16 weights, BF16 KV cache, an
 * fp32 residual stream, and the forward of model.c's CPU reference step for step:
 *   embed → per layer [ RMSNorm → qkv GEMM (+bias) → q/k norm → RoPE → K/V into the cache →
 *   attention → o_proj GEMM (+= residual) → RMSNorm → MoE (router GEMM → top-k → permute →
 *   device runner → combine, + shared expert) or dense MLP (gate|up GEMM → SiLU·mul → down GEMM
 *   += residual) ] → final RMSNorm of the rows that want logits → lm_head GEMM.
 * Small decode shapes take fused kernels (RMSNorm inside the q|k|v and router GEMVs; q/k norm +
 * RoPE + KV write, with attention too for a single row; routing; combine + the next layer's
 * norm) and a weight-streaming GEMV instead of cuBLASLt, chained with programmatic dependent
 * launch. A forward runs in passes of at most chunk_rows rows (sm_rows_next_pass: a prompt piece
 * of PROMPT_RUN_MIN_ROWS or more gets a pass of its own and the prefill attention kernel).
 * Everything runs on the instance's stream with one synchronisation per pass (the logits or
 * sampled tokens; a route observer adds one, its routing being logged on the device during the
 * step), except where the `cublaslt` runner needs each layer's expert offsets on the host (past
 * sm_runner_device_routing_max_assign). Decode-sized steps (up to GRAPH_MAX_ROWS rows) are
 * captured once per shape (rows, rows with logits, attention plan, prompt run, observed) as a
 * CUDA graph and replayed: every kernel reads tokens, sequences and positions from device
 * memory, so a graph stays valid for any rows of that shape. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "attention.h"
#include "cuda/cuda_check.h"
#include "cuda/gemm_lt.h"
#include "cuda/model_cuda_internal.h"
#include "cuda/moe_dev.h" /* sm_moe_dev_grow for the sampling buffers */
#include "cuda/moe_device.h"
#include "fused_ops.h"
#include "gemv.h"
#include "model_ops.h"
#include "router_topk.h"
#include "sample.h"
#include "silu_mul.h"

#define GRAPH_MAX_ROWS 64
/* From this many rows of one sequence at consecutive positions (a prompt chunk), attention runs
 * the prefill kernel: 64 query rows share each K/V tile there. It is above the largest
 * verification step (SM_SPEC_MAX_K + 1 = 65 rows a sequence), so verification keeps the fp32
 * kernel that decoding uses and the two do not differ in rounding (the prefill kernel rounds q
 * and the softmax weights to BF16); shorter prompts cost little either way. */
#define PROMPT_RUN_MIN_ROWS 128
#define GRAPH_SLOTS 64
/* rows up to which the RMSNorm goes inside the GEMV after it (see instance_create) */
#define NORM_GEMV_MAX_ROWS 1

typedef struct step_graph {
    int n_rows, n_logits;
    sm_attn_plan attn;        /* the attention's block layout (attention.h) */
    bool prompt_run;          /* the prefill attention kernel (step.prompt_run) */
    bool distinct_seqs;       /* step.distinct_seqs */
    bool observed;            /* the step logs routing for a route observer */
    int seen;                 /* eager runs of this shape so far: capture on the second */
    bool failed;              /* capture did not work for this shape: stay eager */
    cudaGraphExec_t exec;
} step_graph;

struct sm_model_dev {
    dev_weights *w;
    int max_seqs, max_context;
    bool eager;               /* never capture graphs */
    bool leave_out_moe;       /* sm_model_opts.leave_out_moe: steps skip every MoE block */
    int norm_gemv_max_rows;   /* RMSNorm fused into the GEMV after it up to this many rows (norm_in_gemv) */
    cudaStream_t stream;
    sm_gemm_lt *gemm;
    void *kv, *ws;
    sm_bf16_bits **k_cache, **v_cache;  /* [layer] -> [max_seqs][max_context][kvd] */
    /* row table (device, and its pinned host twin): tokens | seqs | positions | logit rows */
    int *d_rows, *h_rows;
    /* workspace, for chunk_rows rows */
    float *x, *qkv, *router_logits, *topk_w, *sorted_w, *gate, *logits;
    sm_bf16_bits *h, *attn, *gu, *act, *xs, *ys;
    int *topk_ids, *offsets, *sorted_src, *sorted_pos;
    void *attn_split;         /* split-context attention's workspace (attention.h), zeroed at create */
    size_t attn_split_bytes;
    int sm_count;             /* of the device: sizes the attention split */
    /* routing of every MoE layer of a step, logged on the device for a route observer and copied
     * to the host once after the step (so an observed step needs no per-layer synchronisation and
     * can be a graph): [num_layers][assign_cap], device and pinned host; allocated on first use */
    int *route_ids, *h_route_ids;
    float *route_w, *h_route_w;
    /* host copies for the cublaslt runner (pinned) */
    int *h_offsets;
    step_graph graphs[GRAPH_SLOTS];
    int n_graphs;
    /* device sampling (sm_forward_opts.sample), grown on first use outside any graph */
    float *d_probs;           /* [rows][vocab]: filtered distributions of a forward's logits rows */
    float *d_q;               /* draft distributions uploaded for verification */
    void *d_small;            /* ids, counts and uniforms of one sampling call */
    size_t probs_bytes, q_bytes, small_bytes;
};

/* ---- workspace layout ---------------------------------------------------------------------- */

typedef struct ws_carver {
    char *base;
    size_t used;
} ws_carver;

static void *wcarve(ws_carver *c, size_t bytes) {
    void *p = c->base ? c->base + c->used : NULL;
    c->used += (bytes + 255) / 256 * 256;
    return p;
}

/* Sets the instance's workspace pointers inside base (NULL: only sizes). Returns the bytes. */
static size_t ws_layout(sm_model_dev *m, char *base) {
    const sm_model_config *c = m->w->cfg;
    size_t R = (size_t)m->w->chunk_rows, A = (size_t)m->w->assign_cap, H = (size_t)c->hidden_size;
    size_t qd = (size_t)c->num_heads * c->head_dim, qkv = qd + 2 * (size_t)c->num_kv_heads * c->head_dim;
    size_t E = (size_t)c->num_experts, hp = (size_t)sm_moe_device_stride(c->hidden_size);
    size_t F = (size_t)c->intermediate_size;
    if ((size_t)c->shared_expert_intermediate_size > F) F = (size_t)c->shared_expert_intermediate_size;
    ws_carver w = {.base = base};
    m->d_rows = wcarve(&w, 4 * R * sizeof(int));
    m->x = wcarve(&w, R * H * 4);
    m->h = wcarve(&w, R * H * 2);
    m->attn = wcarve(&w, R * qd * 2);
    m->qkv = wcarve(&w, R * qkv * 4);
    m->gu = wcarve(&w, R * 2 * F * 2);
    m->act = wcarve(&w, R * F * 2);
    m->logits = wcarve(&w, (size_t)sm_cuda_logit_rows(m->w->chunk_rows) * c->vocab_size * 4);
    m->attn_split_bytes = sm_cuda_attention_split_bytes(c->num_heads, c->head_dim);
    m->attn_split = wcarve(&w, m->attn_split_bytes);
    if (E) {
        m->router_logits = wcarve(&w, R * E * 4);
        m->topk_ids = wcarve(&w, A * 4);
        m->topk_w = wcarve(&w, A * 4);
        m->offsets = wcarve(&w, (E + 1) * 4);
        m->sorted_src = wcarve(&w, A * 4);
        m->sorted_pos = wcarve(&w, A * 4);
        m->sorted_w = wcarve(&w, A * 4);
        m->gate = wcarve(&w, R * 4);
        m->xs = wcarve(&w, A * hp * 2);
        m->ys = wcarve(&w, A * hp * 2);
    }
    return w.used;
}

/* ---- instances ----------------------------------------------------------------------------- */

static void dev_free(sm_model_dev *m) {
    if (!m) return;
    if (m->stream) cudaStreamSynchronize(m->stream);
    for (int i = 0; i < m->n_graphs; i++)
        if (m->graphs[i].exec) cudaGraphExecDestroy(m->graphs[i].exec);
    sm_gemm_lt_destroy(m->gemm);
    cudaFree(m->kv);
    cudaFree(m->ws);
    cudaFree(m->d_probs);
    cudaFree(m->route_ids);
    cudaFree(m->route_w);
    cudaFreeHost(m->h_route_ids);
    cudaFreeHost(m->h_route_w);
    cudaFree(m->d_q);
    cudaFree(m->d_small);
    cudaFreeHost(m->h_rows);
    cudaFreeHost(m->h_offsets);
    free(m->k_cache);
    free(m->v_cache);
    if (m->stream) cudaStreamDestroy(m->stream);
    sm_cuda_weights_release(m->w);
    free(m);
}

/* An instance over loaded weights (takes one reference): KV cache, workspace, stream. check_fit:
 * plan KV + workspace against free memory first (forks; a fresh load checked it with weights). */
static sm_status instance_create(dev_weights *w, const sm_model_opts *opts, int max_seqs, int max_context,
                                 bool check_fit, sm_model_dev **out, sm_error *err) {
    sm_model_dev *m;
    sm_status s = sm_calloc((void **)&m, 1, sizeof *m, "GPU model", err);
    if (s) { sm_cuda_weights_release(w); return s; }
    m->w = w;
    m->max_seqs = max_seqs;
    m->max_context = max_context;
    m->eager = opts && opts->eager;
    m->leave_out_moe = opts && opts->leave_out_moe;
    /* Every CTA of a norm-in GEMV recomputes the norm of all rows from the fp32 residual. At one
     * row that costs less than the launch it saves; from two rows, where the GEMV runs on tensor
     * cores and is otherwise short, it costs more (H100, Qwen3-30B shape, decode step: b2 4.55 ms
     * fused against 4.52, b4 6.95 against 6.80; without the MoE blocks b4 1.96 against 1.51).
     * SPECMOE_NORM_GEMV_MAX_ROWS overrides the limit (A/B). */
    const char *norm_rows = getenv("SPECMOE_NORM_GEMV_MAX_ROWS");
    m->norm_gemv_max_rows = NORM_GEMV_MAX_ROWS;
    if (norm_rows) {
        char *end;
        long v = strtol(norm_rows, &end, 10);
        if (end == norm_rows || *end || v < 0 || v > SM_GEMV_MAX_ROWS) {
            s = sm_fail(err, SM_EINVAL, "SPECMOE_NORM_GEMV_MAX_ROWS=%s: not a row count 0..%d", norm_rows,
                        SM_GEMV_MAX_ROWS);
            goto fail;
        }
        m->norm_gemv_max_rows = (int)v;
    }
    const sm_model_config *c = w->cfg;
    size_t kv_bytes = sm_cuda_model_kv_bytes(c, max_seqs, max_context), ws_bytes = ws_layout(m, NULL);
    if (check_fit) {
        dev_plan plan = {.weights = 0, .kv = kv_bytes, .workspace = ws_bytes + sm_gemm_lt_device_bytes()};
        char what[4300];
        snprintf(what, sizeof what, "%s (fork, %d sequences x %d positions)", w->dir, max_seqs, max_context);
        if ((s = sm_cuda_model_check_fit(what, &plan, err))) goto fail;
    }
    size_t E = (size_t)c->num_experts;
    if ((s = sm_cuda_check(cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking), err, "GPU model: creating a stream")) ||
        (s = sm_gemm_lt_create(&m->gemm, err)) ||
        (s = sm_cuda_check(cudaMalloc(&m->kv, kv_bytes), err, "GPU model: allocating the KV cache (%.2f GiB)",
                           (double)kv_bytes / (1 << 30))) ||
        (s = sm_cuda_check(cudaMalloc(&m->ws, ws_bytes), err, "GPU model: allocating %zu bytes of workspace", ws_bytes)) ||
        (s = sm_cuda_check(cudaMallocHost((void **)&m->h_rows, 4 * (size_t)w->chunk_rows * sizeof(int)), err,
                           "GPU model: pinned row table")) ||
        (s = sm_cuda_check(cudaMallocHost((void **)&m->h_offsets, (E + 1) * sizeof(int)), err, "GPU model: pinned offsets")) ||
        (s = sm_calloc((void **)&m->k_cache, (size_t)c->num_layers, sizeof *m->k_cache, "KV table", err)) ||
        (s = sm_calloc((void **)&m->v_cache, (size_t)c->num_layers, sizeof *m->v_cache, "KV table", err)))
        goto fail;
    ws_layout(m, m->ws);
    int dev = 0;
    if ((s = sm_cuda_check(cudaGetDevice(&dev), err, "GPU model: current device")) ||
        (s = sm_cuda_check(cudaDeviceGetAttribute(&m->sm_count, cudaDevAttrMultiProcessorCount, dev), err,
                           "GPU model: SM count")))
        goto fail;
    size_t per = (size_t)max_seqs * max_context * c->num_kv_heads * c->head_dim;
    for (int l = 0; l < c->num_layers; l++) {
        m->k_cache[l] = (sm_bf16_bits *)m->kv + 2 * (size_t)l * per;
        m->v_cache[l] = m->k_cache[l] + per;
    }
    /* never-written cache entries read as zeros, not NaN garbage, if a bug ever reads them */
    if ((s = sm_cuda_check(cudaMemsetAsync(m->kv, 0, kv_bytes, m->stream), err, "GPU model: clearing the KV cache")) ||
        (s = sm_cuda_check(cudaMemsetAsync(m->attn_split, 0, m->attn_split_bytes, m->stream), err,
                           "GPU model: clearing the attention workspace")) ||
        (s = sm_cuda_check(cudaStreamSynchronize(m->stream), err, "GPU model: clearing the KV cache")))
        goto fail;
    *out = m;
    return SM_OK;
fail:
    dev_free(m);
    return s;
}

static sm_status dev_load(const char *dir, const sm_model_opts *opts, int max_seqs, int max_context, sm_model_dev **out,
                          sm_error *err) {
    dev_weights *w;
    SM_TRY(sm_cuda_weights_load(dir, opts, max_seqs, max_context, &w, err));
    return instance_create(w, opts, max_seqs, max_context, false, out, err);
}

static sm_status dev_fork(sm_model_dev *base, const sm_model_opts *opts, int max_seqs, int max_context,
                          sm_model_dev **out, sm_error *err) {
    base->w->refcount++;
    return instance_create(base->w, opts, max_seqs, max_context, true, out, err);
}

static const sm_model_config *dev_cfg(const sm_model_dev *m) { return m->w->cfg; }
static const sm_tokenizer *dev_tokenizer(const sm_model_dev *m) { return m->w->tok; }
static const char *dev_dir(const sm_model_dev *m) { return m->w->dir; }

/* ---- the step ------------------------------------------------------------------------------ */

typedef struct step {
    int n, n_logits, top_k;
    sm_attn_plan attn; /* sm_cuda_attention_plan for the step's rows and longest context */
    bool prompt_run;   /* rows are consecutive positions of one sequence: the prefill attention kernel */
    bool distinct_seqs; /* every row of another sequence (a decode batch): one attention launch with the
                          q/k norm, RoPE and K/V write inside (sm_cuda_attention_decode_qk) */
    const bool *skip;
    const sm_route_observer *observer;
    bool h_ready; /* m->h already holds the next layer's attention input (fused into the MoE combine) */
} step;

/* Up to this many rows the fused routing launch beats top-k + permute + gather (measured on an
 * H200, 2026-11-23: 6.6 vs 11.0 µs at 1 row, 7.0 vs 11.3 at 8, 18.3 vs 15.0 at 64). */
#define FUSED_ROUTE_MAX_ROWS 16

/* y = x · wᵀ (+ beta · y): decode-sized row counts through our weight-streaming GEMV (cuBLASLt's
 * tiles reached 55% of copy bandwidth on the q|k|v projection at one row on an H200, 2026-11-23),
 * everything larger through cuBLASLt. */
/* Whether the RMSNorm in front of a projection of `rows` rows goes inside its GEMV. */
static bool norm_in_gemv(const sm_model_dev *m, int rows, int n, int k, const sm_bf16_bits *w) {
    return rows <= m->norm_gemv_max_rows && sm_cuda_gemv_norm_fits(rows, n, k, w);
}

static sm_status proj(sm_model_dev *m, const sm_bf16_bits *x, const sm_bf16_bits *w, void *y, bool y_f32, float beta,
                      int rows, int n, int k, sm_error *err) {
    if (sm_cuda_gemv_fits(rows, n, k, x, w)) return sm_cuda_gemv_xwt(m->stream, x, w, y, y_f32, beta, rows, n, k, err);
    return sm_gemm_lt_xwt(m->gemm, m->stream, x, w, y, y_f32, beta, rows, n, k, err);
}

/* y += down(silu(gate_up h) * up h) (* per-row scale) */
static sm_status mlp(sm_model_dev *m, const sm_bf16_bits *gate_up, const sm_bf16_bits *down, int ffn,
                     const float *row_scale, int n, sm_error *err) {
    int H = m->w->cfg->hidden_size;
    SM_TRY(proj(m, m->h, gate_up, m->gu, false, 0.0f, n, 2 * ffn, H, err));
    SM_TRY(sm_cuda_silu_mul(m->stream, m->gu, row_scale, m->act, n, ffn, err));
    return proj(m, m->act, down, m->x, true, 1.0f, n, H, ffn, err);
}

/* next_norm: the next layer's attention norm, fused into the combine when the layer has no shared
 * expert (then st->h_ready is set); NULL after the last layer. */
static sm_status moe(sm_model_dev *m, int l, step *st, const sm_bf16_bits *next_norm, sm_error *err) {
    const dev_weights *w = m->w;
    const sm_model_config *c = w->cfg;
    const dev_layer *L = &w->layers[l];
    cudaStream_t s = m->stream;
    int n = st->n, k = st->top_k, E = c->num_experts, H = c->hidden_size, hp = sm_moe_device_stride(H);
    int n_assign = n * k;
    if (norm_in_gemv(m, n, E, H, L->router)) { /* the norm inside the router GEMV, which also writes h */
        SM_TRY(sm_cuda_gemv_norm_xwt(s, m->x, L->mlp_norm, c->rms_norm_eps, m->h, L->router, m->router_logits, true, 0.0f,
                                     n, E, H, err));
    } else {
        SM_TRY(sm_cuda_rmsnorm_f32(s, m->x, NULL, L->mlp_norm, NULL, m->h, n, H, c->rms_norm_eps, err));
        SM_TRY(proj(m, m->h, L->router, m->router_logits, true, 0.0f, n, E, H, err));
    }
    bool fused_route = n <= FUSED_ROUTE_MAX_ROWS && E <= SM_MOE_ROUTE_MAX_EXPERTS && n_assign <= SM_MOE_ROUTE_MAX_ASSIGN;
    /* Observed steps route straight into the layer's slot of the routing log (reported after the
     * step): copying it there took two memcpy nodes a layer, which also cut the kernels'
     * programmatic overlap. */
    int *ids = m->topk_ids;
    float *wts = m->topk_w;
    if (st->observer) {
        ids = m->route_ids + (size_t)l * w->assign_cap;
        wts = m->route_w + (size_t)l * w->assign_cap;
    }
    /* At decode sizes the `cuda` runner's gate_up routes the batch itself: one launch less. */
    const sm_moe_route_job job = {.logits = m->router_logits, .rows = n, .top_k = k, .renormalize = c->norm_topk_prob,
                                  .h = m->h, .h_width = H, .expert_ids = ids, .expert_offsets = m->offsets,
                                  .weights = wts, .sorted_src = m->sorted_src, .sorted_pos = m->sorted_pos,
                                  .sorted_weight = m->sorted_w};
    const bool runner_routes = n_assign <= w->device_routing_max_assign &&
                               sm_runner_device_routes(w->runner_backend, w->runner, &job);
    if (runner_routes) {
        /* the runner's first launch routes */
    } else if (fused_route) {
        SM_TRY(sm_cuda_moe_route(s, m->router_logits, n, E, k, c->norm_topk_prob, m->h, H, hp, ids, wts, m->offsets,
                                 m->sorted_src, m->sorted_pos, m->sorted_w, m->xs, err));
    } else {
        SM_TRY(sm_cuda_router_topk(s, m->router_logits, n, E, k, c->norm_topk_prob, ids, wts, err));
        SM_TRY(sm_cuda_moe_permute(s, ids, wts, n_assign, E, m->offsets, m->sorted_src, m->sorted_pos, m->sorted_w, err));
        SM_TRY(sm_cuda_moe_gather(s, m->h, H, m->sorted_src, k, m->xs, hp, n_assign, err));
    }
    const int *host_offsets = NULL;
    if (n_assign > w->device_routing_max_assign) {
        SM_TRY(sm_cuda_check(cudaMemcpyAsync(m->h_offsets, m->offsets, (size_t)(E + 1) * 4, cudaMemcpyDeviceToHost, s), err,
                             "GPU model: expert offsets of layer %d to the host", l));
        SM_TRY(sm_cuda_check(cudaStreamSynchronize(s), err, "GPU model: expert offsets of layer %d", l));
        host_offsets = m->h_offsets;
    }
    sm_moe_device_batch b = {.layer = l, .n_assign = n_assign, .expert_offsets = m->offsets,
                             .expert_offsets_host = host_offsets, .x = m->xs, .weight = m->sorted_w, .y = m->ys,
                             .route = runner_routes ? &job : NULL};
    SM_TRY(sm_runner_forward_device(w->runner_backend, w->runner, s, &b, err));
    if (L->ffn == 0) { /* the residual is final here: normalise for the next layer in the same launch */
        SM_TRY(sm_cuda_moe_combine_rmsnorm(s, m->ys, hp, m->sorted_pos, k, m->x, n, H, next_norm, c->rms_norm_eps, m->h, err));
        st->h_ready = next_norm != NULL;
        return SM_OK;
    }
    SM_TRY(sm_cuda_moe_combine(s, m->ys, hp, m->sorted_pos, k, m->x, n, H, err));
    if (L->ffn > 0) {
        if (L->shared_gate) SM_TRY(sm_cuda_row_dot_sigmoid(s, m->h, L->shared_gate, m->gate, n, H, err));
        SM_TRY(mlp(m, L->gate_up, L->down, L->ffn, L->shared_gate ? m->gate : NULL, n, err));
    }
    return SM_OK;
}

static sm_status attention(sm_model_dev *m, int l, step *st, sm_error *err) {
    const sm_model_config *c = m->w->cfg;
    const dev_layer *L = &m->w->layers[l];
    cudaStream_t s = m->stream;
    int n = st->n, H = c->hidden_size, hd = c->head_dim, heads = c->num_heads, kvh = c->num_kv_heads;
    int qd = heads * hd, kvd = kvh * hd, stride = qd + 2 * kvd;
    const int *seq = m->d_rows + m->w->chunk_rows, *pos = m->d_rows + 2 * m->w->chunk_rows;
    float *q = m->qkv, *k = q + qd, *v = k + kvd;
    float eps = c->rms_norm_eps;
    if (!st->h_ready && norm_in_gemv(m, n, stride, H, L->qkv)) { /* the norm inside the GEMV */
        SM_TRY(sm_cuda_gemv_norm_xwt(s, m->x, L->attn_norm, eps, NULL, L->qkv, m->qkv, true, 0.0f, n, stride, H, err));
    } else {
        if (!st->h_ready) SM_TRY(sm_cuda_rmsnorm_f32(s, m->x, NULL, L->attn_norm, NULL, m->h, n, H, eps, err));
        SM_TRY(proj(m, m->h, L->qkv, m->qkv, true, 0.0f, n, stride, H, err));
    }
    st->h_ready = false;
    if (L->qkv_bias) SM_TRY(sm_cuda_add_bias_f32(s, m->qkv, stride, L->qkv_bias, n, stride, err));
    bool norm = c->qk_norm == SM_QK_NORM_PER_HEAD, fusable = c->qk_norm != SM_QK_NORM_FULL && hd % 2 == 0 && hd <= 256;
    float scale = 1.0f / sqrtf((float)hd);
    if (fusable && st->distinct_seqs) { /* one launch for the q/k norm, RoPE, K/V write and attention */
        SM_TRY(sm_cuda_attention_decode_qk(s, m->qkv, n, heads, kvh, hd, norm ? L->q_norm : NULL, norm ? L->k_norm : NULL, eps,
                                           c->rope_theta, seq, pos, m->k_cache[l], m->v_cache[l], m->max_context, scale,
                                           m->attn, m->attn_split, st->attn, err));
    } else {
        if (fusable) { /* one launch for the five below */
            SM_TRY(sm_cuda_qk_norm_rope_kv(s, m->qkv, stride, n, heads, kvh, hd, norm ? L->q_norm : NULL,
                                           norm ? L->k_norm : NULL, eps, pos, c->rope_theta, seq, m->k_cache[l],
                                           m->v_cache[l], m->max_context, err));
        } else {
            if (c->qk_norm == SM_QK_NORM_PER_HEAD) {
                SM_TRY(sm_cuda_head_rmsnorm_f32(s, q, stride, L->q_norm, n, heads, hd, eps, err));
                SM_TRY(sm_cuda_head_rmsnorm_f32(s, k, stride, L->k_norm, n, kvh, hd, eps, err));
            } else if (c->qk_norm == SM_QK_NORM_FULL) {
                SM_TRY(sm_cuda_head_rmsnorm_f32(s, q, stride, L->q_norm, n, 1, qd, eps, err));
                SM_TRY(sm_cuda_head_rmsnorm_f32(s, k, stride, L->k_norm, n, 1, kvd, eps, err));
            }
            SM_TRY(sm_cuda_rope_f32(s, q, stride, pos, n, heads, hd, c->rope_theta, err));
            SM_TRY(sm_cuda_rope_f32(s, k, stride, pos, n, kvh, hd, c->rope_theta, err));
            SM_TRY(sm_cuda_kv_write(s, k, v, stride, m->k_cache[l], m->v_cache[l], seq, pos, n, kvd, m->max_context, err));
        }
        if (st->prompt_run && sm_cuda_attention_prefill_fits(n, heads, kvh, hd))
            SM_TRY(sm_cuda_attention_prefill(s, q, stride, m->k_cache[l], m->v_cache[l], seq, pos, m->attn, n, heads, kvh,
                                             hd, m->max_context, scale, err));
        else
            SM_TRY(sm_cuda_attention(s, q, stride, m->k_cache[l], m->v_cache[l], seq, pos, m->attn, n, heads, kvh, hd,
                                     m->max_context, scale, m->attn_split, st->attn, err));
    }
    return proj(m, m->attn, L->o, m->x, true, 1.0f, n, H, qd, err);
}

/* Everything between the row-table upload and the logits copy: the part a graph captures. */
static sm_status step_body(sm_model_dev *m, const step *st, sm_error *err) {
    const dev_weights *w = m->w;
    const sm_model_config *c = w->cfg;
    int n = st->n, H = c->hidden_size;
    SM_TRY(sm_cuda_embed_gather(m->stream, w->embed, m->d_rows, m->x, n, H, err));
    step s = *st;
    s.h_ready = false;
    for (int l = 0; l < c->num_layers; l++) {
        if (s.skip && s.skip[l]) continue;
        int next = l + 1;
        while (next < c->num_layers && s.skip && s.skip[next]) next++;
        SM_TRY(attention(m, l, &s, err));
        if (w->layers[l].is_moe && m->leave_out_moe) continue; /* h not ready: the next attention normalises x */
        if (w->layers[l].is_moe) { /* normalises x itself (fused into the router GEMV where it can) */
            SM_TRY(moe(m, l, &s, next < c->num_layers ? w->layers[next].attn_norm : NULL, err));
        } else {
            SM_TRY(sm_cuda_rmsnorm_f32(m->stream, m->x, NULL, w->layers[l].mlp_norm, NULL, m->h, n, H, c->rms_norm_eps, err));
            SM_TRY(mlp(m, w->layers[l].gate_up, w->layers[l].down, w->layers[l].ffn, NULL, n, err));
        }
    }
    if (!st->n_logits) return SM_OK;
    SM_TRY(sm_cuda_rmsnorm_f32(m->stream, m->x, m->d_rows + 3 * w->chunk_rows, w->final_norm, NULL, m->h,
                               st->n_logits, H, c->rms_norm_eps, err));
    return proj(m, m->h, w->lm_head, m->logits, true, 0.0f, st->n_logits, c->vocab_size, H, err);
}

static step_graph *graph_slot(sm_model_dev *m, const step *st) {
    for (int i = 0; i < m->n_graphs; i++)
        if (m->graphs[i].n_rows == st->n && m->graphs[i].n_logits == st->n_logits &&
            m->graphs[i].attn.splits == st->attn.splits && m->graphs[i].attn.grouped == st->attn.grouped &&
            m->graphs[i].prompt_run == st->prompt_run && m->graphs[i].distinct_seqs == st->distinct_seqs &&
            m->graphs[i].observed == !!st->observer)
            return &m->graphs[i];
    if (m->n_graphs == GRAPH_SLOTS) return NULL;
    step_graph *g = &m->graphs[m->n_graphs++];
    *g = (step_graph){.n_rows = st->n, .n_logits = st->n_logits, .attn = st->attn, .prompt_run = st->prompt_run,
                      .distinct_seqs = st->distinct_seqs, .observed = st->observer != NULL};
    return g;
}

/* Capture the step into g; on any failure leave g marked failed and report nothing (eager runs). */
static void capture(sm_model_dev *m, step_graph *g, const step *st) {
    sm_error ignored = {0};
    cudaGraph_t graph = NULL;
    g->failed = true;
    if (cudaStreamBeginCapture(m->stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
        cudaGetLastError();
        return;
    }
    sm_status s = step_body(m, st, &ignored);
    cudaError_t e = cudaStreamEndCapture(m->stream, &graph);
    if (s == SM_OK && e == cudaSuccess && cudaGraphInstantiate(&g->exec, graph, 0) == cudaSuccess) g->failed = false;
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError(); /* a failed capture leaves a sticky-free error behind: clear it */
}

static sm_status run_step(sm_model_dev *m, const step *st, sm_error *err) {
    bool graphable = !m->eager && st->n <= GRAPH_MAX_ROWS && !st->skip &&
                     st->n * st->top_k <= m->w->device_routing_max_assign && st->top_k == m->w->cfg->num_experts_per_tok;
    step_graph *g = graphable ? graph_slot(m, st) : NULL;
    if (g && !g->failed && !g->exec && ++g->seen >= 2) capture(m, g, st);
    if (g && g->exec)
        return sm_cuda_check(cudaGraphLaunch(g->exec, m->stream), err, "GPU model: replaying the step graph (%d rows)", st->n);
    return step_body(m, st, err);
}

/* ---- route observer ------------------------------------------------------------------------ */

static sm_status route_log_reserve(sm_model_dev *m, sm_error *err) {
    if (m->route_ids) return SM_OK;
    size_t n = (size_t)m->w->cfg->num_layers * (size_t)(m->w->assign_cap > 0 ? m->w->assign_cap : 1);
    SM_TRY(sm_cuda_check(cudaMalloc((void **)&m->route_ids, n * 4), err, "GPU model: routing log"));
    SM_TRY(sm_cuda_check(cudaMalloc((void **)&m->route_w, n * 4), err, "GPU model: routing log"));
    SM_TRY(sm_cuda_check(cudaMallocHost((void **)&m->h_route_ids, n * 4), err, "GPU model: pinned routing log"));
    return sm_cuda_check(cudaMallocHost((void **)&m->h_route_w, n * 4), err, "GPU model: pinned routing log");
}

/* After an observed step: one copy of every MoE layer's routing (n_assign entries of each row of
 * the [layer][assign_cap] log), one wait, then the observer's calls in layer order. */
static sm_status report_routes(sm_model_dev *m, const step *st, sm_error *err) {
    const sm_model_config *c = m->w->cfg;
    size_t pitch = (size_t)m->w->assign_cap * 4, width = (size_t)st->n * st->top_k * 4;
    SM_TRY(sm_cuda_check(cudaMemcpy2DAsync(m->h_route_ids, pitch, m->route_ids, pitch, width, (size_t)c->num_layers,
                                           cudaMemcpyDeviceToHost, m->stream), err, "GPU model: routing to the host"));
    SM_TRY(sm_cuda_check(cudaMemcpy2DAsync(m->h_route_w, pitch, m->route_w, pitch, width, (size_t)c->num_layers,
                                           cudaMemcpyDeviceToHost, m->stream), err, "GPU model: routing to the host"));
    SM_TRY(sm_cuda_check(cudaStreamSynchronize(m->stream), err, "GPU model: routing of %d rows", st->n));
    for (int l = 0; l < c->num_layers; l++) {
        if (!m->w->layers[l].is_moe || (st->skip && st->skip[l])) continue;
        size_t at = (size_t)l * m->w->assign_cap;
        st->observer->on_route(st->observer->ctx, l, st->n, st->top_k, m->h_route_ids + at, m->h_route_w + at);
    }
    return SM_OK;
}

/* ---- sampling on the device ---------------------------------------------------------------- */

/* The small arrays of one sampling call, carved from d_small. */
typedef struct sample_bufs {
    float *uniforms, *verify_uniforms;
    int *tokens, *n_draft, *drafts, *p_row, *n_accepted, *next;
} sample_bufs;

static sm_status sample_reserve(sm_model_dev *m, const sm_forward_sample *sp, int n_logits, sample_bufs *b, sm_error *err) {
    size_t V = (size_t)m->w->cfg->vocab_size, nv = (size_t)sp->n_verify, km = (size_t)(sp->k_max > 0 ? sp->k_max : 0);
    if (n_logits > 0)
        SM_TRY(sm_moe_dev_grow((void **)&m->d_probs, &m->probs_bytes, (size_t)n_logits * V * 4, m->stream,
                               "GPU model: sampling distributions", err));
    if (sp->n_verify && sp->q && km)
        SM_TRY(sm_moe_dev_grow((void **)&m->d_q, &m->q_bytes, nv * km * V * 4, m->stream, "GPU model: draft distributions",
                               err));
    size_t counts[8] = {(size_t)n_logits, nv * (km + 1), (size_t)n_logits, nv, nv * (km ? km : 1), nv, nv, nv};
    size_t total = 0;
    for (int i = 0; i < 8; i++) total += (counts[i] * 4 + 255) / 256 * 256;
    SM_TRY(sm_moe_dev_grow(&m->d_small, &m->small_bytes, total, m->stream, "GPU model: sampling ids", err));
    void **slots[8] = {(void **)&b->uniforms, (void **)&b->verify_uniforms, (void **)&b->tokens, (void **)&b->n_draft,
                       (void **)&b->drafts, (void **)&b->p_row, (void **)&b->n_accepted, (void **)&b->next};
    char *at = m->d_small;
    for (int i = 0; i < 8; i++) {
        *slots[i] = at;
        at += (counts[i] * 4 + 255) / 256 * 256;
    }
    return SM_OK;
}

/* After a chunk's step: its logits rows (m->logits) become distributions at row `done` of
 * d_probs, or, greedy with nothing else asked, argmax ids straight away. */
static sm_status sample_chunk(sm_model_dev *m, const sm_forward_sample *sp, const sample_bufs *b, int done, int n_logits,
                              sm_error *err) {
    int V = m->w->cfg->vocab_size;
    if (sp->temperature <= 0.0f && !sp->n_verify && !sp->probs)
        return sm_cuda_argmax(m->stream, m->logits, n_logits, V, b->tokens + done, err);
    return sm_cuda_sampling_probs(m->stream, m->logits, n_logits, V, sp->temperature, sp->top_k, sp->top_p,
                                  m->d_probs + (size_t)done * V, err);
}

static sm_status upload(sm_model_dev *m, void *dst, const void *src, size_t bytes, const char *what, sm_error *err) {
    return sm_cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, m->stream), err,
                         "GPU model: uploading %s (%zu bytes)", what, bytes);
}

static sm_status download(sm_model_dev *m, void *dst, const void *src, size_t bytes, const char *what, sm_error *err) {
    return sm_cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, m->stream), err,
                         "GPU model: copying %s to the host (%zu bytes)", what, bytes);
}

/* After every chunk: draw the tokens, or run the acceptance test, and copy back the results. */
static sm_status sample_finish(sm_model_dev *m, const sm_forward_sample *sp, const sample_bufs *b, int n_logits,
                               sm_error *err) {
    int V = m->w->cfg->vocab_size;
    bool greedy = sp->temperature <= 0.0f;
    if (!sp->n_verify) {
        if (!greedy || sp->probs) {
            if (sp->uniforms) SM_TRY(upload(m, b->uniforms, sp->uniforms, (size_t)n_logits * 4, "uniforms", err));
            else SM_TRY(sm_cuda_check(cudaMemsetAsync(b->uniforms, 0, (size_t)n_logits * 4, m->stream), err, "GPU model: uniforms"));
            SM_TRY(sm_cuda_sample_tokens(m->stream, m->d_probs, n_logits, V, b->uniforms, b->tokens, err));
        }
        SM_TRY(download(m, sp->tokens, b->tokens, (size_t)n_logits * 4, "sampled tokens", err));
        if (sp->probs) SM_TRY(download(m, sp->probs, m->d_probs, (size_t)n_logits * V * 4, "sampling distributions", err));
        return SM_OK;
    }
    int nv = sp->n_verify, km = sp->k_max, *p_row = malloc((size_t)nv * sizeof *p_row), row = 0;
    if (!p_row) return sm_fail(err, SM_ENOMEM, "GPU model: verification rows");
    for (int s = 0; s < nv; s++) {
        p_row[s] = row;
        row += sp->n_draft[s] + 1;
    }
    sm_status st = SM_OK;
    if (row != n_logits)
        st = sm_fail(err, SM_EINVAL, "GPU model: verification groups cover %d logits rows but the forward has %d", row, n_logits);
    if (!st) st = upload(m, b->p_row, p_row, (size_t)nv * 4, "verification rows", err);
    free(p_row);
    SM_TRY(st);
    SM_TRY(upload(m, b->n_draft, sp->n_draft, (size_t)nv * 4, "draft counts", err));
    if (km > 0) SM_TRY(upload(m, b->drafts, sp->drafts, (size_t)nv * km * 4, "drafts", err));
    SM_TRY(upload(m, b->verify_uniforms, sp->verify_uniforms, (size_t)nv * (km + 1) * 4, "verification uniforms", err));
    if (sp->q) SM_TRY(upload(m, m->d_q, sp->q, (size_t)nv * km * V * 4, "draft distributions", err));
    SM_TRY(sm_cuda_spec_verify(m->stream, m->d_probs, sp->q ? m->d_q : NULL, b->drafts, b->n_draft, b->p_row,
                               b->verify_uniforms, nv, km, V, b->n_accepted, b->next, err));
    SM_TRY(download(m, sp->n_accepted, b->n_accepted, (size_t)nv * 4, "accepted counts", err));
    return download(m, sp->next, b->next, (size_t)nv * 4, "next tokens", err);
}

static sm_status check_sample(const sm_forward_sample *sp, int vocab, sm_error *err) {
    if (!sp->n_verify && !sp->tokens) return sm_fail(err, SM_EINVAL, "GPU model: sampling without a tokens array");
    if (!sp->n_verify && sp->temperature > 0.0f && !sp->uniforms)
        return sm_fail(err, SM_EINVAL, "GPU model: sampling at temperature %g needs uniforms", (double)sp->temperature);
    if (sp->n_verify < 0 || sp->k_max < 0) return sm_fail(err, SM_EINVAL, "GPU model: %d sequences to verify, k_max %d", sp->n_verify, sp->k_max);
    if (sp->n_verify && (!sp->n_draft || (sp->k_max && !sp->drafts) || !sp->verify_uniforms || !sp->n_accepted || !sp->next))
        return sm_fail(err, SM_EINVAL, "GPU model: verification needs n_draft, drafts, verify_uniforms, n_accepted and next");
    for (int s = 0; s < sp->n_verify; s++) {
        if (sp->n_draft[s] < 0 || sp->n_draft[s] > sp->k_max)
            return sm_fail(err, SM_EINVAL, "GPU model: sequence %d has %d drafts (k_max %d)", s, sp->n_draft[s], sp->k_max);
        for (int j = 0; j < sp->n_draft[s]; j++)
            if (sp->drafts[(size_t)s * sp->k_max + j] < 0 || sp->drafts[(size_t)s * sp->k_max + j] >= vocab)
                return sm_fail(err, SM_EINVAL, "GPU model: draft %d of sequence %d is token %d, outside the vocabulary of %d",
                               j, s, sp->drafts[(size_t)s * sp->k_max + j], vocab);
    }
    return SM_OK;
}

static sm_status dev_forward(sm_model_dev *m, const sm_row *rows, int n_rows, const sm_forward_opts *fo,
                             const sm_route_observer *observer, float *logits, sm_error *err) {
    const sm_model_config *c = m->w->cfg;
    int top_k = fo && fo->top_k_override > 0 ? fo->top_k_override : c->num_experts_per_tok;
    int chunk = m->w->chunk_rows;
    if (sm_config_is_moe(c) && chunk * top_k > m->w->assign_cap) chunk = m->w->assign_cap / top_k;
    const sm_forward_sample *sp = fo ? fo->sample : NULL;
    sample_bufs sb = {0};
    int total_logits = 0;
    for (int r = 0; r < n_rows; r++) total_logits += rows[r].want_logits;
    if (sp) {
        SM_TRY(check_sample(sp, c->vocab_size, err));
        SM_TRY(sample_reserve(m, sp, total_logits, &sb, err));
    }
    long logits_done = 0;
    for (int start = 0, n = 0; start < n_rows; start += n) {
        /* a prompt piece gets a pass of its own: the prefill attention kernel */
        n = sm_rows_next_pass(rows, n_rows, start, chunk, sm_cuda_logit_rows(m->w->chunk_rows), PROMPT_RUN_MIN_ROWS);
        int n_logits = 0;
        int *tokens = m->h_rows, *seqs = tokens + m->w->chunk_rows, *pos = seqs + m->w->chunk_rows;
        int *logit_rows = pos + m->w->chunk_rows;
        int max_len = 0;
        bool prompt_run = n >= PROMPT_RUN_MIN_ROWS, distinct_seqs = true;
        for (int r = 0; r < n; r++) {
            const sm_row *row = &rows[start + r];
            tokens[r] = row->token;
            seqs[r] = row->seq;
            pos[r] = row->pos;
            if (row->want_logits) logit_rows[n_logits++] = r;
            if (row->pos + 1 > max_len) max_len = row->pos + 1;
            if (row->seq != rows[start].seq || row->pos != rows[start].pos + r) prompt_run = false;
            for (int q = 0; q < r && distinct_seqs; q++) distinct_seqs = seqs[q] != row->seq;
        }
        step st = {.n = n, .n_logits = n_logits, .top_k = top_k, .skip = fo ? fo->skip_layer : NULL, .observer = observer,
                   .attn = sm_cuda_attention_plan(n, c->num_heads, c->num_kv_heads, c->head_dim, max_len, m->sm_count),
                   .prompt_run = prompt_run, .distinct_seqs = distinct_seqs};
        /* the first n entries of each of the four segments (kernels and graphs read no more): a
         * decode step copies 16 bytes a row, not the whole 4 x chunk_rows table (64 KB at 4096) */
        const size_t seg_bytes = (size_t)m->w->chunk_rows * sizeof(int);
        SM_TRY(sm_cuda_check(cudaMemcpy2DAsync(m->d_rows, seg_bytes, m->h_rows, seg_bytes, (size_t)n * sizeof(int), 4,
                                               cudaMemcpyHostToDevice, m->stream), err, "GPU model: copying the row table"));
        if (observer) SM_TRY(route_log_reserve(m, err));
        SM_TRY(run_step(m, &st, err));
        if (observer) SM_TRY(report_routes(m, &st, err));
        if (n_logits && sp)
            SM_TRY(sample_chunk(m, sp, &sb, (int)logits_done, n_logits, err));
        else if (n_logits)
            SM_TRY(sm_cuda_check(cudaMemcpyAsync(logits + logits_done * c->vocab_size, m->logits,
                                                 (size_t)n_logits * c->vocab_size * sizeof(float), cudaMemcpyDeviceToHost,
                                                 m->stream), err, "GPU model: copying %d rows of logits", n_logits));
        logits_done += n_logits;
        /* the one synchronisation of a step: logits are ready, the pinned row table is free again
         * (when sampling, the last chunk's wait is the one after the sampling below) */
        if (!sp || start + n < n_rows)
            SM_TRY(sm_cuda_check(cudaStreamSynchronize(m->stream), err, "GPU model: forward of %d rows", n));
    }
    if (!sp) return SM_OK;
    if (total_logits) SM_TRY(sample_finish(m, sp, &sb, total_logits, err));
    return sm_cuda_check(cudaStreamSynchronize(m->stream), err, "GPU model: sampling %d rows", total_logits);
}

const sm_model_device sm_model_device_cuda = {
    .name = "cuda",
    .load = dev_load,
    .fork = dev_fork,
    .free = dev_free,
    .cfg = dev_cfg,
    .tokenizer = dev_tokenizer,
    .dir = dev_dir,
    .samples = true,
    .forward = dev_forward,
};
