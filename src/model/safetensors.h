/* src/model/safetensors.h — read-only, memory-mapped safetensors files (single or sharded).
 *
 * Every length and offset in the header is checked against the file size before use; a
 * failure names the file and the tensor. Tensor data stays in the mapping (zero copy); it may
 * be unaligned, so readers convert through sm_convert_to_f32 (memcpy-based). */
#ifndef SM_SAFETENSORS_H
#define SM_SAFETENSORS_H

#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"

#define SM_TENSOR_MAX_DIMS 4

/* A view of tensor data; does not own the memory. */
typedef struct sm_tensor {
    const char *name;     /* points into the owning safetensors set; NULL for an absent tensor */
    const char *file;     /* file the tensor lives in (for messages) */
    sm_dtype dtype;
    int ndim;
    int64_t shape[SM_TENSOR_MAX_DIMS];
    const void *data;
    uint64_t nbytes;
} sm_tensor;

typedef struct sm_safetensors sm_safetensors; /* a set of one or more mapped files */

/* Open DIR/model.safetensors, or the shards listed in DIR/model.safetensors.index.json. */
sm_status sm_safetensors_open_dir(const char *dir, sm_safetensors **out, sm_error *err);
/* Open one file. */
sm_status sm_safetensors_open_file(const char *path, sm_safetensors **out, sm_error *err);
/* Parse a header from memory (used by the fuzzer): buf is the whole file image. */
sm_status sm_safetensors_parse(const void *buf, uint64_t len, const char *path, sm_safetensors **out, sm_error *err);
void sm_safetensors_close(sm_safetensors *st);

int sm_safetensors_count(const sm_safetensors *st);
/* What was opened, for messages: the file, or "DIR/model.safetensors.index.json (N shards)". */
const char *sm_safetensors_source(const sm_safetensors *st);
int sm_safetensors_file_count(const sm_safetensors *st);
const sm_tensor *sm_safetensors_at(const sm_safetensors *st, int index);
/* NULL when absent. */
const sm_tensor *sm_safetensors_find(const sm_safetensors *st, const char *name);

/* Fail unless t has exactly the given shape; message names the tensor, file, expected and got. */
sm_status sm_tensor_expect_shape(const sm_tensor *t, int ndim, const int64_t *shape, sm_error *err);
/* Same, and the message ends with what the dimensions are, e.g. "(num_key_value_heads*head_dim,
 * hidden_size)" (dims may be NULL). */
sm_status sm_tensor_expect_shape_dims(const sm_tensor *t, int ndim, const int64_t *shape, const char *dims,
                                      sm_error *err);
/* Copy t (any float dtype) to f32; n must equal the element count. */
sm_status sm_tensor_to_f32(const sm_tensor *t, float *dst, int64_t n, sm_error *err);
int64_t sm_tensor_numel(const sm_tensor *t);

#endif
