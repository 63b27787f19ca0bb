/* kernels/moe_grouped.cu — fused grouped SwiGLU expert MLP; see moe_grouped.h for the contract. */
#include "moe_grouped.h"

#include <mma.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_common.cuh"
#include "moe_mma.cuh"
#include "moe_route.cuh"

namespace {

/* Which expert a CTA works on: sm_moe_mma::find_tile_warp0 (moe_mma.cuh) with one n-tile per m-tile,
 * or expert_of_slot for the decode regime's one tile per non-empty expert. */
using sm_moe_mma::find_tile_warp0;
using sm_moe_mma::tile_ref;

/* ---- decode regime -------------------------------------------------------------------------
 * out[a, col] for the T tokens of one tile: each warp streams NL weight rows with 16-byte loads
 * (all of a pass's loads issued before any math: bytes in flight) and multiplies them with every
 * token of the tile kept in shared memory. Gated: NL = 2, the gate and up rows of one column.
 * Down: NL = COLS columns per warp when rows are short (Qwen3's 768): one 1.5 KiB row per warp
 * left too few bytes in flight and too many CTAs (12.1 µs for 25 MB on an H200, 2026-11-23). */
constexpr int DEC_WARPS = 8;
constexpr int DEC_SMEM_TARGET = 64 * 1024; /* token tile budget: leaves room for 3 CTAs per SM */

/* The routing a ROUTED gate_up launch does itself (sm_moe_route_job): the logits in, the expert
 * inputs read from h by assignment, the routing written out by block (0, 0) for the down
 * projection and the combine. */
struct gate_up_routing {
    const float *logits;
    int rows, top_k;
    bool renormalize;
    const __nv_bfloat16 *h;
    int h_width; /* elements a row of h; the rest of the K-wide token row is zero */
    sm_route::routing_out out;
};
constexpr int ROUTED_V = SM_MOE_ROUTED_MAX_EXPERTS / 32; /* logits a lane holds while routing */

/* Where a decode launch learns its batch's experts: the expert offsets after its PDL wait; the
 * offsets BEFORE the wait (the down projection right after a plain decode gate_up: see below);
 * or the router logits, gate_up routing the batch itself (sm_moe_route_job). */
enum dec_source { DEC_OFFSETS, DEC_EARLY_OFFSETS, DEC_ROUTED };

template <int T, bool GATED, int COLS, int U, int SRC>
__global__ void __launch_bounds__(DEC_WARPS * 32)
    moe_decode_kernel(const __nv_bfloat16 *__restrict__ in, const __nv_bfloat16 *__restrict__ w,
                      const float *__restrict__ weight, __nv_bfloat16 *__restrict__ out,
                      const int *__restrict__ offsets, int num_experts, int K, int N, gate_up_routing rt) {
    constexpr int NL = GATED ? 2 : COLS;   /* weight rows per warp */
    constexpr bool ROUTED = SRC == DEC_ROUTED, EARLY_DOWN = SRC == DEC_EARLY_OFFSETS;
    /* U: 16-byte vectors per lane and row in one pass */
    /* PDL (kernel_common.cuh), with one exception: the down projection after a plain gate_up finds
     * its expert from the offsets and requests its weights BEFORE its own wait. That is safe
     * because the plain gate_up signals its dependents only after its own wait, so down starts
     * only once the offsets' writer (gate_up's predecessor, the routing launch) has completed;
     * down reads them through L2 (__ldcg). */
    if (GATED && !ROUTED) {
        sm_pdl_wait();
        sm_pdl_trigger();
    } else {
        sm_pdl_trigger();
        if (!EARLY_DOWN) sm_pdl_wait();
    }
    extern __shared__ uint4 tok[]; /* [T][K/8], then the block's routing (ROUTED) or offsets (EARLY) */
    const int *src_of = nullptr;   /* ROUTED: the assignment at each sorted position */
    const int *tile_offsets = offsets;
    if (ROUTED) { /* every CTA routes the batch itself; CTA (0, 0) also writes it out */
        const sm_route::shared_routing sr = sm_route::carve(tok + (size_t)T * (K / 8), rt.rows, num_experts, rt.top_k);
        sm_route::route_block<ROUTED_V>(rt.logits, rt.rows, num_experts, rt.top_k, rt.renormalize, sr,
                                        blockIdx.x == 0 && blockIdx.y == 0, rt.out);
        src_of = sr.src;
        tile_offsets = sr.off;
    } else if (EARLY_DOWN) {
        int *off = reinterpret_cast<int *>(tok + (size_t)T * (K / 8));
        tile_offsets = sm_moe_mma::offsets_to_shared(offsets, num_experts, off);
    }
    const tile_ref pos = sm_moe_mma::expert_of_slot(tile_offsets, num_experts, blockIdx.y);
    const int e = pos.expert;
    if (e < 0) return; /* fewer active experts than slots */
    const int row0 = pos.begin, rows = pos.count, K8 = K / 8;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int col0 = (blockIdx.x * DEC_WARPS + warp) * (GATED ? 1 : COLS);
    const size_t w_rows = GATED ? 2 * (size_t)N : (size_t)N;
    const uint4 *wl[NL];
    bool live[NL];
#pragma unroll
    for (int j = 0; j < NL; j++) {
        const int wrow = GATED ? j * N + col0 : col0 + j;
        live[j] = (GATED ? col0 : col0 + j) < N;
        wl[j] = reinterpret_cast<const uint4 *>(w + ((size_t)e * w_rows + (live[j] ? wrow : 0)) * K);
    }

    uint4 v[NL][U];
    /* All of a pass's loads first: bytes in flight. The first pass is requested before the
     * token tile is copied, so the two latencies overlap instead of adding up. */
    auto load_pass = [&](int c0) {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = c0 + u * 32 + lane;
#pragma unroll
            for (int j = 0; j < NL; j++) v[j][u] = live[j] && c < K8 ? sm_load_stream(wl[j] + c) : make_uint4(0, 0, 0, 0);
        }
    };
    bool first_pass_loaded = col0 < N;
    if (first_pass_loaded) load_pass(0);
    if (EARLY_DOWN) sm_pdl_wait(); /* gate_up's act from here on */
    for (int t0 = 0; t0 < rows; t0 += T) {
        const int nt = min(T, rows - t0);
        const uint4 *src = reinterpret_cast<const uint4 *>(in + (size_t)(row0 + t0) * K);
        for (int i = threadIdx.x; i < nt * K8; i += blockDim.x) {
            if (ROUTED) { /* token t is row (assignment / top_k) of h */
                const int t = i / K8, c = i % K8, row = src_of[row0 + t0 + t] / rt.top_k;
                tok[i] = c < rt.h_width / 8 ? reinterpret_cast<const uint4 *>(rt.h + (size_t)row * rt.h_width)[c]
                                            : make_uint4(0, 0, 0, 0);
            } else {
                tok[i] = src[i];
            }
        }
        __syncthreads();
        if (col0 < N) {
            float acc[NL][T];
#pragma unroll
            for (int j = 0; j < NL; j++)
#pragma unroll
                for (int t = 0; t < T; t++) acc[j][t] = 0.0f;
            for (int c0 = 0; c0 < K8; c0 += 32 * U) {
                if (!first_pass_loaded) load_pass(c0);
                first_pass_loaded = false;
#pragma unroll
                for (int u = 0; u < U; u++) {
                    const int c = c0 + u * 32 + lane;
                    if (c >= K8) break;
                    float f[NL][8];
#pragma unroll
                    for (int j = 0; j < NL; j++) sm_unpack8(v[j][u], f[j]);
#pragma unroll
                    for (int t = 0; t < T; t++) {
                        if (t < nt) {
                            float fx[8];
                            sm_unpack8(tok[t * K8 + c], fx);
#pragma unroll
                            for (int j = 0; j < NL; j++)
#pragma unroll
                                for (int i = 0; i < 8; i++) acc[j][t] = fmaf(f[j][i], fx[i], acc[j][t]);
                        }
                    }
                }
            }
#pragma unroll
            for (int t = 0; t < T; t++) {
                if (t < nt) { /* nt is uniform in the warp, so the shuffles are too */
                    const int r = row0 + t0 + t;
                    if (GATED) {
                        const float a = sm_warp_sum(acc[0][t]), b = sm_warp_sum(acc[NL - 1][t]);
                        if (lane == t % 32) out[(size_t)r * N + col0] = __float2bfloat16_rn(sm_silu(a) * b);
                    } else {
#pragma unroll
                        for (int j = 0; j < NL; j++) {
                            const float a = sm_warp_sum(acc[j][t]);
                            if (lane == (t * NL + j) % 32 && live[j])
                                out[(size_t)r * N + col0 + j] = __float2bfloat16_rn(a * weight[r]);
                        }
                    }
                }
            }
        }
        __syncthreads(); /* the tile is reused for the next tokens */
    }
}

/* ---- prefill regime ------------------------------------------------------------------------
 * 64 tokens × 64 output columns per CTA, 4 warps of 32×32 each, WMMA 16×16×16 bf16 with fp32
 * accumulation, K in steps of 32 double-buffered with cp.async. Gated: the gate and up tiles of
 * the same columns are multiplied together so silu(g)*u happens in the epilogue. Rows past the
 * expert's tokens and columns past N are zero-filled on load and skipped on store. */
constexpr int PF_BM = 64, PF_BN = 64, PF_BK = 32, PF_THREADS = 128;
constexpr int PF_LDS = PF_BK + 8;  /* bf16 row stride in smem: 80 bytes staggers the banks */
constexpr int PF_LDC = PF_BN + 4;  /* fp32 epilogue stride */

template <bool GATED>
constexpr size_t prefill_smem_bytes() {
    const int nb = GATED ? 2 : 1;
    const size_t stages = (size_t)2 * (PF_BM + nb * PF_BN) * PF_LDS * 2;
    const size_t epilogue = (size_t)nb * PF_BM * PF_LDC * 4;
    return stages > epilogue ? stages : epilogue;
}

template <bool GATED>
__global__ void __launch_bounds__(PF_THREADS)
    moe_prefill_kernel(const __nv_bfloat16 *__restrict__ in, const __nv_bfloat16 *__restrict__ w,
                       const float *__restrict__ weight, __nv_bfloat16 *__restrict__ out,
                       const int *__restrict__ offsets, int num_experts, int K, int N) {
    using namespace nvcuda;
    constexpr int NB = GATED ? 2 : 1;
    __shared__ tile_ref pos;
    extern __shared__ __align__(128) unsigned char smem[];
    __nv_bfloat16 *As = reinterpret_cast<__nv_bfloat16 *>(smem);        /* [2][BM][LDS] */
    __nv_bfloat16 *Bs = As + 2 * PF_BM * PF_LDS;                          /* [2][NB][BN][LDS] */
    float *Cs = reinterpret_cast<float *>(smem);                          /* [NB][BM][LDC], after the loop */

    find_tile_warp0(offsets, num_experts, blockIdx.x, PF_BM, 1, &pos);
    __syncthreads();
    const int e = pos.expert;
    if (e < 0) return;
    const int row0 = pos.begin + pos.local * PF_BM, rows = min(PF_BM, pos.count - pos.local * PF_BM);
    const int n0 = blockIdx.y * PF_BN;
    const size_t w_rows = GATED ? 2 * (size_t)N : (size_t)N;
    const __nv_bfloat16 *we = w + (size_t)e * w_rows * K;
    const int tid = threadIdx.x, warp = tid >> 5, wm = warp >> 1, wn = warp & 1;

    auto load_stage = [&](int stage, int k0) {
        __nv_bfloat16 *a = As + stage * PF_BM * PF_LDS;
        for (int i = tid; i < PF_BM * (PF_BK / 8); i += PF_THREADS) {
            const int r = i / (PF_BK / 8), k = k0 + (i % (PF_BK / 8)) * 8;
            const bool ok = r < rows && k < K;
            sm_cp_async16(a + r * PF_LDS + (k - k0), ok ? in + (size_t)(row0 + r) * K + k : in, ok ? 16 : 0);
        }
        __nv_bfloat16 *b = Bs + stage * NB * PF_BN * PF_LDS;
        for (int i = tid; i < NB * PF_BN * (PF_BK / 8); i += PF_THREADS) {
            const int nb = i / (PF_BN * (PF_BK / 8)), rem = i % (PF_BN * (PF_BK / 8));
            const int r = rem / (PF_BK / 8), k = k0 + (rem % (PF_BK / 8)) * 8, n = n0 + r;
            const bool ok = n < N && k < K;
            sm_cp_async16(b + (nb * PF_BN + r) * PF_LDS + (k - k0), ok ? we + ((size_t)nb * N + n) * K + k : we,
                       ok ? 16 : 0);
        }
    };

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[NB][2][2];
#pragma unroll
    for (int nb = 0; nb < NB; nb++)
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[nb][i][j], 0.0f);

    const int KT = (K + PF_BK - 1) / PF_BK;
    load_stage(0, 0);
    sm_cp_async_commit();
    for (int kt = 0; kt < KT; kt++) {
        if (kt + 1 < KT) {
            load_stage((kt + 1) & 1, (kt + 1) * PF_BK);
            sm_cp_async_commit();
            sm_cp_async_wait<1>();
        } else {
            sm_cp_async_wait<0>();
        }
        __syncthreads();
        const __nv_bfloat16 *a = As + (kt & 1) * PF_BM * PF_LDS;
        const __nv_bfloat16 *b = Bs + (kt & 1) * NB * PF_BN * PF_LDS;
#pragma unroll
        for (int kk = 0; kk < PF_BK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa[2];
#pragma unroll
            for (int i = 0; i < 2; i++) wmma::load_matrix_sync(fa[i], a + (wm * 32 + i * 16) * PF_LDS + kk, PF_LDS);
#pragma unroll
            for (int nb = 0; nb < NB; nb++) {
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    /* W is [n][k] row-major = B (k×n) column-major. */
                    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
                    wmma::load_matrix_sync(fb, b + (nb * PF_BN + wn * 32 + j * 16) * PF_LDS + kk, PF_LDS);
#pragma unroll
                    for (int i = 0; i < 2; i++) wmma::mma_sync(acc[nb][i][j], fa[i], fb, acc[nb][i][j]);
                }
            }
        }
        __syncthreads(); /* the stage is overwritten by the next iteration's loads */
    }

#pragma unroll
    for (int nb = 0; nb < NB; nb++)
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < 2; j++)
                wmma::store_matrix_sync(Cs + (nb * PF_BM + wm * 32 + i * 16) * PF_LDC + wn * 32 + j * 16,
                                        acc[nb][i][j], PF_LDC, wmma::mem_row_major);
    __syncthreads();
    for (int i = tid; i < PF_BM * (PF_BN / 8); i += PF_THREADS) {
        const int r = i / (PF_BN / 8), c = (i % (PF_BN / 8)) * 8, n = n0 + c;
        if (r >= rows || n >= N) continue;
        const float *g = Cs + r * PF_LDC + c;
        float v[8];
        if (GATED) {
            const float *u = Cs + (PF_BM + r) * PF_LDC + c;
#pragma unroll
            for (int q = 0; q < 8; q++) v[q] = sm_silu(g[q]) * u[q];
        } else {
            const float s = weight[row0 + r];
#pragma unroll
            for (int q = 0; q < 8; q++) v[q] = s * g[q];
        }
        *reinterpret_cast<uint4 *>(out + (size_t)(row0 + r) * N + n) = sm_pack8(v);
    }
}

/* ---- launch --------------------------------------------------------------------------------- */

using sm_moe_mma::ceil_pow2;

/* Tokens per active expert if routing were uniform (the host knows only n_assign). */
int expected_per_expert(const sm_moe_grouped_args *a) {
    const int active = a->n_assign < a->num_experts ? a->n_assign : a->num_experts;
    return active > 0 ? (a->n_assign + active - 1) / active : 1;
}

/* Token tile of the decode kernel for reduction length K: the expected tokens per expert (at
 * most 8) so one pass over the weights usually serves all of them, shrunk until the tile fits
 * the shared-memory budget. An expert with more tokens (skewed routing) takes several passes,
 * the later ones mostly from L2. */
int decode_tile(const sm_moe_grouped_args *a, int K) {
    const int want = expected_per_expert(a);
    int t = ceil_pow2(want < 8 ? want : 8);
    while (t > 1 && (size_t)t * K * 2 > DEC_SMEM_TARGET) t >>= 1;
    return t;
}

/* AUTO's choice, from `specmoe bench moe-layer --regimes ...` (bench/RESULTS.md):
 * - fewer assignments than experts (under one token per expert on average): the SIMT decode
 *   kernel, whose one-warp-per-column streaming wins when an expert sees one token (Qwen3 shape
 *   at 1-4 tokens, Mixtral at 1-2) — but small experts take decode-mma from half a token per
 *   expert (Qwen3 at 8 tokens, see pick);
 * - from one token per expert: decode-mma, which reads each weight once for all of an expert's
 *   tokens, up to a few tokens per expert, then the tensor-core prefill tiles — prefill-wgmma
 *   when allowed (H200, 4096 tokens: Qwen3 427 TFLOP/s against prefill-mma's 194, Mixtral 527
 *   against 222), else prefill-mma where the shape allows.
 * Where decode-mma hands over depends on the experts' size (H200, 128x256 wgmma tiles,
 * 2026-11-23 session 7): small experts (Qwen3, 3 MB a matrix) give decode-mma few CTAs per
 * expert, and prefill-wgmma's whole tiles stream faster from the first token per expert (16
 * tokens, 1 per expert: 238 against 300 us; 32 tokens: 287 against 367); large ones (Mixtral,
 * 117 MB) keep decode-mma ahead at 2 per expert (8 tokens: 677 against 772 us) and lose from 4
 * (16 tokens: 817 against 734; 32: 854 against 782). Without prefill-wgmma (before sm_90a)
 * decode-mma beats prefill-mma up to 16 (H100: Mixtral 4-64 tokens 656-1100 us against 938-1658). */
constexpr int DECODE_MMA_AUTO_MAX = 16, DECODE_MMA_WGMMA_MAX_SMALL = 0, DECODE_MMA_WGMMA_MAX_LARGE = 2;
constexpr size_t SMALL_EXPERT_MATRIX_BYTES = (size_t)16 << 20;

/* K: reduction length, N: output columns of the projection. */
sm_moe_regime pick(const sm_moe_grouped_args *a, int K, int N) {
    switch (a->regime) {
    case SM_MOE_REGIME_AUTO: break;
    case SM_MOE_REGIME_PREFILL_MMA: /* shapes it does not take run the WMMA prefill kernel */
        return sm_moe_mma::prefill_accepts(K, N) ? SM_MOE_REGIME_PREFILL_MMA : SM_MOE_REGIME_PREFILL;
    default: return a->regime;
    }
    const int expected = expected_per_expert(a);
    const bool wgmma = a->auto_allow & SM_MOE_ALLOW_PREFILL_WGMMA, dmma = a->auto_allow & SM_MOE_ALLOW_DECODE_MMA;
    /* one size for both projections, so gate_up and down hand over at the same point */
    const bool small = (size_t)a->hidden * a->ffn * 2 <= SMALL_EXPERT_MATRIX_BYTES;
    if (a->n_assign >= a->num_experts) {
        const int dmma_max = !wgmma ? DECODE_MMA_AUTO_MAX : small ? DECODE_MMA_WGMMA_MAX_SMALL : DECODE_MMA_WGMMA_MAX_LARGE;
        if (dmma && expected <= dmma_max) return SM_MOE_REGIME_DECODE_MMA;
        if (wgmma) return SM_MOE_REGIME_PREFILL_WGMMA;
    }
    /* Small experts from half a token per expert: some experts then hold 2-3 tokens, which the
     * SIMT kernel's one-token tile reads once each and decode-mma once for all (H100, Qwen3
     * shape, 8 tokens = 64 assignments on 128 experts: 199.7 against 211.7 us; 4 tokens: 114.7
     * against 112.4, so not below half). Large experts stream at 93-98% either way and keep the
     * SIMT kernel (Mixtral, 2 tokens: 474.9 against decode-mma's 510.2). */
    if (dmma && small && 2 * a->n_assign >= a->num_experts && a->n_assign < a->num_experts)
        return SM_MOE_REGIME_DECODE_MMA;
    /* Decode re-reads an expert's weights once per tile of T tokens; past one tile the
     * tensor-core tiles (64 tokens per weight read) win. */
    if (expected <= decode_tile(a, K)) return SM_MOE_REGIME_DECODE;
    if (wgmma) return SM_MOE_REGIME_PREFILL_WGMMA;
    if ((a->auto_allow & SM_MOE_ALLOW_PREFILL_MMA) && sm_moe_mma::prefill_accepts(K, N))
        return SM_MOE_REGIME_PREFILL_MMA;
    return SM_MOE_REGIME_PREFILL;
}

template <int T, bool GATED, int COLS, int U, int SRC>
cudaError_t launch_decode_c(cudaStream_t s, const sm_moe_grouped_args *a, const void *in, const void *w,
                            const float *weight, void *out, int K, int N, const gate_up_routing &rt) {
    const size_t smem = (size_t)T * K * 2 +
                        (SRC == DEC_ROUTED          ? sm_route::smem_bytes(rt.rows, a->num_experts, rt.top_k)
                         : SRC == DEC_EARLY_OFFSETS ? (size_t)(a->num_experts + 1) * sizeof(int)
                                                    : 0);
    auto kernel = moe_decode_kernel<T, GATED, COLS, U, SRC>;
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
    }
    const int slots = a->n_assign < a->num_experts ? a->n_assign : a->num_experts;
    dim3 grid((unsigned)((N + DEC_WARPS * COLS - 1) / (DEC_WARPS * COLS)), (unsigned)slots);
    sm_launch_pdl(kernel, grid, DEC_WARPS * 32, smem, s, static_cast<const __nv_bfloat16 *>(in),
                  static_cast<const __nv_bfloat16 *>(w), weight, static_cast<__nv_bfloat16 *>(out), a->expert_offsets,
                  a->num_experts, K, N, rt);
    return cudaSuccess;
}

/* A down projection's columns per warp and vectors per pass, for either source of its experts. */
template <int T, int COLS, int U = 4>
cudaError_t launch_down(cudaStream_t s, const sm_moe_grouped_args *a, const void *in, const void *w,
                        const float *weight, void *out, int K, int N, bool early_offsets) {
    if (early_offsets) return launch_decode_c<T, false, COLS, U, DEC_EARLY_OFFSETS>(s, a, in, w, weight, out, K, N, {});
    return launch_decode_c<T, false, COLS, U, DEC_OFFSETS>(s, a, in, w, weight, out, K, N, {});
}

/* Down projections with short rows take four columns per warp (see the kernel's comment); rows
 * of at most 768 (96 vectors: three a lane) in passes of two vectors: 64 registers, four CTAs
 * an SM, so Qwen3-30B's 512 down CTAs of a one-token step are all resident when gate_up ends
 * (passes of three: 79 registers, three an SM, the last 116 CTAs started 4.8 us after gate_up
 * completed; H100, batch 1 3.149 -> 3.079 ms a step, MoE layer at one token 35.0 -> 32.7 us,
 * 2-8 tokens unchanged). A gate_up of at most one token's experts (the batch-1 step's)
 * passes two vectors a lane: 40 registers, six CTAs an SM, so Qwen3-30B's 768 CTAs are one wave
 * (four vectors: 60 registers, four an SM, 528 at once). H100, Qwen3 shape: batch 1 3.215 ->
 * 3.17 ms a step, MoE layer at one token 36.3 -> 35.1 us; with 48 assignments (batch 6, many
 * waves either way) two vectors lost (8.96 -> 9.02 ms), and the routing gate_up with two lost at
 * 2-4 rows (4.54 -> 4.69 ms at batch 2), so both keep four. rt.logits set: gate_up routing the
 * batch itself; early_offsets: the down projection right after a plain decode gate_up, reading
 * the offsets before its wait. */
constexpr int ONE_WAVE_GATE_UP_ASSIGN = 8;
template <int T, bool GATED>
cudaError_t launch_decode_t(cudaStream_t s, const sm_moe_grouped_args *a, const void *in, const void *w,
                            const float *weight, void *out, int K, int N, const gate_up_routing &rt,
                            bool early_offsets) {
    if (!GATED && K <= 768) return launch_down<T, 4, 2>(s, a, in, w, weight, out, K, N, early_offsets);
    if (!GATED && K <= 1024) return launch_down<T, 4>(s, a, in, w, weight, out, K, N, early_offsets);
    if (!GATED) return launch_down<T, 1>(s, a, in, w, weight, out, K, N, early_offsets);
    if (rt.logits) return launch_decode_c<T, true, 1, 4, DEC_ROUTED>(s, a, in, w, weight, out, K, N, rt);
    if constexpr (T == 1)
        if (a->n_assign <= ONE_WAVE_GATE_UP_ASSIGN)
            return launch_decode_c<T, true, 1, 2, DEC_OFFSETS>(s, a, in, w, weight, out, K, N, rt);
    return launch_decode_c<T, true, 1, 4, DEC_OFFSETS>(s, a, in, w, weight, out, K, N, rt);
}

template <bool GATED>
cudaError_t launch_decode(cudaStream_t s, const sm_moe_grouped_args *a, const void *in, const void *w,
                          const float *weight, void *out, int K, int N, const gate_up_routing &rt = {},
                          bool early_offsets = false) {
    switch (decode_tile(a, K)) {
    case 1: return launch_decode_t<1, GATED>(s, a, in, w, weight, out, K, N, rt, early_offsets);
    case 2: return launch_decode_t<2, GATED>(s, a, in, w, weight, out, K, N, rt, early_offsets);
    case 4: return launch_decode_t<4, GATED>(s, a, in, w, weight, out, K, N, rt, early_offsets);
    default: return launch_decode_t<8, GATED>(s, a, in, w, weight, out, K, N, rt, early_offsets);
    }
}

template <bool GATED>
cudaError_t launch_prefill(cudaStream_t s, const sm_moe_grouped_args *a, const void *in, const void *w,
                           const float *weight, void *out, int K, int N) {
    const int active = a->n_assign < a->num_experts ? a->n_assign : a->num_experts;
    /* sum over experts of ceil(n_e/BM) is at most this; surplus CTAs find no tile and exit. */
    const long tiles = ((long)a->n_assign + (long)active * (PF_BM - 1)) / PF_BM;
    dim3 grid((unsigned)tiles, (unsigned)((N + PF_BN - 1) / PF_BN));
    const size_t smem = prefill_smem_bytes<GATED>();
    auto kernel = moe_prefill_kernel<GATED>;
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
    }
    kernel<<<grid, PF_THREADS, smem, s>>>(static_cast<const __nv_bfloat16 *>(in), static_cast<const __nv_bfloat16 *>(w),
                                         weight, static_cast<__nv_bfloat16 *>(out), a->expert_offsets,
                                         a->num_experts, K, N);
    return cudaSuccess;
}

sm_status check_args(const char *what, const sm_moe_grouped_args *a, const void *in, const void *w, const void *out,
                     sm_error *err) {
    if (!a || a->num_experts <= 0 || a->hidden <= 0 || a->ffn <= 0 || a->n_assign < 0)
        return sm_fail(err, SM_EINVAL, "%s: bad shape (experts %d, hidden %d, ffn %d, assignments %d)", what,
                       a ? a->num_experts : 0, a ? a->hidden : 0, a ? a->ffn : 0, a ? a->n_assign : 0);
    if (a->hidden % 8 || a->ffn % 8)
        return sm_fail(err, SM_EINVAL, "%s: hidden %d and ffn %d must be multiples of 8 (pad them)", what, a->hidden,
                       a->ffn);
    if ((size_t)a->hidden * 2 > 200 * 1024 || (size_t)a->ffn * 2 > 200 * 1024)
        return sm_fail(err, SM_EUNSUPPORTED, "%s: one token row (hidden %d, ffn %d) exceeds shared memory", what,
                       a->hidden, a->ffn);
    if ((int)a->regime < 0 || (int)a->regime >= (int)SM_MOE_REGIME_COUNT)
        return sm_fail(err, SM_EINVAL, "%s: unknown regime %d", what, (int)a->regime);
    if (a->n_assign > 0 && (!a->expert_offsets || !in || !w || !out))
        return sm_fail(err, SM_EINVAL, "%s: NULL device pointer", what);
    return SM_OK;
}

/* One projection with the kernel pick() chooses. */
template <bool GATED>
cudaError_t run(cudaStream_t s, const sm_moe_grouped_args *a, const void *in, const void *w, const float *weight,
                void *out, int K, int N) {
    switch (pick(a, K, N)) {
    case SM_MOE_REGIME_DECODE: return launch_decode<GATED>(s, a, in, w, weight, out, K, N);
    case SM_MOE_REGIME_DECODE_MMA: return sm_moe_mma::launch_decode(GATED, s, a, in, w, weight, out, K, N);
    case SM_MOE_REGIME_PREFILL_MMA: return sm_moe_mma::launch_prefill(GATED, s, a, in, w, weight, out, K, N);
    case SM_MOE_REGIME_PREFILL_WGMMA:
        if (sm_moe_mma::prefill_wgmma_accepts(in, w, out))
            return sm_moe_mma::launch_prefill_wgmma(GATED, s, a, in, w, weight, out, K, N);
        if (sm_moe_mma::prefill_accepts(K, N)) return sm_moe_mma::launch_prefill(GATED, s, a, in, w, weight, out, K, N);
        return launch_prefill<GATED>(s, a, in, w, weight, out, K, N);
    default: return launch_prefill<GATED>(s, a, in, w, weight, out, K, N);
    }
}

const char *const regime_names[SM_MOE_REGIME_COUNT] = {"auto",        "decode",     "prefill",
                                                       "decode-mma",  "prefill-mma", "prefill-wgmma"};

sm_status finish(const char *what, cudaError_t e, sm_error *err) {
    if (e != cudaSuccess)
        return sm_fail(err, SM_ECUDA, "%s: setting kernel attributes: %s", what, cudaGetErrorString(e));
    return sm_kernel_launched(what, err);
}

} // namespace

extern "C" sm_moe_regime sm_moe_regime_pick(const sm_moe_grouped_args *a, bool down_proj) {
    return down_proj ? pick(a, a->ffn, a->hidden) : pick(a, a->hidden, a->ffn);
}

extern "C" const char *sm_moe_regime_name(sm_moe_regime r) {
    return (int)r >= 0 && (int)r < (int)SM_MOE_REGIME_COUNT ? regime_names[r] : "?";
}

extern "C" int sm_moe_regime_parse(const char *name) {
    for (int i = 0; name && i < (int)SM_MOE_REGIME_COUNT; i++)
        if (!strcmp(name, regime_names[i])) return i;
    return -1;
}

extern "C" unsigned sm_moe_auto_allow_from_env(void) {
    /* The mma kernels are on (validated on an H100: every regime against the CPU twin, the
     * runners and whole models, compute-sanitizer clean), and prefill-wgmma before prefill-mma;
     * SPECMOE_MOE_DECODE=simt, SPECMOE_MOE_PREFILL=mma (no wgmma) or =wmma (neither) keep AUTO to
     * the older kernels, SPECMOE_MOE_DOWN=late the chained down projection to its wait, for A/B runs. */
    const char *d = getenv("SPECMOE_MOE_DECODE"), *p = getenv("SPECMOE_MOE_PREFILL"), *r = getenv("SPECMOE_MOE_ROUTE");
    const char *dn = getenv("SPECMOE_MOE_DOWN");
    const bool wmma_only = p && !strcmp(p, "wmma"), no_wgmma = wmma_only || (p && !strcmp(p, "mma"));
    return (d && !strcmp(d, "simt") ? 0u : (unsigned)SM_MOE_ALLOW_DECODE_MMA) |
           (r && !strcmp(r, "launch") ? 0u : (unsigned)SM_MOE_ALLOW_GATE_UP_ROUTING) |
           (dn && !strcmp(dn, "late") ? 0u : (unsigned)SM_MOE_ALLOW_EARLY_DOWN) |
           (wmma_only ? 0u : (unsigned)SM_MOE_ALLOW_PREFILL_MMA) | (no_wgmma ? 0u : (unsigned)SM_MOE_ALLOW_PREFILL_WGMMA);
}

extern "C" sm_status sm_cuda_moe_gate_up(cudaStream_t stream, const sm_moe_grouped_args *a, const sm_bf16_bits *x,
                                         const sm_bf16_bits *w_gate_up, sm_bf16_bits *act, sm_error *err) {
    SM_TRY(check_args("moe_gate_up", a, x, w_gate_up, act, err));
    if (a->n_assign == 0) return SM_OK;
    cudaError_t e = run<true>(stream, a, x, w_gate_up, nullptr, act, a->hidden, a->ffn);
    return finish("moe_gate_up", e, err);
}

extern "C" bool sm_moe_gate_up_routes(const sm_moe_grouped_args *a, const sm_moe_route_job *j) {
    return a && j && (a->auto_allow & SM_MOE_ALLOW_GATE_UP_ROUTING) && a->num_experts <= SM_MOE_ROUTED_MAX_EXPERTS &&
           j->rows >= 1 && j->rows <= SM_MOE_ROUTED_MAX_ROWS && j->top_k >= 1 && j->top_k <= a->num_experts &&
           (long)j->rows * j->top_k == a->n_assign && j->h_width > 0 && j->h_width % 8 == 0 && j->h_width <= a->hidden &&
           (uintptr_t)j->h % 16 == 0 && pick(a, a->hidden, a->ffn) == SM_MOE_REGIME_DECODE;
}

extern "C" sm_status sm_cuda_moe_gate_up_routed(cudaStream_t stream, const sm_moe_grouped_args *a,
                                                const sm_moe_route_job *j, const sm_bf16_bits *w_gate_up,
                                                sm_bf16_bits *act, sm_error *err) {
    SM_TRY(check_args("moe_gate_up_routed", a, j ? j->h : nullptr, w_gate_up, act, err)); /* h is the input */
    if (!sm_moe_gate_up_routes(a, j))
        return sm_fail(err, SM_EINVAL,
                       "moe_gate_up_routed: this batch is not routed in gate_up (%d rows x top_k %d = %d assignments, "
                       "%d experts (<= %d), rows <= %d, h width %d (multiple of 8, <= %d), regime %s): route it first",
                       j ? j->rows : 0, j ? j->top_k : 0, a->n_assign, a->num_experts, SM_MOE_ROUTED_MAX_EXPERTS,
                       SM_MOE_ROUTED_MAX_ROWS, j ? j->h_width : 0, a->hidden,
                       sm_moe_regime_name(pick(a, a->hidden, a->ffn)));
    if (!j->logits || !j->h || !j->expert_ids || !j->expert_offsets || !j->weights || !j->sorted_src || !j->sorted_pos || !j->sorted_weight)
        return sm_fail(err, SM_EINVAL, "moe_gate_up_routed: NULL device pointer in the routing job");
    const gate_up_routing rt = {j->logits, j->rows, j->top_k, j->renormalize,
                                reinterpret_cast<const __nv_bfloat16 *>(j->h), j->h_width,
                                sm_route::routing_out{j->expert_ids, j->weights, j->expert_offsets,
                                                      j->sorted_src, j->sorted_pos, j->sorted_weight}};
    cudaError_t e = launch_decode<true>(stream, a, j->h, w_gate_up, nullptr, act, a->hidden, a->ffn, rt);
    return finish("moe_gate_up_routed", e, err);
}

extern "C" sm_status sm_cuda_moe_down_chained(cudaStream_t stream, const sm_moe_grouped_args *a,
                                              const sm_bf16_bits *act, const sm_bf16_bits *w_down, const float *weight,
                                              sm_bf16_bits *y, sm_error *err) {
    /* both projections in the same decode kernel family: its gate_up waits before it signals */
    const sm_moe_regime up = a ? pick(a, a->hidden, a->ffn) : SM_MOE_REGIME_AUTO;
    const bool early = a && (a->auto_allow & SM_MOE_ALLOW_EARLY_DOWN) && a->n_assign > 0 &&
                       (up == SM_MOE_REGIME_DECODE || up == SM_MOE_REGIME_DECODE_MMA) &&
                       pick(a, a->ffn, a->hidden) == up;
    if (!early) return sm_cuda_moe_down(stream, a, act, w_down, weight, y, err);
    SM_TRY(check_args("moe_down_chained", a, act, w_down, y, err));
    if (!weight) return sm_fail(err, SM_EINVAL, "moe_down_chained: NULL routing weights");
    cudaError_t e = up == SM_MOE_REGIME_DECODE
                        ? launch_decode<false>(stream, a, act, w_down, weight, y, a->ffn, a->hidden, {}, true)
                        : sm_moe_mma::launch_decode(false, stream, a, act, w_down, weight, y, a->ffn, a->hidden, true);
    return finish("moe_down_chained", e, err);
}

extern "C" sm_status sm_cuda_moe_down(cudaStream_t stream, const sm_moe_grouped_args *a, const sm_bf16_bits *act,
                                      const sm_bf16_bits *w_down, const float *weight, sm_bf16_bits *y,
                                      sm_error *err) {
    SM_TRY(check_args("moe_down", a, act, w_down, y, err));
    if (a->n_assign > 0 && !weight) return sm_fail(err, SM_EINVAL, "moe_down: NULL routing weights");
    if (a->n_assign == 0) return SM_OK;
    cudaError_t e = run<false>(stream, a, act, w_down, weight, y, a->ffn, a->hidden);
    return finish("moe_down", e, err);
}
