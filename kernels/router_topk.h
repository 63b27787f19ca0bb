/* kernels/router_topk.h — MoE router: softmax over expert logits, top-k, optional renormalise.
 * CPU twin: sm_router_topk (src/moe/router.h); same order and the same tie rule (lower expert
 * id first), so ids agree exactly unless two logits differ by less than fp32 rounding. */
#ifndef SM_ROUTER_TOPK_H
#define SM_ROUTER_TOPK_H

#include <stdbool.h>

#include "kernel_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* logits: [rows, num_experts] fp32 -> expert_ids, weights: [rows, top_k] (descending weight). */
sm_status sm_cuda_router_topk(cudaStream_t stream, const float *logits, int rows, int num_experts, int top_k,
                              bool renormalize, int *expert_ids, float *weights, sm_error *err);

#ifdef __cplusplus
}
#endif

#endif
