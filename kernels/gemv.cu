/* kernels/gemv.cu — see gemv.h. */
#include "gemv.h"

#include <stdint.h>

#include "kernel_common.cuh"

namespace {

constexpr int GEMV_WARPS = 8;
/* 16-byte weight vectors per lane in flight (all columns): 8 KiB a warp. Enough for a warp's
 * whole share of every decode projection of the Qwen3-30B shape (k 2048 at two columns a warp,
 * k 4096 at one), so all of it is requested before the PDL wait and streams while the kernel
 * before still runs (H200, batch 1: 3.324 -> 3.24 ms a step against 8 vectors). */
constexpr int GEMV_VECTORS = 16;

/* The RMSNorm in front of the GEMV (sm_cuda_gemv_norm_xwt): x is then the fp32 residual. */
struct norm_args {
    const float *x;              /* [rows, k] */
    const __nv_bfloat16 *weight; /* [k] */
    float eps;
    __nv_bfloat16 *h_out;        /* [rows, k] the normalised rows, written by block 0; may be NULL */
    int threads;                 /* the block size sm_cuda_rmsnorm_f32 gives a row of k */
};

/* xs[r] = BF16(x[r] / rms(x[r]) * weight), bit for bit what sm_cuda_rmsnorm_f32 (model_ops.cu)
 * writes: its sum of squares is replayed with its thread-to-element map and reduction order —
 * each of its warps' partial sums (a strided loop, then sm_warp_sum) computed by one of ours,
 * the warp totals added in warp order — so the scale and every rounding are the same. The
 * strided loop's loads are issued eight at a time (added in the same order): one at a time,
 * they made the router GEMV's prologue a chain of L2 round trips. On entry xs[0..k) holds the
 * norm weights (copied there before the PDL wait, by the thread that reads each one back here:
 * rows are written last to first, so row 0 overwrites them last). */
constexpr size_t NORM_PARTIAL_BYTES = sizeof(float) * SM_GEMV_MAX_ROWS * 32;
__device__ __forceinline__ void norm_rows(const norm_args &a, int rows, int k, __nv_bfloat16 *xs) {
    __shared__ float partial[SM_GEMV_MAX_ROWS][32];
    static_assert(sizeof partial == NORM_PARTIAL_BYTES, "norm_rows' static shared memory");
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, vwarps = a.threads / 32, warps = blockDim.x >> 5;
    for (int rw = warp; rw < rows * vwarps; rw += warps) {
        const int r = rw / vwarps, vw = rw % vwarps;
        const float *xr = a.x + (size_t)r * k;
        float ss = 0;
        int i = vw * 32 + lane;
        for (; i + 7 * a.threads < k; i += 8 * a.threads) {
            float t[8];
#pragma unroll
            for (int m = 0; m < 8; m++) t[m] = xr[i + m * a.threads];
#pragma unroll
            for (int m = 0; m < 8; m++) ss += t[m] * t[m];
        }
        for (; i < k; i += a.threads) ss += xr[i] * xr[i];
        ss = sm_warp_sum(ss);
        if (lane == 0) partial[r][vw] = ss;
    }
    __syncthreads();
    for (int r = rows - 1; r >= 0; r--) {
        float t = 0;
        for (int v = 0; v < vwarps; v++) t += partial[r][v];
        const float scale = 1.0f / sqrtf(t / (float)k + a.eps);
        const float *xr = a.x + (size_t)r * k;
        for (int i = threadIdx.x; i < k; i += blockDim.x) {
            const __nv_bfloat16 v = __float2bfloat16_rn((xr[i] * scale) * __bfloat162float(xs[i]));
            xs[(size_t)r * k + i] = v;
            if (a.h_out && blockIdx.x == 0) a.h_out[(size_t)r * k + i] = v;
        }
    }
}

/* One row (gemv_mma_kernel takes more): a warp per output column.
 * COLS: output columns per warp. Two on wide projections (q|k|v, lm_head) halve the CTAs at
 * the same bytes in flight per warp, so the grid fits the machine in about one wave.
 * NORM: x is made in shared memory by norm_rows from the fp32 residual (nx) instead of read.
 * Three CTAs an SM for two columns a warp (80 registers, a 44-byte spill; 60 with NORM): q|k|v
 * of Qwen3-30B is 320 CTAs, and at two an SM the 56 past the first 264 could request their
 * weights only after the PDL wait (H200, batch 1: 2.90 -> 2.83 ms a step; with NORM, the step
 * without its MoE blocks, H100: 1.439 -> 1.391 ms). At one row this kernel beat the
 * MMA kernel (H100, batch 1: 3.20 against 3.33 ms a step; the one-row q|k|v 13.9 against 16.1
 * us); from two rows the MMA kernel wins. */
template <bool Y_F32, int COLS, bool NORM>
__global__ void __launch_bounds__(GEMV_WARPS * 32, COLS == 2 ? 3 : 1)
    gemv_row_kernel(const __nv_bfloat16 *__restrict__ x, const __nv_bfloat16 *__restrict__ w, void *y, float beta,
                    int n, int k, norm_args nx) {
    constexpr int GEMV_UNROLL = GEMV_VECTORS / COLS; /* per column and pass */
    extern __shared__ uint4 xs[]; /* [k/8] */
    const int k8 = k / 8, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int col0 = (blockIdx.x * GEMV_WARPS + warp) * COLS;
    const uint4 *wr[COLS];
    bool live[COLS];
#pragma unroll
    for (int j = 0; j < COLS; j++) {
        live[j] = col0 + j < n;
        wr[j] = reinterpret_cast<const uint4 *>(w + (size_t)(live[j] ? col0 + j : 0) * k);
    }
    /* The first weight vectors are requested before waiting for the kernel that writes x:
     * weights never change during a step, so their latency overlaps that kernel's tail. */
    uint4 v[COLS][GEMV_UNROLL];
#pragma unroll
    for (int u = 0; u < GEMV_UNROLL; u++) {
        const int c = u * 32 + lane;
#pragma unroll
        for (int j = 0; j < COLS; j++) v[j][u] = live[j] && c < k8 ? sm_load_stream(wr[j] + c) : make_uint4(0, 0, 0, 0);
    }
    if (NORM) { /* the norm weights too: norm_rows reads them from here */
        __nv_bfloat16 *ws = reinterpret_cast<__nv_bfloat16 *>(xs);
        for (int i = threadIdx.x; i < k; i += blockDim.x) ws[i] = nx.weight[i];
    }
    sm_pdl_trigger();
    sm_pdl_wait();
    /* y += (beta): the lane that writes an output reads its old value now, beside x, instead of
     * after the sums (an L2 round trip at the end of the o projection, on the critical path).
     * One column a warp only: the three-CTA two-column kernel has no registers for it. */
    constexpr bool Y_EARLY = Y_F32 && COLS == 1;
    const float y_old = Y_EARLY && beta != 0.0f && lane == 0 && col0 < n ? static_cast<const float *>(y)[col0] : 0.0f;
    if (NORM) {
        norm_rows(nx, 1, k, reinterpret_cast<__nv_bfloat16 *>(xs));
    } else {
        const uint4 *xg = reinterpret_cast<const uint4 *>(x);
        for (int i = threadIdx.x; i < k8; i += blockDim.x) xs[i] = xg[i];
    }
    __syncthreads();
    if (col0 >= n) return;
    float acc[COLS];
#pragma unroll
    for (int j = 0; j < COLS; j++) acc[j] = 0.0f;
    for (int c0 = 0; c0 < k8; c0 += 32 * GEMV_UNROLL) {
        if (c0 > 0) {
#pragma unroll
            for (int u = 0; u < GEMV_UNROLL; u++) { /* every load first: bytes in flight */
                const int c = c0 + u * 32 + lane;
#pragma unroll
                for (int j = 0; j < COLS; j++) v[j][u] = live[j] && c < k8 ? sm_load_stream(wr[j] + c) : make_uint4(0, 0, 0, 0);
            }
        }
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            const int c = c0 + u * 32 + lane;
            if (c >= k8) break;
            float fw[COLS][8], fx[8];
#pragma unroll
            for (int j = 0; j < COLS; j++) sm_unpack8(v[j][u], fw[j]);
            sm_unpack8(xs[c], fx);
#pragma unroll
            for (int j = 0; j < COLS; j++)
#pragma unroll
                for (int i = 0; i < 8; i++) acc[j] = fmaf(fw[j][i], fx[i], acc[j]);
        }
    }
#pragma unroll
    for (int j = 0; j < COLS; j++) {
        const float s = sm_warp_sum(acc[j]);
        if (lane == j && live[j]) {
            if (Y_F32) {
                float *yf = static_cast<float *>(y);
                yf[col0 + j] = beta != 0.0f ? s + beta * (Y_EARLY ? y_old : yf[col0 + j]) : s;
            } else {
                static_cast<__nv_bfloat16 *>(y)[col0 + j] = __float2bfloat16_rn(s);
            }
        }
    }
}

/* 2..8 rows on tensor cores. A warp per column (the kernel above) served up to 8 rows before:
 * per 16 bytes of weights it spent a shared-memory read of x and 8 FMAs for every row, ~200
 * instructions at 8 rows, so a one-wave projection (q|k|v: 320 CTAs) computed about as long as
 * it streamed (Nsight Compute, H100, 8 rows: q|k|v 22.5 us, here 12.6). Here a CTA owns 16
 * output columns and its WARPS warps split k; a lane loads 16 bytes of weight rows g and g+8 and
 * of x row g (x rows past `rows` are zeros) and two mma.m16n8k16 multiply 16 columns by 8 rows,
 * with the k-permutation of moe_decode_mma.cu (a lane's 8 consecutive k feed both MMAs, the same
 * for both operands). The warps' partial sums are added in shared memory in warp order. x comes
 * from global memory (L2), so it needs no shared memory: the 8-row o projection (k 4096) no
 * longer falls to cuBLASLt's split-K + reduce (9.7 + 3.6 us, here 9.8). H100, Qwen3 shape, 48
 * layers, graphs: batch 2 / 4 / 8 4.78 / 7.70 / 12.49 -> 4.56 / 6.95 / 11.12 ms a step (with
 * the multi-row fused attention of attention.h).
 * WARPS is 16 past k 2048, so that a whole row of k 4096 (the o projection) is requested before
 * the PDL wait, as the one-row kernel does: with 8 warps the second half came after the wait
 * (H100, Qwen3 shape, 4 rows without MoE: 2.23 -> 2.33 ms a step against the old kernel). */
constexpr int MMA_COLS = 16, MMA_ROWS = 8;
constexpr int MMA_MIN_ROWS = 2; /* H100, batch 2: 4.79 -> 4.56 ms a step against the one-row kernel with two rows */
constexpr int MMA_STEPS = GEMV_VECTORS / 2; /* 32-wide k-steps a warp has in flight (2 vectors each) */

__device__ __forceinline__ void mma_step(float c[4], const uint4 &lo, const uint4 &hi, const uint4 &x) {
    sm_mma_16816(c, lo.x, hi.x, lo.y, hi.y, x.x, x.y);
    sm_mma_16816(c, lo.z, hi.z, lo.w, hi.w, x.z, x.w);
}

/* Dynamic shared memory of the MMA kernel: the warps' sums, and with NORM first the normalised
 * rows of x (whose room the sums then reuse). */
constexpr size_t mma_smem_bytes(int rows, int k, int warps, bool norm) {
    const size_t x_bytes = norm ? (size_t)rows * k * 2 : 0, sums = sizeof(float) * warps * MMA_ROWS * MMA_COLS;
    return x_bytes > sums ? x_bytes : sums;
}

template <int WARPS, bool Y_F32, bool NORM>
__global__ void __launch_bounds__(WARPS * 32, WARPS == 8 ? 2 : 1)
    gemv_mma_kernel(const __nv_bfloat16 *__restrict__ x, const __nv_bfloat16 *__restrict__ w, void *y, float beta,
                    int rows, int n, int k, norm_args nx) {
    extern __shared__ uint4 xs[]; /* NORM: [rows][k/8]; then red[WARPS][MMA_ROWS][MMA_COLS] */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int n0 = blockIdx.x * MMA_COLS, k8 = k / 8, steps = (k + 31) / 32;
    const bool lo_ok = n0 + g < n, hi_ok = n0 + 8 + g < n;
    const uint4 *wlo = reinterpret_cast<const uint4 *>(w + (size_t)(lo_ok ? n0 + g : 0) * k);
    const uint4 *whi = reinterpret_cast<const uint4 *>(w + (size_t)(hi_ok ? n0 + 8 + g : 0) * k);
    const uint4 zero = make_uint4(0, 0, 0, 0);
    /* warp w streams the k-steps [(pass * WARPS + w) * MMA_STEPS, + MMA_STEPS): 512
     * contiguous bytes of each of its 16 weight rows per pass */
    uint4 lo[MMA_STEPS], hi[MMA_STEPS];
    auto load_pass = [&](int s0) {
#pragma unroll
        for (int u = 0; u < MMA_STEPS; u++) {
            const int c = (s0 + u) * 4 + t;
            lo[u] = lo_ok && c < k8 ? sm_load_stream(wlo + c) : zero;
            hi[u] = hi_ok && c < k8 ? sm_load_stream(whi + c) : zero;
        }
    };
    const int first = warp * MMA_STEPS, stride = WARPS * MMA_STEPS;
    load_pass(first); /* weights before the PDL wait, as in gemv_row_kernel */
    if (NORM) {
        __nv_bfloat16 *ws = reinterpret_cast<__nv_bfloat16 *>(xs);
        for (int i = threadIdx.x; i < k; i += blockDim.x) ws[i] = nx.weight[i];
    }
    sm_pdl_trigger();
    sm_pdl_wait();
    /* thread i < rows * MMA_COLS writes output (row i / 16, column n0 + i % 16); with beta it
     * reads the old value now, beside x, not after the sums */
    const int out_r = threadIdx.x / MMA_COLS, out_c = n0 + threadIdx.x % MMA_COLS;
    const bool writes = out_r < rows && out_c < n;
    const float y_old = Y_F32 && beta != 0.0f && writes ? static_cast<const float *>(y)[(size_t)out_r * n + out_c] : 0.0f;
    /* x: NORM makes it in shared memory; otherwise each lane reads its 16 bytes a step from
     * global memory (L2), so x needs no room here and no barrier (every CTA reads all of x once
     * either way) */
    if (NORM) {
        norm_rows(nx, rows, k, reinterpret_cast<__nv_bfloat16 *>(xs));
        __syncthreads();
    }
    const uint4 *xrow = (NORM ? xs : reinterpret_cast<const uint4 *>(x)) + (size_t)(g < rows ? g : 0) * k8;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int s0 = first; s0 < steps; s0 += stride) {
        if (s0 != first) load_pass(s0);
        uint4 xv[MMA_STEPS];
#pragma unroll
        for (int u = 0; u < MMA_STEPS; u++) { /* the pass's x loads first: one L2 latency, not eight */
            const int c = (s0 + u) * 4 + t;
            xv[u] = g < rows && c < k8 ? (NORM ? xrow[c] : __ldg(xrow + c)) : zero;
        }
#pragma unroll
        for (int u = 0; u < MMA_STEPS; u++) {
            if ((s0 + u) * 4 >= k8) break; /* warp-uniform: past the last step */
            mma_step(acc, lo[u], hi[u], xv[u]);
        }
    }
    if (NORM) __syncthreads(); /* every warp is done with x: its room takes the partial sums */
    float(*red)[MMA_ROWS][MMA_COLS] = reinterpret_cast<float(*)[MMA_ROWS][MMA_COLS]>(xs);
    red[warp][2 * t][g] = acc[0];
    red[warp][2 * t + 1][g] = acc[1];
    red[warp][2 * t][g + 8] = acc[2];
    red[warp][2 * t + 1][g + 8] = acc[3];
    __syncthreads();
    if (!writes) return;
    float s = 0.0f;
#pragma unroll
    for (int v = 0; v < WARPS; v++) s += red[v][out_r][threadIdx.x % MMA_COLS];
    const size_t o = (size_t)out_r * n + out_c;
    if (Y_F32) static_cast<float *>(y)[o] = beta != 0.0f ? s + beta * y_old : s;
    else static_cast<__nv_bfloat16 *>(y)[o] = __float2bfloat16_rn(s);
}

template <int WARPS, bool NORM>
void launch_mma(cudaStream_t stream, const sm_bf16_bits *x, const sm_bf16_bits *w, void *y, bool y_f32, float beta,
                int rows, int n, int k, const norm_args &nx) {
    const dim3 grid((unsigned)((n + MMA_COLS - 1) / MMA_COLS)), block(WARPS * 32);
    const size_t smem = mma_smem_bytes(rows, k, WARPS, NORM);
    const __nv_bfloat16 *xb = reinterpret_cast<const __nv_bfloat16 *>(x), *wb = reinterpret_cast<const __nv_bfloat16 *>(w);
    if (y_f32) sm_launch_pdl(gemv_mma_kernel<WARPS, true, NORM>, grid, block, smem, stream, xb, wb, y, beta, rows, n, k, nx);
    else sm_launch_pdl(gemv_mma_kernel<WARPS, false, NORM>, grid, block, smem, stream, xb, wb, y, beta, rows, n, k, nx);
}

template <int COLS, bool NORM>
void launch_row(cudaStream_t stream, const sm_bf16_bits *x, const sm_bf16_bits *w, void *y, bool y_f32, float beta, int n,
                int k, const norm_args &nx) {
    const dim3 grid((unsigned)((n + GEMV_WARPS * COLS - 1) / (GEMV_WARPS * COLS))), block(GEMV_WARPS * 32);
    const size_t smem = (size_t)k * 2;
    const __nv_bfloat16 *xb = reinterpret_cast<const __nv_bfloat16 *>(x), *wb = reinterpret_cast<const __nv_bfloat16 *>(w);
    if (y_f32) sm_launch_pdl(gemv_row_kernel<true, COLS, NORM>, grid, block, smem, stream, xb, wb, y, beta, n, k, nx);
    else sm_launch_pdl(gemv_row_kernel<false, COLS, NORM>, grid, block, smem, stream, xb, wb, y, beta, n, k, nx);
}

/* One row: two columns a warp from 4096 columns up (q|k|v of Qwen3-30B is 5120, lm_head 151936).
 * More rows: the MMA kernel, 16 warps past k 2048. */
template <bool NORM>
void launch_rows(cudaStream_t stream, const sm_bf16_bits *x, const sm_bf16_bits *w, void *y, bool y_f32, float beta,
                 int rows, int n, int k, const norm_args &nx) {
    if (rows >= MMA_MIN_ROWS && k > 8 * MMA_STEPS * 32) launch_mma<16, NORM>(stream, x, w, y, y_f32, beta, rows, n, k, nx);
    else if (rows >= MMA_MIN_ROWS) launch_mma<8, NORM>(stream, x, w, y, y_f32, beta, rows, n, k, nx);
    else if (n >= 4096) launch_row<2, NORM>(stream, x, w, y, y_f32, beta, n, k, nx);
    else launch_row<1, NORM>(stream, x, w, y, y_f32, beta, n, k, nx);
}

/* x in shared memory (one row, and the norm-fused GEMV): the default 48 KiB per block covers
 * rows * k up to 24576 values. The MMA kernel reads x from global memory otherwise. */
constexpr size_t GEMV_SMEM_MAX = 48 * 1024;

} // namespace

static bool shape_fits(int rows, int n, int k) {
    return rows >= 1 && rows <= SM_GEMV_MAX_ROWS && n >= 1 && k >= 8 && k % 8 == 0 &&
           (rows >= MMA_MIN_ROWS || (size_t)rows * k * 2 <= GEMV_SMEM_MAX);
}

extern "C" bool sm_cuda_gemv_fits(int rows, int n, int k, const void *x, const void *w) {
    return shape_fits(rows, n, k) && ((uintptr_t)x & 15) == 0 && ((uintptr_t)w & 15) == 0;
}

/* norm_rows' static partial sums share the 48 KiB with the rows */
extern "C" bool sm_cuda_gemv_norm_fits(int rows, int n, int k, const void *w) {
    return shape_fits(rows, n, k) && (size_t)rows * k * 2 + NORM_PARTIAL_BYTES <= GEMV_SMEM_MAX &&
           ((uintptr_t)w & 15) == 0;
}

static sm_status check(const void *w, void *y, bool y_f32, float beta, int rows, int n, int k, bool fits, sm_error *err) {
    NEED(fits, "gemv: shape rows %d n %d k %d not supported (rows 1..%d, k %% 8 == 0, 16-byte aligned operands; one row "
         "or the norm fused: rows*k*2 <= %zu)", rows, n, k, SM_GEMV_MAX_ROWS, GEMV_SMEM_MAX);
    NEED(w && y, "gemv: NULL pointer (w %p, y %p)", w, y);
    NEED(beta == 0.0f || y_f32, "gemv: beta %g needs an fp32 y", (double)beta);
    return SM_OK;
}

extern "C" sm_status sm_cuda_gemv_xwt(cudaStream_t stream, const sm_bf16_bits *x, const sm_bf16_bits *w, void *y,
                                      bool y_f32, float beta, int rows, int n, int k, sm_error *err) {
    NEED(x, "gemv: NULL x");
    SM_TRY(check(w, y, y_f32, beta, rows, n, k, sm_cuda_gemv_fits(rows, n, k, x, w), err));
    launch_rows<false>(stream, x, w, y, y_f32, beta, rows, n, k, norm_args{});
    return sm_kernel_launched("gemv", err);
}

extern "C" sm_status sm_cuda_gemv_norm_xwt(cudaStream_t stream, const float *x, const sm_bf16_bits *norm_weight,
                                           float eps, sm_bf16_bits *h_out, const sm_bf16_bits *w, void *y, bool y_f32,
                                           float beta, int rows, int n, int k, sm_error *err) {
    NEED(x && norm_weight, "gemv_norm: NULL x or norm weight");
    SM_TRY(check(w, y, y_f32, beta, rows, n, k, sm_cuda_gemv_norm_fits(rows, n, k, w), err));
    const norm_args nx = {x, reinterpret_cast<const __nv_bfloat16 *>(norm_weight), eps,
                          reinterpret_cast<__nv_bfloat16 *>(h_out), sm_rms_threads(k)};
    launch_rows<true>(stream, NULL, w, y, y_f32, beta, rows, n, k, nx);
    return sm_kernel_launched("gemv_norm", err);
}
