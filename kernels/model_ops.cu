/* kernels/model_ops.cu — see model_ops.h. Plain, obviously-correct kernels: these are a small
 * share of a step's bytes next to the weights the GEMMs and the MoE runner stream. */
#include "model_ops.h"

#include "kernel_common.cuh"

namespace {

__device__ __forceinline__ float bf(const __nv_bfloat16 v) { return __bfloat162float(v); }

__global__ void embed_kernel(const __nv_bfloat16 *__restrict__ embed, const int *__restrict__ tokens,
                             float *__restrict__ x, int rows, int hidden) {
    sm_pdl_trigger(); /* PDL: see kernel_common.cuh */
    sm_pdl_wait();
    const long total = (long)rows * hidden;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
        const int r = (int)(i / hidden), c = (int)(i % hidden);
        x[i] = bf(embed[(size_t)tokens[r] * hidden + c]);
    }
}

__global__ void rmsnorm_kernel(const float *x, const int *__restrict__ src, const __nv_bfloat16 *__restrict__ w,
                               float *out_f32, __nv_bfloat16 *out_bf16, int dim, float eps) {
    sm_pdl_trigger(); /* PDL: see kernel_common.cuh */
    sm_pdl_wait();
    __shared__ float red[32];
    const int r = blockIdx.x;
    const float *xr = x + (size_t)(src ? src[r] : r) * dim;
    float ss = 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
    ss = sm_block_sum(ss, red);
    const float scale = 1.0f / sqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = (xr[i] * scale) * bf(w[i]);
        if (out_f32) out_f32[(size_t)r * dim + i] = v;
        else out_bf16[(size_t)r * dim + i] = __float2bfloat16_rn(v);
    }
}

__global__ void bias_kernel(float *x, int stride, const __nv_bfloat16 *__restrict__ bias, int rows, int dim) {
    const long total = (long)rows * dim;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
        const int r = (int)(i / dim), c = (int)(i % dim);
        x[(size_t)r * stride + c] += bf(bias[c]);
    }
}

/* One warp per (row, head) slice. */
__global__ void head_rmsnorm_kernel(float *x, int stride, const __nv_bfloat16 *__restrict__ w, int rows, int heads,
                                    int hd, float eps) {
    const int slice = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (slice >= rows * heads) return;
    float *v = x + (size_t)(slice / heads) * stride + (size_t)(slice % heads) * hd;
    float ss = 0;
    for (int i = lane; i < hd; i += 32) ss += v[i] * v[i];
    ss = sm_warp_sum(ss);
    const float scale = 1.0f / sqrtf(ss / (float)hd + eps);
    for (int i = lane; i < hd; i += 32) v[i] = (v[i] * scale) * bf(w[i]);
}

/* One thread per (row, head, i < hd/2): rotates the pair (i, i + hd/2). */
__global__ void rope_kernel(float *x, int stride, const int *__restrict__ pos, int rows, int heads, int hd,
                            float theta) {
    const int half = hd / 2;
    const long total = (long)rows * heads * half;
    for (long t = blockIdx.x * (long)blockDim.x + threadIdx.x; t < total; t += (long)gridDim.x * blockDim.x) {
        const int i = (int)(t % half), h = (int)(t / half % heads), r = (int)(t / half / heads);
        /* the CPU twin's (and transformers') arithmetic: inv_freq via double pow, angle in fp32 */
        const float angle = (float)pos[r] * sm_rope_inv_freq(i, hd, theta);
        const float c = cosf(angle), s = sinf(angle);
        float *v = x + (size_t)r * stride + (size_t)h * hd;
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
    }
}

/* Counting sort of assignments by expert in one block: counts, prefix sum, scatter. */
__global__ void permute_kernel(const int *__restrict__ ids, const float *__restrict__ w, int n, int E, int *off,
                               int *sorted_src, int *sorted_pos, float *sorted_w) {
    extern __shared__ int sm_counts[]; /* [E] counts, then [E] cursors */
    int *count = sm_counts, *cursor = sm_counts + E;
    for (int e = threadIdx.x; e < E; e += blockDim.x) count[e] = 0;
    __syncthreads();
    for (int a = threadIdx.x; a < n; a += blockDim.x) {
        int e = ids[a];
        e = e < 0 || e >= E ? 0 : e; /* cannot happen with finite logits; never index out of bounds */
        atomicAdd(&count[e], 1);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int run = 0;
        for (int e = 0; e < E; e++) {
            off[e] = run;
            cursor[e] = run;
            run += count[e];
        }
        off[E] = run;
    }
    __syncthreads();
    for (int a = threadIdx.x; a < n; a += blockDim.x) {
        int e = ids[a];
        e = e < 0 || e >= E ? 0 : e;
        const int p = atomicAdd(&cursor[e], 1);
        sorted_src[p] = a;
        sorted_pos[a] = p;
        sorted_w[p] = w[a];
    }
}

__global__ void gather_kernel(const __nv_bfloat16 *__restrict__ h, int hidden, const int *__restrict__ src, int top_k,
                              __nv_bfloat16 *xs, int stride, int n) {
    const long total = (long)n * stride;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
        const int p = (int)(i / stride), c = (int)(i % stride);
        xs[i] = c < hidden ? h[(size_t)(src[p] / top_k) * hidden + c] : __float2bfloat16_rn(0.0f);
    }
}

/* gather_kernel with 16-byte chunks (hidden and stride multiples of 8, aligned rows): the scalar
 * kernel moved one bf16 and did a 64-bit division per element, 214 us for the 134 MB of a
 * 4096-token Qwen3-30B prompt on an H200. */
__global__ void gather_vec_kernel(const uint4 *__restrict__ h, int hidden8, const int *__restrict__ src, int top_k,
                                  uint4 *xs, int stride8, int n) {
    const long total = (long)n * stride8;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
        const int p = (int)(i / stride8), c = (int)(i - (long)p * stride8);
        xs[i] = c < hidden8 ? h[(size_t)(src[p] / top_k) * hidden8 + c] : make_uint4(0u, 0u, 0u, 0u);
    }
}

__global__ void combine_kernel(const __nv_bfloat16 *__restrict__ ys, int stride, const int *__restrict__ pos,
                               int top_k, float *x, int rows, int hidden) {
    const long total = (long)rows * hidden;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
        const int r = (int)(i / hidden), c = (int)(i % hidden);
        float s = 0;
        for (int j = 0; j < top_k; j++) s += bf(ys[(size_t)pos[r * top_k + j] * stride + c]);
        x[i] += s;
    }
}

__global__ void dot_sigmoid_kernel(const __nv_bfloat16 *__restrict__ h, const __nv_bfloat16 *__restrict__ w,
                                   float *out, int rows, int dim) {
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (r >= rows) return;
    float s = 0;
    for (int i = lane; i < dim; i += 32) s += bf(h[(size_t)r * dim + i]) * bf(w[i]);
    s = sm_warp_sum(s);
    if (lane == 0) out[r] = 1.0f / (1.0f + expf(-s));
}

__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
    return bi < 0 || v > bv || (v == bv && i < bi);
}

__global__ void argmax_kernel(const float *__restrict__ logits, int vocab, int *ids) {
    sm_pdl_trigger(); /* PDL: see kernel_common.cuh */
    sm_pdl_wait();
    __shared__ float sv[32];
    __shared__ int si[32];
    const float *l = logits + (size_t)blockIdx.x * vocab;
    float bv = 0;
    int bi = -1;
    if (vocab % 4 == 0 && ((uintptr_t)logits & 15) == 0) {
        /* 16-byte loads, eight in flight a thread: one scalar load at a time left a 152k-entry row
         * (Qwen3) latency-bound at ~38 us, 1% of a batch-1 decode step on an H200 */
        const float4 *l4 = reinterpret_cast<const float4 *>(l);
#pragma unroll 8
        for (int c = threadIdx.x; c < vocab / 4; c += blockDim.x) {
            const float4 v = l4[c];
            const float e[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int q = 0; q < 4; q++)
                if (!isnan(e[q]) && better(e[q], 4 * c + q, bv, bi)) { bv = e[q]; bi = 4 * c + q; }
        }
    } else {
        for (int i = threadIdx.x; i < vocab; i += blockDim.x)
            if (!isnan(l[i]) && better(l[i], i, bv, bi)) { bv = l[i]; bi = i; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (oi >= 0 && better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { sv[warp] = bv; si[warp] = bi; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); w++)
            if (si[w] >= 0 && better(sv[w], si[w], bv, bi)) { bv = sv[w]; bi = si[w]; }
        ids[blockIdx.x] = bi < 0 ? 0 : bi;
    }
}

unsigned grid_for(long work, int threads) {
    const long b = (work + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b < 65536 ? b : 65536);
}

} // namespace

extern "C" sm_status sm_cuda_embed_gather(cudaStream_t stream, const sm_bf16_bits *embed, const int *tokens, float *x,
                                          int rows, int hidden, sm_error *err) {
    NEED(rows >= 0 && hidden > 0, "embed_gather: bad shape (rows %d, hidden %d)", rows, hidden);
    if (!rows) return SM_OK;
    sm_launch_pdl(embed_kernel, grid_for((long)rows * hidden, 256), 256, 0, stream, (cbf)embed, tokens, x, rows, hidden);
    return sm_kernel_launched("embed_gather", err);
}

extern "C" sm_status sm_cuda_rmsnorm_f32(cudaStream_t stream, const float *x, const int *src, const sm_bf16_bits *weight,
                                         float *out_f32, sm_bf16_bits *out_bf16, int rows, int dim, float eps,
                                         sm_error *err) {
    NEED(rows >= 0 && dim > 0, "rmsnorm_f32: bad shape (rows %d, dim %d)", rows, dim);
    NEED(!out_f32 != !out_bf16, "rmsnorm_f32: exactly one of out_f32 / out_bf16 must be given");
    if (!rows) return SM_OK;
    const int threads = sm_rms_threads(dim);
    sm_launch_pdl(rmsnorm_kernel, rows, threads, 0, stream, x, src, (cbf)weight, out_f32, (__nv_bfloat16 *)out_bf16, dim, eps);
    return sm_kernel_launched("rmsnorm_f32", err);
}

extern "C" sm_status sm_cuda_add_bias_f32(cudaStream_t stream, float *x, int stride, const sm_bf16_bits *bias, int rows,
                                          int dim, sm_error *err) {
    NEED(rows >= 0 && dim > 0 && stride >= dim, "add_bias_f32: bad shape (rows %d, dim %d, stride %d)", rows, dim, stride);
    if (!rows) return SM_OK;
    bias_kernel<<<grid_for((long)rows * dim, 256), 256, 0, stream>>>(x, stride, (cbf)bias, rows, dim);
    return sm_kernel_launched("add_bias_f32", err);
}

extern "C" sm_status sm_cuda_head_rmsnorm_f32(cudaStream_t stream, float *x, int stride, const sm_bf16_bits *weight,
                                              int rows, int heads, int head_dim, float eps, sm_error *err) {
    NEED(rows >= 0 && heads > 0 && head_dim > 0 && stride >= heads * head_dim,
         "head_rmsnorm_f32: bad shape (rows %d, heads %d, head_dim %d, stride %d)", rows, heads, head_dim, stride);
    if (!rows) return SM_OK;
    const long slices = (long)rows * heads;
    head_rmsnorm_kernel<<<(unsigned)((slices + 3) / 4), 128, 0, stream>>>(x, stride, (cbf)weight, rows, heads, head_dim, eps);
    return sm_kernel_launched("head_rmsnorm_f32", err);
}

extern "C" sm_status sm_cuda_rope_f32(cudaStream_t stream, float *x, int stride, const int *pos, int rows, int heads,
                                      int head_dim, float theta, sm_error *err) {
    NEED(rows >= 0 && heads > 0 && head_dim > 0 && head_dim % 2 == 0 && stride >= heads * head_dim,
         "rope_f32: bad shape (rows %d, heads %d, head_dim %d, stride %d)", rows, heads, head_dim, stride);
    if (!rows) return SM_OK;
    rope_kernel<<<grid_for((long)rows * heads * (head_dim / 2), 256), 256, 0, stream>>>(x, stride, pos, rows, heads,
                                                                                       head_dim, theta);
    return sm_kernel_launched("rope_f32", err);
}

extern "C" sm_status sm_cuda_moe_permute(cudaStream_t stream, const int *expert_ids, const float *weights, int n_assign,
                                         int num_experts, int *expert_offsets, int *sorted_src, int *sorted_pos,
                                         float *sorted_weight, sm_error *err) {
    NEED(n_assign >= 0 && num_experts > 0 && num_experts <= 4096, "moe_permute: bad shape (%d assignments, %d experts)",
         n_assign, num_experts);
    permute_kernel<<<1, 1024, (size_t)2 * num_experts * sizeof(int), stream>>>(expert_ids, weights, n_assign, num_experts,
                                                                             expert_offsets, sorted_src, sorted_pos,
                                                                             sorted_weight);
    return sm_kernel_launched("moe_permute", err);
}

extern "C" sm_status sm_cuda_moe_gather(cudaStream_t stream, const sm_bf16_bits *h, int hidden, const int *sorted_src,
                                        int top_k, sm_bf16_bits *xs, int stride, int n_assign, sm_error *err) {
    NEED(n_assign >= 0 && hidden > 0 && stride >= hidden && top_k > 0, "moe_gather: bad shape (%d, hidden %d, stride %d)",
         n_assign, hidden, stride);
    if (!n_assign) return SM_OK;
    if (hidden % 8 == 0 && stride % 8 == 0 && (uintptr_t)h % 16 == 0 && (uintptr_t)xs % 16 == 0)
        gather_vec_kernel<<<grid_for((long)n_assign * (stride / 8), 256), 256, 0, stream>>>(
            (const uint4 *)h, hidden / 8, sorted_src, top_k, (uint4 *)xs, stride / 8, n_assign);
    else
        gather_kernel<<<grid_for((long)n_assign * stride, 256), 256, 0, stream>>>((cbf)h, hidden, sorted_src, top_k,
                                                                                  (__nv_bfloat16 *)xs, stride, n_assign);
    return sm_kernel_launched("moe_gather", err);
}

extern "C" sm_status sm_cuda_moe_combine(cudaStream_t stream, const sm_bf16_bits *ys, int stride, const int *sorted_pos,
                                         int top_k, float *x, int rows, int hidden, sm_error *err) {
    NEED(rows >= 0 && hidden > 0 && stride >= hidden && top_k > 0, "moe_combine: bad shape (rows %d, hidden %d)", rows,
         hidden);
    if (!rows) return SM_OK;
    combine_kernel<<<grid_for((long)rows * hidden, 256), 256, 0, stream>>>((cbf)ys, stride, sorted_pos, top_k, x, rows,
                                                                           hidden);
    return sm_kernel_launched("moe_combine", err);
}

extern "C" sm_status sm_cuda_row_dot_sigmoid(cudaStream_t stream, const sm_bf16_bits *h, const sm_bf16_bits *w,
                                             float *out, int rows, int dim, sm_error *err) {
    NEED(rows >= 0 && dim > 0, "row_dot_sigmoid: bad shape (rows %d, dim %d)", rows, dim);
    if (!rows) return SM_OK;
    dot_sigmoid_kernel<<<(unsigned)((rows + 3) / 4), 128, 0, stream>>>((cbf)h, (cbf)w, out, rows, dim);
    return sm_kernel_launched("row_dot_sigmoid", err);
}

extern "C" sm_status sm_cuda_argmax(cudaStream_t stream, const float *logits, int rows, int vocab, int *ids,
                                    sm_error *err) {
    NEED(rows >= 0 && vocab > 0, "argmax: bad shape (rows %d, vocab %d)", rows, vocab);
    if (!rows) return SM_OK;
    sm_launch_pdl(argmax_kernel, rows, 1024, 0, stream, logits, vocab, ids);
    return sm_kernel_launched("argmax", err);
}
