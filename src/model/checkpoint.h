/* src/model/checkpoint.h — a Hugging Face checkpoint directory: config + named weights.
 *
 * Tensor names differ between architectures and between the hub's per-expert layout and
 * transformers 5's fused-expert layout; this module resolves them all into one structure of
 * views, with every shape checked against the config, so the forward never sees names. */
#ifndef SM_CHECKPOINT_H
#define SM_CHECKPOINT_H

#include "model/config.h"
#include "model/safetensors.h"

/* An expert MLP (SwiGLU): out = down( silu(gate x) * (up x) ).
 * gate, up: [ffn, hidden]; down: [hidden, ffn]. Views may point into a fused 3-D tensor. */
typedef struct sm_expert_tensors {
    sm_tensor gate, up, down;
} sm_expert_tensors;

typedef struct sm_layer_tensors {
    sm_tensor attn_norm;              /* [hidden] */
    sm_tensor q, k, v, o;             /* [heads*hd, hidden], [kv*hd, hidden] x2, [hidden, heads*hd] */
    sm_tensor q_bias, k_bias, v_bias; /* present when cfg.qkv_bias */
    sm_tensor q_norm, k_norm;         /* [hd] per head, or [heads*hd]/[kv*hd] full (OLMoE) */
    sm_tensor mlp_norm;               /* post_attention_layernorm [hidden] */
    bool is_moe;
    sm_expert_tensors dense;          /* dense MLP when !is_moe */
    sm_tensor router;                 /* [experts, hidden] */
    sm_expert_tensors *experts;       /* [num_experts] */
    bool has_shared;
    sm_expert_tensors shared;         /* shared expert (Qwen2-MoE) */
    sm_tensor shared_gate;            /* [1, hidden]: sigmoid gate of the shared expert */
} sm_layer_tensors;

typedef struct sm_checkpoint {
    char dir[4096];
    sm_model_config cfg;
    sm_safetensors *st;
    sm_tensor embed;                  /* [vocab, hidden] */
    sm_tensor final_norm;             /* [hidden] */
    sm_tensor lm_head;                /* [vocab, hidden]; the embedding when tied */
    sm_layer_tensors *layers;         /* [num_layers] */
} sm_checkpoint;

/* Load DIR/config.json and map the weights; fails naming the tensor on any missing tensor or
 * wrong shape. */
sm_status sm_checkpoint_open(const char *dir, sm_checkpoint **out, sm_error *err);
void sm_checkpoint_close(sm_checkpoint *ck);

#endif
