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
    bool eager;                     /* cuda: launch every step kernel by kernel, no CUDA graphs (A/B) */
    int chunked_prefill_size;       /* cuda: rows per forward pass (SGLang's --chunked-prefill-size);
                                       a longer batch runs in pieces. 0 = 4096. Larger pieces read
                                       the MoE experts' weights fewer times per prompt and cost
                                       workspace (activations of every row). Fixed when the
                                       weights load. */
    bool leave_out_moe;             /* cuda, for benchmarks only: every MoE block is left out of the
                                       steps (its residual passes through), so a step times the
                                       rest of the model (attention, norms, lm_head); the outputs
                                       are NOT the model's */
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

/* Sampling where the logits are (sm_model_samples_on_device): the rows that want logits are
 * turned into tokens on the device and only ids come back (plus, if asked, the filtered
 * distributions), instead of a [rows][vocab] logits copy. Filters as spec/sampler.h's
 * sm_sampling: softmax(logits / T), top-k, then top-p, renormalised; T = 0 is greedy.
 *
 * Plain (n_verify 0): token i is drawn from logits row i with uniforms[i] (NULL when greedy).
 * Verification (n_verify > 0): the logits rows form n_verify consecutive groups, group s being
 * n_draft[s] verify rows and the bonus row; the rejection-sampling test of spec/verify.c runs on
 * the device (greedy: draft i survives while it is the argmax), giving n_accepted[s] and the
 * token emitted after them, next[s]. */
typedef struct sm_forward_sample {
    float temperature, top_p;
    int top_k;
    const float *uniforms;        /* [n_logits] in [0, 1); NULL when greedy */
    int *tokens;                  /* out [n_logits] (plain mode) */
    float *probs;                 /* out [n_logits][vocab] filtered distributions (a draft's q), or NULL */
    int n_verify, k_max;
    const int *n_draft;           /* [n_verify], each 0..k_max */
    const int *drafts;            /* [n_verify][k_max] */
    const float *q;               /* [n_verify][k_max][vocab] draft distributions; NULL: one-hot at the drafts */
    const float *verify_uniforms; /* [n_verify][k_max + 1]: u[s][i] decides draft i, u[s][k_max] draws next */
    int *n_accepted, *next;       /* out [n_verify] */
} sm_forward_sample;

/* Per-call variations used by self-speculation and device sampling; NULL means the full model
 * returning logits. */
typedef struct sm_forward_opts {
    int top_k_override;          /* 0 = config's experts per token */
    const bool *skip_layer;      /* [num_layers] layers to skip (residual passes through), or NULL */
    const sm_forward_sample *sample; /* sample on the device (logits may then be NULL), or NULL */
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

/* How many rows from `start` a device's next forward pass takes: at most max_rows, and at most
 * max_logit_rows rows that want logits. A run of prompt_min_rows or more rows of one sequence at
 * consecutive positions (a prompt piece) gets a pass of its own, so a device can give it its
 * prefill kernels; shorter runs (decode and verification rows, short prompts) share passes.
 * At least one row while start < n_rows (max_rows, max_logit_rows >= 1). */
int sm_rows_next_pass(const sm_row *rows, int n_rows, int start, int max_rows, int max_logit_rows,
                      int prompt_min_rows);

/* logits: [number of rows with want_logits][vocab], in row order. */
sm_status sm_model_forward(sm_model *m, const sm_row *rows, int n_rows, const sm_forward_opts *fo,
                           float *logits, sm_error *err);

/* Whether forward accepts sm_forward_opts.sample (device "cuda"; the CPU reference samples in
 * the caller from the logits it returns). */
bool sm_model_samples_on_device(const sm_model *m);

int sm_model_seq_length(const sm_model *m, int seq);
/* Drop cached positions >= length (rollback). length may not exceed the current length. */
sm_status sm_model_truncate(sm_model *m, int seq, int length, sm_error *err);

void sm_model_set_route_observer(sm_model *m, const sm_route_observer *obs); /* NULL to clear */

#endif
