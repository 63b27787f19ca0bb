/* src/moe/runners/runner_ref.c — the CPU fp32 reference runner: the correctness oracle every
 * other runner is compared with. Weights are stored in f32 (default) or bf16 (opts->weight_dtype,
 * to see what bf16 weights do to the numbers); the math is always f32, so bf16 experts are
 * widened to f32 scratch each time they are used. */
#include <stdlib.h>
#include <string.h>

#include "model/cpu_ops.h"
#include "moe/runner.h"
#include "moe/runners/runners.h"

struct sm_runner {
    sm_moe_shape shape;
    sm_threadpool *threads;
    sm_dtype store;               /* SM_DTYPE_F32 or SM_DTYPE_BF16 */
    void **gate, **up, **down;    /* [layer * experts + expert] -> (ffn,hidden) / (hidden,ffn) in `store` */
    float *act;                   /* scratch: (rows, 2*ffn) */
    long act_cap;
    float *wide;                  /* bf16 only: one expert's gate, up, down widened to f32 */
};

static void ref_destroy(sm_runner *r) {
    if (!r) return;
    long n = (long)r->shape.num_layers * r->shape.num_experts;
    for (long i = 0; i < n; i++) { free(r->gate[i]); free(r->up[i]); free(r->down[i]); }
    free(r->gate); free(r->up); free(r->down); free(r->act); free(r->wide);
    free(r);
}

static sm_status ref_create(const sm_moe_shape *shape, const sm_runner_opts *opts, sm_runner **out, sm_error *err) {
    sm_runner *r;
    SM_TRY(sm_calloc((void **)&r, 1, sizeof *r, "ref runner", err));
    r->shape = *shape;
    r->threads = opts ? opts->threads : NULL;
    r->store = opts ? opts->weight_dtype : SM_DTYPE_F32;
    if (r->store != SM_DTYPE_F32 && r->store != SM_DTYPE_BF16) {
        sm_dtype asked = r->store;
        free(r);
        return sm_fail(err, SM_EUNSUPPORTED, "ref runner: cannot store expert weights in %s (f32 or bf16)",
                       sm_dtype_name(asked));
    }
    long n = (long)shape->num_layers * shape->num_experts;
    if (sm_calloc((void **)&r->gate, (size_t)n, sizeof(void *), "ref runner tables", err) ||
        sm_calloc((void **)&r->up, (size_t)n, sizeof(void *), "ref runner tables", err) ||
        sm_calloc((void **)&r->down, (size_t)n, sizeof(void *), "ref runner tables", err) ||
        (r->store == SM_DTYPE_BF16 &&
         sm_alloc((void **)&r->wide, (size_t)3 * shape->ffn * shape->hidden * sizeof(float), "ref runner scratch", err))) {
        ref_destroy(r);
        return err->code;
    }
    *out = r;
    return SM_OK;
}

/* One weight matrix in the runner's storage dtype (bf16 rounds to nearest even, as torch does). */
static sm_status store_weights(const sm_runner *r, void **dst, const void *src, sm_dtype dtype, size_t n,
                               sm_error *err) {
    if (r->store == SM_DTYPE_F32) {
        SM_TRY(sm_alloc(dst, n * sizeof(float), "expert weights", err));
        sm_convert_to_f32(*dst, src, dtype, n);
        return SM_OK;
    }
    SM_TRY(sm_alloc(dst, n * sizeof(uint16_t), "expert weights", err));
    uint16_t *out = *dst;
    if (dtype == SM_DTYPE_BF16) {
        memcpy(out, src, n * sizeof(uint16_t));
        return SM_OK;
    }
    float chunk[256];
    for (size_t i = 0; i < n; i += 256) {
        size_t m = n - i < 256 ? n - i : 256;
        sm_convert_to_f32(chunk, (const char *)src + i * sm_dtype_size(dtype), dtype, m);
        for (size_t j = 0; j < m; j++) out[i + j] = sm_f32_to_bf16(chunk[j]);
    }
    return SM_OK;
}

/* The f32 view of a stored matrix: itself, or widened into dst. */
static const float *as_f32(const sm_runner *r, const void *w, float *dst, size_t n) {
    if (r->store == SM_DTYPE_F32) return w;
    sm_convert_to_f32(dst, w, SM_DTYPE_BF16, n);
    return dst;
}

static sm_status ref_load_expert(sm_runner *r, int layer, int expert, const sm_expert_weights *w, sm_error *err) {
    if (layer < 0 || layer >= r->shape.num_layers || expert < 0 || expert >= r->shape.num_experts)
        return sm_fail(err, SM_EINTERNAL, "ref runner: expert (%d, %d) out of range", layer, expert);
    if (w->dtype != SM_DTYPE_F32 && w->dtype != SM_DTYPE_BF16 && w->dtype != SM_DTYPE_F16)
        return sm_fail(err, SM_EUNSUPPORTED, "ref runner: weights of dtype %s are not supported", sm_dtype_name(w->dtype));
    long i = (long)layer * r->shape.num_experts + expert;
    size_t n = (size_t)r->shape.ffn * r->shape.hidden;
    SM_TRY(store_weights(r, &r->gate[i], w->gate, w->dtype, n, err));
    SM_TRY(store_weights(r, &r->up[i], w->up, w->dtype, n, err));
    SM_TRY(store_weights(r, &r->down[i], w->down, w->dtype, n, err));
    return SM_OK;
}

static sm_status ref_forward(sm_runner *r, const sm_dispatch_out *in, sm_combine_in *out, sm_error *err) {
    int H = r->shape.hidden, F = r->shape.ffn;
    long need = (long)in->n_assign * 2 * F;
    if (need > r->act_cap) {
        float *grown = realloc(r->act, (size_t)need * sizeof(float));
        if (!grown) return sm_fail(err, SM_ENOMEM, "ref runner: out of memory for %d assignments", in->n_assign);
        r->act = grown;
        r->act_cap = need;
    }
    for (int e = 0; e < in->num_experts; e++) {
        int a0 = in->expert_offsets[e], n = in->expert_offsets[e + 1] - a0;
        if (n == 0) continue;
        long i = (long)in->layer * r->shape.num_experts + e;
        if (!r->gate[i]) return sm_fail(err, SM_EINTERNAL, "ref runner: expert %d of layer %d was never loaded", e, in->layer);
        size_t FH = (size_t)F * H;
        const float *wg = as_f32(r, r->gate[i], r->wide, FH), *wu = as_f32(r, r->up[i], r->wide + FH, FH),
                    *wd = as_f32(r, r->down[i], r->wide + 2 * FH, FH);
        float *g = r->act, *u = r->act + (long)n * F;
        sm_cpu_matmul(r->threads, g, in->x + (long)a0 * H, wg, NULL, n, H, F);
        sm_cpu_matmul(r->threads, u, in->x + (long)a0 * H, wu, NULL, n, H, F);
        sm_cpu_silu_mul(g, g, u, n, F);
        float *y = out->y + (long)a0 * H;
        sm_cpu_matmul(r->threads, y, g, wd, NULL, n, F, H);
        for (int a = 0; a < n; a++) {
            float w = in->weight[a0 + a];
            for (int h = 0; h < H; h++) y[(long)a * H + h] *= w;
        }
    }
    return SM_OK;
}

const sm_runner_backend sm_runner_ref = {
    .name = "ref",
    .description = "CPU fp32 reference (correctness oracle)",
    /* Storage dtypes; checkpoints in f32, bf16 or f16 all load into either. */
    .weight_dtypes = SM_DTYPE_BIT(SM_DTYPE_F32) | SM_DTYPE_BIT(SM_DTYPE_BF16),
    .on_device = false,
    .create = ref_create,
    .load_expert = ref_load_expert,
    .forward = ref_forward,
    .destroy = ref_destroy,
};
