/* src/spec/engine.c — the speculative engine's life cycle: configuration checks, drafter
 * choice, sequences joining and leaving, counters. The step itself is in step.c. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "spec/spec_internal.h"

uint64_t sm_spec_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double sm_spec_acceptance_rate(const sm_spec_counters *c) {
    return c->num_draft_tokens > 0 ? (double)c->num_accepted_tokens / (double)c->num_draft_tokens : 0.0;
}

double sm_spec_accept_length(const sm_spec_counters *c) {
    return c->num_drafts > 0 ? 1.0 + (double)c->num_accepted_tokens / (double)c->num_drafts : 1.0;
}

const char *sm_spec_finish_name(sm_spec_finish f) {
    switch (f) {
    case SM_SPEC_RUNNING: return "running";
    case SM_SPEC_FINISH_LENGTH: return "length";
    case SM_SPEC_FINISH_STOP: return "stop";
    case SM_SPEC_FINISH_CONTEXT: return "context";
    }
    return "?";
}

static sm_status check_config(const sm_spec_config *cfg, sm_error *err) {
    const sm_sampling *s = &cfg->sampling;
    if (!(s->temperature >= 0) || !(s->top_p >= 0 && s->top_p <= 1) || s->top_k < 0)
        return sm_fail(err, SM_EINVAL, "sampling: need temperature >= 0 (got %g), 0 <= top_p <= 1 (got %g; 0 or 1 = off), top_k >= 0 (got %d)",
                       (double)s->temperature, (double)s->top_p, s->top_k);
    bool baseline = !cfg->drafter || !strcmp(cfg->drafter, "none");
    int k = cfg->num_speculative_tokens;
    if (baseline && k != 0)
        return sm_fail(err, SM_EINVAL, "num_speculative_tokens (k) is %d but no drafter is chosen "
                       "(choose one of model, ngram, self, or k = 0 for the baseline)", k);
    if (!baseline && (k < 1 || k > SM_SPEC_MAX_K))
        return sm_fail(err, SM_EINVAL, "num_speculative_tokens (k) must be between 1 and %d, got %d", SM_SPEC_MAX_K, k);
    return SM_OK;
}

static sm_status copy_ints(const int *src, int n, int **dst, const char *what, sm_error *err) {
    *dst = NULL;
    if (!src) return SM_OK;
    if (n < 0) return sm_fail(err, SM_EINVAL, "%s: negative count %d", what, n);
    SM_TRY(sm_calloc((void **)dst, (size_t)(n > 0 ? n : 1), sizeof(int), what, err));
    if (n) memcpy(*dst, src, (size_t)n * sizeof(int));
    return SM_OK;
}

static sm_status alloc_scratch(sm_spec_engine *e, sm_error *err) {
    size_t S = (size_t)e->max_seqs, K = (size_t)(e->k > 0 ? e->k : 1), L = (size_t)e->num_layers;
    SM_TRY(sm_calloc((void **)&e->slots, S, sizeof(spec_seq *), "sequence slots", err));
    SM_TRY(sm_calloc((void **)&e->step_seqs, S, sizeof(spec_seq *), "step scratch", err));
    SM_TRY(sm_calloc((void **)&e->seq_steps, S, sizeof(sm_spec_seq_step), "step scratch", err));
    SM_TRY(sm_calloc((void **)&e->spans, S, sizeof(step_span), "step scratch", err));
    SM_TRY(sm_calloc((void **)&e->reqs, S, sizeof(sm_draft_request), "step scratch", err));
    SM_TRY(sm_calloc((void **)&e->req_of_seq, S, sizeof(int), "step scratch", err));
    SM_TRY(sm_calloc((void **)&e->draft_tokens, S * K, sizeof(int), "draft tokens", err));
    SM_TRY(sm_calloc((void **)&e->emitted, S * (K + 1), sizeof(int), "emitted tokens", err));
    SM_TRY(sm_calloc((void **)&e->probs, (K + 1) * (size_t)e->vocab, sizeof(float), "target probabilities", err));
    e->device_sampling = sm_model_samples_on_device(e->target);
    SM_TRY(sm_calloc((void **)&e->n_draft, S, sizeof(int), "verification scratch", err));
    SM_TRY(sm_calloc((void **)&e->n_accepted, S, sizeof(int), "verification scratch", err));
    SM_TRY(sm_calloc((void **)&e->next, S, sizeof(int), "verification scratch", err));
    SM_TRY(sm_calloc((void **)&e->verify_uniforms, S * (K + 1), sizeof(float), "verification scratch", err));
    if (e->num_experts > 0) {
        SM_TRY(sm_calloc((void **)&e->touched_verify, L, sizeof(int), "expert counts", err));
        SM_TRY(sm_calloc((void **)&e->touched_single, L, sizeof(int), "expert counts", err));
        SM_TRY(sm_calloc((void **)&e->touched_verify_seq, S * L, sizeof(int), "expert counts", err));
        SM_TRY(sm_calloc((void **)&e->touched_single_seq, S * L, sizeof(int), "expert counts", err));
        SM_TRY(sm_calloc((void **)&e->expert_stamp, (size_t)e->num_experts, sizeof(unsigned), "expert counts", err));
    }
    return SM_OK;
}

sm_status sm_spec_engine_create(sm_model *target, const sm_spec_config *cfg, sm_spec_engine **out, sm_error *err) {
    *out = NULL;
    if (!target || !cfg) return sm_fail(err, SM_EINVAL, "spec engine: target and config are required");
    SM_TRY(check_config(cfg, err));
    const sm_drafter_backend *drafter = NULL;
    if (cfg->drafter && strcmp(cfg->drafter, "none")) {
        drafter = sm_drafter_find(cfg->drafter);
        if (!drafter) {
            char names[128];
            sm_drafter_names(names, sizeof names);
            return sm_fail(err, SM_EINVAL, "unknown drafter '%s' (available: %s, none)", cfg->drafter, names);
        }
    }
    sm_spec_engine *e;
    SM_TRY(sm_calloc((void **)&e, 1, sizeof *e, "spec engine", err));
    const sm_model_config *mc = sm_model_cfg(target);
    e->target = target;
    e->cfg = *cfg;
    e->drafter = drafter;
    e->k = drafter ? cfg->num_speculative_tokens : 0;
    e->max_seqs = sm_model_max_seqs(target);
    e->max_context = sm_model_max_context(target);
    e->vocab = mc->vocab_size;
    e->num_layers = mc->num_layers;
    e->num_experts = mc->num_experts;
    e->next_id = 1;
    sm_status s;
    if ((s = copy_ints(cfg->self_layers, cfg->n_self_layers, &e->self_layers, "self_layers", err)) ||
        (s = copy_ints(cfg->self_skip_layers, cfg->n_self_skip_layers, &e->self_skip_layers, "self_skip_layers", err)) ||
        (s = alloc_scratch(e, err)))
        goto fail;
    e->cfg.self_layers = e->self_layers;
    e->cfg.self_skip_layers = e->self_skip_layers;
    e->cfg.drafter = drafter ? drafter->name : "none";
    e->cfg.draft_dir = NULL; /* only needed while creating the drafter, below */
    if (drafter) {
        sm_spec_config init_cfg = e->cfg;
        init_cfg.draft_dir = cfg->draft_dir;
        sm_drafter_init init = {.target = target, .cfg = &init_cfg, .max_seqs = e->max_seqs, .max_context = e->max_context};
        if ((s = drafter->create(&init, &e->drafter_state, err))) {
            e->drafter = NULL;
            goto fail;
        }
    }
    if (e->num_experts > 0) sm_model_set_route_observer(target, &(sm_route_observer){.on_route = sm_spec_on_route, .ctx = e});
    *out = e;
    return SM_OK;
fail:
    sm_spec_engine_free(e);
    return s;
}

static void seq_free(spec_seq *q) {
    if (!q) return;
    free(q->tokens);
    free(q->stop_ids);
    free(q);
}

void sm_spec_engine_free(sm_spec_engine *e) {
    if (!e) return;
    if (e->num_experts > 0 && e->target) sm_model_set_route_observer(e->target, NULL);
    if (e->slots)
        for (int i = 0; i < e->max_seqs; i++) seq_free(e->slots[i]);
    if (e->drafter) e->drafter->destroy(e->drafter_state);
    free(e->self_layers); free(e->self_skip_layers);
    free(e->slots); free(e->step_seqs); free(e->seq_steps); free(e->spans); free(e->reqs); free(e->req_of_seq);
    free(e->draft_tokens); free(e->emitted); free(e->q); free(e->probs); free(e->n_draft); free(e->n_accepted); free(e->next);
    free(e->verify_uniforms); free(e->rows); free(e->row_info); free(e->logits);
    free(e->touched_verify); free(e->touched_single); free(e->touched_verify_seq); free(e->touched_single_seq);
    free(e->expert_stamp);
    free(e);
}

sm_status sm_spec_add_sequence(sm_spec_engine *e, const sm_spec_seq_params *p, int64_t *seq_id, sm_error *err) {
    if (!p || !p->prompt || p->n_prompt < 1) return sm_fail(err, SM_EINVAL, "add sequence: the prompt is empty");
    if (p->n_prompt > e->max_context)
        return sm_fail(err, SM_ERANGE, "add sequence: the prompt of %d tokens is longer than the context of %d tokens",
                       p->n_prompt, e->max_context);
    if (p->max_new_tokens < 1)
        return sm_fail(err, SM_EINVAL, "add sequence: max_new_tokens must be >= 1, got %d", p->max_new_tokens);
    if (p->n_stop_ids < 0 || (p->n_stop_ids > 0 && !p->stop_ids))
        return sm_fail(err, SM_EINVAL, "add sequence: bad stop id list (%d ids)", p->n_stop_ids);
    /* Checked here, not in the forward: one bad prompt must not fail a step shared by others. */
    for (int i = 0; i < p->n_prompt; i++)
        if (p->prompt[i] < 0 || p->prompt[i] >= e->vocab)
            return sm_fail(err, SM_ERANGE, "add sequence: prompt token %d is id %d, outside the vocabulary [0, %d)", i,
                           p->prompt[i], e->vocab);
    int slot = -1;
    for (int i = 0; i < e->max_seqs && slot < 0; i++)
        if (!e->slots[i]) slot = i;
    if (slot < 0)
        return sm_fail(err, SM_ERANGE, "add sequence: all %d KV slots are in use (remove finished sequences first)",
                       e->max_seqs);
    spec_seq *q;
    SM_TRY(sm_calloc((void **)&q, 1, sizeof *q, "sequence", err));
    sm_status s;
    if ((s = sm_calloc((void **)&q->tokens, (size_t)p->n_prompt + (size_t)p->max_new_tokens, sizeof(int), "sequence tokens", err)) ||
        (s = copy_ints(p->n_stop_ids ? p->stop_ids : NULL, p->n_stop_ids, &q->stop_ids, "stop ids", err)) ||
        (s = sm_model_truncate(e->target, slot, 0, err))) {
        seq_free(q);
        return s;
    }
    memcpy(q->tokens, p->prompt, (size_t)p->n_prompt * sizeof(int));
    q->id = e->next_id++;
    q->slot = slot;
    q->user = p->user;
    q->len = q->n_prompt = p->n_prompt;
    q->max_new = p->max_new_tokens;
    q->n_stop_ids = p->n_stop_ids;
    sm_rng_seed(&q->rng, p->seed);
    if (e->drafter) e->drafter->release(e->drafter_state, slot); /* a fresh cache for the new sequence */
    e->slots[slot] = q;
    if (seq_id) *seq_id = q->id;
    return SM_OK;
}

static spec_seq *find_seq(const sm_spec_engine *e, int64_t id) {
    for (int i = 0; i < e->max_seqs; i++)
        if (e->slots[i] && e->slots[i]->id == id) return e->slots[i];
    return NULL;
}

sm_status sm_spec_remove_sequence(sm_spec_engine *e, int64_t seq_id, sm_error *err) {
    spec_seq *q = find_seq(e, seq_id);
    if (!q) return sm_fail(err, SM_EINVAL, "remove sequence: no sequence %lld", (long long)seq_id);
    e->slots[q->slot] = NULL;
    sm_model_truncate(e->target, q->slot, 0, NULL);
    if (e->drafter) e->drafter->release(e->drafter_state, q->slot);
    seq_free(q);
    return SM_OK;
}

int sm_spec_free_slots(const sm_spec_engine *e) {
    int n = 0;
    for (int i = 0; i < e->max_seqs; i++) n += !e->slots[i];
    return n;
}

int sm_spec_active_count(const sm_spec_engine *e) {
    int n = 0;
    for (int i = 0; i < e->max_seqs; i++) n += e->slots[i] && e->slots[i]->finish == SM_SPEC_RUNNING;
    return n;
}

sm_status sm_spec_seq_output(const sm_spec_engine *e, int64_t seq_id, const int **tokens, int *n,
                             sm_spec_finish *finish, sm_error *err) {
    const spec_seq *q = find_seq(e, seq_id);
    if (!q) return sm_fail(err, SM_EINVAL, "sequence output: no sequence %lld", (long long)seq_id);
    if (tokens) *tokens = q->tokens + q->n_prompt;
    if (n) *n = q->len - q->n_prompt;
    if (finish) *finish = q->finish;
    return SM_OK;
}

const sm_spec_counters *sm_spec_engine_counters(const sm_spec_engine *e) { return &e->counters; }

sm_status sm_spec_seq_counters(const sm_spec_engine *e, int64_t seq_id, const sm_spec_counters **c, sm_error *err) {
    const spec_seq *q = find_seq(e, seq_id);
    if (!q) return sm_fail(err, SM_EINVAL, "sequence counters: no sequence %lld", (long long)seq_id);
    *c = &q->counters;
    return SM_OK;
}

int sm_spec_k(const sm_spec_engine *e) { return e->k; }
const char *sm_spec_drafter_name(const sm_spec_engine *e) { return e->drafter ? e->drafter->name : "none"; }

sm_model *sm_spec_draft_model(const sm_spec_engine *e) {
    return e->drafter && e->drafter->model ? e->drafter->model(e->drafter_state) : NULL;
}
