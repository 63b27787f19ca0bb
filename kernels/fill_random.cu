/* kernels/fill_random.cu — see fill_random.h. */
#include "fill_random.h"

#include "kernel_common.cuh"

namespace {

/* splitmix64: a cheap, well-mixed hash of the index; good enough for test and bench data. */
__device__ __forceinline__ uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__global__ void fill_kernel(__nv_bfloat16 *dst, size_t n, uint64_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const uint64_t h = mix(seed ^ mix(i));
        const float u = (float)(h >> 40) * (1.0f / 8388608.0f) - 1.0f; /* 24 bits -> [-1, 1) */
        dst[i] = __float2bfloat16_rn(scale * u);
    }
}

} // namespace

extern "C" sm_status sm_cuda_fill_uniform_bf16(cudaStream_t stream, sm_bf16_bits *dst, size_t n, uint64_t seed,
                                               float scale, sm_error *err) {
    if (n == 0) return SM_OK;
    if (!dst) return sm_fail(err, SM_EINVAL, "fill_uniform_bf16: NULL device pointer");
    const size_t blocks = (n + 255) / 256;
    fill_kernel<<<(unsigned)(blocks < 8192 ? blocks : 8192), 256, 0, stream>>>(reinterpret_cast<__nv_bfloat16 *>(dst),
                                                                               n, seed, scale);
    return sm_kernel_launched("fill_uniform_bf16", err);
}
