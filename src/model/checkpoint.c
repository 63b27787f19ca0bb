/* src/model/checkpoint.c — resolve a checkpoint's tensor names into sm_checkpoint views.
 *
 * All architectures share the Llama-style names for attention, norms and dense MLPs; what
 * differs is where the MoE block lives and what its experts are called, which is one row of
 * moe_naming_table. Experts come either one tensor per expert (the hub layout) or fused into
 * two 3-D tensors per layer (transformers 5); both become the same per-expert views. Every
 * shape is checked against the config here, so the forward can index without checks. */
#include "model/checkpoint.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct moe_naming {
    sm_arch arch;
    const char *blocks[2];         /* module holding router + experts, in the order tried */
    const char *expert_names[2][3];/* per-expert {gate, up, down} names, in the order tried */
    const char *experts_key;       /* config keys, for shape messages */
    const char *ffn_key;
} moe_naming;

/* transformers 5 renames Mixtral's block_sparse_moe to mlp and fuses w1/w3/w2; the hub still
 * has the old names, so both are tried. */
static const moe_naming moe_naming_table[] = {
    {SM_ARCH_MIXTRAL, {"block_sparse_moe", "mlp"}, {{"w1", "w3", "w2"}, {"gate_proj", "up_proj", "down_proj"}},
     "num_local_experts", "intermediate_size"},
    {SM_ARCH_QWEN2_MOE, {"mlp", NULL}, {{"gate_proj", "up_proj", "down_proj"}}, "num_experts", "moe_intermediate_size"},
    {SM_ARCH_QWEN3_MOE, {"mlp", NULL}, {{"gate_proj", "up_proj", "down_proj"}}, "num_experts", "moe_intermediate_size"},
    {SM_ARCH_OLMOE, {"mlp", NULL}, {{"gate_proj", "up_proj", "down_proj"}}, "num_experts", "intermediate_size"},
};
/* Dense models with experts_key 0 in a Qwen-MoE config still use this for names. */
static const moe_naming default_moe_naming = {SM_ARCH_COUNT, {"mlp", NULL}, {{"gate_proj", "up_proj", "down_proj"}},
                                              "num_experts", "moe_intermediate_size"};

static const moe_naming *naming_for(sm_arch arch) {
    for (size_t i = 0; i < sizeof moe_naming_table / sizeof moe_naming_table[0]; i++)
        if (moe_naming_table[i].arch == arch) return &moe_naming_table[i];
    return &default_moe_naming;
}

typedef struct loader {
    sm_checkpoint *ck;
    const sm_model_config *cfg;
    const moe_naming *naming;
    sm_error *err;
} loader;

static const sm_tensor *find_fmt(const loader *L, char *name, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static const sm_tensor *find_fmt(const loader *L, char *name, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, cap, fmt, ap);
    va_end(ap);
    return sm_safetensors_find(L->ck->st, name);
}

static sm_status missing(const loader *L, const char *name, const char *alternative) {
    return sm_fail(L->err, SM_EFORMAT, "%s: missing tensor '%s'%s%s%s", sm_safetensors_source(L->ck->st), name,
                   alternative ? " (or '" : "", alternative ? alternative : "", alternative ? "')" : "");
}

/* A weight must be a float tensor of exactly the given shape. */
static sm_status check(const loader *L, const sm_tensor *t, int ndim, const int64_t *shape, const char *dims) {
    if (t->dtype != SM_DTYPE_F32 && t->dtype != SM_DTYPE_BF16 && t->dtype != SM_DTYPE_F16)
        return sm_fail(L->err, SM_EUNSUPPORTED, "%s: tensor '%s' has dtype %s; weights must be F32, BF16 or F16",
                       t->file, t->name, sm_dtype_name(t->dtype));
    return sm_tensor_expect_shape_dims(t, ndim, shape, dims, L->err);
}

/* Required tensor: found, float, shaped [d0] or [d0, d1] (d1 < 0 means 1-D). */
static sm_status require(const loader *L, sm_tensor *out, int64_t d0, int64_t d1, const char *dims, const char *fmt,
                         ...) __attribute__((format(printf, 6, 7)));
static sm_status require(const loader *L, sm_tensor *out, int64_t d0, int64_t d1, const char *dims, const char *fmt,
                         ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const sm_tensor *t = sm_safetensors_find(L->ck->st, name);
    if (!t) return missing(L, name, NULL);
    int64_t shape[2] = {d0, d1};
    SM_TRY(check(L, t, d1 < 0 ? 1 : 2, shape, dims));
    *out = *t;
    return SM_OK;
}

/* A 2-D view of rows x cols elements at element offset `at` of a fused tensor. */
static sm_tensor view(const sm_tensor *t, int64_t at, int64_t rows, int64_t cols) {
    sm_tensor v = *t;
    size_t elem = sm_dtype_size(t->dtype);
    v.ndim = 2;
    v.shape[0] = rows;
    v.shape[1] = cols;
    v.shape[2] = v.shape[3] = 0;
    v.data = (const unsigned char *)t->data + (size_t)at * elem;
    v.nbytes = (uint64_t)(rows * cols) * elem;
    return v;
}

static sm_status load_attention(const loader *L, int i, sm_layer_tensors *lt) {
    const sm_model_config *c = L->cfg;
    int64_t h = c->hidden_size, q_dim = (int64_t)c->num_heads * c->head_dim;
    int64_t kv_dim = (int64_t)c->num_kv_heads * c->head_dim;
    const char *qd = "num_attention_heads*head_dim, hidden_size", *kvd = "num_key_value_heads*head_dim, hidden_size";
    SM_TRY(require(L, &lt->attn_norm, h, -1, "hidden_size", "model.layers.%d.input_layernorm.weight", i));
    SM_TRY(require(L, &lt->mlp_norm, h, -1, "hidden_size", "model.layers.%d.post_attention_layernorm.weight", i));
    SM_TRY(require(L, &lt->q, q_dim, h, qd, "model.layers.%d.self_attn.q_proj.weight", i));
    SM_TRY(require(L, &lt->k, kv_dim, h, kvd, "model.layers.%d.self_attn.k_proj.weight", i));
    SM_TRY(require(L, &lt->v, kv_dim, h, kvd, "model.layers.%d.self_attn.v_proj.weight", i));
    SM_TRY(require(L, &lt->o, h, q_dim, "hidden_size, num_attention_heads*head_dim",
                   "model.layers.%d.self_attn.o_proj.weight", i));
    if (c->qkv_bias) {
        SM_TRY(require(L, &lt->q_bias, q_dim, -1, "num_attention_heads*head_dim", "model.layers.%d.self_attn.q_proj.bias", i));
        SM_TRY(require(L, &lt->k_bias, kv_dim, -1, "num_key_value_heads*head_dim", "model.layers.%d.self_attn.k_proj.bias", i));
        SM_TRY(require(L, &lt->v_bias, kv_dim, -1, "num_key_value_heads*head_dim", "model.layers.%d.self_attn.v_proj.bias", i));
    }
    if (c->qk_norm == SM_QK_NORM_PER_HEAD) {
        SM_TRY(require(L, &lt->q_norm, c->head_dim, -1, "head_dim", "model.layers.%d.self_attn.q_norm.weight", i));
        SM_TRY(require(L, &lt->k_norm, c->head_dim, -1, "head_dim", "model.layers.%d.self_attn.k_norm.weight", i));
    } else if (c->qk_norm == SM_QK_NORM_FULL) {
        SM_TRY(require(L, &lt->q_norm, q_dim, -1, "num_attention_heads*head_dim", "model.layers.%d.self_attn.q_norm.weight", i));
        SM_TRY(require(L, &lt->k_norm, kv_dim, -1, "num_key_value_heads*head_dim", "model.layers.%d.self_attn.k_norm.weight", i));
    }
    return SM_OK;
}

/* Experts fused into gate_up_proj [E, 2F, H] (gate rows first, then up) and down_proj [E, H, F]. */
static sm_status load_fused_experts(const loader *L, const sm_tensor *gate_up, const char *block, int i,
                                    sm_layer_tensors *lt) {
    const sm_model_config *c = L->cfg;
    int64_t e_n = c->num_experts, f = c->moe_intermediate_size, h = c->hidden_size;
    char name[512], dims[160];
    snprintf(dims, sizeof dims, "%s, 2*%s, hidden_size", L->naming->experts_key, L->naming->ffn_key);
    SM_TRY(check(L, gate_up, 3, (int64_t[]){e_n, 2 * f, h}, dims));
    const sm_tensor *down = find_fmt(L, name, sizeof name, "model.layers.%d.%s.experts.down_proj.weight", i, block);
    if (!down) down = find_fmt(L, name, sizeof name, "model.layers.%d.%s.experts.down_proj", i, block);
    if (!down) return missing(L, name, NULL);
    snprintf(dims, sizeof dims, "%s, hidden_size, %s", L->naming->experts_key, L->naming->ffn_key);
    SM_TRY(check(L, down, 3, (int64_t[]){e_n, h, f}, dims));
    for (int64_t e = 0; e < e_n; e++) {
        lt->experts[e].gate = view(gate_up, e * 2 * f * h, f, h);
        lt->experts[e].up = view(gate_up, e * 2 * f * h + f * h, f, h);
        lt->experts[e].down = view(down, e * h * f, h, f);
    }
    return SM_OK;
}

static sm_status load_hub_experts(const loader *L, const char *block, const char *const names[3], int i,
                                  sm_layer_tensors *lt) {
    const sm_model_config *c = L->cfg;
    int64_t f = c->moe_intermediate_size, h = c->hidden_size;
    char in_dims[128], out_dims[128];
    snprintf(in_dims, sizeof in_dims, "%s, hidden_size", L->naming->ffn_key);
    snprintf(out_dims, sizeof out_dims, "hidden_size, %s", L->naming->ffn_key);
    for (int e = 0; e < c->num_experts; e++) {
        sm_expert_tensors *x = &lt->experts[e];
        SM_TRY(require(L, &x->gate, f, h, in_dims, "model.layers.%d.%s.experts.%d.%s.weight", i, block, e, names[0]));
        SM_TRY(require(L, &x->up, f, h, in_dims, "model.layers.%d.%s.experts.%d.%s.weight", i, block, e, names[1]));
        SM_TRY(require(L, &x->down, h, f, out_dims, "model.layers.%d.%s.experts.%d.%s.weight", i, block, e, names[2]));
    }
    return SM_OK;
}

static sm_status load_moe(const loader *L, int i, sm_layer_tensors *lt) {
    const sm_model_config *c = L->cfg;
    const moe_naming *nm = L->naming;
    int64_t h = c->hidden_size;
    char name[512], first[512], dims[128];

    /* router: <block>.gate.weight (hub) or <block>.router.weight */
    const sm_tensor *router = NULL;
    for (int b = 0; b < 2 && nm->blocks[b] && !router; b++) {
        router = find_fmt(L, name, sizeof name, "model.layers.%d.%s.gate.weight", i, nm->blocks[b]);
        if (!router) router = find_fmt(L, name, sizeof name, "model.layers.%d.%s.router.weight", i, nm->blocks[b]);
    }
    if (!router) {
        snprintf(first, sizeof first, "model.layers.%d.%s.gate.weight", i, nm->blocks[0]);
        return missing(L, first, NULL);
    }
    snprintf(dims, sizeof dims, "%s, hidden_size", nm->experts_key);
    SM_TRY(check(L, router, 2, (int64_t[]){c->num_experts, h}, dims));
    lt->router = *router;

    SM_TRY(sm_calloc((void **)&lt->experts, (size_t)c->num_experts, sizeof *lt->experts, "expert views", L->err));
    bool loaded = false;
    for (int b = 0; b < 2 && nm->blocks[b] && !loaded; b++) {
        const char *block = nm->blocks[b];
        const sm_tensor *gate_up = find_fmt(L, name, sizeof name, "model.layers.%d.%s.experts.gate_up_proj", i, block);
        if (!gate_up)
            gate_up = find_fmt(L, name, sizeof name, "model.layers.%d.%s.experts.gate_up_proj.weight", i, block);
        if (gate_up) {
            SM_TRY(load_fused_experts(L, gate_up, block, i, lt));
            loaded = true;
            break;
        }
        for (int s = 0; s < 2 && nm->expert_names[s][0]; s++) {
            if (find_fmt(L, name, sizeof name, "model.layers.%d.%s.experts.0.%s.weight", i, block,
                         nm->expert_names[s][0])) {
                SM_TRY(load_hub_experts(L, block, nm->expert_names[s], i, lt));
                loaded = true;
                break;
            }
        }
    }
    if (!loaded) {
        snprintf(first, sizeof first, "model.layers.%d.%s.experts.0.%s.weight", i, nm->blocks[0], nm->expert_names[0][0]);
        snprintf(name, sizeof name, "model.layers.%d.%s.experts.gate_up_proj", i, nm->blocks[0]);
        return missing(L, first, name);
    }

    if (c->shared_expert_intermediate_size > 0) {
        int64_t s = c->shared_expert_intermediate_size;
        const char *in = "shared_expert_intermediate_size, hidden_size", *out = "hidden_size, shared_expert_intermediate_size";
        lt->has_shared = true;
        SM_TRY(require(L, &lt->shared.gate, s, h, in, "model.layers.%d.mlp.shared_expert.gate_proj.weight", i));
        SM_TRY(require(L, &lt->shared.up, s, h, in, "model.layers.%d.mlp.shared_expert.up_proj.weight", i));
        SM_TRY(require(L, &lt->shared.down, h, s, out, "model.layers.%d.mlp.shared_expert.down_proj.weight", i));
        if (c->shared_expert_gate)
            SM_TRY(require(L, &lt->shared_gate, 1, h, "1, hidden_size", "model.layers.%d.mlp.shared_expert_gate.weight", i));
    }
    return SM_OK;
}

static sm_status load_layer(const loader *L, int i, sm_layer_tensors *lt) {
    const sm_model_config *c = L->cfg;
    SM_TRY(load_attention(L, i, lt));
    lt->is_moe = c->layer_is_moe[i];
    if (lt->is_moe) return load_moe(L, i, lt);
    int64_t f = c->intermediate_size, h = c->hidden_size;
    SM_TRY(require(L, &lt->dense.gate, f, h, "intermediate_size, hidden_size", "model.layers.%d.mlp.gate_proj.weight", i));
    SM_TRY(require(L, &lt->dense.up, f, h, "intermediate_size, hidden_size", "model.layers.%d.mlp.up_proj.weight", i));
    SM_TRY(require(L, &lt->dense.down, h, f, "hidden_size, intermediate_size", "model.layers.%d.mlp.down_proj.weight", i));
    return SM_OK;
}

static sm_status resolve(const loader *L) {
    sm_checkpoint *ck = L->ck;
    const sm_model_config *c = L->cfg;
    int64_t v = c->vocab_size, h = c->hidden_size;
    SM_TRY(require(L, &ck->embed, v, h, "vocab_size, hidden_size", "model.embed_tokens.weight"));
    SM_TRY(require(L, &ck->final_norm, h, -1, "hidden_size", "model.norm.weight"));
    /* Tied: lm_head is the embedding (a saved lm_head.weight, if any, is the same values). */
    if (c->tie_word_embeddings) ck->lm_head = ck->embed;
    else SM_TRY(require(L, &ck->lm_head, v, h, "vocab_size, hidden_size", "lm_head.weight"));
    SM_TRY(sm_calloc((void **)&ck->layers, (size_t)c->num_layers, sizeof *ck->layers, "layer views", L->err));
    for (int i = 0; i < c->num_layers; i++) SM_TRY(load_layer(L, i, &ck->layers[i]));
    return SM_OK;
}

sm_status sm_checkpoint_open(const char *dir, sm_checkpoint **out, sm_error *err) {
    *out = NULL;
    sm_checkpoint *ck;
    SM_TRY(sm_calloc((void **)&ck, 1, sizeof *ck, "checkpoint", err));
    sm_status status = SM_OK;
    if ((size_t)snprintf(ck->dir, sizeof ck->dir, "%s", dir) >= sizeof ck->dir)
        status = sm_fail(err, SM_EINVAL, "checkpoint directory path is too long (%zu bytes)", strlen(dir));
    char config_path[sizeof ck->dir + 16];
    snprintf(config_path, sizeof config_path, "%s/config.json", ck->dir);
    if (!status) status = sm_config_load(config_path, &ck->cfg, err);
    if (!status) status = sm_safetensors_open_dir(ck->dir, &ck->st, err);
    if (!status) {
        loader L = {.ck = ck, .cfg = &ck->cfg, .naming = naming_for(ck->cfg.arch), .err = err};
        status = resolve(&L);
    }
    if (status) {
        sm_checkpoint_close(ck);
        return status;
    }
    *out = ck;
    return SM_OK;
}

void sm_checkpoint_close(sm_checkpoint *ck) {
    if (!ck) return;
    if (ck->layers)
        for (int i = 0; i < ck->cfg.num_layers; i++) free(ck->layers[i].experts);
    free(ck->layers);
    sm_config_free(&ck->cfg);
    sm_safetensors_close(ck->st);
    free(ck);
}
