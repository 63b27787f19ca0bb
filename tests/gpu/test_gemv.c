/* kernels/gemv.h against a CPU double loop (double accumulation) on random BF16 inputs, outputs
 * poisoned with NaN first: rows 1..8, odd n, k from 8 to 8200 (k not a multiple of the 256 values
 * a warp reads per pass, so the tail guard runs; several passes past k 4096), fp32 out with beta
 * 0 and 1 (the residual add) and BF16 out. fp32: rel L2 < 1e-5 (summation order only); BF16: < 1e-2. Also the shapes the
 * launcher must refuse (rows 9, k % 8 != 0, misaligned w, beta with a BF16 y).
 * The norm-fused GEMV must equal sm_cuda_rmsnorm_f32 + sm_cuda_gemv_xwt bit for bit (y and h),
 * over row lengths that give the norm 1024 threads and fewer (partly idle last warp). */
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
                             {5, 300, 776}, {8, 1000, 2048}, {7, 13, 3072}, {4, 9, 6144}, {8, 64, 3072},
                             {8, 40, 4096}, {6, 33, 8200},
                             /* one row: a partial last block, and column counts around a block boundary */
                             {1, 77, 264}, {1, 512, 2048}, {1, 513, 1032}};
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

static void test_norm_fused(void) {
    uint64_t seed = 11;
    const int shapes[][3] = {{1, 128, 2048}, {2, 5120, 2048}, {3, 77, 264}, {8, 64, 2048}, {5, 40, 200}, {4, 9, 4096},
                             {1, 8, 8}, {1, 77, 264}};
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
        unsigned char *a = malloc(ny * 4), *b = malloc(ny * 4);
        CHECK_OK(sm_cuda_rmsnorm_f32(0, d_x, NULL, d_nw, NULL, h_chain, rows, k, eps, &err), &err);
        for (int beta = 0; beta <= 1; beta++) {
            gpu_test_cuda(cudaMemcpy(y_chain, d_y0, ny * 4, cudaMemcpyDeviceToDevice), "y0");
            gpu_test_cuda(cudaMemcpy(y_fused, d_y0, ny * 4, cudaMemcpyDeviceToDevice), "y0");
            gpu_test_poison(h_fused, nh * 2);
            CHECK_OK(sm_cuda_gemv_xwt(0, h_chain, d_w, y_chain, true, (float)beta, rows, n, k, &err), &err);
            CHECK_OK(sm_cuda_gemv_norm_xwt(0, d_x, d_nw, eps, beta ? NULL : h_fused, d_w, y_fused, true, (float)beta, rows,
                                           n, k, &err), &err);
            gpu_test_cuda(cudaMemcpy(a, y_chain, ny * 4, cudaMemcpyDeviceToHost), "y chain");
            gpu_test_cuda(cudaMemcpy(b, y_fused, ny * 4, cudaMemcpyDeviceToHost), "y fused");
            CHECK(!memcmp(a, b, ny * 4), "gemv_norm rows %d n %d k %d beta %d: fp32 y differs from rmsnorm + gemv", rows,
                  n, k, beta);
            if (!beta) {
                unsigned char *ha = malloc(nh * 2), *hb = malloc(nh * 2);
                gpu_test_cuda(cudaMemcpy(ha, h_chain, nh * 2, cudaMemcpyDeviceToHost), "h chain");
                gpu_test_cuda(cudaMemcpy(hb, h_fused, nh * 2, cudaMemcpyDeviceToHost), "h fused");
                CHECK(!memcmp(ha, hb, nh * 2), "gemv_norm rows %d k %d: h differs from rmsnorm_f32's", rows, k);
                free(ha); free(hb);
            }
        }
        gpu_test_poison(yb_fused, ny * 2);
        CHECK_OK(sm_cuda_gemv_xwt(0, h_chain, d_w, yb_chain, false, 0.0f, rows, n, k, &err), &err);
        CHECK_OK(sm_cuda_gemv_norm_xwt(0, d_x, d_nw, eps, NULL, d_w, yb_fused, false, 0.0f, rows, n, k, &err), &err);
        gpu_test_cuda(cudaMemcpy(a, yb_chain, ny * 2, cudaMemcpyDeviceToHost), "y chain");
        gpu_test_cuda(cudaMemcpy(b, yb_fused, ny * 2, cudaMemcpyDeviceToHost), "y fused");
        CHECK(!memcmp(a, b, ny * 2), "gemv_norm rows %d n %d k %d: bf16 y differs from rmsnorm + gemv", rows, n, k);
        /* and it is a GEMV at all: against the CPU loop on the chain's h */
        float *h = malloc(nh * 4), *ref = malloc(ny * 4), *got = malloc(ny * 4);
        gpu_test_download_bf16(h, h_chain, rows, k, k);
        cpu_xwt(h, w, y0, 0.0f, ref, rows, n, k);
        gpu_test_download_bf16(got, yb_fused, rows, n, n);
        double e = test_rel_l2(got, ref, ny);
        CHECK(e < 1e-2, "gemv_norm bf16 rows %d n %d k %d vs CPU: rel L2 %.3g", rows, n, k, e);
        free(h); free(ref); free(got); free(a); free(b);
        free(x); free(nw); free(w); free(y0);
        cudaFree(d_x); cudaFree(d_y0); cudaFree(d_nw); cudaFree(d_w); cudaFree(h_chain); cudaFree(h_fused);
        cudaFree(y_chain); cudaFree(y_fused); cudaFree(yb_chain); cudaFree(yb_fused);
    }
}

static void test_refusals(void) {
    sm_error err = {0};
    char *d = gpu_test_malloc(1 << 16);
    CHECK(sm_cuda_gemv_xwt(0, (void *)d, (void *)d, d, true, 0, 9, 8, 8, &err) == SM_EINVAL, "rows 9 accepted");
    CHECK(strstr(err.msg, "rows 9") != NULL, "message names the rows: %s", err.msg);
    CHECK(sm_cuda_gemv_xwt(0, (void *)d, (void *)d, d, true, 0, 1, 8, 12, &err) == SM_EINVAL, "k 12 accepted");
    CHECK(!sm_cuda_gemv_fits(1, 8, 24584, d, d) && sm_cuda_gemv_fits(1, 8, 24576, d, d),
          "one row: x beyond 48 KiB of shared memory");
    CHECK(sm_cuda_gemv_fits(8, 8, 16384, d, d) && sm_cuda_gemv_fits(2, 8, 16384, d, d),
          "2-8 rows read x from global memory: no shared-memory limit");
    CHECK(!sm_cuda_gemv_norm_fits(6, 8, 4096, d) && sm_cuda_gemv_norm_fits(5, 8, 4096, d),
          "norm-fused: the rows and the norm's partial sums beyond 48 KiB");
    CHECK(sm_cuda_gemv_xwt(0, (void *)d, (void *)(d + 2), d, true, 0, 1, 8, 8, &err) == SM_EINVAL, "misaligned w accepted");
    CHECK(sm_cuda_gemv_xwt(0, (void *)d, (void *)d, d, false, 1.0f, 1, 8, 8, &err) == SM_EINVAL, "beta with bf16 y accepted");
    cudaFree(d);
}

int main(void) {
    gpu_test_require_device("test_gpu_gemv");
    test_shapes();
    test_norm_fused();
    test_refusals();
    TEST_MAIN_END
}
