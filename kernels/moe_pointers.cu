/* kernels/moe_pointers.cu — see moe_pointers.h. */
#include "moe_pointers.h"

#include "kernel_common.cuh"

namespace {

/* The expert e with offsets[e] <= a < offsets[e + 1]; empty experts share their offset with the
 * next one, so the search keeps the last such e. */
__host__ __device__ int expert_of(const int *offsets, int num_experts, int a) {
    int lo = 0, hi = num_experts - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (offsets[mid] <= a) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

__global__ void pointer_table_kernel(sm_moe_pointer_args args, const void **table) {
    const int a = blockIdx.x * blockDim.x + threadIdx.x;
    sm_pdl_wait(); /* the offsets come from the routing launch before */
    if (a >= args.n_assign) return;
    const int e = expert_of(args.expert_offsets, args.num_experts, a);
    const int n = args.n_assign;
#pragma unroll
    for (int t = 0; t < SM_MOE_PTR_EXPERT_TABLES; t++)
        table[t * n + a] = (const char *)args.expert_base[t] + (size_t)e * args.expert_bytes[t];
#pragma unroll
    for (int t = 0; t < SM_MOE_PTR_ROW_TABLES; t++)
        table[(SM_MOE_PTR_EXPERT_TABLES + t) * n + a] = (const char *)args.row_base[t] + (size_t)a * args.row_bytes[t];
}

sm_status check(const sm_moe_pointer_args *a, const void **table, sm_error *err) {
    NEED(a && table && a->expert_offsets, "moe_pointer_table: NULL argument");
    NEED(a->num_experts > 0 && a->n_assign >= 0, "moe_pointer_table: bad shape (%d experts, %d assignments)",
         a->num_experts, a->n_assign);
    return SM_OK;
}

} // namespace

extern "C" sm_status sm_cuda_moe_pointer_table(cudaStream_t stream, const sm_moe_pointer_args *args, const void **table,
                                               sm_error *err) {
    SM_TRY(check(args, table, err));
    if (args->n_assign == 0) return SM_OK;
    const int threads = 128;
    sm_launch_pdl(pointer_table_kernel, (args->n_assign + threads - 1) / threads, threads, 0, stream, *args, table);
    return sm_kernel_launched("moe_pointer_table", err);
}

extern "C" sm_status sm_moe_pointer_table_ref(const sm_moe_pointer_args *args, const void **table, sm_error *err) {
    SM_TRY(check(args, table, err));
    const int n = args->n_assign;
    for (int a = 0; a < n; a++) {
        const int e = expert_of(args->expert_offsets, args->num_experts, a);
        for (int t = 0; t < SM_MOE_PTR_EXPERT_TABLES; t++)
            table[t * n + a] = (const char *)args->expert_base[t] + (size_t)e * args->expert_bytes[t];
        for (int t = 0; t < SM_MOE_PTR_ROW_TABLES; t++)
            table[(SM_MOE_PTR_EXPERT_TABLES + t) * n + a] = (const char *)args->row_base[t] + (size_t)a * args->row_bytes[t];
    }
    return SM_OK;
}
