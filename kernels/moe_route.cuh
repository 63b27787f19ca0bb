/* kernels/moe_route.cuh — the MoE routing of a decode-sized batch done by ONE thread block:
 * router top-k, expert offsets and the permutation by expert, in shared memory, optionally
 * written out. Device code shared by sm_cuda_moe_route (fused_ops.cu), where every block of the
 * routing launch repeats it, and by the decode gate_up kernel (moe_grouped.cu), where every CTA
 * repeats it instead of waiting for a routing launch: at decode sizes the routing is a few
 * hundred instructions, cheaper than one more launch on the critical path. Every block derives
 * the same result without atomics across blocks, so no block waits for another. */
#ifndef SM_MOE_ROUTE_CUH
#define SM_MOE_ROUTE_CUH

#include "kernel_common.cuh"

namespace sm_route {

/* A key whose unsigned order is the logits' order: -0 and +0 get one key (router_topk compares
 * them equal, then by id); NaN gets 1, below every number (whose keys are >= 0x007fffff); 0 is
 * left for "no candidate" (taken, or past the last expert). */
__device__ __forceinline__ unsigned order_key(float f) {
    if (isnan(f)) return 1u;
    if (f == 0.0f) f = 0.0f;
    const unsigned u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* The logit a key came from (exact for numbers; -0 comes back as +0, which gives the same
 * exp(l - max)). */
__device__ __forceinline__ float key_value(unsigned key) {
    if (key == 1u) return __int_as_float(0x7fffffff);
    return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

__device__ __forceinline__ int expert_count(const unsigned long long *m, int words) {
    int c = 0;
    for (int w = 0; w < words; w++) c += __popcll(m[w]);
    return c;
}

/* Where the routing lives in shared memory (carve() lays it out, smem_bytes() sizes it):
 *   rows_of[E][W]: bit r of expert e's W words = row r picked e (W = ceil(rows/64)); the rank of
 *                  assignment (r, j) inside its expert is the number of lower rows that picked
 *                  the expert, a popcount, so every block derives the same order without atomics;
 *   ids[n], wts[n]: the top-k as router_topk writes them; spos[n]: each assignment's sorted
 *   position; src[n]: the assignment at each sorted position; off[E+1]: expert offsets. */
struct shared_routing {
    unsigned long long *rows_of;
    int *ids;
    float *wts;
    int *spos, *src, *off;
};

__host__ __device__ inline size_t smem_bytes(int rows, int E, int k) {
    const size_t W = (size_t)(rows + 63) / 64, n = (size_t)rows * k;
    return (size_t)E * W * 8 + n * 16 + (size_t)(E + 1) * 4;
}

/* base: 8-byte aligned shared memory of smem_bytes(rows, E, k). */
__device__ inline shared_routing carve(void *base, int rows, int E, int k) {
    const int W = (rows + 63) / 64, n = rows * k;
    shared_routing s;
    s.rows_of = static_cast<unsigned long long *>(base);
    s.ids = reinterpret_cast<int *>(s.rows_of + (size_t)E * W);
    s.wts = reinterpret_cast<float *>(s.ids + n);
    s.spos = reinterpret_cast<int *>(s.wts + n);
    s.src = s.spos + n;
    s.off = s.src + n;
    return s;
}

/* Where the writing block puts the routing (the layout of sm_cuda_moe_route's outputs). */
struct routing_out {
    int *expert_ids;
    float *weights;
    int *offsets, *sorted_src, *sorted_pos;
    float *sorted_w;
};

/* The routing of `rows` rows of logits [rows, E] into s, by the whole block (every thread must
 * call it; it ends with the block synchronised). V = logits a lane holds (E <= 32 V; a larger V
 * than needed gives the same bits). writer: this block also stores the routing to out. */
template <int V>
__device__ void route_block(const float *__restrict__ logits, int rows, int E, int k, bool renormalize,
                            const shared_routing &s, bool writer, const routing_out &out) {
    constexpr unsigned FULL = 0xffffffffu;
    const int W = (rows + 63) / 64, n = rows * k;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int i = threadIdx.x; i < E * W; i += blockDim.x) s.rows_of[i] = 0ull;
    __syncthreads();

    for (int r = warp; r < rows; r += warps) {
        const float *l = logits + (size_t)r * E;
        float v[V];
#pragma unroll
        for (int i = 0; i < V; i++) v[i] = lane + 32 * i < E ? l[lane + 32 * i] : 0.0f;
        /* router_topk_kernel's softmax: same per-lane order, same butterfly */
        float mx = -INFINITY;
#pragma unroll
        for (int i = 0; i < V; i++)
            if (lane + 32 * i < E) mx = fmaxf(mx, v[i]);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(FULL, mx, o));
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < V; i++)
            if (lane + 32 * i < E) sum += expf(v[i] - mx);
        sum = sm_warp_sum(sum);

        /* Round j picks the largest key (lowest id among equal keys): a lane's best over its
         * registers, then two redux instructions, the first for the key, the second for the id
         * (as ~id, so the max is the lowest id). Lane j % 32 keeps round j's winner; the weights
         * of a chunk of 32 rounds are computed after it, in parallel, and summed in round order,
         * so picked_sum adds the same values in the same order as router_topk. */
        unsigned key[V];
#pragma unroll
        for (int i = 0; i < V; i++) key[i] = lane + 32 * i < E ? order_key(v[i]) : 0u;
        float picked_sum = 0.0f, my_v = 0.0f;
        int my_id = 0;
        for (int j = 0; j < k; j++) {
            unsigned best_key = 0u, best_inv_id = 0u;
#pragma unroll
            for (int i = 0; i < V; i++) /* ascending id: '>' keeps the lower id on ties */
                if (key[i] > best_key) {
                    best_key = key[i];
                    best_inv_id = ~(unsigned)(lane + 32 * i);
                }
            const unsigned top = __reduce_max_sync(FULL, best_key);
            const int win = (int)~__reduce_max_sync(FULL, best_key == top ? best_inv_id : 0u);
            if ((win & 31) == lane) {
#pragma unroll
                for (int i = 0; i < V; i++)
                    if (i == (win >> 5)) key[i] = 0u;
            }
            if ((j & 31) == lane) {
                my_id = win;
                my_v = key_value(top);
            }
            if ((j & 31) == 31 || j == k - 1) {
                const int base = j & ~31, count = j - base + 1;
                const float wgt = lane < count ? expf(my_v - mx) / sum : 0.0f;
                for (int q = 0; q < count; q++) picked_sum += __shfl_sync(FULL, wgt, q);
                if (lane < count) {
                    s.ids[r * k + base + lane] = my_id;
                    s.wts[r * k + base + lane] = wgt;
                    atomicOr(&s.rows_of[(size_t)my_id * W + (r >> 6)], 1ull << (r & 63));
                }
            }
        }
        if (renormalize) {
            __syncwarp();
            for (int j = lane; j < k; j += 32) s.wts[r * k + j] = s.wts[r * k + j] / picked_sum;
        }
    }
    __syncthreads();

    if (warp == 0) { /* expert offsets: a warp scan over contiguous chunks of experts */
        const int per = (E + 31) / 32, e0 = lane * per, e1 = min(e0 + per, E);
        int local = 0;
        for (int e = e0; e < e1; e++) local += expert_count(s.rows_of + (size_t)e * W, W);
        int incl = local;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int t = __shfl_up_sync(FULL, incl, o);
            if (lane >= o) incl += t;
        }
        int run = incl - local;
        for (int e = e0; e < e1; e++) {
            s.off[e] = run;
            run += expert_count(s.rows_of + (size_t)e * W, W);
        }
        if (lane == 31) s.off[E] = incl;
    }
    __syncthreads();

    for (int a = threadIdx.x; a < n; a += blockDim.x) {
        const int r = a / k, e = s.ids[a];
        const unsigned long long *m = s.rows_of + (size_t)e * W;
        const int p = s.off[e] + expert_count(m, r >> 6) + __popcll(m[r >> 6] & ((1ull << (r & 63)) - 1ull));
        s.spos[a] = p;
        s.src[p] = a;
        if (writer) {
            out.expert_ids[a] = e;
            out.weights[a] = s.wts[a];
            out.sorted_src[p] = a;
            out.sorted_pos[a] = p;
            out.sorted_w[p] = s.wts[a];
        }
    }
    if (writer)
        for (int e = threadIdx.x; e <= E; e += blockDim.x) out.offsets[e] = s.off[e];
    __syncthreads();
}

} // namespace sm_route

#endif
