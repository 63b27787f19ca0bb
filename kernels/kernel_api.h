/* kernels/kernel_api.h — what every CUDA kernel header shares.
 *
 * Kernel launchers have C signatures so host code in C11 calls them directly. Tensors are
 * device pointers; BF16 values travel as their raw 16 bits (sm_bf16_bits), so no CUDA C++ type
 * leaks into a C header — __nv_bfloat16 appears only inside the .cu files. Every launcher:
 *   - takes an explicit stream and never synchronises the device (graph-capturable);
 *   - checks its arguments and the launch, returning an sm_status whose message names the
 *     kernel and the CUDA error;
 *   - accumulates in fp32 whatever the storage type. */
#ifndef SM_KERNEL_API_H
#define SM_KERNEL_API_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "core/status.h"

/* One BF16 value as stored (the top 16 bits of the fp32 with the same value). */
typedef uint16_t sm_bf16_bits;

#ifdef __cplusplus
}
#endif

#endif
