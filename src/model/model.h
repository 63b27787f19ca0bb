/* src/model/model.h — a loaded model instance: weights, KV cache, MoE backends, forward.
 *
 * The forward takes a batch of rows, each (sequence, token, position), so one call can score
 * k+1 draft positions of several sequences at once. The KV cache can be truncated back to any
 * length, which speculative decoding needs to roll back rejected tokens. */
#ifndef SM_MODEL_H
#define SM_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "model/config.h"
#include "model/tokenizer.h"

typedef struct sm_model sm_model;

typedef struct sm_model_opts {
    const char *moe_runner_backend; /* "ref", "auto", ... (NULL = "auto") */
    const char *moe_a2a_backend;    /* "local", ... (NULL = "local") */
    int n_threads;                  /* 0 = all online cores */
    int max_seqs;                   /* KV cache slots (sequences alive at once); 0 = 1 */
    int max_context;                /* tokens per sequence; 0 = min(max_position_embeddings, 4096) */
    const char *dtype;              /* expert weight dtype, one of the runner's weight_dtypes ("f32", "bf16"; NULL/"auto" = f32) */
    const char *device;             /* "cpu" (NULL) or "cuda": where weights, KV cache and math live */
    bool random_weights;            /* weights drawn from seed instead of read: only config.json is
                                       needed (full-size benchmarks without a download); cuda only */
    uint64_t seed;                  /* of the random weights */
} sm_model_opts;

/* One row of a forward batch. Rows of the same sequence must have consecutive positions
 * starting at or before that sequence's current KV length (positions past it would leave a
 * hole). Each row writes its K/V at `pos` and attends to positions 0..pos of its sequence. */
typedef struct sm_row {
    int seq;
    int token;
    int pos;
    bool want_logits;
} sm_row;

/* Per-call variations used by self-speculation; NULL means the full model. */
typedef struct sm_forward_opts {
    int top_k_override;          /* 0 = config's experts per token */
    const bool *skip_layer;      /* [num_layers] layers to skip (residual passes through), or NULL */
} sm_forward_opts;

/* Observes routing decisions as the forward makes them (metrics, route traces).
 * expert_ids / weights are [n_rows * top_k] in the batch's row order. */
typedef struct sm_route_observer {
    void (*on_route)(void *ctx, int layer, int n_rows, int top_k, const int *expert_ids, const float *weights);
    void *ctx;
} sm_route_observer;

sm_status sm_model_load(const char *dir, const sm_model_opts *opts, sm_model **out, sm_error *err);
/* A second instance sharing base's weights, with its own KV cache (self-speculation). */
sm_status sm_model_fork(sm_model *base, const sm_model_opts *opts, sm_model **out, sm_error *err);
void sm_model_free(sm_model *m);

const sm_model_config *sm_model_cfg(const sm_model *m);
const sm_tokenizer *sm_model_tokenizer(const sm_model *m); /* NULL when the checkpoint has none */
const char *sm_model_dir(const sm_model *m);
int sm_model_max_seqs(const sm_model *m);
int sm_model_max_context(const sm_model *m);

/* logits: [number of rows with want_logits][vocab], in row order. */
sm_status sm_model_forward(sm_model *m, const sm_row *rows, int n_rows, const sm_forward_opts *fo,
                           float *logits, sm_error *err);

int sm_model_seq_length(const sm_model *m, int seq);
/* Drop cached positions >= length (rollback). length may not exceed the current length. */
sm_status sm_model_truncate(sm_model *m, int seq, int length, sm_error *err);

void sm_model_set_route_observer(sm_model *m, const sm_route_observer *obs); /* NULL to clear */

#endif
