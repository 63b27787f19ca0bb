/* src/cuda/runner_cuda.c — the `cuda` MoE runner: our own fused grouped kernels
 * (kernels/moe_grouped.h). Two launches per layer for all active experts; expert ranges are
 * read on the GPU, so the device path is graph-capturable with routing that changes between
 * replays. The kernel picks the regime from the number of assignments per expert (decode,
 * decode-mma, prefill-mma; SPECMOE_MOE_DECODE=simt / SPECMOE_MOE_PREFILL=wmma, read at create,
 * keep it to the older kernels), and any regime can be forced with sm_runner_device_set_regime.
 * At decode sizes of 2-4 rows the model may hand it the routing (sm_runner_device_routes): gate_up
 * routes the batch itself, one launch less on a decode step's critical path. Otherwise, after a
 * decode gate_up, the down projection finds its experts before its PDL wait
 * (sm_cuda_moe_down_chained), so its weights stream while gate_up finishes. */
#include <limits.h>
#include <stdlib.h>

#include "cuda/cuda_check.h"
#include "cuda/moe_dev.h"
#include "cuda/runners_gpu.h"
#include "moe/runners/runners.h"
#include "moe_grouped.h"

struct sm_runner {
    sm_moe_dev dev;
    sm_bf16_bits *act;            /* [rows, fp]: silu(gate) * up between the two launches */
    size_t act_bytes;
    sm_moe_regime regime;         /* AUTO unless forced (benchmarks, tests) */
    unsigned auto_allow;          /* SM_MOE_ALLOW_* read from the environment at create */
};

static void cuda_destroy(sm_runner *r) {
    if (!r) return;
    sm_moe_dev_release(&r->dev); /* synchronises the stream first */
    cudaFree(r->act);
    free(r);
}

static sm_status cuda_reserve(sm_runner *r, cudaStream_t stream, int n_assign, sm_error *err) {
    size_t need = (size_t)(n_assign > 0 ? n_assign : 1) * r->dev.fp * sizeof(sm_bf16_bits);
    return sm_moe_dev_grow((void **)&r->act, &r->act_bytes, need, stream, "cuda runner", err);
}

static sm_status cuda_create(const sm_moe_shape *shape, const sm_runner_opts *opts, sm_runner **out, sm_error *err) {
    sm_runner *r;
    SM_TRY(sm_calloc((void **)&r, 1, sizeof *r, "cuda runner", err));
    r->regime = SM_MOE_REGIME_AUTO;
    r->auto_allow = sm_moe_auto_allow_from_env();
    sm_status s = sm_moe_dev_init(&r->dev, "cuda", shape, err);
    if (!s && shape->max_rows > 0) s = cuda_reserve(r, r->dev.stream, shape->max_rows * shape->top_k, err);
    if (s) {
        cuda_destroy(r);
        return s;
    }
    *out = r;
    return SM_OK;
}

static sm_moe_grouped_args grouped_args(const sm_runner *r, int n_assign, const int *expert_offsets) {
    return (sm_moe_grouped_args){.num_experts = r->dev.shape.num_experts, .hidden = r->dev.hp, .ffn = r->dev.fp,
                                 .n_assign = n_assign, .expert_offsets = expert_offsets, .regime = r->regime,
                                 .auto_allow = r->auto_allow};
}

/* Routing inside gate_up saves the routing launch but leaves down waiting for gate_up before it
 * learns its experts (gate_up writes them), while after the routing launch down starts early. On
 * an H100 (Qwen3-30B shape, 48 layers) one row gains more from the early down (3.19 ms a step
 * against 3.24 routed in gate_up); at 2-4 rows the two tie (4.79 / 7.64 ms either way). */
#define CUDA_ROUTE_MIN_ROWS 2

static bool cuda_routes(sm_runner *r, const sm_moe_route_job *job) {
    const sm_moe_grouped_args a = grouped_args(r, job->rows * job->top_k, job->expert_offsets);
    return job->rows >= CUDA_ROUTE_MIN_ROWS && sm_moe_gate_up_routes(&a, job);
}

static sm_status cuda_forward_device(sm_runner *r, cudaStream_t stream, const sm_moe_device_batch *b, sm_error *err) {
    SM_TRY(sm_moe_dev_check_batch(&r->dev, b, err));
    if (b->n_assign == 0) return SM_OK;
    SM_TRY(cuda_reserve(r, stream, b->n_assign, err));
    const sm_moe_grouped_args a = grouped_args(r, b->n_assign, b->expert_offsets);
    if (b->route) {
        SM_TRY(sm_cuda_moe_gate_up_routed(stream, &a, b->route, r->dev.gate_up[b->layer], r->act, err));
        return sm_cuda_moe_down(stream, &a, r->act, r->dev.down[b->layer], b->weight, b->y, err);
    }
    SM_TRY(sm_cuda_moe_gate_up(stream, &a, b->x, r->dev.gate_up[b->layer], r->act, err));
    return sm_cuda_moe_down_chained(stream, &a, r->act, r->dev.down[b->layer], b->weight, b->y, err);
}

static sm_status cuda_load_expert(sm_runner *r, int layer, int expert, const sm_expert_weights *w, sm_error *err) {
    return sm_moe_dev_load_expert(&r->dev, layer, expert, w, err);
}

static sm_status cuda_forward(sm_runner *r, const sm_dispatch_out *in, sm_combine_in *out, sm_error *err) {
    return sm_moe_dev_host_forward(&r->dev, r, cuda_forward_device, in, out, err);
}

static sm_status cuda_reserve_entry(sm_runner *r, int n_assign, sm_error *err) {
    return cuda_reserve(r, r->dev.stream, n_assign, err);
}

static sm_moe_dev *cuda_dev(sm_runner *r) { return &r->dev; }

static int cuda_device_routing_max_assign(sm_runner *r) {
    (void)r;
    return INT_MAX; /* the kernels read the expert ranges on the GPU at any size */
}

static sm_status cuda_set_regime(sm_runner *r, int regime, sm_error *err) {
    if (regime < 0 || regime >= (int)SM_MOE_REGIME_COUNT)
        return sm_fail(err, SM_EINVAL, "cuda runner: unknown kernel regime %d", regime);
    r->regime = (sm_moe_regime)regime;
    return SM_OK;
}

const sm_runner_backend sm_runner_cuda = {
    .name = "cuda",
    .description = "GPU BF16, our fused grouped kernels (decode: weight streaming; prefill: tensor cores)",
    .weight_dtypes = SM_DTYPE_BIT(SM_DTYPE_F32) | SM_DTYPE_BIT(SM_DTYPE_BF16) | SM_DTYPE_BIT(SM_DTYPE_F16),
    .on_device = false, /* forward() takes host pointers; device pointers: cuda/moe_device.h */
    .create = cuda_create,
    .load_expert = cuda_load_expert,
    .forward = cuda_forward,
    .destroy = cuda_destroy,
};

const sm_runner_gpu_ops sm_runner_cuda_gpu = {
    .backend = &sm_runner_cuda,
    .reserve = cuda_reserve_entry,
    .forward_device = cuda_forward_device,
    .dev = cuda_dev,
    .device_routing_max_assign = cuda_device_routing_max_assign,
    .routes = cuda_routes,
    .set_regime = cuda_set_regime,
};
