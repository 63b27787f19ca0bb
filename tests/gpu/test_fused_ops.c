/* The fused decode kernels (kernels/fused_ops.h) against the unfused launchers they replace, on
 * the same fresh random inputs (outputs poisoned with NaN first), bit for bit:
 *  - qk_norm_rope_kv == head_rmsnorm(q), head_rmsnorm(k), rope(q), rope(k), kv_write: the whole
 *    qkv buffer (padding included) and both whole caches;
 *  - moe_route == router_topk + moe_permute + moe_gather: ids and weights, offsets, the set of
 *    assignments of each expert (the order inside an expert may differ), the permutation's
 *    consistency, xs rows; logits with many ties; the launcher's limits;
 *  - moe_gate_up_routed (moe_grouped.h) == moe_route + moe_gate_up in the decode regime: act and
 *    every routing output; the cases it refuses;
 *  - moe_combine_rmsnorm == moe_combine + rmsnorm_f32 (BF16 out), and combine alone (no weight);
 *  - attention_decode_qk (attention.h) == qk_norm_rope_kv + attention for one row and for three
 *    rows of distinct sequences.
 * Shapes: Qwen3-30B-A3B (hidden 2048, 32/4 heads of 128, 128 experts top-8), Mixtral-like (hidden
 * 4096, 8 experts top-2), odd small ones; rows 1, 2, 7, 64. Each checker is shown to reject a
 * one-bit change, so a pass means something. Last, decode-sized timings (graph replays) of each
 * fused kernel next to its chain, printed for the record. */
#include "attention.h"
#include "fused_ops.h"
#include "gpu/gpu_test.h"
#include "model_ops.h"
#include "moe_grouped.h"
#include "router_topk.h"

static const int ROW_COUNTS[] = {1, 2, 7, 64};
#define N_ROW_COUNTS ((int)(sizeof ROW_COUNTS / sizeof ROW_COUNTS[0]))

static void *dl(const void *d, size_t bytes) {
    void *h = malloc(bytes + 4);
    gpu_test_cuda(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost), "download");
    return h;
}

static void *dup_dev(const void *d, size_t bytes) {
    void *c = gpu_test_malloc(bytes);
    gpu_test_cuda(cudaMemcpy(c, d, bytes, cudaMemcpyDeviceToDevice), "device copy");
    return c;
}

static void sync_ok(const char *what) { gpu_test_cuda(cudaDeviceSynchronize(), what); }

/* Bitwise equality of two device buffers; on a difference, where the first one is. */
static bool dev_same(const void *a, const void *b, size_t bytes, size_t *first_diff) {
    unsigned char *ha = dl(a, bytes), *hb = dl(b, bytes);
    bool same = true;
    for (size_t i = 0; i < bytes && same; i++)
        if (ha[i] != hb[i]) { same = false; *first_diff = i; }
    free(ha); free(hb);
    return same;
}

/* The checkers can fail: flip one bit of a copy and expect dev_same to see it. */
static void check_detects_flip(const void *d, size_t bytes, const char *what) {
    void *c = dup_dev(d, bytes);
    unsigned char byte;
    gpu_test_cuda(cudaMemcpy(&byte, (char *)c + bytes / 2, 1, cudaMemcpyDeviceToHost), "flip");
    byte ^= 1;
    gpu_test_cuda(cudaMemcpy((char *)c + bytes / 2, &byte, 1, cudaMemcpyHostToDevice), "flip");
    size_t at = 0;
    CHECK(!dev_same(d, c, bytes, &at), "%s: the bitwise comparison missed a one-bit change", what);
    cudaFree(c);
}

/* ---- q/k norm + RoPE + KV write ---------------------------------------------------------- */

typedef struct attn_shape {
    const char *name;
    int heads, kvh, hd, pad, norm;
} attn_shape;

static void test_qk_norm_rope_kv(void) {
    uint64_t seed = 101;
    const attn_shape shapes[] = {
        {"qwen3-30b", 32, 4, 128, 0, 1}, {"mixtral/llama", 32, 8, 128, 0, 0}, {"odd hd8 norm", 3, 1, 8, 3, 1},
        {"odd hd8", 3, 1, 8, 5, 0},      {"hd256 norm", 4, 2, 256, 0, 1},      {"hd66", 5, 5, 66, 1, 1},
    };
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const attn_shape *S = &shapes[t];
        int qd = S->heads * S->hd, kvd = S->kvh * S->hd, stride = qd + 2 * kvd + S->pad;
        int seqs = 3, ctx = kvd <= 64 ? 40000 : 1024; /* large positions where the cache is small */
        for (int rc = 0; rc < N_ROW_COUNTS; rc++) {
            int rows = ROW_COUNTS[rc];
            sm_error err = {0};
            int seq[64], pos[64];
            for (int r = 0; r < rows; r++) { /* distinct (seq, pos): no two rows write one cache slot */
                bool dup;
                do {
                    seq[r] = (int)(gpu_test_next(&seed) % (uint64_t)seqs);
                    pos[r] = 1 + (int)(gpu_test_next(&seed) % (uint64_t)(ctx - 1)); /* not 0: RoPE moves q */
                    dup = false;
                    for (int q = 0; q < r; q++) dup |= seq[q] == seq[r] && pos[q] == pos[r];
                } while (dup);
            }
            size_t n_qkv = (size_t)rows * stride, n_cache = (size_t)seqs * ctx * kvd;
            float *qkv = malloc(n_qkv * 4);
            for (size_t i = 0; i < n_qkv; i++) qkv[i] = 3.0f * gpu_test_uniform(&seed);
            float *qw = gpu_test_random_bf16((size_t)S->hd, 1.0f, &seed), *kw = gpu_test_random_bf16((size_t)S->hd, 1.0f, &seed);
            float *cache0 = gpu_test_random_bf16(n_cache, 1.0f, &seed);
            float *d_a = gpu_test_upload(qkv, n_qkv * 4), *d_b = gpu_test_upload(qkv, n_qkv * 4);
            void *d_kca = gpu_test_upload_bf16(cache0, 1, (int)n_cache, (int)n_cache), *d_vca = dup_dev(d_kca, n_cache * 2);
            void *d_kcb = dup_dev(d_kca, n_cache * 2), *d_vcb = dup_dev(d_kca, n_cache * 2);
            void *d_qw = S->norm ? gpu_test_upload_bf16(qw, 1, S->hd, S->hd) : NULL;
            void *d_kw = S->norm ? gpu_test_upload_bf16(kw, 1, S->hd, S->hd) : NULL;
            int *d_seq = gpu_test_upload(seq, sizeof seq), *d_pos = gpu_test_upload(pos, sizeof pos);
            float eps = 1e-6f, theta = 1e6f;
            /* the chain, as model_cuda.c's attention() runs it */
            if (S->norm) {
                CHECK_OK(sm_cuda_head_rmsnorm_f32(0, d_a, stride, d_qw, rows, S->heads, S->hd, eps, &err), &err);
                CHECK_OK(sm_cuda_head_rmsnorm_f32(0, d_a + qd, stride, d_kw, rows, S->kvh, S->hd, eps, &err), &err);
            }
            CHECK_OK(sm_cuda_rope_f32(0, d_a, stride, d_pos, rows, S->heads, S->hd, theta, &err), &err);
            CHECK_OK(sm_cuda_rope_f32(0, d_a + qd, stride, d_pos, rows, S->kvh, S->hd, theta, &err), &err);
            CHECK_OK(sm_cuda_kv_write(0, d_a + qd, d_a + qd + kvd, stride, d_kca, d_vca, d_seq, d_pos, rows, kvd, ctx, &err),
                     &err);
            CHECK_OK(sm_cuda_qk_norm_rope_kv(0, d_b, stride, rows, S->heads, S->kvh, S->hd, d_qw, d_kw, eps, d_pos, theta,
                                             d_seq, d_kcb, d_vcb, ctx, &err), &err);
            sync_ok("qk_norm_rope_kv");
            size_t at = 0;
            CHECK(dev_same(d_a, d_b, n_qkv * 4, &at), "qk_norm_rope_kv %s rows %d: qkv differs from the chain at float %zu",
                  S->name, rows, at / 4);
            CHECK(dev_same(d_kca, d_kcb, n_cache * 2, &at), "qk_norm_rope_kv %s rows %d: K cache differs at %zu", S->name,
                  rows, at / 2);
            CHECK(dev_same(d_vca, d_vcb, n_cache * 2, &at), "qk_norm_rope_kv %s rows %d: V cache differs at %zu", S->name,
                  rows, at / 2);
            /* and it did something: q of row 0 moved, row 0's K slot was written */
            float *got = dl(d_b, n_qkv * 4);
            CHECK(got[1] != qkv[1] && gpu_test_all_finite(got, n_qkv), "qk_norm_rope_kv %s rows %d: q untouched or not finite",
                  S->name, rows);
            if (rc == N_ROW_COUNTS - 1) {
                check_detects_flip(d_b, n_qkv * 4, "qkv");
                check_detects_flip(d_kcb, n_cache * 2, "K cache");
            }
            printf("qk_norm_rope_kv %-14s rows %2d: qkv, K and V caches bit-identical to the chain\n", S->name, rows);
            free(qkv); free(qw); free(kw); free(cache0); free(got);
            cudaFree(d_a); cudaFree(d_b); cudaFree(d_kca); cudaFree(d_vca); cudaFree(d_kcb); cudaFree(d_vcb);
            cudaFree(d_qw); cudaFree(d_kw); cudaFree(d_seq); cudaFree(d_pos);
        }
    }
    sm_error err = {0};
    CHECK(sm_cuda_qk_norm_rope_kv(0, NULL, 64, 1, 2, 1, 7, NULL, NULL, 1e-6f, NULL, 1e4f, NULL, NULL, NULL, 8, &err) ==
              SM_EINVAL, "qk_norm_rope_kv: odd head_dim accepted");
    CHECK(sm_cuda_qk_norm_rope_kv(0, NULL, 64, 1, 2, 1, 8, (const sm_bf16_bits *)&err, NULL, 1e-6f, NULL, 1e4f, NULL, NULL,
                                  NULL, 8, &err) == SM_EINVAL && strstr(err.msg, "k_norm"),
          "qk_norm_rope_kv: q_norm without k_norm accepted (%s)", err.msg);
}

/* ---- one-row attention with q/k norm + RoPE + KV write ------------------------------------ */

/* attention_decode_qk == qk_norm_rope_kv + attention for one row and for three rows of distinct
 * sequences (a decode batch): the output and both whole caches, at position 0 (only the new slot)
 * and at random later ones. */
static void test_attention_decode_qk(void) {
    uint64_t seed = 202;
    const attn_shape shapes[] = {
        {"qwen3-30b", 32, 4, 128, 0, 1}, {"mixtral/llama", 32, 8, 128, 0, 0}, {"odd hd8 norm", 3, 1, 8, 0, 1},
        {"hd256 norm", 4, 2, 256, 0, 1}, {"hd66", 5, 5, 66, 0, 1},
    };
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const attn_shape *S = &shapes[t];
        int qd = S->heads * S->hd, kvd = S->kvh * S->hd, stride = qd + 2 * kvd, seqs = 3, ctx = 2048;
        for (int variant = 0; variant < 8; variant++) { /* position 0 or later, x plan or grouped, x 1 or 3 rows */
            int late = variant & 1, rows = variant & 4 ? 3 : 1, first = (int)(gpu_test_next(&seed) % 3);
            sm_error err = {0};
            int seq[3], pos[3], max_len = 0;
            for (int r = 0; r < rows; r++) {
                seq[r] = (first + r) % seqs;
                pos[r] = late ? 1 + (int)(gpu_test_next(&seed) % (uint64_t)(ctx - 1)) : 0;
                if (pos[r] + 1 > max_len) max_len = pos[r] + 1;
            }
            size_t n_cache = (size_t)seqs * ctx * kvd, n_out = (size_t)rows * qd;
            float *qkv = malloc((size_t)rows * stride * 4);
            for (int i = 0; i < rows * stride; i++) qkv[i] = 3.0f * gpu_test_uniform(&seed);
            float *qw = gpu_test_random_bf16((size_t)S->hd, 1.0f, &seed), *kw = gpu_test_random_bf16((size_t)S->hd, 1.0f, &seed);
            float *cache0 = gpu_test_random_bf16(n_cache, 1.0f, &seed);
            float *d_a = gpu_test_upload(qkv, (size_t)rows * stride * 4), *d_b = gpu_test_upload(qkv, (size_t)rows * stride * 4);
            void *d_kca = gpu_test_upload_bf16(cache0, 1, (int)n_cache, (int)n_cache), *d_vca = dup_dev(d_kca, n_cache * 2);
            void *d_kcb = dup_dev(d_kca, n_cache * 2), *d_vcb = dup_dev(d_kca, n_cache * 2);
            void *d_qw = S->norm ? gpu_test_upload_bf16(qw, 1, S->hd, S->hd) : NULL;
            void *d_kw = S->norm ? gpu_test_upload_bf16(kw, 1, S->hd, S->hd) : NULL;
            int *d_seq = gpu_test_upload(seq, sizeof seq), *d_pos = gpu_test_upload(pos, sizeof pos);
            void *d_oa = gpu_test_malloc(n_out * 2), *d_ob = gpu_test_malloc(n_out * 2);
            gpu_test_poison(d_oa, n_out * 2);
            gpu_test_poison(d_ob, n_out * 2);
            float eps = 1e-6f, theta = 1e6f, scale = 1.0f / sqrtf((float)S->hd);
            CHECK_OK(sm_cuda_qk_norm_rope_kv(0, d_a, stride, rows, S->heads, S->kvh, S->hd, d_qw, d_kw, eps, d_pos, theta, d_seq,
                                             d_kca, d_vca, ctx, &err), &err);
            /* both with the split-context workspace (zeroed once), as the model runs them */
            size_t ws_bytes = sm_cuda_attention_split_bytes(S->heads, S->hd);
            void *ws = gpu_test_malloc(ws_bytes);
            gpu_test_cuda(cudaMemset(ws, 0, ws_bytes), "split workspace");
            sm_attn_plan plan = sm_cuda_attention_plan(rows, S->heads, S->kvh, S->hd, max_len, 132);
            if (variant & 2) plan.grouped = true;
            CHECK_OK(sm_cuda_attention(0, d_a, stride, d_kca, d_vca, d_seq, d_pos, d_oa, rows, S->heads, S->kvh, S->hd, ctx,
                                       scale, ws, plan, &err), &err);
            CHECK_OK(sm_cuda_attention_decode_qk(0, d_b, rows, S->heads, S->kvh, S->hd, d_qw, d_kw, eps, theta, d_seq, d_pos, d_kcb,
                                                 d_vcb, ctx, scale, d_ob, ws, plan, &err), &err);
            sync_ok("attention_decode_qk");
            size_t at = 0;
            CHECK(dev_same(d_oa, d_ob, n_out * 2, &at),
                  "attention_decode_qk %s %d rows pos %d: output differs from the chain at %zu", S->name, rows, pos[0], at / 2);
            CHECK(dev_same(d_kca, d_kcb, n_cache * 2, &at), "attention_decode_qk %s %d rows pos %d: K cache differs at %zu",
                  S->name, rows, pos[0], at / 2);
            CHECK(dev_same(d_vca, d_vcb, n_cache * 2, &at), "attention_decode_qk %s %d rows pos %d: V cache differs at %zu",
                  S->name, rows, pos[0], at / 2);
            float *o = malloc(n_out * 4);
            gpu_test_download_bf16(o, d_ob, 1, (int)n_out, (int)n_out);
            CHECK(gpu_test_all_finite(o, n_out), "attention_decode_qk %s %d rows pos %d: output not finite", S->name, rows,
                  pos[0]);
            if (t == 0 && variant == 1) check_detects_flip(d_ob, n_out * 2, "attention output");
            printf("attention_decode_qk %-14s %d rows pos %4d (%2d splits%s): output, K and V caches bit-identical to the "
                   "chain\n", S->name, rows, pos[0], plan.splits, plan.grouped ? ", grouped" : "");
            free(o); free(qkv); free(qw); free(kw); free(cache0);
            cudaFree(d_a); cudaFree(d_b); cudaFree(d_kca); cudaFree(d_vca); cudaFree(d_kcb); cudaFree(d_vcb);
            cudaFree(d_qw); cudaFree(d_kw); cudaFree(d_seq); cudaFree(d_pos); cudaFree(d_oa); cudaFree(d_ob); cudaFree(ws);
        }
    }
    sm_error err = {0};
    CHECK(sm_cuda_attention_decode_qk(0, NULL, 1, 2, 1, 7, NULL, NULL, 1e-6f, 1e4f, NULL, NULL, NULL, NULL, 8, 1.0f, NULL, NULL, (sm_attn_plan){1, false}, &err) ==
              SM_EINVAL && strstr(err.msg, "head_dim 7"), "attention_decode_qk: odd head_dim accepted (%s)", err.msg);
}

/* ---- MoE routing --------------------------------------------------------------------------- */

typedef struct route_shape {
    const char *name;
    int E, k, hidden, ties; /* ties: logits on a coarse grid, so equal logits are common */
} route_shape;

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* The fused routing's outputs against the chain's, as the header promises. */
typedef struct route_out {
    int *ids, *off, *src, *pos;
    float *w, *sw;
    uint16_t *xs;
} route_out;

static route_out route_download(int n, int E, int stride, const int *ids, const float *w, const int *off,
                                const int *src, const int *pos, const float *sw, const void *xs) {
    route_out o = {dl(ids, (size_t)n * 4), dl(off, (size_t)(E + 1) * 4), dl(src, (size_t)n * 4), dl(pos, (size_t)n * 4),
                   dl(w, (size_t)n * 4), dl(sw, (size_t)n * 4), dl(xs, (size_t)n * stride * 2)};
    return o;
}

static void route_free(route_out *o) {
    free(o->ids); free(o->off); free(o->src); free(o->pos); free(o->w); free(o->sw); free(o->xs);
}

/* NULL when got matches ref, else what differs first. */
static const char *route_diff(const route_out *got, const route_out *ref, int n, int E, int stride) {
    if (memcmp(got->ids, ref->ids, (size_t)n * 4)) return "expert ids differ from router_topk";
    if (memcmp(got->w, ref->w, (size_t)n * 4)) return "weights differ from router_topk (bitwise)";
    if (memcmp(got->off, ref->off, (size_t)(E + 1) * 4)) return "expert offsets differ from moe_permute";
    int *a = malloc((size_t)n * 4 + 4), *b = malloc((size_t)n * 4 + 4);
    const char *why = NULL;
    for (int e = 0; e < E && !why; e++) {
        int lo = got->off[e], m = got->off[e + 1] - lo;
        memcpy(a, got->src + lo, (size_t)m * 4);
        memcpy(b, ref->src + lo, (size_t)m * 4);
        for (int i = 1; i < m && !why; i++)
            if (a[i] <= a[i - 1]) why = "assignments inside an expert are not in ascending row order";
        qsort(a, (size_t)m, 4, cmp_int);
        qsort(b, (size_t)m, 4, cmp_int);
        if (!why && memcmp(a, b, (size_t)m * 4)) why = "an expert's set of assignments differs from moe_permute";
    }
    free(a); free(b);
    for (int x = 0; x < n && !why; x++) {
        int p = got->pos[x];
        if (p < 0 || p >= n || got->src[p] != x) why = "sorted_pos is not the inverse of sorted_src";
        else if (memcmp(&got->sw[p], &got->w[x], 4)) why = "sorted_weight is not the weight of the assignment";
        else if (memcmp(got->xs + (size_t)p * stride, ref->xs + (size_t)ref->pos[x] * stride, (size_t)stride * 2))
            why = "an xs row differs from moe_gather's row of the same assignment";
    }
    return why;
}

static void test_moe_route(void) {
    uint64_t seed = 202;
    const route_shape shapes[] = {
        {"qwen3-30b", 128, 8, 2048, 0}, {"qwen3 ties", 128, 8, 2048, 1}, {"mixtral", 8, 2, 4096, 0},
        {"mixtral ties", 8, 2, 4096, 1}, {"odd", 5, 3, 72, 0},          {"odd ties", 5, 3, 72, 1},
        {"odd scalar", 60, 4, 70, 1},   {"e256", 256, 6, 64, 0},        {"e512 k40", 512, 40, 16, 1},
        {"e33 k33", 33, 33, 24, 1},
        /* 256 rows of top-8 over 512 experts: 50.8 KB of routing, past the 48 KiB a launch gets
         * without opting in (the launcher's cudaFuncSetAttribute path) */
        {"e512 k8", 512, 8, 64, 0},
    };
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const route_shape *S = &shapes[t];
        int E = S->E, k = S->k, H = S->hidden, stride = (H + 7) / 8 * 8;
        for (int rc = 0; rc <= N_ROW_COUNTS; rc++) {
            /* the row counts, then the largest batch the fast path takes */
            int rows = rc < N_ROW_COUNTS ? ROW_COUNTS[rc] : SM_MOE_ROUTE_MAX_ASSIGN / k;
            if (rows > SM_MOE_ROUTE_MAX_ROWS) rows = SM_MOE_ROUTE_MAX_ROWS;
            if ((long)rows * k > SM_MOE_ROUTE_MAX_ASSIGN) continue;
            int n = rows * k;
            sm_error err = {0};
            float *logits = malloc((size_t)rows * E * 4);
            for (size_t i = 0; i < (size_t)rows * E; i++) {
                float u = gpu_test_uniform(&seed);
                logits[i] = S->ties ? floorf(u * 4.0f) * 0.5f : 4.0f * u;
            }
            if (S->ties && rows > 1) { /* -0 ties with +0 */
                logits[E] = -0.0f;
                logits[E + 1] = 0.0f;
            }
            float *h = gpu_test_random_bf16((size_t)rows * H, 1.0f, &seed);
            float *d_logits = gpu_test_upload(logits, (size_t)rows * E * 4);
            void *d_h = gpu_test_upload_bf16(h, rows, H, H);
            int *d_ids[2], *d_off[2], *d_src[2], *d_pos[2];
            float *d_w[2], *d_sw[2];
            void *d_xs[2];
            for (int i = 0; i < 2; i++) {
                d_ids[i] = gpu_test_malloc((size_t)n * 4); d_off[i] = gpu_test_malloc((size_t)(E + 1) * 4);
                d_src[i] = gpu_test_malloc((size_t)n * 4); d_pos[i] = gpu_test_malloc((size_t)n * 4);
                d_w[i] = gpu_test_malloc((size_t)n * 4); d_sw[i] = gpu_test_malloc((size_t)n * 4);
                d_xs[i] = gpu_test_malloc((size_t)n * stride * 2);
                gpu_test_poison(d_ids[i], (size_t)n * 4); gpu_test_poison(d_off[i], (size_t)(E + 1) * 4);
                gpu_test_poison(d_src[i], (size_t)n * 4); gpu_test_poison(d_pos[i], (size_t)n * 4);
                gpu_test_poison(d_w[i], (size_t)n * 4); gpu_test_poison(d_sw[i], (size_t)n * 4);
                gpu_test_poison(d_xs[i], (size_t)n * stride * 2);
            }
            for (int renorm = 0; renorm < 2; renorm++) {
                CHECK_OK(sm_cuda_router_topk(0, d_logits, rows, E, k, renorm, d_ids[0], d_w[0], &err), &err);
                CHECK_OK(sm_cuda_moe_permute(0, d_ids[0], d_w[0], n, E, d_off[0], d_src[0], d_pos[0], d_sw[0], &err), &err);
                CHECK_OK(sm_cuda_moe_gather(0, d_h, H, d_src[0], k, d_xs[0], stride, n, &err), &err);
                CHECK_OK(sm_cuda_moe_route(0, d_logits, rows, E, k, renorm, d_h, H, stride, d_ids[1], d_w[1], d_off[1],
                                           d_src[1], d_pos[1], d_sw[1], d_xs[1], &err), &err);
                sync_ok("moe_route");
                route_out ref = route_download(n, E, stride, d_ids[0], d_w[0], d_off[0], d_src[0], d_pos[0], d_sw[0], d_xs[0]);
                route_out got = route_download(n, E, stride, d_ids[1], d_w[1], d_off[1], d_src[1], d_pos[1], d_sw[1], d_xs[1]);
                const char *why = route_diff(&got, &ref, n, E, stride);
                CHECK(!why, "moe_route %s rows %d renorm %d: %s", S->name, rows, renorm, why ? why : "");
                if (!why) printf("moe_route %-12s rows %3d renorm %d: identical to topk + permute + gather\n", S->name, rows,
                                 renorm);
                if (rc == 1 && renorm) { /* the checker rejects a swap of two assignments of different experts */
                    int p = got.off[got.ids[0]], q = got.off[got.ids[1]], tmp = got.src[p];
                    got.src[p] = got.src[q];
                    got.src[q] = tmp;
                    CHECK(route_diff(&got, &ref, n, E, stride) != NULL, "moe_route %s: checker missed a swap", S->name);
                    got.src[q] = got.src[p];
                    got.src[p] = tmp;
                    got.w[n - 1] = nextafterf(got.w[n - 1], 2.0f);
                    CHECK(route_diff(&got, &ref, n, E, stride) != NULL, "moe_route %s: checker missed a 1-ulp weight",
                          S->name);
                }
                route_free(&ref);
                route_free(&got);
            }
            free(logits); free(h);
            cudaFree(d_logits); cudaFree(d_h);
            for (int i = 0; i < 2; i++) {
                cudaFree(d_ids[i]); cudaFree(d_off[i]); cudaFree(d_src[i]); cudaFree(d_pos[i]);
                cudaFree(d_w[i]); cudaFree(d_sw[i]); cudaFree(d_xs[i]);
            }
        }
    }
    /* beyond the limits: a clear SM_EINVAL that names the unfused chain, nothing launched */
    const int over[][3] = {{SM_MOE_ROUTE_MAX_ROWS + 1, 8, 1}, {4, SM_MOE_ROUTE_MAX_EXPERTS + 1, 8}, {256, 128, 9}};
    for (int i = 0; i < 3; i++) {
        sm_error err = {0};
        int dummy[4];
        sm_status s = sm_cuda_moe_route(0, (const float *)dummy, over[i][0], over[i][1], over[i][2], true,
                                        (const sm_bf16_bits *)dummy, 64, 64, dummy, (float *)dummy, dummy, dummy, dummy,
                                        (float *)dummy, (sm_bf16_bits *)dummy, &err);
        CHECK(s == SM_EINVAL && strstr(err.msg, "router_topk + moe_permute"), "moe_route rows %d E %d k %d: %s (%s)",
              over[i][0], over[i][1], over[i][2], sm_status_name(s), err.msg);
    }
    sync_ok("moe_route limits");
}

/* gate_up routing the batch itself against moe_route + gate_up (decode regime), bit for bit:
 * act and every routing output. Forced decode regime, so shapes AUTO would give to decode-mma
 * are covered too; the Qwen3 shape also under AUTO, as the model runs it. */
typedef struct routed_shape {
    const char *name;
    int E, k, hidden, ffn, ties;
} routed_shape;

static void test_gate_up_routed(void) {
    uint64_t seed = 303;
    const routed_shape shapes[] = {
        {"qwen3-30b", 128, 8, 2048, 768, 0}, {"qwen3 ties", 128, 8, 2048, 768, 1}, {"mixtral-ish", 8, 2, 512, 256, 0},
        {"odd", 60, 4, 264, 136, 1},        {"tiny", 5, 3, 72, 40, 1},            {"k1", 33, 1, 128, 64, 0},
    };
    const int row_counts[] = {1, 2, 3, SM_MOE_ROUTED_MAX_ROWS};
    int ran = 0;
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const routed_shape *S = &shapes[t];
        const int E = S->E, k = S->k, H = S->hidden, F = S->ffn;
        float *wgu = gpu_test_random_bf16((size_t)E * 2 * F * H, 0.05f, &seed);
        void *d_wgu = gpu_test_upload_bf16(wgu, E * 2 * F, H, H);
        free(wgu);
        for (size_t rc = 0; rc < sizeof row_counts / sizeof row_counts[0]; rc++) {
            const int rows = row_counts[rc], n = rows * k;
            sm_error err = {0};
            float *logits = malloc((size_t)rows * E * 4);
            for (size_t i = 0; i < (size_t)rows * E; i++) {
                float u = gpu_test_uniform(&seed);
                logits[i] = S->ties ? floorf(u * 4.0f) * 0.5f : 4.0f * u;
            }
            float *h = gpu_test_random_bf16((size_t)rows * H, 1.0f, &seed);
            float *d_logits = gpu_test_upload(logits, (size_t)rows * E * 4);
            void *d_h = gpu_test_upload_bf16(h, rows, H, H);
            int *d_ids[2], *d_off[2], *d_src[2], *d_pos[2];
            float *d_w[2], *d_sw[2];
            void *d_act[2], *d_xs = gpu_test_malloc((size_t)n * H * 2);
            for (int i = 0; i < 2; i++) {
                d_ids[i] = gpu_test_malloc((size_t)n * 4); d_off[i] = gpu_test_malloc((size_t)(E + 1) * 4);
                d_src[i] = gpu_test_malloc((size_t)n * 4); d_pos[i] = gpu_test_malloc((size_t)n * 4);
                d_w[i] = gpu_test_malloc((size_t)n * 4); d_sw[i] = gpu_test_malloc((size_t)n * 4);
                d_act[i] = gpu_test_malloc((size_t)n * F * 2);
            }
            for (int regime = SM_MOE_REGIME_AUTO; regime <= SM_MOE_REGIME_DECODE; regime++) {
                for (int renorm = 0; renorm < 2; renorm++) {
                    sm_moe_grouped_args a = {.num_experts = E, .hidden = H, .ffn = F, .n_assign = n,
                                             .regime = (sm_moe_regime)regime,
                                             .auto_allow = sm_moe_auto_allow_from_env() | SM_MOE_ALLOW_GATE_UP_ROUTING};
                    sm_moe_route_job job = {.logits = d_logits, .rows = rows, .top_k = k, .renormalize = renorm,
                                            .h = d_h, .h_width = H, .expert_ids = d_ids[1], .expert_offsets = d_off[1],
                                            .weights = d_w[1], .sorted_src = d_src[1], .sorted_pos = d_pos[1],
                                            .sorted_weight = d_sw[1]};
                    a.expert_offsets = d_off[1];
                    if (!sm_moe_gate_up_routes(&a, &job)) {
                        /* AUTO gives these to decode-mma; the model then keeps the routing launch */
                        CHECK(regime == SM_MOE_REGIME_AUTO && sm_moe_regime_pick(&a, false) != SM_MOE_REGIME_DECODE,
                              "gate_up_routed %s rows %d regime %d: refused a decode-regime batch", S->name, rows, regime);
                        CHECK(sm_cuda_moe_gate_up_routed(0, &a, &job, d_wgu, d_act[1], &err) == SM_EINVAL &&
                                  strstr(err.msg, "route it first"),
                              "gate_up_routed %s: a refused batch ran (%s)", S->name, err.msg);
                        continue;
                    }
                    for (int i = 0; i < 2; i++) {
                        gpu_test_poison(d_ids[i], (size_t)n * 4); gpu_test_poison(d_off[i], (size_t)(E + 1) * 4);
                        gpu_test_poison(d_src[i], (size_t)n * 4); gpu_test_poison(d_pos[i], (size_t)n * 4);
                        gpu_test_poison(d_w[i], (size_t)n * 4); gpu_test_poison(d_sw[i], (size_t)n * 4);
                        gpu_test_poison(d_act[i], (size_t)n * F * 2);
                    }
                    CHECK_OK(sm_cuda_moe_route(0, d_logits, rows, E, k, renorm, d_h, H, H, d_ids[0], d_w[0], d_off[0],
                                               d_src[0], d_pos[0], d_sw[0], d_xs, &err), &err);
                    sm_moe_grouped_args ref = a;
                    ref.expert_offsets = d_off[0];
                    ref.regime = SM_MOE_REGIME_DECODE;
                    CHECK_OK(sm_cuda_moe_gate_up(0, &ref, d_xs, d_wgu, d_act[0], &err), &err);
                    CHECK_OK(sm_cuda_moe_gate_up_routed(0, &a, &job, d_wgu, d_act[1], &err), &err);
                    sync_ok("gate_up_routed");
                    const struct { const char *what; void *ref, *got; size_t bytes; } outs[] = {
                        {"act", d_act[0], d_act[1], (size_t)n * F * 2}, {"expert ids", d_ids[0], d_ids[1], (size_t)n * 4},
                        {"weights", d_w[0], d_w[1], (size_t)n * 4},     {"offsets", d_off[0], d_off[1], (size_t)(E + 1) * 4},
                        {"sorted_src", d_src[0], d_src[1], (size_t)n * 4}, {"sorted_pos", d_pos[0], d_pos[1], (size_t)n * 4},
                        {"sorted_weight", d_sw[0], d_sw[1], (size_t)n * 4},
                    };
                    bool all = true;
                    for (size_t o = 0; o < sizeof outs / sizeof outs[0]; o++) {
                        size_t at = 0;
                        bool same = dev_same(outs[o].ref, outs[o].got, outs[o].bytes, &at);
                        CHECK(same, "gate_up_routed %s rows %d regime %d renorm %d: %s differs from moe_route + gate_up "
                                    "at byte %zu", S->name, rows, regime, renorm, outs[o].what, at);
                        all = all && same;
                    }
                    if (all) {
                        ran++;
                        printf("gate_up_routed %-11s rows %2d %-6s renorm %d: identical to moe_route + gate_up\n",
                               S->name, rows, regime ? "decode" : "auto", renorm);
                    }
                    if (rc == 0 && t == 0 && renorm) check_detects_flip(d_act[1], (size_t)n * F * 2, "gate_up_routed act");
                }
            }
            free(logits); free(h);
            cudaFree(d_logits); cudaFree(d_h); cudaFree(d_xs);
            for (int i = 0; i < 2; i++) {
                cudaFree(d_ids[i]); cudaFree(d_off[i]); cudaFree(d_src[i]); cudaFree(d_pos[i]);
                cudaFree(d_w[i]); cudaFree(d_sw[i]); cudaFree(d_act[i]);
            }
        }
        cudaFree(d_wgu);
    }
    CHECK(ran >= 40, "gate_up_routed: only %d cases compared", ran);
    /* refusals: each limit, with a message */
    sm_error err = {0};
    int dummy_off[1];
    sm_moe_grouped_args a = {.num_experts = 256, .hidden = 64, .ffn = 64, .n_assign = 8, .expert_offsets = dummy_off,
                             .regime = SM_MOE_REGIME_DECODE, .auto_allow = SM_MOE_ALLOW_GATE_UP_ROUTING};
    sm_moe_route_job job = {.rows = 1, .top_k = 8, .h = (const sm_bf16_bits *)(uintptr_t)256, .h_width = 64};
    CHECK(!sm_moe_gate_up_routes(&a, &job), "gate_up_routed: took 256 experts (limit %d)", SM_MOE_ROUTED_MAX_EXPERTS);
    a.num_experts = 128;
    CHECK(sm_moe_gate_up_routes(&a, &job), "gate_up_routed: refused a batch inside its limits");
    job.rows = SM_MOE_ROUTED_MAX_ROWS + 1, a.n_assign = job.rows * 8;
    CHECK(!sm_moe_gate_up_routes(&a, &job), "gate_up_routed: took %d rows", job.rows);
    job.rows = 1, a.n_assign = 8, job.h_width = 60;
    CHECK(!sm_moe_gate_up_routes(&a, &job), "gate_up_routed: took h rows of 60 elements");
    job.h_width = 64, a.auto_allow = 0;
    CHECK(!sm_moe_gate_up_routes(&a, &job), "gate_up_routed: routed without SM_MOE_ALLOW_GATE_UP_ROUTING");
    a.auto_allow = SM_MOE_ALLOW_GATE_UP_ROUTING, a.regime = SM_MOE_REGIME_PREFILL;
    CHECK(!sm_moe_gate_up_routes(&a, &job), "gate_up_routed: routed in the prefill regime");
    CHECK(sm_cuda_moe_gate_up_routed(0, &a, &job, (const sm_bf16_bits *)(uintptr_t)256, (sm_bf16_bits *)(uintptr_t)256,
                                     &err) == SM_EINVAL && strstr(err.msg, "regime prefill"),
          "gate_up_routed: refusal message does not name the regime (%s)", err.msg);
}

/* ---- MoE combine + RMSNorm ----------------------------------------------------------------- */

static void test_combine_rmsnorm(void) {
    uint64_t seed = 303;
    /* hidden, top_k: vector and scalar paths; 12800 keeps the row in global memory, not shared */
    const int shapes[][2] = {{2048, 8}, {4096, 2}, {72, 3}, {1500, 3}, {203, 5}, {12800, 2}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int H = shapes[t][0], k = shapes[t][1], stride = (H + 7) / 8 * 8;
        for (int rc = 0; rc < N_ROW_COUNTS; rc++) {
            int rows = ROW_COUNTS[rc], n = rows * k;
            sm_error err = {0};
            float *ys = gpu_test_random_bf16((size_t)n * stride, 2.0f, &seed), *w = gpu_test_random_bf16((size_t)H, 1.0f, &seed);
            float *x = malloc((size_t)rows * H * 4);
            for (size_t i = 0; i < (size_t)rows * H; i++) x[i] = 4.0f * gpu_test_uniform(&seed);
            int *perm = malloc((size_t)n * 4);
            for (int i = 0; i < n; i++) perm[i] = i;
            for (int i = n - 1; i > 0; i--) {
                int j = (int)(gpu_test_next(&seed) % (uint64_t)(i + 1)), tmp = perm[i];
                perm[i] = perm[j];
                perm[j] = tmp;
            }
            void *d_ys = gpu_test_upload_bf16(ys, n, stride, stride), *d_w = gpu_test_upload_bf16(w, 1, H, H);
            int *d_perm = gpu_test_upload(perm, (size_t)n * 4);
            size_t xb = (size_t)rows * H * 4, hb = (size_t)rows * H * 2;
            float *d_xa = gpu_test_upload(x, xb), *d_xb = gpu_test_upload(x, xb), *d_xc = gpu_test_upload(x, xb);
            void *d_ha = gpu_test_malloc(hb), *d_hb = gpu_test_malloc(hb), *d_hc = gpu_test_malloc(hb);
            gpu_test_poison(d_ha, hb); gpu_test_poison(d_hb, hb); gpu_test_poison(d_hc, hb);
            CHECK_OK(sm_cuda_moe_combine(0, d_ys, stride, d_perm, k, d_xa, rows, H, &err), &err);
            CHECK_OK(sm_cuda_rmsnorm_f32(0, d_xa, NULL, d_w, NULL, d_ha, rows, H, 1e-6f, &err), &err);
            CHECK_OK(sm_cuda_moe_combine_rmsnorm(0, d_ys, stride, d_perm, k, d_xb, rows, H, d_w, 1e-6f, d_hb, &err), &err);
            CHECK_OK(sm_cuda_moe_combine_rmsnorm(0, d_ys, stride, d_perm, k, d_xc, rows, H, NULL, 1e-6f, NULL, &err), &err);
            sync_ok("moe_combine_rmsnorm");
            size_t at = 0;
            CHECK(dev_same(d_xa, d_xb, xb, &at), "combine_rmsnorm hidden %d k %d rows %d: x differs at float %zu", H, k, rows,
                  at / 4);
            CHECK(dev_same(d_ha, d_hb, hb, &at), "combine_rmsnorm hidden %d k %d rows %d: h differs at %zu", H, k, rows,
                  at / 2);
            CHECK(dev_same(d_xa, d_xc, xb, &at), "combine only hidden %d k %d rows %d: x differs at float %zu", H, k, rows,
                  at / 4);
            uint16_t *hc = dl(d_hc, hb), *ha = dl(d_ha, hb);
            bool untouched = true, finite = true;
            for (size_t i = 0; i < (size_t)rows * H; i++) {
                untouched &= hc[i] == 0xffff;
                finite &= (ha[i] & 0x7f80) != 0x7f80;
            }
            CHECK(untouched, "combine only (no weight) hidden %d: wrote an output", H);
            CHECK(finite, "combine_rmsnorm hidden %d rows %d: the reference itself is not finite", H, rows);
            if (rc == N_ROW_COUNTS - 1) {
                check_detects_flip(d_xb, xb, "combined x");
                check_detects_flip(d_hb, hb, "normed h");
            }
            printf("moe_combine_rmsnorm hidden %4d k %d rows %2d: x and h bit-identical to combine + rmsnorm\n", H, k, rows);
            free(ys); free(w); free(x); free(perm); free(hc); free(ha);
            cudaFree(d_ys); cudaFree(d_w); cudaFree(d_perm); cudaFree(d_xa); cudaFree(d_xb); cudaFree(d_xc);
            cudaFree(d_ha); cudaFree(d_hb); cudaFree(d_hc);
        }
    }
}

/* ---- timings (printed, not checked): Qwen3-30B-A3B shapes, graph replays ------------------ */

typedef struct bench_bufs {
    int rows;
    float *qkv, *logits, *w, *sw, *x;
    void *kc, *vc, *qn, *kn, *h, *xs, *ys, *nw, *hout;
    int *seq, *pos, *ids, *off, *src, *spos;
} bench_bufs;

enum { B_ATTN_CHAIN, B_ATTN_FUSED, B_ROUTE_CHAIN, B_ROUTE_FUSED, B_COMB_CHAIN, B_COMB_FUSED, B_COUNT };
static const char *const BENCH_NAMES[B_COUNT] = {"qk norm+rope+kv: chain (5)", "qk norm+rope+kv: fused",
                                                "route: topk+permute+gather", "route: fused",
                                                "combine+rmsnorm: chain (2)", "combine+rmsnorm: fused"};

#define QH 32
#define QKVH 4
#define QHD 128
#define QE 128
#define QK 8
#define QH_DIM 2048
#define QCTX 256

static sm_status bench_once(int which, bench_bufs *b, cudaStream_t s, sm_error *err) {
    int n = b->rows, qd = QH * QHD, kvd = QKVH * QHD, stride = qd + 2 * kvd, A = n * QK;
    float *k = b->qkv + qd;
    switch (which) {
    case B_ATTN_CHAIN:
        SM_TRY(sm_cuda_head_rmsnorm_f32(s, b->qkv, stride, b->qn, n, QH, QHD, 1e-6f, err));
        SM_TRY(sm_cuda_head_rmsnorm_f32(s, k, stride, b->kn, n, QKVH, QHD, 1e-6f, err));
        SM_TRY(sm_cuda_rope_f32(s, b->qkv, stride, b->pos, n, QH, QHD, 1e6f, err));
        SM_TRY(sm_cuda_rope_f32(s, k, stride, b->pos, n, QKVH, QHD, 1e6f, err));
        return sm_cuda_kv_write(s, k, k + kvd, stride, b->kc, b->vc, b->seq, b->pos, n, kvd, QCTX, err);
    case B_ATTN_FUSED:
        return sm_cuda_qk_norm_rope_kv(s, b->qkv, stride, n, QH, QKVH, QHD, b->qn, b->kn, 1e-6f, b->pos, 1e6f, b->seq,
                                       b->kc, b->vc, QCTX, err);
    case B_ROUTE_CHAIN:
        SM_TRY(sm_cuda_router_topk(s, b->logits, n, QE, QK, true, b->ids, b->w, err));
        SM_TRY(sm_cuda_moe_permute(s, b->ids, b->w, A, QE, b->off, b->src, b->spos, b->sw, err));
        return sm_cuda_moe_gather(s, b->h, QH_DIM, b->src, QK, b->xs, QH_DIM, A, err);
    case B_ROUTE_FUSED:
        return sm_cuda_moe_route(s, b->logits, n, QE, QK, true, b->h, QH_DIM, QH_DIM, b->ids, b->w, b->off, b->src, b->spos,
                                 b->sw, b->xs, err);
    case B_COMB_CHAIN:
        SM_TRY(sm_cuda_moe_combine(s, b->ys, QH_DIM, b->spos, QK, b->x, n, QH_DIM, err));
        return sm_cuda_rmsnorm_f32(s, b->x, NULL, b->nw, NULL, b->hout, n, QH_DIM, 1e-6f, err);
    default:
        return sm_cuda_moe_combine_rmsnorm(s, b->ys, QH_DIM, b->spos, QK, b->x, n, QH_DIM, b->nw, 1e-6f, b->hout, err);
    }
}

/* Microseconds per call: 50 calls captured in one graph, the graph replayed 20 times. */
static double bench_us(int which, bench_bufs *b, cudaStream_t s) {
    enum { CALLS = 50, REPLAYS = 20 };
    sm_error err = {0};
    cudaGraph_t g;
    cudaGraphExec_t ge;
    gpu_test_cuda(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), "begin capture");
    for (int i = 0; i < CALLS; i++) CHECK_OK(bench_once(which, b, s, &err), &err);
    gpu_test_cuda(cudaStreamEndCapture(s, &g), "end capture");
    gpu_test_cuda(cudaGraphInstantiate(&ge, g, 0), "instantiate");
    gpu_test_cuda(cudaGraphLaunch(ge, s), "warm-up replay");
    cudaEvent_t e0, e1;
    gpu_test_cuda(cudaEventCreate(&e0), "event");
    gpu_test_cuda(cudaEventCreate(&e1), "event");
    gpu_test_cuda(cudaEventRecord(e0, s), "record");
    for (int i = 0; i < REPLAYS; i++) gpu_test_cuda(cudaGraphLaunch(ge, s), "replay");
    gpu_test_cuda(cudaEventRecord(e1, s), "record");
    gpu_test_cuda(cudaEventSynchronize(e1), "sync");
    float ms = 0;
    gpu_test_cuda(cudaEventElapsedTime(&ms, e0, e1), "elapsed");
    cudaEventDestroy(e0); cudaEventDestroy(e1);
    cudaGraphExecDestroy(ge); cudaGraphDestroy(g);
    return 1000.0 * ms / (CALLS * REPLAYS);
}

static void bench_fused(void) {
    uint64_t seed = 404;
    cudaStream_t s;
    gpu_test_cuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
    const int rows_list[] = {1, 8, 64};
    for (int ri = 0; ri < 3; ri++) {
        bench_bufs b = {.rows = rows_list[ri]};
        int n = b.rows, A = n * QK, stride = (QH + 2 * QKVH) * QHD;
        float *qkv = gpu_test_random_bf16((size_t)n * stride, 1.0f, &seed), *lg = gpu_test_random_bf16((size_t)n * QE, 3.0f, &seed);
        float *hv = gpu_test_random_bf16((size_t)A * QH_DIM, 1.0f, &seed), *nw = gpu_test_random_bf16(QH_DIM, 1.0f, &seed);
        int seq[64], pos[64], perm[64 * QK];
        for (int r = 0; r < n; r++) { seq[r] = r; pos[r] = 100 + r; }
        for (int a = 0; a < A; a++) perm[a] = (a * 7 + 3) % A; /* a permutation: 7 is coprime with A */
        b.qkv = gpu_test_upload(qkv, (size_t)n * stride * 4);
        b.logits = gpu_test_upload(lg, (size_t)n * QE * 4);
        b.x = gpu_test_upload(hv, (size_t)n * QH_DIM * 4);
        b.kc = gpu_test_malloc((size_t)64 * QCTX * QKVH * QHD * 2);
        b.vc = gpu_test_malloc((size_t)64 * QCTX * QKVH * QHD * 2);
        b.qn = gpu_test_upload_bf16(nw, 1, QHD, QHD);
        b.kn = gpu_test_upload_bf16(nw, 1, QHD, QHD);
        b.nw = gpu_test_upload_bf16(nw, 1, QH_DIM, QH_DIM);
        b.h = gpu_test_upload_bf16(hv, n, QH_DIM, QH_DIM);
        b.ys = gpu_test_upload_bf16(hv, A, QH_DIM, QH_DIM);
        b.xs = gpu_test_malloc((size_t)A * QH_DIM * 2);
        b.hout = gpu_test_malloc((size_t)n * QH_DIM * 2);
        b.seq = gpu_test_upload(seq, sizeof seq);
        b.pos = gpu_test_upload(pos, sizeof pos);
        b.spos = gpu_test_upload(perm, (size_t)A * 4);
        b.ids = gpu_test_malloc((size_t)A * 4);
        b.src = gpu_test_malloc((size_t)A * 4);
        b.off = gpu_test_malloc((QE + 1) * 4);
        b.w = gpu_test_malloc((size_t)A * 4);
        b.sw = gpu_test_malloc((size_t)A * 4);
        /* warm the clocks up first (an idle GPU runs its SMs slowly), then time chain and fused
         * alternately, three times each, and keep the fastest */
        double us[B_COUNT];
        for (int i = 0; i < B_COUNT; i++) us[i] = 1e30;
        for (int warm = 0; warm < 20; warm++) (void)bench_us(B_ATTN_CHAIN, &b, s);
        for (int rep = 0; rep < 3; rep++)
            for (int i = 0; i < B_COUNT; i++) {
                if (i == B_COMB_CHAIN) /* the route benches overwrote spos: restore the permutation */
                    gpu_test_cuda(cudaMemcpy(b.spos, perm, (size_t)A * 4, cudaMemcpyHostToDevice), "perm");
                double t = bench_us(i, &b, s);
                us[i] = t < us[i] ? t : us[i];
            }
        for (int i = 0; i < B_COUNT; i++)
            printf("bench qwen3-30b rows %2d  %-28s %7.2f us per call (graph replay, best of 3)\n", n, BENCH_NAMES[i], us[i]);
        free(qkv); free(lg); free(hv); free(nw);
        void *bufs[] = {b.qkv, b.logits, b.x, b.kc, b.vc, b.qn, b.kn, b.nw, b.h, b.ys, b.xs, b.hout,
                        b.seq, b.pos, b.spos, b.ids, b.src, b.off, b.w, b.sw};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) cudaFree(bufs[i]);
    }
    cudaStreamDestroy(s);
}

/* --no-bench: checks only (compute-sanitizer runs, where the timing loops only cost time). */
int main(int argc, char **argv) {
    gpu_test_require_device("test_gpu_fused_ops");
    test_qk_norm_rope_kv();
    test_attention_decode_qk();
    test_moe_route();
    test_gate_up_routed();
    test_combine_rmsnorm();
    if (!(argc > 1 && !strcmp(argv[1], "--no-bench"))) bench_fused();
    TEST_MAIN_END
}
