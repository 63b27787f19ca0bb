/* src/cuda/runners_gpu.h — the device-path entry points of the GPU runners (internal): the
 * table moe_device.c dispatches on, one per GPU runner backend. */
#ifndef SM_RUNNERS_GPU_H
#define SM_RUNNERS_GPU_H

#include "cuda/moe_dev.h"

typedef struct sm_runner_gpu_ops {
    const sm_runner_backend *backend;
    sm_status (*reserve)(sm_runner *r, int n_assign, sm_error *err);
    sm_status (*forward_device)(sm_runner *r, cudaStream_t stream, const sm_moe_device_batch *b, sm_error *err);
    sm_moe_dev *(*dev)(sm_runner *r);
    /* assignments up to which forward_device works well from the device offsets alone */
    int (*device_routing_max_assign)(sm_runner *r);
    /* whether forward_device does this routing job itself; NULL: never (cublaslt) */
    bool (*routes)(sm_runner *r, const sm_moe_route_job *job);
    /* NULL where the runner has no kernel regimes (cublaslt) */
    sm_status (*set_regime)(sm_runner *r, int regime, sm_error *err);
} sm_runner_gpu_ops;

extern const sm_runner_gpu_ops sm_runner_cuda_gpu;
extern const sm_runner_gpu_ops sm_runner_cublaslt_gpu;

#endif
