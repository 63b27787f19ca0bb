/* src/spec/spec.h — speculative decoding: drafters, verification, the step loop and its metrics.
 *
 * An sm_spec_engine drives one target model (and, for the "model" drafter, one draft model)
 * over a changing set of sequences. Sequences may be added at any time (open-loop arrivals);
 * each sm_spec_step() advances every active sequence once:
 *   - a newly added sequence is prefilled (its whole prompt) and emits its first token;
 *   - every other sequence gets k draft tokens from the drafter, and the target scores all
 *     k+1 positions of all sequences in ONE batched forward (verification reads the target's
 *     weights once for the whole batch: the point of speculative decoding);
 *   - verification accepts a prefix of the drafts and emits one more token (the target's
 *     correction, or the bonus token when all k were accepted); target and draft KV caches are
 *     rolled back to the accepted length.
 * With k = 0 (or drafter "none") the engine is plain target-only decoding: the baseline arm.
 *
 * Everything is deterministic on CPU: each sequence owns a seeded generator, so its tokens do
 * not depend on which other sequences share its batch.
 *
 * Metric names follow DESIGN.md (vLLM / SGLang): num_drafts, num_draft_tokens,
 * num_accepted_tokens, acceptance_rate, accept_length, accepted_per_pos[]. */
#ifndef SM_SPEC_H
#define SM_SPEC_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "model/model.h"
#include "spec/sampler.h"

/* Largest k accepted (proposals are tracked in a 64-bit mask per draft). */
#define SM_SPEC_MAX_K 64

/* ---- configuration ------------------------------------------------------------------------ */

typedef struct sm_spec_config {
    /* k, vLLM's num_speculative_tokens. 0 = baseline (target only); otherwise 1..SM_SPEC_MAX_K. */
    int num_speculative_tokens;
    /* "model", "ngram", "self", or NULL / "none" for the baseline. */
    const char *drafter;
    sm_sampling sampling; /* shared by target and draft (q and p use the same filters) */

    /* "model": either an already loaded draft (not owned; needs as many KV slots and as long a
     * context as the target), or a directory loaded with draft_opts (max_seqs / max_context
     * left 0 are set to the target's). draft_opts.moe_runner_backend is SGLang's
     * --speculative-moe-runner-backend. The draft must share the target's vocabulary. */
    sm_model *draft_model;
    const char *draft_dir;
    sm_model_opts draft_opts;

    /* "ngram" (prompt lookup, vLLM's prompt_lookup_min/max): match the longest suffix of
     * ngram_max..ngram_min tokens earlier in the sequence and propose what followed it.
     * 0 = defaults (min 1, max 4). */
    int ngram_min, ngram_max;

    /* "self": a fork of the target sharing its weights with its own KV cache, run cheaper.
     * Layers kept: self_layers (n_self_layers entries) if given, else all layers minus
     * self_skip_layers. self_top_k: experts per token in the draft pass (0 = config's). */
    const int *self_layers;
    int n_self_layers;
    const int *self_skip_layers;
    int n_self_skip_layers;
    int self_top_k;
} sm_spec_config;

/* ---- drafter interface -------------------------------------------------------------------- */

/* One sequence's proposal request; the drafter fills the out fields. */
typedef struct sm_draft_request {
    int slot;               /* KV slot of the sequence (same index in target and draft) */
    const int *context;     /* all committed tokens: prompt + emitted */
    int context_len;
    int k;                  /* at most this many proposals */
    sm_rng *rng;            /* the sequence's generator (sampling drafts) */
    int *tokens;            /* out: [k] proposed ids */
    float *q;               /* out: [k][vocab] draft distributions, or NULL when greedy */
    int n_proposed;         /* out: 0..k (n-gram may find no match) */
} sm_draft_request;

typedef struct sm_drafter_init {
    sm_model *target;
    const sm_spec_config *cfg;
    int max_seqs, max_context;
} sm_drafter_init;

typedef struct sm_drafter_backend {
    const char *name;
    sm_status (*create)(const sm_drafter_init *init, void **state, sm_error *err);
    /* Propose for n sequences at once (a model drafter batches them into each forward).
     * With sampling, q[i] is the distribution token i was drawn from; a deterministic
     * drafter writes a one-hot q (exact under rejection sampling). */
    sm_status (*propose)(void *state, const sm_spec_config *cfg, sm_draft_request *reqs, int n, sm_error *err);
    /* Verification kept the first committed_len tokens of the context the drafter last saw
     * (prompt + accepted drafts); anything it cached beyond them was rejected: drop it. */
    sm_status (*rollback)(void *state, int slot, int committed_len, sm_error *err);
    void (*release)(void *state, int slot);   /* the sequence left its slot */
    /* Largest context the drafter can serve (0 = no limit beyond the target's). Optional. */
    int (*max_context)(void *state);
    /* The language model it runs (a draft model, the self drafter's fork), NULL if none. Optional. */
    sm_model *(*model)(void *state);
    void (*destroy)(void *state);
} sm_drafter_backend;

const sm_drafter_backend *sm_drafter_find(const char *name); /* NULL if unknown */
void sm_drafter_names(char *buf, size_t cap);                 /* "model, ngram, self" */

/* ---- engine and sequences ----------------------------------------------------------------- */

typedef struct sm_spec_engine sm_spec_engine;

/* target is not owned; the engine uses all of its KV slots (sm_model_max_seqs). The config
 * (and the arrays it points to) is copied. Errors: k out of range, unknown drafter, draft
 * with another vocabulary or tokenizer (the message names both directories). */
sm_status sm_spec_engine_create(sm_model *target, const sm_spec_config *cfg, sm_spec_engine **out, sm_error *err);
void sm_spec_engine_free(sm_spec_engine *e);

typedef struct sm_spec_seq_params {
    const int *prompt;      /* copied */
    int n_prompt;           /* >= 1 and <= the context */
    int max_new_tokens;     /* >= 1 */
    const int *stop_ids;    /* copied; emitting one finishes the sequence (it is emitted) */
    int n_stop_ids;
    uint64_t seed;
    void *user;             /* returned untouched in step metrics (request pointer) */
} sm_spec_seq_params;

typedef enum sm_spec_finish {
    SM_SPEC_RUNNING = 0,
    SM_SPEC_FINISH_LENGTH,  /* max_new_tokens emitted */
    SM_SPEC_FINISH_STOP,    /* a stop id was emitted */
    SM_SPEC_FINISH_CONTEXT, /* the KV cache is full */
} sm_spec_finish;

const char *sm_spec_finish_name(sm_spec_finish f); /* "running", "length", "stop", "context" */

/* Adds a sequence that joins at the next step. *seq_id is unique for the engine's life.
 * SM_ERANGE when every KV slot is taken (see sm_spec_free_slots) or the prompt is too long. */
sm_status sm_spec_add_sequence(sm_spec_engine *e, const sm_spec_seq_params *p, int64_t *seq_id, sm_error *err);
/* Frees the sequence's KV slot (finished or not: removing a running one cancels it). */
sm_status sm_spec_remove_sequence(sm_spec_engine *e, int64_t seq_id, sm_error *err);
int sm_spec_free_slots(const sm_spec_engine *e);
int sm_spec_active_count(const sm_spec_engine *e); /* added and not finished */

/* Output tokens so far (prompt excluded); valid until the next step or removal. */
sm_status sm_spec_seq_output(const sm_spec_engine *e, int64_t seq_id, const int **tokens, int *n,
                             sm_spec_finish *finish, sm_error *err);

/* ---- metrics ------------------------------------------------------------------------------ */

typedef enum sm_spec_phase { SM_SPEC_PHASE_PREFILL = 0, SM_SPEC_PHASE_DECODE = 1 } sm_spec_phase;

/* One sequence in one step. */
typedef struct sm_spec_seq_step {
    int64_t seq_id;
    void *user;
    sm_spec_phase phase;
    int num_proposed;          /* k this draft (fewer near max_new_tokens / context end; 0 at prefill) */
    int num_accepted;
    uint64_t accepted_mask;    /* bit i: draft position i accepted */
    int num_emitted;           /* accepted (cut at a stop id) + the correction/bonus token */
    const int *emitted;        /* [num_emitted] ids */
    int context_len;           /* prompt + output after the step */
    sm_spec_finish finish;     /* != RUNNING when this step finished the sequence */
    /* The passes are batched: every sequence of the step waits for all of them. */
    uint64_t draft_ns, verify_ns, overhead_ns;
    /* Per target layer (num_layers entries, 0 for dense layers): distinct experts routed by
     * this sequence's verify rows, and by its first row alone (what a plain decode step of
     * this sequence would route). NULL at prefill or for dense targets. */
    const int *experts_touched_verify;
    const int *experts_touched_single;
    /* This sequence's rows in the step's target forward: [row_begin, row_end), in the row order
     * a route observer (below) sees. */
    int row_begin, row_end;
} sm_spec_seq_step;

/* One step of the engine; valid until the next step. */
typedef struct sm_spec_step_metrics {
    int64_t step_index;
    uint64_t t_start_ns, t_end_ns;     /* CLOCK_MONOTONIC; every emitted token's time is t_end_ns */
    uint64_t draft_ns, verify_ns, overhead_ns;
    int n_target_rows;                 /* rows in the one target forward (prefill included) */
    int n_seqs;
    const sm_spec_seq_step *seqs;
    /* Per target layer over the whole batch's decode rows (prefill rows excluded): distinct
     * experts of the verify pass, and of one row per sequence (a plain batched decode step).
     * Their ratio is the verification overhead factor. NULL for dense targets. */
    int num_layers;
    const int *experts_touched_verify;
    const int *experts_touched_single;
} sm_spec_step_metrics;

/* Advances every active sequence by one step. *metrics (may be NULL) describes it; n_seqs is 0
 * when nothing was active. */
sm_status sm_spec_step(sm_spec_engine *e, const sm_spec_step_metrics **metrics, sm_error *err);

/* ---- observing the target's routing ------------------------------------------------------ */

/* What one row of a step's target forward is. */
typedef enum sm_spec_row_kind {
    SM_SPEC_ROW_PREFILL = 0, /* a prompt token of a sequence being prefilled */
    SM_SPEC_ROW_DECODE = 1,  /* a sequence's last committed token: the row a plain decode step runs */
    SM_SPEC_ROW_VERIFY = 2,  /* a draft token under verification (it may be rejected) */
} sm_spec_row_kind;

typedef struct sm_spec_row_info {
    int64_t seq_id;
    void *user;              /* the sequence's user pointer */
    int pos;                 /* position in the sequence */
    sm_spec_row_kind kind;
} sm_spec_row_info;

/* Called for every MoE layer of every target forward that sm_spec_step runs (the engine owns
 * the target's sm_route_observer, so this is how anyone else watches the target route).
 * expert_ids / weights: [n_rows * top_k] in row order; rows: [n_rows] what each row is. Rows of
 * one sequence are consecutive with increasing positions. Which rows the text kept is known
 * when the step returns: a row's routing belongs to the sequence's text iff its pos is below
 * the sequence's context_len - 1 after the step (rejected drafts lie beyond; the last emitted
 * token has not been through the target yet). Every pointer is valid during the call only. */
typedef struct sm_spec_route_observer {
    void (*on_route)(void *ctx, int layer, int n_rows, int top_k, const int *expert_ids, const float *weights,
                     const sm_spec_row_info *rows);
    void *ctx;
} sm_spec_route_observer;

/* NULL clears. Dense targets never call it. */
void sm_spec_set_route_observer(sm_spec_engine *e, const sm_spec_route_observer *obs);

/* Counters over drafts (decode steps with num_proposed > 0), named as in vLLM / SGLang. */
typedef struct sm_spec_counters {
    int64_t num_drafts;
    int64_t num_draft_tokens;
    int64_t num_accepted_tokens;
    int64_t accepted_per_pos[SM_SPEC_MAX_K];
    int64_t num_emitted_tokens;   /* all output tokens, first (prefill) tokens included */
    int64_t num_steps;            /* engine steps (batched passes) */
    uint64_t draft_ns, verify_ns, overhead_ns;
} sm_spec_counters;

/* num_accepted_tokens / num_draft_tokens (0 when nothing was drafted). */
double sm_spec_acceptance_rate(const sm_spec_counters *c);
/* 1 + num_accepted_tokens / num_drafts (1 when nothing was drafted). */
double sm_spec_accept_length(const sm_spec_counters *c);

const sm_spec_counters *sm_spec_engine_counters(const sm_spec_engine *e);
/* Counters of one sequence (num_steps = its steps); valid until removal. */
sm_status sm_spec_seq_counters(const sm_spec_engine *e, int64_t seq_id, const sm_spec_counters **c, sm_error *err);

int sm_spec_k(const sm_spec_engine *e);
const char *sm_spec_drafter_name(const sm_spec_engine *e); /* "none" for the baseline */
/* The model the drafter runs: the draft ("model") or the target's cheaper fork ("self"), so its
 * routing can be observed like the target's; NULL for "ngram" and the baseline. */
sm_model *sm_spec_draft_model(const sm_spec_engine *e);

/* ---- verification (exposed for tests and other engines) ----------------------------------- */

/* Greedy: accept the longest prefix of drafts equal to the argmax of target logits rows
 * [0..n_draft-1]; *next = argmax of the row after the last accepted one. logits: [n_draft+1][vocab].
 * Returns the number accepted. */
int sm_verify_greedy(const float *logits, int vocab, const int *drafts, int n_draft, int *next);

/* Rejection sampling (Leviathan et al. / Chen et al.): p: target distributions
 * [n_draft+1][vocab] (p may be overwritten), q: draft distributions [n_draft][vocab]. Draft i is
 * accepted with min(1, p_i(x)/q_i(x)); on the first rejection *next is drawn from
 * normalise(max(0, p_i - q_i)); if all are accepted *next is the bonus draw from p_n.
 * Returns the number accepted. The output is distributed exactly as sampling from p. */
int sm_verify_sample(float *p, const float *q, int vocab, const int *drafts, int n_draft, sm_rng *rng, int *next);

#endif
