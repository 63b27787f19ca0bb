/* The forward's own kernels (kernels/model_ops.h, kernels/attention.h) against CPU twins, on
 * fresh random inputs, outputs poisoned with NaN first, several odd sizes:
 *  - embed gather: exact (a copy);  rmsnorm_f32 (fp32 and BF16 out, with a row index) and the
 *    per-head / full q-k norm vs sm_cpu_rmsnorm;  RoPE vs sm_cpu_rope;  bias add: exact-ish;
 *  - kv_write + attention vs model.c's arithmetic on the same BF16 cache, for a mixed batch:
 *    prefill rows of one sequence, a decode row of another, verify rows of a third;
 *  - MoE permute + gather + combine vs a direct loop (a valid permutation, exact sums);
 *  - shared-expert gate and argmax.
 * fp32 outputs: rel L2 < 1e-5 (different summation order only); BF16 outputs: < 1e-2
 * (8 mantissa bits: one rounding is <= 2^-9 relative). */
#include "attention.h"
#include "gpu/gpu_test.h"
#include "model/cpu_ops.h"
#include "model_ops.h"

#define F32_TOL 1e-5
#define BF16_TOL 1e-2

static float *dl_f32(const void *d, size_t n) {
    float *h = malloc(n * sizeof *h + 4);
    gpu_test_cuda(cudaMemcpy(h, d, n * sizeof *h, cudaMemcpyDeviceToHost), "download f32");
    return h;
}

static void sync_ok(const char *what) { gpu_test_cuda(cudaDeviceSynchronize(), what); }

static void test_embed_norm(void) {
    uint64_t seed = 11;
    const int sizes[][2] = {{1, 8}, {3, 64}, {7, 200}, {5, 2048}, {2, 1500}};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        int rows = sizes[t][0], dim = sizes[t][1], vocab = 37;
        sm_error err = {0};
        float *emb = gpu_test_random_bf16((size_t)vocab * dim, 1.0f, &seed), *w = gpu_test_random_bf16((size_t)dim, 1.0f, &seed);
        int tokens[8], src[8];
        for (int r = 0; r < rows; r++) { tokens[r] = (int)(gpu_test_next(&seed) % vocab); src[r] = rows - 1 - r; }
        void *d_emb = gpu_test_upload_bf16(emb, vocab, dim, dim), *d_w = gpu_test_upload_bf16(w, 1, dim, dim);
        int *d_tok = gpu_test_upload(tokens, sizeof tokens), *d_src = gpu_test_upload(src, sizeof src);
        float *d_x = gpu_test_malloc((size_t)rows * dim * 4), *d_y = gpu_test_malloc((size_t)rows * dim * 4);
        void *d_yb = gpu_test_malloc((size_t)rows * dim * 2);
        gpu_test_poison(d_x, (size_t)rows * dim * 4);
        gpu_test_poison(d_y, (size_t)rows * dim * 4);
        gpu_test_poison(d_yb, (size_t)rows * dim * 2);
        CHECK_OK(sm_cuda_embed_gather(0, d_emb, d_tok, d_x, rows, dim, &err), &err);
        CHECK_OK(sm_cuda_rmsnorm_f32(0, d_x, NULL, d_w, d_y, NULL, rows, dim, 1e-6f, &err), &err);
        CHECK_OK(sm_cuda_rmsnorm_f32(0, d_x, d_src, d_w, NULL, d_yb, rows, dim, 1e-6f, &err), &err);
        sync_ok("embed/norm");
        float *x = dl_f32(d_x, (size_t)rows * dim), *y = dl_f32(d_y, (size_t)rows * dim);
        float *yb = malloc((size_t)rows * dim * 4), *ref = malloc((size_t)rows * dim * 4), *xrev = malloc((size_t)rows * dim * 4);
        gpu_test_download_bf16(yb, d_yb, rows, dim, dim);
        bool same = true;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < dim; c++) same &= x[(size_t)r * dim + c] == emb[(size_t)tokens[r] * dim + c];
        CHECK(same, "embed gather rows %d dim %d: not an exact copy", rows, dim);
        sm_cpu_rmsnorm(ref, x, w, rows, dim, 1e-6f);
        double e1 = test_rel_l2(y, ref, (size_t)rows * dim);
        CHECK(e1 < F32_TOL, "rmsnorm fp32 rows %d dim %d: rel L2 %.3g", rows, dim, e1);
        for (int r = 0; r < rows; r++) memcpy(xrev + (size_t)r * dim, x + (size_t)src[r] * dim, (size_t)dim * 4);
        sm_cpu_rmsnorm(ref, xrev, w, rows, dim, 1e-6f);
        double e2 = test_rel_l2(yb, ref, (size_t)rows * dim);
        CHECK(e2 < BF16_TOL, "rmsnorm bf16 (row index) rows %d dim %d: rel L2 %.3g", rows, dim, e2);
        free(emb); free(w); free(x); free(y); free(yb); free(ref); free(xrev);
        cudaFree(d_emb); cudaFree(d_w); cudaFree(d_tok); cudaFree(d_src); cudaFree(d_x); cudaFree(d_y); cudaFree(d_yb);
    }
}

/* q/k norm (per head and full) then RoPE on a strided view, as the forward applies them to qkv. */
static void test_qk_norm_rope(void) {
    uint64_t seed = 23;
    const int shapes[][3] = {{1, 2, 8}, {5, 4, 32}, {9, 3, 64}, {4, 8, 128}, {3, 2, 256}}; /* rows, heads, hd */
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int rows = shapes[t][0], heads = shapes[t][1], hd = shapes[t][2], dim = heads * hd, stride = dim + 24;
        sm_error err = {0};
        for (int full = 0; full < 2; full++) {
            float *x = gpu_test_random_bf16((size_t)rows * stride, 3.0f, &seed);
            int wn = full ? dim : hd;
            float *w = gpu_test_random_bf16((size_t)wn, 1.0f, &seed);
            int pos[16];
            for (int r = 0; r < rows; r++) pos[r] = (int)(gpu_test_next(&seed) % 5000);
            float *d_x = gpu_test_upload(x, (size_t)rows * stride * 4);
            void *d_w = gpu_test_upload_bf16(w, 1, wn, wn);
            int *d_pos = gpu_test_upload(pos, sizeof pos);
            CHECK_OK(sm_cuda_head_rmsnorm_f32(0, d_x, stride, d_w, rows, full ? 1 : heads, full ? dim : hd, 1e-6f, &err), &err);
            CHECK_OK(sm_cuda_rope_f32(0, d_x, stride, d_pos, rows, heads, hd, 1e6f, &err), &err);
            sync_ok("qk norm + rope");
            float *got = dl_f32(d_x, (size_t)rows * stride), *ref = malloc((size_t)rows * dim * 4);
            float *gv = malloc((size_t)rows * dim * 4);
            for (int r = 0; r < rows; r++) {
                memcpy(ref + (size_t)r * dim, x + (size_t)r * stride, (size_t)dim * 4);
                memcpy(gv + (size_t)r * dim, got + (size_t)r * stride, (size_t)dim * 4);
            }
            if (full) sm_cpu_rmsnorm(ref, ref, w, rows, dim, 1e-6f);
            else sm_cpu_rmsnorm(ref, ref, w, rows * heads, hd, 1e-6f);
            sm_cpu_rope(ref, pos, rows, heads, hd, 1e6f);
            double e = test_rel_l2(gv, ref, (size_t)rows * dim);
            CHECK(e < F32_TOL, "%s q/k norm + rope rows %d heads %d hd %d: rel L2 %.3g", full ? "full" : "per-head", rows,
                  heads, hd, e);
            bool pad_kept = true; /* the stride padding is not ours to touch */
            for (int r = 0; r < rows; r++)
                for (int c = dim; c < stride; c++) pad_kept &= got[(size_t)r * stride + c] == x[(size_t)r * stride + c];
            CHECK(pad_kept, "q/k norm + rope wrote outside its rows' %d values", dim);
            free(x); free(w); free(got); free(ref); free(gv);
            cudaFree(d_x); cudaFree(d_w); cudaFree(d_pos);
        }
    }
}

/* The CPU arithmetic of model.c's attention, on BF16-rounded K/V. */
static void twin_attention(const float *q, int q_stride, const float *kc, const float *vc, const int *seq,
                           const int *pos, float *out, int rows, int heads, int kvh, int hd, int ctx) {
    int kvd = kvh * hd, group = heads / kvh;
    float *sc = malloc((size_t)ctx * sizeof *sc);
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < heads; h++) {
            const float *qr = q + (size_t)r * q_stride + (size_t)h * hd;
            const float *K = kc + (size_t)seq[r] * ctx * kvd + (size_t)(h / group) * hd;
            const float *V = vc + (size_t)seq[r] * ctx * kvd + (size_t)(h / group) * hd;
            int n = pos[r] + 1;
            for (int t = 0; t < n; t++) sc[t] = sm_cpu_dot(qr, K + (size_t)t * kvd, hd) / sqrtf((float)hd);
            sm_cpu_softmax(sc, n);
            float *o = out + ((size_t)r * heads + h) * hd;
            for (int d = 0; d < hd; d++) {
                double s = 0;
                for (int t = 0; t < n; t++) s += sc[t] * V[(size_t)t * kvd + d];
                o[d] = (float)s;
            }
        }
    free(sc);
}

/* sm_cuda_attention_prefill against the twin: one sequence (index 1 of 2) whose rows continue
 * p0 cached positions, several 64-row tiles with a short last one, positions crossing 64-position
 * tiles mid-tile (p0 = 37), and a prompt from position 0 of exactly one tile. */
static void test_attention_prefill(void) {
    uint64_t seed = 41;
    const int shapes[][3] = {{4, 2, 64}, {8, 8, 128}, {32, 4, 128}}; /* heads, kv_heads, hd */
    const int runs[][2] = {{37, 150}, {0, 64}};                      /* first position, rows */
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (size_t ri = 0; ri < sizeof runs / sizeof runs[0]; ri++) {
            int heads = shapes[si][0], kvh = shapes[si][1], hd = shapes[si][2], qd = heads * hd, kvd = kvh * hd;
            int stride = qd + 2 * kvd, ctx = 256, p0 = runs[ri][0], rows = runs[ri][1];
            size_t cache_n = (size_t)2 * ctx * kvd;
            float *kc = gpu_test_random_bf16(cache_n, 2.0f, &seed), *vc = gpu_test_random_bf16(cache_n, 1.0f, &seed);
            float *qkv = gpu_test_random_bf16((size_t)rows * stride, 1.0f, &seed);
            int *seq = malloc(sizeof(int) * (size_t)rows), *pos = malloc(sizeof(int) * (size_t)rows);
            for (int r = 0; r < rows; r++) { seq[r] = 1; pos[r] = p0 + r; }
            sm_error err = {0};
            void *d_kc = gpu_test_upload_bf16(kc, 1, (int)cache_n, (int)cache_n);
            void *d_vc = gpu_test_upload_bf16(vc, 1, (int)cache_n, (int)cache_n);
            float *d_qkv = gpu_test_upload(qkv, (size_t)rows * stride * 4);
            int *d_seq = gpu_test_upload(seq, sizeof(int) * (size_t)rows), *d_pos = gpu_test_upload(pos, sizeof(int) * (size_t)rows);
            void *d_out = gpu_test_malloc((size_t)rows * qd * 2);
            gpu_test_poison(d_out, (size_t)rows * qd * 2);
            CHECK(sm_cuda_attention_prefill_fits(rows, heads, kvh, hd), "prefill attention must take hd %d", hd);
            CHECK_OK(sm_cuda_kv_write(0, d_qkv + qd, d_qkv + qd + kvd, stride, d_kc, d_vc, d_seq, d_pos, rows, kvd, ctx, &err),
                     &err);
            CHECK_OK(sm_cuda_attention_prefill(0, d_qkv, stride, d_kc, d_vc, d_seq, d_pos, d_out, rows, heads, kvh, hd, ctx,
                                               1.0f / sqrtf((float)hd), &err), &err);
            sync_ok("attention_prefill");
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < kvd; c++) {
                    size_t at = ((size_t)seq[r] * ctx + pos[r]) * kvd + c;
                    kc[at] = sm_bf16_to_f32(sm_f32_to_bf16(qkv[(size_t)r * stride + qd + c]));
                    vc[at] = sm_bf16_to_f32(sm_f32_to_bf16(qkv[(size_t)r * stride + qd + kvd + c]));
                }
            float *ref = malloc((size_t)rows * qd * 4), *got = malloc((size_t)rows * qd * 4);
            twin_attention(qkv, stride, kc, vc, seq, pos, ref, rows, heads, kvh, hd, ctx);
            gpu_test_download_bf16(got, d_out, rows, qd, qd);
            double e = test_rel_l2(got, ref, (size_t)rows * qd), worst_row = 0;
            for (int r = 0; r < rows; r++) {
                double er = test_rel_l2(got + (size_t)r * qd, ref + (size_t)r * qd, (size_t)qd);
                if (er > worst_row) worst_row = er;
            }
            CHECK(e < BF16_TOL && worst_row < BF16_TOL && gpu_test_all_finite(got, (size_t)rows * qd),
                  "prefill attention heads %d/%d hd %d, positions %d..%d: rel L2 %.3g, worst row %.3g", heads, kvh, hd, p0,
                  p0 + rows - 1, e, worst_row);
            printf("prefill attention heads %2d/%d hd %3d, positions %3d..%3d: rel L2 %.2e, worst row %.2e\n", heads, kvh,
                   hd, p0, p0 + rows - 1, e, worst_row);
            free(kc); free(vc); free(qkv); free(seq); free(pos); free(ref); free(got);
            cudaFree(d_kc); cudaFree(d_vc); cudaFree(d_qkv); cudaFree(d_seq); cudaFree(d_pos); cudaFree(d_out);
        }
    sm_error err = {0};
    CHECK(!sm_cuda_attention_prefill_fits(64, 8, 2, 32), "prefill attention must refuse head_dim 32");
    CHECK(sm_cuda_attention_prefill(0, NULL, 0, NULL, NULL, NULL, NULL, NULL, 64, 8, 2, 32, 64, 1.0f, &err) == SM_EINVAL &&
              strstr(err.msg, "head_dim"), "prefill attention with head_dim 32: %s", err.msg);
}

static bool plan_is(int rows, int heads, int kvh, int hd, int max_len, int splits, bool grouped) {
    sm_attn_plan p = sm_cuda_attention_plan(rows, heads, kvh, hd, max_len, 132);
    if (p.splits == splits && p.grouped == grouped) return true;
    printf("plan(rows %d, heads %d/%d, hd %d, len %d) = {%d, %d}, want {%d, %d}\n", rows, heads, kvh, hd, max_len, p.splits,
           p.grouped, splits, grouped);
    return false;
}

static void test_attention(void) {
    uint64_t seed = 37;
    const int shapes[][3] = {{2, 1, 8}, {8, 2, 32}, {4, 4, 64}, {32, 4, 128}, {4, 2, 256}}; /* heads, kv_heads, hd */
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int heads = shapes[t][0], kvh = shapes[t][1], hd = shapes[t][2], qd = heads * hd, kvd = kvh * hd;
        int stride = qd + 2 * kvd, ctx = 1500, seqs = 3;
        /* seq 0: 1400 cached positions, then a decode row; seq 1: prefill of 7 rows from 0;
         * seq 2: 50 cached, then 5 verify rows (51..55). Rows are interleaved on purpose. */
        int seq[13], pos[13], rows = 0;
        seq[rows] = 0; pos[rows++] = 1400;
        for (int i = 0; i < 7; i++) { seq[rows] = 1; pos[rows++] = i; }
        for (int i = 0; i < 5; i++) { seq[rows] = 2; pos[rows++] = 50 + i; }
        size_t cache_n = (size_t)seqs * ctx * kvd;
        float *kc = gpu_test_random_bf16(cache_n, 2.0f, &seed), *vc = gpu_test_random_bf16(cache_n, 1.0f, &seed);
        float *qkv = gpu_test_random_bf16((size_t)rows * stride, 1.0f, &seed);
        sm_error err = {0};
        void *d_kc = gpu_test_upload_bf16(kc, 1, (int)cache_n, (int)cache_n);
        void *d_vc = gpu_test_upload_bf16(vc, 1, (int)cache_n, (int)cache_n);
        float *d_qkv = gpu_test_upload(qkv, (size_t)rows * stride * 4);
        int *d_seq = gpu_test_upload(seq, sizeof seq), *d_pos = gpu_test_upload(pos, sizeof pos);
        void *d_out = gpu_test_malloc((size_t)rows * qd * 2);
        gpu_test_poison(d_out, (size_t)rows * qd * 2);
        CHECK_OK(sm_cuda_kv_write(0, d_qkv + qd, d_qkv + qd + kvd, stride, d_kc, d_vc, d_seq, d_pos, rows, kvd, ctx, &err), &err);
        CHECK_OK(sm_cuda_attention(0, d_qkv, stride, d_kc, d_vc, d_seq, d_pos, d_out, rows, heads, kvh, hd, ctx,
                                   1.0f / sqrtf((float)hd), NULL, (sm_attn_plan){1, false}, &err), &err);
        sync_ok("attention");
        /* twin: write the rows' K/V (BF16-rounded) into the host cache first, as the kernel did */
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < kvd; c++) {
                size_t at = ((size_t)seq[r] * ctx + pos[r]) * kvd + c;
                kc[at] = sm_bf16_to_f32(sm_f32_to_bf16(qkv[(size_t)r * stride + qd + c]));
                vc[at] = sm_bf16_to_f32(sm_f32_to_bf16(qkv[(size_t)r * stride + qd + kvd + c]));
            }
        float *got_kc = malloc(cache_n * 4);
        gpu_test_download_bf16(got_kc, d_kc, 1, (int)cache_n, (int)cache_n);
        CHECK(memcmp(got_kc, kc, cache_n * 4) == 0, "kv_write heads %d hd %d: K cache differs from the twin", heads, hd);
        float *ref = malloc((size_t)rows * qd * 4), *got = malloc((size_t)rows * qd * 4);
        twin_attention(qkv, stride, kc, vc, seq, pos, ref, rows, heads, kvh, hd, ctx);
        gpu_test_download_bf16(got, d_out, rows, qd, qd);
        double e = test_rel_l2(got, ref, (size_t)rows * qd);
        CHECK(e < BF16_TOL && gpu_test_all_finite(got, (size_t)rows * qd), "attention heads %d/%d hd %d: rel L2 %.3g", heads,
              kvh, hd, e);
        printf("attention heads %2d/%d hd %3d (mixed prefill/decode/verify rows): rel L2 %.2e\n", heads, kvh, hd, e);
        /* split-context: the decode row (1401 positions: 22 of 32 chunks of 64, 16 of 88, or 2 of
         * 701) alone, then the 5 verify rows (56 positions at most: 4 blocks per (row, head or
         * group) of which one works), twice each (the workspace must be ready again after a launch) */
        size_t ws_bytes = sm_cuda_attention_split_bytes(heads, hd);
        void *ws = gpu_test_malloc(ws_bytes);
        gpu_test_cuda(cudaMemset(ws, 0, ws_bytes), "split workspace");
        /* first row, rows, splits, grouped (every row too, unsplit) */
        const int parts[6][4] = {{0, 1, 32, 1}, {0, 1, 16, 0}, {0, 1, 2, 1}, {8, 5, 4, 0}, {8, 5, 2, 1}, {0, 13, 1, 1}};
        for (int rep = 0; rep < 2; rep++)
            for (int pi = 0; pi < 6; pi++) {
                int r0 = parts[pi][0], nr = parts[pi][1];
                gpu_test_poison(d_out, (size_t)rows * qd * 2);
                CHECK_OK(sm_cuda_attention(0, d_qkv + (size_t)r0 * stride, stride, d_kc, d_vc, d_seq + r0, d_pos + r0,
                                           (sm_bf16_bits *)d_out + (size_t)r0 * qd, nr, heads, kvh, hd, ctx,
                                           1.0f / sqrtf((float)hd), ws,
                                           (sm_attn_plan){parts[pi][2], parts[pi][3] != 0}, &err), &err);
                sync_ok("split attention");
                gpu_test_download_bf16(got, d_out, rows, qd, qd);
                double es = test_rel_l2(got + (size_t)r0 * qd, ref + (size_t)r0 * qd, (size_t)nr * qd);
                CHECK(es < BF16_TOL && gpu_test_all_finite(got + (size_t)r0 * qd, (size_t)nr * qd),
                      "split attention heads %d/%d hd %d rows %d..%d (pass %d): rel L2 %.3g", heads, kvh, hd, r0,
                      r0 + nr - 1, rep, es);
                if (rep == 1)
                    printf("  %2d splits%s, rows %d..%d: rel L2 %.2e\n", parts[pi][2], parts[pi][3] ? " grouped" : "", r0,
                           r0 + nr - 1, es);
            }
        CHECK(sm_cuda_attention(0, d_qkv, stride, d_kc, d_vc, d_seq, d_pos, d_out, 9, heads, kvh, hd, ctx, 1.0f, ws, (sm_attn_plan){2, false}, &err) ==
                  SM_EINVAL && strstr(err.msg, "9 rows"), "split attention of 9 rows accepted: %s", err.msg);
        cudaFree(ws);
        if (t == 0)
            CHECK(plan_is(1, 32, 32, 128, 33, 1, false) && plan_is(1, 32, 32, 128, 161, 4, false) &&
                      plan_is(1, 32, 32, 128, 2049, 8, false) && plan_is(1, 32, 4, 128, 161, 4, false) &&
                      plan_is(1, 32, 4, 128, 2049, 32, true) && /* groups of 8: 4 blocks a row */
                      plan_is(8, 32, 32, 128, 2049, 1, false) && plan_is(8, 32, 4, 128, 2049, 8, true) &&
                      plan_is(1, 4, 2, 256, 2049, 32, false) && /* head_dim 256: no group kernel */
                      plan_is(9, 1, 1, 64, 100000, 1, false),
                  "attention plans");
        free(kc); free(vc); free(qkv); free(got_kc); free(ref); free(got);
        cudaFree(d_kc); cudaFree(d_vc); cudaFree(d_qkv); cudaFree(d_seq); cudaFree(d_pos); cudaFree(d_out);
    }
}

/* permute → gather → (identity "expert": ys = xs * weight) → combine equals x + sum_j w_j h. */
static void test_moe_permute(void) {
    uint64_t seed = 41;
    const int shapes[][4] = {{1, 8, 2, 8}, {13, 16, 2, 60}, {64, 128, 8, 64}, {300, 64, 6, 24}}; /* rows, E, k, hidden */
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int rows = shapes[t][0], E = shapes[t][1], k = shapes[t][2], H = shapes[t][3], hp = (H + 7) / 8 * 8, n = rows * k;
        int *ids = malloc((size_t)n * 4);
        float *w = malloc((size_t)n * 4);
        for (int a = 0; a < n; a++) {
            ids[a] = (int)(gpu_test_next(&seed) % (uint64_t)E);
            if (t == 2 && a % 3) ids[a] = 5; /* a hot expert */
            w[a] = 0.5f + 0.5f * gpu_test_uniform(&seed);
        }
        float *h = gpu_test_random_bf16((size_t)rows * H, 1.0f, &seed), *x = gpu_test_random_bf16((size_t)rows * H, 1.0f, &seed);
        sm_error err = {0};
        int *d_ids = gpu_test_upload(ids, (size_t)n * 4), *d_off = gpu_test_malloc((size_t)(E + 1) * 4);
        int *d_src = gpu_test_malloc((size_t)n * 4), *d_pos = gpu_test_malloc((size_t)n * 4);
        float *d_w = gpu_test_upload(w, (size_t)n * 4), *d_sw = gpu_test_malloc((size_t)n * 4);
        void *d_h = gpu_test_upload_bf16(h, rows, H, H), *d_xs = gpu_test_malloc((size_t)n * hp * 2);
        float *d_x = gpu_test_upload(x, (size_t)rows * H * 4);
        gpu_test_poison(d_xs, (size_t)n * hp * 2);
        gpu_test_poison(d_src, (size_t)n * 4);
        CHECK_OK(sm_cuda_moe_permute(0, d_ids, d_w, n, E, d_off, d_src, d_pos, d_sw, &err), &err);
        CHECK_OK(sm_cuda_moe_gather(0, d_h, H, d_src, k, d_xs, hp, n, &err), &err);
        sync_ok("permute + gather");
        int *off = malloc((size_t)(E + 1) * 4), *src = malloc((size_t)n * 4), *pos = malloc((size_t)n * 4);
        float *sw = dl_f32(d_sw, (size_t)n), *xs = malloc((size_t)n * hp * 4);
        gpu_test_cuda(cudaMemcpy(off, d_off, (size_t)(E + 1) * 4, cudaMemcpyDeviceToHost), "offsets");
        gpu_test_cuda(cudaMemcpy(src, d_src, (size_t)n * 4, cudaMemcpyDeviceToHost), "src");
        gpu_test_cuda(cudaMemcpy(pos, d_pos, (size_t)n * 4, cudaMemcpyDeviceToHost), "pos");
        gpu_test_download_bf16(xs, d_xs, n, hp, hp);
        bool ok = off[0] == 0 && off[E] == n;
        for (int e = 0; e < E && ok; e++) {
            int count = 0;
            for (int a = 0; a < n; a++) count += ids[a] == e;
            ok &= off[e + 1] - off[e] == count;
            for (int p = off[e]; p < off[e + 1] && ok; p++) ok &= ids[src[p]] == e;
        }
        for (int a = 0; a < n && ok; a++) ok &= pos[a] >= 0 && pos[a] < n && src[pos[a]] == a && sw[pos[a]] == w[a];
        for (int p = 0; p < n && ok; p++)
            for (int c = 0; c < hp; c++) ok &= xs[(size_t)p * hp + c] == (c < H ? h[(size_t)(src[p] / k) * H + c] : 0.0f);
        CHECK(ok, "moe permute/gather rows %d experts %d top_k %d: not a valid grouping by expert", rows, E, k);
        /* ys := weight * xs (a stand-in expert), then combine */
        float *ys = malloc((size_t)n * hp * 4);
        for (int p = 0; p < n; p++)
            for (int c = 0; c < hp; c++) ys[(size_t)p * hp + c] = sm_bf16_to_f32(sm_f32_to_bf16(sw[p] * xs[(size_t)p * hp + c]));
        void *d_ys = gpu_test_upload_bf16(ys, n, hp, hp);
        CHECK_OK(sm_cuda_moe_combine(0, d_ys, hp, d_pos, k, d_x, rows, H, &err), &err);
        sync_ok("combine");
        float *got = dl_f32(d_x, (size_t)rows * H), *ref = malloc((size_t)rows * H * 4);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < H; c++) {
                float s = 0;
                for (int j = 0; j < k; j++) s += ys[(size_t)pos[r * k + j] * hp + c];
                ref[(size_t)r * H + c] = x[(size_t)r * H + c] + s;
            }
        double e = test_rel_l2(got, ref, (size_t)rows * H);
        CHECK(e < F32_TOL, "moe combine rows %d top_k %d: rel L2 %.3g", rows, k, e);
        free(ids); free(w); free(h); free(x); free(off); free(src); free(pos); free(sw); free(xs); free(ys); free(got); free(ref);
        cudaFree(d_ids); cudaFree(d_off); cudaFree(d_src); cudaFree(d_pos); cudaFree(d_w); cudaFree(d_sw); cudaFree(d_h);
        cudaFree(d_xs); cudaFree(d_x); cudaFree(d_ys);
    }
}

static void test_gate_bias_argmax(void) {
    uint64_t seed = 53;
    /* vocab 101 and 151937 take argmax's scalar loop, the others its 16-byte loads */
    const int sizes[][2] = {{1, 8}, {5, 100}, {17, 2048}, {3, 151936}, {4, 101}, {3, 151937}};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        int rows = sizes[t][0], dim = sizes[t][1];
        sm_error err = {0};
        float *h = gpu_test_random_bf16((size_t)rows * dim, 1.0f, &seed), *w = gpu_test_random_bf16((size_t)dim, 0.1f, &seed);
        for (int r = 1; r < rows; r += 2) /* odd rows: a tie for the maximum, the first must win */
            h[(size_t)r * dim + dim / 3 + 1] = h[(size_t)r * dim + 2 * dim / 3] = 8.0f;
        void *d_h = gpu_test_upload_bf16(h, rows, dim, dim), *d_w = gpu_test_upload_bf16(w, 1, dim, dim);
        float *d_g = gpu_test_malloc((size_t)rows * 4), *d_l = gpu_test_upload(h, (size_t)rows * dim * 4);
        int *d_ids = gpu_test_malloc((size_t)rows * 4);
        gpu_test_poison(d_g, (size_t)rows * 4);
        gpu_test_poison(d_ids, (size_t)rows * 4);
        CHECK_OK(sm_cuda_row_dot_sigmoid(0, d_h, d_w, d_g, rows, dim, &err), &err);
        CHECK_OK(sm_cuda_argmax(0, d_l, rows, dim, d_ids, &err), &err);
        CHECK_OK(sm_cuda_add_bias_f32(0, d_l, dim, d_w, rows, dim, &err), &err);
        sync_ok("gate / argmax / bias");
        float *g = dl_f32(d_g, (size_t)rows), *ref = malloc((size_t)rows * 4), *biased = dl_f32(d_l, (size_t)rows * dim);
        int ids[32];
        gpu_test_cuda(cudaMemcpy(ids, d_ids, (size_t)rows * 4, cudaMemcpyDeviceToHost), "ids");
        bool am = true, bias_ok = true;
        for (int r = 0; r < rows; r++) {
            ref[r] = 1.0f / (1.0f + expf(-sm_cpu_dot(h + (size_t)r * dim, w, dim)));
            int best = 0;
            for (int i = 1; i < dim; i++) best = h[(size_t)r * dim + i] > h[(size_t)r * dim + best] ? i : best;
            am &= ids[r] == best;
            for (int i = 0; i < dim; i++) bias_ok &= biased[(size_t)r * dim + i] == h[(size_t)r * dim + i] + w[i];
        }
        double e = test_rel_l2(g, ref, (size_t)rows);
        CHECK(e < F32_TOL, "shared-expert gate rows %d dim %d: rel L2 %.3g", rows, dim, e);
        CHECK(am, "argmax rows %d vocab %d: differs from the first maximum (ties included)", rows, dim);
        CHECK(bias_ok, "bias add rows %d dim %d: not exact", rows, dim);
        free(h); free(w); free(g); free(ref); free(biased);
        cudaFree(d_h); cudaFree(d_w); cudaFree(d_g); cudaFree(d_l); cudaFree(d_ids);
    }
}

int main(void) {
    gpu_test_require_device("test_gpu_model_ops");
    test_embed_norm();
    test_qk_norm_rope();
    test_attention();
    test_attention_prefill();
    test_moe_permute();
    test_gate_bias_argmax();
    TEST_MAIN_END
}
