/* src/cuda/moe_device.c — the device-pointer path of the GPU runners (see moe_device.h). */
#include "cuda/moe_device.h"

#include <stddef.h>

#include "cuda/runners_gpu.h"

static const sm_runner_gpu_ops *const gpu_runners[] = {&sm_runner_cuda_gpu, &sm_runner_cublaslt_gpu};

static const sm_runner_gpu_ops *find(const sm_runner_backend *b) {
    for (size_t i = 0; i < sizeof gpu_runners / sizeof gpu_runners[0]; i++)
        if (gpu_runners[i]->backend == b) return gpu_runners[i];
    return NULL;
}

static sm_status need(const sm_runner_backend *b, sm_runner *r, const sm_runner_gpu_ops **ops, sm_error *err) {
    *ops = find(b);
    if (!*ops) return sm_fail(err, SM_EINVAL, "MoE runner '%s' has no device path (GPU runners: cuda, cublaslt)",
                              b ? b->name : "(null)");
    if (!r) return sm_fail(err, SM_EINVAL, "MoE runner '%s': NULL runner", b->name);
    return SM_OK;
}

bool sm_runner_has_device_path(const sm_runner_backend *b) { return find(b) != NULL; }

int sm_runner_device_routing_max_assign(const sm_runner_backend *b, sm_runner *r) {
    const sm_runner_gpu_ops *ops = find(b);
    return ops && r ? ops->device_routing_max_assign(r) : 0;
}

bool sm_runner_device_routes(const sm_runner_backend *b, sm_runner *r, const sm_moe_route_job *job) {
    const sm_runner_gpu_ops *ops = find(b);
    return ops && r && job && ops->routes && ops->routes(r, job);
}

sm_status sm_runner_device_reserve(const sm_runner_backend *b, sm_runner *r, int n_assign, sm_error *err) {
    const sm_runner_gpu_ops *ops;
    SM_TRY(need(b, r, &ops, err));
    return ops->reserve(r, n_assign, err);
}

sm_status sm_runner_forward_device(const sm_runner_backend *b, sm_runner *r, cudaStream_t stream,
                                   const sm_moe_device_batch *batch, sm_error *err) {
    const sm_runner_gpu_ops *ops;
    SM_TRY(need(b, r, &ops, err));
    return ops->forward_device(r, stream, batch, err);
}

sm_status sm_runner_device_set_regime(const sm_runner_backend *b, sm_runner *r, int regime, sm_error *err) {
    const sm_runner_gpu_ops *ops;
    SM_TRY(need(b, r, &ops, err));
    if (!ops->set_regime) return sm_fail(err, SM_EUNSUPPORTED, "MoE runner '%s' has no kernel regimes", b->name);
    return ops->set_regime(r, regime, err);
}

sm_status sm_runner_device_random_layer(const sm_runner_backend *b, sm_runner *r, int layer, uint64_t seed,
                                        float scale, sm_error *err) {
    const sm_runner_gpu_ops *ops;
    SM_TRY(need(b, r, &ops, err));
    return sm_moe_dev_random_layer(ops->dev(r), layer, seed, scale, err);
}
