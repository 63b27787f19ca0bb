/* kernels/fill_random.h — deterministic random BF16 tensors made on the device, so benchmarks
 * of full-size shapes need no host-side generation or checkpoint. */
#ifndef SM_FILL_RANDOM_H
#define SM_FILL_RANDOM_H

#include <stdint.h>

#include "kernel_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dst[i] = scale * u(seed, i) with u uniform in [-1, 1), a hash of (seed, i): the same seed gives
 * the same tensor on every device and launch shape. */
sm_status sm_cuda_fill_uniform_bf16(cudaStream_t stream, sm_bf16_bits *dst, size_t n, uint64_t seed, float scale,
                                    sm_error *err);

#ifdef __cplusplus
}
#endif

#endif
