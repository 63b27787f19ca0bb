/* src/spec/drafter_lm.c — proposing with a language model, batched over sequences. */
#include "spec/drafter_lm.h"

#include <stdlib.h>
#include <string.h>

sm_status sm_lm_drafter_create(sm_model *model, bool owns_model, sm_lm_drafter **out, sm_error *err) {
    sm_lm_drafter *d;
    sm_status s = sm_calloc((void **)&d, 1, sizeof *d, "drafter", err);
    if (s) {
        if (owns_model) sm_model_free(model);
        return s;
    }
    d->model = model;
    d->owns_model = owns_model;
    d->vocab = sm_model_cfg(model)->vocab_size;
    d->device_sampling = sm_model_samples_on_device(model);
    *out = d;
    return SM_OK;
}

static sm_status reserve(sm_lm_drafter *d, int rows, int logit_rows, sm_error *err) {
    if (rows > d->rows_cap) {
        sm_row *r = realloc(d->rows, (size_t)rows * sizeof *r);
        if (!r) return sm_fail(err, SM_ENOMEM, "drafter: out of memory for %d rows", rows);
        d->rows = r;
        d->rows_cap = rows;
    }
    if (logit_rows > d->logits_cap) {
        float *l = realloc(d->logits, (size_t)logit_rows * d->vocab * sizeof(float));
        if (l) d->logits = l;
        int *m = l ? realloc(d->req_of_logit, (size_t)logit_rows * sizeof(int)) : NULL;
        if (m) d->req_of_logit = m;
        float *u = m ? realloc(d->uniforms, (size_t)logit_rows * sizeof(float)) : NULL;
        if (u) d->uniforms = u;
        int *t = u ? realloc(d->sampled, (size_t)logit_rows * sizeof(int)) : NULL;
        if (t) d->sampled = t;
        if (!t) return sm_fail(err, SM_ENOMEM, "drafter: out of memory for %d logits rows", logit_rows);
        d->logits_cap = logit_rows;
    }
    return SM_OK;
}

/* Turn one logits row into proposal j of request r (drawing from q when sampling). */
static void choose(sm_lm_drafter *d, const sm_spec_config *cfg, sm_draft_request *r, int j, const float *logits) {
    if (r->q) {
        float *q = r->q + (long)j * d->vocab;
        sm_sampling_probs(logits, d->vocab, &cfg->sampling, q);
        r->tokens[j] = sm_sample_from_probs(q, d->vocab, sm_rng_uniform(r->rng));
    } else {
        r->tokens[j] = sm_argmax(logits, d->vocab);
    }
    r->n_proposed = j + 1;
}

/* choose() done by the model's device: the draws' uniforms go in (in the same order of the
 * requests' generators), tokens and, when sampling, the q rows come back. */
static sm_status propose_on_device(sm_lm_drafter *d, const sm_spec_config *cfg, sm_draft_request *reqs, int j, int nr,
                                   int nl, sm_error *err) {
    bool sampling = !sm_sampling_is_greedy(&cfg->sampling);
    for (int l = 0; l < nl; l++) {
        sm_draft_request *r = &reqs[d->req_of_logit[l]];
        d->uniforms[l] = r->q ? sm_rng_uniform_f32(r->rng) : 0.0f;
    }
    sm_forward_sample sp = {.temperature = cfg->sampling.temperature, .top_p = cfg->sampling.top_p,
                            .top_k = cfg->sampling.top_k, .uniforms = sampling ? d->uniforms : NULL,
                            .tokens = d->sampled, .probs = sampling ? d->logits : NULL};
    sm_forward_opts fo = d->fo;
    fo.sample = &sp;
    SM_TRY(sm_model_forward(d->model, d->rows, nr, &fo, NULL, err));
    for (int l = 0; l < nl; l++) {
        sm_draft_request *r = &reqs[d->req_of_logit[l]];
        r->tokens[j] = d->sampled[l];
        if (r->q) memcpy(r->q + (long)j * d->vocab, d->logits + (long)l * d->vocab, (size_t)d->vocab * sizeof(float));
        r->n_proposed = j + 1;
    }
    return SM_OK;
}

sm_status sm_lm_drafter_propose(void *state, const sm_spec_config *cfg, sm_draft_request *reqs, int n, sm_error *err) {
    sm_lm_drafter *d = state;
    int k_max = 0, first_rows = 0, n_active = 0;
    for (int i = 0; i < n; i++) {
        sm_draft_request *r = &reqs[i];
        r->n_proposed = 0;
        if (r->k <= 0) continue;
        int cached = sm_model_seq_length(d->model, r->slot);
        if (cached < 0) return sm_fail(err, SM_ERANGE, "drafter: slot %d out of range", r->slot);
        /* The last committed token must be fed to get logits for the first proposal. */
        if (cached >= r->context_len) {
            SM_TRY(sm_model_truncate(d->model, r->slot, r->context_len - 1, err));
            cached = r->context_len - 1;
        }
        first_rows += r->context_len - cached;
        k_max = r->k > k_max ? r->k : k_max;
        n_active++;
    }
    if (n_active == 0) return SM_OK;
    SM_TRY(reserve(d, first_rows > n_active ? first_rows : n_active, n_active, err));

    for (int j = 0; j < k_max; j++) {
        int nr = 0, nl = 0;
        for (int i = 0; i < n; i++) {
            sm_draft_request *r = &reqs[i];
            if (r->k <= j) continue;
            if (j == 0) { /* catch up on everything the draft's cache lacks */
                for (int p = sm_model_seq_length(d->model, r->slot); p < r->context_len; p++)
                    d->rows[nr++] = (sm_row){.seq = r->slot, .token = r->context[p], .pos = p,
                                             .want_logits = p == r->context_len - 1};
            } else {
                d->rows[nr++] = (sm_row){.seq = r->slot, .token = r->tokens[j - 1],
                                         .pos = r->context_len - 1 + j, .want_logits = true};
            }
            d->req_of_logit[nl++] = i;
        }
        if (d->device_sampling) {
            SM_TRY(propose_on_device(d, cfg, reqs, j, nr, nl, err));
            continue;
        }
        SM_TRY(sm_model_forward(d->model, d->rows, nr, &d->fo, d->logits, err));
        for (int l = 0; l < nl; l++)
            choose(d, cfg, &reqs[d->req_of_logit[l]], j, d->logits + (long)l * d->vocab);
    }
    return SM_OK;
}

sm_status sm_lm_drafter_rollback(void *state, int slot, int committed_len, sm_error *err) {
    sm_lm_drafter *d = state;
    int cached = sm_model_seq_length(d->model, slot);
    if (cached > committed_len) SM_TRY(sm_model_truncate(d->model, slot, committed_len, err));
    return SM_OK;
}

void sm_lm_drafter_release(void *state, int slot) {
    sm_lm_drafter *d = state;
    sm_model_truncate(d->model, slot, 0, NULL);
}

int sm_lm_drafter_max_context(void *state) {
    sm_lm_drafter *d = state;
    return sm_model_max_context(d->model);
}

sm_model *sm_lm_drafter_model(void *state) { return ((sm_lm_drafter *)state)->model; }

void sm_lm_drafter_destroy(void *state) {
    sm_lm_drafter *d = state;
    if (!d) return;
    if (d->owns_model) sm_model_free(d->model);
    free(d->skip_layer);
    free(d->rows);
    free(d->logits);
    free(d->req_of_logit);
    free(d->uniforms);
    free(d->sampled);
    free(d);
}
