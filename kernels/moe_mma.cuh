/* kernels/moe_mma.cuh — internal to the grouped MoE kernels (moe_grouped.cu dispatches, the
 * tensor-core regimes live in moe_decode_mma.cu and moe_prefill_mma.cu): their launchers and
 * the device helpers they share (warp-level bf16 MMA through inline PTX, cp.async, ldmatrix,
 * the GPU-side tile enumeration over expert offsets). Not a C API. */
#ifndef SM_MOE_MMA_CUH
#define SM_MOE_MMA_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "moe_grouped.h"

namespace sm_moe_mma {

/* ---- launchers (host) ------------------------------------------------------------------------
 * Same operands as the launchers of moe_grouped.h: in [n_assign, K], w [E][(gated ? 2N : N)][K],
 * out [n_assign, N]; weight (routing weights) only for the down projection. Arguments are
 * checked by the caller. They return the first CUDA error of setting attributes; the launch
 * error itself is read by the caller with cudaGetLastError. */
cudaError_t launch_decode(bool gated, cudaStream_t s, const sm_moe_grouped_args *a, const void *in, const void *w,
                          const float *weight, void *out, int K, int N);
cudaError_t launch_prefill(bool gated, cudaStream_t s, const sm_moe_grouped_args *a, const void *in, const void *w,
                           const float *weight, void *out, int K, int N);

/* Hopper's wgmma + TMA prefill (moe_prefill_wgmma.cu): any K (multiple of 8) and N; the tensors
 * must be 16-byte aligned for TMA (true of the runners' buffers). */
cudaError_t launch_prefill_wgmma(bool gated, cudaStream_t s, const sm_moe_grouped_args *a, const void *in,
                                 const void *w, const float *weight, void *out, int K, int N);
bool prefill_wgmma_accepts(const void *in, const void *w);

/* Tokens of one expert the decode-mma kernel serves per pass over its weights (8, 16 or 32). */
int decode_tokens_per_pass(const sm_moe_grouped_args *a);

/* Shapes the prefill-mma kernel takes: K a multiple of 32 (whole k-steps, no K tail) and N a
 * multiple of 64 (whole 64-column gate/up halves; the 128-wide down tile predicates its upper
 * half). Others run the WMMA prefill kernel. Real models (Qwen3, Mixtral, OLMoE) qualify. */
inline bool prefill_accepts(int K, int N) { return K % 32 == 0 && N % 64 == 0; }

/* ---- device helpers -------------------------------------------------------------------------- */

/* Where a CTA's tile lies: expert e with `count` rows from `begin`, and the CTA's index among
 * that expert's tiles. expert = -1: no tile (the grid is an upper bound). */
struct tile_ref {
    int expert, begin, count, local;
};

/* Expert e owns ceil(n_e / tile_rows) * n_tiles consecutive tiles, in expert order. Called by
 * warp 0 only: the warp walks the device offsets 32 experts at a time with a prefix sum
 * (~E/32 steps), so the mapping follows routing written after a graph was captured.
 * out->expert must be -1 beforehand; only the owning lane writes. */
__device__ __forceinline__ void find_tile(const int *offsets, int num_experts, int tile, int tile_rows, int n_tiles,
                                          tile_ref *out) {
    const int lane = threadIdx.x & 31;
    int before = 0; /* tiles of the experts in earlier chunks */
    for (int e0 = 0; e0 < num_experts; e0 += 32) {
        const int e = e0 + lane;
        int begin = 0, n = 0;
        if (e < num_experts) {
            begin = offsets[e];
            n = offsets[e + 1] - begin;
        }
        const int t = n > 0 ? ((n - 1) / tile_rows + 1) * n_tiles : 0;
        int incl = t;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int v = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += v;
        }
        const int excl = incl - t, chunk_total = __shfl_sync(0xffffffffu, incl, 31);
        if (tile >= before + excl && tile < before + incl) {
            out->expert = e;
            out->begin = begin;
            out->count = n;
            out->local = tile - before - excl;
        }
        before += chunk_total;
        if (before > tile) break; /* uniform: chunk_total is the same in every lane */
    }
}

/* D += A·B for one m16n8k16 tile, bf16 inputs, fp32 accumulators (PTX ISA fragment layouts:
 * a = {(g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..)}, b = {(2t.., g), (2t+8.., g)},
 * c = {(g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)} with g = lane/4, t = lane%4). */
__device__ __forceinline__ void mma_16816(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                          uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *smem) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s)
                 : "memory");
}

/* 16 bytes global -> shared, bypassing L1; src_bytes 0 writes zeros (predicated-off rows). */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int src_bytes) {
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

} // namespace sm_moe_mma

#endif
