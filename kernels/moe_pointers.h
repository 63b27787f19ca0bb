/* kernels/moe_pointers.h — the pointer tables of a batched GEMM over assignments: for every
 * assignment a (rows sorted by expert, as the routing leaves them), the address of its expert's
 * weights and of its own rows. cuBLASLt's pointer-array batches read such tables from device
 * memory, so the `cublaslt` runner can follow routing that only the GPU knows (graph replays).
 * CPU twin: sm_moe_pointer_table_ref below, same arguments, host memory. */
#ifndef SM_MOE_POINTERS_H
#define SM_MOE_POINTERS_H

#include <stddef.h>

#include "kernel_api.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SM_MOE_PTR_EXPERT_TABLES 2 /* gate|up weights, down weights */
#define SM_MOE_PTR_ROW_TABLES 4    /* x, gate|up out, activation, y */

typedef struct sm_moe_pointer_args {
    const int *expert_offsets;    /* [num_experts + 1], offsets[E] == n_assign */
    int num_experts, n_assign;
    const void *expert_base[SM_MOE_PTR_EXPERT_TABLES];
    size_t expert_bytes[SM_MOE_PTR_EXPERT_TABLES];  /* from one expert's weights to the next */
    const void *row_base[SM_MOE_PTR_ROW_TABLES];
    size_t row_bytes[SM_MOE_PTR_ROW_TABLES];         /* from one assignment's row to the next */
} sm_moe_pointer_args;

/* table[t * n_assign + a]: t < SM_MOE_PTR_EXPERT_TABLES gives expert_base[t] + e(a) *
 * expert_bytes[t] with e(a) the expert whose offset range holds a; the next
 * SM_MOE_PTR_ROW_TABLES tables give row_base[t] + a * row_bytes[t]. table is device memory of
 * (SM_MOE_PTR_EXPERT_TABLES + SM_MOE_PTR_ROW_TABLES) * n_assign pointers. */
sm_status sm_cuda_moe_pointer_table(cudaStream_t stream, const sm_moe_pointer_args *args, const void **table,
                                    sm_error *err);

/* The same on the host (args->expert_offsets and table in host memory). */
sm_status sm_moe_pointer_table_ref(const sm_moe_pointer_args *args, const void **table, sm_error *err);

#ifdef __cplusplus
}
#endif

#endif
