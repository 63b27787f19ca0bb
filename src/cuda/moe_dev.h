/* src/cuda/moe_dev.h — what the GPU runners share (internal to src/cuda/): BF16 expert weights
 * on the device in the grouped layout of kernels/moe_grouped.h, and the host-pointer forward
 * (copy in, run the runner's device forward, copy out). */
#ifndef SM_MOE_DEV_H
#define SM_MOE_DEV_H

#include <cuda_runtime_api.h>

#include "cuda/moe_device.h"
#include "moe/runner.h"

typedef struct sm_moe_dev {
    const char *who;              /* runner name for messages */
    sm_moe_shape shape;
    int hp, fp;                   /* hidden, ffn rounded up to 8 (zero padding) */
    cudaStream_t stream;          /* owned: the host-pointer path runs here */
    sm_bf16_bits **gate_up;       /* [layer] -> device [E][2fp][hp], made at the layer's first load */
    sm_bf16_bits **down;          /* [layer] -> device [E][hp][fp] */
    unsigned char *loaded;        /* [layer * E + expert] */
    /* host-pointer path: device copies of the dispatch, and pinned staging */
    long io_cap;                  /* assignments the buffers below hold */
    sm_bf16_bits *d_x, *d_y;
    float *d_weight;
    int *d_offsets;
    sm_bf16_bits *h_x, *h_y;
    float *h_weight;
    int *h_offsets;
    sm_bf16_bits *h_stage;        /* load_expert: one expert converted to BF16 */
} sm_moe_dev;

/* The runner's device forward, called by the host-pointer path. */
typedef sm_status (*sm_moe_dev_forward_fn)(sm_runner *r, cudaStream_t stream, const sm_moe_device_batch *b,
                                           sm_error *err);

sm_status sm_moe_dev_init(sm_moe_dev *d, const char *who, const sm_moe_shape *shape, sm_error *err);
void sm_moe_dev_release(sm_moe_dev *d);
sm_status sm_moe_dev_load_expert(sm_moe_dev *d, int layer, int expert, const sm_expert_weights *w, sm_error *err);
sm_status sm_moe_dev_random_layer(sm_moe_dev *d, int layer, uint64_t seed, float scale, sm_error *err);
/* Checks a device batch against the shape; with host offsets also that every active expert was loaded. */
sm_status sm_moe_dev_check_batch(const sm_moe_dev *d, const sm_moe_device_batch *b, sm_error *err);
sm_status sm_moe_dev_host_forward(sm_moe_dev *d, sm_runner *r, sm_moe_dev_forward_fn fn, const sm_dispatch_out *in,
                                  sm_combine_in *out, sm_error *err);

/* Grow a device buffer to hold bytes (contents not kept). Not allowed while the stream captures. */
sm_status sm_moe_dev_grow(void **buf, size_t *cap_bytes, size_t bytes, cudaStream_t stream, const char *what,
                          sm_error *err);

#endif
