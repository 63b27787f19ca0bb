/* The GPU MoE runners (`cuda`, `cublaslt`) must compute what `ref` computes, within BF16
 * tolerance (||y - y_ref|| / ||y_ref|| < 1e-2), through the same backend table the CPU model
 * uses (host pointers in and out), for random routing, skewed routing (one hot expert), empty
 * experts, a single token, odd sizes (hidden/ffn not multiples of 8: the padding path), both
 * kernel regimes (few and many tokens per expert) and f32 / bf16 source weights.
 * The device path must be graph-capturable: a `cuda` forward, and a `cublaslt` one without host
 * offsets (its pointer-array batches), captured once and replayed with new routing written into
 * the same device buffers match `ref` for each new routing. The pointer tables behind those
 * batches match their CPU twin, empty experts included. */
#include "cuda/moe_device.h"
#include "gpu/gpu_test.h"
#include "moe/runner.h"
#include "moe_pointers.h"

#define BF16_TOL 1e-2

typedef struct dispatch {
    sm_dispatch_out d;
    int *offsets, *src_row;
    float *x, *weight, *y;
} dispatch;

enum { ROUTE_RANDOM, ROUTE_SKEWED, ROUTE_EMPTY_HALF, ROUTE_COUNT };
static const char *route_names[] = {"random", "skewed", "empty-half"};

/* rows tokens, each routed to top_k distinct experts, grouped by expert as a2a.dispatch does. */
static void make_dispatch(dispatch *p, int layer, int rows, int H, int E, int k, int route, uint64_t *seed) {
    int n = rows * k;
    int *ids = malloc(sizeof(int) * (size_t)n);
    float *h = gpu_test_random_bf16((size_t)rows * H, 1.5f, seed);
    int choices = route == ROUTE_EMPTY_HALF ? (E + 1) / 2 : E;
    if (choices < k) choices = k;
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < k; j++) {
            int e;
            bool dup;
            do {
                e = (route == ROUTE_SKEWED && j == 0) ? 0 : (int)(gpu_test_next(seed) % (uint64_t)choices);
                dup = false;
                for (int i = 0; i < j; i++) dup |= ids[r * k + i] == e;
            } while (dup);
            ids[r * k + j] = e;
        }
    memset(p, 0, sizeof *p);
    p->offsets = calloc((size_t)E + 1, sizeof(int));
    p->src_row = malloc(sizeof(int) * (size_t)n);
    p->x = malloc(sizeof(float) * (size_t)n * H);
    p->weight = malloc(sizeof(float) * (size_t)n);
    p->y = malloc(sizeof(float) * (size_t)n * H);
    for (int a = 0; a < n; a++) p->offsets[ids[a] + 1]++;
    for (int e = 0; e < E; e++) p->offsets[e + 1] += p->offsets[e];
    int *fill = malloc(sizeof(int) * (size_t)E);
    memcpy(fill, p->offsets, sizeof(int) * (size_t)E);
    for (int a = 0; a < n; a++) {
        int slot = fill[ids[a]]++;
        p->src_row[slot] = a / k;
        memcpy(p->x + (size_t)slot * H, h + (size_t)(a / k) * H, sizeof(float) * (size_t)H);
        p->weight[slot] = 0.2f + 0.8f * (0.5f + 0.5f * gpu_test_uniform(seed));
    }
    p->d = (sm_dispatch_out){.layer = layer, .hidden = H, .num_experts = E, .n_assign = n, .expert_offsets = p->offsets,
                             .x = p->x, .weight = p->weight, .src_row = p->src_row};
    free(fill); free(ids); free(h);
}

static void free_dispatch(dispatch *p) {
    free(p->offsets); free(p->src_row); free(p->x); free(p->weight); free(p->y);
}

typedef struct experts {
    int E, H, F;
    float *gate, *up, *down;  /* [E][F][H], [E][F][H], [E][H][F] */
    uint16_t *gate16, *up16, *down16;
} experts;

static void make_experts(experts *x, int E, int H, int F, uint64_t *seed) {
    x->E = E; x->H = H; x->F = F;
    size_t n = (size_t)E * F * H;
    x->gate = gpu_test_random_bf16(n, 1.0f / sqrtf((float)H), seed);
    x->up = gpu_test_random_bf16(n, 1.0f / sqrtf((float)H), seed);
    x->down = gpu_test_random_bf16(n, 1.0f / sqrtf((float)F), seed);
    x->gate16 = malloc(n * 2); x->up16 = malloc(n * 2); x->down16 = malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        x->gate16[i] = sm_f32_to_bf16(x->gate[i]);
        x->up16[i] = sm_f32_to_bf16(x->up[i]);
        x->down16[i] = sm_f32_to_bf16(x->down[i]);
    }
}

static void free_experts(experts *x) {
    free(x->gate); free(x->up); free(x->down); free(x->gate16); free(x->up16); free(x->down16);
}

static sm_status load_layer(const sm_runner_backend *b, sm_runner *r, int layer, const experts *x, bool as_bf16,
                            int only_first, sm_error *err) {
    size_t n = (size_t)x->F * x->H;
    for (int e = 0; e < (only_first ? only_first : x->E); e++) {
        sm_expert_weights w = as_bf16
            ? (sm_expert_weights){.dtype = SM_DTYPE_BF16, .gate = x->gate16 + e * n, .up = x->up16 + e * n, .down = x->down16 + e * n}
            : (sm_expert_weights){.dtype = SM_DTYPE_F32, .gate = x->gate + e * n, .up = x->up + e * n, .down = x->down + e * n};
        SM_TRY(b->load_expert(r, layer, e, &w, err));
    }
    return SM_OK;
}

static void test_against_ref(void) {
    const int shapes[][4] = {{64, 32, 8, 2}, {36, 20, 5, 3}, {256, 96, 16, 4}, {8, 4, 4, 2}}; /* H, F, E, k */
    const int rows_list[] = {1, 5, 70, 300};
    const char *names[] = {"cuda", "cublaslt"};
    uint64_t seed = 0xabcdef;
    const sm_runner_backend *ref = sm_runner_find("ref", false);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int H = shapes[si][0], F = shapes[si][1], E = shapes[si][2], k = shapes[si][3];
        sm_moe_shape shape = {.num_layers = 2, .num_experts = E, .hidden = H, .ffn = F, .top_k = k};
        experts ex;
        make_experts(&ex, E, H, F, &seed);
        sm_error err = {0};
        sm_runner *rr = NULL;
        CHECK_OK(ref->create(&shape, &(sm_runner_opts){.weight_dtype = SM_DTYPE_F32}, &rr, &err), &err);
        CHECK_OK(load_layer(ref, rr, 1, &ex, false, 0, &err), &err);
        for (size_t bi = 0; bi < 2; bi++) {
            const sm_runner_backend *b = sm_runner_find(names[bi], false);
            CHECK(b != NULL, "runner %s is not registered", names[bi]);
            if (!b) continue;
            sm_runner *gr = NULL;
            CHECK_OK(b->create(&shape, &(sm_runner_opts){.weight_dtype = SM_DTYPE_BF16}, &gr, &err), &err);
            if (!gr) continue;
            CHECK_OK(load_layer(b, gr, 1, &ex, si % 2 == 1, 0, &err), &err);
            for (int route = 0; route < ROUTE_COUNT; route++)
                for (size_t ri = 0; ri < sizeof rows_list / sizeof rows_list[0]; ri++) {
                    dispatch p;
                    make_dispatch(&p, 1, rows_list[ri], H, E, k, route, &seed);
                    float *y_ref = malloc(sizeof(float) * (size_t)p.d.n_assign * H);
                    CHECK_OK(ref->forward(rr, &p.d, &(sm_combine_in){.y = y_ref}, &err), &err);
                    for (size_t i = 0; i < (size_t)p.d.n_assign * H; i++) p.y[i] = NAN;
                    CHECK_OK(b->forward(gr, &p.d, &(sm_combine_in){.y = p.y}, &err), &err);
                    double e = test_rel_l2(p.y, y_ref, (size_t)p.d.n_assign * H);
                    CHECK(e < BF16_TOL, "%s H=%d F=%d E=%d k=%d rows=%d %s: rel err %.3g", names[bi], H, F, E, k,
                          rows_list[ri], route_names[route], e);
                    free(y_ref);
                    free_dispatch(&p);
                }
            /* An expert that was never loaded is an error naming it, as in `ref`. */
            dispatch p;
            make_dispatch(&p, 0, 3, H, E, k, ROUTE_RANDOM, &seed);
            sm_status s = b->forward(gr, &p.d, &(sm_combine_in){.y = p.y}, &err);
            CHECK(s != SM_OK && strstr(err.msg, "layer 0"), "%s: forward on an unloaded layer must fail, got %s: %s",
                  names[bi], sm_status_name(s), err.msg);
            free_dispatch(&p);
            b->destroy(gr);
        }
        ref->destroy(rr);
        free_experts(&ex);
    }
}

/* Capture one device forward in a CUDA graph, then replay it with routing rewritten in place. */
static void test_graph_replay(const char *name, bool new_routing_each_replay) {
    const int H = 64, F = 48, E = 8, k = 2, rows = 6, n = rows * k;
    sm_moe_shape shape = {.num_layers = 1, .num_experts = E, .hidden = H, .ffn = F, .top_k = k};
    uint64_t seed = 777;
    experts ex;
    make_experts(&ex, E, H, F, &seed);
    sm_error err = {0};
    const sm_runner_backend *ref = sm_runner_find("ref", false), *b = sm_runner_find(name, false);
    CHECK(b && sm_runner_has_device_path(b), "%s must have a device path", name);
    CHECK(!sm_runner_has_device_path(ref), "ref must not claim a device path");
    if (!b) return;
    sm_runner *rr = NULL, *gr = NULL;
    CHECK_OK(ref->create(&shape, &(sm_runner_opts){0}, &rr, &err), &err);
    CHECK_OK(b->create(&shape, &(sm_runner_opts){0}, &gr, &err), &err);
    if (!rr || !gr) return;
    CHECK_OK(load_layer(ref, rr, 0, &ex, false, 0, &err), &err);
    CHECK_OK(load_layer(b, gr, 0, &ex, true, 0, &err), &err);
    void *d_x = gpu_test_malloc((size_t)n * H * 2), *d_y = gpu_test_malloc((size_t)n * H * 2);
    float *d_w = gpu_test_malloc(sizeof(float) * n);
    int *d_off = gpu_test_malloc(sizeof(int) * (E + 1));
    cudaStream_t stream;
    gpu_test_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");
    dispatch first;
    make_dispatch(&first, 0, rows, H, E, k, ROUTE_RANDOM, &seed);
    CHECK_OK(sm_runner_device_reserve(b, gr, n, &err), &err);
    sm_moe_device_batch batch = {.layer = 0, .n_assign = n, .expert_offsets = d_off,
                                 .expert_offsets_host = new_routing_each_replay ? NULL : first.offsets,
                                 .x = d_x, .weight = d_w, .y = d_y};
    /* One eager forward first, as a step loop would before capturing (cuBLASLt plans are made
     * on first use); its inputs are zeros, the replays below use fresh ones. */
    gpu_test_cuda(cudaMemset(d_x, 0, (size_t)n * H * 2), "x");
    gpu_test_cuda(cudaMemset(d_w, 0, sizeof(float) * n), "w");
    gpu_test_cuda(cudaMemcpy(d_off, first.offsets, sizeof(int) * (E + 1), cudaMemcpyHostToDevice), "offsets");
    CHECK_OK(sm_runner_forward_device(b, gr, stream, &batch, &err), &err);
    gpu_test_cuda(cudaStreamSynchronize(stream), "eager forward");
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    gpu_test_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "begin capture");
    CHECK_OK(sm_runner_forward_device(b, gr, stream, &batch, &err), &err);
    gpu_test_cuda(cudaStreamEndCapture(stream, &graph), "end capture");
    gpu_test_cuda(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
    for (int replay = 0; replay < 3; replay++) {
        dispatch p;
        if (new_routing_each_replay) make_dispatch(&p, 0, rows, H, E, k, replay == 1 ? ROUTE_SKEWED : ROUTE_RANDOM, &seed);
        dispatch *use = new_routing_each_replay ? &p : &first;
        void *tmp = gpu_test_upload_bf16(use->x, n, H, H);
        gpu_test_cuda(cudaMemcpy(d_x, tmp, (size_t)n * H * 2, cudaMemcpyDeviceToDevice), "x");
        cudaFree(tmp);
        gpu_test_cuda(cudaMemcpy(d_w, use->weight, sizeof(float) * n, cudaMemcpyHostToDevice), "weights");
        gpu_test_cuda(cudaMemcpy(d_off, use->offsets, sizeof(int) * (E + 1), cudaMemcpyHostToDevice), "offsets");
        gpu_test_poison(d_y, (size_t)n * H * 2);
        gpu_test_cuda(cudaGraphLaunch(exec, stream), "graph launch");
        gpu_test_cuda(cudaStreamSynchronize(stream), "graph replay");
        float *y = malloc(sizeof(float) * (size_t)n * H), *y_ref = malloc(sizeof(float) * (size_t)n * H);
        gpu_test_download_bf16(y, d_y, n, H, H);
        CHECK_OK(ref->forward(rr, &use->d, &(sm_combine_in){.y = y_ref}, &err), &err);
        double e = test_rel_l2(y, y_ref, (size_t)n * H);
        CHECK(e < BF16_TOL, "%s graph replay %d: rel err %.3g", name, replay, e);
        free(y); free(y_ref);
        if (new_routing_each_replay) free_dispatch(&p);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
    cudaFree(d_x); cudaFree(d_y); cudaFree(d_w); cudaFree(d_off);
    free_dispatch(&first);
    ref->destroy(rr);
    b->destroy(gr);
    free_experts(&ex);
}

/* Offsets with empty experts first, in the middle and last; tables poisoned before the call. */
static void test_pointer_table(void) {
    enum { E = 9 };
    const int offsets[E + 1] = {0, 0, 0, 3, 3, 4, 9, 9, 11, 11};
    const int n = offsets[E], T = SM_MOE_PTR_EXPERT_TABLES + SM_MOE_PTR_ROW_TABLES;
    sm_moe_pointer_args a = {.num_experts = E, .n_assign = n,
                             .expert_base = {(void *)0x100000, (void *)0x900000}, .expert_bytes = {4096, 640},
                             .row_base = {(void *)0x10, (void *)0x2000, (void *)0x30000, (void *)0x400000},
                             .row_bytes = {16, 48, 32, 160}};
    const void *want[T * 11], *got[T * 11];
    sm_error err = {0};
    a.expert_offsets = offsets;
    CHECK_OK(sm_moe_pointer_table_ref(&a, want, &err), &err);
    CHECK(want[0] == (const char *)0x100000 + 2 * 4096 && want[n + 10] == (const char *)0x900000 + 7 * 640,
          "CPU twin: expert of the first and last assignment");
    a.expert_offsets = gpu_test_upload(offsets, sizeof offsets);
    const void **d_table = gpu_test_malloc(sizeof got);
    gpu_test_poison(d_table, sizeof got);
    CHECK_OK(sm_cuda_moe_pointer_table(0, &a, d_table, &err), &err);
    gpu_test_cuda(cudaMemcpy(got, d_table, sizeof got, cudaMemcpyDeviceToHost), "pointer table");
    int bad = 0;
    for (int i = 0; i < T * n; i++) bad += got[i] != want[i];
    CHECK(bad == 0, "pointer table: %d of %d entries differ from the CPU twin", bad, T * n);
    cudaFree((void *)a.expert_offsets);
    cudaFree(d_table);
}

int main(void) {
    gpu_test_require_device("test_gpu_runners");
    test_pointer_table();
    test_against_ref();
    /* cuBLASLt on Hopper has pointer-array batches for BF16: the layer needs no host offsets */
    {
        sm_runner *r = NULL;
        sm_error err = {0};
        const sm_runner_backend *b = sm_runner_find("cublaslt", false);
        sm_moe_shape shape = {.num_layers = 1, .num_experts = 128, .hidden = 2048, .ffn = 768, .top_k = 8};
        CHECK_OK(b->create(&shape, &(sm_runner_opts){0}, &r, &err), &err);
        int max = r ? sm_runner_device_routing_max_assign(b, r) : -1;
        CHECK(max == 64, "cublaslt: device routing up to %d assignments, want 64 (E/2)", max);
        if (r) b->destroy(r);
    }
    test_graph_replay("cuda", true);      /* routing read on the GPU: new routing per replay */
    test_graph_replay("cublaslt", true);  /* no host offsets: pointer-array batches, new routing per replay */
    test_graph_replay("cublaslt", false); /* 12 assignments > E/2 with host offsets: grouped GEMMs, same routing */
    TEST_MAIN_END
}
