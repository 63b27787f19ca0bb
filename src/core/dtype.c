#include "core/dtype.h"

#include <math.h>
#include <strings.h>

const char *sm_dtype_name(sm_dtype d) {
    static const char *const names[SM_DTYPE_COUNT] = {
        [SM_DTYPE_F32] = "f32",         [SM_DTYPE_BF16] = "bf16",   [SM_DTYPE_F16] = "f16",
        [SM_DTYPE_F8_E4M3] = "fp8_e4m3", [SM_DTYPE_NVFP4] = "nvfp4", [SM_DTYPE_MXFP4] = "mxfp4",
        [SM_DTYPE_I64] = "i64",         [SM_DTYPE_I32] = "i32",
    };
    return (unsigned)d < SM_DTYPE_COUNT ? names[d] : "unknown";
}

size_t sm_dtype_size(sm_dtype d) {
    switch (d) {
    case SM_DTYPE_F32: case SM_DTYPE_I32: return 4;
    case SM_DTYPE_BF16: case SM_DTYPE_F16: return 2;
    case SM_DTYPE_F8_E4M3: return 1;
    case SM_DTYPE_I64: return 8;
    default: return 0;
    }
}

int sm_dtype_parse(const char *name, sm_dtype *out) {
    static const struct { const char *name; sm_dtype d; } aliases[] = {
        {"f32", SM_DTYPE_F32}, {"fp32", SM_DTYPE_F32}, {"float32", SM_DTYPE_F32},
        {"bf16", SM_DTYPE_BF16}, {"bfloat16", SM_DTYPE_BF16},
        {"f16", SM_DTYPE_F16}, {"fp16", SM_DTYPE_F16}, {"float16", SM_DTYPE_F16},
        {"fp8", SM_DTYPE_F8_E4M3}, {"fp8_e4m3", SM_DTYPE_F8_E4M3}, {"f8_e4m3", SM_DTYPE_F8_E4M3},
        {"nvfp4", SM_DTYPE_NVFP4}, {"mxfp4", SM_DTYPE_MXFP4},
    };
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcasecmp(name, aliases[i].name) == 0) { *out = aliases[i].d; return 0; }
    return -1;
}

float sm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float f;
    if (exp == 0) {
        f = ldexpf((float)mant, -24); /* zero or subnormal */
        return sign ? -f : f;
    }
    uint32_t bits = exp == 31 ? sign | 0x7f800000u | (mant << 13)
                              : sign | ((exp + 112) << 23) | (mant << 13);
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t sm_f32_to_f16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    float a = fabsf(f);
    if (isnan(f)) return sign | 0x7e00u;
    if (a >= 65520.0f) return sign | 0x7c00u;
    if (a < 6.103515625e-05f) /* subnormal: quantise to multiples of 2^-24, ties to even */
        return sign | (uint16_t)lrintf(a * 16777216.0f);
    uint32_t abits = bits & 0x7fffffffu;
    abits += 0xfffu + ((abits >> 13) & 1u);
    return sign | (uint16_t)(((abits >> 23) - 112) << 10 | ((abits >> 13) & 0x3ffu));
}

void sm_convert_to_f32(float *dst, const void *src, sm_dtype d, size_t n) {
    if (d == SM_DTYPE_F32) { memcpy(dst, src, n * sizeof(float)); return; }
    /* src may be unaligned (tensor data inside a safetensors mapping): read through memcpy. */
    const unsigned char *bytes = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, bytes + 2 * i, sizeof h);
        dst[i] = d == SM_DTYPE_BF16 ? sm_bf16_to_f32(h) : sm_f16_to_f32(h);
    }
}
