/* src/moe/a2a/a2a_local.c — single-device "all-to-all": tokens never leave the device, so
 * dispatch is a stable sort of (row, slot) assignments by expert and combine a gather-sum. */
#include <stdlib.h>
#include <string.h>

#include "moe/a2a.h"
#include "moe/a2a/a2a_backends.h"

struct sm_a2a {
    sm_moe_shape shape;
    int *offsets;      /* [E + 1] */
    int *cursor;       /* [E]: next free slot of each expert while placing */
    int *src_row;      /* [cap] */
    int *assign_of;    /* [cap]: (row*k + slot) -> assignment index */
    float *weight;     /* [cap] */
    float *x;          /* [cap, hidden] */
    float *y;          /* [cap, hidden] */
    long cap;
    int top_k;         /* of the last dispatch: self-speculation may route to fewer experts */
};

static void local_destroy(sm_a2a *a) {
    if (!a) return;
    free(a->offsets); free(a->cursor); free(a->src_row); free(a->assign_of); free(a->weight); free(a->x); free(a->y);
    free(a);
}

static sm_status local_create(const sm_moe_shape *shape, sm_a2a **out, sm_error *err) {
    sm_a2a *a;
    SM_TRY(sm_calloc((void **)&a, 1, sizeof *a, "local a2a", err));
    a->shape = *shape;
    if (sm_calloc((void **)&a->offsets, (size_t)shape->num_experts + 1, sizeof(int), "local a2a", err) ||
        sm_calloc((void **)&a->cursor, (size_t)shape->num_experts, sizeof(int), "local a2a", err)) {
        local_destroy(a);
        return err->code;
    }
    *out = a;
    return SM_OK;
}

static sm_status grow(sm_a2a *a, long n_assign, sm_error *err) {
    if (n_assign <= a->cap) return SM_OK;
    long H = a->shape.hidden;
    void *p[5] = {realloc(a->src_row, (size_t)n_assign * sizeof(int)), NULL, NULL, NULL, NULL};
    if (p[0]) a->src_row = p[0];
    if (p[0] && (p[1] = realloc(a->assign_of, (size_t)n_assign * sizeof(int)))) a->assign_of = p[1];
    if (p[1] && (p[2] = realloc(a->weight, (size_t)n_assign * sizeof(float)))) a->weight = p[2];
    if (p[2] && (p[3] = realloc(a->x, (size_t)(n_assign * H) * sizeof(float)))) a->x = p[3];
    if (p[3] && (p[4] = realloc(a->y, (size_t)(n_assign * H) * sizeof(float)))) a->y = p[4];
    if (!p[4]) return sm_fail(err, SM_ENOMEM, "local a2a: out of memory for %ld token-expert assignments", n_assign);
    a->cap = n_assign;
    return SM_OK;
}

static sm_status local_dispatch(sm_a2a *a, int layer, const sm_routing *routing, const float *x,
                                sm_dispatch_out *out, sm_combine_in *combine, sm_error *err) {
    int E = a->shape.num_experts, H = a->shape.hidden, k = routing->top_k;
    long n_assign = (long)routing->n_rows * k;
    SM_TRY(grow(a, n_assign, err));
    a->top_k = k;
    memset(a->offsets, 0, (size_t)(E + 1) * sizeof(int));
    for (long i = 0; i < n_assign; i++) {
        int e = routing->expert_ids[i];
        if (e < 0 || e >= E) return sm_fail(err, SM_EINTERNAL, "local a2a: expert id %d out of range [0, %d)", e, E);
        a->offsets[e + 1]++;
    }
    for (int e = 0; e < E; e++) a->offsets[e + 1] += a->offsets[e];
    /* Stable placement: within an expert, assignments keep row order. */
    int *cursor = a->cursor;
    memcpy(cursor, a->offsets, (size_t)E * sizeof(int));
    for (long i = 0; i < n_assign; i++) {
        int slot = cursor[routing->expert_ids[i]]++;
        a->assign_of[i] = slot;
        a->src_row[slot] = (int)(i / k);
        a->weight[slot] = routing->weights[i];
        memcpy(a->x + (long)slot * H, x + (i / k) * H, (size_t)H * sizeof(float));
    }
    *out = (sm_dispatch_out){
        .layer = layer, .hidden = H, .num_experts = E, .n_assign = (int)n_assign,
        .expert_offsets = a->offsets, .x = a->x, .weight = a->weight, .src_row = a->src_row,
    };
    combine->y = a->y;
    return SM_OK;
}

static sm_status local_combine(sm_a2a *a, const sm_dispatch_out *d, const sm_combine_in *y, float *out, sm_error *err) {
    int H = d->hidden, k = a->top_k;
    if (k <= 0 || d->n_assign % k) return sm_fail(err, SM_EINTERNAL, "local a2a: %d assignments for top-%d", d->n_assign, k);
    int rows = d->n_assign / k;
    for (int r = 0; r < rows; r++) {
        float *o = out + (long)r * H;
        for (int j = 0; j < k; j++) {
            const float *src = y->y + (long)a->assign_of[(long)r * k + j] * H;
            for (int h = 0; h < H; h++) o[h] += src[h];
        }
    }
    return SM_OK;
}

const sm_a2a_backend sm_a2a_local = {
    .name = "local",
    .description = "single device: permute tokens by expert, gather-sum back",
    .create = local_create,
    .dispatch = local_dispatch,
    .combine = local_combine,
    .destroy = local_destroy,
};
