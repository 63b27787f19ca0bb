/* kernels/silu_mul.cu — see silu_mul.h. */
#include "silu_mul.h"

#include "kernel_common.cuh"

namespace {

/* 8 columns per thread with 16-byte loads when ffn allows it, one otherwise. */
template <int V>
__global__ void silu_mul_kernel(const __nv_bfloat16 *__restrict__ gu, const float *__restrict__ row_scale,
                                __nv_bfloat16 *__restrict__ out, int rows, int ffn) {
    const int per_row = ffn / V;
    const long total = (long)rows * per_row;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
        const int r = (int)(i / per_row), c = (int)(i % per_row) * V;
        const float s = row_scale ? row_scale[r] : 1.0f;
        const __nv_bfloat16 *g = gu + (size_t)r * 2 * ffn + c, *u = g + ffn;
        if (V == 8) {
            float fg[8], fu[8], v[8];
            sm_unpack8(*reinterpret_cast<const uint4 *>(g), fg);
            sm_unpack8(*reinterpret_cast<const uint4 *>(u), fu);
#pragma unroll
            for (int q = 0; q < 8; q++) v[q] = sm_silu(fg[q]) * fu[q] * s;
            *reinterpret_cast<uint4 *>(out + (size_t)r * ffn + c) = sm_pack8(v);
        } else {
            out[(size_t)r * ffn + c] = __float2bfloat16_rn(sm_silu(__bfloat162float(*g)) * __bfloat162float(*u) * s);
        }
    }
}

} // namespace

extern "C" sm_status sm_cuda_silu_mul(cudaStream_t stream, const sm_bf16_bits *gate_up, const float *row_scale,
                                      sm_bf16_bits *out, int rows, int ffn, sm_error *err) {
    if (rows < 0 || ffn <= 0) return sm_fail(err, SM_EINVAL, "silu_mul: bad shape (rows %d, ffn %d)", rows, ffn);
    if (rows == 0) return SM_OK;
    if (!gate_up || !out) return sm_fail(err, SM_EINVAL, "silu_mul: NULL device pointer");
    const int v = ffn % 8 == 0 ? 8 : 1;
    const long work = (long)rows * (ffn / v);
    const int threads = 256;
    const long blocks = (work + threads - 1) / threads;
    const unsigned grid = (unsigned)(blocks < 65536 ? blocks : 65536);
    const __nv_bfloat16 *g = reinterpret_cast<const __nv_bfloat16 *>(gate_up);
    __nv_bfloat16 *o = reinterpret_cast<__nv_bfloat16 *>(out);
    if (v == 8) silu_mul_kernel<8><<<grid, threads, 0, stream>>>(g, row_scale, o, rows, ffn);
    else silu_mul_kernel<1><<<grid, threads, 0, stream>>>(g, row_scale, o, rows, ffn);
    return sm_kernel_launched("silu_mul", err);
}
