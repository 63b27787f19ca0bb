/* kernels/sample.h — sampling and speculative verification on the GPU, so a decode step never
 * copies a [rows][vocab] logits block to the host: only the chosen tokens (and accepted counts)
 * come back.
 *
 * The host functions in src/spec are the reference semantics and the tests' twins:
 *   sm_cuda_sampling_probs  ~ sm_sampling_probs      (spec/sampler.h)
 *   sm_cuda_sample_tokens   ~ sm_sample_from_probs   (spec/sampler.h)
 *   sm_cuda_spec_verify     ~ sm_verify_sample / sm_verify_greedy (spec/spec.h)
 * Greedy argmax over logits rows is sm_cuda_argmax (model_ops.h).
 *
 * Randomness comes in as uniforms in [0, 1) (device floats) that the caller draws, so the GPU and
 * the CPU paths consume the same generator and a seed keeps its meaning. Cumulative sums are
 * taken in fp64 like the host's, so a GPU draw differs from the host's only when u lies within
 * rounding (~1e-16 relative) of a CDF boundary; the accept test u*q(x) < p(x) is done in fp64 too.
 *
 * One block of 1024 threads per row (per sequence for verify); rows are independent. All
 * launchers follow kernel_api.h: explicit stream, no synchronisation, argument checks. */
#ifndef SM_SAMPLE_H
#define SM_SAMPLE_H

#include "kernel_api.h"

#ifdef __cplusplus
extern "C" {
#endif

/* probs[r, :] = the distribution sm_sampling_probs gives for logits[r, :] (row stride vocab):
 * softmax(logits / T), kept to the top_k most probable (top_k <= 0 or >= vocab: off), then to the
 * smallest set of most probable tokens whose mass reaches top_p of what is left (top_p <= 0 or
 * >= 1: off), ties at either cut going to the lower id; renormalised. T <= 0 (greedy): one-hot
 * at the first maximum. The thresholds are found by radix select over the fp32 bit patterns of
 * the probabilities (no sort). probs may not alias logits. Cost at vocab 151936 on an H200, per
 * row (rows run side by side up to the SM count): greedy 27 us, plain 59 us, top_k 50 128 us,
 * top_p 0.9 on flat logits 360 us (peaked logits are cheaper: light tokens skip the mass
 * histograms). One block streams a row at ~45 GB/s, so splitting rows over blocks is the next
 * step if this shows in a decode step. */
sm_status sm_cuda_sampling_probs(cudaStream_t stream, const float *logits, int rows, int vocab, float temperature,
                                 int top_k, float top_p, float *probs, sm_error *err);

/* tokens[r] = inverse-CDF draw from probs[r, :] with uniforms[r]: the first id whose cumulative
 * sum exceeds u (zero entries skipped); if rounding leaves u above the total, the last id with a
 * nonzero probability (0 for an all-zero row). As sm_sample_from_probs. ~27 us per 151936-row. */
sm_status sm_cuda_sample_tokens(cudaStream_t stream, const float *probs, int rows, int vocab, const float *uniforms,
                                int *tokens, sm_error *err);

/* Rejection-sampling verification (Leviathan et al. / Chen et al.), one block per sequence s:
 *   p         target's filtered probs (from sm_cuda_sampling_probs); sequence s uses rows
 *             p_row[s] .. p_row[s] + n_draft[s] (its n_draft verify rows and the bonus row)
 *   q         draft's filtered probs [n_seqs][k_max][vocab], or NULL: "q is one-hot at the
 *             drafts" (n-gram / deterministic drafters, greedy drafts)
 *   drafts    [n_seqs][k_max] proposed ids;  n_draft [n_seqs] in 0..k_max;  p_row [n_seqs]
 *   uniforms  [n_seqs][k_max + 1]: u[s][i] decides draft i; u[s][k_max] is the one draw
 * Draft i is accepted while u[s][i] * q_i(x) < p_i(x). At the first rejection i, next is drawn
 * (with u[s][k_max]) from normalise(max(0, p_i - q_i)) — or is x itself if that mass is 0, as
 * the host does — and n_accepted = i; if all are accepted, next is drawn from the bonus row.
 * Output: n_accepted[s], next_token[s]; both -1 when n_draft[s] is outside 0..k_max or a draft
 * id is outside the vocabulary (the kernel cannot return an error).
 * Host twin: sm_verify_sample fed an rng whose draws are u[s][0..] and then the draw uniform.
 * Greedy verification (= sm_verify_greedy) is this kernel with p from sm_cuda_sampling_probs at
 * T = 0 (one-hot at each row's argmax) and q = NULL: an accepted draft is the argmax, the
 * residual of a rejected one is one-hot at the argmax, the bonus is the argmax; uniforms are
 * then irrelevant but must still be readable. */
sm_status sm_cuda_spec_verify(cudaStream_t stream, const float *p, const float *q, const int *drafts,
                              const int *n_draft, const int *p_row, const float *uniforms, int n_seqs, int k_max,
                              int vocab, int *n_accepted, int *next_token, sm_error *err);

#ifdef __cplusplus
}
#endif

#endif
