/* kernels/gemv.h — y = x · wᵀ (+ beta · y) for a handful of rows: the dense projections of a
 * decode step (q|k|v, o, router, lm_head at batch 1..8), where a GEMM library's tiles leave most
 * of the weight-streaming bandwidth unused and the step is bound by reading the weights once.
 *
 * Same contract as sm_gemm_lt_xwt (src/cuda/gemm_lt.h): x [rows, k] and w [n, k] BF16 row-major,
 * y [rows, n] fp32 (beta 0 or 1: 1 adds into y, the residual stream) or BF16 (beta must be 0).
 * One row: one warp per output column streams that weight row with 16-byte loads past L1; two
 * to eight: a CTA per 16 columns multiplies them with the rows on tensor cores (mma.m16n8k16),
 * its warps splitting k, reading x from global memory (L2). For one row and in the norm-fused
 * GEMV the rows of x sit in shared memory (rows * k * 2 <= 48 KiB). Needs rows <= SM_GEMV_MAX_ROWS, k % 8 == 0, x and w 16-byte aligned.
 * CPU twin: a double loop (tests/gpu/test_gemv.c). */
#ifndef SM_GEMV_H
#define SM_GEMV_H

#include <stdbool.h>

#include "kernel_api.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SM_GEMV_MAX_ROWS 8

/* Whether sm_cuda_gemv_xwt takes this shape (callers fall back to cuBLASLt otherwise). */
bool sm_cuda_gemv_fits(int rows, int n, int k, const void *x, const void *w);

sm_status sm_cuda_gemv_xwt(cudaStream_t stream, const sm_bf16_bits *x, const sm_bf16_bits *w, void *y, bool y_f32,
                           float beta, int rows, int n, int k, sm_error *err);

/* The same GEMV with the RMSNorm before it fused in: x [rows, k] is the fp32 residual stream and
 * the GEMV multiplies h = BF16(x / rms(x) * norm_weight), bit for bit what sm_cuda_rmsnorm_f32
 * (model_ops.h, src NULL, BF16 out) writes — so the result equals that launch followed by
 * sm_cuda_gemv_xwt exactly. h_out (may be NULL) receives h for the norm's other readers (the
 * MoE gather after the router). Saves a launch at decode sizes. */
bool sm_cuda_gemv_norm_fits(int rows, int n, int k, const void *w);
sm_status sm_cuda_gemv_norm_xwt(cudaStream_t stream, const float *x, const sm_bf16_bits *norm_weight, float eps,
                                sm_bf16_bits *h_out, const sm_bf16_bits *w, void *y, bool y_f32, float beta, int rows,
                                int n, int k, sm_error *err);

#ifdef __cplusplus
}
#endif

#endif
