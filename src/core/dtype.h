/* src/core/dtype.h — element types and conversions between them. */
#ifndef SM_DTYPE_H
#define SM_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum sm_dtype {
    SM_DTYPE_F32 = 0,
    SM_DTYPE_BF16,
    SM_DTYPE_F16,
    SM_DTYPE_F8_E4M3,
    SM_DTYPE_NVFP4,
    SM_DTYPE_MXFP4,
    SM_DTYPE_I64,
    SM_DTYPE_I32,
    SM_DTYPE_COUNT
} sm_dtype;

#define SM_DTYPE_BIT(d) (1u << (d))

const char *sm_dtype_name(sm_dtype d);
/* Bytes per element for whole-byte types; 0 for sub-byte/blocked types (fp4). */
size_t sm_dtype_size(sm_dtype d);
/* Parse "bf16", "BF16", "float32", ... Returns 0 on success, -1 if unknown. */
int sm_dtype_parse(const char *name, sm_dtype *out);

static inline float sm_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Round to nearest even, as PyTorch does; NaN stays NaN. */
static inline uint16_t sm_f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

float sm_f16_to_f32(uint16_t h);
uint16_t sm_f32_to_f16(float f);

/* Convert n elements of src (dtype d) to f32. d must be F32, BF16 or F16. */
void sm_convert_to_f32(float *dst, const void *src, sm_dtype d, size_t n);

#endif
