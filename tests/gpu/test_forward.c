/* The model on device "cuda" against the CPU reference (device "cpu"), through the public API:
 *  - logits of every fixture (tests/fixtures/models/, experiments/models/{target,draft}): a
 *    12-row prefill then 4 single-row decode steps;
 *  - a mixed batch (prefill rows of one sequence + decode rows of another in one forward), and a
 *    decode batch (one row of each sequence: the fused multi-row decode attention);
 *  - truncate then re-score different tokens at the truncated positions;
 *  - CUDA graph replays give the logits of eager steps (same kernels: bit for bit);
 *  - a route observer sees, per MoE layer, the same routing from a graphed GPU step as from an
 *    eager one (bit for bit: its routing is logged on the device and reported after the step),
 *    and the CPU's calls with the same expert sets for nearly every row;
 *  - 16 greedy tokens on the trained target equal the CPU's;
 *  - the speculative engine, unchanged, with target and draft on the GPU: greedy output equals
 *    GPU target-only greedy output;
 *  - random weights from config.json alone (same seed, same logits); a model that cannot fit fails
 *    before allocating with the bytes needed and free.
 * Tolerance: the GPU keeps weights, GEMM inputs and the KV cache in BF16 (unit roundoff 2^-9)
 * with fp32 accumulation and an fp32 residual stream. Each layer adds a few independent
 * roundings of relative size <= 2^-9 ≈ 2e-3 that partly average out over hidden >= 64 terms;
 * over 2-4 layers and the lm_head that stays well under 1e-2 (the bound the issue asks for),
 * which is 5 roundoffs: a wrong kernel (a missed bias, a wrong RoPE pair, a causal leak) moves
 * logits by O(1) relative, far beyond it. Router near-ties can flip an expert choice in BF16,
 * which the MoE fixtures (hidden 64, random weights) tolerate within the same bound. */
#include <dirent.h>
#include <errno.h>
#include <unistd.h>
#include <sys/stat.h>

#include "gpu/gpu_test.h"
#include "model/model.h"
#include "spec/spec.h"

#define LOGITS_TOL 1e-2
#define PROMPT 12
#define DECODE 4

static sm_model *load_runner(const char *dir, const char *device, int max_seqs, int max_context, bool eager,
                             const char *runner) {
    sm_model_opts o = {.n_threads = 2, .max_seqs = max_seqs, .max_context = max_context, .device = device, .eager = eager,
                       .moe_runner_backend = runner};
    sm_model *m = NULL;
    sm_error err = {0};
    sm_status s = sm_model_load(dir, &o, &m, &err);
    CHECK(s == SM_OK, "loading %s on %s: %s", dir, device, err.msg);
    return s ? NULL : m;
}

static sm_model *load_opts(const char *dir, const char *device, int max_seqs, int max_context, bool eager) {
    return load_runner(dir, device, max_seqs, max_context, eager, NULL);
}

static sm_model *load(const char *dir, const char *device, int max_seqs, int max_context) {
    return load_opts(dir, device, max_seqs, max_context, false);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double worst_rel(const float *a, const float *b, int rows, int V) {
    double w = 0;
    for (int r = 0; r < rows; r++) {
        double e = test_rel_l2(a + (size_t)r * V, b + (size_t)r * V, (size_t)V);
        w = e > w || e != e ? e : w;
    }
    return w;
}

/* prefill PROMPT rows then DECODE single rows: logits [(PROMPT + DECODE), V] */
static float *prefill_decode(sm_model *m) {
    int V = sm_model_cfg(m)->vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)(PROMPT + DECODE) * V);
    sm_row rows[PROMPT];
    for (int i = 0; i < PROMPT; i++) rows[i] = (sm_row){.seq = 0, .token = (7 * i + 3) % V, .pos = i, .want_logits = true};
    sm_error err = {0};
    CHECK_OK(sm_model_forward(m, rows, PROMPT, NULL, logits, &err), &err);
    for (int i = 0; i < DECODE; i++) {
        sm_row r = {.seq = 0, .token = (5 * i + 1) % V, .pos = PROMPT + i, .want_logits = true};
        CHECK_OK(sm_model_forward(m, &r, 1, NULL, logits + (size_t)(PROMPT + i) * V, &err), &err);
    }
    return logits;
}

static int fixtures_compared;

static void check_fixture(const char *dir) {
    char cfg[4200];
    struct stat st;
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if (stat(cfg, &st) != 0) return;
    sm_model *cpu = load(dir, "cpu", 1, 64), *gpu = load(dir, "cuda", 1, 64);
    if (!cpu || !gpu) { sm_model_free(cpu); sm_model_free(gpu); return; }
    int V = sm_model_cfg(cpu)->vocab_size;
    float *ref = prefill_decode(cpu), *got = prefill_decode(gpu);
    double e = worst_rel(got, ref, PROMPT + DECODE, V);
    CHECK(e < LOGITS_TOL && gpu_test_all_finite(got, (size_t)(PROMPT + DECODE) * V),
          "%s: GPU logits vs CPU: worst position rel L2 %.3g", dir, e);
    printf("%-44s %-18s worst rel L2 GPU vs CPU %.2e\n", dir, sm_model_cfg(cpu)->arch_name, e);
    fixtures_compared++;
    free(ref); free(got);
    sm_model_free(cpu); sm_model_free(gpu);
}

static void test_fixtures(void) {
    const char *root = "tests/fixtures/models";
    DIR *d = opendir(root);
    CHECK(d != NULL, "cannot open %s (run from the repository root)", root);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/%s", root, e->d_name);
        check_fixture(dir);
    }
    if (d) closedir(d);
    check_fixture("experiments/models/target");
    check_fixture("experiments/models/draft");
    CHECK(fixtures_compared >= 8, "only %d fixture models compared", fixtures_compared);
}

/* Mixed batch, truncate and a decode batch, CPU and GPU through the same calls (8 rows of logits). */
static void scenario(sm_model *m, float *out, int V) {
    sm_error err = {0};
    /* seq 1: 5-token prompt first */
    sm_row p1[5];
    for (int i = 0; i < 5; i++) p1[i] = (sm_row){.seq = 1, .token = (11 * i + 2) % V, .pos = i, .want_logits = false};
    CHECK_OK(sm_model_forward(m, p1, 5, NULL, NULL, &err), &err);
    /* one batch: seq 0 prefill of 6 rows + seq 1 two decode rows (verification-like) */
    sm_row mixed[8];
    for (int i = 0; i < 6; i++) mixed[i] = (sm_row){.seq = 0, .token = (3 * i + 1) % V, .pos = i, .want_logits = i >= 4};
    mixed[6] = (sm_row){.seq = 1, .token = 9 % V, .pos = 5, .want_logits = true};
    mixed[7] = (sm_row){.seq = 1, .token = 4 % V, .pos = 6, .want_logits = true};
    CHECK_OK(sm_model_forward(m, mixed, 8, NULL, out, &err), &err); /* 4 rows of logits */
    /* truncate seq 0 back to 3 and re-score other tokens at positions 3..4 */
    CHECK_OK(sm_model_truncate(m, 0, 3, &err), &err);
    sm_row again[2] = {{.seq = 0, .token = 17 % V, .pos = 3, .want_logits = true},
                       {.seq = 0, .token = 23 % V, .pos = 4, .want_logits = true}};
    CHECK_OK(sm_model_forward(m, again, 2, NULL, out + (size_t)4 * V, &err), &err);
    /* a decode batch: one new row of each sequence */
    sm_row batch[2] = {{.seq = 1, .token = 29 % V, .pos = 7, .want_logits = true},
                       {.seq = 0, .token = 31 % V, .pos = 5, .want_logits = true}};
    CHECK_OK(sm_model_forward(m, batch, 2, NULL, out + (size_t)6 * V, &err), &err);
    CHECK(sm_model_seq_length(m, 0) == 6 && sm_model_seq_length(m, 1) == 8, "lengths after the scenario: %d, %d",
          sm_model_seq_length(m, 0), sm_model_seq_length(m, 1));
}

static void test_mixed_and_truncate(const char *dir) {
    sm_model *cpu = load(dir, "cpu", 2, 32), *gpu = load(dir, "cuda", 2, 32);
    if (!cpu || !gpu) { sm_model_free(cpu); sm_model_free(gpu); return; }
    int V = sm_model_cfg(cpu)->vocab_size;
    float *ref = calloc((size_t)8 * V, 4), *got = calloc((size_t)8 * V, 4);
    scenario(cpu, ref, V);
    scenario(gpu, got, V);
    double e = worst_rel(got, ref, 8, V);
    CHECK(e < LOGITS_TOL, "%s: mixed batch + truncate + decode batch: worst rel L2 %.3g", dir, e);
    printf("%s: mixed prefill/decode batch + truncate/re-score + decode batch: worst rel L2 %.2e\n", dir, e);
    free(ref); free(got);
    sm_model_free(cpu); sm_model_free(gpu);
}

/* Graph replays (decode steps after the first of a shape) must equal eager steps exactly, with
 * either MoE runner (`cublaslt` decodes through its pointer-array batches) and for a dense model;
 * and they must be near the CPU's logits. */
static void test_graphs(const char *dir, const char *runner) {
    sm_model *eager = load_runner(dir, "cuda", 1, 64, true, runner);
    sm_model *graphed = load_runner(dir, "cuda", 1, 64, false, runner);
    sm_model *cpu = load(dir, "cpu", 1, 64);
    if (!eager || !graphed || !cpu) { sm_model_free(eager); sm_model_free(graphed); sm_model_free(cpu); return; }
    int V = sm_model_cfg(eager)->vocab_size;
    float *a = prefill_decode(eager), *b = prefill_decode(graphed), *c = prefill_decode(cpu);
    CHECK(memcmp(a, b, sizeof(float) * (size_t)(PROMPT + DECODE) * V) == 0,
          "%s (%s runner): CUDA-graph decode steps differ from eager ones (worst rel L2 %.3g)", dir,
          runner ? runner : "auto", worst_rel(b, a, PROMPT + DECODE, V));
    double e = worst_rel(b, c, PROMPT + DECODE, V);
    CHECK(e < LOGITS_TOL, "%s (%s runner): graphed GPU decode vs CPU: worst rel L2 %.3g", dir, runner ? runner : "auto", e);
    free(c);
    free(a); free(b);
    sm_model_free(eager); sm_model_free(graphed); sm_model_free(cpu);
}

/* Every on_route call of a run, flattened: (layer, rows, top_k) headers and the ids as sets. */
typedef struct route_rec {
    int calls, n;
    int head[256][3];
    int ids[1 << 15];
    float w[1 << 15];
} route_rec;

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

static void on_route(void *ctx, int layer, int n_rows, int top_k, const int *ids, const float *weights) {
    route_rec *r = ctx;
    if (r->calls == 256 || r->n + n_rows * top_k > (1 << 15)) return;
    r->head[r->calls][0] = layer;
    r->head[r->calls][1] = n_rows;
    r->head[r->calls][2] = top_k;
    r->calls++;
    for (int i = 0; i < n_rows * top_k; i++) {
        r->ids[r->n + i] = ids[i];
        r->w[r->n + i] = weights[i];
    }
    for (int row = 0; row < n_rows; row++) qsort(r->ids + r->n + row * top_k, (size_t)top_k, sizeof(int), cmp_int);
    r->n += n_rows * top_k;
}

static void observe(sm_model *m, route_rec *r) {
    memset(r, 0, sizeof *r);
    sm_route_observer obs = {.on_route = on_route, .ctx = r};
    sm_model_set_route_observer(m, &obs);
    free(prefill_decode(m));
    sm_model_set_route_observer(m, NULL);
}

static void test_route_observer(const char *dir) {
    static route_rec cpu, eager, graphed;
    sm_model *me = load_opts(dir, "cuda", 1, 64, true);
    sm_model *mg = load(dir, "cuda", 1, 64), *mc = load(dir, "cpu", 1, 64);
    if (me && mg && mc) {
        observe(mc, &cpu);
        observe(me, &eager);
        observe(mg, &graphed);
        int moe_layers = 0;
        const sm_model_config *c = sm_model_cfg(mc);
        for (int l = 0; l < c->num_layers; l++) moe_layers += c->layer_is_moe && c->layer_is_moe[l];
        CHECK(cpu.calls == moe_layers * (1 + DECODE) && cpu.calls > 0, "%s: %d observer calls on the CPU", dir, cpu.calls);
        CHECK(eager.calls == cpu.calls && graphed.calls == cpu.calls &&
                  !memcmp(eager.head, cpu.head, sizeof(int) * 3 * (size_t)cpu.calls) &&
                  !memcmp(graphed.head, cpu.head, sizeof(int) * 3 * (size_t)cpu.calls),
              "%s: observer calls (layer, rows, top_k) differ between CPU, eager GPU and graphed GPU", dir);
        CHECK(eager.n == graphed.n && !memcmp(eager.ids, graphed.ids, sizeof(int) * (size_t)eager.n) &&
                  !memcmp(eager.w, graphed.w, sizeof(float) * (size_t)eager.n),
              "%s: the routing observed from graphed steps differs from eager steps", dir);
        int same = 0;
        for (int i = 0; i < cpu.n && i < eager.n; i++) same += cpu.ids[i] == eager.ids[i];
        printf("%s: route observer: %d calls, %d of %d expert choices as on the CPU\n", dir, cpu.calls, same, cpu.n);
        CHECK(cpu.n == eager.n && same >= cpu.n * 95 / 100, "%s: only %d of %d observed expert choices agree with the CPU",
              dir, same, cpu.n);
    }
    sm_model_free(me);
    sm_model_free(mg);
    sm_model_free(mc);
}

static int argmax(const float *v, int n) {
    int b = 0;
    for (int i = 1; i < n; i++) b = v[i] > v[b] ? i : b;
    return b;
}

static void greedy(sm_model *m, const int *prompt, int n_prompt, int steps, int *out) {
    int V = sm_model_cfg(m)->vocab_size;
    float *logits = malloc((size_t)V * 4);
    sm_row rows[64];
    for (int i = 0; i < n_prompt; i++) rows[i] = (sm_row){.seq = 0, .token = prompt[i], .pos = i, .want_logits = i == n_prompt - 1};
    sm_error err = {0};
    CHECK_OK(sm_model_forward(m, rows, n_prompt, NULL, logits, &err), &err);
    for (int s = 0; s < steps; s++) {
        out[s] = argmax(logits, V);
        sm_row r = {.seq = 0, .token = out[s], .pos = n_prompt + s, .want_logits = true};
        CHECK_OK(sm_model_forward(m, &r, 1, NULL, logits, &err), &err);
    }
    free(logits);
}

static const int prompt_ids[] = {1, 45, 300, 12, 871, 5, 66, 1024, 7, 230};
#define N_PROMPT ((int)(sizeof prompt_ids / sizeof prompt_ids[0]))
#define GREEDY_STEPS 16

static void test_greedy_target(void) {
    const char *dir = "experiments/models/target";
    sm_model *cpu = load(dir, "cpu", 1, 128), *gpu = load(dir, "cuda", 1, 128);
    if (!cpu || !gpu) { sm_model_free(cpu); sm_model_free(gpu); return; }
    int a[GREEDY_STEPS], b[GREEDY_STEPS];
    greedy(cpu, prompt_ids, N_PROMPT, GREEDY_STEPS, a);
    greedy(gpu, prompt_ids, N_PROMPT, GREEDY_STEPS, b);
    int first_diff = -1;
    for (int i = 0; i < GREEDY_STEPS && first_diff < 0; i++) if (a[i] != b[i]) first_diff = i;
    CHECK(first_diff < 0, "target greedy: GPU departs from CPU at step %d (%d vs %d)", first_diff,
          first_diff >= 0 ? b[first_diff] : 0, first_diff >= 0 ? a[first_diff] : 0);
    printf("target greedy %d steps: GPU %s CPU\n", GREEDY_STEPS, first_diff < 0 ? "==" : "!=");
    sm_model_free(cpu); sm_model_free(gpu);
}

/* Run the engine on one sequence; returns the number of output tokens (into out). */
static int spec_generate(sm_model *target, const char *drafter, const char *draft_dir, int k, int max_new, int *out,
                         double *accept_len) {
    sm_spec_config sc = {.num_speculative_tokens = k, .drafter = drafter, .draft_dir = draft_dir,
                         .draft_opts = {.device = "cuda", .n_threads = 2}};
    sm_spec_engine *e = NULL;
    sm_error err = {0};
    sm_status s = sm_spec_engine_create(target, &sc, &e, &err);
    CHECK(s == SM_OK, "spec engine (k=%d, drafter %s): %s", k, drafter ? drafter : "none", err.msg);
    if (s) return 0;
    sm_spec_seq_params sp = {.prompt = prompt_ids, .n_prompt = N_PROMPT, .max_new_tokens = max_new, .seed = 1};
    int64_t id;
    int n = 0;
    CHECK_OK(sm_spec_add_sequence(e, &sp, &id, &err), &err);
    while (sm_spec_active_count(e) > 0) {
        const sm_spec_step_metrics *m;
        if (sm_spec_step(e, &m, &err)) { CHECK(0, "spec step: %s", err.msg); break; }
    }
    const int *toks;
    sm_spec_finish fin;
    if (sm_spec_seq_output(e, id, &toks, &n, &fin, &err) == SM_OK) memcpy(out, toks, (size_t)n * sizeof(int));
    if (accept_len) *accept_len = sm_spec_accept_length(sm_spec_engine_counters(e));
    sm_spec_engine_free(e);
    return n;
}

static void test_spec_on_gpu(void) {
    sm_model *target = load("experiments/models/target", "cuda", 1, 128);
    if (!target) return;
    int base[40], spec[40];
    int nb = spec_generate(target, NULL, NULL, 0, 32, base, NULL);
    for (int k = 1; k <= 4; k += 3) {
        double al = 0;
        int ns = spec_generate(target, "model", "experiments/models/draft", k, 32, spec, &al);
        CHECK(ns == nb && memcmp(spec, base, (size_t)nb * sizeof(int)) == 0,
              "GPU speculative (draft on GPU, k=%d) output differs from GPU target-only greedy (%d vs %d tokens)", k, ns, nb);
        printf("speculative on GPU, k=%d: %d tokens, equal to target-only: %s, accept_length %.2f\n", k, ns,
               ns == nb && !memcmp(spec, base, (size_t)nb * sizeof(int)) ? "yes" : "no", al);
    }
    sm_model_free(target);
}

static void test_random_and_fit(void) {
    const char *dir = "experiments/models/target";
    sm_error err = {0};
    float *l[3];
    for (int i = 0; i < 3; i++) {
        sm_model_opts o = {.device = "cuda", .random_weights = true, .seed = i < 2 ? 7 : 8, .max_context = 64};
        sm_model *m = NULL;
        l[i] = NULL;
        CHECK_OK(sm_model_load(dir, &o, &m, &err), &err);
        if (m) l[i] = prefill_decode(m);
        sm_model_free(m);
    }
    if (l[0] && l[1] && l[2]) {
        size_t n = (size_t)(PROMPT + DECODE) * 4096;
        CHECK(gpu_test_all_finite(l[0], n), "random weights: non-finite logits");
        CHECK(memcmp(l[0], l[1], n * 4) == 0, "random weights: the same seed gave different logits");
        CHECK(memcmp(l[0], l[2], n * 4) != 0, "random weights: different seeds gave the same logits");
    }
    for (int i = 0; i < 3; i++) free(l[i]);
    /* 200000 sequences x 1024 positions: ~190 GiB of KV cache */
    sm_model_opts o = {.device = "cuda", .max_seqs = 200000, .max_context = 1024};
    sm_model *m = NULL;
    sm_status s = sm_model_load(dir, &o, &m, &err);
    CHECK(s == SM_ENOMEM && strstr(err.msg, "needs") && strstr(err.msg, "KV cache") && strstr(err.msg, "GiB free on"),
          "too-big model: got %s: %s", sm_status_name(s), err.msg);
    printf("too-big model: %s\n", err.msg);
    sm_model_free(m);
    o = (sm_model_opts){.device = "cuda", .chunked_prefill_size = 70000};
    m = NULL;
    s = sm_model_load(dir, &o, &m, &err);
    CHECK(s == SM_EINVAL && strstr(err.msg, "chunked_prefill_size 70000"), "chunk of 70000 rows: %s", err.msg);
    sm_model_free(m);
    m = NULL;
    o = (sm_model_opts){.device = "tpu"};
    s = sm_model_load(dir, &o, &m, &err);
    CHECK(s == SM_EINVAL && strstr(err.msg, "tpu"), "unknown device: %s", err.msg);
}

/* The prefill attention kernel inside a model: the repo's models have head_dim <= 32, which it
 * does not take, so a config is rewritten with head_dim 128 (random weights). A 240-token prompt
 * (in one forward, or as `split` tokens then the rest — the second part then starts at p0 > 0 —
 * in chunks of `chunk` rows, 0 = the default 512; pieces of 128 rows and more run the prefill
 * kernel) must give the logits of the same prompt fed a token at a time (the decode attention),
 * row for row — for the dense Qwen3 fixture. In the MoE target a router near-tie can flip an
 * expert between the two paths and move that row's logits far, so there the median row is
 * checked and the rows past the tolerance are counted. */
static void test_prompt_attention(const char *src, bool moe, int chunk, int split) {
    char dir[] = "/tmp/specmoe_hd128_XXXXXX", path[sizeof dir + 16], cfg[512];
    if (!mkdtemp(dir)) { CHECK(false, "mkdtemp: %s", strerror(errno)); return; }
    snprintf(cfg, sizeof cfg, "%s/config.json", src);
    FILE *in = fopen(cfg, "r");
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *out = fopen(path, "w");
    char line[512];
    bool replaced = false;
    while (in && out && fgets(line, sizeof line, in)) {
        if (strstr(line, "\"head_dim\"")) {
            fputs("  \"head_dim\": 128,\n", out);
            replaced = true;
        } else {
            fputs(line, out);
        }
    }
    if (in) fclose(in);
    if (out) fclose(out);
    CHECK(replaced, "%s has no head_dim line to rewrite", cfg);
    enum { N = 240 };
    sm_model_opts o = {.device = "cuda", .random_weights = true, .seed = 11, .max_context = N + 8,
                       .chunked_prefill_size = chunk};
    sm_model *m = NULL;
    sm_error err = {0};
    CHECK_OK(sm_model_load(dir, &o, &m, &err), &err);
    if (m) {
        int V = sm_model_cfg(m)->vocab_size;
        float *whole = malloc(sizeof(float) * (size_t)N * V), *one = malloc(sizeof(float) * (size_t)N * V);
        sm_row *rows = malloc(sizeof *rows * N);
        double err_row[N];
        for (int i = 0; i < N; i++) rows[i] = (sm_row){.seq = 0, .token = (13 * i + 5) % V, .pos = i, .want_logits = true};
        if (split) CHECK_OK(sm_model_forward(m, rows, split, NULL, whole, &err), &err);
        CHECK_OK(sm_model_forward(m, rows + split, N - split, NULL, whole + (size_t)split * V, &err), &err);
        CHECK_OK(sm_model_truncate(m, 0, 0, &err), &err);
        for (int i = 0; i < N; i++) CHECK_OK(sm_model_forward(m, &rows[i], 1, NULL, one + (size_t)i * V, &err), &err);
        int over = 0;
        for (int i = 0; i < N; i++) {
            err_row[i] = test_rel_l2(whole + (size_t)i * V, one + (size_t)i * V, (size_t)V);
            over += err_row[i] >= LOGITS_TOL;
        }
        double worst = worst_rel(whole, one, N, V);
        qsort(err_row, N, sizeof err_row[0], cmp_double);
        CHECK(gpu_test_all_finite(whole, (size_t)N * V) && (moe ? err_row[N / 2] < LOGITS_TOL : worst < LOGITS_TOL),
              "%s, head_dim 128, chunks of %d, split at %d: %d-token prompt vs a token at a time: median row rel L2 "
              "%.3g, worst %.3g", src, chunk, split, N, err_row[N / 2], worst);
        printf("%s, head_dim 128, chunks of %d, split at %d: %d-token prompt (prefill attention) vs a token at a time: "
               "median row rel L2 %.2e, worst %.2e, %d rows past %.0e\n", src, chunk, split, N, err_row[N / 2], worst,
               over, LOGITS_TOL);
        free(whole); free(one); free(rows);
    }
    sm_model_free(m);
    remove(path);
    rmdir(dir);
}

/* An A/B knob with a value that is not a row count stops the load with a message naming it (it
 * used to be read with atoi, so a typo silently meant 0). */
static void test_bad_knob(void) {
    setenv("SPECMOE_NORM_GEMV_MAX_ROWS", "four", 1);
    sm_model_opts o = {.n_threads = 2, .max_seqs = 1, .max_context = 16, .device = "cuda"};
    sm_model *m = NULL;
    sm_error err = {0};
    sm_status s = sm_model_load("tests/fixtures/models/qwen3", &o, &m, &err);
    CHECK(s != SM_OK && strstr(err.msg, "SPECMOE_NORM_GEMV_MAX_ROWS=four"), "a bad SPECMOE_NORM_GEMV_MAX_ROWS: %s",
          s ? err.msg : "loaded");
    sm_model_free(m);
    unsetenv("SPECMOE_NORM_GEMV_MAX_ROWS");
}

int main(void) {
    gpu_test_require_device("test_gpu_forward");
    test_bad_knob();
    test_prompt_attention("tests/fixtures/models/qwen3", false, 0, 0);
    test_prompt_attention("tests/fixtures/models/qwen3", false, 0, 100);   /* a 140-row prefill from p0 = 100 */
    test_prompt_attention("tests/fixtures/models/qwen3", false, 128, 0);   /* 128 rows, then 112 by the fp32 kernel */
    test_prompt_attention("experiments/models/target", true, 0, 0);
    test_fixtures();
    test_mixed_and_truncate("experiments/models/target");
    test_mixed_and_truncate("tests/fixtures/models/qwen2_moe");
    test_graphs("experiments/models/target", "cuda");
    test_graphs("experiments/models/target", "cublaslt");
    test_graphs("tests/fixtures/models/llama", NULL);
    test_route_observer("experiments/models/target");
    test_route_observer("tests/fixtures/models/mixtral");
    test_greedy_target();
    test_spec_on_gpu();
    test_random_and_fit();
    TEST_MAIN_END
}
