/* src/moe/runner.h — how expert math is done. One implementation per file in src/moe/runners/
 * (GPU ones in src/cuda/), registered in runner_registry.c. Adding a backend is one file and one
 * line in the registry; the model code never names a backend. */
#ifndef SM_RUNNER_H
#define SM_RUNNER_H

#include <stddef.h>

#include "core/status.h"
#include "core/threadpool.h"
#include "moe/moe_types.h"

typedef struct sm_runner sm_runner; /* opaque: state lives in the implementation */

typedef struct sm_runner_opts {
    sm_dtype weight_dtype;          /* dtype the runner stores weights in */
    sm_threadpool *threads;         /* CPU runners: the model's pool (not owned) */
} sm_runner_opts;

typedef struct sm_runner_backend {
    const char *name;               /* "ref", "cublaslt", "cuda", ... */
    const char *description;
    unsigned weight_dtypes;         /* bit set of SM_DTYPE_BIT(sm_dtype) it accepts */
    bool on_device;                 /* consumes device pointers */
    sm_status (*create)(const sm_moe_shape *shape, const sm_runner_opts *opts, sm_runner **out, sm_error *err);
    sm_status (*load_expert)(sm_runner *r, int layer, int expert, const sm_expert_weights *w, sm_error *err);
    sm_status (*forward)(sm_runner *r, const sm_dispatch_out *in, sm_combine_in *out, sm_error *err);
    void (*destroy)(sm_runner *r);
} sm_runner_backend;

/* NULL if unknown; "auto" picks the best available for on_device. */
const sm_runner_backend *sm_runner_find(const char *name, bool on_device);
/* "ref, cublaslt, cuda" for messages. */
void sm_runner_names(char *buf, size_t cap);

#endif
