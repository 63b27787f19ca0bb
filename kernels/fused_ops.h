/* kernels/fused_ops.h — fused versions of chains of the decode step's small kernels.
 *
 * At a few rows the GPU step is bound by kernel latency, not bytes: each of these launchers
 * replaces a chain of model_ops.h / router_topk.h / attention.h launches with one, and computes
 * the same thing with the same fp32 arithmetic in the same order, so results are bit-identical
 * to the chain they replace (tests/gpu/test_fused_ops.c compares them bit for bit). Like every
 * launcher they take an explicit stream, never synchronise, and are graph-capturable. */
#ifndef SM_FUSED_OPS_H
#define SM_FUSED_OPS_H

#include <stdbool.h>

#include "kernel_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* On the fp32 q|k|v GEMM output qkv ([rows] rows of `stride` floats: q at 0, k at heads*head_dim,
 * v at (heads + kv_heads)*head_dim), per row r, in place:
 *   q_norm, k_norm != NULL: each q (k) head is RMS-normalised and scaled by q_norm (k_norm)
 *                           [head_dim] (Qwen3's per-head q/k norm); both NULL: no norm;
 *   RoPE (rotate-half, theta, position pos[r]) of every q and k head;
 *   k_cache/v_cache[seq[r]][pos[r]] = BF16(k), BF16(v), cache layout as sm_cuda_kv_write.
 * Equals, bit for bit, sm_cuda_head_rmsnorm_f32(q), (k), sm_cuda_rope_f32(q), (k),
 * sm_cuda_kv_write — q and k in qkv included. head_dim even and <= 256. OLMoE's norm over the
 * whole q (k) is not covered: keep the unfused chain for it. */
sm_status sm_cuda_qk_norm_rope_kv(cudaStream_t stream, float *qkv, int stride, int rows, int heads, int kv_heads,
                                  int head_dim, const sm_bf16_bits *q_norm, const sm_bf16_bits *k_norm, float eps,
                                  const int *pos, float theta, const int *seq, sm_bf16_bits *k_cache,
                                  sm_bf16_bits *v_cache, int max_context, sm_error *err);

/* Limits of sm_cuda_moe_route (beyond them it returns SM_EINVAL: use the unfused chain). */
#define SM_MOE_ROUTE_MAX_ROWS 256
#define SM_MOE_ROUTE_MAX_EXPERTS 512
#define SM_MOE_ROUTE_MAX_ASSIGN 2048

/* The MoE routing of a decode-sized batch in one launch: router top-k, permutation by expert and
 * gather of the expert inputs. logits [rows, num_experts] fp32, h [rows, hidden] BF16.
 *   expert_ids, weights [rows*top_k]: exactly as sm_cuda_router_topk writes them (same softmax
 *     arithmetic, same tie rule: lower expert id first);
 *   expert_offsets [num_experts+1], sorted_src, sorted_pos, sorted_weight [rows*top_k]: as
 *     sm_cuda_moe_permute, with the order inside an expert fixed: ascending row;
 *   xs [rows*top_k, stride] BF16: as sm_cuda_moe_gather (zero in hidden..stride).
 * NaN logits rank below every number (router_topk's ids are unspecified there).
 * Every block of the grid computes the (cheap) routing itself, block 0 writes it, and each block
 * gathers its share of xs: no inter-block synchronisation. Limits: rows <= SM_MOE_ROUTE_MAX_ROWS,
 * num_experts <= SM_MOE_ROUTE_MAX_EXPERTS, rows*top_k <= SM_MOE_ROUTE_MAX_ASSIGN. Made for decode
 * and small verify batches: each warp of a block routes rows/32 rows one after the other, so from
 * some tens of rows the chain can be faster — test_gpu_fused_ops prints both timings. */
sm_status sm_cuda_moe_route(cudaStream_t stream, const float *logits, int rows, int num_experts, int top_k,
                            bool renormalize, const sm_bf16_bits *h, int hidden, int stride, int *expert_ids,
                            float *weights, int *expert_offsets, int *sorted_src, int *sorted_pos,
                            float *sorted_weight, sm_bf16_bits *xs, sm_error *err);

/* x[r, :] += sum_j ys[sorted_pos[r*top_k + j], :] (as sm_cuda_moe_combine: fp32, slot order j),
 * then, when weight != NULL, out_bf16[r, :] = BF16(x[r, :] / rms(x[r, :]) * weight) (as
 * sm_cuda_rmsnorm_f32 with src NULL and out_bf16 — the next layer's attention norm). weight NULL:
 * the combine alone (out_bf16 unused). Bit-identical to the two launches. */
sm_status sm_cuda_moe_combine_rmsnorm(cudaStream_t stream, const sm_bf16_bits *ys, int stride, const int *sorted_pos,
                                      int top_k, float *x, int rows, int hidden, const sm_bf16_bits *weight, float eps,
                                      sm_bf16_bits *out_bf16, sm_error *err);

#ifdef __cplusplus
}
#endif

#endif
