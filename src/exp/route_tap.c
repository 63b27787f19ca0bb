#include "exp/route_tap.h"

#include <stdlib.h>
#include <string.h>

#include "sched/sched.h"

typedef struct layer_event {
    bool draft;
    const char *pass;  /* target: "prefill", "decode" or "verify", from its rows */
    int layer, n_tokens, distinct, max_per_expert;
    double mean_per_expert;
} layer_event;

typedef struct route_row {
    int request_index, position, layer;
    int64_t seq_id; /* to find the sequence's context length after the step */
    long offset; /* into ids / weights, top_k entries */
    int top_k;
} route_row;

struct sm_route_tap {
    sm_spec_engine *engine;
    sm_model *target, *draft;
    bool record_routes;
    int target_experts, draft_experts;
    int *counts;       /* [max experts] scratch */
    layer_event *events;
    int n_events, cap_events;
    route_row *routes;
    int n_routes, cap_routes;
    int *ids;
    float *weights;
    long n_ids, cap_ids;
    bool failed;       /* an allocation failed inside a callback: reported at flush */
};

static bool grow(void **buf, int *cap, int need, size_t size) {
    if (need <= *cap) return true;
    int ncap = *cap ? *cap : 64;
    while (ncap < need) ncap *= 2;
    void *p = realloc(*buf, (size_t)ncap * size);
    if (!p) return false;
    *buf = p;
    *cap = ncap;
    return true;
}

static void add_event(sm_route_tap *t, bool draft, const char *pass, int n_experts, int layer, int n_rows, int top_k,
                      const int *ids) {
    if (n_experts <= 0 || n_rows <= 0) return;
    memset(t->counts, 0, (size_t)n_experts * sizeof(int));
    for (long i = 0; i < (long)n_rows * top_k; i++)
        if (ids[i] >= 0 && ids[i] < n_experts) t->counts[ids[i]]++;
    int distinct = 0, max = 0;
    for (int x = 0; x < n_experts; x++) {
        if (t->counts[x]) distinct++;
        if (t->counts[x] > max) max = t->counts[x];
    }
    if (!grow((void **)&t->events, &t->cap_events, t->n_events + 1, sizeof *t->events)) {
        t->failed = true;
        return;
    }
    t->events[t->n_events++] = (layer_event){
        .draft = draft, .pass = pass, .layer = layer, .n_tokens = n_rows, .distinct = distinct, .max_per_expert = max,
        .mean_per_expert = (double)n_rows * top_k / n_experts};
}

static void add_routes(sm_route_tap *t, int layer, int n_rows, int top_k, const int *ids, const float *w,
                       const sm_spec_row_info *rows) {
    for (int row = 0; row < n_rows; row++) {
        const sm_request_state *r = rows[row].user;
        if (!r) continue;
        int nr = t->n_routes + 1;
        long need = t->n_ids + top_k;
        int cap_ids = (int)t->cap_ids, cap_w = (int)t->cap_ids;
        if (need > 0x3fffffff || !grow((void **)&t->routes, &t->cap_routes, nr, sizeof *t->routes) ||
            !grow((void **)&t->ids, &cap_ids, (int)need, sizeof(int)) ||
            !grow((void **)&t->weights, &cap_w, (int)need, sizeof(float))) {
            t->failed = true;
            return;
        }
        t->cap_ids = cap_ids < cap_w ? cap_ids : cap_w;
        memcpy(t->ids + t->n_ids, ids + (long)row * top_k, (size_t)top_k * sizeof(int));
        memcpy(t->weights + t->n_ids, w + (long)row * top_k, (size_t)top_k * sizeof(float));
        t->routes[t->n_routes++] = (route_row){.request_index = r->index, .position = rows[row].pos, .layer = layer,
                                               .seq_id = rows[row].seq_id, .offset = t->n_ids, .top_k = top_k};
        t->n_ids = need;
    }
}

/* A forward with draft rows verifies; one with only prompt rows prefills; otherwise it decodes. */
static const char *target_pass(int n_rows, const sm_spec_row_info *rows) {
    bool any_decode = false;
    for (int i = 0; i < n_rows; i++) {
        if (rows[i].kind == SM_SPEC_ROW_VERIFY) return "verify";
        if (rows[i].kind == SM_SPEC_ROW_DECODE) any_decode = true;
    }
    return any_decode ? "decode" : "prefill";
}

static void on_target_route(void *ctx, int layer, int n_rows, int top_k, const int *ids, const float *w,
                            const sm_spec_row_info *rows) {
    sm_route_tap *t = ctx;
    add_event(t, false, target_pass(n_rows, rows), t->target_experts, layer, n_rows, top_k, ids);
    if (t->record_routes) add_routes(t, layer, n_rows, top_k, ids, w, rows);
}

static void on_draft_route(void *ctx, int layer, int n_rows, int top_k, const int *ids, const float *w) {
    sm_route_tap *t = ctx;
    add_event(t, true, "draft", t->draft_experts, layer, n_rows, top_k, ids);
}

sm_status sm_route_tap_create(sm_spec_engine *engine, sm_model *target, sm_model *draft, bool record_routes,
                              sm_route_tap **out, sm_error *err) {
    sm_route_tap *t;
    SM_TRY(sm_calloc((void **)&t, 1, sizeof *t, "route tap", err));
    t->engine = engine;
    t->target = target;
    t->draft = draft;
    t->record_routes = record_routes;
    t->target_experts = sm_model_cfg(target)->num_experts;
    t->draft_experts = draft ? sm_model_cfg(draft)->num_experts : 0;
    int n = t->target_experts > t->draft_experts ? t->target_experts : t->draft_experts;
    sm_status s = sm_calloc((void **)&t->counts, (size_t)(n > 0 ? n : 1), sizeof(int), "route tap", err);
    if (s != SM_OK) {
        free(t);
        return s;
    }
    if (t->target_experts > 0)
        sm_spec_set_route_observer(engine, &(sm_spec_route_observer){.on_route = on_target_route, .ctx = t});
    if (draft && t->draft_experts > 0)
        sm_model_set_route_observer(draft, &(sm_route_observer){.on_route = on_draft_route, .ctx = t});
    *out = t;
    return SM_OK;
}

void sm_route_tap_free(sm_route_tap *t) {
    if (!t) return;
    if (t->target_experts > 0) sm_spec_set_route_observer(t->engine, NULL);
    if (t->draft && t->draft_experts > 0) sm_model_set_route_observer(t->draft, NULL);
    free(t->counts);
    free(t->events);
    free(t->routes);
    free(t->ids);
    free(t->weights);
    free(t);
}

/* The sequence's context length after the step, or -1 when it was not in the step. */
static int context_after(const sm_spec_step_metrics *m, int64_t seq_id) {
    for (int i = 0; i < m->n_seqs; i++)
        if (m->seqs[i].seq_id == seq_id) return m->seqs[i].context_len;
    return -1;
}

sm_status sm_route_tap_flush(sm_route_tap *t, sm_recorder *rec, const sm_spec_step_metrics *m, sm_error *err) {
    if (t->failed) return sm_fail(err, SM_ENOMEM, "route tap: out of memory collecting routing events");
    sm_status s = SM_OK;
    for (int i = 0; s == SM_OK && i < t->n_events; i++) {
        const layer_event *ev = &t->events[i];
        sm_recorded_moe row = {
            .step = m->step_index,
            .model = ev->draft ? "draft" : "target",
            .pass = ev->pass,
            .layer = ev->layer,
            .n_tokens = ev->n_tokens,
            .n_experts = ev->draft ? t->draft_experts : t->target_experts,
            .distinct_experts = ev->distinct,
            .max_tokens_per_expert = ev->max_per_expert,
            .mean_tokens_per_expert = ev->mean_per_expert,
        };
        s = sm_recorder_moe(rec, &row, err);
    }
    for (int i = 0; s == SM_OK && i < t->n_routes; i++) {
        const route_row *r = &t->routes[i];
        /* Keep committed tokens only: a rejected draft's routing never happened for the text. */
        if (r->position >= context_after(m, r->seq_id) - 1) continue;
        s = sm_recorder_route(rec, r->request_index, "target", r->position, r->layer, r->top_k, t->ids + r->offset,
                              t->weights + r->offset, err);
    }
    t->n_events = t->n_routes = 0;
    t->n_ids = 0;
    return s;
}
