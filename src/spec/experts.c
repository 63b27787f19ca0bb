/* src/spec/experts.c — counting the distinct experts the verify pass activates.
 *
 * Verifying k+1 tokens routes each of them to its own top-k experts, so a MoE layer reads more
 * expert weights than a single-token decode step would: the reason MoE models gain less from
 * speculation. The target's route observer reports every layer's routing; from it we count,
 * per layer, the distinct experts of the decode rows and of one row per sequence (what a plain
 * decode step of the same batch would route). */
#include <string.h>

#include "spec/spec_internal.h"

/* Distinct-set counting with a generation stamp: no clearing of the expert array per set. */
static void next_stamp(sm_spec_engine *e) {
    if (++e->stamp == 0) {
        memset(e->expert_stamp, 0, (size_t)e->num_experts * sizeof(unsigned));
        e->stamp = 1;
    }
}

static int count_rows(sm_spec_engine *e, int top_k, const int *ids, int begin, int end) {
    int n = 0;
    for (int r = begin; r < end; r++)
        for (int j = 0; j < top_k; j++) {
            int x = ids[(long)r * top_k + j];
            if (x < 0 || x >= e->num_experts || e->expert_stamp[x] == e->stamp) continue;
            e->expert_stamp[x] = e->stamp;
            n++;
        }
    return n;
}

void sm_spec_experts_reset(sm_spec_engine *e, int n_step_seqs) {
    e->n_step_seqs = n_step_seqs;
    if (e->num_experts <= 0) return;
    size_t L = (size_t)e->num_layers;
    memset(e->touched_verify, 0, L * sizeof(int));
    memset(e->touched_single, 0, L * sizeof(int));
    memset(e->touched_verify_seq, 0, (size_t)n_step_seqs * L * sizeof(int));
    memset(e->touched_single_seq, 0, (size_t)n_step_seqs * L * sizeof(int));
}

void sm_spec_on_route(void *ctx, int layer, int n_rows, int top_k, const int *expert_ids, const float *weights) {
    sm_spec_engine *e = ctx;
    if (!e->counting || layer < 0 || layer >= e->num_layers) return;
    if (e->route_observer.on_route)
        e->route_observer.on_route(e->route_observer.ctx, layer, n_rows, top_k, expert_ids, weights, e->row_info);
    int L = e->num_layers;
    /* per sequence */
    for (int i = 0; i < e->n_step_seqs; i++) {
        const step_span *sp = &e->spans[i];
        if (sp->first_row < 0 || sp->row_end > n_rows) continue;
        next_stamp(e);
        e->touched_verify_seq[i * L + layer] = count_rows(e, top_k, expert_ids, sp->row_begin, sp->row_end);
        next_stamp(e);
        e->touched_single_seq[i * L + layer] = count_rows(e, top_k, expert_ids, sp->first_row, sp->first_row + 1);
    }
    /* whole batch: union over the same rows */
    next_stamp(e);
    int v = 0;
    for (int i = 0; i < e->n_step_seqs; i++) {
        const step_span *sp = &e->spans[i];
        if (sp->first_row >= 0 && sp->row_end <= n_rows) v += count_rows(e, top_k, expert_ids, sp->row_begin, sp->row_end);
    }
    next_stamp(e);
    int s = 0;
    for (int i = 0; i < e->n_step_seqs; i++) {
        const step_span *sp = &e->spans[i];
        if (sp->first_row >= 0 && sp->row_end <= n_rows) s += count_rows(e, top_k, expert_ids, sp->first_row, sp->first_row + 1);
    }
    e->touched_verify[layer] = v;
    e->touched_single[layer] = s;
}

void sm_spec_set_route_observer(sm_spec_engine *e, const sm_spec_route_observer *obs) {
    e->route_observer = obs ? *obs : (sm_spec_route_observer){0};
}
