/* kernels/attention_prefill.cu — see attention.h (sm_cuda_attention_prefill).
 *
 * Why. sm_cuda_attention gives every (row, head) a block that walks the row's positions with
 * fp32 dot products: right for decode and verification, where a row has one query, but a
 * prefill of P tokens then costs P^2/2 scalar dot products per head with no reuse of K/V between
 * rows (Qwen3-30B shape on an H200: 2.0 s for a 4096-token prompt, nearly all of it attention).
 *
 * Here a block takes 64 consecutive query rows of one head (16 per warp) and walks the K/V
 * positions 64 at a time, as flash attention does: the K and V tiles go through shared memory
 * once for all 64 rows, S = Q K^T and O += P V run on tensor cores (mma.sync m16n8k16, BF16 in,
 * fp32 accumulate), and the softmax is kept online (running max and sum per row, O rescaled
 * when the max grows). Q and the probabilities P are rounded to BF16 for the MMAs, which is
 * where the result differs from the fp32 kernel (within BF16 tolerance of the CPU twin).
 *
 * Fragment layouts (PTX ISA, m16n8k16, g = lane / 4, t = lane % 4):
 *   A (16x16, row): {A[g][2t..], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]}
 *   B (16x8, col):  {B[2t..][g], B[2t+8..][g]}    C: {C[g][2t..2t+1], C[g+8][2t..2t+1]}
 * Q is A (rows x dims); K tile rows are positions, so K^T's B fragments are consecutive dims of
 * K rows, read with ldmatrix (two k-steps a load); V is B with positions as k, read with
 * ldmatrix.trans. S's C fragments of two neighbouring 8-position blocks are exactly P's A
 * fragment for 16 positions, so P never leaves registers. Shared rows are padded to HD + 8
 * elements so the 8 rows a load touches fall in different banks.
 *
 * The K/V tiles are double-buffered (cp.async fills the next while the warps multiply the
 * current), and the query tiles with the most positions to walk run first (blockIdx.x counts
 * down), so the longest blocks do not form the tail of the grid. */
#include "attention.h"

#include <math.h>
#include <stdint.h>

#include "kernel_common.cuh"

namespace {

constexpr int PF_ROWS = 64, PF_KV = 64, PF_THREADS = 128;

/* Dynamic shared memory: two stages of a K and a V tile of PF_KV padded rows. */
constexpr size_t prefill_smem_bytes(int hd) { return (size_t)2 * 2 * PF_KV * (hd + 8) * sizeof(__nv_bfloat16); }

/* Three blocks an SM (168 registers, a few bytes spilled at head_dim 128) beat two (179): one
 * 4096-token prompt of the Qwen3-30B shape on an H200 110.5 -> 106.6 ms end to end. */
template <int HD>
__global__ void __launch_bounds__(PF_THREADS, 3)
    attention_prefill_kernel(const float *__restrict__ q, int q_stride, const __nv_bfloat16 *__restrict__ k_cache,
                             const __nv_bfloat16 *__restrict__ v_cache, const int *__restrict__ seq,
                             const int *__restrict__ pos, __nv_bfloat16 *__restrict__ out, int rows, int heads,
                             int kv_heads, int max_context, float scale_log2) {
    constexpr int LD = HD + 8, KS = HD / 16, DT = HD / 8; /* smem row stride; k-steps over dims; 8-dim tiles */
    extern __shared__ __align__(16) unsigned char kv_smem[];
    __nv_bfloat16 *const kv_tiles = reinterpret_cast<__nv_bfloat16 *>(kv_smem); /* [stage][K, V][PF_KV][LD] */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int h = blockIdx.y, kvd = kv_heads * HD, r_tile = (gridDim.x - 1 - blockIdx.x) * PF_ROWS;
    const int p0 = pos[0], last_row = min(rows, r_tile + PF_ROWS) - 1, kv_end = p0 + last_row + 1;
    const size_t cache0 = (size_t)seq[0] * max_context * kvd + (size_t)(h / (heads / kv_heads)) * HD;
    const __nv_bfloat16 *Kg = k_cache + cache0, *Vg = v_cache + cache0;

    /* this thread's two rows (g and g + 8 of the warp's 16) and their positions */
    int row[2], rpos[2];
    for (int i = 0; i < 2; i++) {
        row[i] = r_tile + 16 * warp + g + 8 * i;
        rpos[i] = p0 + row[i];
    }
    /* Q as A fragments, scaled by 1/sqrt(hd) * log2(e) (the softmax then uses exp2) */
    uint32_t qf[KS][4];
#pragma unroll
    for (int j = 0; j < KS; j++)
#pragma unroll
        for (int f = 0; f < 4; f++) {
            const int i = f & 1, col = 16 * j + 2 * t + 8 * (f >> 1);
            float2 v = make_float2(0.0f, 0.0f);
            if (row[i] < rows) v = *reinterpret_cast<const float2 *>(q + (size_t)row[i] * q_stride + (size_t)h * HD + col);
            qf[j][f] = sm_pack2_bf16(v.x * scale_log2, v.y * scale_log2);
        }

    float o[DT][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int d = 0; d < DT; d++)
#pragma unroll
        for (int c = 0; c < 4; c++) o[d][c] = 0.0f;

    /* positions past kv_end are zero-filled (and masked below) */
    auto load_tiles = [&](int kv0, int stage) {
        __nv_bfloat16 *Kd = kv_tiles + stage * 2 * PF_KV * LD, *Vd = Kd + PF_KV * LD;
        for (int i = threadIdx.x; i < PF_KV * (HD / 8); i += PF_THREADS) {
            const int r = i / (HD / 8), c = (i % (HD / 8)) * 8, p = kv0 + r;
            const bool in = p < kv_end;
            const size_t off = (size_t)(in ? p : 0) * kvd + c;
            sm_cp_async16(Kd + r * LD + c, Kg + off, in ? 16 : 0);
            sm_cp_async16(Vd + r * LD + c, Vg + off, in ? 16 : 0);
        }
        sm_cp_async_commit();
    };
    const int n_tiles = (kv_end + PF_KV - 1) / PF_KV;
    load_tiles(0, 0);
    for (int it = 0; it < n_tiles; it++) {
        const int kv0 = it * PF_KV;
        sm_cp_async_wait<0>();
        __syncthreads(); /* tile it has landed, and every warp is done with the stage refilled next */
        if (it + 1 < n_tiles) load_tiles(kv0 + PF_KV, (it + 1) & 1);
        const __nv_bfloat16 *Ks = kv_tiles + (it & 1) * 2 * PF_KV * LD, *Vs = Ks + PF_KV * LD;

        float s[8][4]; /* S for the warp's 16 rows x 64 positions */
#pragma unroll
        for (int n = 0; n < 8; n++) {
#pragma unroll
            for (int c = 0; c < 4; c++) s[n][c] = 0.0f;
            /* lanes 8i..8i+7 address dims 8i.. of positions 8n..8n+7: b[0..1] for k-step j, b[2..3] for j+1 */
            const __nv_bfloat16 *kr = Ks + (8 * n + (lane & 7)) * LD + 8 * (lane >> 3);
#pragma unroll
            for (int j = 0; j < KS; j += 2) {
                uint32_t b[4];
                sm_ldmatrix_x4(b, kr + 16 * j);
                sm_mma_16816(s[n], qf[j][0], qf[j][1], qf[j][2], qf[j][3], b[0], b[1]);
                sm_mma_16816(s[n], qf[j + 1][0], qf[j + 1][1], qf[j + 1][2], qf[j + 1][3], b[2], b[3]);
            }
        }
        /* causal mask (also hides the zero rows past kv_end), then the online softmax per row */
#pragma unroll
        for (int i = 0; i < 2; i++) {
            float mx = -INFINITY;
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    if (kv0 + 8 * n + 2 * t + c > rpos[i]) s[n][2 * i + c] = -INFINITY;
                    mx = fmaxf(mx, s[n][2 * i + c]);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m[i], mx); /* finite: position 0 is in every row's first tile */
            const float corr = exp2f(m[i] - m_new);
            m[i] = m_new;
            l[i] *= corr;
#pragma unroll
            for (int d = 0; d < DT; d++) {
                o[d][2 * i] *= corr;
                o[d][2 * i + 1] *= corr;
            }
#pragma unroll
            for (int n = 0; n < 8; n++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    const float p = exp2f(s[n][2 * i + c] - m_new);
                    s[n][2 * i + c] = p;
                    l[i] += p;
                }
        }
        /* O += P V, 16 positions per k-step */
#pragma unroll
        for (int kk = 0; kk < PF_KV / 16; kk++) {
            const uint32_t pa[4] = {sm_pack2_bf16(s[2 * kk][0], s[2 * kk][1]), sm_pack2_bf16(s[2 * kk][2], s[2 * kk][3]),
                                    sm_pack2_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    sm_pack2_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            const __nv_bfloat16 *vr = Vs + (16 * kk + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + (lane >> 4) * 8;
#pragma unroll
            for (int d = 0; d < DT; d += 2) {
                uint32_t b[4];
                sm_ldmatrix_x4<true>(b, vr + 8 * d);
                sm_mma_16816(o[d], pa[0], pa[1], pa[2], pa[3], b[0], b[1]);
                sm_mma_16816(o[d + 1], pa[0], pa[1], pa[2], pa[3], b[2], b[3]);
            }
        }
    }

#pragma unroll
    for (int i = 0; i < 2; i++) {
        float sum = l[i];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        if (row[i] >= rows) continue;
        const float inv = 1.0f / sum;
        __nv_bfloat16 *orow = out + (size_t)row[i] * heads * HD + (size_t)h * HD + 2 * t;
#pragma unroll
        for (int d = 0; d < DT; d++)
            *reinterpret_cast<uint32_t *>(orow + 8 * d) = sm_pack2_bf16(o[d][2 * i] * inv, o[d][2 * i + 1] * inv);
    }
}

} // namespace

extern "C" bool sm_cuda_attention_prefill_fits(int rows, int heads, int kv_heads, int head_dim) {
    return rows >= 1 && (head_dim == 64 || head_dim == 128) && kv_heads >= 1 && heads % kv_heads == 0;
}

extern "C" sm_status sm_cuda_attention_prefill(cudaStream_t stream, const float *q, int q_stride,
                                               const sm_bf16_bits *k_cache, const sm_bf16_bits *v_cache, const int *seq,
                                               const int *pos, sm_bf16_bits *out, int rows, int heads, int kv_heads,
                                               int head_dim, int max_context, float scale, sm_error *err) {
    NEED(sm_cuda_attention_prefill_fits(rows, heads, kv_heads, head_dim),
         "attention_prefill: shape not supported (rows %d, heads %d / kv_heads %d, head_dim %d: head_dim 64 or 128)", rows,
         heads, kv_heads, head_dim);
    NEED(q && k_cache && v_cache && seq && pos && out, "attention_prefill: NULL device pointer");
    NEED(q_stride % 2 == 0 && ((uintptr_t)q & 7) == 0, "attention_prefill: q rows must be 8-byte aligned (stride %d)",
         q_stride);
    const dim3 grid((unsigned)((rows + PF_ROWS - 1) / PF_ROWS), (unsigned)heads);
    const float scale_log2 = scale * 1.4426950408889634f; /* exp(x) = exp2(x * log2 e) */
    auto kernel = head_dim == 64 ? attention_prefill_kernel<64> : attention_prefill_kernel<128>;
    const size_t smem = prefill_smem_bytes(head_dim);
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess)
        return sm_fail(err, SM_ECUDA, "attention_prefill: %zu bytes of shared memory: %s", smem, cudaGetErrorString(e));
    kernel<<<grid, PF_THREADS, smem, stream>>>(q, q_stride, (cbf)k_cache, (cbf)v_cache, seq, pos, (__nv_bfloat16 *)out, rows,
                                               heads, kv_heads, max_context, scale_log2);
    return sm_kernel_launched("attention_prefill", err);
}
