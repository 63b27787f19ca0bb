/* src/exp/recorder.h — writing an experiment into the results database (db/schema.sql).
 *
 * Statements are prepared once. Each run is one transaction: begin_run commits a 'running'
 * row on its own (so a killed process leaves a visible trace) and opens the transaction that
 * end_run commits together with status 'ok'. A failed or interrupted run is rolled back and
 * marked so; completed runs are never touched. Re-opening the same experiment (same name and
 * resolved settings) resumes it: run_complete() says which runs to skip. */
#ifndef SM_EXP_RECORDER_H
#define SM_EXP_RECORDER_H

#include <stdbool.h>
#include <stdint.h>
#include <sqlite3.h>

#include "core/status.h"
#include "exp/experiment.h"

typedef struct sm_recorder sm_recorder;

sm_status sm_recorder_create(sqlite3 *db, sm_recorder **out, sm_error *err);
void sm_recorder_free(sm_recorder *r); /* rolls back an open run */

/* Inserts the experiment, its environment and arms, or (unless fresh) finds the last
 * experiment with the same name and settings. arm_ids: [x->n_arms] out. */
sm_status sm_recorder_open_experiment(sm_recorder *r, const sm_experiment *x, bool fresh, int64_t *experiment_id,
                                      bool *resumed, int64_t *arm_ids, sm_error *err);
sm_status sm_recorder_close_experiment(sm_recorder *r, sm_error *err); /* sets ended_at */

sm_status sm_recorder_run_complete(sm_recorder *r, int64_t arm_id, int repeat, bool *complete, sm_error *err);

sm_status sm_recorder_begin_run(sm_recorder *r, int64_t arm_id, int repeat, int64_t seed, int64_t *run_id,
                                sm_error *err);

typedef enum sm_run_outcome { SM_RUN_OK, SM_RUN_FAILED, SM_RUN_INTERRUPTED } sm_run_outcome;
/* OK commits; otherwise rolls back and records the outcome and message (may be NULL). */
sm_status sm_recorder_end_run(sm_recorder *r, sm_run_outcome outcome, const char *message, sm_error *err);

typedef struct sm_recorded_request {
    int request_index;
    int prompt_tokens, output_tokens;
    double arrival_s, first_token_s, finish_s; /* first_token_s / finish_s < 0: none */
    const char *status;        /* "ok", "failed", "aborted" */
    const char *finish_reason; /* "stop", "length", "context", or NULL */
} sm_recorded_request;

typedef struct sm_recorded_step {
    int request_index;
    int64_t step;
    double time_s;
    int k_proposed, n_accepted, n_emitted;
    uint64_t accepted_mask;
    double draft_s, verify_s, overhead_s;
    int64_t experts_touched_verify, experts_touched_single; /* < 0: unknown (NULL) */
} sm_recorded_step;

typedef struct sm_recorded_moe {
    int64_t step;
    const char *model;   /* "target", "draft" */
    const char *pass;    /* "prefill", "decode", "draft", "verify" */
    int layer, n_tokens, n_experts, distinct_experts, max_tokens_per_expert;
    double mean_tokens_per_expert;
} sm_recorded_moe;

sm_status sm_recorder_request(sm_recorder *r, const sm_recorded_request *q, sm_error *err);
sm_status sm_recorder_emission(sm_recorder *r, int request_index, int emission_index, double time_s, int n_tokens,
                               sm_error *err);
sm_status sm_recorder_step(sm_recorder *r, const sm_recorded_step *s, sm_error *err);
sm_status sm_recorder_moe(sm_recorder *r, const sm_recorded_moe *m, sm_error *err);
sm_status sm_recorder_route(sm_recorder *r, int request_index, const char *model, int position, int layer, int top_k,
                            const int *expert_ids, const float *weights, sm_error *err);

#endif
