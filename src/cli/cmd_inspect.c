/* specmoe inspect — describe a checkpoint: architecture, MoE layout, parameters, shapes.
 *
 * Parameter counts are taken from the tensors the loader actually resolved and compared with
 * what the config implies, so a checkpoint whose config and weights disagree shows it. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "model/checkpoint.h"

typedef struct counts {
    int64_t total, active;
    int64_t tensors[SM_DTYPE_COUNT];
    uint64_t bytes[SM_DTYPE_COUNT];
} counts;

static int64_t numel_if(const sm_tensor *t) { return t->name ? sm_tensor_numel(t) : 0; } /* 0 when absent */

static int64_t expert_numel(const sm_expert_tensors *x) {
    return numel_if(&x->gate) + numel_if(&x->up) + numel_if(&x->down);
}

/* Parameters of the resolved tensors; active leaves out the experts a token does not use. */
static void count_params(const sm_checkpoint *ck, counts *c) {
    const sm_model_config *cfg = &ck->cfg;
    int64_t total = numel_if(&ck->embed) + numel_if(&ck->final_norm);
    if (!cfg->tie_word_embeddings) total += numel_if(&ck->lm_head);
    int64_t inactive = 0;
    for (int i = 0; i < cfg->num_layers; i++) {
        const sm_layer_tensors *lt = &ck->layers[i];
        const sm_tensor *attn[] = {&lt->attn_norm, &lt->mlp_norm, &lt->q, &lt->k, &lt->v, &lt->o,
                                   &lt->q_bias, &lt->k_bias, &lt->v_bias, &lt->q_norm, &lt->k_norm};
        for (size_t j = 0; j < sizeof attn / sizeof attn[0]; j++) total += numel_if(attn[j]);
        if (!lt->is_moe) { total += expert_numel(&lt->dense); continue; }
        total += numel_if(&lt->router);
        for (int e = 0; e < cfg->num_experts; e++) total += expert_numel(&lt->experts[e]);
        if (lt->has_shared) total += expert_numel(&lt->shared) + numel_if(&lt->shared_gate);
        inactive += (int64_t)(cfg->num_experts - cfg->num_experts_per_tok) * expert_numel(&lt->experts[0]);
    }
    c->total = total;
    c->active = total - inactive;
    for (int i = 0; i < sm_safetensors_count(ck->st); i++) {
        const sm_tensor *t = sm_safetensors_at(ck->st, i);
        c->tensors[t->dtype]++;
        c->bytes[t->dtype] += t->nbytes;
    }
}

static const char *qk_norm_name(sm_qk_norm k) {
    return k == SM_QK_NORM_PER_HEAD ? "per_head" : k == SM_QK_NORM_FULL ? "full" : "none";
}

static void shape_text(const sm_tensor *t, char *buf, size_t cap) {
    size_t at = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->ndim && at < cap; d++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    if (at < cap) snprintf(buf + at, cap - at, "]");
}

/* 1234567 -> "1,234,567" */
static void group_digits(int64_t v, char *buf, size_t cap) {
    char raw[32];
    int n = snprintf(raw, sizeof raw, "%lld", (long long)v), out = 0;
    for (int i = 0; i < n && (size_t)out + 2 < cap; i++) {
        if (i > 0 && raw[i - 1] != '-' && (n - i) % 3 == 0) buf[out++] = ',';
        buf[out++] = raw[i];
    }
    buf[out] = '\0';
}

static void human(double v, char *buf, size_t cap) {
    if (v >= 1e9) snprintf(buf, cap, "%.2f B", v / 1e9);
    else if (v >= 1e6) snprintf(buf, cap, "%.2f M", v / 1e6);
    else if (v >= 1e3) snprintf(buf, cap, "%.2f K", v / 1e3);
    else snprintf(buf, cap, "%.0f", v);
}

/* One line describing a layer's shapes; identical consecutive lines are printed once. */
static void layer_text(const sm_checkpoint *ck, int i, char *buf, size_t cap) {
    const sm_layer_tensors *lt = &ck->layers[i];
    char q[32], k[32], v[32], o[32], a[32], b[32], c[32];
    shape_text(&lt->q, q, sizeof q);
    shape_text(&lt->k, k, sizeof k);
    shape_text(&lt->v, v, sizeof v);
    shape_text(&lt->o, o, sizeof o);
    size_t at = (size_t)snprintf(buf, cap, "%-5s q %s k %s v %s o %s", lt->is_moe ? "moe" : "dense", q, k, v, o);
    if (lt->q_norm.name && at < cap) {
        shape_text(&lt->q_norm, a, sizeof a);
        shape_text(&lt->k_norm, b, sizeof b);
        at += (size_t)snprintf(buf + at, cap - at, " qk_norm %s/%s", a, b);
    }
    if (lt->q_bias.name && at < cap) at += (size_t)snprintf(buf + at, cap - at, " +qkv bias");
    const sm_expert_tensors *x = lt->is_moe ? &lt->experts[0] : &lt->dense;
    shape_text(&x->gate, a, sizeof a);
    shape_text(&x->up, b, sizeof b);
    shape_text(&x->down, c, sizeof c);
    if (at >= cap) return;
    if (!lt->is_moe) {
        snprintf(buf + at, cap - at, " | mlp gate %s up %s down %s", a, b, c);
        return;
    }
    char r[32];
    shape_text(&lt->router, r, sizeof r);
    at += (size_t)snprintf(buf + at, cap - at, " | router %s, %d x (gate %s up %s down %s)", r, ck->cfg.num_experts,
                           a, b, c);
    if (lt->has_shared && at < cap) {
        shape_text(&lt->shared.gate, a, sizeof a);
        shape_text(&lt->shared.down, c, sizeof c);
        snprintf(buf + at, cap - at, ", shared gate/up %s down %s", a, c);
    }
}

static void moe_layer_list(const sm_model_config *cfg, bool moe, char *buf, size_t cap) {
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < cfg->num_layers && at < cap; i++) {
        if (cfg->layer_is_moe[i] != moe) continue;
        int j = i;
        while (j + 1 < cfg->num_layers && cfg->layer_is_moe[j + 1] == moe) j++;
        if (j > i) at += (size_t)snprintf(buf + at, cap - at, "%s%d-%d", at ? "," : "", i, j);
        else at += (size_t)snprintf(buf + at, cap - at, "%s%d", at ? "," : "", i);
        i = j;
    }
    if (!buf[0]) snprintf(buf, cap, "none");
}

static void print_text(const sm_checkpoint *ck, const counts *c, int64_t cfg_total, int64_t cfg_active) {
    const sm_model_config *cfg = &ck->cfg;
    char buf[1024], a[64], b[64];
    printf("checkpoint      %s\n", ck->dir);
    printf("weights         %s: %d tensors in %d file%s\n", sm_safetensors_source(ck->st),
           sm_safetensors_count(ck->st), sm_safetensors_file_count(ck->st),
           sm_safetensors_file_count(ck->st) == 1 ? "" : "s");
    printf("architecture    %s (model_type %s)\n", cfg->arch_name, cfg->model_type);
    moe_layer_list(cfg, true, a, sizeof a);
    moe_layer_list(cfg, false, b, sizeof b);
    printf("layers          %d (moe: %s; dense: %s)\n", cfg->num_layers, a, b);
    printf("hidden          %d\n", cfg->hidden_size);
    printf("attention       heads %d, kv heads %d, head_dim %d, qkv bias %s, qk norm %s\n", cfg->num_heads,
           cfg->num_kv_heads, cfg->head_dim, cfg->qkv_bias ? "yes" : "no", qk_norm_name(cfg->qk_norm));
    printf("vocab           %d (tied embeddings: %s)\n", cfg->vocab_size, cfg->tie_word_embeddings ? "yes" : "no");
    printf("rope_theta      %g, rms_norm_eps %g, max_position_embeddings %d, sliding window %d\n", cfg->rope_theta,
           cfg->rms_norm_eps, cfg->max_position_embeddings, cfg->sliding_window);
    if (sm_config_is_moe(cfg)) {
        printf("experts         %d, top-k %d, moe ffn %d, norm_topk_prob %s\n", cfg->num_experts,
               cfg->num_experts_per_tok, cfg->moe_intermediate_size, cfg->norm_topk_prob ? "yes" : "no");
        if (cfg->shared_expert_intermediate_size > 0)
            printf("shared expert   ffn %d%s\n", cfg->shared_expert_intermediate_size,
                   cfg->shared_expert_gate ? ", sigmoid gate" : "");
        else
            printf("shared expert   none\n");
    }
    if (cfg->intermediate_size > 0) printf("dense ffn       %d\n", cfg->intermediate_size);
    group_digits(c->total, a, sizeof a);
    group_digits(c->active, b, sizeof b);
    char ha[32], hb[32];
    human((double)c->total, ha, sizeof ha);
    human((double)c->active, hb, sizeof hb);
    printf("parameters      total %s (%s), active %s (%s)", a, ha, b, hb);
    if (c->total == cfg_total && c->active == cfg_active) printf(", as the config implies\n");
    else printf(", BUT the config implies total %lld, active %lld\n", (long long)cfg_total, (long long)cfg_active);
    for (int d = 0; d < SM_DTYPE_COUNT; d++) {
        if (!c->tensors[d]) continue;
        group_digits((int64_t)c->bytes[d], a, sizeof a);
        printf("dtype %-9s %lld tensors, %s bytes\n", sm_dtype_name((sm_dtype)d), (long long)c->tensors[d], a);
    }
    char e[32], f[32];
    shape_text(&ck->embed, e, sizeof e);
    shape_text(&ck->lm_head, f, sizeof f);
    printf("embed %s, lm_head %s%s\n", e, f, cfg->tie_word_embeddings ? " (tied)" : "");
    printf("layers:\n");
    char prev[1024] = "";
    int start = 0;
    for (int i = 0; i <= cfg->num_layers; i++) {
        if (i < cfg->num_layers) layer_text(ck, i, buf, sizeof buf);
        if (i > 0 && (i == cfg->num_layers || strcmp(buf, prev) != 0)) {
            char range[32];
            if (i - 1 > start) snprintf(range, sizeof range, "%d-%d", start, i - 1);
            else snprintf(range, sizeof range, "%d", start);
            printf("  %-7s %s\n", range, prev);
            start = i;
        }
        if (i < cfg->num_layers) memcpy(prev, buf, sizeof prev);
    }
}

static json_t *shape_json(const sm_tensor *t) {
    json_t *a = json_array();
    for (int d = 0; d < t->ndim; d++) json_array_append_new(a, json_integer(t->shape[d]));
    return a;
}

static json_t *expert_json(const sm_expert_tensors *x) {
    return json_pack("{s:o,s:o,s:o}", "gate", shape_json(&x->gate), "up", shape_json(&x->up), "down",
                     shape_json(&x->down));
}

static int print_json(const sm_checkpoint *ck, const counts *c, int64_t cfg_total, int64_t cfg_active) {
    const sm_model_config *cfg = &ck->cfg;
    json_t *root = json_object();
    json_object_set_new(root, "dir", json_string(ck->dir));
    json_object_set_new(root, "weights", json_string(sm_safetensors_source(ck->st)));
    json_object_set_new(root, "files", json_integer(sm_safetensors_file_count(ck->st)));
    json_object_set_new(root, "tensors", json_integer(sm_safetensors_count(ck->st)));
    json_object_set_new(root, "architecture", json_string(cfg->arch_name));
    json_object_set_new(root, "model_type", json_string(cfg->model_type));
    json_object_set_new(root, "num_layers", json_integer(cfg->num_layers));
    json_object_set_new(root, "hidden_size", json_integer(cfg->hidden_size));
    json_object_set_new(root, "num_attention_heads", json_integer(cfg->num_heads));
    json_object_set_new(root, "num_key_value_heads", json_integer(cfg->num_kv_heads));
    json_object_set_new(root, "head_dim", json_integer(cfg->head_dim));
    json_object_set_new(root, "vocab_size", json_integer(cfg->vocab_size));
    json_object_set_new(root, "intermediate_size", json_integer(cfg->intermediate_size));
    json_object_set_new(root, "tie_word_embeddings", json_boolean(cfg->tie_word_embeddings));
    json_object_set_new(root, "qkv_bias", json_boolean(cfg->qkv_bias));
    json_object_set_new(root, "qk_norm", json_string(qk_norm_name(cfg->qk_norm)));
    json_object_set_new(root, "rope_theta", json_real(cfg->rope_theta));
    json_object_set_new(root, "rms_norm_eps", json_real(cfg->rms_norm_eps));
    json_object_set_new(root, "max_position_embeddings", json_integer(cfg->max_position_embeddings));
    json_object_set_new(root, "sliding_window", json_integer(cfg->sliding_window));
    json_object_set_new(root, "num_experts", json_integer(cfg->num_experts));
    json_object_set_new(root, "num_experts_per_tok", json_integer(cfg->num_experts_per_tok));
    json_object_set_new(root, "moe_intermediate_size", json_integer(cfg->moe_intermediate_size));
    json_object_set_new(root, "norm_topk_prob", json_boolean(cfg->norm_topk_prob));
    json_object_set_new(root, "shared_expert_intermediate_size", json_integer(cfg->shared_expert_intermediate_size));
    json_t *moe_layers = json_array();
    for (int i = 0; i < cfg->num_layers; i++)
        if (cfg->layer_is_moe[i]) json_array_append_new(moe_layers, json_integer(i));
    json_object_set_new(root, "moe_layers", moe_layers);
    json_object_set_new(root, "params", json_pack("{s:I,s:I,s:I,s:I}", "total", (json_int_t)c->total, "active",
                                                  (json_int_t)c->active, "config_total", (json_int_t)cfg_total,
                                                  "config_active", (json_int_t)cfg_active));
    json_t *dtypes = json_object();
    for (int d = 0; d < SM_DTYPE_COUNT; d++)
        if (c->tensors[d])
            json_object_set_new(dtypes, sm_dtype_name((sm_dtype)d),
                                json_pack("{s:I,s:I}", "tensors", (json_int_t)c->tensors[d], "bytes",
                                          (json_int_t)c->bytes[d]));
    json_object_set_new(root, "dtypes", dtypes);
    json_t *layers = json_array();
    for (int i = 0; i < cfg->num_layers; i++) {
        const sm_layer_tensors *lt = &ck->layers[i];
        json_t *l = json_pack("{s:i,s:b,s:o,s:o,s:o,s:o}", "index", i, "moe", lt->is_moe, "q", shape_json(&lt->q), "k",
                              shape_json(&lt->k), "v", shape_json(&lt->v), "o", shape_json(&lt->o));
        if (lt->q_norm.name) {
            json_object_set_new(l, "q_norm", shape_json(&lt->q_norm));
            json_object_set_new(l, "k_norm", shape_json(&lt->k_norm));
        }
        if (lt->is_moe) {
            json_object_set_new(l, "router", shape_json(&lt->router));
            json_object_set_new(l, "expert", expert_json(&lt->experts[0]));
            if (lt->has_shared) json_object_set_new(l, "shared_expert", expert_json(&lt->shared));
        } else {
            json_object_set_new(l, "mlp", expert_json(&lt->dense));
        }
        json_array_append_new(layers, l);
    }
    json_object_set_new(root, "layers", layers);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(root);
    if (!text) {
        fprintf(stderr, "specmoe inspect: out of memory formatting JSON\n");
        return 1;
    }
    puts(text);
    free(text);
    return 0;
}

int sm_cmd_inspect(int argc, char **argv) {
    bool as_json = false;
    sm_arg args[] = {
        {"json", SM_ARG_FLAG, &as_json, "print a JSON object instead of text"},
    };
    const char *pos[1];
    int n_pos;
    int rc = sm_args_parse("inspect", "DIR [--json]", args, (int)(sizeof args / sizeof args[0]), argc, argv, pos, 1,
                           &n_pos);
    if (rc) return rc < 0 ? 0 : rc;
    if (n_pos != 1) {
        fprintf(stderr, "specmoe inspect: need a checkpoint directory (specmoe inspect DIR [--json])\n");
        return 2;
    }
    sm_error err = {0};
    sm_checkpoint *ck = NULL;
    if (sm_checkpoint_open(pos[0], &ck, &err) != SM_OK) {
        fprintf(stderr, "specmoe inspect: %s\n", err.msg);
        return 1;
    }
    counts c = {0};
    count_params(ck, &c);
    int64_t cfg_total = 0, cfg_active = 0;
    sm_config_param_counts(&ck->cfg, &cfg_total, &cfg_active);
    if (as_json) rc = print_json(ck, &c, cfg_total, cfg_active);
    else print_text(ck, &c, cfg_total, cfg_active);
    sm_checkpoint_close(ck);
    return rc;
}
