/* src/spec/drafter_ngram.c — the "ngram" drafter: prompt lookup (vLLM's prompt_lookup_min/max,
 * Saxena's prompt lookup decoding). The last n tokens are searched for earlier in the sequence,
 * longest n first, and what followed that occurrence is
 * proposed. No model, no state: each proposal is recomputed from the committed context. */
#include <stdlib.h>
#include <string.h>

#include "spec/drafter_registry.h"

typedef struct ngram_state {
    int n_min, n_max;
    int vocab;
} ngram_state;

static sm_status ngram_create(const sm_drafter_init *init, void **state, sm_error *err) {
    const sm_spec_config *cfg = init->cfg;
    int n_min = cfg->ngram_min > 0 ? cfg->ngram_min : 1, n_max = cfg->ngram_max > 0 ? cfg->ngram_max : 4;
    if (cfg->ngram_min < 0 || cfg->ngram_max < 0 || n_min > n_max)
        return sm_fail(err, SM_EINVAL, "ngram drafter: need 1 <= ngram_min (%d) <= ngram_max (%d)", cfg->ngram_min,
                       cfg->ngram_max);
    ngram_state *st;
    SM_TRY(sm_calloc((void **)&st, 1, sizeof *st, "ngram drafter", err));
    st->n_min = n_min;
    st->n_max = n_max;
    st->vocab = sm_model_cfg(init->target)->vocab_size;
    *state = st;
    return SM_OK;
}

/* Start of the continuation after an earlier occurrence of the last n tokens, or -1: the most
 * recent occurrence followed by at least k tokens, else the one followed by the most (the
 * earliest), since a very recent match may leave almost nothing to propose. */
static int find_match(const int *ctx, int len, int n, int k) {
    const int *suffix = ctx + len - n;
    int from = -1;
    for (int i = len - n - 1; i >= 0; i--) {
        if (memcmp(ctx + i, suffix, (size_t)n * sizeof(int))) continue;
        from = i + n;
        if (len - from >= k) break;
    }
    return from;
}

static sm_status ngram_propose(void *state, const sm_spec_config *cfg, sm_draft_request *reqs, int n, sm_error *err) {
    const ngram_state *st = state;
    for (int r = 0; r < n; r++) {
        sm_draft_request *req = &reqs[r];
        req->n_proposed = 0;
        if (req->k <= 0) continue;
        int from = -1;
        for (int len = st->n_max; len >= st->n_min && from < 0; len--)
            if (len < req->context_len) from = find_match(req->context, req->context_len, len, req->k);
        if (from < 0) continue;
        int count = req->context_len - from < req->k ? req->context_len - from : req->k;
        for (int j = 0; j < count; j++) {
            req->tokens[j] = req->context[from + j];
            /* A deterministic proposal is a one-hot q: rejection sampling stays exact
             * (accept with p(x), otherwise resample from p without x). */
            if (req->q) {
                float *q = req->q + (long)j * st->vocab;
                memset(q, 0, (size_t)st->vocab * sizeof(float));
                q[req->tokens[j]] = 1.0f;
            }
        }
        req->n_proposed = count;
    }
    return SM_OK;
}

static sm_status ngram_rollback(void *state, int slot, int committed_len, sm_error *err) { return SM_OK; }
static void ngram_release(void *state, int slot) {}
static void ngram_destroy(void *state) { free(state); }

const sm_drafter_backend sm_drafter_ngram = {
    .name = "ngram",
    .create = ngram_create,
    .propose = ngram_propose,
    .rollback = ngram_rollback,
    .release = ngram_release,
    .max_context = NULL,
    .destroy = ngram_destroy,
};
