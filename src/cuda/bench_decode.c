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
#include "pdl_trace.h"
#include "model/model.h"
#include "spec/spec.h"

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

/* with_moe false: the step without its MoE blocks (routers and experts; --leave-out-moe). */
static double step_bytes(const sm_model_config *c, int batch, bool with_moe) {
    double H = c->hidden_size, qd = (double)c->num_heads * c->head_dim, kvd = (double)c->num_kv_heads * c->head_dim;
    double b = (double)c->vocab_size * H * 2 + H * 2; /* lm_head, final norm (one embedding row per token is noise) */
    for (int l = 0; l < c->num_layers; l++) {
        b += ((qd + 2 * kvd) * H + H * qd + 2 * H) * 2;
        if (c->qk_norm == SM_QK_NORM_PER_HEAD) b += 4.0 * c->head_dim;
        bool moe = c->layer_is_moe && c->layer_is_moe[l];
        if (moe && !with_moe) continue;
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

/* The synthetic prompt both tables feed: token i of sequence q (the same for every arm). */
static int prompt_token(int i, int q, int vocab) {
    return (int)((97u * (unsigned)i + 13u * (unsigned)q + 1u) % (unsigned)vocab);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One batch size through the spec engine: B sequences prefilled (untimed), then timed engine
 * steps; a step is what the engine does for every sequence at once (draft, one verify forward,
 * acceptance on the device). Prints one row. k = 0 is target-only decoding. */
static sm_status spec_row(const sm_bench_decode_opts *o, sm_model *target, sm_model *draft, int B, int k, int *self_layers,
                          int n_self, double *times, int *tokens, sm_error *err) {
    const sm_model_config *c = sm_model_cfg(target);
    sm_spec_config cfg = {.num_speculative_tokens = k, .drafter = k ? o->drafter : NULL, .draft_model = draft,
                          .self_layers = self_layers, .n_self_layers = n_self,
                          .sampling = {.temperature = o->temperature, .top_p = o->top_p, .top_k = o->top_k}};
    sm_spec_engine *e = NULL;
    SM_TRY(sm_spec_engine_create(target, &cfg, &e, err));
    sm_status s = SM_OK;
    for (int q = 0; q < B && !s; q++) {
        for (int i = 0; i < o->prompt; i++) tokens[i] = prompt_token(i, q, c->vocab_size);
        sm_spec_seq_params p = {.prompt = tokens, .n_prompt = o->prompt,
                                .max_new_tokens = (o->warmup + o->steps + 1) * (k + 1) + 1, .seed = (uint64_t)q};
        s = sm_spec_add_sequence(e, &p, NULL, err);
    }
    long emitted = 0;
    const sm_spec_step_metrics *m = NULL;
    for (int step = 0; step < 1 + o->warmup + o->steps && !s; step++) { /* step 0: the prefill */
        double t0 = now_s();
        s = sm_spec_step(e, &m, err);
        double t = now_s() - t0;
        if (s || step <= o->warmup) continue;
        times[step - o->warmup - 1] = t;
        for (int i = 0; i < m->n_seqs; i++) emitted += m->seqs[i].num_emitted;
    }
    if (!s) {
        double total = 0;
        for (int i = 0; i < o->steps; i++) total += times[i];
        qsort(times, (size_t)o->steps, sizeof *times, cmp_double);
        const sm_spec_counters *ct = sm_spec_engine_counters(e);
        char arm[32];
        snprintf(arm, sizeof arm, "%s k=%d", k ? o->drafter : "none", k);
        fprintf(o->out, "%6d %-12s %10.3f %12.2f %12.1f %11.3f\n", B, arm, times[o->steps / 2] * 1e3,
                (double)emitted / ((double)o->steps * B), (double)emitted / total, k ? sm_spec_acceptance_rate(ct) : 0.0);
    }
    sm_spec_engine_free(e);
    return s;
}

static sm_status bench_spec(const sm_bench_decode_opts *o, sm_model *target, int max_batch, sm_error *err) {
    const sm_model_config *c = sm_model_cfg(target);
    int k = o->num_speculative_tokens, L = c->num_layers, n_self = L / 2 > 0 ? L / 2 : 1;
    sm_model *draft = NULL;
    if (!strcmp(o->drafter, "model")) {
        sm_model_opts dopts = {.device = "cuda", .moe_runner_backend = o->draft_runner, .max_seqs = max_batch,
                               .max_context = sm_model_max_context(target)};
        SM_TRY(sm_model_load(o->draft_dir, &dopts, &draft, err));
    }
    int *self_layers = malloc((size_t)n_self * sizeof *self_layers), *tokens = malloc((size_t)o->prompt * sizeof *tokens);
    double *times = malloc((size_t)o->steps * sizeof *times);
    sm_status s = self_layers && tokens && times ? SM_OK : sm_fail(err, SM_ENOMEM, "bench decode: speculation scratch");
    for (int i = 0; i < n_self && !s; i++) self_layers[i] = i; /* "self": the first half of the layers */
    if (!s)
        fprintf(o->out, "# speculation: %s, k=%d%s%s; %s (T %g, top-p %g, top-k %d; sampled and verified on the device); "
                "tokens/step is per sequence (accepted drafts + 1); median step over %d steps\n%6s %-12s %10s %12s %12s %11s\n",
                o->drafter, k, draft ? ", draft " : "",
                draft ? o->draft_dir : (!strcmp(o->drafter, "self") ? ", first half of the layers" : ""),
                o->temperature > 0 ? "sampled" : "greedy", (double)o->temperature, (double)o->top_p, o->top_k, o->steps,
                "batch", "arm", "ms/step", "tokens/step", "tokens/s", "acceptance");
    for (int bi = 0; bi < o->n_batches && !s; bi++) {
        s = spec_row(o, target, draft, o->batches[bi], 0, self_layers, n_self, times, tokens, err);
        if (!s) s = spec_row(o, target, draft, o->batches[bi], k, self_layers, n_self, times, tokens, err);
    }
    free(self_layers);
    free(tokens);
    free(times);
    sm_model_free(draft);
    return s;
}

sm_status sm_bench_decode(const sm_bench_decode_opts *o, sm_error *err) {
    int max_batch = 1;
    for (int i = 0; i < o->n_batches; i++) max_batch = o->batches[i] > max_batch ? o->batches[i] : max_batch;
    SM_TRY(sm_cuda_device_ready(err));
    if (o->pdl_trace && !sm_cuda_pdl_trace_built()) return sm_cuda_pdl_trace_start(err); /* says why */
    double copy_bw;
    SM_TRY(copy_bandwidth(&copy_bw, err));
    struct cudaDeviceProp prop;
    SM_TRY(sm_cuda_check(cudaGetDeviceProperties(&prop, 0), err, "bench decode: device properties"));
    int k = o->drafter ? o->num_speculative_tokens : 0;
    int context = o->prompt + (o->warmup + o->steps + 2) * (k + 1) + 8;
    sm_model_opts mo = {.device = "cuda", .random_weights = o->random_weights, .seed = o->seed,
                        .moe_runner_backend = o->runner, .max_seqs = max_batch, .max_context = context,
                        .eager = o->eager, .chunked_prefill_size = o->chunked_prefill_size,
                        .leave_out_moe = o->leave_out_moe};
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
            "median of %d steps after %d warm-up; %s\n", copy_bw / 1e9, t_load, o->prompt, o->steps, o->warmup,
            o->host_logits ? "every row's logits copied to the host" : "greedy ids sampled on the device and fed back");
    if (o->leave_out_moe)
        fprintf(o->out, "# MoE blocks LEFT OUT (outputs not the model's): the rest of the step (attention, norms, "
                        "lm_head) against the bytes of its own weights\n");
    fprintf(o->out, "%6s %10s %12s %10s %12s %10s\n", "batch", "ms/step", "tokens/s", "GB/step", "roofline ms", "of roofline");
    float *logits = NULL;
    sm_row *rows = NULL;
    double *times = NULL, *prefill = NULL;
    int *next = NULL; /* greedy ids of a step's rows, fed back as the next step's tokens */
    int n_prefill = 0, total_seqs = 0;
    for (int bi = 0; bi < o->n_batches; bi++) total_seqs += o->batches[bi];
    sm_forward_sample greedy = {.temperature = 0.0f};
    const sm_forward_opts device_sampling = {.sample = &greedy};
    const sm_forward_opts *fo = o->host_logits ? NULL : &device_sampling;
    sm_status s = sm_alloc((void **)&next, (size_t)max_batch * sizeof *next, "bench ids", err);
    if (!s && o->host_logits)
        s = sm_alloc((void **)&logits, (size_t)max_batch * V * sizeof(float), "bench logits", err);
    if (!s) s = sm_alloc((void **)&rows, (size_t)(o->prompt > max_batch ? o->prompt : max_batch) * sizeof *rows, "rows", err);
    if (!s) s = sm_alloc((void **)&times, (size_t)o->steps * sizeof *times, "times", err);
    if (!s) s = sm_alloc((void **)&prefill, (size_t)total_seqs * sizeof *prefill, "prefill times", err);
    for (int bi = 0; bi < o->n_batches && !s; bi++) {
        int B = o->batches[bi];
        /* fresh sequences: prefill each (timed: the forward returns the first token, or the last
         * row's logits, to the host, so it has finished), then decode B rows per step */
        for (int q = 0; q < B && !s; q++) {
            s = sm_model_truncate(m, q, 0, err);
            for (int i = 0; i < o->prompt && !s; i++)
                rows[i] = (sm_row){.seq = q, .token = prompt_token(i, q, V),
                                   .pos = i, .want_logits = i == o->prompt - 1};
            greedy.tokens = next + q;
            double t0 = now_s();
            if (!s) s = sm_model_forward(m, rows, o->prompt, fo, logits, err);
            if (!s) prefill[n_prefill++] = now_s() - t0;
        }
        greedy.tokens = next;
        for (int step = 0; step < o->warmup + o->steps && !s; step++) {
            for (int q = 0; q < B; q++) /* with host logits, a fixed token pattern stands in for the ids */
                rows[q] = (sm_row){.seq = q,
                                   .token = o->host_logits ? (int)((31u * (unsigned)step + 7u * (unsigned)q + 3u) % (unsigned)V)
                                                           : next[q],
                                   .pos = o->prompt + step, .want_logits = true};
            const bool traced = o->pdl_trace && step == o->warmup + o->steps - 1;
            if (traced) s = sm_cuda_pdl_trace_start(err);
            double t0 = now_s();
            if (!s) s = sm_model_forward(m, rows, B, fo, logits, err);
            if (step >= o->warmup) times[step - o->warmup] = now_s() - t0;
            if (traced && !s) {
                char path[4096];
                snprintf(path, sizeof path, "%s.b%d", o->pdl_trace, B);
                s = sm_cuda_pdl_trace_dump(path, err);
            }
        }
        if (s) break;
        qsort(times, (size_t)o->steps, sizeof *times, cmp_double);
        double med = times[o->steps / 2], bytes = step_bytes(c, B, !o->leave_out_moe), roof = bytes / copy_bw;
        fprintf(o->out, "%6d %10.3f %12.1f %10.2f %12.3f %9.0f%%\n", B, med * 1e3, B / med, bytes / 1e9, roof * 1e3,
                100.0 * roof / med);
    }
    if (!s && n_prefill > 1) { /* the first prefill also pays lazy setup (GEMM plans, kernel attributes) */
        qsort(prefill + 1, (size_t)(n_prefill - 1), sizeof *prefill, cmp_double);
        const double med = prefill[1 + (n_prefill - 1) / 2];
        fprintf(o->out, "# prefill of %d tokens (one sequence): median %.3f ms over %d sequences, %.0f tokens/s\n",
                o->prompt, med * 1e3, n_prefill - 1, o->prompt / med);
    }
    free(logits);
    free(next);
    free(rows);
    free(times);
    free(prefill);
    if (!s && o->drafter) s = bench_spec(o, m, max_batch, err);
    sm_model_free(m);
    return s;
}
