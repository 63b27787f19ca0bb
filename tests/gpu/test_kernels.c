/* Every kernel must compute what its CPU twin computes, on fresh random inputs (not zeros),
 * with outputs poisoned with NaN before the call, over several odd sizes:
 *  - moe grouped gate_up / down (every regime forced — decode, prefill, decode-mma, prefill-mma —
 *    and auto with and without the mma kernels allowed) vs a plain fp32 loop on the same BF16
 *    values, for random, skewed (one hot expert), half-empty and single-token routing, M tails
 *    (experts with 1..300 rows: several 128-row tiles and passes of 8/16/32 tokens), N tails
 *    (columns not a multiple of 16 or 128), shapes the prefill-mma kernel refuses (its WMMA
 *    fallback) and K long enough for several load batches per warp; no assignments at all;
 *  - silu_mul vs sm_cpu_silu_mul, rmsnorm(+residual) vs sm_cpu_rmsnorm, router top-k vs
 *    sm_router_topk (ids exactly, weights to fp32 rounding).
 * Tolerance for BF16 outputs: ||gpu - cpu|| / ||cpu|| < 1e-2 (BF16 keeps 8 mantissa bits). */
#include "gpu/gpu_test.h"
#include "model/cpu_ops.h"
#include "moe/router.h"
#include "moe_grouped.h"
#include "rmsnorm.h"
#include "router_topk.h"
#include "silu_mul.h"

#define BF16_TOL 1e-2

/* ---- grouped MoE ---------------------------------------------------------------------------- */

static float dotf(const float *a, const float *b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return (float)s;
}

static void twin_gate_up(const float *x, const float *wgu, const int *off, int E, int H, int F, float *act) {
    for (int e = 0; e < E; e++)
        for (int a = off[e]; a < off[e + 1]; a++)
            for (int j = 0; j < F; j++) {
                float g = dotf(x + (size_t)a * H, wgu + ((size_t)e * 2 * F + j) * H, H);
                float u = dotf(x + (size_t)a * H, wgu + ((size_t)e * 2 * F + F + j) * H, H);
                act[(size_t)a * F + j] = g / (1.0f + expf(-g)) * u;
            }
}

static void twin_down(const float *act, const float *wd, const float *weight, const int *off, int E, int H, int F,
                      float *y) {
    for (int e = 0; e < E; e++)
        for (int a = off[e]; a < off[e + 1]; a++)
            for (int h = 0; h < H; h++)
                y[(size_t)a * H + h] = weight[a] * dotf(act + (size_t)a * F, wd + ((size_t)e * H + h) * F, F);
}

enum { ROUTE_RANDOM, ROUTE_SKEWED, ROUTE_HALF_EMPTY, ROUTE_COUNT };
static const char *route_names[] = {"random", "skewed", "half-empty"};

static void make_offsets(int route, int n, int E, uint64_t *seed, int *off) {
    int *count = calloc((size_t)E, sizeof *count);
    for (int a = 0; a < n; a++) {
        int e = (int)(gpu_test_next(seed) % (uint64_t)E);
        if (route == ROUTE_SKEWED && gpu_test_next(seed) % 5 != 0) e = E / 2; /* one hot expert */
        if (route == ROUTE_HALF_EMPTY) e = (e / 2) * 2;                     /* odd experts stay empty */
        count[e]++;
    }
    off[0] = 0;
    for (int e = 0; e < E; e++) off[e + 1] = off[e] + count[e];
    free(count);
}

/* One regime to run: forced, or AUTO with some new kernels allowed. */
typedef struct regime_case {
    sm_moe_regime regime;
    unsigned allow;
} regime_case;

static const regime_case regime_cases[] = {
    {SM_MOE_REGIME_AUTO, 0},
    {SM_MOE_REGIME_AUTO, SM_MOE_ALLOW_DECODE_MMA | SM_MOE_ALLOW_PREFILL_MMA},
    {SM_MOE_REGIME_DECODE, 0},
    {SM_MOE_REGIME_PREFILL, 0},
    {SM_MOE_REGIME_DECODE_MMA, 0},
    {SM_MOE_REGIME_PREFILL_MMA, 0},
    {SM_MOE_REGIME_PREFILL_WGMMA, 0},
    {SM_MOE_REGIME_AUTO, SM_MOE_ALLOW_DECODE_MMA | SM_MOE_ALLOW_PREFILL_MMA | SM_MOE_ALLOW_PREFILL_WGMMA},
};

/* Which kernel each regime resolves to: prefill-mma only for K % 32 == 0 and N % 64 == 0 (else
 * the WMMA prefill), AUTO keeps to the old kernels unless allowed, names round-trip. */
static void test_moe_regime_pick(void) {
    sm_moe_grouped_args a = {.num_experts = 8, .hidden = 128, .ffn = 64, .n_assign = 4096,
                             .regime = SM_MOE_REGIME_PREFILL_MMA};
    CHECK(sm_moe_regime_pick(&a, false) == SM_MOE_REGIME_PREFILL_MMA, "prefill-mma must take hidden 128 ffn 64 (gate_up)");
    CHECK(sm_moe_regime_pick(&a, true) == SM_MOE_REGIME_PREFILL_MMA, "prefill-mma must take hidden 128 ffn 64 (down)");
    a.ffn = 32; /* gate_up N = 32, down K = 32 N = 128 */
    CHECK(sm_moe_regime_pick(&a, false) == SM_MOE_REGIME_PREFILL, "ffn 32: gate_up must fall back to prefill");
    CHECK(sm_moe_regime_pick(&a, true) == SM_MOE_REGIME_PREFILL_MMA, "ffn 32: down (K 32, N 128) is accepted");
    a.ffn = 64;
    a.regime = SM_MOE_REGIME_AUTO;
    CHECK(sm_moe_regime_pick(&a, false) == SM_MOE_REGIME_PREFILL, "AUTO without allow bits must not pick prefill-mma");
    a.auto_allow = SM_MOE_ALLOW_PREFILL_MMA;
    CHECK(sm_moe_regime_pick(&a, false) == SM_MOE_REGIME_PREFILL_MMA, "AUTO allowed must pick prefill-mma at 512/expert");
    a.n_assign = 8;
    CHECK(sm_moe_regime_pick(&a, false) == SM_MOE_REGIME_DECODE, "AUTO, prefill-mma allowed, 1/expert: decode");
    a.auto_allow |= SM_MOE_ALLOW_DECODE_MMA;
    CHECK(sm_moe_regime_pick(&a, false) == SM_MOE_REGIME_DECODE_MMA, "AUTO, decode-mma allowed, 1/expert: decode-mma");
    a.n_assign = 4;
    CHECK(sm_moe_regime_pick(&a, false) == SM_MOE_REGIME_DECODE_MMA,
          "AUTO, decode-mma allowed, small experts, 1/2 per expert: decode-mma");
    a.n_assign = 3;
    CHECK(sm_moe_regime_pick(&a, false) == SM_MOE_REGIME_DECODE, "AUTO, decode-mma allowed, 3 of 8 experts: decode");
    a.n_assign = 8 * 17;
    CHECK(sm_moe_regime_pick(&a, false) == SM_MOE_REGIME_PREFILL_MMA, "AUTO, 17 per expert: prefill-mma");
    a.auto_allow |= SM_MOE_ALLOW_PREFILL_WGMMA;
    CHECK(sm_moe_regime_pick(&a, false) == SM_MOE_REGIME_PREFILL_WGMMA, "AUTO, wgmma allowed, 17 per expert: wgmma");
    /* with wgmma, small experts skip decode-mma; large ones keep it up to 2 tokens per expert */
    a.n_assign = 8;
    CHECK(sm_moe_regime_pick(&a, true) == SM_MOE_REGIME_PREFILL_WGMMA, "AUTO, small experts, 1/expert: wgmma");
    a.n_assign = 7;
    CHECK(sm_moe_regime_pick(&a, true) == SM_MOE_REGIME_DECODE_MMA, "AUTO, small experts, 7 of 8 experts: decode-mma");
    a.n_assign = 3;
    CHECK(sm_moe_regime_pick(&a, true) == SM_MOE_REGIME_DECODE, "AUTO, small experts, 3 of 8 experts: decode");
    a.hidden = 4096, a.ffn = 14336, a.n_assign = 16;
    CHECK(sm_moe_regime_pick(&a, true) == SM_MOE_REGIME_DECODE_MMA, "AUTO, Mixtral experts, 2/expert: decode-mma");
    a.n_assign = 24;
    CHECK(sm_moe_regime_pick(&a, false) == SM_MOE_REGIME_PREFILL_WGMMA, "AUTO, Mixtral experts, 3/expert: wgmma");
    a.hidden = 128, a.ffn = 64, a.n_assign = 8 * 17;
    a.ffn = 24; /* no shape limits: wgmma reads K and N tails as zeros */
    CHECK(sm_moe_regime_pick(&a, true) == SM_MOE_REGIME_PREFILL_WGMMA, "AUTO, wgmma allowed, ffn 24: wgmma");
    a.regime = SM_MOE_REGIME_PREFILL_WGMMA;
    CHECK(sm_moe_regime_pick(&a, false) == SM_MOE_REGIME_PREFILL_WGMMA, "forced prefill-wgmma");
    a.ffn = 64;
    for (int r = 0; r < SM_MOE_REGIME_COUNT; r++)
        CHECK(sm_moe_regime_parse(sm_moe_regime_name((sm_moe_regime)r)) == r, "regime %d name round trip", r);
    CHECK(sm_moe_regime_parse("fast") == -1, "unknown regime name must be -1");
}

/* One routed batch of n assignments for an expert MLP of H, F, E (host weights wgu, wd and their
 * device copies given): inputs, routing weights and offsets on both sides, the twin's act, and
 * poisoned device outputs. */
typedef struct moe_batch {
    int H, F, E, n;
    int *off;
    float *x, *weight, *act_ref, *act, *y_ref, *y;
    void *d_x, *d_off, *d_w, *d_act, *d_y;
} moe_batch;

static moe_batch moe_batch_make(int H, int F, int E, int n, int route, const float *wgu, uint64_t *seed) {
    moe_batch b = {.H = H, .F = F, .E = E, .n = n};
    b.off = malloc(sizeof(int) * (size_t)(E + 1));
    make_offsets(route, n, E, seed, b.off);
    b.x = gpu_test_random_bf16((size_t)n * H, 2.0f, seed);
    b.weight = malloc(sizeof(float) * (size_t)n);
    for (int a = 0; a < n; a++) b.weight[a] = 0.5f + 0.5f * gpu_test_uniform(seed);
    b.act_ref = malloc(sizeof(float) * (size_t)n * F);
    b.act = malloc(sizeof(float) * (size_t)n * F);
    b.y_ref = malloc(sizeof(float) * (size_t)n * H);
    b.y = malloc(sizeof(float) * (size_t)n * H);
    twin_gate_up(b.x, wgu, b.off, E, H, F, b.act_ref);
    b.d_x = gpu_test_upload_bf16(b.x, n, H, H);
    b.d_off = gpu_test_upload(b.off, sizeof(int) * (size_t)(E + 1));
    b.d_w = gpu_test_upload(b.weight, sizeof(float) * (size_t)n);
    b.d_act = gpu_test_malloc((size_t)n * F * 2);
    b.d_y = gpu_test_malloc((size_t)n * H * 2);
    return b;
}

static void moe_batch_free(moe_batch *b) {
    cudaFree(b->d_x); cudaFree(b->d_off); cudaFree(b->d_w); cudaFree(b->d_act); cudaFree(b->d_y);
    free(b->off); free(b->x); free(b->weight); free(b->act_ref); free(b->act); free(b->y_ref); free(b->y);
}

/* gate_up and down of one regime against the twins, outputs poisoned first; down is checked on
 * the GPU's own act, so each kernel is judged alone. */
static void moe_batch_check(moe_batch *b, const float *wd, const void *d_wgu, const void *d_wd, sm_moe_regime regime,
                            unsigned allow, const char *what) {
    const int n = b->n, H = b->H, F = b->F;
    sm_moe_grouped_args args = {.num_experts = b->E, .hidden = H, .ffn = F, .n_assign = n, .expert_offsets = b->d_off,
                                .regime = regime, .auto_allow = allow};
    char label[64];
    snprintf(label, sizeof label, "%s%s -> %s/%s", sm_moe_regime_name(regime), allow ? "(mma allowed)" : "",
             sm_moe_regime_name(sm_moe_regime_pick(&args, false)), sm_moe_regime_name(sm_moe_regime_pick(&args, true)));
    sm_error err = {0};
    gpu_test_poison(b->d_act, (size_t)n * F * 2);
    gpu_test_poison(b->d_y, (size_t)n * H * 2);
    CHECK_OK(sm_cuda_moe_gate_up(0, &args, b->d_x, d_wgu, b->d_act, &err), &err);
    gpu_test_cuda(cudaDeviceSynchronize(), "moe_gate_up");
    gpu_test_download_bf16(b->act, b->d_act, n, F, F);
    twin_down(b->act, wd, b->weight, b->off, b->E, H, F, b->y_ref);
    CHECK_OK(sm_cuda_moe_down(0, &args, b->d_act, d_wd, b->d_w, b->d_y, &err), &err);
    gpu_test_cuda(cudaDeviceSynchronize(), "moe_down");
    gpu_test_download_bf16(b->y, b->d_y, n, H, H);
    /* gate_up then the chained down, back to back as the runner launches them (where both run the
     * decode regime the down finds its experts before its PDL wait): the same bits as moe_down */
    sm_moe_grouped_args chained = args;
    chained.auto_allow |= SM_MOE_ALLOW_EARLY_DOWN;
    float *y_chained = malloc(sizeof(float) * (size_t)n * H);
    gpu_test_poison(b->d_act, (size_t)n * F * 2);
    gpu_test_poison(b->d_y, (size_t)n * H * 2);
    CHECK_OK(sm_cuda_moe_gate_up(0, &chained, b->d_x, d_wgu, b->d_act, &err), &err);
    CHECK_OK(sm_cuda_moe_down_chained(0, &chained, b->d_act, d_wd, b->d_w, b->d_y, &err), &err);
    gpu_test_cuda(cudaDeviceSynchronize(), "moe_gate_up + moe_down_chained");
    gpu_test_download_bf16(y_chained, b->d_y, n, H, H);
    CHECK(!memcmp(y_chained, b->y, sizeof(float) * (size_t)n * H),
          "down_chained H=%d F=%d E=%d n=%d %s regime %s: differs from moe_down", H, F, b->E, n, what, label);
    free(y_chained);
    double e_act = test_rel_l2(b->act, b->act_ref, (size_t)n * F), e_y = test_rel_l2(b->y, b->y_ref, (size_t)n * H);
    CHECK(e_act < BF16_TOL, "gate_up H=%d F=%d E=%d n=%d %s regime %s: rel err %.3g", H, F, b->E, n, what, label, e_act);
    CHECK(e_y < BF16_TOL, "down H=%d F=%d E=%d n=%d %s regime %s: rel err %.3g", H, F, b->E, n, what, label, e_y);
}

/* shard of shards: the shapes with index % shards == shard (compute-sanitizer's racecheck of the
 * whole list took longer than one run's limit on an H100). */
static void test_moe_grouped(int shard, int shards) {
    /* H, F, E: odd multiples of 8 (decode tails, prefill-mma refused), multiples of 64 (prefill-mma
     * taken; N = 192 leaves half a 128-wide down tile), H = 2048 (several load batches per warp),
     * and 160 experts (find_tile past the 128 whose offsets it requests at once) */
    const int shapes[][3] = {{64, 32, 4}, {72, 24, 3}, {136, 40, 5}, {256, 200, 16},
                             {128, 64, 4}, {192, 128, 3}, {2048, 192, 8}, {64, 32, 160}};
    const int n_list[] = {1, 3, 17, 150, 300};
    uint64_t seed = 0x1234567;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        if ((int)(si % (size_t)shards) != shard) continue;
        int H = shapes[si][0], F = shapes[si][1], E = shapes[si][2];
        float *wgu = gpu_test_random_bf16((size_t)E * 2 * F * H, 1.0f / sqrtf((float)H), &seed);
        float *wd = gpu_test_random_bf16((size_t)E * H * F, 1.0f / sqrtf((float)F), &seed);
        void *d_wgu = gpu_test_upload_bf16(wgu, E * 2 * F, H, H), *d_wd = gpu_test_upload_bf16(wd, E * H, F, F);
        for (int route = 0; route < ROUTE_COUNT; route++)
            for (size_t ni = 0; ni < sizeof n_list / sizeof n_list[0]; ni++) {
                moe_batch b = moe_batch_make(H, F, E, n_list[ni], route, wgu, &seed);
                for (size_t ri = 0; ri < sizeof regime_cases / sizeof regime_cases[0]; ri++)
                    moe_batch_check(&b, wd, d_wgu, d_wd, regime_cases[ri].regime, regime_cases[ri].allow, route_names[route]);
                moe_batch_free(&b);
            }
        cudaFree(d_wgu); cudaFree(d_wd);
        free(wgu); free(wd);
    }
}

/* The grouped-MoE entry points with nothing to do or bad arguments (no shapes: shard 0 only). */
static void test_moe_grouped_edges(void) {
    /* No assignments: nothing to launch, in every regime. */
    for (size_t ri = 0; ri < sizeof regime_cases / sizeof regime_cases[0]; ri++) {
        sm_error err = {0};
        sm_moe_grouped_args none = {.num_experts = 4, .hidden = 64, .ffn = 64, .n_assign = 0,
                                    .regime = regime_cases[ri].regime, .auto_allow = regime_cases[ri].allow};
        CHECK_OK(sm_cuda_moe_gate_up(0, &none, NULL, NULL, NULL, &err), &err);
        CHECK_OK(sm_cuda_moe_down(0, &none, NULL, NULL, NULL, NULL, &err), &err);
        none.auto_allow |= SM_MOE_ALLOW_EARLY_DOWN;
        CHECK_OK(sm_cuda_moe_down_chained(0, &none, NULL, NULL, NULL, NULL, &err), &err);
    }
    gpu_test_cuda(cudaDeviceSynchronize(), "moe with no assignments");
    /* Bad arguments are errors with a message, not crashes. */
    sm_error err = {0};
    sm_moe_grouped_args bad = {.num_experts = 4, .hidden = 60, .ffn = 32, .n_assign = 1};
    CHECK(sm_cuda_moe_gate_up(0, &bad, NULL, NULL, NULL, &err) == SM_EINVAL && strstr(err.msg, "multiples of 8"),
          "hidden 60 must be refused, got: %s", err.msg);
    sm_moe_grouped_args bad_regime = {.num_experts = 4, .hidden = 64, .ffn = 32, .n_assign = 1,
                                      .regime = SM_MOE_REGIME_COUNT};
    void *d_any = gpu_test_malloc(4096); /* valid pointers: only the regime is wrong */
    CHECK(sm_cuda_moe_gate_up(0, &bad_regime, d_any, d_any, d_any, &err) == SM_EINVAL && strstr(err.msg, "regime"),
          "regime %d must be refused, got: %s", (int)SM_MOE_REGIME_COUNT, err.msg);
    cudaFree(d_any);
}

/* prefill-wgmma at more tiles than the GPU holds at once, with skewed routing (short last
 * m-tiles, whose second warpgroup has no rows): the shapes above stay under one wave. Both tile
 * widths (SPECMOE_WGMMA_BN: 256 by default, 128 with two CTAs an SM) are checked. */
static void test_moe_wgmma_many_tiles(void) {
    const int H = 256, F = 512, E = 3, n = 6000;
    uint64_t seed = 0xabcdef;
    float *wgu = gpu_test_random_bf16((size_t)E * 2 * F * H, 1.0f / sqrtf((float)H), &seed);
    float *wd = gpu_test_random_bf16((size_t)E * H * F, 1.0f / sqrtf((float)F), &seed);
    void *d_wgu = gpu_test_upload_bf16(wgu, E * 2 * F, H, H), *d_wd = gpu_test_upload_bf16(wd, E * H, F, F);
    moe_batch b = moe_batch_make(H, F, E, n, ROUTE_SKEWED, wgu, &seed);
    const char *widths[] = {"128", "256"};
    for (int i = 0; i < 2; i++) {
        char what[64];
        snprintf(what, sizeof what, "skewed, many tiles, BN %s", widths[i]);
        setenv("SPECMOE_WGMMA_BN", widths[i], 1);
        moe_batch_check(&b, wd, d_wgu, d_wd, SM_MOE_REGIME_PREFILL_WGMMA, 0, what);
    }
    unsetenv("SPECMOE_WGMMA_BN");
    moe_batch_free(&b);
    cudaFree(d_wgu); cudaFree(d_wd);
    free(wgu); free(wd);
}

/* ---- silu_mul ------------------------------------------------------------------------------- */

static void test_silu_mul(void) {
    const int rows_list[] = {1, 7, 33}, ffn_list[] = {8, 24, 13, 1000};
    uint64_t seed = 99;
    for (size_t ri = 0; ri < 3; ri++)
        for (size_t fi = 0; fi < 4; fi++)
            for (int scaled = 0; scaled < 2; scaled++) {
                int rows = rows_list[ri], F = ffn_list[fi];
                float *gu = gpu_test_random_bf16((size_t)rows * 2 * F, 4.0f, &seed);
                float *scale = malloc(sizeof(float) * (size_t)rows);
                for (int r = 0; r < rows; r++) scale[r] = scaled ? 0.1f + gpu_test_uniform(&seed) : 1.0f;
                float *g = malloc(sizeof(float) * (size_t)rows * F), *u = malloc(sizeof(float) * (size_t)rows * F);
                for (int r = 0; r < rows; r++)
                    for (int j = 0; j < F; j++) {
                        g[(size_t)r * F + j] = gu[(size_t)r * 2 * F + j];
                        u[(size_t)r * F + j] = gu[(size_t)r * 2 * F + F + j];
                    }
                float *ref = malloc(sizeof(float) * (size_t)rows * F), *out = malloc(sizeof(float) * (size_t)rows * F);
                sm_cpu_silu_mul(ref, g, u, rows, F);
                for (int r = 0; r < rows; r++)
                    for (int j = 0; j < F; j++) ref[(size_t)r * F + j] *= scale[r];
                void *d_gu = gpu_test_upload_bf16(gu, rows, 2 * F, 2 * F), *d_s = gpu_test_upload(scale, sizeof(float) * (size_t)rows);
                void *d_out = gpu_test_malloc((size_t)rows * F * 2);
                gpu_test_poison(d_out, (size_t)rows * F * 2);
                sm_error err = {0};
                CHECK_OK(sm_cuda_silu_mul(0, d_gu, scaled ? d_s : NULL, d_out, rows, F, &err), &err);
                gpu_test_cuda(cudaDeviceSynchronize(), "silu_mul");
                gpu_test_download_bf16(out, d_out, rows, F, F);
                double e = test_rel_l2(out, ref, (size_t)rows * F);
                CHECK(e < BF16_TOL, "silu_mul rows=%d ffn=%d scaled=%d: rel err %.3g", rows, F, scaled, e);
                cudaFree(d_gu); cudaFree(d_s); cudaFree(d_out);
                free(gu); free(scale); free(g); free(u); free(ref); free(out);
            }
}

/* ---- rmsnorm -------------------------------------------------------------------------------- */

static void test_rmsnorm(void) {
    const int rows_list[] = {1, 5, 17}, dim_list[] = {8, 100, 1000, 4096, 15000};
    uint64_t seed = 7;
    for (size_t ri = 0; ri < 3; ri++)
        for (size_t di = 0; di < 5; di++)
            for (int with_res = 0; with_res < 2; with_res++) {
                int rows = rows_list[ri], dim = dim_list[di];
                size_t n = (size_t)rows * dim;
                float *x = gpu_test_random_bf16(n, 3.0f, &seed), *res = gpu_test_random_bf16(n, 3.0f, &seed);
                float *w = gpu_test_random_bf16((size_t)dim, 1.0f, &seed);
                float *sum = malloc(sizeof(float) * n), *ref = malloc(sizeof(float) * n);
                for (size_t i = 0; i < n; i++) sum[i] = with_res ? x[i] + res[i] : x[i];
                sm_cpu_rmsnorm(ref, sum, w, rows, dim, 1e-6f);
                void *d_x = gpu_test_upload_bf16(x, rows, dim, dim), *d_res = gpu_test_upload_bf16(res, rows, dim, dim);
                void *d_w = gpu_test_upload_bf16(w, 1, dim, dim);
                sm_error err = {0};
                CHECK_OK(sm_cuda_rmsnorm_residual(0, d_x, with_res ? d_res : NULL, d_w, rows, dim, 1e-6f, &err), &err);
                gpu_test_cuda(cudaDeviceSynchronize(), "rmsnorm");
                float *out = malloc(sizeof(float) * n), *res_out = malloc(sizeof(float) * n);
                gpu_test_download_bf16(out, d_x, rows, dim, dim);
                gpu_test_download_bf16(res_out, d_res, rows, dim, dim);
                double e = test_rel_l2(out, ref, n);
                CHECK(e < BF16_TOL, "rmsnorm rows=%d dim=%d residual=%d: rel err %.3g", rows, dim, with_res, e);
                if (with_res) {
                    double er = test_rel_l2(res_out, sum, n);
                    CHECK(er < BF16_TOL, "rmsnorm residual sum rows=%d dim=%d: rel err %.3g", rows, dim, er);
                } else {
                    CHECK(test_rel_l2(res_out, res, n) == 0, "rmsnorm without residual wrote the residual");
                }
                cudaFree(d_x); cudaFree(d_res); cudaFree(d_w);
                free(x); free(res); free(w); free(sum); free(ref); free(out); free(res_out);
            }
}

/* ---- router top-k ----------------------------------------------------------------------------- */

static void test_router_topk(void) {
    const int rows_list[] = {1, 9, 64}, cfg[][2] = {{4, 1}, {8, 2}, {60, 4}, {128, 8}, {256, 40}}; /* E, k */
    uint64_t seed = 4242;
    for (size_t ri = 0; ri < 3; ri++)
        for (size_t ci = 0; ci < sizeof cfg / sizeof cfg[0]; ci++)
            for (int renorm = 0; renorm < 2; renorm++) {
                int rows = rows_list[ri], E = cfg[ci][0], k = cfg[ci][1];
                float *logits = malloc(sizeof(float) * (size_t)rows * E);
                for (size_t i = 0; i < (size_t)rows * E; i++) logits[i] = 3.0f * gpu_test_uniform(&seed);
                if (rows > 1) logits[E + 1] = logits[E]; /* a tie: the lower id must come first */
                int *ids_ref = malloc(sizeof(int) * (size_t)rows * k), *ids = malloc(sizeof(int) * (size_t)rows * k);
                float *w_ref = malloc(sizeof(float) * (size_t)rows * k), *w = malloc(sizeof(float) * (size_t)rows * k);
                sm_router_topk(logits, rows, E, k, renorm, ids_ref, w_ref);
                void *d_l = gpu_test_upload(logits, sizeof(float) * (size_t)rows * E);
                int *d_ids = gpu_test_malloc(sizeof(int) * (size_t)rows * k);
                float *d_w = gpu_test_malloc(sizeof(float) * (size_t)rows * k);
                gpu_test_poison(d_ids, sizeof(int) * (size_t)rows * k);
                gpu_test_poison(d_w, sizeof(float) * (size_t)rows * k);
                sm_error err = {0};
                CHECK_OK(sm_cuda_router_topk(0, d_l, rows, E, k, renorm, d_ids, d_w, &err), &err);
                gpu_test_cuda(cudaDeviceSynchronize(), "router_topk");
                gpu_test_cuda(cudaMemcpy(ids, d_ids, sizeof(int) * (size_t)rows * k, cudaMemcpyDeviceToHost), "ids");
                gpu_test_cuda(cudaMemcpy(w, d_w, sizeof(float) * (size_t)rows * k, cudaMemcpyDeviceToHost), "weights");
                int id_mismatch = 0;
                for (int i = 0; i < rows * k; i++) id_mismatch += ids[i] != ids_ref[i];
                CHECK(id_mismatch == 0, "router_topk rows=%d E=%d k=%d renorm=%d: %d ids differ", rows, E, k, renorm,
                      id_mismatch);
                double e = test_rel_l2(w, w_ref, (size_t)rows * k);
                CHECK(e < 1e-5, "router_topk rows=%d E=%d k=%d renorm=%d: weights rel err %.3g", rows, E, k, renorm, e);
                cudaFree(d_l); cudaFree(d_ids); cudaFree(d_w);
                free(logits); free(ids_ref); free(ids); free(w_ref); free(w);
            }
}

/* --shard I/N: only the grouped-MoE shapes of shard I (0-based) of N, and the other tests only in
 * shard 0, so N runs together check every shape and case once (for compute-sanitizer runs, each
 * under its own time limit). The random inputs of a shape differ from a whole run's: the seed
 * advances only over the shapes a shard takes. */
int main(int argc, char **argv) {
    int shard = 0, shards = 1;
    if (argc > 1) {
        char end = 0;
        if (argc != 3 || strcmp(argv[1], "--shard") || sscanf(argv[2], "%d/%d%c", &shard, &shards, &end) != 2 ||
            shards < 1 || shard < 0 || shard >= shards) {
            fprintf(stderr, "usage: %s [--shard I/N] (0 <= I < N)\n", argv[0]);
            return 2;
        }
    }
    if (shard == 0) test_moe_regime_pick(); /* host only: runs (and can fail) before the GPU check */
    gpu_test_require_device("test_gpu_kernels");
    test_moe_grouped(shard, shards);
    if (shard == 0) {
        test_moe_grouped_edges();
        test_moe_wgmma_many_tiles();
        test_silu_mul();
        test_rmsnorm();
        test_router_topk();
    }
    TEST_MAIN_END
}
