/* src/spec/step.c — one engine step: draft, verify in one batched target forward, accept,
 * emit, roll back. */
#include <stdlib.h>
#include <string.h>

#include "spec/spec_internal.h"

static sm_status reserve(sm_spec_engine *e, int rows, int logit_rows, sm_error *err) {
    if (rows > e->rows_cap) {
        sm_row *r = realloc(e->rows, (size_t)rows * sizeof *r);
        if (!r) return sm_fail(err, SM_ENOMEM, "spec step: out of memory for %d target rows", rows);
        e->rows = r;
        sm_spec_row_info *ri = realloc(e->row_info, (size_t)rows * sizeof *ri);
        if (!ri) return sm_fail(err, SM_ENOMEM, "spec step: out of memory for %d target rows", rows);
        e->row_info = ri;
        e->rows_cap = rows;
    }
    if (logit_rows > e->logits_cap) {
        float *l = realloc(e->logits, (size_t)logit_rows * (size_t)e->vocab * sizeof(float));
        if (!l) return sm_fail(err, SM_ENOMEM, "spec step: out of memory for %d logits rows", logit_rows);
        e->logits = l;
        e->logits_cap = logit_rows;
    }
    return SM_OK;
}

/* Draft distributions are only needed when sampling; grown to the step's active batch. */
static sm_status reserve_q(sm_spec_engine *e, long floats, sm_error *err) {
    if (floats <= e->q_cap) return SM_OK;
    float *q = realloc(e->q, (size_t)floats * sizeof(float));
    if (!q) return sm_fail(err, SM_ENOMEM, "spec step: out of memory for %ld draft probabilities", floats);
    e->q = q;
    e->q_cap = floats;
    return SM_OK;
}

static bool is_stop(const spec_seq *q, int token) {
    for (int i = 0; i < q->n_stop_ids; i++)
        if (q->stop_ids[i] == token) return true;
    return false;
}

/* How many tokens sequence q may draft this step: k, fewer near its max_new_tokens (the step
 * always emits one token beyond the accepted drafts) or the end of either KV cache. */
static int draft_budget(const sm_spec_engine *e, const spec_seq *q, int drafter_ctx) {
    int k = e->k;
    int left = q->max_new - (q->len - q->n_prompt) - 1;
    if (k > left) k = left;
    if (k > e->max_context - q->len) k = e->max_context - q->len;
    /* The draft feeds positions up to len + k - 2. */
    if (drafter_ctx > 0 && k > drafter_ctx + 1 - q->len) k = drafter_ctx + 1 - q->len;
    return k > 0 ? k : 0;
}

static sm_status draft(sm_spec_engine *e, int n, bool greedy, sm_error *err) {
    int K = e->k, V = e->vocab, n_req = 0;
    if (!e->drafter) {
        for (int i = 0; i < n; i++) e->req_of_seq[i] = -1;
        return SM_OK;
    }
    int drafter_ctx = e->drafter->max_context ? e->drafter->max_context(e->drafter_state) : 0;
    if (!greedy) SM_TRY(reserve_q(e, (long)n * K * V, err));
    for (int i = 0; i < n; i++) {
        spec_seq *q = e->step_seqs[i];
        e->req_of_seq[i] = -1;
        int k = q->prefilled ? draft_budget(e, q, drafter_ctx) : 0; /* a new sequence is prefilled first */
        if (k == 0) continue;
        e->reqs[n_req] = (sm_draft_request){.slot = q->slot, .context = q->tokens, .context_len = q->len, .k = k,
                                            .rng = &q->rng, .tokens = e->draft_tokens + (long)i * K,
                                            .q = greedy ? NULL : e->q + (long)i * K * V};
        e->req_of_seq[i] = n_req++;
    }
    if (n_req) SM_TRY(e->drafter->propose(e->drafter_state, &e->cfg, e->reqs, n_req, err));
    return SM_OK;
}

static int n_proposed(const sm_spec_engine *e, int i) {
    return e->req_of_seq[i] >= 0 ? e->reqs[e->req_of_seq[i]].n_proposed : 0;
}

/* Every sequence's uncached tokens (the prompt at prefill, the last emitted token afterwards)
 * followed by its drafts, all in one forward: the target's weights are read once per step. */
static sm_status verify(sm_spec_engine *e, int n, sm_error *err) {
    int n_rows = 0, n_logit_rows = 0;
    for (int i = 0; i < n; i++) {
        spec_seq *q = e->step_seqs[i];
        int cached = sm_model_seq_length(e->target, q->slot);
        if (cached >= q->len) { /* cannot happen after a clean rollback; re-score the last token */
            SM_TRY(sm_model_truncate(e->target, q->slot, q->len - 1, err));
            cached = q->len - 1;
        }
        n_rows += q->len - cached + n_proposed(e, i);
        n_logit_rows += 1 + n_proposed(e, i);
    }
    SM_TRY(reserve(e, n_rows, e->device_sampling ? 0 : n_logit_rows, err)); /* device sampling: no logits come back */
    int r = 0;
    for (int i = 0; i < n; i++) {
        spec_seq *q = e->step_seqs[i];
        step_span *sp = &e->spans[i];
        sp->row_begin = r;
        sm_spec_row_kind kind = q->prefilled ? SM_SPEC_ROW_DECODE : SM_SPEC_ROW_PREFILL;
        for (int p = sm_model_seq_length(e->target, q->slot); p < q->len; p++) {
            e->row_info[r] = (sm_spec_row_info){.seq_id = q->id, .user = q->user, .pos = p, .kind = kind};
            e->rows[r++] = (sm_row){.seq = q->slot, .token = q->tokens[p], .pos = p, .want_logits = p == q->len - 1};
        }
        sp->first_row = q->prefilled ? r - 1 : -1;
        const int *d = e->draft_tokens + (long)i * e->k;
        for (int j = 0; j < n_proposed(e, i); j++) {
            e->row_info[r] = (sm_spec_row_info){.seq_id = q->id, .user = q->user, .pos = q->len + j,
                                                .kind = SM_SPEC_ROW_VERIFY};
            e->rows[r++] = (sm_row){.seq = q->slot, .token = d[j], .pos = q->len + j, .want_logits = true};
        }
        sp->row_end = r;
    }
    e->metrics.n_target_rows = n_rows;
    sm_forward_sample sp;
    sm_forward_opts fo = {0};
    if (e->device_sampling) {
        /* The acceptance test runs where the logits are: each sequence's uniforms are drawn
         * here, in its own generator's order (one per draft, then the final draw). */
        bool greedy = sm_sampling_is_greedy(&e->cfg.sampling);
        int K = e->k;
        for (int i = 0; i < n; i++) {
            int np = n_proposed(e, i);
            float *u = e->verify_uniforms + (long)i * (K + 1);
            e->n_draft[i] = np;
            for (int j = 0; j <= K; j++) u[j] = 0.0f;
            if (greedy) continue;
            for (int j = 0; j < np; j++) u[j] = sm_rng_uniform_f32(&e->step_seqs[i]->rng);
            u[K] = sm_rng_uniform_f32(&e->step_seqs[i]->rng);
        }
        sp = (sm_forward_sample){.temperature = e->cfg.sampling.temperature, .top_p = e->cfg.sampling.top_p,
                                 .top_k = e->cfg.sampling.top_k, .n_verify = n, .k_max = K, .n_draft = e->n_draft,
                                 .drafts = K ? e->draft_tokens : NULL, .q = greedy || !e->drafter ? NULL : e->q,
                                 .verify_uniforms = e->verify_uniforms, .n_accepted = e->n_accepted, .next = e->next};
        fo.sample = &sp;
    }
    sm_spec_experts_reset(e, n);
    e->counting = true;
    sm_status s = sm_model_forward(e->target, e->rows, n_rows, fo.sample ? &fo : NULL, fo.sample ? NULL : e->logits, err);
    e->counting = false;
    return s;
}

/* Accept drafts of sequence i, emit its tokens, roll back both caches. */
static sm_status accept(sm_spec_engine *e, int i, const float *logits, bool greedy, sm_error *err) {
    spec_seq *q = e->step_seqs[i];
    int V = e->vocab, K = e->k, np = n_proposed(e, i), n_acc = 0, next;
    const int *d = e->draft_tokens + (long)i * K;
    if (e->device_sampling) { /* decided on the device by verify() */
        n_acc = e->n_accepted[i];
        next = e->next[i];
        if (n_acc < 0 || n_acc > np || next < 0 || next >= V)
            return sm_fail(err, SM_EINVAL, "spec step: device verification of sequence %lld gave %d accepted of %d, next %d",
                           (long long)q->id, n_acc, np, next);
    } else if (np == 0) { /* plain decode (or the prefill's first token) */
        if (greedy) {
            next = sm_argmax(logits, V);
        } else {
            sm_sampling_probs(logits, V, &e->cfg.sampling, e->probs);
            next = sm_sample_from_probs(e->probs, V, sm_rng_uniform(&q->rng));
        }
    } else if (greedy) {
        n_acc = sm_verify_greedy(logits, V, d, np, &next);
    } else {
        for (int j = 0; j <= np; j++) sm_sampling_probs(logits + (long)j * V, V, &e->cfg.sampling, e->probs + (long)j * V);
        n_acc = sm_verify_sample(e->probs, e->reqs[e->req_of_seq[i]].q, V, d, np, &q->rng, &next);
    }
    if (np > 0) {
        /* The target cached the pending token and all np drafts; keep the accepted ones. */
        SM_TRY(sm_model_truncate(e->target, q->slot, q->len + n_acc, err));
        SM_TRY(e->drafter->rollback(e->drafter_state, q->slot, q->len + n_acc, err));
    }

    int *em = e->emitted + (long)i * (K + 1), ne = 0;
    sm_spec_finish finish = SM_SPEC_RUNNING;
    for (int j = 0; j < n_acc && !finish; j++) {
        em[ne++] = d[j];
        if (is_stop(q, d[j])) finish = SM_SPEC_FINISH_STOP;
    }
    if (!finish) {
        em[ne++] = next;
        if (is_stop(q, next)) finish = SM_SPEC_FINISH_STOP;
    }
    memcpy(q->tokens + q->len, em, (size_t)ne * sizeof(int));
    q->len += ne;
    if (!finish && q->len - q->n_prompt >= q->max_new) finish = SM_SPEC_FINISH_LENGTH;
    if (!finish && q->len >= e->max_context) finish = SM_SPEC_FINISH_CONTEXT;
    q->finish = finish;

    sm_spec_seq_step *st = &e->seq_steps[i];
    *st = (sm_spec_seq_step){.seq_id = q->id, .user = q->user,
                             .phase = q->prefilled ? SM_SPEC_PHASE_DECODE : SM_SPEC_PHASE_PREFILL,
                             .num_proposed = np, .num_accepted = n_acc, .num_emitted = ne, .emitted = em,
                             .context_len = q->len, .finish = finish,
                             .row_begin = e->spans[i].row_begin, .row_end = e->spans[i].row_end};
    for (int j = 0; j < n_acc; j++) st->accepted_mask |= 1ull << j;
    if (e->num_experts > 0 && q->prefilled) {
        st->experts_touched_verify = e->touched_verify_seq + (long)i * e->num_layers;
        st->experts_touched_single = e->touched_single_seq + (long)i * e->num_layers;
    }
    q->prefilled = true;

    sm_spec_counters *cs[2] = {&e->counters, &q->counters};
    for (int c = 0; c < 2; c++) {
        if (np > 0) {
            cs[c]->num_drafts++;
            cs[c]->num_draft_tokens += np;
            cs[c]->num_accepted_tokens += n_acc;
            for (int j = 0; j < n_acc; j++) cs[c]->accepted_per_pos[j]++;
        }
        cs[c]->num_emitted_tokens += ne;
    }
    q->counters.num_steps++;
    return SM_OK;
}

sm_status sm_spec_step(sm_spec_engine *e, const sm_spec_step_metrics **metrics, sm_error *err) {
    sm_spec_step_metrics *m = &e->metrics;
    memset(m, 0, sizeof *m);
    m->t_start_ns = sm_spec_now_ns();
    m->step_index = e->step_index;
    m->num_layers = e->num_layers;
    m->seqs = e->seq_steps;
    if (metrics) *metrics = m;
    int n = 0;
    for (int i = 0; i < e->max_seqs; i++)
        if (e->slots[i] && e->slots[i]->finish == SM_SPEC_RUNNING) e->step_seqs[n++] = e->slots[i];
    if (n == 0) {
        m->t_end_ns = sm_spec_now_ns();
        return SM_OK;
    }
    e->step_index++;
    bool greedy = sm_sampling_is_greedy(&e->cfg.sampling);

    uint64_t t_draft = sm_spec_now_ns();
    SM_TRY(draft(e, n, greedy, err));
    uint64_t t_verify = sm_spec_now_ns();
    SM_TRY(verify(e, n, err));
    uint64_t t_accept = sm_spec_now_ns();

    long lrow = 0;
    for (int i = 0; i < n; i++) {
        SM_TRY(accept(e, i, e->device_sampling ? NULL : e->logits + lrow * e->vocab, greedy, err));
        lrow += 1 + n_proposed(e, i);
    }
    m->t_end_ns = sm_spec_now_ns();
    m->draft_ns = t_verify - t_draft;
    m->verify_ns = t_accept - t_verify;
    m->overhead_ns = (m->t_end_ns - m->t_start_ns) - m->draft_ns - m->verify_ns;
    m->n_seqs = n;
    if (e->num_experts > 0) {
        m->experts_touched_verify = e->touched_verify;
        m->experts_touched_single = e->touched_single;
    }
    for (int i = 0; i < n; i++) {
        sm_spec_seq_step *st = &e->seq_steps[i];
        st->draft_ns = m->draft_ns;
        st->verify_ns = m->verify_ns;
        st->overhead_ns = m->overhead_ns;
        sm_spec_counters *c = &e->step_seqs[i]->counters;
        c->draft_ns += m->draft_ns;
        c->verify_ns += m->verify_ns;
        c->overhead_ns += m->overhead_ns;
    }
    e->counters.num_steps++;
    e->counters.draft_ns += m->draft_ns;
    e->counters.verify_ns += m->verify_ns;
    e->counters.overhead_ns += m->overhead_ns;
    return SM_OK;
}
