/* kernels/moe_decode_mma.cu — decode regime with several tokens per expert (SM_MOE_REGIME_DECODE_MMA).
 *
 * Why a second decode kernel. The WMMA-free decode kernel of moe_grouped.cu runs, per CTA
 * (expert e, 8 output columns, one warp per column):
 *     for each tile of T tokens:                  T <= 8, fixed on the host from the EXPECTED
 *         stage the T token rows in shared memory    tokens per expert, and shrunk until
 *         each warp streams its whole weight row     T*K*2 bytes <= 64 KB (K = 14336: T <= 2)
 * so an expert with n_e tokens has its weights streamed ceil(n_e / T) times. On Mixtral with
 * 4 tokens (8 assignments, 8 experts: T = 1) the routing puts 2-3 tokens on some experts, and
 * with 8 tokens (T = 2) 3-5: those experts' 352 MB are read 2-3 times (the re-reads mostly miss
 * L2: one pass of the resident CTAs already touches ~50 MB), which is where the time over
 * torch._grouped_mm went. Each token also costs T shared-memory reads of 16 bytes per 16 bytes
 * of weights and 2 fp32 ops per weight element, so a larger T would turn it compute-bound.
 *
 * This kernel: a CTA owns (expert e, 16 output columns) and ALL of e's tokens (up to 8*NT per
 * pass, NT in {1,2,4} chosen on the host with slack over the expected count, see
 * decode_tokens_per_pass). Its 8 warps split K (warp w takes the 32-wide k-steps w, w+8, ...);
 * for each k-step a lane loads 16 bytes of weight row g and g+8 (and of the matching up rows)
 * and 16 bytes of token g's row, and two mma.m16n8k16 multiply the 16 columns with 8 tokens at
 * once (tensor cores: the FMAs cost nothing next to the loads). The partial sums of the warps
 * are added in shared memory and the epilogue applies silu(gate)*up or the routing weight.
 * Every (expert, column tile, k-step) is loaded by exactly one lane of one warp of one CTA, and
 * the token loop is INSIDE that load (the 8*NT tokens are the n dimension of the MMA), so each
 * weight element is read once per launch for all tokens of its expert (once per pass when an
 * expert holds more than 8*NT tokens: skewed routing beyond the slack). Token rows are re-read
 * per CTA from L2/L1 (16 bytes per 8 tokens per 32 k: at most 1/2 of the weight bytes for the
 * down projection with NT = 1 and full tokens, far less gated, where gate and up share them).
 *
 * Lane <-> k mapping: the dot product does not care about the order of k, so a lane's 16-byte
 * load (8 consecutive k) is spread over the two MMAs of the step: for lane (g, t) the MMA
 * columns {2t, 2t+1} and {2t+8, 2t+9} are physical k 8t+{0,1} and 8t+{2,3} in the first MMA and
 * 8t+{4,5}, 8t+{6,7} in the second — the same mapping for A (weights) and B (tokens), a
 * bijection onto the 32 k of the step. So both operands keep 16-byte loads. */
#include "moe_mma.cuh"

#include "kernel_common.cuh"

namespace sm_moe_mma {
namespace {

constexpr int DM_WARPS = 8, DM_THREADS = DM_WARPS * 32, DM_COLS = 16;

/* Two MMAs of one 32-wide k-step: 16 weight rows (lo = rows g, hi = rows g+8) x 8 tokens. */
__device__ __forceinline__ void mma_step(float c[4], const uint4 &lo, const uint4 &hi, const uint4 &x) {
    sm_mma_16816(c, lo.x, hi.x, lo.y, hi.y, x.x, x.y);
    sm_mma_16816(c, lo.z, hi.z, lo.w, hi.w, x.z, x.w);
}

/* EARLY (down only): the chained down of moe_grouped.cu's decode kernel, here too: gate_up waits
 * before it signals its dependents, so down starts only once the offsets' writer (the routing
 * launch) has completed; down then reads the offsets through L2 (__ldcg), finds its expert and
 * requests its first weights before its own PDL wait — the one exception to the PDL contract of
 * kernel_common.cuh, argued in moe_grouped.cu. */
template <int NT, bool GATED, bool EARLY>
__global__ void __launch_bounds__(DM_THREADS)
    decode_mma_kernel(const __nv_bfloat16 *__restrict__ in, const __nv_bfloat16 *__restrict__ w,
                      const float *__restrict__ weight, __nv_bfloat16 *__restrict__ out,
                      const int *__restrict__ offsets, int num_experts, int K, int N) {
    static_assert(!(GATED && EARLY), "only the down projection starts early");
    if (GATED) {
        sm_pdl_wait();
        sm_pdl_trigger();
    } else {
        sm_pdl_trigger();
        if (!EARLY) sm_pdl_wait();
    }
    extern __shared__ int early_offsets[]; /* EARLY: [num_experts + 1] */
    if (EARLY) offsets = offsets_to_shared(offsets, num_experts, early_offsets);
    constexpr int NB = GATED ? 2 : 1;                 /* gate and up, or down */
    constexpr int UK = (GATED || NT >= 4) ? 2 : 4;    /* k-steps in flight per warp: 8 weight loads per lane */
    constexpr int TP = 8 * NT;                        /* tokens per pass */
    __shared__ float red[DM_WARPS][NB][TP][DM_COLS]; /* per-warp partial sums */
    const tile_ref pos = expert_of_slot(offsets, num_experts, blockIdx.y);
    const int e = pos.expert;
    if (e < 0) return; /* fewer active experts than slots */
    const int row0 = pos.begin, rows = pos.count;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int n0 = blockIdx.x * DM_COLS, K8 = K / 8, S = (K + 31) / 32;
    const bool lo_ok = n0 + g < N, hi_ok = n0 + 8 + g < N; /* N % 8 == 0: whole 8-row halves */
    const size_t w_rows = GATED ? 2 * (size_t)N : (size_t)N;
    const __nv_bfloat16 *we = w + (size_t)e * w_rows * K;
    const uint4 *wrow[NB][2];
#pragma unroll
    for (int nb = 0; nb < NB; nb++) {
        wrow[nb][0] = reinterpret_cast<const uint4 *>(we + ((size_t)nb * N + (lo_ok ? n0 + g : 0)) * K);
        wrow[nb][1] = reinterpret_cast<const uint4 *>(we + ((size_t)nb * N + (hi_ok ? n0 + 8 + g : 0)) * K);
    }
    const uint4 zero = make_uint4(0, 0, 0, 0);
    uint4 vw[UK][NB][2];
    auto load_w = [&](int s0) {
#pragma unroll
        for (int u = 0; u < UK; u++) {
            const int k8 = (s0 + u * DM_WARPS) * 4 + t; /* this lane's 16 bytes of the step */
            const bool kok = k8 < K8;                   /* also false past the last step */
#pragma unroll
            for (int nb = 0; nb < NB; nb++) {
                vw[u][nb][0] = kok && lo_ok ? sm_load_stream(wrow[nb][0] + k8) : zero;
                vw[u][nb][1] = kok && hi_ok ? sm_load_stream(wrow[nb][1] + k8) : zero;
            }
        }
    };
    bool w_loaded = false;
    if (EARLY) { /* the first weights before the wait; the tokens (gate_up's act) after it */
        load_w(warp);
        w_loaded = true;
        sm_pdl_wait();
    }

    for (int p0 = 0; p0 < rows; p0 += TP) {
        const int np = min(TP, rows - p0);
        const uint4 *xrow[NT];
        bool xok[NT];
#pragma unroll
        for (int j = 0; j < NT; j++) {
            const int tok = 8 * j + g;
            xok[j] = tok < np;
            xrow[j] = reinterpret_cast<const uint4 *>(in + (size_t)(row0 + p0 + (xok[j] ? tok : 0)) * K);
        }
        float acc[NB][NT][4];
#pragma unroll
        for (int nb = 0; nb < NB; nb++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int q = 0; q < 4; q++) acc[nb][j][q] = 0.0f;

        for (int s0 = warp; s0 < S; s0 += DM_WARPS * UK) {
            uint4 vx[UK][NT];
            if (!w_loaded) load_w(s0); /* every load of the batch first: bytes in flight */
            w_loaded = false;
#pragma unroll
            for (int u = 0; u < UK; u++) {
                const int k8 = (s0 + u * DM_WARPS) * 4 + t;
                const bool kok = k8 < K8;
#pragma unroll
                for (int j = 0; j < NT; j++) vx[u][j] = kok && xok[j] ? __ldg(xrow[j] + k8) : zero;
            }
#pragma unroll
            for (int u = 0; u < UK; u++)
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    if (8 * j >= np) continue; /* warp-uniform: an empty group of 8 tokens */
#pragma unroll
                    for (int nb = 0; nb < NB; nb++) mma_step(acc[nb][j], vw[u][nb][0], vw[u][nb][1], vx[u][j]);
                }
        }

#pragma unroll
        for (int j = 0; j < NT; j++) {
            if (8 * j >= np) continue;
#pragma unroll
            for (int nb = 0; nb < NB; nb++) {
                red[warp][nb][8 * j + 2 * t][g] = acc[nb][j][0];
                red[warp][nb][8 * j + 2 * t + 1][g] = acc[nb][j][1];
                red[warp][nb][8 * j + 2 * t][g + 8] = acc[nb][j][2];
                red[warp][nb][8 * j + 2 * t + 1][g + 8] = acc[nb][j][3];
            }
        }
        __syncthreads();
        for (int i = threadIdx.x; i < np * DM_COLS; i += DM_THREADS) {
            const int tok = i / DM_COLS, c = i % DM_COLS, n = n0 + c;
            if (n >= N) continue;
            float a = 0.0f, b = 0.0f;
#pragma unroll
            for (int v = 0; v < DM_WARPS; v++) {
                a += red[v][0][tok][c];
                if (GATED) b += red[v][NB - 1][tok][c];
            }
            const int r = row0 + p0 + tok;
            out[(size_t)r * N + n] = __float2bfloat16_rn(GATED ? sm_silu(a) * b : a * weight[r]);
        }
        __syncthreads(); /* red is rewritten by the next pass */
    }
}

template <int NT>
cudaError_t launch_nt(bool gated, bool early, cudaStream_t s, const sm_moe_grouped_args *a, const void *in,
                      const void *w, const float *weight, void *out, int K, int N) {
    const int slots = a->n_assign < a->num_experts ? a->n_assign : a->num_experts;
    const dim3 grid((unsigned)((N + DM_COLS - 1) / DM_COLS), (unsigned)slots);
    const __nv_bfloat16 *x = static_cast<const __nv_bfloat16 *>(in), *wb = static_cast<const __nv_bfloat16 *>(w);
    __nv_bfloat16 *o = static_cast<__nv_bfloat16 *>(out);
    if (gated)
        sm_launch_pdl(decode_mma_kernel<NT, true, false>, grid, DM_THREADS, 0, s, x, wb, weight, o, a->expert_offsets,
                      a->num_experts, K, N);
    else if (early)
        sm_launch_pdl(decode_mma_kernel<NT, false, true>, grid, DM_THREADS, (size_t)(a->num_experts + 1) * sizeof(int),
                      s, x, wb, weight, o, a->expert_offsets, a->num_experts, K, N);
    else
        sm_launch_pdl(decode_mma_kernel<NT, false, false>, grid, DM_THREADS, 0, s, x, wb, weight, o, a->expert_offsets,
                      a->num_experts, K, N);
    return cudaSuccess;
}

} // namespace

/* The host knows only n_assign. Uniform routing would give `expected` tokens per active expert;
 * real routing piles 2-3x that on some experts (Mixtral, 8 tokens: 16 assignments, up to 5 on
 * one expert), and an expert never holds more than n_assign. Serving min(n_assign, 4x expected)
 * (at least 8) per pass makes one pass the rule; more NT costs registers and idle MMA columns,
 * not memory traffic (token loads and MMAs of empty 8-token groups are skipped). */
int decode_tokens_per_pass(const sm_moe_grouped_args *a) {
    const int active = a->n_assign < a->num_experts ? a->n_assign : a->num_experts;
    const int expected = active > 0 ? (a->n_assign + active - 1) / active : 1;
    int want = 4 * expected > 8 ? 4 * expected : 8;
    if (want > a->n_assign) want = a->n_assign;
    const int nt = ceil_pow2((want + 7) / 8);
    return 8 * (nt < 4 ? nt : 4);
}

cudaError_t launch_decode(bool gated, cudaStream_t s, const sm_moe_grouped_args *a, const void *in, const void *w,
                          const float *weight, void *out, int K, int N, bool early) {
    switch (decode_tokens_per_pass(a)) {
    case 8: return launch_nt<1>(gated, early, s, a, in, w, weight, out, K, N);
    case 16: return launch_nt<2>(gated, early, s, a, in, w, weight, out, K, N);
    default: return launch_nt<4>(gated, early, s, a, in, w, weight, out, K, N);
    }
}

} // namespace sm_moe_mma
