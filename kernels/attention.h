/* kernels/attention.h — attention of a batch of rows over a paged-free KV cache, and the K/V
 * write that precedes it.
 *
 * One launch covers prefill, single-token decode and (k+1)-row verification, for several
 * sequences of different lengths at once: each row r attends to positions 0..pos[r] of its own
 * sequence seq[r]. Causality among a sequence's rows in the same batch falls out of the
 * positions, because the K/V of every row is written (sm_cuda_kv_write) before attention runs.
 *
 * Cache layout (BF16): [max_seqs][max_context][kv_heads * head_dim] per layer, K and V apart.
 * CPU twin: model.c's attention (scores, softmax in fp32, weighted sum) on the same BF16 cache. */
#ifndef SM_ATTENTION_H
#define SM_ATTENTION_H

#include <stdbool.h>

#include "kernel_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cache[seq[r]][pos[r]] = k (v) row r, rounded to BF16. k, v: fp32 rows with stride `stride`. */
sm_status sm_cuda_kv_write(cudaStream_t stream, const float *k, const float *v, int stride, sm_bf16_bits *k_cache,
                           sm_bf16_bits *v_cache, const int *seq, const int *pos, int rows, int kv_dim,
                           int max_context, sm_error *err);

/* How one launch lays out its blocks (sm_cuda_attention_plan picks it per step from the longest
 * row; {1, false} is always valid):
 *  - grouped: the query heads of one K/V group share a block (groups of 2, 4 or 8, head_dim <=
 *    128; other shapes ignore it), so each K/V row is read once per group instead of once per
 *    head. Pays from about SM_ATTN_GROUP_MIN_LEN positions; below, its serial per-head work
 *    costs more than the reads it saves (H200, Qwen3-30B shape, batch 1, 48 layers: +0.4 ms a
 *    step at 32 positions, -0.95 ms at 2048).
 *  - splits > 1: up to SM_ATTN_SPLIT_MAX_ROWS rows (decode, verify), which leave most of the GPU
 *    idle with one block per (row, head or group), are spread over `splits` blocks each over a
 *    chunk of the context (at least 64 positions; the chunk is read from the device positions,
 *    so a graph serves growing contexts) and merged by the last block to finish (a 2048-position
 *    batch-1 step took 14 ms unsplit). The plan uses the power of two that gives the longest row
 *    enough chunks within two blocks per SM, and 1 where the rows alone fill the machine.
 * The split workspace (device, sm_cuda_attention_split_bytes for the model's heads and
 * head_dim) must be zeroed once before its first use; every launch leaves it ready for the next.
 * Launches sharing a workspace must be stream-ordered. */
#define SM_ATTN_MAX_SPLITS 32
#define SM_ATTN_SPLIT_MAX_ROWS 8
#define SM_ATTN_GROUP_MIN_LEN 1024
typedef struct sm_attn_plan {
    int splits;
    bool grouped;
} sm_attn_plan;
size_t sm_cuda_attention_split_bytes(int heads, int head_dim);
sm_attn_plan sm_cuda_attention_plan(int rows, int heads, int kv_heads, int head_dim, int max_len, int sm_count);

/* out[r, h*hd .. (h+1)*hd) = softmax_t(q_rh . K[t]_g * scale) . V[t]_g over t = 0..pos[r],
 * g = h / (heads / kv_heads). q: fp32 rows with stride q_stride, heads*head_dim used; out BF16
 * [rows, heads*head_dim]. head_dim <= 256. Online softmax: no buffer grows with the context.
 * plan: the block layout above; split_ws its workspace (may be NULL with plan.splits == 1). */
sm_status sm_cuda_attention(cudaStream_t stream, const float *q, int q_stride, const sm_bf16_bits *k_cache,
                            const sm_bf16_bits *v_cache, const int *seq, const int *pos, sm_bf16_bits *out, int rows,
                            int heads, int kv_heads, int head_dim, int max_context, float scale, void *split_ws,
                            sm_attn_plan plan, sm_error *err);

/* Prefill of one sequence: row r is position pos[0] + r of sequence seq[0], for every r (the
 * caller checks: a prompt chunk). The same attention as sm_cuda_attention, causal through the
 * positions, computed flash-attention style on tensor cores: 64 query rows of a head per block,
 * K/V tiles of 64 positions through shared memory once for all of them, an online softmax; q and
 * the softmax weights are rounded to BF16 for the MMAs (BF16 tolerance against the CPU twin,
 * where sm_cuda_attention computes in fp32). head_dim 64 or 128 (sm_cuda_attention_prefill_fits);
 * q rows 8-byte aligned. */
bool sm_cuda_attention_prefill_fits(int rows, int heads, int kv_heads, int head_dim);
sm_status sm_cuda_attention_prefill(cudaStream_t stream, const float *q, int q_stride, const sm_bf16_bits *k_cache,
                                    const sm_bf16_bits *v_cache, const int *seq, const int *pos, sm_bf16_bits *out,
                                    int rows, int heads, int kv_heads, int head_dim, int max_context, float scale,
                                    sm_error *err);

/* Decode rows in one launch: what sm_cuda_qk_norm_rope_kv (fused_ops.h) followed by
 * sm_cuda_attention computes, bit for bit (output and both caches), except that q and k are not
 * written back into qkv (nothing reads them after attention). qkv: the rows' fp32 q|k|v, unpadded
 * (stride (heads + 2 kv_heads) * head_dim); q_norm/k_norm: Qwen3's per-head norm, both NULL for
 * none; head_dim even, <= 256. Each block rotates its q head and its group's new K/V itself and
 * reads its row's newest position from shared memory; one block per (row, group) writes the
 * slot. A row must therefore need no other row's new slot: the rows are of DISTINCT sequences (a
 * decode batch), never several positions of one sequence (verification, prompts). split_ws,
 * plan: as for sm_cuda_attention. */
sm_status sm_cuda_attention_decode_qk(cudaStream_t stream, const float *qkv, int rows, int heads, int kv_heads,
                                      int head_dim, const sm_bf16_bits *q_norm, const sm_bf16_bits *k_norm, float eps,
                                      float theta, const int *seq, const int *pos, sm_bf16_bits *k_cache,
                                      sm_bf16_bits *v_cache, int max_context, float scale, sm_bf16_bits *out,
                                      void *split_ws, sm_attn_plan plan, sm_error *err);

#ifdef __cplusplus
}
#endif

#endif
