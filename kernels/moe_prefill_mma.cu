/* kernels/moe_prefill_mma.cu — prefill regime on tensor cores (SM_MOE_REGIME_PREFILL_MMA).
 *
 * A grouped GEMM of 128x128x32 CTA tiles, 8 warps of 64x32 each, mma.sync m16n8k16 bf16 with
 * fp32 accumulation (inline PTX), operands fetched with ldmatrix from shared memory that
 * cp.async fills three k-steps ahead (3 stages, 48 KB). Tiles are enumerated over (expert,
 * m-tile, n-tile) on the GPU from the device expert offsets (find_tile), so the launch depends
 * only on n_assign and replays in a CUDA graph with new routing.
 *
 * Gated (gate_up): the 128 B-rows of a tile are 64 output columns, in blocks of 8 alternating
 * gate and up rows (B-row r -> column n0 + (r/16)*8 + r%8, gate if (r/8) is even). A warp's n8
 * fragments 2p and 2p+1 are then the gate and the up of the same 8 columns, held by the same
 * thread at the same fragment positions, so silu(gate)*up is computed in registers.
 * Down: 128 output columns per tile; the routing weight of each row is applied in the epilogue.
 *
 * M tails (an expert's tokens not a multiple of 128) are zero-filled on load (cp.async with
 * src-size 0) and skipped on store. K must be a multiple of 32 and N of 64 (prefill_accepts);
 * a 128-wide down tile past N is predicated per 8-column block.
 *
 * Shared memory rows are 32 bf16 = 64 bytes = four 16-byte chunks; chunk c of row r is stored
 * at chunk c ^ ((r >> 1) & 3). ldmatrix reads 8 consecutive rows at one logical chunk: rows
 * 2i and 2i+1 sit in the two halves of a 128-byte line and the XOR moves each pair to its own
 * chunk, so the 8 addresses cover all 32 banks (no conflicts); cp.async writes whole rows.
 *
 * Raster: within an expert, n-tiles go in bands of 8; a band's tiles run m-tile by m-tile with
 * the 8 n-tiles adjacent, so resident CTAs share the expert's token rows (A) and each band's
 * weights (B) are fetched from HBM about once for all m-tiles. */
#include "moe_mma.cuh"

#include "kernel_common.cuh"

namespace sm_moe_mma {
namespace {

constexpr int PM_BM = 128, PM_BN = 128, PM_BK = 32, PM_STAGES = 3, PM_THREADS = 256, PM_BAND = 8;
constexpr int PM_TILE = PM_BM * PM_BK; /* bf16 per operand per stage (B has PM_BN == PM_BM rows) */
constexpr size_t PM_SMEM = (size_t)PM_STAGES * 2 * PM_TILE * 2;
static_assert(PM_BN == PM_BM, "A and B stage tiles share one layout");

/* element offset of (row, 16-byte chunk) in a [128][32] stage tile */
__device__ __forceinline__ int swz(int row, int chunk) { return row * PM_BK + ((chunk ^ ((row >> 1) & 3)) << 3); }

template <bool GATED>
__global__ void __launch_bounds__(PM_THREADS, 2)
    prefill_mma_kernel(const __nv_bfloat16 *__restrict__ in, const __nv_bfloat16 *__restrict__ w,
                       const float *__restrict__ weight, __nv_bfloat16 *__restrict__ out,
                       const int *__restrict__ offsets, int num_experts, int K, int N, int n_tiles) {
    extern __shared__ uint4 smem_raw[];
    __nv_bfloat16 *As = reinterpret_cast<__nv_bfloat16 *>(smem_raw); /* [STAGES][BM*BK] */
    __nv_bfloat16 *Bs = As + PM_STAGES * PM_TILE;                    /* [STAGES][BN*BK] */
    __shared__ tile_ref pos;
    find_tile_warp0(offsets, num_experts, blockIdx.x, PM_BM, n_tiles, &pos);
    __syncthreads();
    const int e = pos.expert;
    if (e < 0) return; /* the grid is an upper bound on the tiles */

    int row0, rows, tn; /* this CTA's rows and n-tile within its expert (see the file comment) */
    band_tile(pos, PM_BM, n_tiles, PM_BAND, &row0, &rows, &tn);
    const int n0 = tn * (GATED ? PM_BN / 2 : PM_BN);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wm = warp >> 2, wn = warp & 3; /* warp tile: rows wm*64.., B-rows wn*32.. */
    const size_t w_rows = GATED ? 2 * (size_t)N : (size_t)N;
    const __nv_bfloat16 *we = w + (size_t)e * w_rows * K;

    /* This thread's two A rows and two B rows of every stage (rows tid/4 and tid/4 + 64, chunk
     * tid%4), their global sources at k = 0 and whether they exist. */
    const __nv_bfloat16 *a_src[2], *b_src[2];
    int a_bytes[2], b_bytes[2], dst[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int r = (tid >> 2) + 64 * h, c = tid & 3;
        dst[h] = swz(r, c);
        const bool a_ok = r < rows;
        a_src[h] = in + (size_t)(row0 + (a_ok ? r : 0)) * K + c * 8;
        a_bytes[h] = a_ok ? 16 : 0;
        int col, wrow;
        if (GATED) {
            col = n0 + (r >> 4) * 8 + (r & 7);
            wrow = ((r >> 3) & 1) ? N + col : col;
        } else {
            col = n0 + r;
            wrow = col;
        }
        const bool b_ok = col < N;
        b_src[h] = we + (size_t)(b_ok ? wrow : 0) * K + c * 8;
        b_bytes[h] = b_ok ? 16 : 0;
    }
    auto load_stage = [&](int slot, int kt) {
        const int k0 = kt * PM_BK;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            sm_cp_async16(As + slot * PM_TILE + dst[h], a_src[h] + k0, a_bytes[h]);
            sm_cp_async16(Bs + slot * PM_TILE + dst[h], b_src[h] + k0, b_bytes[h]);
        }
    };

    float acc[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[i][j][q] = 0.0f;

    const int KT = K / PM_BK;
#pragma unroll
    for (int st = 0; st < PM_STAGES - 1; st++) {
        if (st < KT) load_stage(st, st);
        sm_cp_async_commit(); /* one group per stage, empty or not, so the wait count below holds */
    }
    for (int kt = 0; kt < KT; kt++) {
        sm_cp_async_wait<PM_STAGES - 2>(); /* this thread's copies of stage kt landed */
        __syncthreads();                /* everyone's did, and everyone finished stage kt-1 */
        const int next = kt + PM_STAGES - 1;
        if (next < KT) load_stage(next % PM_STAGES, next); /* into the slot of stage kt-1 */
        sm_cp_async_commit();
        const __nv_bfloat16 *a = As + (kt % PM_STAGES) * PM_TILE, *b = Bs + (kt % PM_STAGES) * PM_TILE;
#pragma unroll
        for (int kk = 0; kk < PM_BK / 16; kk++) {
            uint32_t af[4][4], bf[4][2];
#pragma unroll
            for (int i = 0; i < 4; i++) /* x4: rows 0-7/8-15 at k 0-7, then at k 8-15 */
                sm_ldmatrix_x4(af[i], a + swz(wm * 64 + i * 16 + (lane & 15), kk * 2 + (lane >> 4)));
#pragma unroll
            for (int p = 0; p < 2; p++) { /* x4: n8 tile 2p at k 0-7, 8-15, then tile 2p+1 */
                uint32_t r[4];
                sm_ldmatrix_x4(r, b + swz(wn * 32 + p * 16 + ((lane >> 4) << 3) + (lane & 7), kk * 2 + ((lane >> 3) & 1)));
                bf[2 * p][0] = r[0];
                bf[2 * p][1] = r[1];
                bf[2 * p + 1][0] = r[2];
                bf[2 * p + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    sm_mma_16816(acc[i][j], af[i][0], af[i][1], af[i][2], af[i][3], bf[j][0], bf[j][1]);
        }
    }
    sm_cp_async_wait<0>(); /* only empty groups remain; leave none behind */

    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int m = wm * 64 + i * 16 + g + 8 * h;
            if (m >= rows) continue;
            const int r = row0 + m;
            __nv_bfloat16 *orow = out + (size_t)r * N;
            if (GATED) {
#pragma unroll
                for (int p = 0; p < 2; p++) {
                    const int col = n0 + (wn * 2 + p) * 8 + 2 * t;
                    if (col >= N) continue;
                    const float v0 = sm_silu(acc[i][2 * p][2 * h]) * acc[i][2 * p + 1][2 * h];
                    const float v1 = sm_silu(acc[i][2 * p][2 * h + 1]) * acc[i][2 * p + 1][2 * h + 1];
                    *reinterpret_cast<uint32_t *>(orow + col) = sm_pack2_bf16(v0, v1);
                }
            } else {
                const float s = weight[r];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int col = n0 + wn * 32 + j * 8 + 2 * t;
                    if (col >= N) continue;
                    *reinterpret_cast<uint32_t *>(orow + col) = sm_pack2_bf16(s * acc[i][j][2 * h], s * acc[i][j][2 * h + 1]);
                }
            }
        }
}

} // namespace

cudaError_t launch_prefill(bool gated, cudaStream_t s, const sm_moe_grouped_args *a, const void *in, const void *w,
                           const float *weight, void *out, int K, int N) {
    const int active = a->n_assign < a->num_experts ? a->n_assign : a->num_experts;
    /* sum over experts of ceil(n_e / BM) is at most this; surplus CTAs find no tile and exit */
    const long m_tiles = ((long)a->n_assign + (long)active * (PM_BM - 1)) / PM_BM;
    const int cols = gated ? PM_BN / 2 : PM_BN, n_tiles = (N + cols - 1) / cols;
    const dim3 grid((unsigned)(m_tiles * n_tiles));
    const __nv_bfloat16 *x = static_cast<const __nv_bfloat16 *>(in), *wb = static_cast<const __nv_bfloat16 *>(w);
    __nv_bfloat16 *o = static_cast<__nv_bfloat16 *>(out);
    /* 48 KB of stages plus the static tile_ref: opt in explicitly rather than rely on how the
     * default limit counts static shared memory. */
    cudaError_t err = gated ? cudaFuncSetAttribute(prefill_mma_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)PM_SMEM)
                            : cudaFuncSetAttribute(prefill_mma_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)PM_SMEM);
    if (err != cudaSuccess) return err;
    if (gated)
        prefill_mma_kernel<true><<<grid, PM_THREADS, PM_SMEM, s>>>(x, wb, weight, o, a->expert_offsets, a->num_experts,
                                                                   K, N, n_tiles);
    else
        prefill_mma_kernel<false><<<grid, PM_THREADS, PM_SMEM, s>>>(x, wb, weight, o, a->expert_offsets,
                                                                    a->num_experts, K, N, n_tiles);
    return cudaSuccess;
}

} // namespace sm_moe_mma
