/* src/cuda/model_cuda_internal.h — what model_cuda.c (instances, forward, graphs) and
 * model_cuda_weights.c (memory plan, device weights) share. Internal to src/cuda/. */
#ifndef SM_MODEL_CUDA_INTERNAL_H
#define SM_MODEL_CUDA_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <cuda_runtime_api.h>

#include "kernel_api.h"
#include "model/checkpoint.h"
#include "model/model_device.h"
#include "moe/runner.h"

/* Rows one forward pass handles at once (longer batches run in chunks, in order, which is
 * exact: a row only reads cache positions written by itself or by earlier rows). Each pass of
 * a prompt reads every expert's weights once, so large pieces pay (H200, Qwen3-30B shape, one
 * 4096-token prompt: 235 ms in 512-row pieces, 179 in 1024, 126 in one 4096-row pass). */
#define SM_CUDA_DEFAULT_CHUNK_ROWS 4096 /* unless sm_model_opts.chunked_prefill_size says */
#define SM_CUDA_MAX_CHUNK_ROWS 65536
/* Rows of logits one pass may produce (a prompt wants one; a verification step k + 1 per
 * sequence): the logits buffer is rows x vocab x 4 bytes, 311 MB at 512 rows of Qwen3's vocab,
 * so it is not sized by the chunk. A pass ends early rather than exceed it. */
#define SM_CUDA_MAX_LOGIT_ROWS 512
static inline int sm_cuda_logit_rows(int chunk_rows) {
    return chunk_rows < SM_CUDA_MAX_LOGIT_ROWS ? chunk_rows : SM_CUDA_MAX_LOGIT_ROWS;
}

typedef struct dev_layer {
    sm_bf16_bits *attn_norm, *mlp_norm;   /* [H] */
    sm_bf16_bits *qkv;                    /* [qd + 2 kvd, H]: q, k, v projections stacked: one GEMM */
    sm_bf16_bits *qkv_bias;               /* [qd + 2 kvd] or NULL */
    sm_bf16_bits *q_norm, *k_norm;        /* [hd] (per head) or [qd] / [kvd] (full), or NULL */
    sm_bf16_bits *o;                      /* [H, qd] */
    bool is_moe;
    sm_bf16_bits *router;                 /* [E, H] */
    sm_bf16_bits *gate_up, *down;         /* dense MLP, or the shared expert: [2F, H], [H, F] */
    int ffn;                              /* F; 0 = none (MoE layer without a shared expert) */
    sm_bf16_bits *shared_gate;            /* [H] or NULL */
} dev_layer;

/* Read-only after load, shared by forks. */
typedef struct dev_weights {
    int refcount;
    char dir[4096];
    sm_checkpoint *ck;                    /* NULL with random weights */
    sm_model_config own_cfg;              /* random weights: parsed config.json */
    const sm_model_config *cfg;
    sm_tokenizer *tok;
    void *arena;                          /* every dense weight, one allocation */
    sm_bf16_bits *embed, *final_norm, *lm_head;
    dev_layer *layers;
    const sm_runner_backend *runner_backend;
    sm_runner *runner;
    int device_routing_max_assign;        /* up to here the runner needs no host expert offsets (a
                                             layer without a sync: graph-capturable); moe_device.h */
    int chunk_rows;                       /* rows per forward pass (chunked_prefill_size) */
    int assign_cap;                       /* assignments (rows x top_k) one chunk may bring */
} dev_weights;

/* Bytes of the device memory plan. */
typedef struct dev_plan {
    size_t weights, kv, workspace;
} dev_plan;

size_t sm_cuda_model_weight_bytes(const sm_model_config *c, const sm_runner_backend *runner);
size_t sm_cuda_model_kv_bytes(const sm_model_config *c, int max_seqs, int max_context);
size_t sm_cuda_model_workspace_bytes(const sm_model_config *c, const sm_runner_backend *runner, int chunk_rows);
/* Fails with "needs X GiB (weights A, KV cache B, workspace C), Y GiB free on <GPU>" when the
 * plan does not fit in the device's free memory. what names the model for the message. */
sm_status sm_cuda_model_check_fit(const char *what, const dev_plan *p, sm_error *err);

/* The runner a model gets for opts->moe_runner_backend (NULL / "auto" = `cuda`). */
sm_status sm_cuda_model_pick_runner(const char *name, const sm_runner_backend **out, sm_error *err);

/* Load (or draw) the weights onto the device; checks the plan (with the instance's KV cache and
 * workspace) before the first allocation. */
sm_status sm_cuda_weights_load(const char *dir, const sm_model_opts *opts, int max_seqs, int max_context,
                               dev_weights **out, sm_error *err);
void sm_cuda_weights_release(dev_weights *w);

#endif
