/* kernels/router_topk.cu — see router_topk.h. One warp per row. The k winners are taken in the
 * strict order (logit descending, id ascending): each round picks the best element that comes
 * after the previous winner in that order, so no "taken" set is needed for any k or E. */
#include "router_topk.h"

#include "kernel_common.cuh"

namespace {

constexpr int TOPK_WARPS = 4;

/* a comes before b in the selection order */
__device__ __forceinline__ bool before(float va, int ia, float vb, int ib) {
    return va > vb || (va == vb && ia < ib);
}

__global__ void __launch_bounds__(TOPK_WARPS * 32)
    router_topk_kernel(const float *__restrict__ logits, int rows, int num_experts, int top_k, bool renormalize,
                       int *__restrict__ expert_ids, float *__restrict__ weights) {
    const int row = blockIdx.x * TOPK_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *l = logits + (size_t)row * num_experts;
    float mx = -INFINITY;
    for (int e = lane; e < num_experts; e += 32) mx = fmaxf(mx, l[e]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float sum = 0.0f;
    for (int e = lane; e < num_experts; e += 32) sum += expf(l[e] - mx);
    sum = sm_warp_sum(sum);

    float last_v = INFINITY, picked_sum = 0.0f, my_w = 0.0f;
    int last_i = -1, my_id = 0;
    for (int j = 0; j < top_k; j++) {
        float bv = -INFINITY;
        int bi = -1;
        for (int e = lane; e < num_experts; e += 32) {
            const float v = l[e];
            if (before(last_v, last_i, v, e) && (bi < 0 || before(v, e, bv, bi))) {
                bv = v;
                bi = e;
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (oi >= 0 && (bi < 0 || before(ov, oi, bv, bi))) {
                bv = ov;
                bi = oi;
            }
        }
        const float w = expf(bv - mx) / sum;
        picked_sum += w;
        if (j < 32 && lane == j) { /* lane j keeps the j-th result; rounds beyond 32 write directly */
            my_id = bi;
            my_w = w;
        }
        if (j >= 32 && lane == 0) {
            expert_ids[(size_t)row * top_k + j] = bi;
            weights[(size_t)row * top_k + j] = w; /* renormalised below */
        }
        last_v = bv;
        last_i = bi;
    }
    if (lane < top_k && lane < 32) {
        expert_ids[(size_t)row * top_k + lane] = my_id;
        weights[(size_t)row * top_k + lane] = renormalize ? my_w / picked_sum : my_w;
    }
    if (renormalize && top_k > 32) {
        __syncwarp();
        for (int j = 32 + lane; j < top_k; j += 32) weights[(size_t)row * top_k + j] /= picked_sum;
    }
}

} // namespace

extern "C" sm_status sm_cuda_router_topk(cudaStream_t stream, const float *logits, int rows, int num_experts,
                                         int top_k, bool renormalize, int *expert_ids, float *weights,
                                         sm_error *err) {
    if (rows < 0 || num_experts <= 0 || top_k <= 0 || top_k > num_experts)
        return sm_fail(err, SM_EINVAL, "router_topk: bad shape (rows %d, experts %d, top_k %d)", rows, num_experts,
                       top_k);
    if (rows == 0) return SM_OK;
    if (!logits || !expert_ids || !weights) return sm_fail(err, SM_EINVAL, "router_topk: NULL device pointer");
    const unsigned grid = (unsigned)((rows + TOPK_WARPS - 1) / TOPK_WARPS);
    router_topk_kernel<<<grid, TOPK_WARPS * 32, 0, stream>>>(logits, rows, num_experts, top_k, renormalize,
                                                             expert_ids, weights);
    return sm_kernel_launched("router_topk", err);
}
