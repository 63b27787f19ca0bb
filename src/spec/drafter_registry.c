/* src/spec/drafter_registry.c — adding a drafter is one file and one line here. */
#include <stdio.h>
#include <string.h>

#include "spec/drafter_registry.h"

static const sm_drafter_backend *const drafters[] = {&sm_drafter_model, &sm_drafter_ngram, &sm_drafter_self};
#define N_DRAFTERS (sizeof drafters / sizeof drafters[0])

const sm_drafter_backend *sm_drafter_find(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < N_DRAFTERS; i++)
        if (!strcmp(drafters[i]->name, name)) return drafters[i];
    return NULL;
}

void sm_drafter_names(char *buf, size_t cap) {
    if (!cap) return;
    buf[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < N_DRAFTERS && used < cap; i++) {
        int w = snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", drafters[i]->name);
        if (w < 0) break;
        used += (size_t)w;
    }
}
