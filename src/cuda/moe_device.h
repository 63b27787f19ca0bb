/* src/cuda/moe_device.h — the GPU MoE runners (`cuda`, `cublaslt`) seen from device code.
 *
 * Through the runner table (moe/runner.h) these runners take HOST activations, as the CPU
 * model gives them: they copy x in, compute on the GPU with BF16 weights, and copy y back
 * (their table entry says on_device = false, meaning "forward() takes host pointers"). This
 * header is the device-pointer path for the GPU forward and for benchmarks: no copies, no
 * synchronisation, on the caller's stream, so a step can be captured in a CUDA graph.
 *
 * Device rows are BF16 with a stride of sm_moe_device_stride(hidden) elements (hidden rounded
 * up to 8 so every row is 16-byte aligned; the padding must be zero in x and is written as zero
 * in y). Real models have hidden % 8 == 0, where the stride is just hidden. */
#ifndef SM_MOE_DEVICE_H
#define SM_MOE_DEVICE_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "kernel_api.h"
#include "moe/runner.h"
#include "moe_grouped.h"

typedef struct sm_moe_device_batch {
    int layer;
    int n_assign;                    /* rows of x, y, weight; fixes the launch shape */
    const int *expert_offsets;       /* device [num_experts + 1], offsets[E] == n_assign */
    const int *expert_offsets_host;  /* the same on the host, or NULL. `cuda` ignores it (reads
                                        the device copy, so routing can change between graph
                                        replays); `cublaslt` uses it past the size below */
    const sm_bf16_bits *x;           /* device [n_assign, stride]; unused with route */
    const float *weight;             /* device [n_assign] routing weights, applied by the runner */
    sm_bf16_bits *y;                 /* device [n_assign, stride]: weight[a] * expert(x[a]) */
    const sm_moe_route_job *route;   /* NULL, or the routing still to do, where sm_runner_device_routes
                                        says the runner does it inside its launches: then
                                        expert_offsets and weight are its outputs (route's
                                        expert_offsets and sorted_weight) and x is not read */
} sm_moe_device_batch;

static inline int sm_moe_device_stride(int n) { return (n + 7) / 8 * 8; }

/* Is this backend one of the GPU runners (has the entry points below)? */
bool sm_runner_has_device_path(const sm_runner_backend *b);

/* How many assignments the runner handles well from the device offsets alone (no host copy, so
 * the layer can be graph-captured): INT_MAX for `cuda`; for `cublaslt` the size up to which its
 * pointer-array batches pay (0 where cuBLASLt has none). Past it, pass expert_offsets_host. */
int sm_runner_device_routing_max_assign(const sm_runner_backend *b, sm_runner *r);

/* Whether forward_device takes a batch with this routing job (the `cuda` runner at decode sizes:
 * its gate_up routes the batch itself, one launch less a layer); false for `cublaslt`. */
bool sm_runner_device_routes(const sm_runner_backend *b, sm_runner *r, const sm_moe_route_job *job);

/* Grow workspaces to hold n_assign rows now: call before capturing a graph (allocation is not
 * allowed inside one). forward_device grows them itself when called outside a capture. */
sm_status sm_runner_device_reserve(const sm_runner_backend *b, sm_runner *r, int n_assign, sm_error *err);

sm_status sm_runner_forward_device(const sm_runner_backend *b, sm_runner *r, cudaStream_t stream,
                                   const sm_moe_device_batch *batch, sm_error *err);

/* `cuda` only: run every forward with this kernel regime (an sm_moe_regime of
 * kernels/moe_grouped.h; 0 = AUTO, the default) — for benchmarks and tests of one kernel.
 * Other runners refuse it. */
sm_status sm_runner_device_set_regime(const sm_runner_backend *b, sm_runner *r, int regime, sm_error *err);

/* Fill every expert of a layer with uniform random BF16 weights in [-scale, scale) on the device
 * (benchmarks of full-size shapes without a checkpoint). Needs hidden and ffn multiples of 8. */
sm_status sm_runner_device_random_layer(const sm_runner_backend *b, sm_runner *r, int layer, uint64_t seed,
                                        float scale, sm_error *err);

#endif
