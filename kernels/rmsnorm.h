/* kernels/rmsnorm.h — RMSNorm, optionally fused with the residual add that precedes it.
 * CPU twin: residual += x, then sm_cpu_rmsnorm (src/model/cpu_ops.h) on the sum. */
#ifndef SM_RMSNORM_H
#define SM_RMSNORM_H

#include "kernel_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Per row r (BF16 storage, fp32 math), in place:
 *   residual != NULL:  s = x[r] + residual[r];  residual[r] = s;  x[r] = s / rms(s) * weight
 *   residual == NULL:  x[r] = x[r] / rms(x[r]) * weight
 * with rms(v) = sqrt(mean(v²) + eps); the norm uses the fp32 sum, before it is rounded into
 * residual (as vLLM's fused_add_rms_norm does). Any dim. */
sm_status sm_cuda_rmsnorm_residual(cudaStream_t stream, sm_bf16_bits *x, sm_bf16_bits *residual,
                                   const sm_bf16_bits *weight, int rows, int dim, float eps, sm_error *err);

#ifdef __cplusplus
}
#endif

#endif
