/* src/cuda/gemm_lt.c — see gemm_lt.h. cuBLASLt is column-major: a row-major [n, k] weight is a
 * column-major k×n matrix, so D (n×rows, i.e. row-major [rows, n]) = op(A)ᵀ·B with A the weight
 * (transposed) and B the activations. */
#include "cuda/gemm_lt.h"

#include <stdint.h>
#include <stdlib.h>

#include <cublasLt.h>

#include "cuda/cuda_check.h"

#define GEMM_WORKSPACE_BYTES ((size_t)32 << 20)

typedef struct plan {
    int rows, n, k;
    bool y_f32, accumulate;
    unsigned align;
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
} plan;

struct sm_gemm_lt {
    cublasLtHandle_t lt;
    cublasLtMatmulDesc_t desc;
    cublasLtMatmulPreference_t pref;
    void *workspace;
    plan *plans;
    int n_plans, cap_plans;
};

size_t sm_gemm_lt_device_bytes(void) { return GEMM_WORKSPACE_BYTES; }

static void plan_free(plan *p) {
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->c) cublasLtMatrixLayoutDestroy(p->c);
}

void sm_gemm_lt_destroy(sm_gemm_lt *g) {
    if (!g) return;
    for (int i = 0; i < g->n_plans; i++) plan_free(&g->plans[i]);
    free(g->plans);
    if (g->pref) cublasLtMatmulPreferenceDestroy(g->pref);
    if (g->desc) cublasLtMatmulDescDestroy(g->desc);
    if (g->lt) cublasLtDestroy(g->lt);
    cudaFree(g->workspace);
    free(g);
}

sm_status sm_gemm_lt_create(sm_gemm_lt **out, sm_error *err) {
    sm_gemm_lt *g;
    SM_TRY(sm_calloc((void **)&g, 1, sizeof *g, "cuBLASLt GEMM context", err));
    cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    size_t ws = GEMM_WORKSPACE_BYTES;
    sm_status s = sm_cublas_check(cublasLtCreate(&g->lt), err, "dense GEMM: cublasLtCreate");
    if (!s) s = sm_cublas_check(cublasLtMatmulDescCreate(&g->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), err,
                                "dense GEMM: creating the matmul descriptor");
    if (!s) s = sm_cublas_check(cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), err,
                                "dense GEMM: setting TRANSA");
    if (!s) s = sm_cublas_check(cublasLtMatmulDescSetAttribute(g->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), err,
                                "dense GEMM: setting TRANSB");
    if (!s) s = sm_cublas_check(cublasLtMatmulPreferenceCreate(&g->pref), err, "dense GEMM: creating a preference");
    if (!s) s = sm_cublas_check(cublasLtMatmulPreferenceSetAttribute(g->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                                     sizeof ws), err, "dense GEMM: setting the workspace size");
    if (!s) s = sm_cuda_check(cudaMalloc(&g->workspace, ws), err, "dense GEMM: allocating %zu bytes of workspace", ws);
    if (s) {
        sm_gemm_lt_destroy(g);
        return s;
    }
    *out = g;
    return SM_OK;
}

/* Largest power of two (<= 256) dividing every address and leading dimension in bytes. */
static unsigned alignment_of(const void *x, const void *w, const void *y, size_t ld_bytes_a, size_t ld_bytes_c) {
    uintptr_t bits = (uintptr_t)x | (uintptr_t)w | (uintptr_t)y | (uintptr_t)ld_bytes_a | (uintptr_t)ld_bytes_c | 256u;
    return (unsigned)(bits & (~bits + 1));
}

static sm_status get_plan(sm_gemm_lt *g, int rows, int n, int k, bool y_f32, bool acc, unsigned align, const plan **out,
                          sm_error *err) {
    for (int i = 0; i < g->n_plans; i++) {
        const plan *p = &g->plans[i];
        if (p->rows == rows && p->n == n && p->k == k && p->y_f32 == y_f32 && p->accumulate == acc && p->align == align) {
            *out = p;
            return SM_OK;
        }
    }
    if (g->n_plans == g->cap_plans) {
        int cap = g->cap_plans ? 2 * g->cap_plans : 32;
        plan *grown = realloc(g->plans, (size_t)cap * sizeof *grown);
        if (!grown) return sm_fail(err, SM_ENOMEM, "dense GEMM: out of memory for %d plans", cap);
        g->plans = grown;
        g->cap_plans = cap;
    }
    plan p = {.rows = rows, .n = n, .k = k, .y_f32 = y_f32, .accumulate = acc, .align = align};
    const cublasLtMatmulPreferenceAttributes_t attrs[] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    uint32_t a32 = align;
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++)
        SM_TRY(sm_cublas_check(cublasLtMatmulPreferenceSetAttribute(g->pref, attrs[i], &a32, sizeof a32), err,
                               "dense GEMM: setting alignment %u", align));
    cudaDataType_t yt = y_f32 ? CUDA_R_32F : CUDA_R_16BF;
    sm_status s = sm_cublas_check(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, (uint64_t)k, (uint64_t)n, k), err,
                                  "dense GEMM: weight layout %dx%d", n, k);
    if (!s) s = sm_cublas_check(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, (uint64_t)k, (uint64_t)rows, k), err,
                                "dense GEMM: input layout %dx%d", rows, k);
    if (!s) s = sm_cublas_check(cublasLtMatrixLayoutCreate(&p.c, yt, (uint64_t)n, (uint64_t)rows, n), err,
                                "dense GEMM: output layout %dx%d", rows, n);
    cublasLtMatmulHeuristicResult_t h;
    int found = 0;
    if (!s) s = sm_cublas_check(cublasLtMatmulAlgoGetHeuristic(g->lt, g->desc, p.a, p.b, p.c, p.c, g->pref, 1, &h, &found),
                                err, "dense GEMM: heuristic for rows=%d n=%d k=%d", rows, n, k);
    if (!s && !found)
        s = sm_fail(err, SM_EUNSUPPORTED, "dense GEMM: cuBLASLt has no algorithm for rows=%d n=%d k=%d (%s output)", rows, n,
                    k, y_f32 ? "fp32" : "bf16");
    if (s) {
        plan_free(&p);
        return s;
    }
    p.algo = h.algo;
    g->plans[g->n_plans] = p;
    *out = &g->plans[g->n_plans++];
    return SM_OK;
}

sm_status sm_gemm_lt_xwt(sm_gemm_lt *g, cudaStream_t stream, const sm_bf16_bits *x, const sm_bf16_bits *w, void *y,
                         bool y_f32, float beta, int rows, int n, int k, sm_error *err) {
    if (rows <= 0) return SM_OK;
    if (n <= 0 || k <= 0 || !x || !w || !y)
        return sm_fail(err, SM_EINVAL, "dense GEMM: bad arguments (rows %d, n %d, k %d)", rows, n, k);
    const plan *p = NULL;
    unsigned align = alignment_of(x, w, y, (size_t)k * 2, (size_t)n * (y_f32 ? 4 : 2));
    SM_TRY(get_plan(g, rows, n, k, y_f32, beta != 0.0f, align, &p, err));
    const float one = 1.0f;
    return sm_cublas_check(cublasLtMatmul(g->lt, g->desc, &one, w, p->a, x, p->b, &beta, y, p->c, y, p->c, &p->algo,
                                          g->workspace, GEMM_WORKSPACE_BYTES, stream),
                           err, "dense GEMM: rows=%d n=%d k=%d", rows, n, k);
}
