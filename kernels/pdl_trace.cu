/* kernels/pdl_trace.cu — see pdl_trace.h. The device side is in kernel_common.cuh: each .cu file
 * has its own copy of the buffer pointer (no separable compilation), and registers the host
 * function that sets it from a static constructor; here is the registry and the host API. */
#include "pdl_trace.h"

#include <stdio.h>
#include <stdlib.h>

#include "kernel_common.cuh"

#ifdef SPECMOE_PDL_TRACE

namespace {
constexpr int MAX_UNITS = 64;                 /* .cu files that include kernel_common.cuh */
constexpr unsigned long long CAPACITY = 1u << 21; /* records (80 MB); the dump says when a step had more */
/* Plain arrays, zero before any constructor runs, so registration order does not matter. */
cudaError_t (*unit_setters[MAX_UNITS])(void *);
int n_units;
void *buffer; /* [0] count, [1] capacity, then the records; kept until the process ends */
} // namespace

void sm_pdl_trace_register(cudaError_t (*set)(void *)) {
    if (n_units < MAX_UNITS) unit_setters[n_units++] = set;
}

bool sm_cuda_pdl_trace_built(void) { return true; }

sm_status sm_cuda_pdl_trace_start(sm_error *err) {
    const size_t bytes = 2 * sizeof(unsigned long long) + CAPACITY * sizeof(sm_pdl_trace_rec);
    cudaError_t e = cudaSuccess;
    if (!buffer) { /* kept only once every .cu file points at it, so a failure is retried whole */
        void *b = NULL;
        e = cudaMalloc(&b, bytes);
        for (int i = 0; i < n_units && e == cudaSuccess; i++) e = unit_setters[i](b);
        if (e == cudaSuccess) buffer = b;
        else cudaFree(b);
    }
    const unsigned long long head[2] = {0, CAPACITY};
    if (e == cudaSuccess) e = cudaDeviceSynchronize();
    if (e == cudaSuccess) e = cudaMemcpy(buffer, head, sizeof head, cudaMemcpyHostToDevice);
    if (e != cudaSuccess)
        return sm_fail(err, SM_ECUDA, "PDL trace: setting up %zu bytes of records: %s", bytes, cudaGetErrorString(e));
    return SM_OK;
}

sm_status sm_cuda_pdl_trace_dump(const char *path, sm_error *err) {
    if (!buffer) return sm_fail(err, SM_EINVAL, "PDL trace: %s: sm_cuda_pdl_trace_start was not called", path);
    unsigned long long head[2];
    cudaError_t e = cudaDeviceSynchronize();
    if (e == cudaSuccess) e = cudaMemcpy(head, buffer, sizeof head, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess)
        return sm_fail(err, SM_ECUDA, "PDL trace: reading the record count: %s", cudaGetErrorString(e));
    const unsigned long long n = head[0] < CAPACITY ? head[0] : CAPACITY;
    sm_pdl_trace_rec *recs = (sm_pdl_trace_rec *)malloc(n * sizeof *recs + 1);
    if (!recs) return sm_fail(err, SM_ENOMEM, "PDL trace: %llu records", n);
    e = cudaMemcpy(recs, (unsigned long long *)buffer + 2, n * sizeof *recs, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {
        free(recs);
        return sm_fail(err, SM_ECUDA, "PDL trace: reading %llu records: %s", n, cudaGetErrorString(e));
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        free(recs);
        return sm_fail(err, SM_EIO, "PDL trace: cannot write %s", path);
    }
    fprintf(f, "# grid block grid_blocks sm kind t_before t_after%s\n",
            head[0] > CAPACITY ? "  (OVERFLOW: later records lost)" : "");
    for (unsigned long long i = 0; i < n; i++)
        fprintf(f, "%llu %u %u %u %u %llu %llu\n", recs[i].grid, recs[i].block, recs[i].grid_blocks, recs[i].sm,
                recs[i].kind, recs[i].t_before, recs[i].t_after);
    free(recs);
    if (fclose(f) != 0) return sm_fail(err, SM_EIO, "PDL trace: writing %s failed", path);
    return SM_OK;
}

#else

bool sm_cuda_pdl_trace_built(void) { return false; }
sm_status sm_cuda_pdl_trace_start(sm_error *err) {
    return sm_fail(err, SM_EINVAL, "PDL trace: this build records nothing (configure with -DSPECMOE_PDL_TRACE=ON)");
}
sm_status sm_cuda_pdl_trace_dump(const char *path, sm_error *err) {
    return sm_fail(err, SM_EINVAL, "PDL trace: %s: this build records nothing (configure with -DSPECMOE_PDL_TRACE=ON)", path);
}

#endif
