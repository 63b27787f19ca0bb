/* kernels/moe_prefill_wgmma.cu — prefill regime on Hopper's warpgroup MMA (SM_MOE_REGIME_PREFILL_WGMMA).
 *
 * Why another prefill kernel. mma.sync (moe_prefill_mma.cu) is issued per warp from registers
 * that ldmatrix filled, and every thread also copies its share of each stage with cp.async: on an
 * H200 that reached 24.5% (Qwen3-30B shape) and 30.7% (Mixtral) of the cuBLASLt dense rate at
 * 4096 tokens. Hopper's own path moves both chores off the threads: the tensor memory accelerator
 * (TMA) copies whole tiles into shared memory, and wgmma multiplies a 64-row slab of A by a B
 * tile straight from shared memory, asynchronously, for a whole warpgroup.
 *
 * Layout of a CTA (288 threads): warpgroups 0 and 1 are consumers, each owning 64 rows of the
 * 128 x BN output tile (BN = 256 weight rows by default, 128 for A/B runs: wg_tile); the ninth
 * warp is the producer, of which one thread issues the TMA copies.
 *   - A tile: 128 token rows x 64 k (16 KB), B tile: BN weight rows x 64 k, both stored by TMA
 *     with the 128-byte swizzle that wgmma's shared-memory descriptors expect.
 *   - STAGES stages in a ring. full[s]: the producer announces the bytes, TMA completes them;
 *     empty[s]: each consumer warp arrives once it no longer reads stage s.
 *   - Consumers issue 4 wgmma m64nBNk16 per stage and keep one stage's group in flight
 *     (wgmma.wait_group 1) before releasing the stage before it.
 * Gated (gate_up): the B tile's first BN/2 rows are gate rows n0.. and the rest the up rows of
 * the same BN/2 columns (two TMA boxes), so a thread's accumulator for gate column c sits BN/4
 * registers before the up of c, and silu(gate)*up is formed in registers. Down: BN output
 * columns, the routing weight applied in the epilogue, which stages the tile in shared memory
 * and writes whole rows.
 *
 * Why BN 256 (H100, 4096 tokens, 2026-11-23): with 128 the Qwen3-30B layer was bound by L2
 * traffic (Nsight Compute: the L2 fabric 94% busy, DRAM 60%), every A tile being re-read by each
 * of the 12 (gate_up) or 16 (down) n-tile CTAs. 256 halves those reads: Qwen3 803.8 -> 740.5 us,
 * Mixtral 6134.6 -> 4855.1 us (470 -> 594 TFLOP/s), though it leaves one CTA an SM (H200, with
 * the staged epilogue: Qwen3 54% -> 60.5% of the cuBLASLt dense rate, Mixtral 71% -> 79%). Sharing A tiles across a cluster by TMA multicast instead (2 or 4 CTAs of one m-tile)
 * was correct but 1.9x / 2.9x slower: twice the L2 requests, and the fabric stayed saturated.
 *
 * Bounds: TMA fills reads outside the tensors with zeros — tokens past n_assign, weight rows past
 * the expert's, k past K — so any K (multiple of 8: 16-byte row strides) and N work; rows of the
 * next expert inside an m-tile are computed and not stored, columns past N are not stored.
 * Tiles are enumerated on the GPU from the device expert offsets (find_tile) in the banded
 * raster of band_tile (moe_mma.cuh), so a launch depends only on n_assign (graph-capturable).
 *
 * Tried and dropped (H200, 4096 tokens): persistent CTAs (two an SM, a scheduler warp finding the
 * next tiles while the others work) gained 5% at 512 tokens on Qwen3 but lost 3% (Qwen3) and 13%
 * (Mixtral) at 4096, where CTAs striding over the tiles no longer share the weights in L2. */
#include "moe_mma.cuh"

#include <cuda.h> /* CUtensorMap and its enums only: the encoder is reached through the runtime */
#include <stdint.h>
#include <stdlib.h>

#include "kernel_common.cuh"

namespace sm_moe_mma {
namespace {

constexpr int WG_BM = 128, WG_BK = 64, WG_BAND = 8;
constexpr int WG_CONSUMERS = 256, WG_THREADS = WG_CONSUMERS + 32; /* two consumer warpgroups, a producer warp */

/* A tile of 128 rows by BN weight rows (BN/2 output columns when gated). BN 128: three stages
 * (96 KB) let two CTAs share an SM, so one's pipeline fill and epilogue overlap the other's main
 * loop (on an H200 that beat four stages and one CTA by 13% on the Qwen3-30B layer at 4096 tokens,
 * 414.7 vs 367.2 TFLOP/s, and 5% on Mixtral). BN 256: each A tile serves twice the columns, so
 * half the A traffic from L2, at one CTA an SM (128 accumulators a thread) with four stages. */
template <int BN>
struct wg_tile {
    static constexpr int stages = BN == 128 ? 3 : 4, ctas_per_sm = BN == 128 ? 2 : 1;
    static constexpr uint32_t a_bytes = WG_BM * WG_BK * 2, b_bytes = BN * WG_BK * 2;
    static constexpr size_t smem = (size_t)stages * (a_bytes + b_bytes) + 1024; /* + room to align to 1024 */
};

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* ---- mbarrier ---------------------------------------------------------------------------- */
__device__ __forceinline__ void mbar_init(uint64_t *bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t *bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t *bar, unsigned parity) {
    uint32_t done = 0;
    while (!done)
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(smem_addr(bar)), "r"(parity)
                     : "memory");
}

/* ---- TMA ----------------------------------------------------------------------------------- */
__device__ __forceinline__ void tma_load_2d(void *dst, const CUtensorMap *map, int c0, int c1, uint64_t *bar) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
                 ::"r"(smem_addr(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(smem_addr(bar))
                 : "memory");
}
__device__ __forceinline__ void tma_load_3d(void *dst, const CUtensorMap *map, int c0, int c1, int c2, uint64_t *bar) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];"
                 ::"r"(smem_addr(dst)), "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
                 : "memory");
}

/* ---- wgmma --------------------------------------------------------------------------------- */
/* Shared-memory matrix descriptor of a K-major tile with the 128-byte swizzle: start address,
 * leading offset 1 (unused by this layout), 1024 bytes between 8-row groups, swizzle mode 1.
 * The tile starts 1024-byte aligned, so the base offset is 0; moving 16 k (32 bytes) along a
 * row is adding 32 to the start address. */
__device__ __forceinline__ uint64_t tile_desc(uint32_t addr) {
    return (uint64_t)((addr >> 4) & 0x3FFF) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

/* The two consumer warpgroups only (named barrier 1; the producer warp has left). */
__device__ __forceinline__ void consumer_sync() { asm volatile("bar.sync 1, %0;" ::"n"(WG_CONSUMERS) : "memory"); }

/* d (+)= A(64x16, desc a) * B(16xN, desc b), N = 2 * size of d (128 or 256); accumulate = 0
 * overwrites d. Fragment of d: thread t of the warpgroup holds, for each 8-column block j, rows
 * 16*(t/32) + (t%32)/4 (+8) at columns 8j + 2*(t%4) (+1): d[4j + {0,1}] on the upper row,
 * d[4j + {2,3}] on the lower. */
#define SM_D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
__device__ __forceinline__ void wgmma_m64k16(float (&d)[64], uint64_t a, uint64_t b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
                 "%64, %65, p, 1, 1, 0, 0;\n}\n"
                 : SM_D8(0), SM_D8(8), SM_D8(16), SM_D8(24), SM_D8(32), SM_D8(40), SM_D8(48), SM_D8(56)
                 : "l"(a), "l"(b), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_m64k16(float (&d)[128], uint64_t a, uint64_t b, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
                 "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
                 "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
                 "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
                 "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
                 "%128, %129, p, 1, 1, 0, 0;\n}\n"
                 : SM_D8(0), SM_D8(8), SM_D8(16), SM_D8(24), SM_D8(32), SM_D8(40), SM_D8(48), SM_D8(56),
                   SM_D8(64), SM_D8(72), SM_D8(80), SM_D8(88), SM_D8(96), SM_D8(104), SM_D8(112), SM_D8(120)
                 : "l"(a), "l"(b), "r"(accumulate));
}
#undef SM_D8

template <bool GATED, int BN>
__global__ void __launch_bounds__(WG_THREADS, wg_tile<BN>::ctas_per_sm)
    prefill_wgmma_kernel(const __grid_constant__ CUtensorMap tm_a, const __grid_constant__ CUtensorMap tm_b,
                         const float *__restrict__ weight, __nv_bfloat16 *__restrict__ out,
                         const int *__restrict__ offsets, int num_experts, int K, int N, int n_tiles) {
    extern __shared__ unsigned char smem_raw[];
    /* 128-byte swizzled tiles want 1024-byte alignment (the swizzle pattern repeats every 8 rows) */
    unsigned char *smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
    constexpr int STAGES = wg_tile<BN>::stages;
    constexpr uint32_t A_BYTES = wg_tile<BN>::a_bytes, B_BYTES = wg_tile<BN>::b_bytes;
    unsigned char *As = smem, *Bs = smem + STAGES * A_BYTES;
    __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
    __shared__ tile_ref pos;
    find_tile_warp0(offsets, num_experts, blockIdx.x, WG_BM, n_tiles, &pos);
    if (threadIdx.x == WG_CONSUMERS) {
        for (int s = 0; s < STAGES; s++) {
            mbar_init(&full[s], 1);  /* the producer's expect_tx; TMA completes the bytes */
            mbar_init(&empty[s], WG_CONSUMERS / 32); /* one arrive per consumer warp */
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    const int e = pos.expert;
    if (e < 0) return; /* the grid is an upper bound on the tiles */

    int row0, rows, tn;
    band_tile(pos, WG_BM, n_tiles, WG_BAND, &row0, &rows, &tn);
    const int n0 = tn * (GATED ? BN / 2 : BN);
    const int KT = (K + WG_BK - 1) / WG_BK;

    if (threadIdx.x >= WG_CONSUMERS) { /* producer: one thread walks the k-steps, STAGES ahead of the consumers */
        if (threadIdx.x == WG_CONSUMERS) {
            for (int kt = 0; kt < KT; kt++) {
                const int s = kt % STAGES, k0 = kt * WG_BK;
                if (kt >= STAGES) mbar_wait(&empty[s], (unsigned)((kt / STAGES - 1) & 1));
                mbar_expect_tx(&full[s], A_BYTES + B_BYTES);
                tma_load_2d(As + s * A_BYTES, &tm_a, k0, row0, &full[s]);
                if (GATED) {
                    tma_load_3d(Bs + s * B_BYTES, &tm_b, k0, n0, e, &full[s]);
                    tma_load_3d(Bs + s * B_BYTES + B_BYTES / 2, &tm_b, k0, N + n0, e, &full[s]);
                } else {
                    tma_load_3d(Bs + s * B_BYTES, &tm_b, k0, n0, e, &full[s]);
                }
            }
        }
        return;
    }

    const int slab = threadIdx.x >> 7; /* this warpgroup's 64 rows of the tile */
    /* An expert's last m-tile is often short (Qwen3-30B at 4096 tokens: ~256 +- 16 tokens an
     * expert, so half the experts have a third tile of a few rows). A warpgroup without rows keeps
     * the barrier schedule but issues no wgmma, leaving the SM's tensor cores to the other. */
    const bool live = slab * 64 < rows;
    /* Not zeroed: the first wgmma of the tile overwrites it (scale-d 0), and a warpgroup without
     * rows never reads it. Zeroing it with ordinary instructions made ptxas serialize every wgmma
     * of the kernel (warning C7515: "non wgmma instructions defining accumulator registers"). */
    float acc[BN / 2];
    for (int kt = 0; kt < KT; kt++) {
        const int s = kt % STAGES;
        mbar_wait(&full[s], (unsigned)((kt / STAGES) & 1));
        const uint32_t a = smem_addr(As + s * A_BYTES) + slab * 64 * 128, b = smem_addr(Bs + s * B_BYTES);
        if (live) {
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < WG_BK / 16; kk++)
                wgmma_m64k16(acc, tile_desc(a + kk * 32), tile_desc(b + kk * 32), kt > 0 || kk > 0);
            wgmma_commit();
        }
        wgmma_wait<1>(); /* the previous stage's group is done: its tiles may be overwritten */
        /* Every warp releases for itself: a warpgroup without rows issues no wgmma, so nothing keeps
         * its warps together, and a stage released by a warp that ran ahead could be refilled twice
         * before a lagging warp waits on it — which would then wait forever (an mbarrier tells
         * phases apart by parity only). Seen as a hang with persistent CTAs. */
        __syncwarp();
        if (kt > 0 && (threadIdx.x & 31) == 0) mbar_arrive(&empty[(kt - 1) % STAGES]);
    }
    wgmma_wait<0>();

    /* Epilogue through shared memory: fragments hold 4-byte pieces of 8 rows a warp, which as
     * global stores write half sectors; staged, each warp writes whole rows with 16-byte stores
     * (the Qwen3-30B down projection writes 134 MB at 4096 tokens). The stage ring is free: every
     * stage was waited on, and the barrier below waits for the other warpgroup's last wgmma. */
    constexpr int OUT_COLS = GATED ? BN / 2 : BN;
    constexpr int PITCH = OUT_COLS * 2 + 16; /* bytes; the 16 spread a warp's 8 rows over all banks */
    static_assert(WG_BM * PITCH <= STAGES * (A_BYTES + B_BYTES), "output tile fits the stage ring");
    consumer_sync();
    const int t = threadIdx.x & 127, r_hi = slab * 64 + 16 * (t >> 5) + ((t & 31) >> 2), c_in = 2 * (t & 3);
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int m = r_hi + 8 * h;
        if (m >= rows) continue;
        unsigned char *srow = smem + m * PITCH;
        if (GATED) {
#pragma unroll
            for (int j = 0; j < BN / 16; j++) { /* gate column block j; its up block is BN/16 blocks on */
                const float v0 = sm_silu(acc[4 * j + 2 * h]) * acc[BN / 4 + 4 * j + 2 * h];
                const float v1 = sm_silu(acc[4 * j + 2 * h + 1]) * acc[BN / 4 + 4 * j + 2 * h + 1];
                *reinterpret_cast<uint32_t *>(srow + (8 * j + c_in) * 2) = sm_pack2_bf16(v0, v1);
            }
        } else {
            const float sc = weight[row0 + m];
#pragma unroll
            for (int j = 0; j < BN / 8; j++)
                *reinterpret_cast<uint32_t *>(srow + (8 * j + c_in) * 2) =
                    sm_pack2_bf16(sc * acc[4 * j + 2 * h], sc * acc[4 * j + 2 * h + 1]);
        }
    }
    consumer_sync();
    /* N is a multiple of 8 (checked by the caller), so a 16-byte chunk is all in or all out. */
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, chunks = min(OUT_COLS, N - n0) / 8;
    for (int m = warp; m < rows; m += WG_CONSUMERS / 32) {
        const unsigned char *srow = smem + m * PITCH;
        uint4 *orow = reinterpret_cast<uint4 *>(out + (size_t)(row0 + m) * N + n0);
        for (int c = lane; c < chunks; c += 32) orow[c] = *reinterpret_cast<const uint4 *>(srow + c * 16);
    }
}

/* cuTensorMapEncodeTiled through the runtime's driver entry point (no link against libcuda). */
typedef CUresult (*encode_tiled_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                                    const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave,
                                    CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

/* A BF16 tensor of `rank` dims (dims[0] innermost, strides in bytes for dims 1..) read in boxes
 * of 64 x box_rows (x 1), 128-byte swizzled, zeros outside. */
cudaError_t encode(CUtensorMap *map, int rank, const void *base, const cuuint64_t *dims, const cuuint64_t *strides,
                   cuuint32_t box_rows) {
    void *fn = nullptr;
    cudaDriverEntryPointQueryResult q;
    cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q);
    if (e != cudaSuccess) return e;
    if (!fn || q != cudaDriverEntryPointSuccess) return cudaErrorNotSupported;
    const cuuint32_t box[3] = {(cuuint32_t)WG_BK, box_rows, 1}, elem_strides[3] = {1, 1, 1};
    CUresult r = reinterpret_cast<encode_tiled_fn>(fn)(
        map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, (cuuint32_t)rank, const_cast<void *>(base), dims, strides, box,
        elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
        CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

/* B tile rows: 256 unless SPECMOE_WGMMA_BN=128 (A/B runs, tests). */
static int tile_bn() {
    const char *env = getenv("SPECMOE_WGMMA_BN");
    return env && atoi(env) == 128 ? 128 : 256;
}

template <bool GATED, int BN>
cudaError_t launch_tiles(cudaStream_t s, const sm_moe_grouped_args *a, const void *in, const void *w,
                         const float *weight, void *out, int K, int N) {
    const int active = a->n_assign < a->num_experts ? a->n_assign : a->num_experts;
    const long m_tiles = ((long)a->n_assign + (long)active * (WG_BM - 1)) / WG_BM;
    const int cols = GATED ? BN / 2 : BN, n_tiles = (N + cols - 1) / cols;
    const int w_rows = GATED ? 2 * N : N;
    CUtensorMap tm_a, tm_b;
    const cuuint64_t a_dims[2] = {(cuuint64_t)K, (cuuint64_t)a->n_assign}, a_strides[1] = {(cuuint64_t)K * 2};
    const cuuint64_t b_dims[3] = {(cuuint64_t)K, (cuuint64_t)w_rows, (cuuint64_t)a->num_experts};
    const cuuint64_t b_strides[2] = {(cuuint64_t)K * 2, (cuuint64_t)w_rows * K * 2};
    cudaError_t err = encode(&tm_a, 2, in, a_dims, a_strides, WG_BM);
    if (err == cudaSuccess) err = encode(&tm_b, 3, w, b_dims, b_strides, cols);
    if (err != cudaSuccess) return err;
    auto kernel = prefill_wgmma_kernel<GATED, BN>;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)wg_tile<BN>::smem);
    if (err != cudaSuccess) return err;
    kernel<<<(unsigned)(m_tiles * n_tiles), WG_THREADS, wg_tile<BN>::smem, s>>>(
        tm_a, tm_b, weight, static_cast<__nv_bfloat16 *>(out), a->expert_offsets, a->num_experts, K, N, n_tiles);
    return cudaSuccess;
}

} // namespace

bool prefill_wgmma_accepts(const void *in, const void *w, const void *out) {
    /* TMA reads 16-byte aligned tensors; the epilogue writes 16-byte chunks */
    return ((uintptr_t)in & 15) == 0 && ((uintptr_t)w & 15) == 0 && ((uintptr_t)out & 15) == 0;
}

cudaError_t launch_prefill_wgmma(bool gated, cudaStream_t s, const sm_moe_grouped_args *a, const void *in,
                                 const void *w, const float *weight, void *out, int K, int N) {
    if (tile_bn() == 128)
        return gated ? launch_tiles<true, 128>(s, a, in, w, weight, out, K, N)
                     : launch_tiles<false, 128>(s, a, in, w, weight, out, K, N);
    return gated ? launch_tiles<true, 256>(s, a, in, w, weight, out, K, N)
                 : launch_tiles<false, 256>(s, a, in, w, weight, out, K, N);
}

} // namespace sm_moe_mma
