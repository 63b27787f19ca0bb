/* src/cuda/bench_moe.h — `specmoe bench moe-layer`: one MoE layer of a given shape with random
 * weights, timed for each GPU runner and token count, next to ceilings measured in the same
 * run (device copy bandwidth, cuBLASLt dense BF16 rate at the same FLOPs). */
#ifndef SM_BENCH_MOE_H
#define SM_BENCH_MOE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

typedef struct sm_bench_moe_opts {
    const char *label;              /* preset name or "custom" */
    int hidden, ffn, experts, top_k;
    const int *tokens;              /* token counts to time */
    int n_tokens;
    const char *const *runners;     /* runner backend names */
    int n_runners;
    const char *const *regimes;     /* `cuda` kernel regimes to time each point with ("auto",
                                       "decode", "prefill", "decode-mma", "prefill-mma", "prefill-wgmma"); none:
                                       auto only, and the table keeps its narrow regime column */
    int n_regimes;
    int iters, warmup;
    uint64_t seed;
    bool json;                      /* one JSON object per line instead of the table */
    FILE *out;
} sm_bench_moe_opts;

sm_status sm_bench_moe_layer(const sm_bench_moe_opts *o, sm_error *err);

#endif
