/* src/cuda/cuda_check.h — turning CUDA runtime and cuBLASLt return codes into sm_status with a
 * message that says what was being done: every call in src/cuda/ goes through these. */
#ifndef SM_CUDA_CHECK_H
#define SM_CUDA_CHECK_H

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include "core/status.h"

/* SM_OK, or SM_ECUDA with "<what>: <CUDA error text> (<name>)". what may use printf formats. */
sm_status sm_cuda_check(cudaError_t e, sm_error *err, const char *what, ...) __attribute__((format(printf, 3, 4)));
sm_status sm_cublas_check(cublasStatus_t s, sm_error *err, const char *what, ...) __attribute__((format(printf, 3, 4)));

/* Is a CUDA device usable? SM_OK, or SM_ECUDA saying why not (no driver, no device). */
sm_status sm_cuda_device_ready(sm_error *err);

#endif
