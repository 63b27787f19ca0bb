/* src/cuda/runner_cublaslt.c — the `cublaslt` MoE runner: cuBLASLt BF16 GEMMs (gate|up fused as
 * one [2F, H] weight, then down) with fp32 accumulation, and one SiLU·mul launch between them over
 * all assignments that also applies the routing weight (down is linear, so scaling its input row
 * scales its output row). Two ways to lay the GEMMs out:
 *  - grouped: one GEMM per active expert over its rows. Shapes are per expert, so this needs the
 *    expert offsets on the host (a sync per layer); each expert's weights are read once.
 *  - pointer-array batch: one batched GEMM per projection with one single-row problem per
 *    assignment, its expert's weights and its rows looked up in pointer tables that a kernel
 *    writes from the device offsets. Graph-capturable with routing that changes between replays,
 *    but an expert chosen by several rows is read once per row, so it is used up to
 *    ptr_max_assign assignments (few enough that repeats are rare) or without host offsets.
 * Heuristic results are cached per (m, n, k, batch, alignment). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cublasLt.h>

#include "cuda/cuda_check.h"
#include "cuda/moe_dev.h"
#include "cuda/runners_gpu.h"
#include "moe/runners/runners.h"
#include "moe_pointers.h"
#include "silu_mul.h"

#define LT_WORKSPACE_BYTES ((size_t)32 << 20)
#define LT_N_TABLES (SM_MOE_PTR_EXPERT_TABLES + SM_MOE_PTR_ROW_TABLES)

typedef struct lt_plan {
    int m, n, k;                              /* cuBLASLt's column-major view */
    int batch;                                /* pointer-array problems; 0: one plain GEMM */
    unsigned align;                           /* bytes every operand pointer is aligned to */
    cublasLtMatrixLayout_t a, b, c;
    cublasLtMatmulAlgo_t algo;
} lt_plan;

struct sm_runner {
    sm_moe_dev dev;
    cublasLtHandle_t lt;
    cublasLtMatmulDesc_t desc;                /* D = op(A)ᵀ·B, BF16 in/out, fp32 compute */
    cublasLtMatmulPreference_t pref;
    void *workspace;
    lt_plan *plans;
    int n_plans, cap_plans;
    sm_bf16_bits *gate_up_out;                /* [rows, 2fp] */
    sm_bf16_bits *act;                        /* [rows, fp] */
    const void **ptr_table;                   /* device [LT_N_TABLES][rows] (moe_pointers.h) */
    size_t gate_up_bytes, act_bytes, ptr_table_bytes;
    int ptr_max_assign;                       /* pointer-array batches up to here; 0: unsupported */
};

static void plan_free(lt_plan *p) {
    cublasLtMatrixLayoutDestroy(p->a);
    cublasLtMatrixLayoutDestroy(p->b);
    cublasLtMatrixLayoutDestroy(p->c);
}

static void lt_destroy(sm_runner *r) {
    if (!r) return;
    sm_moe_dev_release(&r->dev); /* synchronises the stream first */
    for (int i = 0; i < r->n_plans; i++) plan_free(&r->plans[i]);
    free(r->plans);
    if (r->pref) cublasLtMatmulPreferenceDestroy(r->pref);
    if (r->desc) cublasLtMatmulDescDestroy(r->desc);
    if (r->lt) cublasLtDestroy(r->lt);
    cudaFree(r->workspace);
    cudaFree(r->gate_up_out);
    cudaFree(r->act);
    cudaFree(r->ptr_table);
    free(r);
}

static sm_status lt_reserve(sm_runner *r, cudaStream_t stream, int n_assign, sm_error *err) {
    size_t rows = (size_t)(n_assign > 0 ? n_assign : 1);
    SM_TRY(sm_moe_dev_grow((void **)&r->gate_up_out, &r->gate_up_bytes, rows * 2 * r->dev.fp * sizeof(sm_bf16_bits),
                           stream, "cublaslt runner", err));
    SM_TRY(sm_moe_dev_grow((void **)&r->ptr_table, &r->ptr_table_bytes, rows * LT_N_TABLES * sizeof(void *), stream,
                           "cublaslt runner", err));
    return sm_moe_dev_grow((void **)&r->act, &r->act_bytes, rows * r->dev.fp * sizeof(sm_bf16_bits), stream,
                           "cublaslt runner", err);
}

static void probe_pointer_array(sm_runner *r);

static sm_status lt_create(const sm_moe_shape *shape, const sm_runner_opts *opts, sm_runner **out, sm_error *err) {
    sm_runner *r;
    SM_TRY(sm_calloc((void **)&r, 1, sizeof *r, "cublaslt runner", err));
    sm_status s = sm_moe_dev_init(&r->dev, "cublaslt", shape, err);
    cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    size_t ws = LT_WORKSPACE_BYTES;
    if (!s) s = sm_cublas_check(cublasLtCreate(&r->lt), err, "cublaslt runner: cublasLtCreate");
    if (!s) s = sm_cublas_check(cublasLtMatmulDescCreate(&r->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), err,
                                "cublaslt runner: creating the matmul descriptor");
    if (!s) s = sm_cublas_check(cublasLtMatmulDescSetAttribute(r->desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof trans_a),
                                err, "cublaslt runner: setting TRANSA");
    if (!s) s = sm_cublas_check(cublasLtMatmulDescSetAttribute(r->desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof trans_b),
                                err, "cublaslt runner: setting TRANSB");
    if (!s) s = sm_cublas_check(cublasLtMatmulPreferenceCreate(&r->pref), err, "cublaslt runner: creating a preference");
    if (!s) s = sm_cublas_check(cublasLtMatmulPreferenceSetAttribute(r->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws,
                                                                     sizeof ws), err, "cublaslt runner: setting the workspace size");
    if (!s) s = sm_cuda_check(cudaMalloc(&r->workspace, ws), err, "cublaslt runner: allocating %zu bytes of workspace", ws);
    if (!s && shape->max_rows > 0) s = lt_reserve(r, r->dev.stream, shape->max_rows * shape->top_k, err);
    if (!s) probe_pointer_array(r);
    if (s) {
        lt_destroy(r);
        return s;
    }
    *out = r;
    return SM_OK;
}

/* batch > 0: a pointer-array batch of that many matrices of this shape. */
static sm_status layout(cublasLtMatrixLayout_t *l, int rows, int cols, int ld, int batch, sm_error *err) {
    SM_TRY(sm_cublas_check(cublasLtMatrixLayoutCreate(l, CUDA_R_16BF, (uint64_t)rows, (uint64_t)cols, ld), err,
                           "cublaslt runner: layout %dx%d (ld %d)", rows, cols, ld));
    if (batch == 0) return SM_OK;
    const int32_t count = batch;
    const uint32_t mode = CUBLASLT_BATCH_MODE_POINTER_ARRAY;
    sm_status s = sm_cublas_check(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                                                  sizeof count), err,
                                  "cublaslt runner: batch of %d on layout %dx%d", batch, rows, cols);
    if (!s) s = sm_cublas_check(cublasLtMatrixLayoutSetAttribute(*l, CUBLASLT_MATRIX_LAYOUT_BATCH_MODE, &mode, sizeof mode),
                                err, "cublaslt runner: pointer-array batch mode on layout %dx%d", rows, cols);
    if (s) {
        cublasLtMatrixLayoutDestroy(*l);
        *l = NULL;
    }
    return s;
}

/* Largest power of two (<= 256) dividing every address: an expert's rows start at any multiple of
 * 16 bytes, and cuBLASLt's heuristic assumes 256-byte operands unless told otherwise. */
static unsigned alignment_of(const void *a, const void *b, const void *c) {
    uintptr_t bits = (uintptr_t)a | (uintptr_t)b | (uintptr_t)c | 256u;
    return (unsigned)(bits & (~bits + 1));
}

/* The cached plan for D[m×n] = op(A)[m×k] · B[k×n] (column-major), or a pointer-array batch of
 * `batch` of them, made on first use. */
static sm_status get_plan(sm_runner *r, int m, int n, int k, int batch, unsigned align, const lt_plan **out,
                          sm_error *err) {
    for (int i = 0; i < r->n_plans; i++) {
        const lt_plan *p = &r->plans[i];
        if (p->m == m && p->n == n && p->k == k && p->batch == batch && p->align == align) {
            *out = p;
            return SM_OK;
        }
    }
    if (r->n_plans == r->cap_plans) {
        int cap = r->cap_plans ? 2 * r->cap_plans : 16;
        lt_plan *grown = realloc(r->plans, (size_t)cap * sizeof *grown);
        if (!grown) return sm_fail(err, SM_ENOMEM, "cublaslt runner: out of memory for %d GEMM plans", cap);
        r->plans = grown;
        r->cap_plans = cap;
    }
    lt_plan p = {.m = m, .n = n, .k = k, .batch = batch, .align = align};
    const cublasLtMatmulPreferenceAttributes_t align_attrs[] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    uint32_t a32 = align;
    for (size_t i = 0; i < sizeof align_attrs / sizeof align_attrs[0]; i++)
        SM_TRY(sm_cublas_check(cublasLtMatmulPreferenceSetAttribute(r->pref, align_attrs[i], &a32, sizeof a32), err,
                               "cublaslt runner: setting operand alignment %u", align));
    /* A is stored k×m (a [m, k] row-major weight), B k×n (n rows of k), D m×n (n rows of m). */
    SM_TRY(layout(&p.a, k, m, k, batch, err));
    sm_status s = layout(&p.b, k, n, k, batch, err);
    if (!s) s = layout(&p.c, m, n, m, batch, err);
    cublasLtMatmulHeuristicResult_t h;
    int found = 0;
    if (!s) s = sm_cublas_check(cublasLtMatmulAlgoGetHeuristic(r->lt, r->desc, p.a, p.b, p.c, p.c, r->pref, 1, &h, &found),
                                err, "cublaslt runner: heuristic for m=%d n=%d k=%d batch=%d", m, n, k, batch);
    if (!s && found == 0)
        s = sm_fail(err, SM_EUNSUPPORTED, "cublaslt runner: no cuBLASLt algorithm for m=%d n=%d k=%d%s", m, n, k,
                    batch ? " as a pointer-array batch" : "");
    if (s) {
        plan_free(&p);
        return s;
    }
    p.algo = h.algo;
    r->plans[r->n_plans] = p;
    *out = &r->plans[r->n_plans++];
    return SM_OK;
}

/* C[rows, n_out] = X[rows, k] · Wᵀ with W [n_out, k], all row-major BF16. */
static sm_status gemm_xwt(sm_runner *r, cudaStream_t stream, const sm_bf16_bits *w, const sm_bf16_bits *x,
                          sm_bf16_bits *c, int rows, int n_out, int k, sm_error *err) {
    const lt_plan *p = NULL;
    SM_TRY(get_plan(r, n_out, rows, k, 0, alignment_of(w, x, c), &p, err));
    const float one = 1.0f, zero = 0.0f;
    return sm_cublas_check(cublasLtMatmul(r->lt, r->desc, &one, w, p->a, x, p->b, &zero, c, p->c, c, p->c, &p->algo,
                                          r->workspace, LT_WORKSPACE_BYTES, stream),
                           err, "cublaslt runner: GEMM rows=%d out=%d k=%d", rows, n_out, k);
}

/* One pointer-array batched GEMM over assignments: C[a] = X[a] · W[e(a)]ᵀ, single rows; the
 * tables hold the addresses of W[e(a)], X[a] and C[a]. Rows are 16-byte aligned (strides are
 * multiples of 8 elements), which is what the plan assumes. */
static sm_status gemm_batched(sm_runner *r, cudaStream_t stream, const void *const *w_table, const void *const *x_table,
                              void **c_table, int batch, int n_out, int k, sm_error *err) {
    const lt_plan *p = NULL;
    SM_TRY(get_plan(r, n_out, 1, k, batch, 16, &p, err));
    const float one = 1.0f, zero = 0.0f;
    return sm_cublas_check(cublasLtMatmul(r->lt, r->desc, &one, w_table, p->a, x_table, p->b, &zero, c_table, p->c,
                                          c_table, p->c, &p->algo, r->workspace, LT_WORKSPACE_BYTES, stream),
                           err, "cublaslt runner: pointer-array GEMM of %d rows, out=%d k=%d", batch, n_out, k);
}

static sm_status forward_pointer_array(sm_runner *r, cudaStream_t stream, const sm_moe_device_batch *b, sm_error *err) {
    const int n = b->n_assign, hp = r->dev.hp, fp = r->dev.fp;
    const size_t bf = sizeof(sm_bf16_bits);
    sm_moe_pointer_args a = {
        .expert_offsets = b->expert_offsets, .num_experts = r->dev.shape.num_experts, .n_assign = n,
        .expert_base = {r->dev.gate_up[b->layer], r->dev.down[b->layer]},
        .expert_bytes = {(size_t)2 * fp * hp * bf, (size_t)hp * fp * bf},
        .row_base = {b->x, r->gate_up_out, r->act, b->y},
        .row_bytes = {(size_t)hp * bf, (size_t)2 * fp * bf, (size_t)fp * bf, (size_t)hp * bf}};
    const void **t = r->ptr_table; /* tables: gate|up W, down W, x, gate|up out, act, y */
    SM_TRY(sm_cuda_moe_pointer_table(stream, &a, t, err));
    SM_TRY(gemm_batched(r, stream, t, t + 2 * n, (void **)(t + 3 * n), n, 2 * fp, hp, err));
    SM_TRY(sm_cuda_silu_mul(stream, r->gate_up_out, b->weight, r->act, n, fp, err));
    return gemm_batched(r, stream, t + n, t + 4 * n, (void **)(t + 5 * n), n, hp, fp, err);
}

/* Does cuBLASLt offer pointer-array batches for both projections? Asked once, at create, with a
 * one-token batch. Past E/2 assignments (but never below one token's top_k) repeats of an expert
 * get common enough that the grouped GEMMs read fewer bytes, when host offsets are there. */
static void probe_pointer_array(sm_runner *r) {
    const int hp = r->dev.hp, fp = r->dev.fp, top_k = r->dev.shape.top_k, E = r->dev.shape.num_experts;
    const lt_plan *p;
    sm_error ignored = {0};
    if (top_k < 1 || get_plan(r, 2 * fp, 1, hp, top_k, 16, &p, &ignored) || get_plan(r, hp, 1, fp, top_k, 16, &p, &ignored))
        return;
    r->ptr_max_assign = E / 2 > top_k ? E / 2 : top_k;
}

static sm_status lt_forward_device(sm_runner *r, cudaStream_t stream, const sm_moe_device_batch *b, sm_error *err) {
    SM_TRY(sm_moe_dev_check_batch(&r->dev, b, err));
    if (b->route) /* sm_runner_device_routes says false for this runner */
        return sm_fail(err, SM_EINVAL, "cublaslt runner: layer %d: route the batch before the runner (it takes no routing job)",
                       b->layer);
    if (b->n_assign == 0) return SM_OK;
    SM_TRY(lt_reserve(r, stream, b->n_assign, err));
    if (r->ptr_max_assign > 0 && (!b->expert_offsets_host || b->n_assign <= r->ptr_max_assign))
        return forward_pointer_array(r, stream, b, err);
    if (!b->expert_offsets_host)
        return sm_fail(err, SM_EUNSUPPORTED, "cublaslt runner: this cuBLASLt has no pointer-array batched GEMM for "
                       "BF16, so the runner needs the expert offsets on the host; use the `cuda` runner for "
                       "device-only routing");
    const int E = r->dev.shape.num_experts, hp = r->dev.hp, fp = r->dev.fp;
    const int *off = b->expert_offsets_host;
    const sm_bf16_bits *wgu = r->dev.gate_up[b->layer], *wdn = r->dev.down[b->layer];
    for (int e = 0; e < E; e++) {
        int n = off[e + 1] - off[e];
        if (n == 0) continue;
        SM_TRY(gemm_xwt(r, stream, wgu + (size_t)e * 2 * fp * hp, b->x + (size_t)off[e] * hp,
                        r->gate_up_out + (size_t)off[e] * 2 * fp, n, 2 * fp, hp, err));
    }
    SM_TRY(sm_cuda_silu_mul(stream, r->gate_up_out, b->weight, r->act, b->n_assign, fp, err));
    for (int e = 0; e < E; e++) {
        int n = off[e + 1] - off[e];
        if (n == 0) continue;
        SM_TRY(gemm_xwt(r, stream, wdn + (size_t)e * hp * fp, r->act + (size_t)off[e] * fp, b->y + (size_t)off[e] * hp,
                        n, hp, fp, err));
    }
    return SM_OK;
}

static sm_status lt_load_expert(sm_runner *r, int layer, int expert, const sm_expert_weights *w, sm_error *err) {
    return sm_moe_dev_load_expert(&r->dev, layer, expert, w, err);
}

static sm_status lt_forward(sm_runner *r, const sm_dispatch_out *in, sm_combine_in *out, sm_error *err) {
    return sm_moe_dev_host_forward(&r->dev, r, lt_forward_device, in, out, err);
}

static sm_status lt_reserve_entry(sm_runner *r, int n_assign, sm_error *err) {
    return lt_reserve(r, r->dev.stream, n_assign, err);
}

static sm_moe_dev *lt_dev(sm_runner *r) { return &r->dev; }

static int lt_device_routing_max_assign(sm_runner *r) { return r->ptr_max_assign; }

const sm_runner_backend sm_runner_cublaslt = {
    .name = "cublaslt",
    .description = "GPU BF16, cuBLASLt GEMMs per active expert",
    .weight_dtypes = SM_DTYPE_BIT(SM_DTYPE_F32) | SM_DTYPE_BIT(SM_DTYPE_BF16) | SM_DTYPE_BIT(SM_DTYPE_F16),
    .on_device = false, /* forward() takes host pointers; device pointers: cuda/moe_device.h */
    .create = lt_create,
    .load_expert = lt_load_expert,
    .forward = lt_forward,
    .destroy = lt_destroy,
};

const sm_runner_gpu_ops sm_runner_cublaslt_gpu = {
    .backend = &sm_runner_cublaslt,
    .reserve = lt_reserve_entry,
    .forward_device = lt_forward_device,
    .dev = lt_dev,
    .device_routing_max_assign = lt_device_routing_max_assign,
};
