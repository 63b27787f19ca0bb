/* src/cuda/bench_moe.c — see bench_moe.h.
 *
 * Method (the same in bench/peer_grouped_mm.py): each forward is captured once in a CUDA graph;
 * each timed replay is preceded by a write of twice the L2 size so weights come from HBM as in a
 * real step, and is bracketed by CUDA events; the median over iterations is reported.
 * Achieved bandwidth counts the bytes of the experts the routing activates (gate, up, down in
 * BF16); copy bandwidth counts bytes read plus written by cudaMemcpy device-to-device. */
#include "cuda/bench_moe.h"

#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "cuda/cuda_check.h"
#include "cuda/moe_device.h"
#include "fill_random.h"
#include "fused_ops.h"
#include "moe/runner.h"
#include "moe_grouped.h"

typedef struct timer {
    cudaStream_t stream;
    cudaEvent_t start, stop;
    void *flush;                    /* 2 x L2 bytes, written before each timed replay */
    size_t flush_bytes;
} timer;

static sm_status timer_init(timer *t, sm_error *err) {
    memset(t, 0, sizeof *t);
    int dev = 0, l2 = 0;
    SM_TRY(sm_cuda_check(cudaGetDevice(&dev), err, "bench: cudaGetDevice"));
    SM_TRY(sm_cuda_check(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev), err, "bench: L2 size"));
    t->flush_bytes = (size_t)(l2 > 0 ? l2 : 64 << 20) * 2;
    SM_TRY(sm_cuda_check(cudaStreamCreateWithFlags(&t->stream, cudaStreamNonBlocking), err, "bench: stream"));
    SM_TRY(sm_cuda_check(cudaEventCreate(&t->start), err, "bench: event"));
    SM_TRY(sm_cuda_check(cudaEventCreate(&t->stop), err, "bench: event"));
    return sm_cuda_check(cudaMalloc(&t->flush, t->flush_bytes), err, "bench: L2 flush buffer of %zu bytes", t->flush_bytes);
}

static void timer_free(timer *t) {
    if (t->stream) cudaStreamSynchronize(t->stream);
    cudaFree(t->flush);
    if (t->start) cudaEventDestroy(t->start);
    if (t->stop) cudaEventDestroy(t->stop);
    if (t->stream) cudaStreamDestroy(t->stream);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Median milliseconds of one replay of exec, L2 flushed before each. */
/* What a timed run enqueues on the stream: a graph launch, or a plain copy. */
typedef sm_status (*enqueue_fn)(void *ctx, cudaStream_t s, sm_error *err);

/* Median over iters runs of fn, each after writing 2x the L2 size and bracketed by events. */
static sm_status time_runs(timer *t, enqueue_fn fn, void *ctx, int warmup, int iters, float *median_ms, sm_error *err) {
    float *ms = malloc(sizeof(float) * (size_t)iters);
    if (!ms) return sm_fail(err, SM_ENOMEM, "bench: timings");
    sm_status s = SM_OK;
    for (int i = 0; i < warmup + iters && !s; i++) {
        s = sm_cuda_check(cudaMemsetAsync(t->flush, i & 0xff, t->flush_bytes, t->stream), err, "bench: L2 flush");
        if (!s) s = sm_cuda_check(cudaEventRecord(t->start, t->stream), err, "bench: event record");
        if (!s) s = fn(ctx, t->stream, err);
        if (!s) s = sm_cuda_check(cudaEventRecord(t->stop, t->stream), err, "bench: event record");
        if (!s) s = sm_cuda_check(cudaEventSynchronize(t->stop), err, "bench: replay");
        float v = 0;
        if (!s) s = sm_cuda_check(cudaEventElapsedTime(&v, t->start, t->stop), err, "bench: elapsed time");
        if (!s && i >= warmup) ms[i - warmup] = v;
    }
    if (!s) {
        qsort(ms, (size_t)iters, sizeof *ms, cmp_float);
        *median_ms = ms[iters / 2];
    }
    free(ms);
    return s;
}

static sm_status launch_graph(void *exec, cudaStream_t s, sm_error *err) {
    return sm_cuda_check(cudaGraphLaunch((cudaGraphExec_t)exec, s), err, "bench: graph launch");
}

static sm_status time_graph(timer *t, cudaGraphExec_t exec, int warmup, int iters, float *median_ms, sm_error *err) {
    return time_runs(t, launch_graph, exec, warmup, iters, median_ms, err);
}

/* Capture whatever fn enqueues on t->stream into a graph and instantiate it. */

static sm_status capture(timer *t, enqueue_fn fn, void *ctx, cudaGraphExec_t *exec, sm_error *err) {
    cudaGraph_t g = NULL;
    SM_TRY(sm_cuda_check(cudaStreamBeginCapture(t->stream, cudaStreamCaptureModeThreadLocal), err, "bench: begin capture"));
    sm_status s = fn(ctx, t->stream, err);
    cudaError_t e = cudaStreamEndCapture(t->stream, &g);
    if (s) {
        if (g) cudaGraphDestroy(g);
        return s;
    }
    SM_TRY(sm_cuda_check(e, err, "bench: end capture"));
    s = sm_cuda_check(cudaGraphInstantiate(exec, g, 0), err, "bench: instantiating the graph");
    cudaGraphDestroy(g);
    return s;
}

/* ---- ceilings --------------------------------------------------------------------------------- */

typedef struct copy_ctx {
    void *dst, *src;
    size_t bytes;
} copy_ctx;

static sm_status enqueue_copy(void *ctx, cudaStream_t s, sm_error *err) {
    copy_ctx *c = ctx;
    return sm_cuda_check(cudaMemcpyAsync(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice, s), err, "bench: D2D copy");
}

/* Device copy bandwidth in bytes/s, counting read + write. A plain cudaMemcpyAsync, not a graph
 * node: captured, a D2D copy becomes a copy-engine node that moves only ~2.8 TB/s on an H200
 * against ~4.2 TB/s for the SM copy kernel the runtime uses otherwise (measured 2026-11-23),
 * and the ceiling must be the faster of the two. */
static sm_status copy_bandwidth(timer *t, int iters, double *bytes_per_s, sm_error *err) {
    copy_ctx c = {.bytes = (size_t)1 << 30};
    SM_TRY(sm_cuda_check(cudaMalloc(&c.src, c.bytes), err, "bench: copy source (1 GiB)"));
    sm_status s = sm_cuda_check(cudaMalloc(&c.dst, c.bytes), err, "bench: copy destination (1 GiB)");
    if (!s) s = sm_cuda_fill_uniform_bf16(t->stream, c.src, c.bytes / 2, 1, 1.0f, err);
    float ms = 0;
    if (!s) s = time_runs(t, enqueue_copy, &c, 2, iters, &ms, err);
    if (!s) *bytes_per_s = 2.0 * (double)c.bytes / (ms * 1e-3);
    cudaFree(c.src);
    cudaFree(c.dst);
    return s;
}

typedef struct dense_ctx {
    cublasLtHandle_t lt;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
    void *A, *B, *C, *ws;
    size_t ws_bytes;
} dense_ctx;

static sm_status enqueue_dense(void *ctx, cudaStream_t s, sm_error *err) {
    dense_ctx *d = ctx;
    const float one = 1.0f, zero = 0.0f;
    return sm_cublas_check(cublasLtMatmul(d->lt, d->desc, &one, d->A, d->a, d->B, d->b, &zero, d->C, d->c, d->C, d->c,
                                          &d->algo, d->ws, d->ws_bytes, s), err, "bench: dense cuBLASLt GEMM");
}

/* cuBLASLt BF16 rate (FLOP/s) of one dense GEMM rows x k -> n (rows = assignments, k = hidden,
 * n = 3 x ffn: the FLOPs of the MoE layer in one GEMM). */
static sm_status dense_rate(timer *t, cublasLtHandle_t lt, int rows, int k, int n, int iters, double *flops_per_s,
                            sm_error *err) {
    dense_ctx d = {.lt = lt, .ws_bytes = (size_t)32 << 20};
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t h;
    int found = 0;
    sm_status s = sm_cublas_check(cublasLtMatmulDescCreate(&d.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), err, "bench: matmul desc");
    if (!s) s = sm_cublas_check(cublasLtMatmulDescSetAttribute(d.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), err, "bench: TRANSA");
    if (!s) s = sm_cublas_check(cublasLtMatmulDescSetAttribute(d.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), err, "bench: TRANSB");
    if (!s) s = sm_cublas_check(cublasLtMatrixLayoutCreate(&d.a, CUDA_R_16BF, (uint64_t)k, (uint64_t)n, k), err, "bench: layout");
    if (!s) s = sm_cublas_check(cublasLtMatrixLayoutCreate(&d.b, CUDA_R_16BF, (uint64_t)k, (uint64_t)rows, k), err, "bench: layout");
    if (!s) s = sm_cublas_check(cublasLtMatrixLayoutCreate(&d.c, CUDA_R_16BF, (uint64_t)n, (uint64_t)rows, n), err, "bench: layout");
    if (!s) s = sm_cublas_check(cublasLtMatmulPreferenceCreate(&pref), err, "bench: preference");
    if (!s) s = sm_cublas_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &d.ws_bytes,
                                                                     sizeof d.ws_bytes), err, "bench: workspace preference");
    if (!s) s = sm_cublas_check(cublasLtMatmulAlgoGetHeuristic(lt, d.desc, d.a, d.b, d.c, d.c, pref, 1, &h, &found), err,
                                "bench: heuristic for the dense GEMM %dx%dx%d", rows, k, n);
    if (!s && !found) s = sm_fail(err, SM_EUNSUPPORTED, "bench: no cuBLASLt algorithm for %dx%dx%d", rows, k, n);
    if (!s) d.algo = h.algo;
    if (!s) s = sm_cuda_check(cudaMalloc(&d.A, (size_t)k * n * 2), err, "bench: dense weights");
    if (!s) s = sm_cuda_check(cudaMalloc(&d.B, (size_t)k * rows * 2), err, "bench: dense input");
    if (!s) s = sm_cuda_check(cudaMalloc(&d.C, (size_t)n * rows * 2), err, "bench: dense output");
    if (!s) s = sm_cuda_check(cudaMalloc(&d.ws, d.ws_bytes), err, "bench: dense workspace");
    if (!s) s = sm_cuda_fill_uniform_bf16(t->stream, d.A, (size_t)k * n, 2, 0.02f, err);
    if (!s) s = sm_cuda_fill_uniform_bf16(t->stream, d.B, (size_t)k * rows, 3, 1.0f, err);
    cudaGraphExec_t exec = NULL;
    if (!s) s = capture(t, enqueue_dense, &d, &exec, err);
    float ms = 0;
    if (!s) s = time_graph(t, exec, 2, iters, &ms, err);
    if (!s) *flops_per_s = 2.0 * rows * (double)k * n / (ms * 1e-3);
    if (exec) cudaGraphExecDestroy(exec);
    if (t->stream) cudaStreamSynchronize(t->stream);
    cudaFree(d.A); cudaFree(d.B); cudaFree(d.C); cudaFree(d.ws);
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d.a) cublasLtMatrixLayoutDestroy(d.a);
    if (d.b) cublasLtMatrixLayoutDestroy(d.b);
    if (d.c) cublasLtMatrixLayoutDestroy(d.c);
    if (d.desc) cublasLtMatmulDescDestroy(d.desc);
    return s;
}

/* ---- the MoE layer ------------------------------------------------------------------------------ */

typedef struct routing {
    int n_assign, active;
    int *offsets;                   /* host [E+1] */
} routing;

/* tokens x top_k distinct uniform experts; only the per-expert counts matter to the runners.
 * logits (host [tokens, E], or NULL): router logits whose top-k is that routing — picked experts
 * in [4, 5), the rest in [-1, 0), all distinct — for the rows that route from the logits. */
static sm_status make_routing(int tokens, int E, int k, uint64_t *seed, routing *r, float *logits, sm_error *err) {
    r->n_assign = tokens * k;
    SM_TRY(sm_calloc((void **)&r->offsets, (size_t)E + 1, sizeof(int), "bench routing", err));
    int *pick = malloc(sizeof(int) * (size_t)k);
    if (!pick) return sm_fail(err, SM_ENOMEM, "bench routing");
    for (int t = 0; t < tokens; t++) {
        for (int j = 0; j < k; j++) {
            int e;
            bool dup;
            do {
                *seed ^= *seed << 13; *seed ^= *seed >> 7; *seed ^= *seed << 17;
                e = (int)(*seed % (uint64_t)E);
                dup = false;
                for (int i = 0; i < j; i++) dup |= pick[i] == e;
            } while (dup);
            pick[j] = e;
            r->offsets[e + 1]++;
        }
        if (!logits) continue;
        float *row = logits + (size_t)t * E;
        for (int e = 0; e < E; e++) row[e] = -(float)(e + 1) / (float)(E + 1);
        for (int j = 0; j < k; j++) row[pick[j]] = 5.0f - (float)(j + 1) / (float)(k + 1);
    }
    free(pick);
    r->active = 0;
    for (int e = 0; e < E; e++) {
        r->active += r->offsets[e + 1] > 0;
        r->offsets[e + 1] += r->offsets[e];
    }
    return SM_OK;
}

/* Where a timed layer's routing comes from (the `routing` column). */
typedef enum {
    ROUTING_GIVEN,      /* expert offsets and expert-sorted rows ready: the experts alone */
    ROUTING_LAUNCH,     /* from router logits: sm_cuda_moe_route, then the experts */
    ROUTING_IN_KERNEL,  /* from router logits inside the runner's launches (sm_runner_device_routes) */
} routing_source;

static const char *const routing_names[] = {"given", "launch", "in-kernel"};

typedef struct layer_ctx {
    const sm_runner_backend *b;
    sm_runner *r;
    sm_moe_device_batch batch;
    const sm_moe_route_job *route;  /* ROUTING_LAUNCH: the job sm_cuda_moe_route does first */
    int num_experts, hidden;
    sm_bf16_bits *xs;               /* ROUTING_LAUNCH: where sm_cuda_moe_route gathers the rows */
} layer_ctx;

static sm_status enqueue_layer(void *ctx, cudaStream_t s, sm_error *err) {
    layer_ctx *c = ctx;
    const sm_moe_route_job *j = c->route;
    if (j)
        SM_TRY(sm_cuda_moe_route(s, j->logits, j->rows, c->num_experts, j->top_k, j->renormalize, j->h, c->hidden,
                                 c->hidden, j->expert_ids, j->weights, j->expert_offsets, j->sorted_src, j->sorted_pos,
                                 j->sorted_weight, c->xs, err));
    return sm_runner_forward_device(c->b, c->r, s, &c->batch, err);
}

/* One eager forward (lazy setup such as GEMM plans and kernel attributes stays out of the graph),
 * then the median time of graph replays. */
static sm_status time_layer(timer *t, layer_ctx *c, const sm_bench_moe_opts *o, float *ms, sm_error *err) {
    SM_TRY(enqueue_layer(c, t->stream, err));
    SM_TRY(sm_cuda_check(cudaStreamSynchronize(t->stream), err, "bench: eager forward"));
    cudaGraphExec_t exec = NULL;
    SM_TRY(capture(t, enqueue_layer, c, &exec, err));
    sm_status s = time_graph(t, exec, o->warmup, o->iters, ms, err);
    cudaGraphExecDestroy(exec);
    return s;
}

/* Device buffers of the routing from logits (decode-sized batches: rows <= SM_MOE_ROUTED_MAX_ROWS). */
typedef struct route_bufs {
    float *logits, *weights, *sorted_weight;
    int *ids, *offsets, *sorted_src, *sorted_pos;
    sm_bf16_bits *xs;
} route_bufs;

static sm_status route_bufs_alloc(route_bufs *b, int E, int K, int H, sm_error *err) {
    const size_t rows = SM_MOE_ROUTED_MAX_ROWS, assign = rows * (size_t)K;
    memset(b, 0, sizeof *b);
    SM_TRY(sm_cuda_check(cudaMalloc((void **)&b->logits, rows * E * sizeof(float)), err, "bench: router logits"));
    SM_TRY(sm_cuda_check(cudaMalloc((void **)&b->weights, assign * sizeof(float)), err, "bench: routing weights"));
    SM_TRY(sm_cuda_check(cudaMalloc((void **)&b->sorted_weight, assign * sizeof(float)), err, "bench: routing weights"));
    SM_TRY(sm_cuda_check(cudaMalloc((void **)&b->ids, assign * sizeof(int)), err, "bench: expert ids"));
    SM_TRY(sm_cuda_check(cudaMalloc((void **)&b->offsets, ((size_t)E + 1) * sizeof(int)), err, "bench: offsets"));
    SM_TRY(sm_cuda_check(cudaMalloc((void **)&b->sorted_src, assign * sizeof(int)), err, "bench: permutation"));
    SM_TRY(sm_cuda_check(cudaMalloc((void **)&b->sorted_pos, assign * sizeof(int)), err, "bench: permutation"));
    return sm_cuda_check(cudaMalloc((void **)&b->xs, assign * H * 2), err, "bench: expert inputs");
}

static void route_bufs_free(route_bufs *b) {
    cudaFree(b->logits); cudaFree(b->weights); cudaFree(b->sorted_weight); cudaFree(b->ids);
    cudaFree(b->offsets); cudaFree(b->sorted_src); cudaFree(b->sorted_pos); cudaFree(b->xs);
}

/* A row timed from logits is only comparable if the kernels routed as make_routing did. */
static sm_status check_routing(const int *d_offsets, const int *want, int E, sm_error *err) {
    int *got = malloc(((size_t)E + 1) * sizeof(int));
    if (!got) return sm_fail(err, SM_ENOMEM, "bench: offsets");
    sm_status s = sm_cuda_check(cudaMemcpy(got, d_offsets, ((size_t)E + 1) * sizeof(int), cudaMemcpyDeviceToHost), err,
                                "bench: routed offsets");
    for (int e = 0; !s && e <= E; e++)
        if (got[e] != want[e])
            s = sm_fail(err, SM_EINTERNAL, "bench: the routing from logits put offset %d of expert %d where the bench "
                        "routing has %d", got[e], e, want[e]);
    free(got);
    return s;
}

typedef struct row {
    const char *runner;
    const char *routing;            /* routing_names */
    int tokens, n_assign, active;
    const char *regime;             /* kernels run: gate_up/down */
    const char *requested;          /* with --regimes: the regime asked for, else NULL */
    double us, bytes, flops, copy_bw, dense;
} row;

static void print_row(const sm_bench_moe_opts *o, const row *w, bool header) {
    FILE *f = o->out;
    double bw = w->bytes / (w->us * 1e-6), tf = w->flops / (w->us * 1e-6);
    if (o->json) {
        fprintf(f, "{\"bench\":\"moe-layer\",\"shape\":\"%s\",\"hidden\":%d,\"ffn\":%d,\"experts\":%d,\"top_k\":%d,"
                   "\"runner\":\"%s\",\"routing\":\"%s\",\"tokens\":%d,\"assignments\":%d,\"active_experts\":%d,\"regime\":\"%s\","
                   "\"us\":%.2f,\"bytes\":%.0f,\"gbps\":%.1f,\"copy_gbps\":%.1f,\"bw_ratio\":%.3f,\"tflops\":%.2f,"
                   "\"dense_tflops\":%.2f,\"dense_ratio\":%.3f%s%s%s}\n",
                o->label, o->hidden, o->ffn, o->experts, o->top_k, w->runner, w->routing, w->tokens, w->n_assign, w->active,
                w->regime, w->us, w->bytes, bw / 1e9, w->copy_bw / 1e9, bw / w->copy_bw, tf / 1e12, w->dense / 1e12,
                tf / w->dense, w->requested ? ",\"requested\":\"" : "", w->requested ? w->requested : "",
                w->requested ? "\"" : "");
        return;
    }
    const int rw = o->n_regimes > 0 ? 28 : 15; /* "auto=prefill-mma/prefill-mma" */
    if (header)
        fprintf(f, "%-9s %-9s %6s %7s %6s %-*s %10s %9s %7s %8s %9s %7s\n", "runner", "routing", "tokens", "assign",
                "active", rw, "regime", "time_us", "GB/s", "%copy", "TFLOP/s", "denseTF", "%dense");
    fprintf(f, "%-9s %-9s %6d %7d %6d %-*s %10.1f %9.0f %6.1f%% %8.2f %9.1f %6.1f%%\n", w->runner, w->routing, w->tokens,
            w->n_assign, w->active, rw, w->regime, w->us, bw / 1e9, 100 * bw / w->copy_bw, tf / 1e12, w->dense / 1e12,
            100 * tf / w->dense);
}

/* Expected tokens per active expert past which the decode kernels are not timed: they stream
 * an expert's weights once per 8 (decode) or 32 (decode-mma) tokens, so thousands of tokens
 * would take seconds per replay and say nothing new. */
#define BENCH_DECODE_MAX_PER_EXPERT 64

sm_status sm_bench_moe_layer(const sm_bench_moe_opts *o, sm_error *err) {
    SM_TRY(sm_cuda_device_ready(err));
    const int H = o->hidden, F = o->ffn, E = o->experts, K = o->top_k;
    if (H <= 0 || F <= 0 || E <= 0 || K <= 0 || K > E || H % 8 || F % 8)
        return sm_fail(err, SM_EINVAL, "bench moe-layer: bad shape hidden %d ffn %d experts %d top-k %d (need multiples "
                       "of 8 and top-k <= experts)", H, F, E, K);
    int max_tokens = 0;
    for (int i = 0; i < o->n_tokens; i++) {
        if (o->tokens[i] <= 0) return sm_fail(err, SM_EINVAL, "bench moe-layer: token count %d", o->tokens[i]);
        max_tokens = o->tokens[i] > max_tokens ? o->tokens[i] : max_tokens;
    }
    int *regimes = calloc((size_t)(o->n_regimes > 0 ? o->n_regimes : 1), sizeof *regimes); /* [0] = AUTO */
    if (!regimes) return sm_fail(err, SM_ENOMEM, "bench moe-layer");
    for (int i = 0; i < o->n_regimes; i++)
        if ((regimes[i] = sm_moe_regime_parse(o->regimes[i])) < 0) {
            free(regimes);
            return sm_fail(err, SM_EINVAL, "bench moe-layer: unknown regime '%s' (auto, decode, prefill, decode-mma, "
                           "prefill-mma, prefill-wgmma)", o->regimes[i]);
        }
    const sm_runner_backend **backends = calloc((size_t)o->n_runners, sizeof *backends);
    if (!backends) return sm_fail(err, SM_ENOMEM, "bench moe-layer");
    for (int i = 0; i < o->n_runners; i++) {
        backends[i] = sm_runner_find(o->runners[i], false);
        if (!backends[i] || !sm_runner_has_device_path(backends[i])) {
            free(backends);
            free(regimes);
            return sm_fail(err, SM_EINVAL, "bench moe-layer: '%s' is not a GPU MoE runner (cuda, cublaslt)", o->runners[i]);
        }
    }
    timer t;
    cublasLtHandle_t lt = NULL;
    struct cudaDeviceProp prop;
    sm_status s = timer_init(&t, err);
    if (!s) s = sm_cublas_check(cublasLtCreate(&lt), err, "bench: cublasLtCreate");
    if (!s) s = sm_cuda_check(cudaGetDeviceProperties(&prop, 0), err, "bench: device properties");
    double copy_bw = 0;
    if (!s) s = copy_bandwidth(&t, o->iters, &copy_bw, err);
    if (!s && !o->json)
        fprintf(o->out, "# moe-layer %s: hidden %d ffn %d experts %d top-k %d on %s; copy bandwidth %.0f GB/s "
                        "(D2D, read+write); median of %d graph replays, L2 flushed\n",
                o->label, H, F, E, K, prop.name, copy_bw / 1e9, o->iters);

    /* activations for the largest token count, shared by every runner and count */
    const int max_assign = max_tokens * K;
    void *x = NULL, *y = NULL;
    float *weight = NULL;
    int *d_off = NULL;
    if (!s) s = sm_cuda_check(cudaMalloc(&x, (size_t)max_assign * H * 2), err, "bench: activations");
    if (!s) s = sm_cuda_check(cudaMalloc(&y, (size_t)max_assign * H * 2), err, "bench: outputs");
    if (!s) s = sm_cuda_check(cudaMalloc((void **)&weight, (size_t)max_assign * sizeof(float)), err, "bench: weights");
    if (!s) s = sm_cuda_check(cudaMalloc((void **)&d_off, (size_t)(E + 1) * sizeof(int)), err, "bench: offsets");
    if (!s) s = sm_cuda_fill_uniform_bf16(t.stream, x, (size_t)max_assign * H, o->seed + 11, 1.0f, err);
    /* routing weights 1/top_k: the value does not change the work, only that it is applied */
    if (!s) {
        float *hw = malloc((size_t)max_assign * sizeof(float));
        if (!hw) s = sm_fail(err, SM_ENOMEM, "bench: weights");
        for (int i = 0; !s && i < max_assign; i++) hw[i] = 1.0f / (float)K;
        if (!s) s = sm_cuda_check(cudaMemcpy(weight, hw, (size_t)max_assign * sizeof(float), cudaMemcpyHostToDevice), err,
                                  "bench: weights");
        free(hw);
    }

    double *dense = calloc((size_t)o->n_tokens, sizeof(double));
    if (!dense && !s) s = sm_fail(err, SM_ENOMEM, "bench: dense rates");
    for (int i = 0; !s && i < o->n_tokens; i++) s = dense_rate(&t, lt, o->tokens[i] * K, H, 3 * F, o->iters, &dense[i], err);

    route_bufs rb = {0};
    float *logits = malloc((size_t)SM_MOE_ROUTED_MAX_ROWS * E * sizeof(float)); /* host */
    if (!logits && !s) s = sm_fail(err, SM_ENOMEM, "bench: router logits");
    if (!s) s = route_bufs_alloc(&rb, E, K, H, err);

    sm_moe_shape shape = {.num_layers = 1, .num_experts = E, .hidden = H, .ffn = F, .top_k = K, .max_rows = max_tokens};
    bool header = true;
    for (int ri = 0; !s && ri < o->n_runners; ri++) {
        sm_runner *r = NULL;
        s = backends[ri]->create(&shape, &(sm_runner_opts){.weight_dtype = SM_DTYPE_BF16}, &r, err);
        if (!s) s = sm_runner_device_random_layer(backends[ri], r, 0, o->seed, 0.02f, err);
        uint64_t seed = o->seed * 2654435761u + 1;
        for (int ti = 0; !s && ti < o->n_tokens; ti++) {
            routing rt = {0};
            s = make_routing(o->tokens[ti], E, K, &seed, &rt, o->tokens[ti] <= SM_MOE_ROUTED_MAX_ROWS ? logits : NULL, err);
            if (!s) s = sm_cuda_check(cudaMemcpy(d_off, rt.offsets, (size_t)(E + 1) * sizeof(int), cudaMemcpyHostToDevice),
                                      err, "bench: offsets");
            if (!s) s = sm_runner_device_reserve(backends[ri], r, rt.n_assign, err);
            const bool is_cuda = !strcmp(backends[ri]->name, "cuda");
            const int n_reg = is_cuda && o->n_regimes > 0 ? o->n_regimes : 1;
            for (int gi = 0; !s && gi < n_reg; gi++) {
                /* the kernels each regime runs; AUTO as the runner resolves it (same environment) */
                sm_moe_grouped_args a = {.num_experts = E, .hidden = H, .ffn = F, .n_assign = rt.n_assign,
                                         .regime = (sm_moe_regime)regimes[gi],
                                         .auto_allow = sm_moe_auto_allow_from_env()};
                const sm_moe_regime k_up = sm_moe_regime_pick(&a, false), k_down = sm_moe_regime_pick(&a, true);
                const bool decode_kernel = k_up == SM_MOE_REGIME_DECODE || k_up == SM_MOE_REGIME_DECODE_MMA ||
                                           k_down == SM_MOE_REGIME_DECODE || k_down == SM_MOE_REGIME_DECODE_MMA;
                const int per_expert = rt.n_assign / (rt.active > 0 ? rt.active : 1);
                if (is_cuda && a.regime != SM_MOE_REGIME_AUTO && decode_kernel &&
                    per_expert > BENCH_DECODE_MAX_PER_EXPERT) {
                    if (!o->json)
                        fprintf(o->out, "# cuda %s at %d tokens skipped: %d tokens per expert (decode kernels time only "
                                        "<= %d)\n", sm_moe_regime_name(a.regime), o->tokens[ti], per_expert,
                                BENCH_DECODE_MAX_PER_EXPERT);
                    continue;
                }
                if (is_cuda) s = sm_runner_device_set_regime(backends[ri], r, regimes[gi], err);
                /* decode-sized batches of `cuda` at AUTO are also timed from router logits, as the model
                 * runs them: a routing launch first, or the routing inside the runner's launches */
                const bool from_logits = is_cuda && a.regime == SM_MOE_REGIME_AUTO &&
                                         o->tokens[ti] <= SM_MOE_ROUTED_MAX_ROWS && E <= SM_MOE_ROUTE_MAX_EXPERTS;
                const sm_moe_route_job job = {.logits = rb.logits, .rows = o->tokens[ti], .top_k = K,
                                              .renormalize = true, .h = (const sm_bf16_bits *)x, .h_width = H,
                                              .expert_ids = rb.ids, .expert_offsets = rb.offsets, .weights = rb.weights,
                                              .sorted_src = rb.sorted_src, .sorted_pos = rb.sorted_pos,
                                              .sorted_weight = rb.sorted_weight};
                if (!s && from_logits)
                    s = sm_cuda_check(cudaMemcpy(rb.logits, logits, (size_t)o->tokens[ti] * E * sizeof(float),
                                                 cudaMemcpyHostToDevice), err, "bench: router logits");
                for (int src = ROUTING_GIVEN; !s && src <= (from_logits ? ROUTING_IN_KERNEL : ROUTING_GIVEN); src++) {
                    layer_ctx c = {.b = backends[ri], .r = r, .num_experts = E, .hidden = H, .xs = rb.xs,
                                   .batch = {.layer = 0, .n_assign = rt.n_assign, .expert_offsets = d_off,
                                             .expert_offsets_host = rt.offsets, .x = x, .weight = weight, .y = y}};
                    if (src != ROUTING_GIVEN) {
                        c.batch = (sm_moe_device_batch){.layer = 0, .n_assign = rt.n_assign, .expert_offsets = rb.offsets,
                                                        .x = rb.xs, .weight = rb.sorted_weight, .y = y};
                        if (src == ROUTING_LAUNCH) c.route = &job;
                        else if (sm_runner_device_routes(backends[ri], r, &job)) c.batch.route = &job;
                        else break; /* SPECMOE_MOE_ROUTE=launch */
                    }
                    float ms = 0;
                    s = time_layer(&t, &c, o, &ms, err);
                    if (!s && src != ROUTING_GIVEN) s = check_routing(rb.offsets, rt.offsets, E, err);
                    if (s && is_cuda)
                        sm_error_prefix(err, "regime %s, %d tokens, routing %s: ", sm_moe_regime_name(a.regime),
                                        o->tokens[ti], routing_names[src]);
                    if (s) break;
                    /* with --regimes, AUTO rows say so: their kernels equal some forced row's */
                    const bool tag_auto = o->n_regimes > 0 && !o->json && a.regime == SM_MOE_REGIME_AUTO;
                    char regime[48] = "cublaslt";
                    if (is_cuda)
                        snprintf(regime, sizeof regime, "%s%s/%s", tag_auto ? "auto=" : "", sm_moe_regime_name(k_up),
                                 sm_moe_regime_name(k_down));
                    row w = {.runner = backends[ri]->name, .routing = routing_names[src], .tokens = o->tokens[ti],
                             .n_assign = rt.n_assign, .active = rt.active, .regime = regime,
                             .requested = is_cuda && o->n_regimes > 0 ? sm_moe_regime_name(a.regime) : NULL,
                             .us = ms * 1e3,
                             .bytes = (double)rt.active * 3.0 * H * F * 2.0, .flops = 2.0 * rt.n_assign * 3.0 * H * F,
                             .copy_bw = copy_bw, .dense = dense[ti]};
                    print_row(o, &w, header);
                    header = false;
                    fflush(o->out);
                }
            }
            free(rt.offsets);
        }
        if (r) backends[ri]->destroy(r);
        if (s) sm_error_prefix(err, "runner %s: ", backends[ri]->name);
    }
    free(dense);
    free(logits);
    route_bufs_free(&rb);
    free(backends);
    free(regimes);
    if (t.stream) cudaStreamSynchronize(t.stream);
    cudaFree(x); cudaFree(y); cudaFree(weight); cudaFree(d_off);
    if (lt) cublasLtDestroy(lt);
    timer_free(&t);
    return s;
}
