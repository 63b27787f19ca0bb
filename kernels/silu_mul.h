/* kernels/silu_mul.h — SwiGLU activation between the gate|up GEMM and the down GEMM.
 * CPU twin: sm_cpu_silu_mul (src/model/cpu_ops.h) on the two halves, times row_scale. */
#ifndef SM_SILU_MUL_H
#define SM_SILU_MUL_H

#include "kernel_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[r, j] = silu(gate_up[r, j]) * gate_up[r, ffn + j] * (row_scale ? row_scale[r] : 1)
 * gate_up: [rows, 2*ffn] BF16 (gate half then up half), out: [rows, ffn] BF16. Folding a
 * per-row scale (the routing weight) here is exact up to rounding because down is linear. */
sm_status sm_cuda_silu_mul(cudaStream_t stream, const sm_bf16_bits *gate_up, const float *row_scale,
                           sm_bf16_bits *out, int rows, int ffn, sm_error *err);

#ifdef __cplusplus
}
#endif

#endif
