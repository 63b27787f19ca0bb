/* src/spec/drafter_lm.h — internal: the part shared by the drafters that run a language model
 * (the "model" drafter's separate draft, the "self" drafter's cheaper fork of the target).
 *
 * The draft's KV cache lags the committed context by design: the token the target emitted last
 * was never fed to the draft. Each propose() first feeds whatever the cache lacks (the whole
 * prompt for a new sequence, one or two tokens afterwards) in the same batched forward that
 * yields the first proposal, so the draft never needs a separate prefill. */
#ifndef SM_DRAFTER_LM_H
#define SM_DRAFTER_LM_H

#include "spec/spec.h"

typedef struct sm_lm_drafter {
    sm_model *model;
    bool owns_model;
    sm_forward_opts fo;        /* self-speculation knobs; zero for a separate draft */
    bool *skip_layer;          /* owned array behind fo.skip_layer, or NULL */
    int vocab;
    sm_row *rows;              /* batch scratch */
    int rows_cap;
    float *logits;             /* [n][vocab] scratch */
    int logits_cap;            /* rows */
    int *req_of_logit;         /* which request each logits row belongs to */
    bool device_sampling;      /* the model samples where its logits are (sm_model_samples_on_device) */
    float *uniforms;           /* [logits_cap]: one draw per logits row, device sampling */
    int *sampled;              /* [logits_cap]: the tokens it drew */
} sm_lm_drafter;

/* Takes ownership of model when owns_model (freed by destroy, also on failure). */
sm_status sm_lm_drafter_create(sm_model *model, bool owns_model, sm_lm_drafter **out, sm_error *err);
sm_status sm_lm_drafter_propose(void *state, const sm_spec_config *cfg, sm_draft_request *reqs, int n, sm_error *err);
sm_status sm_lm_drafter_rollback(void *state, int slot, int committed_len, sm_error *err);
void sm_lm_drafter_release(void *state, int slot);
int sm_lm_drafter_max_context(void *state);
sm_model *sm_lm_drafter_model(void *state);
void sm_lm_drafter_destroy(void *state);

#endif
