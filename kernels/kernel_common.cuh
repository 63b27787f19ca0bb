/* kernels/kernel_common.cuh — device helpers shared by the .cu files (internal, not a C API). */
#ifndef SM_KERNEL_COMMON_CUH
#define SM_KERNEL_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernel_api.h"

/* After a launch: turn a launch error into an sm_status naming the kernel. The launch itself
 * is asynchronous; errors during execution surface at the caller's next synchronisation. */
static inline sm_status sm_kernel_launched(const char *kernel, sm_error *err) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return sm_fail(err, SM_ECUDA, "%s: launch failed: %s (%s)", kernel, cudaGetErrorString(e), cudaGetErrorName(e));
    return SM_OK;
}

/* In a launcher: return SM_EINVAL with the message when an argument check fails (the message
 * names the launcher and the bad values). */
#define NEED(cond, ...)                                                     \
    do {                                                                    \
        if (!(cond)) return sm_fail(err, SM_EINVAL, __VA_ARGS__);           \
    } while (0)

typedef const __nv_bfloat16 *cbf; /* BF16 bits from a C header, as the kernels read them */

/* Eight BF16 values packed in 16 bytes (one vector load) unpacked to fp32: a BF16 is the top
 * half of the fp32 with the same value, so the conversion is a shift or a mask. */
__device__ __forceinline__ void sm_unpack8(const uint4 v, float f[8]) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(w[i] << 16);
        f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

__device__ __forceinline__ uint32_t sm_pack2_bf16(float lo, float hi) {
    __nv_bfloat162 p = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&p);
}

__device__ __forceinline__ uint4 sm_pack8(const float f[8]) {
    return make_uint4(sm_pack2_bf16(f[0], f[1]), sm_pack2_bf16(f[2], f[3]), sm_pack2_bf16(f[4], f[5]),
                      sm_pack2_bf16(f[6], f[7]));
}

/* A hint: the 128-byte line holding p is fetched into L2 (not L1, so no stale copy can follow). */
__device__ __forceinline__ void sm_prefetch_l2(const void *p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

/* Weights are read exactly once per step: stream them past L1 so activations stay cached. */

__device__ __forceinline__ uint4 sm_load_stream(const uint4 *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

__device__ __forceinline__ float sm_warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* N partial sums per lane (N a power of two up to 32) each summed over the warp at once: at
 * every butterfly level a lane keeps half of its values and trades the other half with its
 * partner, so 32 sums take 31 shuffles instead of 5 each. Returns, in lane L, the total of item
 * L / (32 / N) (for N = 32 lane L holds item L). v is overwritten. */
template <int N>
__device__ __forceinline__ float sm_warp_multi_sum(float (&v)[N]) {
    static_assert(N >= 1 && N <= 32 && (N & (N - 1)) == 0, "N: a power of two up to 32");
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int level = 0; level < 5; level++) {
        const int o = 16 >> level, half = N >> (level + 1); /* values kept after this level */
        if (half >= 1) {
            const bool upper = lane & o;
#pragma unroll
            for (int i = 0; i < half; i++) {
                const float send = upper ? v[i] : v[i + half], keep = upper ? v[i + half] : v[i];
                v[i] = keep + __shfl_xor_sync(0xffffffffu, send, o);
            }
        } else {
            v[0] += __shfl_xor_sync(0xffffffffu, v[0], o);
        }
    }
    return v[0];
}

/* Threads of an fp32 RMSNorm row (sm_cuda_rmsnorm_f32, and the norms fused into the MoE combine
 * and the router GEMV, which must match it bit for bit): they fix the order of the sum of squares.
 * 256 at most, so a prompt's 4096 rows keep eight rows in flight an SM (1024 threads a row took
 * the combine + norm of a Qwen3-30B layer to 185 us at 4096 rows on an H200). */
inline int sm_rms_threads(int dim) { return dim >= 256 ? 256 : (dim + 31) / 32 * 32; }

/* The sum of v over the block: warp sums, then the warp totals added in warp order by every
 * thread (so every thread gets the same value, and callers that must match each other bit for
 * bit — rmsnorm and the norms fused into other kernels — share this one order). shared32: 32
 * floats of shared scratch, reusable right after the call. */
__device__ __forceinline__ float sm_block_sum(float v, float *shared32) {
    v = sm_warp_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads(); /* shared32 may still be read from a previous call */
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    float t = 0;
    for (int w = 0; w < warps; w++) t += shared32[w];
    return t;
}

/* RoPE's inverse frequency of pair i, as the CPU twin computes it (from theta in double). */
__device__ __forceinline__ float sm_rope_inv_freq(int i, int hd, float theta) {
    return (float)(1.0 / pow((double)theta, (double)(2 * i) / (double)hd));
}

/* cos_sin[i], cos_sin[hd/2 + i]: the cosine and sine of RoPE angle i at position p, as
 * sm_warp_head_norm_rope computes them; the block's threads share the hd/2 angles (the caller
 * synchronises before reading them). */
__device__ __forceinline__ void sm_rope_cos_sin(float *cos_sin, int hd, int p, float theta) {
    const int half = hd / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const float angle = (float)p * sm_rope_inv_freq(i, hd, theta);
        cos_sin[i] = cosf(angle);
        cos_sin[half + i] = sinf(angle);
    }
}

/* One warp, one attention head of hd (even, <= 256) fp32 values at src: RMS-normalised and
 * scaled by w (head_rmsnorm_kernel's arithmetic; w NULL: no norm), then rotated by RoPE at
 * position p (rope_kernel's: rotate-half, inv_freq from theta in double), into dst (fp32; may be
 * src) and, when kdst != NULL, rounded to BF16 into kdst (the K cache slot). buf: hd floats of
 * shared scratch for this warp — RoPE pairs element i with i + hd/2, which another lane holds.
 * inv_freq_table: sm_rope_inv_freq(i, hd, theta) for i < hd/2, precomputed (NULL: computed here;
 * the double-precision pow per element was half of qk_norm_rope_kv's time on long prompts);
 * cos_sin: cos then sin of every angle at position p, precomputed by sm_rope_cos_sin (NULL: both
 * computed here). Shared by qk_norm_rope_kv and the fused decode attention, so the two stay
 * bit-identical. */
__device__ __forceinline__ void sm_warp_head_norm_rope(const float *src, float *dst, const __nv_bfloat16 *w, float eps,
                                                       int hd, int p, float theta, float *buf, __nv_bfloat16 *kdst,
                                                       const float *inv_freq_table = nullptr,
                                                       const float *cos_sin = nullptr) {
    const int lane = threadIdx.x & 31;
    if (w) {
        float ss = 0;
        for (int i = lane; i < hd; i += 32) {
            const float t = src[i];
            buf[i] = t;
            ss += t * t;
        }
        ss = sm_warp_sum(ss);
        const float scale = 1.0f / sqrtf(ss / (float)hd + eps);
        for (int i = lane; i < hd; i += 32) buf[i] = (buf[i] * scale) * __bfloat162float(w[i]);
    } else {
        for (int i = lane; i < hd; i += 32) buf[i] = src[i];
    }
    __syncwarp();
    const int half = hd / 2;
    for (int i = lane; i < half; i += 32) {
        float c, s;
        if (cos_sin) {
            c = cos_sin[i];
            s = cos_sin[half + i];
        } else {
            const float angle = (float)p * (inv_freq_table ? inv_freq_table[i] : sm_rope_inv_freq(i, hd, theta));
            c = cosf(angle);
            s = sinf(angle);
        }
        const float a = buf[i], bb = buf[i + half];
        const float lo = a * c - bb * s, hi = bb * c + a * s;
        dst[i] = lo;
        dst[i + half] = hi;
        if (kdst) {
            kdst[i] = __float2bfloat16_rn(lo);
            kdst[i + half] = __float2bfloat16_rn(hi);
        }
    }
}

__device__ __forceinline__ float sm_silu(float g) { return g / (1.0f + __expf(-g)); }

/* D += A·B for one m16n8k16 tile, bf16 inputs, fp32 accumulators (PTX ISA fragment layouts:
 * a = {(g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)}, b = {(2t.., g), (2t+8.., g)},
 * c = {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)} with g = lane/4, t = lane%4). */
__device__ __forceinline__ void sm_mma_16816(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* Four 8x8 b16 matrices from shared memory, lanes 8i..8i+7 giving the row addresses of matrix i;
 * TRANS: each delivered transposed (a thread gets two rows of one column). */
template <bool TRANS = false>
__device__ __forceinline__ void sm_ldmatrix_x4(uint32_t r[4], const void *smem) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(s)
                     : "memory");
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(s)
                     : "memory");
}

/* 16 bytes global -> shared, bypassing L1; src_bytes 0 writes zeros (predicated-off rows). */
__device__ __forceinline__ void sm_cp_async16(void *smem, const void *gmem, int src_bytes) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void sm_cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void sm_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

#ifdef SPECMOE_PDL_TRACE
/* The timeline of pdl_trace.h: one record per block and hook, from thread 0. */
struct sm_pdl_trace_rec {
    unsigned long long grid, t_before, t_after;
    unsigned block, grid_blocks, sm, kind;
};
void sm_pdl_trace_register(cudaError_t (*set)(void *)); /* pdl_trace.cu */
namespace {
__device__ unsigned long long *sm_pdl_trace_buf; /* this .cu file's copy: [0] count, [1] capacity, records */
struct sm_pdl_trace_unit {
    static cudaError_t set(void *p) { return cudaMemcpyToSymbol(sm_pdl_trace_buf, &p, sizeof p); }
    sm_pdl_trace_unit() { sm_pdl_trace_register(set); }
} sm_pdl_trace_unit_here;
} // namespace
__device__ __forceinline__ unsigned long long sm_global_timer() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
__device__ __forceinline__ void sm_pdl_trace_note(unsigned kind, unsigned long long t_before, unsigned long long t_after) {
    unsigned long long *h = sm_pdl_trace_buf;
    if (!h || threadIdx.x + threadIdx.y + threadIdx.z != 0) return;
    const unsigned long long i = atomicAdd(h, 1ull);
    if (i >= h[1]) return;
    unsigned long long grid;
    unsigned sm;
    asm volatile("mov.u64 %0, %%gridid;" : "=l"(grid));
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    sm_pdl_trace_rec *r = reinterpret_cast<sm_pdl_trace_rec *>(h + 2) + i;
    *r = {grid, t_before, t_after, blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z),
          gridDim.x * gridDim.y * gridDim.z, sm, kind};
}
#endif

/* Programmatic dependent launch (Hopper). A decode step is a chain of short kernels, each
 * paying a launch and a ramp-up; launched with sm_launch_pdl, a kernel may be scheduled while
 * the one before it is still finishing. Contract of such a kernel: before sm_pdl_wait() it only
 * reads data no kernel of the step writes (weights; one exception, argued where it is made: the
 * MoE down projection after a decode or decode-mma gate_up reads the expert offsets,
 * moe_grouped.cu and moe_decode_mma.cu) and writes nothing; sm_pdl_wait() returns
 * once every earlier kernel of the stream has completed and its writes are visible.
 * sm_pdl_trigger() lets the next kernel be scheduled early. Both are no-ops for a kernel
 * launched without the attribute (<<<>>>), so the same kernel serves both launches. In a
 * SPECMOE_PDL_TRACE build both also record the time (pdl_trace.h). */
__device__ __forceinline__ void sm_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#ifdef SPECMOE_PDL_TRACE
    const unsigned long long t = sm_global_timer();
    asm volatile("griddepcontrol.wait;" ::: "memory");
    sm_pdl_trace_note(1, t, sm_global_timer());
#else
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
#endif
}

__device__ __forceinline__ void sm_pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#ifdef SPECMOE_PDL_TRACE
    const unsigned long long t = sm_global_timer();
    sm_pdl_trace_note(0, t, t);
#endif
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* kernel<<<grid, block, smem, stream>>>(args...) with the programmatic-serialisation attribute;
 * the launch error is left for sm_kernel_launched like a <<<>>> launch. */
template <typename... Params, typename... Args>
static inline void sm_launch_pdl(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                                 Args... args) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    cudaLaunchKernelEx(&cfg, kernel, static_cast<Params>(args)...);
}

#endif
