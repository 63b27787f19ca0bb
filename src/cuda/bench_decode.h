/* src/cuda/bench_decode.h — `specmoe bench decode`: end-to-end decode steps of a whole model on
 * the GPU (device "cuda"), per batch size, next to the roofline measured in the same run:
 * bytes of weights one step reads ÷ device copy bandwidth (read + write of cudaMemcpy D2D). */
#ifndef SM_BENCH_DECODE_H
#define SM_BENCH_DECODE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

typedef struct sm_bench_decode_opts {
    const char *model_dir;        /* directory with config.json (and weights unless random) */
    const char *label;            /* preset name or the directory, for the header */
    bool random_weights;
    uint64_t seed;
    const char *runner;           /* MoE runner backend (NULL = auto) */
    const int *batches;
    int n_batches;
    int prompt;                   /* tokens prefilled per sequence before timing */
    int steps, warmup;            /* timed / untimed decode steps per batch size */
    bool eager;                   /* no CUDA graphs */
    int chunked_prefill_size;     /* rows per forward pass (0: the model's default, 4096) */
    bool leave_out_moe;           /* time the steps without their MoE blocks (sm_model_opts.leave_out_moe):
                                     the rest of the step against the bytes of its own weights */
    bool host_logits;             /* steps copy every row's logits to the host, instead of sampling
                                     greedily on the device and feeding the ids back (as a serving
                                     engine's step does) */
    const char *pdl_trace;        /* non-NULL: the last timed step of each batch size is recorded
                                     (kernels/pdl_trace.h) into "<pdl_trace>.b<batch>" */
    /* Speculation (SGLang's --speculative-algorithm): NULL = none. With a drafter every batch
     * size is run twice through the spec engine, target-only (k = 0) and speculative, so the
     * two rows of a batch size compare step time, tokens per step and tokens/s in one run. */
    const char *drafter;          /* "model", "ngram" or "self" */
    int num_speculative_tokens;   /* k */
    const char *draft_dir;        /* "model": the draft checkpoint (BF16 on the same GPU) */
    const char *draft_runner;     /* its MoE runner backend (NULL = auto) */
    float temperature, top_p;     /* sampling of both rows (0 = greedy); top_p 0 or 1 = off */
    int top_k;                    /* 0 = off */
    FILE *out;
} sm_bench_decode_opts;

sm_status sm_bench_decode(const sm_bench_decode_opts *o, sm_error *err);

#endif
