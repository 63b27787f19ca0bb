/* kernels/model_ops.h — the small kernels of the GPU forward besides attention and the MoE
 * runners: embedding gather, RMSNorm on the fp32 residual stream, bias add, q/k norm, RoPE,
 * the MoE permutation around a device runner, the shared-expert gate, argmax.
 *
 * The residual stream is fp32 (rows of `hidden` floats); GEMM inputs are BF16. Each launcher
 * has a CPU twin the tests in tests/gpu/test_model_ops.c compare it with (named per launcher).
 * Row strides (`stride`, in elements) let q, k and v be views of one fused qkv GEMM output. */
#ifndef SM_MODEL_OPS_H
#define SM_MODEL_OPS_H

#include <stdbool.h>

#include "kernel_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* x[r, :] = embed[tokens[r], :] as fp32.   embed [vocab, hidden] BF16.  Twin: a row copy. */
sm_status sm_cuda_embed_gather(cudaStream_t stream, const sm_bf16_bits *embed, const int *tokens, float *x, int rows,
                               int hidden, sm_error *err);

/* out[r] = x[src[r]] / sqrt(mean(x[src[r]]^2) + eps) * weight   (src NULL: src[r] = r).
 * x [*, dim] fp32; exactly one of out_f32 / out_bf16 is non-NULL ([rows, dim]); out_f32 may be x.
 * Twin: sm_cpu_rmsnorm. */
sm_status sm_cuda_rmsnorm_f32(cudaStream_t stream, const float *x, const int *src, const sm_bf16_bits *weight,
                              float *out_f32, sm_bf16_bits *out_bf16, int rows, int dim, float eps, sm_error *err);

/* x[r, 0..dim) += bias, rows with stride `stride`.  Twin: a loop. */
sm_status sm_cuda_add_bias_f32(cudaStream_t stream, float *x, int stride, const sm_bf16_bits *bias, int rows, int dim,
                               sm_error *err);

/* q/k norm in place: each of the `heads` slices of head_dim values of row r (row stride `stride`)
 * is RMS-normalised and multiplied by weight [head_dim]. heads = 1, head_dim = full projection
 * gives OLMoE's norm over the whole q (k).  Twin: sm_cpu_rmsnorm over (rows*heads, head_dim). */
sm_status sm_cuda_head_rmsnorm_f32(cudaStream_t stream, float *x, int stride, const sm_bf16_bits *weight, int rows,
                                   int heads, int head_dim, float eps, sm_error *err);

/* Rotary embedding, rotate-half layout, per-row positions pos[r] (device), in place over `heads`
 * heads of head_dim (row stride `stride`). Same fp32 arithmetic as sm_cpu_rope (its twin). */
sm_status sm_cuda_rope_f32(cudaStream_t stream, float *x, int stride, const int *pos, int rows, int heads,
                           int head_dim, float theta, sm_error *err);

/* MoE permutation (expert_ids [n_assign] with n_assign = rows*top_k, as router_topk writes them):
 *   expert_offsets [num_experts+1]: assignments of expert e are sorted positions off[e]..off[e+1)
 *   sorted_src [n_assign]: the assignment (r*top_k + j) at each sorted position
 *   sorted_pos [n_assign]: the sorted position of each assignment
 *   sorted_weight [n_assign]: its routing weight.
 * One block; the order inside an expert is unspecified (each row's result does not depend on it).
 * Twin: a counting sort. */
sm_status sm_cuda_moe_permute(cudaStream_t stream, const int *expert_ids, const float *weights, int n_assign,
                              int num_experts, int *expert_offsets, int *sorted_src, int *sorted_pos,
                              float *sorted_weight, sm_error *err);

/* xs[p, 0..hidden) = h[sorted_src[p] / top_k, :], zero in hidden..stride.  h [rows, hidden] BF16. */
sm_status sm_cuda_moe_gather(cudaStream_t stream, const sm_bf16_bits *h, int hidden, const int *sorted_src, int top_k,
                             sm_bf16_bits *xs, int stride, int n_assign, sm_error *err);

/* x[r, :] += sum_j ys[sorted_pos[r*top_k + j], :] (fp32 sum in slot order j). ys [n_assign, stride] BF16. */
sm_status sm_cuda_moe_combine(cudaStream_t stream, const sm_bf16_bits *ys, int stride, const int *sorted_pos,
                              int top_k, float *x, int rows, int hidden, sm_error *err);

/* out[r] = sigmoid(h[r, :] . w)   (Qwen2-MoE's shared-expert gate).  h [rows, dim] BF16, w [dim]. */
sm_status sm_cuda_row_dot_sigmoid(cudaStream_t stream, const sm_bf16_bits *h, const sm_bf16_bits *w, float *out,
                                  int rows, int dim, sm_error *err);

/* ids[r] = argmax logits[r, :] (first maximum on ties, as the CPU sampler's greedy pick). */
sm_status sm_cuda_argmax(cudaStream_t stream, const float *logits, int rows, int vocab, int *ids, sm_error *err);

#ifdef __cplusplus
}
#endif

#endif
