/* src/cuda/cuda_check.c — see cuda_check.h. */
#include "cuda/cuda_check.h"

#include <stdarg.h>
#include <stdio.h>

static sm_status fail_v(sm_error *err, sm_status code, const char *why, const char *what, va_list ap) {
    char where[512];
    vsnprintf(where, sizeof where, what, ap);
    return sm_fail(err, code, "%s: %s", where, why);
}

sm_status sm_cuda_check(cudaError_t e, sm_error *err, const char *what, ...) {
    if (e == cudaSuccess) return SM_OK;
    char why[256];
    snprintf(why, sizeof why, "%s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    va_list ap;
    va_start(ap, what);
    sm_status s = fail_v(err, e == cudaErrorMemoryAllocation ? SM_ENOMEM : SM_ECUDA, why, what, ap);
    va_end(ap);
    return s;
}

sm_status sm_cublas_check(cublasStatus_t st, sm_error *err, const char *what, ...) {
    if (st == CUBLAS_STATUS_SUCCESS) return SM_OK;
    char why[256];
    snprintf(why, sizeof why, "cuBLASLt status %d (%s)", (int)st, cublasLtGetStatusName(st));
    va_list ap;
    va_start(ap, what);
    sm_status s = fail_v(err, st == CUBLAS_STATUS_ALLOC_FAILED ? SM_ENOMEM : SM_ECUDA, why, what, ap);
    va_end(ap);
    return s;
}

sm_status sm_cuda_device_ready(sm_error *err) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) return sm_cuda_check(e, err, "no usable CUDA device (cudaGetDeviceCount)");
    if (n == 0) return sm_fail(err, SM_ECUDA, "no CUDA device present");
    return SM_OK;
}
