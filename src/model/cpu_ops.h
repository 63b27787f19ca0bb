/* src/model/cpu_ops.h — fp32 building blocks of the CPU reference forward (and the CPU twins
 * the CUDA kernels are tested against). Plain loops, fixed summation order: the same inputs
 * give bit-identical outputs whatever the thread count. Shapes are in the comments. */
#ifndef SM_CPU_OPS_H
#define SM_CPU_OPS_H

#include <stdbool.h>

#include "core/threadpool.h"

/* Dot product with a fixed order of eight partial sums (vectorisable, deterministic). */
float sm_cpu_dot(const float *a, const float *b, int n);

/* y[r, o] = x[r, :] . w[o, :] (+ bias[o])     x (rows, in), w (out, in), y (rows, out).
 * Threads split the output features; tp may be NULL (single thread). */
void sm_cpu_matmul(sm_threadpool *tp, float *y, const float *x, const float *w, const float *bias,
                   int rows, int in, int out);

/* out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight     x, out (rows, dim); out may equal x. */
void sm_cpu_rmsnorm(float *out, const float *x, const float *weight, int rows, int dim, float eps);

/* Rotary embedding, "rotate half" layout (HF Llama/Qwen/Mixtral/OLMoE): for i < hd/2 the pair
 * (x[i], x[i + hd/2]) is rotated by pos * theta^(-2i/hd).   x (rows, heads, hd), in place. */
void sm_cpu_rope(float *x, const int *pos, int rows, int heads, int head_dim, float theta);

/* out[r, j] = silu(gate[r, j]) * up[r, j]     (rows, n); out may alias gate. */
void sm_cpu_silu_mul(float *out, const float *gate, const float *up, int rows, int n);

/* In-place softmax of x (n) in fp32, max subtracted first. */
void sm_cpu_softmax(float *x, int n);

#endif
