/* kernels/gemv.h against a CPU double loop (double accumulation) on random BF16 inputs, outputs
 * poisoned with NaN first: rows 1..8, odd n, k from 8 to 4096 (k not a multiple of the 256 values
 * a warp reads per pass, so the tail guard runs), fp32 out with beta 0 and 1 (the residual add)
 * and BF16 out. fp32: rel L2 < 1e-5 (summation order only); BF16: < 1e-2. Also the shapes the
 * launcher must refuse (rows 9, k % 8 != 0, misaligned w, beta with a BF16 y).
 * The norm-fused GEMV must equal sm_cuda_rmsnorm_f32 + sm_cuda_gemv_xwt bit for bit (y and h),
 * over row lengths that give the norm 1024 threads and fewer (partly idle last warp).
 * The deferred MoE combine (sm_gemv_moe_add) must equal sm_cuda_moe_combine + the launches it
 * replaces bit for bit: before the norm (y and h, the residual left as it was) and in the o
 * projection's y += (random slot positions, padded slot rows, top_k 1..16). */
#include <math.h>
#include <string.h>

#include "gemv.h"
#include "gpu/gpu_test.h"
#include "model_ops.h"

static void cpu_xwt(const float *x, const float *w, const float *y0, float beta, float *y, int rows, int n, int k) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < n; c++) {
            double s = 0;
            for (int i = 0; i < k; i++) s += (double)x[(size_t)r * k + i] * w[(size_t)c * k + i];
            y[(size_t)r * n + c] = (float)(s + (beta != 0.0f ? (double)beta * y0[(size_t)r * n + c] : 0.0));
        }
}

static void test_shapes(void) {
    uint64_t seed = 5;
    const int shapes[][3] = {{1, 5120, 2048}, {1, 2048, 4096}, {2, 128, 2048}, {3, 77, 264}, {4, 1, 8},
                             {5, 300, 776}, {8, 1000, 2048}, {7, 13, 3072}, {4, 9, 6144}, {8, 64, 3072}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int rows = shapes[t][0], n = shapes[t][1], k = shapes[t][2];
        size_t ny = (size_t)rows * n;
        sm_error err = {0};
        float *x = gpu_test_random_bf16((size_t)rows * k, 1.0f, &seed), *w = gpu_test_random_bf16((size_t)n * k, 0.05f, &seed);
        float *y0 = gpu_test_random_bf16(ny, 1.0f, &seed), *ref = malloc(ny * 4), *got = malloc(ny * 4);
        void *d_x = gpu_test_upload_bf16(x, rows, k, k), *d_w = gpu_test_upload_bf16(w, n, k, k);
        float *d_y = gpu_test_malloc(ny * 4);
        void *d_yb = gpu_test_malloc(ny * 2);
        for (int beta = 0; beta <= 1; beta++) {
            if (beta) gpu_test_cuda(cudaMemcpy(d_y, y0, ny * 4, cudaMemcpyHostToDevice), "y0");
            else gpu_test_poison(d_y, ny * 4);
            CHECK_OK(sm_cuda_gemv_xwt(0, d_x, d_w, d_y, true, (float)beta, rows, n, k, &err), &err);
            gpu_test_cuda(cudaMemcpy(got, d_y, ny * 4, cudaMemcpyDeviceToHost), "download y");
            cpu_xwt(x, w, y0, (float)beta, ref, rows, n, k);
            double e = test_rel_l2(got, ref, ny);
            CHECK(e < 1e-5, "gemv fp32 rows %d n %d k %d beta %d: rel L2 %.3g", rows, n, k, beta, e);
        }
        gpu_test_poison(d_yb, ny * 2);
        CHECK_OK(sm_cuda_gemv_xwt(0, d_x, d_w, d_yb, false, 0.0f, rows, n, k, &err), &err);
        gpu_test_download_bf16(got, d_yb, rows, n, n);
        cpu_xwt(x, w, y0, 0.0f, ref, rows, n, k);
        double e = test_rel_l2(got, ref, ny);
        CHECK(e < 1e-2, "gemv bf16 rows %d n %d k %d: rel L2 %.3g", rows, n, k, e);
        /* the comparison can fail: a wrong weight row changes the result beyond the bound */
        if (t == 0) {
            w[0] += 1.0f;
            cpu_xwt(x, w, y0, 0.0f, ref, rows, n, k);
            CHECK(test_rel_l2(got, ref, ny) > 1e-4 || n * k < 1000, "gemv: the tolerance cannot tell a changed weight");
        }
        free(x); free(w); free(y0); free(ref); free(got);
        cudaFree(d_x); cudaFree(d_w); cudaFree(d_y); cudaFree(d_yb);
    }
}

static bool same_bytes(const void *d_a, const void *d_b, size_t bytes) {
    unsigned char *a = malloc(bytes), *b = malloc(bytes);
    gpu_test_cuda(cudaMemcpy(a, d_a, bytes, cudaMemcpyDeviceToHost), "download a");
    gpu_test_cuda(cudaMemcpy(b, d_b, bytes, cudaMemcpyDeviceToHost), "download b");
    bool same = !memcmp(a, b, bytes);
    free(a); free(b);
    return same;
}

static void test_norm_fused(void) {
    uint64_t seed = 11;
    const int shapes[][3] = {{1, 128, 2048}, {2, 5120, 2048}, {3, 77, 264}, {8, 64, 2048}, {5, 40, 200}, {4, 9, 4096},
                             {1, 8, 8}};
    const float eps = 1e-6f;
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int rows = shapes[t][0], n = shapes[t][1], k = shapes[t][2];
        size_t ny = (size_t)rows * n, nh = (size_t)rows * k;
        sm_error err = {0};
        float *x = gpu_test_random_bf16(nh, 3.0f, &seed), *nw = gpu_test_random_bf16((size_t)k, 1.0f, &seed);
        float *w = gpu_test_random_bf16((size_t)n * k, 0.05f, &seed), *y0 = gpu_test_random_bf16(ny, 1.0f, &seed);
        float *d_x = gpu_test_upload(x, nh * 4), *d_y0 = gpu_test_upload(y0, ny * 4);
        void *d_nw = gpu_test_upload_bf16(nw, 1, k, k), *d_w = gpu_test_upload_bf16(w, n, k, k);
        void *h_chain = gpu_test_malloc(nh * 2), *h_fused = gpu_test_malloc(nh * 2);
        float *y_chain = gpu_test_malloc(ny * 4), *y_fused = gpu_test_malloc(ny * 4);
        void *yb_chain = gpu_test_malloc(ny * 2), *yb_fused = gpu_test_malloc(ny * 2);
        CHECK_OK(sm_cuda_rmsnorm_f32(0, d_x, NULL, d_nw, NULL, h_chain, rows, k, eps, &err), &err);
        for (int beta = 0; beta <= 1; beta++) {
            gpu_test_cuda(cudaMemcpy(y_chain, d_y0, ny * 4, cudaMemcpyDeviceToDevice), "y0");
            gpu_test_cuda(cudaMemcpy(y_fused, d_y0, ny * 4, cudaMemcpyDeviceToDevice), "y0");
            gpu_test_poison(h_fused, nh * 2);
            CHECK_OK(sm_cuda_gemv_xwt(0, h_chain, d_w, y_chain, true, (float)beta, rows, n, k, &err), &err);
            CHECK_OK(sm_cuda_gemv_norm_xwt(0, d_x, NULL, d_nw, eps, beta ? NULL : h_fused, d_w, y_fused, true, (float)beta, rows,
                                           n, k, &err), &err);
            CHECK(same_bytes(y_chain, y_fused, ny * 4),
                  "gemv_norm rows %d n %d k %d beta %d: fp32 y differs from rmsnorm + gemv", rows, n, k, beta);
            if (!beta)
                CHECK(same_bytes(h_chain, h_fused, nh * 2), "gemv_norm rows %d k %d: h differs from rmsnorm_f32's", rows, k);
        }
        gpu_test_poison(yb_fused, ny * 2);
        CHECK_OK(sm_cuda_gemv_xwt(0, h_chain, d_w, yb_chain, false, 0.0f, rows, n, k, &err), &err);
        CHECK_OK(sm_cuda_gemv_norm_xwt(0, d_x, NULL, d_nw, eps, NULL, d_w, yb_fused, false, 0.0f, rows, n, k, &err), &err);
        CHECK(same_bytes(yb_chain, yb_fused, ny * 2), "gemv_norm rows %d n %d k %d: bf16 y differs from rmsnorm + gemv",
              rows, n, k);
        /* and it is a GEMV at all: against the CPU loop on the chain's h */
        float *h = malloc(nh * 4), *ref = malloc(ny * 4), *got = malloc(ny * 4);
        gpu_test_download_bf16(h, h_chain, rows, k, k);
        cpu_xwt(h, w, y0, 0.0f, ref, rows, n, k);
        gpu_test_download_bf16(got, yb_fused, rows, n, n);
        double e = test_rel_l2(got, ref, ny);
        CHECK(e < 1e-2, "gemv_norm bf16 rows %d n %d k %d vs CPU: rel L2 %.3g", rows, n, k, e);
        free(h); free(ref); free(got);
        free(x); free(nw); free(w); free(y0);
        cudaFree(d_x); cudaFree(d_y0); cudaFree(d_nw); cudaFree(d_w); cudaFree(h_chain); cudaFree(h_fused);
        cudaFree(y_chain); cudaFree(y_fused); cudaFree(yb_chain); cudaFree(yb_fused);
    }
}

static void test_moe_add(void) {
    uint64_t seed = 23;
    /* rows, n of the normed GEMV, hidden k, top_k, k of the o projection */
    const int shapes[][5] = {{1, 5120, 2048, 8, 4096}, {2, 5120, 2048, 8, 4096}, {1, 77, 264, 2, 136}, {2, 96, 1024, 4, 512},
                             {3, 40, 256, 16, 64},
                             {1, 9, 8, 1, 8}};
    const float eps = 1e-6f;
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        int rows = shapes[t][0], n = shapes[t][1], k = shapes[t][2], top_k = shapes[t][3], ko = shapes[t][4];
        int n_assign = rows * top_k, slots = n_assign + 3, stride = k + 8;
        size_t nh = (size_t)rows * k, ny = (size_t)rows * n;
        sm_error err = {0};
        /* every slot row once, in a shuffled order, three rows unused */
        int *perm = malloc((size_t)slots * sizeof(int));
        for (int i = 0; i < slots; i++) perm[i] = i;
        for (int i = slots - 1; i > 0; i--) {
            int j = (int)(gpu_test_next(&seed) % (uint64_t)(i + 1)), tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
        }
        float *x = gpu_test_random_bf16(nh, 3.0f, &seed), *ys = gpu_test_random_bf16((size_t)slots * stride, 1.0f, &seed);
        float *nw = gpu_test_random_bf16((size_t)k, 1.0f, &seed), *w = gpu_test_random_bf16((size_t)n * k, 0.05f, &seed);
        float *xo = gpu_test_random_bf16((size_t)rows * ko, 1.0f, &seed), *wo = gpu_test_random_bf16((size_t)k * ko, 0.05f, &seed);
        float *d_x = gpu_test_upload(x, nh * 4), *d_chain = gpu_test_upload(x, nh * 4);
        int *d_pos = gpu_test_upload(perm, (size_t)n_assign * sizeof(int));
        void *d_ys = gpu_test_upload_bf16(ys, slots, stride, stride), *d_nw = gpu_test_upload_bf16(nw, 1, k, k);
        void *d_w = gpu_test_upload_bf16(w, n, k, k), *d_xo = gpu_test_upload_bf16(xo, rows, ko, ko);
        void *d_wo = gpu_test_upload_bf16(wo, k, ko, ko);
        void *h_chain = gpu_test_malloc(nh * 2), *h_fused = gpu_test_malloc(nh * 2);
        float *y_chain = gpu_test_malloc(ny * 4), *y_fused = gpu_test_malloc(ny * 4), *r_fused = gpu_test_upload(x, nh * 4);
        const sm_gemv_moe_add add = {.ys = d_ys, .stride = stride, .top_k = top_k, .sorted_pos = d_pos};
        CHECK(sm_cuda_gemv_moe_add_fits(rows, n, k, d_x, &add, true) &&
                  sm_cuda_gemv_moe_add_fits(rows, k, ko, r_fused, &add, false),
              "moe add rows %d k %d top_k %d: not taken", rows, k, top_k);
        /* the chain: combine into the residual, norm, GEMV; then the o projection adds into it */
        CHECK_OK(sm_cuda_moe_combine(0, d_ys, stride, d_pos, top_k, d_chain, rows, k, &err), &err);
        CHECK_OK(sm_cuda_rmsnorm_f32(0, d_chain, NULL, d_nw, NULL, h_chain, rows, k, eps, &err), &err);
        CHECK_OK(sm_cuda_gemv_xwt(0, h_chain, d_w, y_chain, true, 0.0f, rows, n, k, &err), &err);
        CHECK_OK(sm_cuda_gemv_xwt(0, d_xo, d_wo, d_chain, true, 1.0f, rows, k, ko, &err), &err);
        /* fused: the norm GEMV sees x + add and leaves x alone; the o projection adds both */
        gpu_test_poison(h_fused, nh * 2);
        gpu_test_poison(y_fused, ny * 4);
        CHECK_OK(sm_cuda_gemv_norm_xwt(0, d_x, &add, d_nw, eps, h_fused, d_w, y_fused, true, 0.0f, rows, n, k, &err), &err);
        CHECK(same_bytes(h_chain, h_fused, nh * 2), "moe add rows %d k %d top_k %d: h differs from combine + rmsnorm", rows,
              k, top_k);
        CHECK(same_bytes(y_chain, y_fused, ny * 4), "moe add rows %d n %d k %d: y differs from combine + rmsnorm + gemv",
              rows, n, k);
        CHECK(same_bytes(d_x, r_fused, nh * 4), "moe add rows %d k %d: the norm GEMV changed the residual", rows, k);
        CHECK_OK(sm_cuda_gemv_xwt_moe_add(0, d_xo, d_wo, r_fused, &add, rows, k, ko, &err), &err);
        CHECK(same_bytes(d_chain, r_fused, nh * 4), "moe add rows %d k %d ko %d: o projection differs from combine + gemv",
              rows, k, ko);
        /* and the add is there at all: the residual moved */
        CHECK(!same_bytes(d_x, r_fused, nh * 4), "moe add rows %d k %d: nothing was added", rows, k);
        free(perm); free(x); free(ys); free(nw); free(w); free(xo); free(wo);
        cudaFree(d_x); cudaFree(d_chain); cudaFree(d_pos); cudaFree(d_ys); cudaFree(d_nw); cudaFree(d_w); cudaFree(d_xo);
        cudaFree(d_wo); cudaFree(h_chain); cudaFree(h_fused); cudaFree(y_chain); cudaFree(y_fused); cudaFree(r_fused);
    }
}

static void test_refusals(void) {
    sm_error err = {0};
    char *d = gpu_test_malloc(1 << 16);
    CHECK(sm_cuda_gemv_xwt(0, (void *)d, (void *)d, d, true, 0, 9, 8, 8, &err) == SM_EINVAL, "rows 9 accepted");
    CHECK(strstr(err.msg, "rows 9") != NULL, "message names the rows: %s", err.msg);
    CHECK(sm_cuda_gemv_xwt(0, (void *)d, (void *)d, d, true, 0, 1, 8, 12, &err) == SM_EINVAL, "k 12 accepted");
    CHECK(!sm_cuda_gemv_fits(7, 8, 4096, d, d) && sm_cuda_gemv_fits(6, 8, 4096, d, d), "x rows beyond 48 KiB of shared memory");
    CHECK(sm_cuda_gemv_xwt(0, (void *)d, (void *)(d + 2), d, true, 0, 1, 8, 8, &err) == SM_EINVAL, "misaligned w accepted");
    CHECK(sm_cuda_gemv_xwt(0, (void *)d, (void *)d, d, false, 1.0f, 1, 8, 8, &err) == SM_EINVAL, "beta with bf16 y accepted");
    /* the MoE add: too many slot rows for shared memory, top_k past the limit, two columns a warp */
    sm_gemv_moe_add add = {.ys = (void *)d, .stride = 2048, .top_k = 8, .sorted_pos = (int *)d};
    CHECK(sm_cuda_gemv_moe_add_fits(2, 5120, 2048, (float *)d, &add, true) &&
              !sm_cuda_gemv_moe_add_fits(3, 5120, 2048, (float *)d, &add, true),
          "moe add: 3 rows of 2048 with top_k 8 need 132 KiB of shared memory");
    CHECK(!sm_cuda_gemv_moe_add_fits(1, 5120, 2048, (float *)(d + 4), &add, true), "moe add: misaligned residual accepted");
    CHECK(sm_cuda_gemv_norm_xwt(0, (float *)d, &add, (void *)d, 1e-6f, NULL, (void *)d, d, true, 0, 3, 5120, 2048, &err) ==
              SM_EINVAL && strstr(err.msg, "top_k 8") != NULL, "moe add over shared memory accepted: %s", err.msg);
    CHECK(sm_cuda_gemv_xwt_moe_add(0, (void *)d, (void *)d, (float *)d, &add, 1, 4096, 8, &err) == SM_EINVAL &&
              strstr(err.msg, "4096") != NULL, "moe add at two columns a warp accepted: %s", err.msg);
    add.top_k = SM_GEMV_MAX_TOP_K + 1;
    CHECK(!sm_cuda_gemv_moe_add_fits(1, 64, 64, (float *)d, &add, false), "top_k %d accepted", add.top_k);
    cudaFree(d);
}

int main(void) {
    gpu_test_require_device("test_gpu_gemv");
    test_shapes();
    test_norm_fused();
    test_moe_add();
    test_refusals();
    TEST_MAIN_END
}
