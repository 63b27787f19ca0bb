/* src/cuda/bench_decode.c — see bench_decode.h. A step is one sm_model_forward of `batch` rows,
 * one per sequence, all wanting logits (as a serving engine's decode step), timed on the host
 * around the call: the forward ends with its one synchronisation, so this is what a caller sees.
 * Bytes per step: every non-expert weight (attention, norms, routers, shared experts, dense MLPs,
 * lm_head) plus, per MoE layer, the experts a batch is expected to touch under uniform routing,
 * E·(1 − (1 − k/E)^batch), times their gate/up/down bytes. */
#include "cuda/bench_decode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime.h>

#include "cuda/cuda_check.h"
#include "model/model.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* cudaMemcpy D2D of 1 GiB, best of 5, counting read + write. */
static sm_status copy_bandwidth(double *bytes_per_s, sm_error *err) {
    size_t n = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    sm_status s = sm_cuda_check(cudaMalloc(&a, n), err, "bench decode: copy buffer");
    if (!s) s = sm_cuda_check(cudaMalloc(&b, n), err, "bench decode: copy buffer");
    if (!s) s = sm_cuda_check(cudaMemset(a, 1, n), err, "bench decode: copy buffer");
    double best = 1e30;
    for (int i = 0; i < 6 && !s; i++) {
        s = sm_cuda_check(cudaDeviceSynchronize(), err, "bench decode: copy");
        double t0 = now_s();
        if (!s) s = sm_cuda_check(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice), err, "bench decode: copy");
        if (!s) s = sm_cuda_check(cudaDeviceSynchronize(), err, "bench decode: copy");
        double t = now_s() - t0;
        if (i > 0 && t < best) best = t;
    }
    cudaFree(a);
    cudaFree(b);
    *bytes_per_s = s ? 0 : 2.0 * (double)n / best;
    return s;
}

static double step_bytes(const sm_model_config *c, int batch) {
    double H = c->hidden_size, qd = (double)c->num_heads * c->head_dim, kvd = (double)c->num_kv_heads * c->head_dim;
    double b = (double)c->vocab_size * H * 2 + H * 2; /* lm_head, final norm (one embedding row per token is noise) */
    for (int l = 0; l < c->num_layers; l++) {
        b += ((qd + 2 * kvd) * H + H * qd + 2 * H) * 2;
        if (c->qk_norm == SM_QK_NORM_PER_HEAD) b += 4.0 * c->head_dim;
        bool moe = c->layer_is_moe && c->layer_is_moe[l];
        if (!moe) {
            b += 3.0 * c->intermediate_size * H * 2;
            continue;
        }
        double E = c->num_experts, k = c->num_experts_per_tok;
        double touched = E * (1.0 - pow(1.0 - k / E, batch));
        b += E * H * 2 + touched * 3.0 * c->moe_intermediate_size * H * 2;
        if (c->shared_expert_intermediate_size > 0) b += 3.0 * c->shared_expert_intermediate_size * H * 2 + H * 2;
    }
    return b;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

sm_status sm_bench_decode(const sm_bench_decode_opts *o, sm_error *err) {
    int max_batch = 1;
    for (int i = 0; i < o->n_batches; i++) max_batch = o->batches[i] > max_batch ? o->batches[i] : max_batch;
    SM_TRY(sm_cuda_device_ready(err));
    double copy_bw;
    SM_TRY(copy_bandwidth(&copy_bw, err));
    struct cudaDeviceProp prop;
    SM_TRY(sm_cuda_check(cudaGetDeviceProperties(&prop, 0), err, "bench decode: device properties"));
    if (o->eager) setenv("SPECMOE_CUDA_GRAPHS", "0", 1);
    int context = o->prompt + o->warmup + o->steps + 8;
    sm_model_opts mo = {.device = "cuda", .random_weights = o->random_weights, .seed = o->seed,
                        .moe_runner_backend = o->runner, .max_seqs = max_batch, .max_context = context};
    sm_model *m = NULL;
    double t_load = now_s();
    SM_TRY(sm_model_load(o->model_dir, &mo, &m, err));
    t_load = now_s() - t_load;
    const sm_model_config *c = sm_model_cfg(m);
    int V = c->vocab_size;
    int64_t total, active;
    sm_config_param_counts(c, &total, &active);
    fprintf(o->out, "# decode %s: %s, %d layers, %.2fB params (%.2fB active), %s weights, runner %s, %s, on %s\n",
            o->label, c->arch_name, c->num_layers, total / 1e9, active / 1e9, o->random_weights ? "random" : "checkpoint",
            o->runner ? o->runner : "auto", o->eager ? "eager" : "CUDA graphs", prop.name);
    fprintf(o->out, "# copy bandwidth %.0f GB/s (D2D, read+write); load %.1f s; prompt %d tokens per sequence; "
            "median of %d steps after %d warm-up\n", copy_bw / 1e9, t_load, o->prompt, o->steps, o->warmup);
    fprintf(o->out, "%6s %10s %12s %10s %12s %10s\n", "batch", "ms/step", "tokens/s", "GB/step", "roofline ms", "of roofline");
    float *logits = NULL;
    sm_row *rows = NULL;
    double *times = NULL;
    sm_status s = sm_alloc((void **)&logits, (size_t)(o->prompt > max_batch ? o->prompt : max_batch) * V * sizeof(float),
                           "bench logits", err);
    if (!s) s = sm_alloc((void **)&rows, (size_t)(o->prompt > max_batch ? o->prompt : max_batch) * sizeof *rows, "rows", err);
    if (!s) s = sm_alloc((void **)&times, (size_t)o->steps * sizeof *times, "times", err);
    for (int bi = 0; bi < o->n_batches && !s; bi++) {
        int B = o->batches[bi];
        /* fresh sequences: prefill each, then decode B rows per step */
        for (int q = 0; q < B && !s; q++) {
            s = sm_model_truncate(m, q, 0, err);
            for (int i = 0; i < o->prompt && !s; i++)
                rows[i] = (sm_row){.seq = q, .token = (int)((97u * (unsigned)i + 13u * (unsigned)q + 1u) % (unsigned)V),
                                   .pos = i, .want_logits = i == o->prompt - 1};
            if (!s) s = sm_model_forward(m, rows, o->prompt, NULL, logits, err);
        }
        for (int step = 0; step < o->warmup + o->steps && !s; step++) {
            for (int q = 0; q < B; q++)
                rows[q] = (sm_row){.seq = q, .token = (int)((31u * (unsigned)step + 7u * (unsigned)q + 3u) % (unsigned)V),
                                   .pos = o->prompt + step, .want_logits = true};
            double t0 = now_s();
            s = sm_model_forward(m, rows, B, NULL, logits, err);
            if (step >= o->warmup) times[step - o->warmup] = now_s() - t0;
        }
        if (s) break;
        qsort(times, (size_t)o->steps, sizeof *times, cmp_double);
        double med = times[o->steps / 2], bytes = step_bytes(c, B), roof = bytes / copy_bw;
        fprintf(o->out, "%6d %10.3f %12.1f %10.2f %12.3f %9.0f%%\n", B, med * 1e3, B / med, bytes / 1e9, roof * 1e3,
                100.0 * roof / med);
    }
    free(logits);
    free(rows);
    free(times);
    sm_model_free(m);
    return s;
}
