#include "sched/sched.h"

#include <string.h>
#include <time.h>

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_s(double s) {
    if (s <= 0) return;
    if (s > 0.05) s = 0.05; /* wake often enough to notice a stop request */
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(s * 1e9)};
    nanosleep(&ts, NULL);
}

sm_status sm_sched_run(sm_spec_engine *e, const sm_workload *w, const sm_sched_opts *o, const sm_sched_sink *sink,
                       sm_request_state *reqs, sm_error *err) {
    const sm_sched_sink none = {0};
    if (!sink) sink = &none;
    bool open_loop = o->request_rate > 0;
    int cap = o->max_concurrency > 0 ? o->max_concurrency : w->n;
    for (int i = 0; i < w->n; i++)
        reqs[i] = (sm_request_state){.index = i, .item = &w->items[i], .first_token_s = -1, .finish_s = -1, .seq_id = -1};

    uint64_t t0 = now_ns();
    int next = 0, in_flight = 0, done = 0;
    int64_t tokens = 0;
    while (done < w->n) {
        if (o->stop_flag && *o->stop_flag) return sm_fail(err, SM_EINVAL, "interrupted");
        double now = (double)(now_ns() - t0) * 1e-9;
        /* Admit in request order while there is room (and, open loop, once they have arrived). */
        while (next < w->n && in_flight < cap && sm_spec_free_slots(e) > 0 &&
               (!open_loop || w->items[next].arrival_s <= now)) {
            sm_request_state *r = &reqs[next];
            r->arrival_s = open_loop ? r->item->arrival_s : (o->max_concurrency > 0 ? now : 0.0);
            sm_spec_seq_params p = {
                .prompt = r->item->prompt,
                .n_prompt = r->item->n_prompt,
                .max_new_tokens = r->item->max_new_tokens,
                .stop_ids = o->stop_ids,
                .n_stop_ids = o->n_stop_ids,
                .seed = o->seed + (uint64_t)next,
                .user = r,
            };
            sm_status s = sm_spec_add_sequence(e, &p, &r->seq_id, err);
            if (s != SM_OK) return sm_error_prefix(err, "request %d: ", next);
            r->admitted = true;
            in_flight++;
            next++;
        }
        if (in_flight == 0) {
            /* Open loop, nothing to do until the next arrival. */
            if (next < w->n) sleep_s(w->items[next].arrival_s - now);
            continue;
        }
        const sm_spec_step_metrics *m;
        SM_TRY(sm_spec_step(e, &m, err));
        double t = (double)(m->t_end_ns - t0) * 1e-9;
        for (int i = 0; i < m->n_seqs; i++) {
            const sm_spec_seq_step *st = &m->seqs[i];
            sm_request_state *r = st->user;
            if (!r) return sm_fail(err, SM_EINTERNAL, "engine step reports a sequence without its request");
            if (st->num_emitted > 0) {
                if (r->first_token_s < 0) r->first_token_s = t;
                if (sink->on_emission) SM_TRY(sink->on_emission(sink->ctx, r, r->n_emissions, t, st->num_emitted, err));
                r->n_emissions++;
                r->output_tokens += st->num_emitted;
                tokens += st->num_emitted;
            }
            if (st->phase == SM_SPEC_PHASE_DECODE && sink->on_step)
                SM_TRY(sink->on_step(sink->ctx, r, st, m->step_index, t, err));
            if (st->finish != SM_SPEC_RUNNING) {
                r->finish = st->finish;
                r->finish_s = t;
                r->done = true;
                SM_TRY(sm_spec_remove_sequence(e, r->seq_id, err));
                if (sink->on_request_done) SM_TRY(sink->on_request_done(sink->ctx, r, err));
                in_flight--;
                done++;
            }
        }
        if (sink->after_step) SM_TRY(sink->after_step(sink->ctx, m, err));
        if (sink->progress) sink->progress(sink->ctx, done, w->n, tokens, (double)(now_ns() - t0) * 1e-9);
    }
    return SM_OK;
}
