/* kernels/rmsnorm.cu — see rmsnorm.h. One CTA per row; the row's fp32 sum lives in shared
 * memory so x and residual are each read once from global memory. */
#include "rmsnorm.h"

#include "kernel_common.cuh"

namespace {

constexpr int RMS_THREADS = 256;

__global__ void __launch_bounds__(RMS_THREADS)
    rmsnorm_kernel(__nv_bfloat16 *__restrict__ x, __nv_bfloat16 *__restrict__ residual,
                   const __nv_bfloat16 *__restrict__ weight, int dim, float eps) {
    extern __shared__ float row[]; /* [dim] */
    __shared__ float partial[RMS_THREADS / 32];
    __nv_bfloat16 *xr = x + (size_t)blockIdx.x * dim;
    __nv_bfloat16 *rr = residual ? residual + (size_t)blockIdx.x * dim : nullptr;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = __bfloat162float(xr[i]);
        if (rr) {
            v += __bfloat162float(rr[i]);
            rr[i] = __float2bfloat16_rn(v);
        }
        row[i] = v;
        ss = fmaf(v, v, ss);
    }
    ss = sm_warp_sum(ss);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float p = threadIdx.x < RMS_THREADS / 32 ? partial[threadIdx.x] : 0.0f;
        p = sm_warp_sum(p);
        if (threadIdx.x == 0) partial[0] = p;
    }
    __syncthreads();
    const float scale = rsqrtf(partial[0] / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        xr[i] = __float2bfloat16_rn(row[i] * scale * __bfloat162float(weight[i]));
}

} // namespace

extern "C" sm_status sm_cuda_rmsnorm_residual(cudaStream_t stream, sm_bf16_bits *x, sm_bf16_bits *residual,
                                              const sm_bf16_bits *weight, int rows, int dim, float eps,
                                              sm_error *err) {
    if (rows < 0 || dim <= 0) return sm_fail(err, SM_EINVAL, "rmsnorm: bad shape (rows %d, dim %d)", rows, dim);
    if (rows == 0) return SM_OK;
    if (!x || !weight) return sm_fail(err, SM_EINVAL, "rmsnorm: NULL device pointer");
    const size_t smem = (size_t)dim * sizeof(float);
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(rmsnorm_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess)
            return sm_fail(err, SM_ECUDA, "rmsnorm: dim %d needs %zu bytes of shared memory: %s", dim, smem,
                           cudaGetErrorString(e));
    }
    rmsnorm_kernel<<<(unsigned)rows, RMS_THREADS, smem, stream>>>(reinterpret_cast<__nv_bfloat16 *>(x),
                                                                  reinterpret_cast<__nv_bfloat16 *>(residual),
                                                                  reinterpret_cast<const __nv_bfloat16 *>(weight),
                                                                  dim, eps);
    return sm_kernel_launched("rmsnorm", err);
}
