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

/* The MoE layer's outputs still to be added to the residual (sm_gemv_moe_add); ys NULL: none. */
struct moe_add_args {
    const __nv_bfloat16 *ys; /* [slots, stride] */
    int stride, top_k;
    const int *pos;          /* [rows * top_k] */
};

/* The RMSNorm in front of the GEMV (sm_cuda_gemv_norm_xwt): x is then the fp32 residual. */
struct norm_args {
    const float *x;              /* [rows, k] */
    const __nv_bfloat16 *weight; /* [k] */
    float eps;
    __nv_bfloat16 *h_out;        /* [rows, k] the normalised rows, written by block 0; may be NULL */
    int threads;                 /* the block size sm_cuda_rmsnorm_f32 gives a row of k */
    moe_add_args add;            /* normalise x + these instead of x */
};

/* The sum over a row's slots at column c, in slot order from 0 (what sm_cuda_moe_combine adds). */
__device__ __forceinline__ float moe_slot_sum(const moe_add_args &m, const int *slot, int c) {
    float s = 0.0f;
#pragma unroll 8 /* the loads issued together; the sum keeps slot order */
    for (int j = 0; j < m.top_k; j++) s += __bfloat162float(m.ys[(size_t)slot[j] * m.stride + c]);
    return s;
}

/* xc[r] = x[r] + the slots of row r, into shared fp32 rows that norm_rows then reads in place of
 * x. The slot rows are staged in shared memory by cp.async, all in one round trip after the
 * positions: the registers are taken by the weight vectors requested before the PDL wait. */
__device__ __forceinline__ void moe_add_rows(const norm_args &a, int rows, int k, float *xc, __nv_bfloat16 *stage) {
    __shared__ int slot[SM_GEMV_MAX_ROWS * SM_GEMV_MAX_TOP_K];
    const moe_add_args &m = a.add;
    const int n_slots = rows * m.top_k, k8 = k / 8;
    for (int i = threadIdx.x; i < rows * k / 4; i += blockDim.x) sm_cp_async16(xc + 4 * i, a.x + 4 * i, 16);
    for (int i = threadIdx.x; i < n_slots; i += blockDim.x) slot[i] = m.pos[i];
    __syncthreads();
    for (int i = threadIdx.x; i < n_slots * k8; i += blockDim.x) {
        const int s = i / k8, c = i % k8;
        sm_cp_async16(stage + (size_t)s * k + 8 * c, m.ys + (size_t)slot[s] * m.stride + 8 * c, 16);
    }
    sm_cp_async_commit();
    sm_cp_async_wait<0>();
    __syncthreads();
    for (int i = threadIdx.x; i < rows * k; i += blockDim.x) {
        const int r = i / k, c = i % k;
        const __nv_bfloat16 *row_slots = stage + (size_t)r * m.top_k * k + c;
        float s = 0.0f;
        for (int j = 0; j < m.top_k; j++) s += __bfloat162float(row_slots[(size_t)j * k]);
        xc[i] += s;
    }
    __syncthreads();
}

/* xs[r] = BF16(x[r] / rms(x[r]) * weight), bit for bit what sm_cuda_rmsnorm_f32 (model_ops.cu)
 * writes: its sum of squares is replayed with its thread-to-element map and reduction order —
 * each of its warps' partial sums (a strided loop, then sm_warp_sum) computed by one of ours,
 * the warp totals added in warp order — so the scale and every rounding are the same. The
 * strided loop's loads are issued eight at a time (added in the same order): one at a time,
 * they made the router GEMV's prologue a chain of L2 round trips. On entry xs[0..k) holds the
 * norm weights (copied there before the PDL wait, by the thread that reads each one back here:
 * rows are written last to first, so row 0 overwrites them last). */
__device__ __forceinline__ void norm_rows(const norm_args &a, int rows, int k, __nv_bfloat16 *xs) {
    __shared__ float partial[SM_GEMV_MAX_ROWS][32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, vwarps = a.threads / 32;
    for (int rw = warp; rw < rows * vwarps; rw += GEMV_WARPS) {
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

/* T: rows rounded up to a power of two (registers per accumulator set); rows <= T.
 * COLS: output columns per warp. Two on wide projections (q|k|v, lm_head) halve the CTAs at
 * the same bytes in flight per warp, so the grid fits the machine in about one wave.
 * NORM: x is made in shared memory by norm_rows from the fp32 residual (nx) instead of read.
 * Three CTAs an SM for two columns a warp at one or two rows (80 registers, a 16-byte spill):
 * q|k|v of Qwen3-30B is 320 CTAs, and at two an SM the 56 past the first 264 could request
 * their weights only after the PDL wait (H200, batch 1: 2.90 -> 2.83 ms a step). */
template <int T, bool Y_F32, int COLS, bool NORM>
__global__ void __launch_bounds__(GEMV_WARPS * 32, COLS == 2 && T <= 2 && !NORM ? 3 : 1)
    gemv_kernel(const __nv_bfloat16 *__restrict__ x, const __nv_bfloat16 *__restrict__ w, void *y, float beta, int rows,
                int n, int k, norm_args nx, moe_add_args yadd) {
    constexpr int GEMV_UNROLL = GEMV_VECTORS / COLS; /* per column and pass */
    extern __shared__ uint4 xs[]; /* [rows][k/8] */
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
    float y_old[T];
#pragma unroll
    for (int t = 0; t < T; t++) {
        const bool mine = Y_EARLY && beta != 0.0f && t < rows && lane == 0 && col0 < n;
        y_old[t] = mine ? static_cast<const float *>(y)[(size_t)t * n + col0] : 0.0f;
        if (mine && yadd.ys) y_old[t] += moe_slot_sum(yadd, yadd.pos + t * yadd.top_k, col0);
    }
    if (NORM) {
        __nv_bfloat16 *xb = reinterpret_cast<__nv_bfloat16 *>(xs);
        if (nx.add.ys) {
            float *xc = reinterpret_cast<float *>(xb + (size_t)rows * k);
            moe_add_rows(nx, rows, k, xc, reinterpret_cast<__nv_bfloat16 *>(xc + (size_t)rows * k));
            norm_args with_add = nx;
            with_add.x = xc;
            norm_rows(with_add, rows, k, xb);
        } else {
            norm_rows(nx, rows, k, xb);
        }
    } else {
        const uint4 *xg = reinterpret_cast<const uint4 *>(x);
        for (int i = threadIdx.x; i < rows * k8; i += blockDim.x) xs[i] = xg[i];
    }
    __syncthreads();
    if (col0 >= n) return;
    float acc[COLS][T];
#pragma unroll
    for (int j = 0; j < COLS; j++)
#pragma unroll
        for (int t = 0; t < T; t++) acc[j][t] = 0.0f;
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
            float fw[COLS][8];
#pragma unroll
            for (int j = 0; j < COLS; j++) sm_unpack8(v[j][u], fw[j]);
#pragma unroll
            for (int t = 0; t < T; t++) {
                if (t < rows) {
                    float fx[8];
                    sm_unpack8(xs[t * k8 + c], fx);
#pragma unroll
                    for (int j = 0; j < COLS; j++)
#pragma unroll
                        for (int i = 0; i < 8; i++) acc[j][t] = fmaf(fw[j][i], fx[i], acc[j][t]);
                }
            }
        }
    }
#pragma unroll
    for (int t = 0; t < T; t++) {
        if (t < rows) { /* rows is uniform, so every lane takes part in the shuffles */
#pragma unroll
            for (int j = 0; j < COLS; j++) {
                const float s = sm_warp_sum(acc[j][t]);
                if (lane == j && live[j]) {
                    const size_t o = (size_t)t * n + col0 + j;
                    if (Y_F32) {
                        float *yf = static_cast<float *>(y);
                        yf[o] = beta != 0.0f ? s + beta * (Y_EARLY ? y_old[t] : yf[o]) : s;
                    } else {
                        static_cast<__nv_bfloat16 *>(y)[o] = __float2bfloat16_rn(s);
                    }
                }
            }
        }
    }
}

/* One GEMV as its public entry point received it. */
struct gemv_call {
    const sm_bf16_bits *x, *w;
    void *y;
    bool y_f32;
    float beta;
    int rows, n, k;
    norm_args nx;       /* NORM: the norm (and what to add first) */
    moe_add_args yadd;  /* y += this too (one column a warp) */
};

/* Shared memory: the rows of x as BF16, then for a norm with an add the fp32 rows and the slot
 * rows (moe_add_rows). */
size_t smem_bytes(int rows, int k, int add_top_k) {
    const size_t row = (size_t)rows * k;
    return row * 2 + (add_top_k ? row * 4 + row * add_top_k * 2 : 0);
}

template <int T, int COLS, bool NORM>
void launch_cols(cudaStream_t stream, const gemv_call &c) {
    const dim3 grid((unsigned)((c.n + GEMV_WARPS * COLS - 1) / (GEMV_WARPS * COLS))), block(GEMV_WARPS * 32);
    const size_t smem = smem_bytes(c.rows, c.k, NORM && c.nx.add.ys ? c.nx.add.top_k : 0);
    const __nv_bfloat16 *xb = reinterpret_cast<const __nv_bfloat16 *>(c.x), *wb = reinterpret_cast<const __nv_bfloat16 *>(c.w);
    auto kernel = c.y_f32 ? gemv_kernel<T, true, COLS, NORM> : gemv_kernel<T, false, COLS, NORM>;
    /* past the default 48 KiB only with a MoE add; a refusal stays the last error, which the
     * caller's sm_kernel_launched reports */
    if (smem > 48 * 1024) (void)cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    sm_launch_pdl(kernel, grid, block, smem, stream, xb, wb, c.y, c.beta, c.rows, c.n, c.k, c.nx, c.yadd);
}

/* Two columns a warp from 4096 columns up (q|k|v of Qwen3-30B is 5120, lm_head 151936). */
constexpr int GEMV_TWO_COLS_FROM = 4096;

template <int T, bool NORM>
void launch(cudaStream_t stream, const gemv_call &c) {
    if (c.n >= GEMV_TWO_COLS_FROM) launch_cols<T, 2, NORM>(stream, c);
    else launch_cols<T, 1, NORM>(stream, c);
}

template <bool NORM>
void launch_rows(cudaStream_t stream, const gemv_call &c) {
    if (c.rows == 1) launch<1, NORM>(stream, c);
    else if (c.rows == 2) launch<2, NORM>(stream, c);
    else if (c.rows <= 4) launch<4, NORM>(stream, c);
    else launch<8, NORM>(stream, c);
}

/* Rows of x in shared memory: the default 48 KiB per block covers rows * k up to 24576 values
 * (8 rows of k 3072, 4 rows of k 6144), which is every decode shape this serves. A MoE add
 * before the norm also stages the slot rows: 44 KiB for one row of k 2048 at top-k 8 (Qwen3-30B,
 * batch 1), 88 KiB for two (two CTAs an SM, as the norm GEMV's registers allow anyway). */
constexpr size_t GEMV_SMEM_MAX = 48 * 1024, GEMV_SMEM_ADD_MAX = 100 * 1024;

moe_add_args add_args(const sm_gemv_moe_add *a) {
    if (!a) return moe_add_args{};
    return moe_add_args{reinterpret_cast<const __nv_bfloat16 *>(a->ys), a->stride, a->top_k, a->sorted_pos};
}

} // namespace

static bool shape_fits(int rows, int n, int k) {
    return rows >= 1 && rows <= SM_GEMV_MAX_ROWS && n >= 1 && k >= 8 && k % 8 == 0 && smem_bytes(rows, k, 0) <= GEMV_SMEM_MAX;
}

extern "C" bool sm_cuda_gemv_fits(int rows, int n, int k, const void *x, const void *w) {
    return shape_fits(rows, n, k) && ((uintptr_t)x & 15) == 0 && ((uintptr_t)w & 15) == 0;
}

extern "C" bool sm_cuda_gemv_norm_fits(int rows, int n, int k, const void *w) {
    return shape_fits(rows, n, k) && ((uintptr_t)w & 15) == 0;
}

extern "C" bool sm_cuda_gemv_moe_add_fits(int rows, int n, int k, const float *residual, const sm_gemv_moe_add *add,
                                          bool norm) {
    if (!add || !add->ys || !add->sorted_pos || add->top_k < 1 || add->top_k > SM_GEMV_MAX_TOP_K ||
        add->stride < (norm ? k : n) || !shape_fits(rows, n, k))
        return false;
    if (!norm) return n < GEMV_TWO_COLS_FROM; /* the add rides on the early read of y (one column a warp) */
    return smem_bytes(rows, k, add->top_k) <= GEMV_SMEM_ADD_MAX && add->stride % 8 == 0 && ((uintptr_t)add->ys & 15) == 0 &&
           ((uintptr_t)residual & 15) == 0; /* both staged by cp.async */
}

static sm_status check(const void *w, void *y, bool y_f32, float beta, int rows, int n, int k, bool fits, sm_error *err) {
    NEED(fits, "gemv: shape rows %d n %d k %d not supported (rows 1..%d, k %% 8 == 0, rows*k*2 <= %zu, 16-byte aligned "
         "operands)", rows, n, k, SM_GEMV_MAX_ROWS, GEMV_SMEM_MAX);
    NEED(w && y, "gemv: NULL pointer (w %p, y %p)", w, y);
    NEED(beta == 0.0f || y_f32, "gemv: beta %g needs an fp32 y", (double)beta);
    return SM_OK;
}

extern "C" sm_status sm_cuda_gemv_xwt(cudaStream_t stream, const sm_bf16_bits *x, const sm_bf16_bits *w, void *y,
                                      bool y_f32, float beta, int rows, int n, int k, sm_error *err) {
    NEED(x, "gemv: NULL x");
    SM_TRY(check(w, y, y_f32, beta, rows, n, k, sm_cuda_gemv_fits(rows, n, k, x, w), err));
    launch_rows<false>(stream, gemv_call{x, w, y, y_f32, beta, rows, n, k, norm_args{}, moe_add_args{}});
    return sm_kernel_launched("gemv", err);
}

extern "C" sm_status sm_cuda_gemv_xwt_moe_add(cudaStream_t stream, const sm_bf16_bits *x, const sm_bf16_bits *w,
                                              float *y, const sm_gemv_moe_add *add, int rows, int n, int k,
                                              sm_error *err) {
    NEED(x, "gemv_moe_add: NULL x");
    SM_TRY(check(w, y, true, 1.0f, rows, n, k, sm_cuda_gemv_fits(rows, n, k, x, w), err));
    NEED(sm_cuda_gemv_moe_add_fits(rows, n, k, y, add, false),
         "gemv_moe_add: the MoE add does not fit (n %d: under %d columns; top_k %d: 1..%d; stride %d)", n,
         GEMV_TWO_COLS_FROM, add ? add->top_k : 0, SM_GEMV_MAX_TOP_K, add ? add->stride : 0);
    launch_rows<false>(stream, gemv_call{x, w, y, true, 1.0f, rows, n, k, norm_args{}, add_args(add)});
    return sm_kernel_launched("gemv_moe_add", err);
}

extern "C" sm_status sm_cuda_gemv_norm_xwt(cudaStream_t stream, const float *x, const sm_gemv_moe_add *add,
                                           const sm_bf16_bits *norm_weight, float eps, sm_bf16_bits *h_out,
                                           const sm_bf16_bits *w, void *y, bool y_f32, float beta, int rows, int n,
                                           int k, sm_error *err) {
    NEED(x && norm_weight, "gemv_norm: NULL x or norm weight");
    SM_TRY(check(w, y, y_f32, beta, rows, n, k, sm_cuda_gemv_norm_fits(rows, n, k, w), err));
    NEED(!add || sm_cuda_gemv_moe_add_fits(rows, n, k, x, add, true),
         "gemv_norm: the MoE add does not fit (rows %d of k %d with top_k %d: %zu bytes of shared memory, at most %zu; "
         "top_k 1..%d, stride %% 8 == 0, 16-byte aligned x and ys)", rows, k, add ? add->top_k : 0,
         smem_bytes(rows, k, add ? add->top_k : 0), GEMV_SMEM_ADD_MAX, SM_GEMV_MAX_TOP_K);
    const norm_args nx = {x, reinterpret_cast<const __nv_bfloat16 *>(norm_weight), eps,
                          reinterpret_cast<__nv_bfloat16 *>(h_out), sm_rms_threads(k), add_args(add)};
    launch_rows<true>(stream, gemv_call{NULL, w, y, y_f32, beta, rows, n, k, nx, moe_add_args{}});
    return sm_kernel_launched("gemv_norm", err);
}
