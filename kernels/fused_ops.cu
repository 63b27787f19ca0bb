/* kernels/fused_ops.cu — see fused_ops.h. Each kernel repeats, expression for expression, the
 * arithmetic of the kernels it replaces (model_ops.cu, router_topk.cu, attention.cu), so that the
 * compiler produces the same roundings and the results are bit-identical; what changes is only
 * which thread does the work and how many launches it takes. */
#include "fused_ops.h"

#include "kernel_common.cuh"
#include "moe_route.cuh"

namespace {

__device__ __forceinline__ float bf(const __nv_bfloat16 v) { return __bfloat162float(v); }

/* ---- q/k norm + RoPE + K/V write --------------------------------------------------------- */

constexpr int QKR_WARPS = 8;
constexpr int QKR_MAX_HD = 256;

/* One warp per (row, head slice): slices 0..heads are q heads, then kv_heads k heads, then
 * kv_heads v heads (a v head is only rounded into the cache). The normalised head waits in
 * shared memory because RoPE pairs element i with i + head_dim/2, which another lane holds. */
__global__ void __launch_bounds__(QKR_WARPS * 32)
    qk_norm_rope_kv_kernel(float *qkv, int stride, int heads, int kvh, int hd, const __nv_bfloat16 *__restrict__ qw,
                           const __nv_bfloat16 *__restrict__ kw, float eps, const int *__restrict__ pos, float theta,
                           const int *__restrict__ seq, __nv_bfloat16 *kc, __nv_bfloat16 *vc, int max_context) {
    __shared__ float buf[QKR_WARPS][QKR_MAX_HD], inv_freq[QKR_MAX_HD / 2];
    /* the RoPE frequencies depend on nothing earlier kernels write: before the PDL wait */
    for (int i = threadIdx.x; i < hd / 2; i += blockDim.x) inv_freq[i] = sm_rope_inv_freq(i, hd, theta);
    __syncthreads();
    sm_pdl_trigger(); /* PDL: see kernel_common.cuh */
    sm_pdl_wait();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int slice = blockIdx.x * QKR_WARPS + warp, r = blockIdx.y;
    if (slice >= heads + 2 * kvh) return;
    const int kvd = kvh * hd, p = pos[r];
    float *v = qkv + (size_t)r * stride + (size_t)slice * hd; /* q heads, k heads, v heads are contiguous */
    const size_t at = ((size_t)seq[r] * max_context + p) * kvd;
    if (slice >= heads + kvh) {
        __nv_bfloat16 *dst = vc + at + (size_t)(slice - heads - kvh) * hd;
        for (int i = lane; i < hd; i += 32) dst[i] = __float2bfloat16_rn(v[i]);
        return;
    }
    const bool is_k = slice >= heads;
    __nv_bfloat16 *kdst = is_k ? kc + at + (size_t)(slice - heads) * hd : NULL;
    sm_warp_head_norm_rope(v, v, is_k ? kw : qw, eps, hd, p, theta, buf[warp], kdst, inv_freq);
}

/* ---- MoE combine + RMSNorm ----------------------------------------------------------------- */

/* One block per row, as many threads as sm_cuda_rmsnorm_f32 gives the row. The combine (whose
 * per-element sum does not depend on which thread does it) runs on 16-byte loads, 8 columns a
 * thread, and leaves the new row in shared memory; the sum of squares then walks the row with
 * rmsnorm_kernel's thread-to-element map, so its order and result are the same.
 * row_smem: hidden floats in shared memory (else the row is re-read from x). */
constexpr int COMBINE_W_PREFETCH = 16; /* all of them for hidden <= 4096 at 256 threads */

__global__ void combine_rmsnorm_kernel(const __nv_bfloat16 *__restrict__ ys, int stride,
                                       const int *__restrict__ sorted_pos, int top_k, float *x, int hidden,
                                       const __nv_bfloat16 *__restrict__ w, float eps, __nv_bfloat16 *out, bool vec,
                                       bool row_smem) {
    /* The norm weights a thread scales (rmsnorm's element map) are requested before the PDL
     * wait: read at the end, they were one more L2 round trip on a decode step's critical path. */
    float wpre[COMBINE_W_PREFETCH];
#pragma unroll
    for (int m = 0; m < COMBINE_W_PREFETCH; m++) {
        const int i = threadIdx.x + m * blockDim.x;
        wpre[m] = w && i < hidden ? bf(w[i]) : 0.0f;
    }
    sm_pdl_trigger(); /* PDL: see kernel_common.cuh */
    sm_pdl_wait();
    extern __shared__ __align__(16) float comb_smem[]; /* [top_k] slot positions, then [hidden] the new row */
    __shared__ float red[32];
    const int r = blockIdx.x;
    int *slot = reinterpret_cast<int *>(comb_smem);
    float *row = comb_smem + (top_k + 3) / 4 * 4; /* 16-byte aligned */
    float *xr = x + (size_t)r * hidden;
    for (int j = threadIdx.x; j < top_k; j += blockDim.x) slot[j] = sorted_pos[(size_t)r * top_k + j];
    /* the residual's first chunk requested with the slot positions, not after them */
    float4 x_lo = make_float4(0, 0, 0, 0), x_hi = x_lo;
    if (vec && threadIdx.x < hidden / 8) {
        x_lo = reinterpret_cast<const float4 *>(xr)[2 * threadIdx.x];
        x_hi = reinterpret_cast<const float4 *>(xr)[2 * threadIdx.x + 1];
    }
    __syncthreads();
    if (vec) {
        for (int c = threadIdx.x; c < hidden / 8; c += blockDim.x) {
            float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#pragma unroll 8 /* the slots' loads issued together (the sum keeps slot order) */
            for (int j = 0; j < top_k; j++) {
                float f[8];
                sm_unpack8(reinterpret_cast<const uint4 *>(ys + (size_t)slot[j] * stride)[c], f);
#pragma unroll
                for (int q = 0; q < 8; q++) s[q] += f[q];
            }
            float4 *x4 = reinterpret_cast<float4 *>(xr) + 2 * c;
            float4 lo = c == threadIdx.x ? x_lo : x4[0], hi = c == threadIdx.x ? x_hi : x4[1];
            lo.x += s[0]; lo.y += s[1]; lo.z += s[2]; lo.w += s[3];
            hi.x += s[4]; hi.y += s[5]; hi.z += s[6]; hi.w += s[7];
            x4[0] = lo;
            x4[1] = hi;
            if (row_smem) {
                reinterpret_cast<float4 *>(row)[2 * c] = lo;
                reinterpret_cast<float4 *>(row)[2 * c + 1] = hi;
            }
        }
    } else {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
            float s = 0;
            for (int j = 0; j < top_k; j++) s += bf(ys[(size_t)slot[j] * stride + i]);
            const float xn = xr[i] + s;
            xr[i] = xn;
            if (row_smem) row[i] = xn;
        }
    }
    if (!w) return;
    __syncthreads(); /* the row (shared or global) was written by other threads */
    const float *src = row_smem ? row : xr;
    float ss = 0;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) ss += src[i] * src[i];
    ss = sm_block_sum(ss, red);
    const float scale = 1.0f / sqrtf(ss / (float)hidden + eps);
#pragma unroll
    for (int m = 0; m < COMBINE_W_PREFETCH; m++) {
        const int i = threadIdx.x + m * blockDim.x;
        if (i < hidden) out[(size_t)r * hidden + i] = __float2bfloat16_rn((src[i] * scale) * wpre[m]);
    }
    for (int i = threadIdx.x + COMBINE_W_PREFETCH * blockDim.x; i < hidden; i += blockDim.x)
        out[(size_t)r * hidden + i] = __float2bfloat16_rn((src[i] * scale) * bf(w[i]));
}

/* ---- MoE routing: top-k + permutation + gather --------------------------------------------- */

/* Every block repeats the routing (moe_route.cuh) and gathers its share of xs. */
template <int V>
__global__ void __launch_bounds__(1024)
    moe_route_kernel(const float *__restrict__ logits, int rows, int E, int k, bool renormalize,
                     const __nv_bfloat16 *__restrict__ h, int hidden, int stride, bool vec,
                     sm_route::routing_out out, __nv_bfloat16 *xs) {
    sm_pdl_trigger(); /* PDL: see kernel_common.cuh */
    sm_pdl_wait();
    extern __shared__ unsigned long long route_smem[];
    const int n = rows * k;
    /* This block gathers assignments a0..a1. Which row of h each one copies (a / k) is known before
     * the routing, only where it goes is not: the first slice of the copy is loaded now, so its
     * latency hides behind the top-k. */
    const int share = (n + gridDim.x - 1) / gridDim.x, a0 = blockIdx.x * share, a1 = min(n, a0 + share);
    const int hv = hidden / 8, sv = stride / 8;
    const long vec_total = vec && a1 > a0 ? (long)(a1 - a0) * sv : 0;
    uint4 first = make_uint4(0u, 0u, 0u, 0u);
    if (threadIdx.x < vec_total) {
        const int a = a0 + (int)(threadIdx.x / sv), c = (int)(threadIdx.x % sv);
        if (c < hv) first = reinterpret_cast<const uint4 *>(h + (size_t)(a / k) * hidden)[c];
    }
    const sm_route::shared_routing sr = sm_route::carve(route_smem, rows, E, k);
    sm_route::route_block<V>(logits, rows, E, k, renormalize, sr, blockIdx.x == 0, out);
    const int *spos = sr.spos;

    /* this block's share of the gather: each row of xs at its sorted position */
    if (a0 >= a1) return;
    if (vec) {
        for (long t = threadIdx.x; t < vec_total; t += blockDim.x) {
            const int a = a0 + (int)(t / sv), c = (int)(t % sv);
            const uint4 val = t == threadIdx.x ? first
                              : c < hv         ? reinterpret_cast<const uint4 *>(h + (size_t)(a / k) * hidden)[c]
                                               : make_uint4(0u, 0u, 0u, 0u);
            reinterpret_cast<uint4 *>(xs + (size_t)spos[a] * stride)[c] = val;
        }
    } else {
        const long total = (long)(a1 - a0) * stride;
        for (long t = threadIdx.x; t < total; t += blockDim.x) {
            const int a = a0 + (int)(t / stride), c = (int)(t % stride);
            xs[(size_t)spos[a] * stride + c] = c < hidden ? h[(size_t)(a / k) * hidden + c] : __float2bfloat16_rn(0.0f);
        }
    }
}

/* Enough blocks that each copies a few rows of xs; every block repeats the routing, which at
 * decode sizes costs less than a second launch would. */
constexpr int ROUTE_MAX_BLOCKS = 128;

} // namespace

extern "C" sm_status sm_cuda_qk_norm_rope_kv(cudaStream_t stream, float *qkv, int stride, int rows, int heads,
                                             int kv_heads, int head_dim, const sm_bf16_bits *q_norm,
                                             const sm_bf16_bits *k_norm, float eps, const int *pos, float theta,
                                             const int *seq, sm_bf16_bits *k_cache, sm_bf16_bits *v_cache,
                                             int max_context, sm_error *err) {
    NEED(rows >= 0 && rows <= 65535 && heads > 0 && kv_heads > 0 && head_dim >= 2 && head_dim <= QKR_MAX_HD &&
             head_dim % 2 == 0 && max_context > 0 && (long)stride >= (long)(heads + 2 * kv_heads) * head_dim,
         "qk_norm_rope_kv: bad shape (rows %d, heads %d, kv_heads %d, head_dim %d (even, <= %d), stride %d, "
         "max_context %d)",
         rows, heads, kv_heads, head_dim, QKR_MAX_HD, stride, max_context);
    NEED(!q_norm == !k_norm, "qk_norm_rope_kv: give both q_norm and k_norm (Qwen3's per-head norm) or neither");
    if (!rows) return SM_OK;
    NEED(qkv && pos && seq && k_cache && v_cache, "qk_norm_rope_kv: NULL device pointer");
    const dim3 grid((unsigned)((heads + 2 * kv_heads + QKR_WARPS - 1) / QKR_WARPS), (unsigned)rows);
    sm_launch_pdl(qk_norm_rope_kv_kernel, grid, QKR_WARPS * 32, 0, stream, qkv, stride, heads, kv_heads, head_dim,
                  (cbf)q_norm, (cbf)k_norm, eps, pos, theta, seq, (__nv_bfloat16 *)k_cache, (__nv_bfloat16 *)v_cache,
                  max_context);
    return sm_kernel_launched("qk_norm_rope_kv", err);
}

extern "C" sm_status sm_cuda_moe_route(cudaStream_t stream, const float *logits, int rows, int num_experts, int top_k,
                                       bool renormalize, const sm_bf16_bits *h, int hidden, int stride,
                                       int *expert_ids, float *weights, int *expert_offsets, int *sorted_src,
                                       int *sorted_pos, float *sorted_weight, sm_bf16_bits *xs, sm_error *err) {
    NEED(rows >= 0 && num_experts > 0 && top_k > 0 && top_k <= num_experts && hidden > 0 && stride >= hidden,
         "moe_route: bad shape (rows %d, experts %d, top_k %d, hidden %d, stride %d)", rows, num_experts, top_k,
         hidden, stride);
    NEED(rows <= SM_MOE_ROUTE_MAX_ROWS && num_experts <= SM_MOE_ROUTE_MAX_EXPERTS &&
             (long)rows * top_k <= SM_MOE_ROUTE_MAX_ASSIGN,
         "moe_route: %d rows x top_k %d over %d experts is beyond the fused routing's limits (rows <= %d, experts <= "
         "%d, rows*top_k <= %d): use router_topk + moe_permute + moe_gather",
         rows, top_k, num_experts, SM_MOE_ROUTE_MAX_ROWS, SM_MOE_ROUTE_MAX_EXPERTS, SM_MOE_ROUTE_MAX_ASSIGN);
    NEED(expert_offsets && (!rows || (logits && h && expert_ids && weights && sorted_src && sorted_pos &&
                                      sorted_weight && xs)),
         "moe_route: NULL device pointer");
    const int n = rows * top_k;
    const int blocks = n < 1 ? 1 : n < ROUTE_MAX_BLOCKS ? n : ROUTE_MAX_BLOCKS;
    int threads = 32 * rows;
    threads = threads < 256 ? 256 : threads > 1024 ? 1024 : threads;
    const bool vec = hidden % 8 == 0 && stride % 8 == 0 && (uintptr_t)h % 16 == 0 && (uintptr_t)xs % 16 == 0;
    const sm_route::routing_out out = {expert_ids, weights, expert_offsets, sorted_src, sorted_pos, sorted_weight};
    const size_t smem = sm_route::smem_bytes(rows, num_experts, top_k);
    /* past 48 KiB (256 rows x top-8 over 512 experts) the kernel must be allowed more */
#define SM_ROUTE_LAUNCH(V)                                                                                            \
    do {                                                                                                              \
        if (smem > 48 * 1024)                                                                                         \
            NEED(cudaFuncSetAttribute(moe_route_kernel<V>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) == \
                     cudaSuccess,                                                                                     \
                 "moe_route: %zu bytes of shared memory refused", smem);                                              \
        sm_launch_pdl(moe_route_kernel<V>, blocks, threads, smem, stream, logits, rows, num_experts, top_k,           \
                      renormalize, (cbf)h, hidden, stride, vec, out, (__nv_bfloat16 *)xs);                            \
    } while (0)
    if (num_experts <= 32) SM_ROUTE_LAUNCH(1);
    else if (num_experts <= 64) SM_ROUTE_LAUNCH(2);
    else if (num_experts <= 128) SM_ROUTE_LAUNCH(4);
    else if (num_experts <= 256) SM_ROUTE_LAUNCH(8);
    else SM_ROUTE_LAUNCH(16);
#undef SM_ROUTE_LAUNCH
    return sm_kernel_launched("moe_route", err);
}

extern "C" sm_status sm_cuda_moe_combine_rmsnorm(cudaStream_t stream, const sm_bf16_bits *ys, int stride,
                                                 const int *sorted_pos, int top_k, float *x, int rows, int hidden,
                                                 const sm_bf16_bits *weight, float eps, sm_bf16_bits *out_bf16,
                                                 sm_error *err) {
    NEED(rows >= 0 && hidden > 0 && stride >= hidden && top_k > 0,
         "moe_combine_rmsnorm: bad shape (rows %d, hidden %d, stride %d, top_k %d)", rows, hidden, stride, top_k);
    NEED(!weight || out_bf16, "moe_combine_rmsnorm: a norm weight needs an output (out_bf16 is NULL)");
    if (!rows) return SM_OK;
    NEED(ys && sorted_pos && x, "moe_combine_rmsnorm: NULL device pointer");
    /* the thread count of sm_cuda_rmsnorm_f32: it fixes the order of the sum of squares */
    const int threads = sm_rms_threads(hidden);
    const bool vec = hidden % 8 == 0 && stride % 8 == 0 && (uintptr_t)ys % 16 == 0 && (uintptr_t)x % 16 == 0;
    const size_t slots = (size_t)(top_k + 3) / 4 * 4 * sizeof(int), row_bytes = (size_t)hidden * sizeof(float);
    NEED(slots <= 16384, "moe_combine_rmsnorm: top_k %d too large", top_k);
    /* within the 48 KiB a block gets without opting in, beside the kernel's static 128 bytes */
    const bool row_smem = weight && slots + row_bytes <= 48 * 1024 - 256;
    sm_launch_pdl(combine_rmsnorm_kernel, rows, threads, slots + (row_smem ? row_bytes : 0), stream, (cbf)ys, stride,
                  sorted_pos, top_k, x, hidden, (cbf)weight, eps, (__nv_bfloat16 *)out_bf16, vec, row_smem);
    return sm_kernel_launched("moe_combine_rmsnorm", err);
}
