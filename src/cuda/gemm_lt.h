/* src/cuda/gemm_lt.h — dense BF16 GEMMs of the GPU forward through cuBLASLt: y = x · wᵀ (+ y).
 * x and w are BF16 row-major ([rows, k], [n, k], as checkpoints store projections); y is fp32
 * (the residual stream, q/k/v, logits) or BF16. beta = 1 on an fp32 y fuses the residual add.
 * Plans (layouts + the heuristic's algorithm) are cached per (rows, n, k, y type, beta, alignment),
 * so after the first step of a shape no heuristic runs; the cached calls are graph-capturable. */
#ifndef SM_GEMM_LT_H
#define SM_GEMM_LT_H

#include <stdbool.h>
#include <stddef.h>

#include <cuda_runtime_api.h>

#include "core/status.h"
#include "kernel_api.h"

typedef struct sm_gemm_lt sm_gemm_lt;

/* Device bytes one sm_gemm_lt allocates (its cuBLASLt workspace), for memory plans. */
size_t sm_gemm_lt_device_bytes(void);

sm_status sm_gemm_lt_create(sm_gemm_lt **out, sm_error *err);
void sm_gemm_lt_destroy(sm_gemm_lt *g);

/* y[rows, n] = x[rows, k] · w[n, k]ᵀ + beta · y;  y is float* when y_f32, else sm_bf16_bits*. */
sm_status sm_gemm_lt_xwt(sm_gemm_lt *g, cudaStream_t stream, const sm_bf16_bits *x, const sm_bf16_bits *w, void *y,
                         bool y_f32, float beta, int rows, int n, int k, sm_error *err);

#endif
