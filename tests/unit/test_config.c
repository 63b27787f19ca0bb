/* config.json parsing: the published configs of all 7 architectures give the values and the
 * parameter counts their model cards state; every defect fails with a message that names the
 * file and the key. Fixtures: tests/fixtures/gen/make_loader_fixtures.py. */
#include <string.h>

#include "model/config.h"
#include "test.h"

#define CFG_DIR "tests/fixtures/loader/configs/"

typedef struct expect {
    const char *file;
    sm_arch arch;
    int vocab, hidden, layers, heads, kv_heads, head_dim, inter;
    int experts, top_k, moe_ffn, shared;
    bool norm_topk, tied, qkv_bias;
    sm_qk_norm qk_norm;
    float rope_theta, eps;
    int bos, eos;
    double total_b, active_b; /* published parameter counts, billions */
} expect;

/* Published sizes: Mixtral 46.7B / 12.9B active; Qwen1.5-MoE-A2.7B 14.3B / 2.7B; Qwen3-30B-A3B
 * 30.5B / 3.3B; OLMoE-1B-7B 6.9B / 1.3B; Llama-2-7B 6.74B; Qwen2.5-0.5B 0.49B; Qwen3-0.6B 0.6B. */
static const expect real_configs[] = {
    {"mixtral_8x7b", SM_ARCH_MIXTRAL, 32000, 4096, 32, 32, 8, 128, 14336, 8, 2, 14336, 0, true, false, false,
     SM_QK_NORM_NONE, 1e6f, 1e-5f, 1, 2, 46.7, 12.9},
    {"qwen1.5_moe_a2.7b", SM_ARCH_QWEN2_MOE, 151936, 2048, 24, 16, 16, 128, 5632, 60, 4, 1408, 5632, false, false,
     true, SM_QK_NORM_NONE, 1e6f, 1e-6f, 151643, 151643, 14.3, 2.7},
    {"qwen3_30b_a3b", SM_ARCH_QWEN3_MOE, 151936, 2048, 48, 32, 4, 128, 6144, 128, 8, 768, 0, true, false, false,
     SM_QK_NORM_PER_HEAD, 1e6f, 1e-6f, 151643, 151645, 30.5, 3.3},
    {"olmoe_1b_7b", SM_ARCH_OLMOE, 50304, 2048, 16, 16, 16, 128, 1024, 64, 8, 1024, 0, false, false, false,
     SM_QK_NORM_FULL, 10000.f, 1e-5f, -1, 50279, 6.9, 1.3},
    {"llama2_7b", SM_ARCH_LLAMA, 32000, 4096, 32, 32, 32, 128, 11008, 0, 0, 0, 0, false, false, false,
     SM_QK_NORM_NONE, 10000.f, 1e-5f, 1, 2, 6.74, 6.74},
    {"qwen2.5_0.5b", SM_ARCH_QWEN2, 151936, 896, 24, 14, 2, 64, 4864, 0, 0, 0, 0, false, true, true,
     SM_QK_NORM_NONE, 1e6f, 1e-6f, 151643, 151643, 0.49, 0.49},
    {"qwen3_0.6b", SM_ARCH_QWEN3, 151936, 1024, 28, 16, 8, 128, 3072, 0, 0, 0, 0, false, true, false,
     SM_QK_NORM_PER_HEAD, 1e6f, 1e-6f, 151643, 151645, 0.6, 0.6},
};

static bool near_rel(double got, double want, double tol) { return fabs(got - want) <= tol * fabs(want); }

static void test_real_configs(void) {
    for (size_t i = 0; i < sizeof real_configs / sizeof real_configs[0]; i++) {
        const expect *e = &real_configs[i];
        char path[256];
        snprintf(path, sizeof path, CFG_DIR "%s.json", e->file);
        sm_model_config c;
        sm_error err = {0};
        CHECK_OK(sm_config_load(path, &c, &err), &err);
        if (err.code) continue;
        CHECK(c.arch == e->arch && !strcmp(c.arch_name, sm_arch_name(e->arch)), "%s: arch %s", e->file, c.arch_name);
        CHECK(c.vocab_size == e->vocab && c.hidden_size == e->hidden && c.num_layers == e->layers, "%s: sizes", e->file);
        CHECK(c.num_heads == e->heads && c.num_kv_heads == e->kv_heads && c.head_dim == e->head_dim,
              "%s: heads %d kv %d head_dim %d", e->file, c.num_heads, c.num_kv_heads, c.head_dim);
        CHECK(c.intermediate_size == e->inter, "%s: intermediate_size %d", e->file, c.intermediate_size);
        CHECK(c.num_experts == e->experts && c.num_experts_per_tok == e->top_k && c.moe_intermediate_size == e->moe_ffn,
              "%s: experts %d top-k %d moe ffn %d", e->file, c.num_experts, c.num_experts_per_tok,
              c.moe_intermediate_size);
        CHECK(c.shared_expert_intermediate_size == e->shared && c.shared_expert_gate == (e->shared > 0),
              "%s: shared %d", e->file, c.shared_expert_intermediate_size);
        CHECK(c.norm_topk_prob == e->norm_topk, "%s: norm_topk_prob %d", e->file, c.norm_topk_prob);
        CHECK(c.tie_word_embeddings == e->tied && c.qkv_bias == e->qkv_bias && c.qk_norm == e->qk_norm,
              "%s: tied %d qkv_bias %d qk_norm %d", e->file, c.tie_word_embeddings, c.qkv_bias, c.qk_norm);
        CHECK(c.rope_theta == e->rope_theta && c.rms_norm_eps == e->eps, "%s: rope %g eps %g", e->file, c.rope_theta,
              c.rms_norm_eps);
        CHECK(c.bos_token_id == e->bos && c.eos_token_id == e->eos, "%s: bos %d eos %d", e->file, c.bos_token_id,
              c.eos_token_id);
        CHECK(c.sliding_window == 0, "%s: sliding_window %d", e->file, c.sliding_window);
        bool all_moe = true, none_moe = true;
        for (int l = 0; l < c.num_layers; l++) { all_moe &= c.layer_is_moe[l]; none_moe &= !c.layer_is_moe[l]; }
        CHECK(e->experts ? all_moe : none_moe, "%s: layer_is_moe", e->file);
        int64_t total, active;
        sm_config_param_counts(&c, &total, &active);
        /* published figures are rounded to 2-3 digits */
        CHECK(near_rel((double)total / 1e9, e->total_b, 0.02), "%s: total %.3fB, published %.2fB", e->file,
              (double)total / 1e9, e->total_b);
        CHECK(near_rel((double)active / 1e9, e->active_b, 0.02), "%s: active %.3fB, published %.2fB", e->file,
              (double)active / 1e9, e->active_b);
        sm_config_free(&c);
    }
}

/* Exact counts for Qwen3-30B-A3B, worked out by hand:
 * embed+lm_head 2*151936*2048 = 622,329,856; final norm 2048; per layer: q,o 2*4096*2048,
 * k,v 2*512*2048, norms 2*2048 + q/k norm 2*128, router 128*2048, experts 128*3*2048*768. */
static void test_exact_counts(void) {
    sm_model_config c;
    sm_error err = {0};
    CHECK_OK(sm_config_load(CFG_DIR "qwen3_30b_a3b.json", &c, &err), &err);
    if (err.code) return;
    int64_t per_layer = 2LL * 4096 * 2048 + 2LL * 512 * 2048 + 2 * 2048 + 2 * 128 + 128LL * 2048 + 128LL * 3 * 2048 * 768;
    int64_t want_total = 2LL * 151936 * 2048 + 2048 + 48 * per_layer;
    int64_t want_active = want_total - 48LL * (128 - 8) * 3 * 2048 * 768;
    int64_t total, active;
    sm_config_param_counts(&c, &total, &active);
    CHECK(total == want_total && active == want_active, "total %lld (want %lld) active %lld (want %lld)",
          (long long)total, (long long)want_total, (long long)active, (long long)want_active);
    sm_config_free(&c);
}

static void test_variants(void) {
    sm_model_config c;
    sm_error err = {0};

    /* transformers 5: rope_parameters instead of rope_theta */
    CHECK_OK(sm_config_load(CFG_DIR "qwen3_moe_rope_parameters.json", &c, &err), &err);
    if (!err.code) { CHECK(c.rope_theta == 1e6f, "rope_parameters theta %g", c.rope_theta); sm_config_free(&c); }

    /* decoder_sparse_step 2 and mlp_only_layers [3] over 6 layers: MoE where (i+1)%2==0, minus 3 */
    CHECK_OK(sm_config_load(CFG_DIR "qwen2_moe_sparse_step.json", &c, &err), &err);
    if (!err.code) {
        const bool want[6] = {false, true, false, false, false, true};
        for (int i = 0; i < 6; i++) CHECK(c.layer_is_moe[i] == want[i], "sparse_step layer %d", i);
        sm_config_free(&c);
    }
    CHECK_OK(sm_config_load(CFG_DIR "qwen3_moe_mlp_only_layers.json", &c, &err), &err);
    if (!err.code) {
        const bool want[4] = {false, true, false, true};
        for (int i = 0; i < 4; i++) CHECK(c.layer_is_moe[i] == want[i], "mlp_only_layers layer %d", i);
        int64_t total, active, full_total, full_active;
        sm_config_param_counts(&c, &total, &active);
        /* two dense layers (3*2048*6144 each) replace two MoE layers */
        c.layer_is_moe[0] = c.layer_is_moe[2] = true;
        sm_config_param_counts(&c, &full_total, &full_active);
        int64_t dense = 3LL * 2048 * 6144, moe = 128LL * 2048 + 128LL * 3 * 2048 * 768;
        CHECK(full_total - total == 2 * (moe - dense), "dense layers change total by %lld",
              (long long)(full_total - total));
        sm_config_free(&c);
    }

    /* Mixtral with a window smaller than the context; head_dim null means hidden/heads */
    CHECK_OK(sm_config_load(CFG_DIR "mixtral_sliding_window.json", &c, &err), &err);
    if (!err.code) {
        CHECK(c.sliding_window == 4096 && c.head_dim == 128, "window %d head_dim %d", c.sliding_window, c.head_dim);
        sm_config_free(&c);
    }
    CHECK_OK(sm_config_load(CFG_DIR "qwen2_sliding_window.json", &c, &err), &err);
    if (!err.code) { CHECK(c.sliding_window == 4096, "qwen2 window %d", c.sliding_window); sm_config_free(&c); }

    /* Llama 3 style eos list + rope_parameters */
    CHECK_OK(sm_config_load(CFG_DIR "llama_eos_list.json", &c, &err), &err);
    if (!err.code) {
        CHECK(c.bos_token_id == 128000 && c.eos_token_id == 128001 && c.n_eos_token_ids == 3 &&
                  c.eos_token_ids[2] == 128009,
              "eos list: bos %d eos %d n %d", c.bos_token_id, c.eos_token_id, c.n_eos_token_ids);
        CHECK(c.rope_theta == 500000.f && c.num_kv_heads == 8, "llama3 rope %g kv %d", c.rope_theta, c.num_kv_heads);
        sm_config_free(&c);
    }

    /* no "architectures": model_type decides */
    CHECK_OK(sm_config_load(CFG_DIR "olmoe_model_type_only.json", &c, &err), &err);
    if (!err.code) { CHECK(c.arch == SM_ARCH_OLMOE, "model_type fallback arch %d", c.arch); sm_config_free(&c); }

    /* Mixtral renormalises top-k whatever norm_topk_prob says; a missing key takes the class default */
    const char *mixtral = "{\"architectures\":[\"MixtralForCausalLM\"],\"vocab_size\":10,\"hidden_size\":8,"
                          "\"num_hidden_layers\":1,\"num_attention_heads\":2,\"max_position_embeddings\":16,"
                          "\"intermediate_size\":4,\"num_local_experts\":2,\"num_experts_per_tok\":1,"
                          "\"norm_topk_prob\":false}";
    CHECK_OK(sm_config_parse(mixtral, strlen(mixtral), "inline.json", &c, &err), &err);
    if (!err.code) {
        CHECK(c.norm_topk_prob && c.num_kv_heads == 2 && c.rope_theta == 1e6f && c.rms_norm_eps == 1e-5f &&
                  !c.tie_word_embeddings && c.bos_token_id == -1 && c.eos_token_id == -1,
              "mixtral defaults: norm_topk %d kv %d rope %g eps %g", c.norm_topk_prob, c.num_kv_heads, c.rope_theta,
              c.rms_norm_eps);
        sm_config_free(&c);
    }
    /* Qwen3 without head_dim: the transformers class default is 128, not hidden/heads */
    const char *qwen3 = "{\"architectures\":[\"Qwen3ForCausalLM\"],\"vocab_size\":10,\"hidden_size\":64,"
                        "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"max_position_embeddings\":16,"
                        "\"intermediate_size\":4}";
    CHECK_OK(sm_config_parse(qwen3, strlen(qwen3), "inline.json", &c, &err), &err);
    if (!err.code) { CHECK(c.head_dim == 128, "qwen3 default head_dim %d", c.head_dim); sm_config_free(&c); }
}

typedef struct bad_case {
    const char *file;
    sm_status code;
    const char *needle1, *needle2; /* must both appear in the message (besides the path) */
} bad_case;

static const bad_case bad_cases[] = {
    {"unknown_arch", SM_EUNSUPPORTED, "'FooForCausalLM' is not supported", "Qwen3MoeForCausalLM"},
    {"malformed", SM_EFORMAT, "line 5", "column"},
    {"missing_hidden_size", SM_EFORMAT, "missing required key", "'hidden_size'"},
    {"missing_num_experts", SM_EFORMAT, "missing required key", "'num_experts'"},
    {"rope_llama3", SM_EUNSUPPORTED, "rope_scaling.rope_type", "llama3"},
    {"rope_linear_type", SM_EUNSUPPORTED, "rope_scaling.type", "linear"},
    {"rope_parameters_yarn", SM_EUNSUPPORTED, "rope_parameters.rope_type", "yarn"},
    {"kv_heads_not_divisor", SM_EFORMAT, "num_key_value_heads (4)", "num_attention_heads (14)"},
    {"topk_gt_experts", SM_EFORMAT, "num_experts_per_tok (9)", "num_local_experts"},
    {"negative_hidden", SM_EFORMAT, "'hidden_size'", "-4096"},
    {"layers_not_int", SM_EFORMAT, "'num_hidden_layers'", "\"32\""},
    {"attention_bias", SM_EUNSUPPORTED, "attention_bias", "o_proj"},
    {"mlp_only_out_of_range", SM_EFORMAT, "mlp_only_layers[0] = 48", "[0, 48)"},
    {"gelu", SM_EUNSUPPORTED, "hidden_act", "gelu"},
    {"odd_head_dim", SM_EFORMAT, "head_dim 127", "even"},
    {"not_object", SM_EFORMAT, "JSON object", "top level"},
};

static void test_bad_configs(void) {
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *b = &bad_cases[i];
        char path[256];
        snprintf(path, sizeof path, CFG_DIR "bad/%s.json", b->file);
        sm_model_config c;
        sm_error err = {0};
        sm_status st = sm_config_load(path, &c, &err);
        CHECK(st == b->code, "%s: status %s, want %s (%s)", b->file, sm_status_name(st), sm_status_name(b->code),
              err.msg);
        CHECK(strstr(err.msg, path) && strstr(err.msg, b->needle1) && strstr(err.msg, b->needle2),
              "%s: message lacks the path, '%s' or '%s': %s", b->file, b->needle1, b->needle2, err.msg);
        CHECK(c.layer_is_moe == NULL && c.eos_token_ids == NULL, "%s: nothing left allocated on failure", b->file);
    }
    /* a missing file is an I/O error naming it */
    sm_model_config c;
    sm_error err = {0};
    CHECK(sm_config_load(CFG_DIR "does_not_exist.json", &c, &err) == SM_EIO && strstr(err.msg, "does_not_exist.json"),
          "missing file: %s", err.msg);
    /* empty input, and a config with neither architectures nor model_type */
    CHECK(sm_config_parse("", 0, "empty.json", &c, &err) == SM_EFORMAT && strstr(err.msg, "empty.json"), "empty: %s",
          err.msg);
    CHECK(sm_config_parse("{}", 2, "anon.json", &c, &err) == SM_EFORMAT && strstr(err.msg, "model_type"), "{}: %s",
          err.msg);
}

int main(void) {
    test_real_configs();
    test_exact_counts();
    test_variants();
    test_bad_configs();
    TEST_MAIN_END
}
