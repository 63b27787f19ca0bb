/* kernels/moe_mma.cuh — internal to the grouped MoE kernels (moe_grouped.cu dispatches, the
 * tensor-core regimes live in moe_decode_mma.cu, moe_prefill_mma.cu and moe_prefill_wgmma.cu):
 * their launchers and the GPU-side tile enumeration over expert offsets they share (the MMA,
 * ldmatrix and cp.async helpers are in kernel_common.cuh). Not a C API. */
#ifndef SM_MOE_MMA_CUH
#define SM_MOE_MMA_CUH

#include <limits.h>

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "kernel_common.cuh"
#include "moe_grouped.h"

namespace sm_moe_mma {

/* ---- launchers (host) ------------------------------------------------------------------------
 * Same operands as the launchers of moe_grouped.h: in [n_assign, K], w [E][(gated ? 2N : N)][K],
 * out [n_assign, N]; weight (routing weights) only for the down projection. Arguments are
 * checked by the caller. They return the first CUDA error of setting attributes; the launch
 * error itself is read by the caller with cudaGetLastError. */
/* early (down only): find the expert and request the first weights before the PDL wait — only
 * after a decode-mma gate_up, which signals its dependents after its own wait (the chained down
 * of moe_grouped.cu). */
cudaError_t launch_decode(bool gated, cudaStream_t s, const sm_moe_grouped_args *a, const void *in, const void *w,
                          const float *weight, void *out, int K, int N, bool early = false);
cudaError_t launch_prefill(bool gated, cudaStream_t s, const sm_moe_grouped_args *a, const void *in, const void *w,
                           const float *weight, void *out, int K, int N);

/* Hopper's wgmma + TMA prefill (moe_prefill_wgmma.cu): any K and N (multiples of 8); the tensors
 * must be 16-byte aligned, for TMA and the epilogue's 16-byte stores (true of the runners' buffers). */
cudaError_t launch_prefill_wgmma(bool gated, cudaStream_t s, const sm_moe_grouped_args *a, const void *in,
                                 const void *w, const float *weight, void *out, int K, int N);
bool prefill_wgmma_accepts(const void *in, const void *w, const void *out);

/* Tokens of one expert the decode-mma kernel serves per pass over its weights (8, 16 or 32). */
int decode_tokens_per_pass(const sm_moe_grouped_args *a);

/* Shapes the prefill-mma kernel takes: K a multiple of 32 (whole k-steps, no K tail) and N a
 * multiple of 64 (whole 64-column gate/up halves; the 128-wide down tile predicates its upper
 * half). Others run the WMMA prefill kernel. Real models (Qwen3, Mixtral, OLMoE) qualify. */
inline bool prefill_accepts(int K, int N) { return K % 32 == 0 && N % 64 == 0; }

/* The smallest power of two >= n (host: tile sizes). */
inline int ceil_pow2(int n) {
    int p = 1;
    while (p < n) p <<= 1;
    return p;
}

/* ---- device helpers -------------------------------------------------------------------------- */

/* The early down projection reads the expert offsets before its PDL wait (moe_grouped.cu says
 * why that is safe): through L2 (the writer may have run on another SM since this CTA's L1 saw
 * them) into shared memory, all in one round trip. Returns the shared copy. */
__device__ __forceinline__ const int *offsets_to_shared(const int *offsets, int num_experts, int *dst) {
    for (int e = threadIdx.x; e <= num_experts; e += blockDim.x) dst[e] = __ldcg(offsets + e);
    __syncthreads();
    return dst;
}

/* Where a CTA's tile lies: expert e with `count` rows from `begin`, and the CTA's index among
 * that expert's tiles. expert = -1: no tile (the grid is an upper bound). */
struct tile_ref {
    int expert, begin, count, local;
};

/* Expert e owns ceil(n_e / tile_rows) * n_tiles consecutive tiles, in expert order. Called by
 * warp 0 only: the warp walks the device offsets 32 experts at a time with a prefix sum
 * (~E/32 steps), so the mapping follows routing written after a graph was captured.
 * out->expert must be -1 beforehand; only the owning lane writes.
 * The offsets of the first FIND_TILE_CHUNKS chunks (128 experts) are requested together before
 * any is scanned: loaded chunk by chunk, they cost up to four dependent L2 round trips at the
 * start of every CTA, before it could request a single weight. */
constexpr int FIND_TILE_CHUNKS = 4;

__device__ __forceinline__ void find_tile(const int *offsets, int num_experts, int tile, int tile_rows, int n_tiles,
                                          tile_ref *out) {
    const int lane = threadIdx.x & 31;
    int before = 0; /* tiles of the experts in earlier chunks */
    /* One chunk of 32 experts from e0 (this lane's expert has n rows from begin); true once the
     * tile is found (uniform: before is the same in every lane). */
    auto scan_chunk = [&](int e0, int begin, int n) {
        const int t = n > 0 ? ((n - 1) / tile_rows + 1) * n_tiles : 0;
        int incl = t;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int v = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += v;
        }
        const int excl = incl - t, chunk_total = __shfl_sync(0xffffffffu, incl, 31);
        if (tile >= before + excl && tile < before + incl) {
            out->expert = e0 + lane;
            out->begin = begin;
            out->count = n;
            out->local = tile - before - excl;
        }
        before += chunk_total;
        return before > tile;
    };
    /* offsets[c * 32 + lane]; one more chunk holds the end of the last expert of each */
    int first[FIND_TILE_CHUNKS + 1];
#pragma unroll
    for (int c = 0; c <= FIND_TILE_CHUNKS; c++) {
        const int e = c * 32 + lane;
        first[c] = e <= num_experts ? offsets[e] : 0;
    }
#pragma unroll
    for (int c = 0; c < FIND_TILE_CHUNKS; c++) {
        if (c * 32 >= num_experts) return;
        const int next = __shfl_sync(0xffffffffu, first[c], (lane + 1) & 31), next0 = __shfl_sync(0xffffffffu, first[c + 1], 0);
        const int end = lane < 31 ? next : next0;
        if (scan_chunk(c * 32, first[c], c * 32 + lane < num_experts ? end - first[c] : 0)) return;
    }
    for (int e0 = FIND_TILE_CHUNKS * 32; e0 < num_experts; e0 += 32) {
        const int e = e0 + lane, b = e < num_experts ? offsets[e] : 0;
        if (scan_chunk(e0, b, e < num_experts ? offsets[e + 1] - b : 0)) return;
    }
}

/* find_tile by warp 0 of the block into the shared *pos (expert -1: the grid is an upper bound
 * on the tiles and this one has none); the caller synchronises the block before reading it. */
__device__ __forceinline__ void find_tile_warp0(const int *offsets, int num_experts, int tile, int tile_rows, int n_tiles,
                                                tile_ref *pos) {
    if (threadIdx.x >= 32) return;
    if (threadIdx.x == 0) pos->expert = -1;
    __syncwarp();
    find_tile(offsets, num_experts, tile, tile_rows, n_tiles, pos);
}

/* The expert of decode slot `slot`: one tile per non-empty expert, holding all its rows (begin,
 * count). Called by the whole block (it synchronises); expert -1: fewer active experts than slots. */
__device__ __forceinline__ tile_ref expert_of_slot(const int *offsets, int num_experts, int slot) {
    __shared__ tile_ref pos;
    find_tile_warp0(offsets, num_experts, slot, INT_MAX, 1, &pos);
    __syncthreads();
    return pos;
}

/* Rows [*row0, *row0 + *rows) and n-tile *tn of the tile find_tile gave (tile_rows rows, n_tiles
 * n-tiles an m-tile), in a banded raster: an expert's n-tiles go in bands of `band`, and a band's
 * tiles run m-tile by m-tile with its n-tiles adjacent, so resident CTAs share the expert's token
 * rows and each band's weights are fetched from HBM about once for all m-tiles. */
__device__ __forceinline__ void band_tile(const tile_ref &pos, int tile_rows, int n_tiles, int band, int *row0,
                                          int *rows, int *tn) {
    const int m_tiles = (pos.count + tile_rows - 1) / tile_rows;
    const int b = pos.local / (m_tiles * band), in_band = pos.local % (m_tiles * band);
    const int band_w = min(band, n_tiles - b * band);
    const int tm = in_band / band_w;
    *tn = b * band + in_band % band_w;
    *row0 = pos.begin + tm * tile_rows;
    *rows = min(tile_rows, pos.count - tm * tile_rows);
}

} // namespace sm_moe_mma

#endif
