/* tests/gpu/gpu_test.h — helpers shared by the GPU tests: device presence, deterministic random
 * data, BF16 host<->device copies, NaN-poisoned outputs.
 *
 * Without a usable GPU a test prints why and exits 77, which ctest reports as "Skipped" (the
 * build must still link everywhere). With SPECMOE_REQUIRE_GPU=1 (set by
 * bench/run_on_device.sh) a missing GPU is a failure instead. */
#ifndef SM_GPU_TEST_H
#define SM_GPU_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

#include "core/dtype.h"
#include "cuda/cuda_check.h"
#include "test.h"

static inline void gpu_test_require_device(const char *test) {
    sm_error err = {0};
    if (sm_cuda_device_ready(&err) == SM_OK) {
        struct cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, 0) == cudaSuccess) printf("%s: on %s (sm_%d%d)\n", test, p.name, p.major, p.minor);
        return;
    }
    const char *req = getenv("SPECMOE_REQUIRE_GPU");
    bool required = req && req[0] == '1';
    fprintf(stderr, "%s: %s: %s\n", test, required ? "FAIL" : "SKIPPED (no GPU on this machine)", err.msg);
    exit(required ? 1 : 77);
}

/* xorshift64*: fixed seeds, so a failure reproduces. */
static inline uint64_t gpu_test_next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}
static inline float gpu_test_uniform(uint64_t *s) { /* [-1, 1) */
    return (float)(gpu_test_next(s) >> 40) * (1.0f / 8388608.0f) - 1.0f;
}

/* n random values already rounded to BF16 (so host and device see the same numbers). */
static inline float *gpu_test_random_bf16(size_t n, float scale, uint64_t *seed) {
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = sm_bf16_to_f32(sm_f32_to_bf16(scale * gpu_test_uniform(seed)));
    return v;
}

static inline void *gpu_test_malloc(size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        fprintf(stderr, "cudaMalloc(%zu): %s\n", bytes, cudaGetErrorString(e));
        exit(1);
    }
    return p;
}

static inline void gpu_test_cuda(cudaError_t e, const char *what) {
    if (e != cudaSuccess) {
        fprintf(stderr, "FAIL %s: %s\n", what, cudaGetErrorString(e));
        exit(1);
    }
}

/* floats -> device BF16 rows [rows, ld] from host rows [rows, cols] (padding zero) */
static inline void *gpu_test_upload_bf16(const float *h, int rows, int cols, int ld) {
    uint16_t *tmp = calloc((size_t)rows * ld, sizeof *tmp);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) tmp[(size_t)r * ld + c] = sm_f32_to_bf16(h[(size_t)r * cols + c]);
    void *d = gpu_test_malloc((size_t)rows * ld * 2);
    gpu_test_cuda(cudaMemcpy(d, tmp, (size_t)rows * ld * 2, cudaMemcpyHostToDevice), "upload bf16");
    free(tmp);
    return d;
}

static inline void gpu_test_download_bf16(float *h, const void *d, int rows, int cols, int ld) {
    uint16_t *tmp = malloc((size_t)rows * ld * 2 + 2);
    gpu_test_cuda(cudaMemcpy(tmp, d, (size_t)rows * ld * 2, cudaMemcpyDeviceToHost), "download bf16");
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) h[(size_t)r * cols + c] = sm_bf16_to_f32(tmp[(size_t)r * ld + c]);
    free(tmp);
}

static inline void *gpu_test_upload(const void *h, size_t bytes) {
    void *d = gpu_test_malloc(bytes);
    gpu_test_cuda(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice), "upload");
    return d;
}

/* All bits set: a BF16/fp32 NaN, so an output the kernel forgot to write cannot pass. */
static inline void gpu_test_poison(void *d, size_t bytes) {
    gpu_test_cuda(cudaMemset(d, 0xff, bytes), "poison");
}

static inline bool gpu_test_all_finite(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return false;
    return true;
}

#endif
