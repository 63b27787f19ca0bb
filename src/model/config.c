/* src/model/config.c — Hugging Face config.json -> sm_model_config.
 *
 * Everything that differs between the supported architectures is one row of arch_table; the
 * parser reads the same keys for all of them and consults the row for defaults and for which
 * keys mean something. Values are checked here, once, so the forward can trust them. */
#include "model/config.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct arch_traits {
    sm_arch arch;
    const char *name;               /* "architectures"[0] */
    const char *model_type;         /* fallback when "architectures" is absent */
    const char *experts_key;        /* key holding the expert count; NULL for dense models */
    const char *experts_key_alt;    /* the name transformers 5 writes instead, when it differs */
    bool experts_use_intermediate;  /* expert FFN width is intermediate_size (Mixtral, OLMoE),
                                       not moe_intermediate_size (Qwen MoE) */
    bool qkv_bias;                  /* q/k/v carry a bias, o does not (Qwen2 family) */
    bool attention_bias_key;        /* honours "attention_bias": bias on q, k, v AND o */
    sm_qk_norm qk_norm;
    bool shared_expert;             /* reads shared_expert_intermediate_size (sigmoid-gated) */
    bool norm_topk_default;         /* norm_topk_prob when the key is absent */
    bool norm_topk_always;          /* renormalises whatever the config says (Mixtral) */
    bool sparse_step;               /* honours decoder_sparse_step and mlp_only_layers */
    bool window_key;                /* reads sliding_window */
    bool window_needs_flag;         /* ... which applies only with use_sliding_window (Qwen) */
    int default_head_dim;           /* when "head_dim" is absent; 0 = hidden_size / heads */
    double default_rope_theta;
    double default_rms_norm_eps;
} arch_traits;

/* Defaults are those of the transformers config classes, so a config.json that omits a key
 * means what it means to transformers. */
static const arch_traits arch_table[] = {
    {.arch = SM_ARCH_MIXTRAL, .name = "MixtralForCausalLM", .model_type = "mixtral",
     .experts_key = "num_local_experts", .experts_use_intermediate = true,
     .norm_topk_default = true, .norm_topk_always = true, .window_key = true,
     .default_rope_theta = 1e6, .default_rms_norm_eps = 1e-5},
    {.arch = SM_ARCH_QWEN2_MOE, .name = "Qwen2MoeForCausalLM", .model_type = "qwen2_moe",
     .experts_key = "num_experts", .experts_key_alt = "num_local_experts",
     .qkv_bias = true, .shared_expert = true, .sparse_step = true,
     .window_key = true, .window_needs_flag = true,
     .default_rope_theta = 10000.0, .default_rms_norm_eps = 1e-6},
    {.arch = SM_ARCH_QWEN3_MOE, .name = "Qwen3MoeForCausalLM", .model_type = "qwen3_moe",
     .experts_key = "num_experts", .experts_key_alt = "num_local_experts",
     .attention_bias_key = true, .qk_norm = SM_QK_NORM_PER_HEAD,
     .sparse_step = true, .window_key = true, .window_needs_flag = true, .default_head_dim = 128,
     .default_rope_theta = 10000.0, .default_rms_norm_eps = 1e-6},
    {.arch = SM_ARCH_OLMOE, .name = "OlmoeForCausalLM", .model_type = "olmoe",
     .experts_key = "num_experts", .experts_key_alt = "num_local_experts",
     .experts_use_intermediate = true, .attention_bias_key = true,
     .qk_norm = SM_QK_NORM_FULL, .default_rope_theta = 10000.0, .default_rms_norm_eps = 1e-5},
    {.arch = SM_ARCH_LLAMA, .name = "LlamaForCausalLM", .model_type = "llama",
     .attention_bias_key = true, .default_rope_theta = 10000.0, .default_rms_norm_eps = 1e-6},
    {.arch = SM_ARCH_QWEN2, .name = "Qwen2ForCausalLM", .model_type = "qwen2", .qkv_bias = true,
     .window_key = true, .window_needs_flag = true,
     .default_rope_theta = 10000.0, .default_rms_norm_eps = 1e-6},
    {.arch = SM_ARCH_QWEN3, .name = "Qwen3ForCausalLM", .model_type = "qwen3",
     .attention_bias_key = true, .qk_norm = SM_QK_NORM_PER_HEAD, .window_key = true,
     .window_needs_flag = true, .default_head_dim = 128,
     .default_rope_theta = 10000.0, .default_rms_norm_eps = 1e-6},
};
#define ARCH_TABLE_LEN ((int)(sizeof arch_table / sizeof arch_table[0]))

/* A sanity bound on every size in a config: far beyond any real model (largest vocabularies
 * are ~10^6, hidden sizes ~10^4), yet it keeps the arithmetic below away from overflow and a
 * hostile config from asking for terabytes. */
#define SANE_SIZE_MAX (1 << 24)

const char *sm_arch_name(sm_arch arch) {
    for (int i = 0; i < ARCH_TABLE_LEN; i++)
        if (arch_table[i].arch == arch) return arch_table[i].name;
    return "unknown";
}

typedef struct reader {
    json_t *root;
    const char *path;
    sm_error *err;
} reader;

/* A short rendering of a JSON value for messages: 42, "abc", [1,2], ... */
static void describe(const json_t *v, char *buf, size_t cap) {
    char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!text) { snprintf(buf, cap, "(unprintable)"); return; }
    if (strlen(text) > 40) snprintf(buf, cap, "%.37s...", text);
    else snprintf(buf, cap, "%s", text);
    free(text);
}

static json_t *get(const reader *r, const char *key) {
    json_t *v = json_object_get(r->root, key);
    return v && !json_is_null(v) ? v : NULL; /* transformers writes null for "unset" */
}

static sm_status bad_value(const reader *r, const char *key, const json_t *v, const char *expected) {
    char shown[64];
    describe(v, shown, sizeof shown);
    return sm_fail(r->err, SM_EFORMAT, "%s: key '%s' must be %s, got %s", r->path, key, expected, shown);
}

/* An integer value (an integral real such as 64.0 is accepted too). */
static bool json_to_int64(const json_t *v, long long *out) {
    if (json_is_integer(v)) { *out = json_integer_value(v); return true; }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && fabs(d) < 9.0e15) { *out = (long long)d; return true; }
    }
    return false;
}

/* Read an integer key in [min, SANE_SIZE_MAX]; absent/null -> dflt, or an error if required. */
static sm_status get_int(const reader *r, const char *key, bool required, int dflt, int min, int *out) {
    json_t *v = get(r, key);
    if (!v) {
        if (required) return sm_fail(r->err, SM_EFORMAT, "%s: missing required key '%s'", r->path, key);
        *out = dflt;
        return SM_OK;
    }
    long long x;
    if (!json_to_int64(v, &x)) return bad_value(r, key, v, "an integer");
    if (x < min || x > SANE_SIZE_MAX) {
        char expected[80];
        snprintf(expected, sizeof expected, "an integer in [%d, %d]", min, SANE_SIZE_MAX);
        return bad_value(r, key, v, expected);
    }
    *out = (int)x;
    return SM_OK;
}

static sm_status get_number(const reader *r, const char *key, double dflt, double *out) {
    json_t *v = get(r, key);
    if (!v) { *out = dflt; return SM_OK; }
    if (!json_is_number(v)) return bad_value(r, key, v, "a number");
    *out = json_number_value(v);
    return SM_OK;
}

static sm_status get_bool(const reader *r, const char *key, bool dflt, bool *out) {
    json_t *v = get(r, key);
    if (!v) { *out = dflt; return SM_OK; }
    if (!json_is_boolean(v)) return bad_value(r, key, v, "true or false");
    *out = json_is_true(v);
    return SM_OK;
}

static void list_supported(char *buf, size_t cap, bool model_types) {
    buf[0] = '\0';
    for (int i = 0; i < ARCH_TABLE_LEN; i++)
        snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", i ? ", " : "",
                 model_types ? arch_table[i].model_type : arch_table[i].name);
}

/* "architectures"[0] names the class; model_type is the fallback for configs without it. */
static sm_status find_arch(const reader *r, sm_model_config *cfg, const arch_traits **out) {
    json_t *archs = get(r, "architectures"), *mt = get(r, "model_type");
    char supported[512];
    if (mt && json_is_string(mt)) snprintf(cfg->model_type, sizeof cfg->model_type, "%s", json_string_value(mt));
    if (archs && !(json_is_array(archs) && json_array_size(archs) == 0)) {
        json_t *first = json_array_get(archs, 0);
        if (!json_is_array(archs) || !json_is_string(first))
            return bad_value(r, "architectures", archs, "a list of class names");
        const char *name = json_string_value(first);
        for (int i = 0; i < ARCH_TABLE_LEN; i++)
            if (!strcmp(name, arch_table[i].name)) { *out = &arch_table[i]; return SM_OK; }
        list_supported(supported, sizeof supported, false);
        return sm_fail(r->err, SM_EUNSUPPORTED, "%s: architecture '%.100s' is not supported (supported: %s)", r->path,
                       name, supported);
    }
    if (!mt)
        return sm_fail(r->err, SM_EFORMAT, "%s: neither 'architectures' nor 'model_type' says which model this is",
                       r->path);
    if (!json_is_string(mt)) return bad_value(r, "model_type", mt, "a string");
    for (int i = 0; i < ARCH_TABLE_LEN; i++)
        if (!strcmp(json_string_value(mt), arch_table[i].model_type)) { *out = &arch_table[i]; return SM_OK; }
    list_supported(supported, sizeof supported, true);
    return sm_fail(r->err, SM_EUNSUPPORTED, "%s: model_type '%.100s' is not supported (supported: %s)", r->path,
                   json_string_value(mt), supported);
}

/* RoPE: plain RoPE only. transformers <= 4 writes rope_theta (+ rope_scaling for variants);
 * transformers 5 writes rope_parameters {rope_type, rope_theta}. Both are accepted. */
static sm_status check_rope_type(const reader *r, const char *key, json_t *obj) {
    if (!json_is_object(obj)) return bad_value(r, key, obj, "an object");
    static const char *const type_keys[] = {"rope_type", "type"};
    for (int i = 0; i < 2; i++) {
        json_t *t = json_object_get(obj, type_keys[i]);
        if (!t || json_is_null(t)) continue;
        if (!json_is_string(t) || strcmp(json_string_value(t), "default") != 0) {
            char shown[64];
            describe(t, shown, sizeof shown);
            return sm_fail(r->err, SM_EUNSUPPORTED,
                           "%s: %s.%s = %s is not supported (only plain RoPE, rope_type \"default\")", r->path, key,
                           type_keys[i], shown);
        }
    }
    json_t *prf = json_object_get(obj, "partial_rotary_factor");
    if (prf && !json_is_null(prf) && !(json_is_number(prf) && json_number_value(prf) == 1.0)) {
        char shown[64];
        describe(prf, shown, sizeof shown);
        return sm_fail(r->err, SM_EUNSUPPORTED, "%s: %s.partial_rotary_factor = %s is not supported (only 1.0)",
                       r->path, key, shown);
    }
    return SM_OK;
}

static sm_status parse_rope(const reader *r, const arch_traits *tr, sm_model_config *cfg) {
    double theta = 0;
    SM_TRY(get_number(r, "rope_theta", tr->default_rope_theta, &theta));
    json_t *scaling = get(r, "rope_scaling");
    if (scaling) SM_TRY(check_rope_type(r, "rope_scaling", scaling));
    json_t *params = get(r, "rope_parameters");
    if (params) {
        SM_TRY(check_rope_type(r, "rope_parameters", params));
        json_t *t = json_object_get(params, "rope_theta");
        if (t && !json_is_null(t)) {
            if (!json_is_number(t)) return bad_value(r, "rope_parameters.rope_theta", t, "a number");
            theta = json_number_value(t);
        } else if (!json_object_get(params, "rope_type") && json_object_size(params) > 0) {
            /* transformers 5 nests parameters per layer type for models that mix attention kinds */
            return sm_fail(r->err, SM_EUNSUPPORTED,
                           "%s: rope_parameters without rope_type/rope_theta (per-layer-type RoPE) is not supported",
                           r->path);
        }
    }
    json_t *prf = get(r, "partial_rotary_factor");
    if (prf && !(json_is_number(prf) && json_number_value(prf) == 1.0)) {
        char shown[64];
        describe(prf, shown, sizeof shown);
        return sm_fail(r->err, SM_EUNSUPPORTED, "%s: partial_rotary_factor = %s is not supported (only 1.0)",
                       r->path, shown);
    }
    if (!(theta > 0) || !isfinite(theta))
        return sm_fail(r->err, SM_EFORMAT, "%s: rope_theta must be a positive number, got %g", r->path, theta);
    cfg->rope_theta = (float)theta;
    return SM_OK;
}

/* Features of the config that this engine does not implement: refuse them by name rather
 * than compute something else. */
static sm_status reject_unsupported(const reader *r, const arch_traits *tr) {
    json_t *act = get(r, "hidden_act");
    if (act && !(json_is_string(act) && !strcmp(json_string_value(act), "silu"))) {
        char shown[64];
        describe(act, shown, sizeof shown);
        return sm_fail(r->err, SM_EUNSUPPORTED, "%s: hidden_act = %s is not supported (only \"silu\")", r->path, shown);
    }
    json_t *quant = get(r, "quantization_config");
    if (quant) {
        json_t *method = json_is_object(quant) ? json_object_get(quant, "quant_method") : NULL;
        return sm_fail(r->err, SM_EUNSUPPORTED,
                       "%s: quantization_config (quant_method %s) is not supported: load an unquantized checkpoint "
                       "(the MoE runner quantizes at load)",
                       r->path, json_is_string(method) ? json_string_value(method) : "?");
    }
    bool flag = false;
    SM_TRY(get_bool(r, "mlp_bias", false, &flag));
    if (flag) return sm_fail(r->err, SM_EUNSUPPORTED, "%s: mlp_bias = true is not supported", r->path);
    if (tr->attention_bias_key) {
        SM_TRY(get_bool(r, "attention_bias", false, &flag));
        if (flag)
            return sm_fail(r->err, SM_EUNSUPPORTED,
                           "%s: attention_bias = true is not supported (%s puts a bias on o_proj as well as q/k/v)",
                           r->path, tr->name);
    }
    json_t *clip = get(r, "clip_qkv");
    if (clip) {
        char shown[64];
        describe(clip, shown, sizeof shown);
        return sm_fail(r->err, SM_EUNSUPPORTED, "%s: clip_qkv = %s is not supported (only null)", r->path, shown);
    }
    return SM_OK;
}

/* bos/eos: an int, a list of ints (first is the primary one) or null. */
static sm_status parse_token_ids(const reader *r, const char *key, int *first, int **all, int *n_all) {
    *first = -1;
    if (all) { *all = NULL; *n_all = 0; }
    json_t *v = get(r, key);
    if (!v) return SM_OK;
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    if (!json_is_array(v) && !json_is_integer(v)) return bad_value(r, key, v, "a token id, a list of them, or null");
    int *ids = NULL;
    if (all && n > 0) SM_TRY(sm_calloc((void **)&ids, n, sizeof *ids, key, r->err));
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_is_array(v) ? json_array_get(v, i) : v;
        long long x;
        if (!json_is_integer(e) || (x = json_integer_value(e)) < 0 || x > 0x7fffffff) {
            free(ids);
            return bad_value(r, key, v, "a non-negative token id, a list of them, or null");
        }
        if (i == 0) *first = (int)x;
        if (ids) ids[i] = (int)x;
    }
    if (all) { *all = ids; *n_all = ids ? (int)n : 0; }
    return SM_OK;
}

/* Which layers are MoE: transformers' Qwen2Moe/Qwen3Moe rule, applied to every MoE model
 * (for Mixtral and OLMoE the keys are absent, so every layer is MoE). */
static sm_status parse_moe_layers(const reader *r, const arch_traits *tr, sm_model_config *cfg) {
    SM_TRY(sm_calloc((void **)&cfg->layer_is_moe, (size_t)cfg->num_layers, sizeof(bool), "layer_is_moe", r->err));
    if (cfg->num_experts == 0) return SM_OK;
    int step = 1;
    if (tr->sparse_step) SM_TRY(get_int(r, "decoder_sparse_step", false, 1, 1, &step));
    for (int i = 0; i < cfg->num_layers; i++) cfg->layer_is_moe[i] = (i + 1) % step == 0;
    json_t *dense = tr->sparse_step ? get(r, "mlp_only_layers") : NULL;
    if (!dense) return SM_OK;
    if (!json_is_array(dense)) return bad_value(r, "mlp_only_layers", dense, "a list of layer indices");
    for (size_t i = 0; i < json_array_size(dense); i++) {
        long long x;
        json_t *e = json_array_get(dense, i);
        if (!json_to_int64(e, &x) || x < 0 || x >= cfg->num_layers) {
            char shown[64];
            describe(e, shown, sizeof shown);
            return sm_fail(r->err, SM_EFORMAT, "%s: mlp_only_layers[%zu] = %s is not a layer index in [0, %d)",
                           r->path, i, shown, cfg->num_layers);
        }
        cfg->layer_is_moe[x] = false;
    }
    return SM_OK;
}

/* Sliding-window attention, recorded so the forward can refuse contexts beyond the window. */
static sm_status parse_window(const reader *r, const arch_traits *tr, sm_model_config *cfg) {
    cfg->sliding_window = 0;
    if (!tr->window_key || !get(r, "sliding_window")) return SM_OK;
    bool applies = true;
    json_t *types = get(r, "layer_types"); /* transformers 5 spells the per-layer choice out */
    if (types && json_is_array(types)) {
        applies = false;
        for (size_t i = 0; i < json_array_size(types); i++) {
            json_t *t = json_array_get(types, i);
            applies |= json_is_string(t) && !strcmp(json_string_value(t), "sliding_attention");
        }
    } else if (tr->window_needs_flag) {
        SM_TRY(get_bool(r, "use_sliding_window", false, &applies));
        /* Qwen2: only layers >= max_window_layers use the window */
        int max_window_layers = 0;
        SM_TRY(get_int(r, "max_window_layers", false, 0, 0, &max_window_layers));
        if (get(r, "max_window_layers") && max_window_layers >= cfg->num_layers) applies = false;
    }
    if (!applies) return SM_OK;
    int window = 0;
    SM_TRY(get_int(r, "sliding_window", true, 0, 1, &window));
    if (window < cfg->max_position_embeddings) cfg->sliding_window = window;
    return SM_OK;
}

static sm_status parse_root(const reader *r, sm_model_config *cfg) {
    const arch_traits *tr = NULL;
    SM_TRY(find_arch(r, cfg, &tr));
    cfg->arch = tr->arch;
    snprintf(cfg->arch_name, sizeof cfg->arch_name, "%s", tr->name);
    if (!cfg->model_type[0]) snprintf(cfg->model_type, sizeof cfg->model_type, "%s", tr->model_type);
    SM_TRY(reject_unsupported(r, tr));

    SM_TRY(get_int(r, "vocab_size", true, 0, 1, &cfg->vocab_size));
    SM_TRY(get_int(r, "hidden_size", true, 0, 1, &cfg->hidden_size));
    SM_TRY(get_int(r, "num_hidden_layers", true, 0, 1, &cfg->num_layers));
    SM_TRY(get_int(r, "num_attention_heads", true, 0, 1, &cfg->num_heads));
    SM_TRY(get_int(r, "num_key_value_heads", false, cfg->num_heads, 1, &cfg->num_kv_heads));
    SM_TRY(get_int(r, "max_position_embeddings", true, 0, 1, &cfg->max_position_embeddings));
    if (cfg->num_heads % cfg->num_kv_heads != 0)
        return sm_fail(r->err, SM_EFORMAT,
                       "%s: num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)", r->path,
                       cfg->num_heads, cfg->num_kv_heads);

    /* head_dim: explicit (Qwen3 decouples it from hidden_size), absent, or null */
    json_t *hd = json_object_get(r->root, "head_dim");
    if (hd && !json_is_null(hd)) {
        SM_TRY(get_int(r, "head_dim", true, 0, 1, &cfg->head_dim));
    } else if (!hd && tr->default_head_dim) {
        cfg->head_dim = tr->default_head_dim;
    } else {
        if (cfg->hidden_size % cfg->num_heads != 0)
            return sm_fail(r->err, SM_EFORMAT,
                           "%s: hidden_size (%d) is not a multiple of num_attention_heads (%d) and no head_dim is given",
                           r->path, cfg->hidden_size, cfg->num_heads);
        cfg->head_dim = cfg->hidden_size / cfg->num_heads;
    }
    if (cfg->head_dim % 2 != 0)
        return sm_fail(r->err, SM_EFORMAT, "%s: head_dim %d must be even (RoPE rotates pairs of dimensions)", r->path,
                       cfg->head_dim);
    if ((long long)cfg->num_heads * cfg->head_dim > SANE_SIZE_MAX)
        return sm_fail(r->err, SM_EFORMAT, "%s: num_attention_heads*head_dim = %lld is implausibly large", r->path,
                       (long long)cfg->num_heads * cfg->head_dim);

    double eps = 0;
    SM_TRY(get_number(r, "rms_norm_eps", tr->default_rms_norm_eps, &eps));
    if (!(eps > 0) || !(eps < 1))
        return sm_fail(r->err, SM_EFORMAT, "%s: rms_norm_eps must be in (0, 1), got %g", r->path, eps);
    cfg->rms_norm_eps = (float)eps;
    SM_TRY(parse_rope(r, tr, cfg));
    SM_TRY(get_bool(r, "tie_word_embeddings", false, &cfg->tie_word_embeddings));
    cfg->qkv_bias = tr->qkv_bias;
    if (tr->qkv_bias) SM_TRY(get_bool(r, "qkv_bias", true, &cfg->qkv_bias)); /* transformers 5 Qwen2-MoE */
    cfg->qk_norm = tr->qk_norm;

    /* MoE */
    if (tr->experts_key) {
        const char *key = tr->experts_key;
        if (tr->experts_key_alt && !json_object_get(r->root, key) && json_object_get(r->root, tr->experts_key_alt))
            key = tr->experts_key_alt;
        SM_TRY(get_int(r, key, true, 0, 0, &cfg->num_experts));
        if (tr->arch == SM_ARCH_MIXTRAL && cfg->num_experts == 0)
            return sm_fail(r->err, SM_EFORMAT, "%s: num_local_experts must be at least 1, got 0", r->path);
    }
    if (cfg->num_experts > 0) {
        SM_TRY(get_int(r, "num_experts_per_tok", true, 0, 1, &cfg->num_experts_per_tok));
        if (cfg->num_experts_per_tok > cfg->num_experts)
            return sm_fail(r->err, SM_EFORMAT, "%s: num_experts_per_tok (%d) exceeds the number of experts %s (%d)",
                           r->path, cfg->num_experts_per_tok, tr->experts_key, cfg->num_experts);
        if (tr->experts_use_intermediate)
            SM_TRY(get_int(r, "intermediate_size", true, 0, 1, &cfg->moe_intermediate_size));
        else
            SM_TRY(get_int(r, "moe_intermediate_size", true, 0, 1, &cfg->moe_intermediate_size));
        if (tr->norm_topk_always) cfg->norm_topk_prob = true;
        else SM_TRY(get_bool(r, "norm_topk_prob", tr->norm_topk_default, &cfg->norm_topk_prob));
        if (tr->shared_expert) {
            SM_TRY(get_int(r, "shared_expert_intermediate_size", false, 0, 0, &cfg->shared_expert_intermediate_size));
            cfg->shared_expert_gate = cfg->shared_expert_intermediate_size > 0;
        }
    }
    SM_TRY(parse_moe_layers(r, tr, cfg));

    /* intermediate_size matters when some layer is dense (or the experts use it) */
    bool any_dense = false;
    for (int i = 0; i < cfg->num_layers; i++) any_dense |= !cfg->layer_is_moe[i];
    SM_TRY(get_int(r, "intermediate_size", any_dense || tr->experts_use_intermediate, 0, any_dense ? 1 : 0,
                   &cfg->intermediate_size));

    SM_TRY(parse_window(r, tr, cfg));
    SM_TRY(parse_token_ids(r, "bos_token_id", &cfg->bos_token_id, NULL, NULL));
    SM_TRY(parse_token_ids(r, "eos_token_id", &cfg->eos_token_id, &cfg->eos_token_ids, &cfg->n_eos_token_ids));
    return SM_OK;
}

sm_status sm_config_parse(const char *json_text, size_t len, const char *path, sm_model_config *cfg, sm_error *err) {
    memset(cfg, 0, sizeof *cfg);
    cfg->bos_token_id = cfg->eos_token_id = -1;
    json_error_t jerr;
    json_t *root = json_loadb(json_text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return sm_fail(err, SM_EFORMAT, "%s: invalid JSON at line %d, column %d: %s", path, jerr.line, jerr.column,
                       jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return sm_fail(err, SM_EFORMAT, "%s: expected a JSON object at the top level", path);
    }
    reader r = {.root = root, .path = path, .err = err};
    sm_status st = parse_root(&r, cfg);
    json_decref(root);
    if (st != SM_OK) sm_config_free(cfg);
    return st;
}

sm_status sm_config_load(const char *config_path, sm_model_config *cfg, sm_error *err) {
    memset(cfg, 0, sizeof *cfg);
    FILE *f = fopen(config_path, "rb");
    if (!f) return sm_fail(err, SM_EIO, "%s: cannot open: %s", config_path, strerror(errno));
    /* A config is a few KB; anything past 16 MB is not a config. */
    enum { CONFIG_MAX_BYTES = 16 << 20 };
    char *text = NULL;
    size_t len = 0;
    sm_status st = sm_alloc((void **)&text, CONFIG_MAX_BYTES + 1, config_path, err);
    if (st == SM_OK) {
        len = fread(text, 1, CONFIG_MAX_BYTES + 1, f);
        if (ferror(f)) st = sm_fail(err, SM_EIO, "%s: read error: %s", config_path, strerror(errno));
        else if (len > CONFIG_MAX_BYTES)
            st = sm_fail(err, SM_EFORMAT, "%s: larger than %d bytes; not a config.json", config_path, CONFIG_MAX_BYTES);
    }
    fclose(f);
    if (st == SM_OK) st = sm_config_parse(text, len, config_path, cfg, err);
    free(text);
    return st;
}

void sm_config_free(sm_model_config *cfg) {
    if (!cfg) return;
    free(cfg->layer_is_moe);
    cfg->layer_is_moe = NULL;
    free(cfg->eos_token_ids);
    cfg->eos_token_ids = NULL;
    cfg->n_eos_token_ids = 0;
}

/* Saturating int64 arithmetic: a count that does not fit is reported as INT64_MAX rather than
 * wrapping (configs are bounded by SANE_SIZE_MAX, but products of several bounds are not). */
static int64_t mul_sat(int64_t a, int64_t b) {
    int64_t out;
    return __builtin_mul_overflow(a, b, &out) ? INT64_MAX : out;
}
static int64_t add_sat(int64_t a, int64_t b) {
    int64_t out;
    return __builtin_add_overflow(a, b, &out) ? INT64_MAX : out;
}

void sm_config_param_counts(const sm_model_config *cfg, int64_t *total, int64_t *active) {
    int64_t hidden = cfg->hidden_size, q_dim = mul_sat(cfg->num_heads, cfg->head_dim);
    int64_t kv_dim = mul_sat(cfg->num_kv_heads, cfg->head_dim);
    int64_t embed = mul_sat(cfg->vocab_size, hidden);
    int64_t all = add_sat(add_sat(embed, cfg->tie_word_embeddings ? 0 : embed), hidden); /* + final norm */
    int64_t inactive = 0;

    int64_t attn = mul_sat(hidden, add_sat(mul_sat(2, q_dim), mul_sat(2, kv_dim))); /* q, k, v, o */
    if (cfg->qkv_bias) attn = add_sat(attn, add_sat(q_dim, mul_sat(2, kv_dim)));
    if (cfg->qk_norm == SM_QK_NORM_PER_HEAD) attn = add_sat(attn, mul_sat(2, cfg->head_dim));
    if (cfg->qk_norm == SM_QK_NORM_FULL) attn = add_sat(attn, add_sat(q_dim, kv_dim));
    int64_t expert = mul_sat(3, mul_sat(hidden, cfg->moe_intermediate_size));
    for (int i = 0; i < cfg->num_layers; i++) {
        int64_t layer = add_sat(attn, mul_sat(2, hidden)); /* + two norms */
        if (cfg->layer_is_moe && cfg->layer_is_moe[i]) {
            layer = add_sat(layer, mul_sat(cfg->num_experts, hidden)); /* router */
            layer = add_sat(layer, mul_sat(cfg->num_experts, expert));
            if (cfg->shared_expert_intermediate_size > 0)
                layer = add_sat(layer, mul_sat(3, mul_sat(hidden, cfg->shared_expert_intermediate_size)));
            if (cfg->shared_expert_gate) layer = add_sat(layer, hidden);
            inactive = add_sat(inactive, mul_sat(cfg->num_experts - cfg->num_experts_per_tok, expert));
        } else {
            layer = add_sat(layer, mul_sat(3, mul_sat(hidden, cfg->intermediate_size)));
        }
        all = add_sat(all, layer);
    }
    if (total) *total = all;
    if (active) *active = all == INT64_MAX ? INT64_MAX : all - inactive;
}
