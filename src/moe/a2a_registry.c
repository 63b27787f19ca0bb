/* src/moe/a2a_registry.c — adding an all-to-all backend is one file and one line here. */
#include <stdio.h>
#include <string.h>

#include "moe/a2a.h"
#include "moe/a2a/a2a_backends.h"

static const sm_a2a_backend *const backends[] = {
    &sm_a2a_local,
};

const sm_a2a_backend *sm_a2a_find(const char *name) {
    if (!name || !strcmp(name, "auto")) return backends[0];
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
        if (!strcmp(backends[i]->name, name)) return backends[i];
    return NULL;
}

void sm_a2a_names(char *buf, size_t cap) {
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof backends / sizeof backends[0] && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", i ? ", " : "", backends[i]->name);
}
