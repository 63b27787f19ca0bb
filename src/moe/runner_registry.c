/* src/moe/runner_registry.c — adding a runner is one file and one line here. */
#include <stdio.h>
#include <string.h>

#include "moe/runner.h"
#include "moe/runners/runners.h"

/* ref stays first: "auto" on the CPU model picks it. The GPU runners also take host pointers
 * through forward() (on_device = false) but are chosen only by name; their device-pointer path
 * is cuda/moe_device.h. */
static const sm_runner_backend *const runners[] = {
    &sm_runner_ref,
#ifdef SPECMOE_HAVE_CUDA
    &sm_runner_cuda,
    &sm_runner_cublaslt,
#endif
};

const sm_runner_backend *sm_runner_find(const char *name, bool on_device) {
    size_t n = sizeof runners / sizeof runners[0];
    if (!name || !strcmp(name, "auto")) {
        /* auto: the first registered backend that runs where the model lives. */
        for (size_t i = 0; i < n; i++)
            if (runners[i]->on_device == on_device) return runners[i];
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (!strcmp(runners[i]->name, name)) return runners[i];
    return NULL;
}

void sm_runner_names(char *buf, size_t cap) {
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof runners / sizeof runners[0] && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", runners[i]->name);
}
