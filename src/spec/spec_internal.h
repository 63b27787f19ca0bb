/* src/spec/spec_internal.h — internal: the engine's state, shared by engine.c, step.c and
 * experts.c. Not part of the public API. */
#ifndef SM_SPEC_INTERNAL_H
#define SM_SPEC_INTERNAL_H

#include "spec/spec.h"

typedef struct spec_seq {
    int64_t id;
    int slot;
    void *user;
    int *tokens;            /* prompt then output; capacity n_prompt + max_new */
    int len, n_prompt, max_new;
    int *stop_ids;
    int n_stop_ids;
    sm_rng rng;
    bool prefilled;
    sm_spec_finish finish;
    sm_spec_counters counters;
} spec_seq;

/* Where one step's sequences sit in the target batch (for counting experts). */
typedef struct step_span {
    int row_begin, row_end; /* rows of this sequence in the target forward */
    int first_row;          /* the row a plain decode step would have; -1 at prefill */
} step_span;

struct sm_spec_engine {
    sm_model *target;
    sm_spec_config cfg;                /* copy; array members point at the copies below */
    int *self_layers, *self_skip_layers;
    const sm_drafter_backend *drafter; /* NULL = baseline */
    void *drafter_state;
    int k, max_seqs, max_context, vocab, num_layers, num_experts;

    spec_seq **slots;                  /* [max_seqs], NULL = free */
    int64_t next_id, step_index;
    sm_spec_counters counters;

    /* scratch for one step, sized at create or grown on demand */
    spec_seq **step_seqs;              /* [max_seqs] */
    sm_spec_seq_step *seq_steps;       /* [max_seqs] */
    step_span *spans;                  /* [max_seqs] */
    sm_draft_request *reqs;            /* [max_seqs] */
    int *req_of_seq;                   /* [max_seqs]: index into reqs or -1 */
    int *draft_tokens;                 /* [max_seqs][k] */
    int *emitted;                      /* [max_seqs][k+1] */
    float *q;                          /* [max_seqs][k][vocab], grown when sampling */
    long q_cap;
    float *probs;                      /* [k+1][vocab] */
    sm_row *rows;
    int rows_cap;
    float *logits;
    int logits_cap;                    /* rows */

    /* sampling and verification on the target's device (sm_model_samples_on_device) */
    bool device_sampling;
    int *n_draft, *n_accepted, *next;  /* [max_seqs] */
    float *verify_uniforms;            /* [max_seqs][k+1] */

    /* experts touched (MoE targets) */
    int *touched_verify, *touched_single;         /* [num_layers] */
    int *touched_verify_seq, *touched_single_seq; /* [max_seqs][num_layers] */
    unsigned *expert_stamp;                       /* [num_experts] */
    unsigned stamp;
    int n_step_seqs;
    bool counting;                                 /* observer active during verify */
    sm_spec_route_observer route_observer;         /* the user's, called after counting */
    sm_spec_row_info *row_info;                    /* [rows_cap]: what each target row is */

    sm_spec_step_metrics metrics;
};

/* Route observer callback for the target (experts.c). */
void sm_spec_on_route(void *ctx, int layer, int n_rows, int top_k, const int *expert_ids, const float *weights);
void sm_spec_experts_reset(sm_spec_engine *e, int n_step_seqs);

uint64_t sm_spec_now_ns(void);

#endif
