/* Fuzz target: a safetensors file image, parsed and every tensor read (all offsets and sizes in
 * the header must be checked before data is touched). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"

int fuzz_one(const uint8_t *data, size_t size);

int fuzz_one(const uint8_t *data, size_t size) {
    sm_safetensors *st = NULL;
    sm_error err;
    if (sm_safetensors_parse(data, size, "fuzz.safetensors", &st, &err) != SM_OK) {
        if (!memchr(err.msg, '\0', sizeof err.msg)) abort();
        return 0;
    }
    for (int i = 0; i < sm_safetensors_count(st); i++) {
        const sm_tensor *t = sm_safetensors_at(st, i);
        if (!t || !t->name || sm_safetensors_find(st, t->name) != t) abort();
        int64_t n = sm_tensor_numel(t);
        if (n < 0 || n > (1 << 20)) continue;
        float *dst = malloc((size_t)(n ? n : 1) * sizeof *dst);
        if (dst) sm_tensor_to_f32(t, dst, n, &err); /* may refuse a dtype; must not read out of bounds */
        free(dst);
    }
    sm_safetensors_close(st);
    return 0;
}
