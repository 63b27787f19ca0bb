/* src/moe/moe_types.h — the data that flows between the MoE stages
 *   router top-k → a2a.dispatch → runner → a2a.combine
 * (the same split as SGLang's TopK → Dispatcher.dispatch → MoeRunner → Dispatcher.combine).
 * Pointers are host memory for CPU backends and device memory for GPU backends. */
#ifndef SM_MOE_TYPES_H
#define SM_MOE_TYPES_H

#include <stdbool.h>

#include "core/dtype.h"

typedef struct sm_moe_shape {
    int num_layers;      /* layers of the model (only MoE layers get experts loaded) */
    int num_experts;
    int hidden;
    int ffn;             /* moe_intermediate_size */
    int top_k;
    int max_rows;        /* most rows one forward may bring (sizes workspaces) */
} sm_moe_shape;

/* Router output for n_rows tokens: for row r, slot j < top_k:
 * expert_ids[r*top_k + j], weights[r*top_k + j] (already renormalised when the config says so). */
typedef struct sm_routing {
    int n_rows;
    int top_k;
    const int *expert_ids;
    const float *weights;
} sm_routing;

/* Tokens grouped by expert ("permuted"), as the runner consumes them. Assignment a (one
 * (row, slot) pair) is at position a in x/weight/src_row; expert e owns assignments
 * expert_offsets[e] .. expert_offsets[e+1]-1. */
typedef struct sm_dispatch_out {
    int layer;
    int hidden;
    int num_experts;
    int n_assign;                /* n_rows * top_k on a single device */
    const int *expert_offsets;   /* [num_experts + 1] */
    const float *x;              /* [n_assign, hidden] */
    const float *weight;         /* [n_assign] routing weight, applied by the runner */
    const int *src_row;          /* [n_assign] row the assignment came from */
} sm_dispatch_out;

/* Where the runner writes: y[a] = weight[a] * expert_e(x[a]) for every assignment a. */
typedef struct sm_combine_in {
    float *y;                    /* [n_assign, hidden] */
} sm_combine_in;

/* One expert's SwiGLU weights in a layout-neutral form (the runner converts at load):
 * gate, up: [ffn, hidden] row-major; down: [hidden, ffn]; src_dtype is what data holds. */
typedef struct sm_expert_weights {
    sm_dtype dtype;
    const void *gate, *up, *down;
} sm_expert_weights;

#endif
