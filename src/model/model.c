/* src/model/model.c — the CPU reference forward (fp32 math) and the model instance.
 *
 * One forward runs a batch of rows (sequence, token, position). Per layer:
 *   norm → q/k/v (+bias) → q/k norm → RoPE → write K/V → attention over the cache → o_proj
 *   → norm → MoE (router → a2a.dispatch → runner → a2a.combine, + shared expert) or dense MLP.
 * Weights are converted to fp32 once at load and shared between instances (fork). */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoint.h"
#include "model/cpu_ops.h"
#include "model/model_device.h"
#include "moe/a2a.h"
#include "moe/router.h"
#include "moe/runner.h"

typedef struct mlp_weights {
    float *gate, *up, *down; /* (ffn, hidden), (ffn, hidden), (hidden, ffn) */
    int ffn;
} mlp_weights;

typedef struct layer_weights {
    float *attn_norm, *mlp_norm;
    float *q, *k, *v, *o;
    float *q_bias, *k_bias, *v_bias;
    float *q_norm, *k_norm;
    bool is_moe;
    mlp_weights dense;
    float *router;           /* (experts, hidden) */
    bool has_shared;
    mlp_weights shared;
    float *shared_gate;      /* (hidden) */
} layer_weights;

/* Everything read-only after load; shared by forks. */
typedef struct model_weights {
    int refcount;
    sm_checkpoint *ck;
    sm_model_config *cfg;    /* points into ck */
    sm_tokenizer *tok;
    float *embed, *final_norm, *lm_head;
    layer_weights *layers;
    const sm_runner_backend *runner_backend;
    sm_runner *runner;
    sm_threadpool *threads;
} model_weights;

/* Growable scratch for one forward. */
typedef struct scratch {
    long rows_cap;
    float *x, *h, *q, *k, *v, *attn, *tmp, *gate, *up, *router_logits, *moe_out, *scores, *logit_rows;
    int *pos, *expert_ids;
    float *expert_w;
    long scores_cap;
} scratch;

struct sm_model {
    /* Device models (opts.device other than "cpu"): the backend owns weights, KV cache and the
     * forward; this struct keeps lengths, observer and opts, and w is NULL. */
    const sm_model_device *device;
    sm_model_dev *dev;
    model_weights *w;
    sm_model_opts opts;
    int max_seqs, max_context;
    float **k_cache, **v_cache; /* [layer] -> (max_seqs, max_context, kv_heads*head_dim) */
    int *seq_len;               /* [max_seqs] */
    const sm_a2a_backend *a2a_backend;
    sm_a2a *a2a;
    scratch s;
    sm_route_observer observer;
};

/* ---- loading ---------------------------------------------------------------------------- */

static sm_status tensor_f32(const sm_tensor *t, float **out, sm_error *err) {
    *out = NULL;
    if (!t->name) return SM_OK; /* optional tensor absent */
    int64_t n = sm_tensor_numel(t);
    SM_TRY(sm_alloc((void **)out, (size_t)n * sizeof(float), t->name, err));
    return sm_tensor_to_f32(t, *out, n, err);
}

static sm_status mlp_f32(const sm_expert_tensors *t, int ffn, mlp_weights *m, sm_error *err) {
    m->ffn = ffn;
    SM_TRY(tensor_f32(&t->gate, &m->gate, err));
    SM_TRY(tensor_f32(&t->up, &m->up, err));
    return tensor_f32(&t->down, &m->down, err);
}

static void mlp_free(mlp_weights *m) { free(m->gate); free(m->up); free(m->down); }

static void weights_release(model_weights *w) {
    if (!w || --w->refcount > 0) return;
    if (w->layers) {
        for (int l = 0; l < w->cfg->num_layers; l++) {
            layer_weights *L = &w->layers[l];
            free(L->attn_norm); free(L->mlp_norm); free(L->q); free(L->k); free(L->v); free(L->o);
            free(L->q_bias); free(L->k_bias); free(L->v_bias); free(L->q_norm); free(L->k_norm);
            mlp_free(&L->dense); free(L->router); mlp_free(&L->shared); free(L->shared_gate);
        }
    }
    free(w->layers);
    if (w->lm_head != w->embed) free(w->lm_head);
    free(w->embed); free(w->final_norm);
    if (w->runner) w->runner_backend->destroy(w->runner);
    sm_tokenizer_free(w->tok);
    sm_checkpoint_close(w->ck);
    sm_threadpool_destroy(w->threads);
    free(w);
}

/* The dtype the runner stores expert weights in: the one asked for, if the runner takes it. */
static sm_status resolve_weight_dtype(const sm_runner_backend *rb, const char *name, sm_dtype *out, sm_error *err) {
    *out = SM_DTYPE_F32;
    if (!name || !strcmp(name, "auto")) return SM_OK;
    char takes[128] = "";
    for (int d = 0; d < SM_DTYPE_COUNT; d++)
        if (rb->weight_dtypes & SM_DTYPE_BIT(d))
            snprintf(takes + strlen(takes), sizeof takes - strlen(takes), "%s%s", takes[0] ? ", " : "",
                     sm_dtype_name((sm_dtype)d));
    if (sm_dtype_parse(name, out) != 0 || !(rb->weight_dtypes & SM_DTYPE_BIT(*out)))
        return sm_fail(err, SM_EUNSUPPORTED, "dtype '%s': MoE runner backend '%s' takes expert weights in %s (or auto)",
                       name, rb->name, takes);
    return SM_OK;
}

static sm_status load_experts(model_weights *w, const sm_model_opts *opts, sm_error *err) {
    const sm_model_config *cfg = w->cfg;
    const char *name = opts->moe_runner_backend ? opts->moe_runner_backend : "auto";
    w->runner_backend = sm_runner_find(name, false);
    if (!w->runner_backend) {
        char names[256];
        sm_runner_names(names, sizeof names);
        return sm_fail(err, SM_EINVAL, "unknown MoE runner backend '%s' for the CPU model (available: %s)", name, names);
    }
    sm_moe_shape shape = {
        .num_layers = cfg->num_layers, .num_experts = cfg->num_experts, .hidden = cfg->hidden_size,
        .ffn = cfg->moe_intermediate_size, .top_k = cfg->num_experts_per_tok, .max_rows = 0,
    };
    sm_dtype weight_dtype;
    SM_TRY(resolve_weight_dtype(w->runner_backend, opts->dtype, &weight_dtype, err));
    sm_runner_opts ropts = {.weight_dtype = weight_dtype, .threads = w->threads};
    SM_TRY(w->runner_backend->create(&shape, &ropts, &w->runner, err));
    for (int l = 0; l < cfg->num_layers; l++) {
        const sm_layer_tensors *L = &w->ck->layers[l];
        if (!L->is_moe) continue;
        for (int e = 0; e < cfg->num_experts; e++) {
            const sm_expert_tensors *x = &L->experts[e];
            if (x->gate.dtype != x->up.dtype || x->gate.dtype != x->down.dtype)
                return sm_fail(err, SM_EUNSUPPORTED, "%s: expert %d of layer %d mixes dtypes", w->ck->dir, e, l);
            sm_expert_weights ew = {.dtype = x->gate.dtype, .gate = x->gate.data, .up = x->up.data, .down = x->down.data};
            sm_status s = w->runner_backend->load_expert(w->runner, l, e, &ew, err);
            if (s) return sm_error_prefix(err, "%s: loading expert %d of layer %d: ", w->ck->dir, e, l);
        }
    }
    return SM_OK;
}

static sm_status weights_load(const char *dir, const sm_model_opts *opts, model_weights **out, sm_error *err) {
    model_weights *w;
    SM_TRY(sm_calloc((void **)&w, 1, sizeof *w, "model weights", err));
    w->refcount = 1;
    sm_status s = sm_checkpoint_open(dir, &w->ck, err);
    if (s) { free(w); return s; }
    w->cfg = &w->ck->cfg;
    const sm_model_config *cfg = w->cfg;
    const sm_checkpoint *ck = w->ck;

    if ((s = sm_tokenizer_load_dir(dir, &w->tok, err))) goto fail;
    if ((s = sm_threadpool_create(opts->n_threads, &w->threads, err))) goto fail;
    if ((s = tensor_f32(&ck->embed, &w->embed, err)) || (s = tensor_f32(&ck->final_norm, &w->final_norm, err)))
        goto fail;
    if (cfg->tie_word_embeddings || ck->lm_head.data == ck->embed.data) w->lm_head = w->embed;
    else if ((s = tensor_f32(&ck->lm_head, &w->lm_head, err))) goto fail;
    if ((s = sm_calloc((void **)&w->layers, (size_t)cfg->num_layers, sizeof *w->layers, "layers", err))) goto fail;
    for (int l = 0; l < cfg->num_layers; l++) {
        const sm_layer_tensors *T = &ck->layers[l];
        layer_weights *L = &w->layers[l];
        L->is_moe = T->is_moe;
        L->has_shared = T->has_shared;
        if ((s = tensor_f32(&T->attn_norm, &L->attn_norm, err)) || (s = tensor_f32(&T->mlp_norm, &L->mlp_norm, err)) ||
            (s = tensor_f32(&T->q, &L->q, err)) || (s = tensor_f32(&T->k, &L->k, err)) ||
            (s = tensor_f32(&T->v, &L->v, err)) || (s = tensor_f32(&T->o, &L->o, err)) ||
            (s = tensor_f32(&T->q_bias, &L->q_bias, err)) || (s = tensor_f32(&T->k_bias, &L->k_bias, err)) ||
            (s = tensor_f32(&T->v_bias, &L->v_bias, err)) || (s = tensor_f32(&T->q_norm, &L->q_norm, err)) ||
            (s = tensor_f32(&T->k_norm, &L->k_norm, err)))
            goto fail;
        if (!T->is_moe) {
            if ((s = mlp_f32(&T->dense, cfg->intermediate_size, &L->dense, err))) goto fail;
            continue;
        }
        if ((s = tensor_f32(&T->router, &L->router, err))) goto fail;
        if (T->has_shared &&
            ((s = mlp_f32(&T->shared, cfg->shared_expert_intermediate_size, &L->shared, err)) ||
             (s = tensor_f32(&T->shared_gate, &L->shared_gate, err))))
            goto fail;
    }
    if (sm_config_is_moe(cfg) && (s = load_experts(w, opts, err))) goto fail;
    *out = w;
    return SM_OK;
fail:
    weights_release(w);
    return s;
}

static sm_status instance_create(model_weights *w, const sm_model_opts *opts, sm_model **out, sm_error *err) {
    const sm_model_config *cfg = w->cfg;
    sm_model *m;
    SM_TRY(sm_calloc((void **)&m, 1, sizeof *m, "model", err));
    m->w = w;
    w->refcount++;
    m->opts = *opts;
    sm_model_resolve_limits(opts, cfg, &m->max_seqs, &m->max_context);
    sm_status s;
    const char *a2a_name = opts->moe_a2a_backend ? opts->moe_a2a_backend : "local";
    m->a2a_backend = sm_a2a_find(a2a_name);
    if (!m->a2a_backend) {
        char names[256];
        sm_a2a_names(names, sizeof names);
        s = sm_fail(err, SM_EINVAL, "unknown MoE a2a backend '%s' (available: %s)", a2a_name, names);
        goto fail;
    }
    if (sm_config_is_moe(cfg)) {
        sm_moe_shape shape = {.num_layers = cfg->num_layers, .num_experts = cfg->num_experts,
                              .hidden = cfg->hidden_size, .ffn = cfg->moe_intermediate_size,
                              .top_k = cfg->num_experts_per_tok};
        if ((s = m->a2a_backend->create(&shape, &m->a2a, err))) goto fail;
    }
    size_t kv_dim = (size_t)cfg->num_kv_heads * cfg->head_dim;
    size_t per_layer = (size_t)m->max_seqs * m->max_context * kv_dim;
    if ((s = sm_calloc((void **)&m->k_cache, (size_t)cfg->num_layers, sizeof(float *), "KV cache", err)) ||
        (s = sm_calloc((void **)&m->v_cache, (size_t)cfg->num_layers, sizeof(float *), "KV cache", err)) ||
        (s = sm_calloc((void **)&m->seq_len, (size_t)m->max_seqs, sizeof(int), "KV cache", err)))
        goto fail;
    for (int l = 0; l < cfg->num_layers; l++) {
        /* calloc: never-written cache entries read as zeros, not garbage, if a bug reads them. */
        if ((s = sm_calloc((void **)&m->k_cache[l], per_layer, sizeof(float), "KV cache (K)", err)) ||
            (s = sm_calloc((void **)&m->v_cache[l], per_layer, sizeof(float), "KV cache (V)", err))) {
            sm_error_prefix(err, "%d sequences x %d positions: ", m->max_seqs, m->max_context);
            goto fail;
        }
    }
    *out = m;
    return SM_OK;
fail:
    sm_model_free(m);
    return s;
}

/* A model whose weights, cache and forward live in a device backend. base: fork its weights. */
static sm_status device_create(const sm_model_device *d, const char *dir, sm_model *base, const sm_model_opts *opts,
                               sm_model **out, sm_error *err) {
    sm_model *m;
    SM_TRY(sm_calloc((void **)&m, 1, sizeof *m, "model", err));
    m->device = d;
    m->opts = *opts;
    sm_status s;
    if (base) {
        sm_model_resolve_limits(opts, d->cfg(base->dev), &m->max_seqs, &m->max_context);
        s = d->fork(base->dev, opts, m->max_seqs, m->max_context, &m->dev, err);
    } else {
        /* limits need the config; the backend resolves them the same way (sm_model_resolve_limits) */
        sm_model_config cfg;
        char path[4200];
        snprintf(path, sizeof path, "%s/config.json", dir);
        s = sm_config_load(path, &cfg, err);
        if (!s) {
            sm_model_resolve_limits(opts, &cfg, &m->max_seqs, &m->max_context);
            sm_config_free(&cfg);
            s = d->load(dir, opts, m->max_seqs, m->max_context, &m->dev, err);
        }
    }
    if (!s) s = sm_calloc((void **)&m->seq_len, (size_t)m->max_seqs, sizeof(int), "KV lengths", err);
    if (s) {
        sm_model_free(m);
        return s;
    }
    *out = m;
    return SM_OK;
}

static bool is_cpu(const char *device) { return !device || !strcmp(device, "cpu"); }

sm_status sm_model_load(const char *dir, const sm_model_opts *opts, sm_model **out, sm_error *err) {
    sm_model_opts defaults = {0};
    if (!opts) opts = &defaults;
    if (!is_cpu(opts->device)) {
        const sm_model_device *d = sm_model_device_find(opts->device);
        if (!d) {
            char names[128];
            sm_model_device_names(names, sizeof names);
            return sm_fail(err, SM_EINVAL, "unknown device '%s' (this build has: %s)", opts->device, names);
        }
        return device_create(d, dir, NULL, opts, out, err);
    }
    if (opts->random_weights)
        return sm_fail(err, SM_EUNSUPPORTED, "%s: random weights need device 'cuda' (the CPU model reads the checkpoint)", dir);
    if (opts->leave_out_moe)
        return sm_fail(err, SM_EUNSUPPORTED, "%s: leaving the MoE blocks out is a benchmark of device 'cuda'", dir);
    model_weights *w;
    SM_TRY(weights_load(dir, opts, &w, err));
    sm_status s = instance_create(w, opts, out, err);
    weights_release(w); /* the instance holds its own reference */
    return s;
}

sm_status sm_model_fork(sm_model *base, const sm_model_opts *opts, sm_model **out, sm_error *err) {
    sm_model_opts o = opts ? *opts : base->opts;
    if (base->device) {
        o.device = base->opts.device; /* a fork lives where its weights are */
        return device_create(base->device, NULL, base, &o, out, err);
    }
    return instance_create(base->w, &o, out, err);
}

static void scratch_free(scratch *s) {
    free(s->x); free(s->h); free(s->q); free(s->k); free(s->v); free(s->attn); free(s->tmp);
    free(s->gate); free(s->up); free(s->router_logits); free(s->moe_out); free(s->scores);
    free(s->logit_rows); free(s->pos); free(s->expert_ids); free(s->expert_w);
}

void sm_model_free(sm_model *m) {
    if (!m) return;
    if (m->device) {
        if (m->dev) m->device->free(m->dev);
        free(m->seq_len);
        free(m);
        return;
    }
    if (m->k_cache)
        for (int l = 0; l < m->w->cfg->num_layers; l++) { free(m->k_cache[l]); free(m->v_cache[l]); }
    free(m->k_cache); free(m->v_cache); free(m->seq_len);
    if (m->a2a) m->a2a_backend->destroy(m->a2a);
    scratch_free(&m->s);
    weights_release(m->w);
    free(m);
}

const sm_model_config *sm_model_cfg(const sm_model *m) { return m->device ? m->device->cfg(m->dev) : m->w->cfg; }
const sm_tokenizer *sm_model_tokenizer(const sm_model *m) { return m->device ? m->device->tokenizer(m->dev) : m->w->tok; }
const char *sm_model_dir(const sm_model *m) { return m->device ? m->device->dir(m->dev) : m->w->ck->dir; }
int sm_model_max_seqs(const sm_model *m) { return m->max_seqs; }
int sm_model_max_context(const sm_model *m) { return m->max_context; }
void sm_model_set_route_observer(sm_model *m, const sm_route_observer *obs) {
    m->observer = obs ? *obs : (sm_route_observer){0};
}

int sm_model_seq_length(const sm_model *m, int seq) {
    return seq >= 0 && seq < m->max_seqs ? m->seq_len[seq] : -1;
}

sm_status sm_model_truncate(sm_model *m, int seq, int length, sm_error *err) {
    if (seq < 0 || seq >= m->max_seqs)
        return sm_fail(err, SM_ERANGE, "truncate: sequence %d out of range [0, %d)", seq, m->max_seqs);
    if (length < 0 || length > m->seq_len[seq])
        return sm_fail(err, SM_ERANGE, "truncate: sequence %d has %d cached positions, cannot truncate to %d", seq,
                       m->seq_len[seq], length);
    m->seq_len[seq] = length;
    return SM_OK;
}

/* ---- forward ---------------------------------------------------------------------------- */

static sm_status grow_f(float **p, long n, sm_error *err) {
    float *g = realloc(*p, (size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!g) return sm_fail(err, SM_ENOMEM, "forward: out of memory for %ld floats of scratch", n);
    *p = g;
    return SM_OK;
}

static sm_status scratch_reserve(sm_model *m, long rows, int top_k, sm_error *err) {
    scratch *s = &m->s;
    const sm_model_config *c = m->w->cfg;
    if (rows <= s->rows_cap && top_k <= c->num_experts_per_tok) return SM_OK;
    if (rows < s->rows_cap) rows = s->rows_cap;
    long H = c->hidden_size, qd = (long)c->num_heads * c->head_dim, kvd = (long)c->num_kv_heads * c->head_dim;
    long ffn = c->intermediate_size > c->moe_intermediate_size ? c->intermediate_size : c->moe_intermediate_size;
    if (c->shared_expert_intermediate_size > ffn) ffn = c->shared_expert_intermediate_size;
    long k = c->num_experts_per_tok > top_k ? c->num_experts_per_tok : top_k;
    SM_TRY(grow_f(&s->x, rows * H, err));
    SM_TRY(grow_f(&s->h, rows * H, err));
    SM_TRY(grow_f(&s->q, rows * qd, err));
    SM_TRY(grow_f(&s->k, rows * kvd, err));
    SM_TRY(grow_f(&s->v, rows * kvd, err));
    SM_TRY(grow_f(&s->attn, rows * qd, err));
    SM_TRY(grow_f(&s->tmp, rows * H, err));
    SM_TRY(grow_f(&s->gate, rows * ffn, err));
    SM_TRY(grow_f(&s->up, rows * ffn, err));
    SM_TRY(grow_f(&s->router_logits, rows * (c->num_experts > 0 ? c->num_experts : 1), err));
    SM_TRY(grow_f(&s->moe_out, rows * H, err));
    SM_TRY(grow_f(&s->expert_w, rows * k, err));
    SM_TRY(grow_f(&s->logit_rows, rows * H, err));
    int *p = realloc(s->pos, (size_t)rows * sizeof(int)), *e = p ? realloc(s->expert_ids, (size_t)(rows * k > 0 ? rows * k : 1) * sizeof(int)) : NULL;
    if (p) s->pos = p;
    if (e) s->expert_ids = e;
    if (!p || !e) return sm_fail(err, SM_ENOMEM, "forward: out of memory for %ld rows", rows);
    s->rows_cap = rows;
    return SM_OK;
}

/* Rows of one sequence must continue its cache without holes; see sm_row in model.h. */
static sm_status validate_rows(const sm_model *m, const sm_row *rows, int n_rows, sm_error *err) {
    return sm_model_check_rows(sm_model_cfg(m), m->max_seqs, m->max_context, m->seq_len, rows, n_rows, err);
}

typedef struct attn_job {
    const sm_model *m;
    int layer;
    const sm_row *rows;
    const float *q;
    float *out;
    float *scores;   /* one stride of scratch per (row, head) task */
    long score_stride;
} attn_job;

/* Task = one (row, head): scores over the sequence's positions 0..pos, softmax, weighted sum. */
static void attn_task(void *ctx, int task) {
    const attn_job *j = ctx;
    const sm_model_config *c = j->m->w->cfg;
    int heads = c->num_heads, hd = c->head_dim, group = c->num_heads / c->num_kv_heads;
    int r = task / heads, h = task % heads, kvh = h / group;
    const sm_row *row = &j->rows[r];
    long kvd = (long)c->num_kv_heads * hd;
    const float *kc = j->m->k_cache[j->layer] + (long)row->seq * j->m->max_context * kvd + (long)kvh * hd;
    const float *vc = j->m->v_cache[j->layer] + (long)row->seq * j->m->max_context * kvd + (long)kvh * hd;
    const float *q = j->q + ((long)r * heads + h) * hd;
    float *sc = j->scores + (long)task * j->score_stride;
    float scale = 1.0f / sqrtf((float)hd);
    int n = row->pos + 1;
    for (int t = 0; t < n; t++) sc[t] = sm_cpu_dot(q, kc + (long)t * kvd, hd) * scale;
    sm_cpu_softmax(sc, n);
    float *o = j->out + ((long)r * heads + h) * hd;
    memset(o, 0, (size_t)hd * sizeof(float));
    for (int t = 0; t < n; t++) {
        const float *v = vc + (long)t * kvd;
        for (int d = 0; d < hd; d++) o[d] += sc[t] * v[d];
    }
}

static sm_status attention(sm_model *m, int l, const sm_row *rows, int n_rows, sm_error *err) {
    const sm_model_config *c = m->w->cfg;
    const layer_weights *L = &m->w->layers[l];
    scratch *s = &m->s;
    int H = c->hidden_size, hd = c->head_dim;
    int qd = c->num_heads * hd, kvd = c->num_kv_heads * hd;
    sm_threadpool *tp = m->w->threads;

    sm_cpu_rmsnorm(s->h, s->x, L->attn_norm, n_rows, H, c->rms_norm_eps);
    sm_cpu_matmul(tp, s->q, s->h, L->q, L->q_bias, n_rows, H, qd);
    sm_cpu_matmul(tp, s->k, s->h, L->k, L->k_bias, n_rows, H, kvd);
    sm_cpu_matmul(tp, s->v, s->h, L->v, L->v_bias, n_rows, H, kvd);
    if (c->qk_norm == SM_QK_NORM_PER_HEAD) {
        sm_cpu_rmsnorm(s->q, s->q, L->q_norm, n_rows * c->num_heads, hd, c->rms_norm_eps);
        sm_cpu_rmsnorm(s->k, s->k, L->k_norm, n_rows * c->num_kv_heads, hd, c->rms_norm_eps);
    } else if (c->qk_norm == SM_QK_NORM_FULL) {
        sm_cpu_rmsnorm(s->q, s->q, L->q_norm, n_rows, qd, c->rms_norm_eps);
        sm_cpu_rmsnorm(s->k, s->k, L->k_norm, n_rows, kvd, c->rms_norm_eps);
    }
    for (int r = 0; r < n_rows; r++) s->pos[r] = rows[r].pos;
    sm_cpu_rope(s->q, s->pos, n_rows, c->num_heads, hd, c->rope_theta);
    sm_cpu_rope(s->k, s->pos, n_rows, c->num_kv_heads, hd, c->rope_theta);
    /* All rows' K/V go into the cache first, so a verify row at pos p sees the draft rows
     * before it in the same batch. */
    for (int r = 0; r < n_rows; r++) {
        long off = ((long)rows[r].seq * m->max_context + rows[r].pos) * kvd;
        memcpy(m->k_cache[l] + off, s->k + (long)r * kvd, (size_t)kvd * sizeof(float));
        memcpy(m->v_cache[l] + off, s->v + (long)r * kvd, (size_t)kvd * sizeof(float));
    }
    int max_pos = 0;
    for (int r = 0; r < n_rows; r++) max_pos = rows[r].pos > max_pos ? rows[r].pos : max_pos;
    long tasks = (long)n_rows * c->num_heads, stride = max_pos + 1;
    if (tasks * stride > s->scores_cap) {
        SM_TRY(grow_f(&s->scores, tasks * stride, err));
        s->scores_cap = tasks * stride;
    }
    attn_job job = {.m = m, .layer = l, .rows = rows, .q = s->q, .out = s->attn, .scores = s->scores, .score_stride = stride};
    sm_threadpool_run(tp, (int)tasks, attn_task, &job);
    sm_cpu_matmul(tp, s->tmp, s->attn, L->o, NULL, n_rows, qd, H);
    for (long i = 0; i < (long)n_rows * H; i++) s->x[i] += s->tmp[i];
    return SM_OK;
}

/* out = down(silu(gate h) * up h) */
static void swiglu(sm_model *m, const mlp_weights *w, const float *h, float *out, int n_rows) {
    int H = m->w->cfg->hidden_size;
    sm_threadpool *tp = m->w->threads;
    sm_cpu_matmul(tp, m->s.gate, h, w->gate, NULL, n_rows, H, w->ffn);
    sm_cpu_matmul(tp, m->s.up, h, w->up, NULL, n_rows, H, w->ffn);
    sm_cpu_silu_mul(m->s.gate, m->s.gate, m->s.up, n_rows, w->ffn);
    sm_cpu_matmul(tp, out, m->s.gate, w->down, NULL, n_rows, w->ffn, H);
}

static sm_status moe(sm_model *m, int l, int n_rows, int top_k, sm_error *err) {
    const sm_model_config *c = m->w->cfg;
    const layer_weights *L = &m->w->layers[l];
    scratch *s = &m->s;
    int H = c->hidden_size, E = c->num_experts;
    sm_cpu_matmul(m->w->threads, s->router_logits, s->h, L->router, NULL, n_rows, H, E);
    sm_router_topk(s->router_logits, n_rows, E, top_k, c->norm_topk_prob, s->expert_ids, s->expert_w);
    if (m->observer.on_route) m->observer.on_route(m->observer.ctx, l, n_rows, top_k, s->expert_ids, s->expert_w);

    sm_routing routing = {.n_rows = n_rows, .top_k = top_k, .expert_ids = s->expert_ids, .weights = s->expert_w};
    sm_dispatch_out dispatched;
    sm_combine_in combine;
    SM_TRY(m->a2a_backend->dispatch(m->a2a, l, &routing, s->h, &dispatched, &combine, err));
    SM_TRY(m->w->runner_backend->forward(m->w->runner, &dispatched, &combine, err));
    memset(s->moe_out, 0, (size_t)n_rows * H * sizeof(float));
    SM_TRY(m->a2a_backend->combine(m->a2a, &dispatched, &combine, s->moe_out, err));
    if (L->has_shared) {
        swiglu(m, &L->shared, s->h, s->tmp, n_rows);
        for (int r = 0; r < n_rows; r++) {
            float g = sm_cpu_dot(s->h + (long)r * H, L->shared_gate, H);
            g = 1.0f / (1.0f + expf(-g));
            for (int i = 0; i < H; i++) s->moe_out[(long)r * H + i] += g * s->tmp[(long)r * H + i];
        }
    }
    for (long i = 0; i < (long)n_rows * H; i++) s->x[i] += s->moe_out[i];
    return SM_OK;
}

static sm_status device_forward(sm_model *m, const sm_row *rows, int n_rows, const sm_forward_opts *fo, float *logits,
                                sm_error *err) {
    const sm_model_config *c = sm_model_cfg(m);
    if (n_rows <= 0) return SM_OK;
    int top_k = fo && fo->top_k_override > 0 ? fo->top_k_override : c->num_experts_per_tok;
    if (sm_config_is_moe(c) && top_k > c->num_experts)
        return sm_fail(err, SM_EINVAL, "forward: %d experts per token requested but the model has %d", top_k, c->num_experts);
    SM_TRY(validate_rows(m, rows, n_rows, err));
    SM_TRY(m->device->forward(m->dev, rows, n_rows, fo, m->observer.on_route ? &m->observer : NULL, logits, err));
    for (int r = 0; r < n_rows; r++) m->seq_len[rows[r].seq] = rows[r].pos + 1; /* as the CPU forward */
    return SM_OK;
}

bool sm_model_samples_on_device(const sm_model *m) { return m->device && m->device->samples; }

/* Rows from `start` on that run one sequence at consecutive positions, up to `cap`. */
static int run_length(const sm_row *rows, int n_rows, int start, int cap) {
    int n = 1;
    while (n < cap && start + n < n_rows && rows[start + n].seq == rows[start].seq &&
           rows[start + n].pos == rows[start].pos + n)
        n++;
    return n;
}

int sm_rows_next_pass(const sm_row *rows, int n_rows, int start, int max_rows, int max_logit_rows,
                      int prompt_min_rows) {
    int n = 0, n_logits = 0;
    while (start + n < n_rows && n < max_rows) {
        const int run = run_length(rows, n_rows, start + n, max_rows - n);
        if (run >= prompt_min_rows && n > 0) break; /* the prompt piece starts the next pass */
        int take = 0;
        while (take < run && !(rows[start + n + take].want_logits && n_logits == max_logit_rows))
            n_logits += rows[start + n + take++].want_logits;
        n += take;
        if (take < run || run >= prompt_min_rows) break;
    }
    return n;
}

sm_status sm_model_forward(sm_model *m, const sm_row *rows, int n_rows, const sm_forward_opts *fo, float *logits,
                           sm_error *err) {
    if (fo && fo->sample && !sm_model_samples_on_device(m))
        return sm_fail(err, SM_EINVAL, "forward: sampling on the device needs a GPU model (device \"%s\" samples in the caller)",
                       m->device ? m->device->name : "cpu");
    if (m->device) return device_forward(m, rows, n_rows, fo, logits, err);
    const model_weights *w = m->w;
    const sm_model_config *c = w->cfg;
    if (n_rows <= 0) return SM_OK;
    int top_k = fo && fo->top_k_override > 0 ? fo->top_k_override : c->num_experts_per_tok;
    if (sm_config_is_moe(c) && top_k > c->num_experts)
        return sm_fail(err, SM_EINVAL, "forward: %d experts per token requested but the model has %d", top_k, c->num_experts);
    SM_TRY(validate_rows(m, rows, n_rows, err));
    SM_TRY(scratch_reserve(m, n_rows, top_k, err));
    scratch *s = &m->s;
    int H = c->hidden_size;
    for (int r = 0; r < n_rows; r++)
        memcpy(s->x + (long)r * H, w->embed + (long)rows[r].token * H, (size_t)H * sizeof(float));

    for (int l = 0; l < c->num_layers; l++) {
        if (fo && fo->skip_layer && fo->skip_layer[l]) continue;
        SM_TRY(attention(m, l, rows, n_rows, err));
        sm_cpu_rmsnorm(s->h, s->x, w->layers[l].mlp_norm, n_rows, H, c->rms_norm_eps);
        if (w->layers[l].is_moe) {
            SM_TRY(moe(m, l, n_rows, top_k, err));
        } else {
            swiglu(m, &w->layers[l].dense, s->h, s->tmp, n_rows);
            for (long i = 0; i < (long)n_rows * H; i++) s->x[i] += s->tmp[i];
        }
    }
    /* The cache now holds each sequence up to its last row; anything beyond was overwritten
     * or is stale (a shorter re-score), so the length is set, not maxed. */
    for (int r = 0; r < n_rows; r++) m->seq_len[rows[r].seq] = rows[r].pos + 1;

    int n_out = 0;
    for (int r = 0; r < n_rows; r++) {
        if (!rows[r].want_logits) continue;
        memcpy(s->logit_rows + (long)n_out * H, s->x + (long)r * H, (size_t)H * sizeof(float));
        n_out++;
    }
    if (n_out == 0) return SM_OK;
    sm_cpu_rmsnorm(s->logit_rows, s->logit_rows, w->final_norm, n_out, H, c->rms_norm_eps);
    sm_cpu_matmul(w->threads, logits, s->logit_rows, w->lm_head, NULL, n_out, H, c->vocab_size);
    return SM_OK;
}
