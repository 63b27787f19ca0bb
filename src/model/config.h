/* src/model/config.h — a Hugging Face config.json turned into the engine's model description.
 *
 * One struct describes every supported architecture; what differs between architectures is a
 * handful of traits (qk-norm kind, qkv bias, shared expert, router normalisation), so the
 * forward pass has no per-architecture code paths beyond reading these fields. */
#ifndef SM_CONFIG_H
#define SM_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"

typedef enum sm_arch {
    SM_ARCH_LLAMA = 0,  /* LlamaForCausalLM      (dense) */
    SM_ARCH_QWEN2,      /* Qwen2ForCausalLM      (dense, qkv bias) */
    SM_ARCH_QWEN3,      /* Qwen3ForCausalLM      (dense, per-head q/k norm) */
    SM_ARCH_MIXTRAL,    /* MixtralForCausalLM    (MoE, softmax top-k renormalised) */
    SM_ARCH_QWEN2_MOE,  /* Qwen2MoeForCausalLM   (MoE + shared expert with sigmoid gate, qkv bias) */
    SM_ARCH_QWEN3_MOE,  /* Qwen3MoeForCausalLM   (MoE, per-head q/k norm, norm_topk_prob) */
    SM_ARCH_OLMOE,      /* OlmoeForCausalLM      (MoE, q/k norm over the full projection) */
    SM_ARCH_COUNT
} sm_arch;

typedef enum sm_qk_norm {
    SM_QK_NORM_NONE = 0,
    SM_QK_NORM_PER_HEAD,  /* RMSNorm over head_dim, one weight of size head_dim (Qwen3) */
    SM_QK_NORM_FULL       /* RMSNorm over the whole q (k) projection before the head split (OLMoE) */
} sm_qk_norm;

typedef struct sm_model_config {
    sm_arch arch;
    char arch_name[64];        /* as written in "architectures" */
    char model_type[64];

    int vocab_size;
    int hidden_size;
    int num_layers;
    int num_heads;
    int num_kv_heads;
    int head_dim;              /* explicit in Qwen3; hidden/heads otherwise */
    int intermediate_size;     /* dense MLP layers */
    int max_position_embeddings;
    float rms_norm_eps;
    float rope_theta;
    bool tie_word_embeddings;
    bool qkv_bias;             /* Qwen2 / Qwen2-MoE */
    sm_qk_norm qk_norm;

    /* MoE (num_experts == 0 for dense models) */
    int num_experts;
    int num_experts_per_tok;   /* top-k */
    int moe_intermediate_size;
    bool norm_topk_prob;       /* renormalise the top-k weights to sum to 1 */
    int shared_expert_intermediate_size; /* 0 = no shared expert */
    bool shared_expert_gate;   /* Qwen2-MoE: sigmoid(x . w) scales the shared expert */
    bool *layer_is_moe;        /* [num_layers]: decoder_sparse_step / mlp_only_layers applied */

    int bos_token_id;          /* -1 when absent */
    int eos_token_id;          /* -1 when absent (first one if a list) */
    int *eos_token_ids;        /* every id of an eos list (Llama 3 has several); NULL when absent */
    int n_eos_token_ids;

    /* Sliding-window attention: window length in tokens, 0 = none. Within the window a
     * sliding-window model is exactly a full-attention one, so the forward accepts such a
     * model and refuses contexts longer than the window. */
    int sliding_window;
} sm_model_config;

/* Parse DIR/config.json (path names the file). Unknown architectures, rope scaling, sliding
 * windows that matter, etc. fail with SM_EUNSUPPORTED naming the key. */
sm_status sm_config_load(const char *config_path, sm_model_config *cfg, sm_error *err);
/* Same, from a JSON string; path is used in messages only. */
sm_status sm_config_parse(const char *json_text, size_t len, const char *path, sm_model_config *cfg, sm_error *err);
void sm_config_free(sm_model_config *cfg);

const char *sm_arch_name(sm_arch arch);
static inline bool sm_config_is_moe(const sm_model_config *cfg) { return cfg->num_experts > 0; }

/* Parameter counts: total, and active per token (top-k experts + shared + dense parts). */
void sm_config_param_counts(const sm_model_config *cfg, int64_t *total, int64_t *active);

#endif
