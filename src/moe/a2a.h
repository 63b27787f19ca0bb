/* src/moe/a2a.h — how tokens reach their experts and come back (all-to-all). On one device
 * `local` only permutes; multi-GPU backends (all-gather, NCCL all-to-all, low-latency) exchange
 * tokens between ranks. Registered in a2a_registry.c, chosen by name. */
#ifndef SM_A2A_H
#define SM_A2A_H

#include <stddef.h>

#include "core/status.h"
#include "moe/moe_types.h"

typedef struct sm_a2a sm_a2a;

typedef struct sm_a2a_backend {
    const char *name;               /* "local", "none", "nccl", "nccl_ll" */
    const char *description;
    sm_status (*create)(const sm_moe_shape *shape, sm_a2a **out, sm_error *err);
    /* Group rows x[n_rows, hidden] by expert according to routing. The returned dispatch_out
     * points into the a2a's own buffers, valid until the next dispatch. */
    sm_status (*dispatch)(sm_a2a *a, int layer, const sm_routing *routing, const float *x,
                          sm_dispatch_out *out, sm_combine_in *combine, sm_error *err);
    /* out[r] += sum over r's slots (in slot order, for determinism) of y[assignment]. */
    sm_status (*combine)(sm_a2a *a, const sm_dispatch_out *dispatched, const sm_combine_in *y,
                         float *out, sm_error *err);
    void (*destroy)(sm_a2a *a);
} sm_a2a_backend;

const sm_a2a_backend *sm_a2a_find(const char *name);
void sm_a2a_names(char *buf, size_t cap);

#endif
