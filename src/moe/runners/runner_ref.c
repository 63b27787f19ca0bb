/* src/moe/runners/runner_ref.c — the CPU fp32 reference runner: the correctness oracle every
 * other runner is compared with. Weights are converted to fp32 at load. */
#include <stdlib.h>
#include <string.h>

#include "model/cpu_ops.h"
#include "moe/runner.h"
#include "moe/runners/runners.h"

struct sm_runner {
    sm_moe_shape shape;
    sm_threadpool *threads;
    float **gate, **up, **down;   /* [layer * experts + expert] -> (ffn,hidden) / (hidden,ffn) */
    float *act;                   /* scratch: (rows, 2*ffn) */
    long act_cap;
};

static void ref_destroy(sm_runner *r) {
    if (!r) return;
    long n = (long)r->shape.num_layers * r->shape.num_experts;
    for (long i = 0; i < n; i++) { free(r->gate[i]); free(r->up[i]); free(r->down[i]); }
    free(r->gate); free(r->up); free(r->down); free(r->act);
    free(r);
}

static sm_status ref_create(const sm_moe_shape *shape, const sm_runner_opts *opts, sm_runner **out, sm_error *err) {
    sm_runner *r;
    SM_TRY(sm_calloc((void **)&r, 1, sizeof *r, "ref runner", err));
    r->shape = *shape;
    r->threads = opts ? opts->threads : NULL;
    long n = (long)shape->num_layers * shape->num_experts;
    if (sm_calloc((void **)&r->gate, (size_t)n, sizeof(float *), "ref runner tables", err) ||
        sm_calloc((void **)&r->up, (size_t)n, sizeof(float *), "ref runner tables", err) ||
        sm_calloc((void **)&r->down, (size_t)n, sizeof(float *), "ref runner tables", err)) {
        ref_destroy(r);
        return err->code;
    }
    *out = r;
    return SM_OK;
}

static sm_status to_f32(float **dst, const void *src, sm_dtype dtype, size_t n, sm_error *err) {
    SM_TRY(sm_alloc((void **)dst, n * sizeof(float), "expert weights", err));
    sm_convert_to_f32(*dst, src, dtype, n);
    return SM_OK;
}

static sm_status ref_load_expert(sm_runner *r, int layer, int expert, const sm_expert_weights *w, sm_error *err) {
    if (layer < 0 || layer >= r->shape.num_layers || expert < 0 || expert >= r->shape.num_experts)
        return sm_fail(err, SM_EINTERNAL, "ref runner: expert (%d, %d) out of range", layer, expert);
    if (w->dtype != SM_DTYPE_F32 && w->dtype != SM_DTYPE_BF16 && w->dtype != SM_DTYPE_F16)
        return sm_fail(err, SM_EUNSUPPORTED, "ref runner: weights of dtype %s are not supported", sm_dtype_name(w->dtype));
    long i = (long)layer * r->shape.num_experts + expert;
    size_t n = (size_t)r->shape.ffn * r->shape.hidden;
    SM_TRY(to_f32(&r->gate[i], w->gate, w->dtype, n, err));
    SM_TRY(to_f32(&r->up[i], w->up, w->dtype, n, err));
    SM_TRY(to_f32(&r->down[i], w->down, w->dtype, n, err));
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
        float *g = r->act, *u = r->act + (long)n * F;
        sm_cpu_matmul(r->threads, g, in->x + (long)a0 * H, r->gate[i], NULL, n, H, F);
        sm_cpu_matmul(r->threads, u, in->x + (long)a0 * H, r->up[i], NULL, n, H, F);
        sm_cpu_silu_mul(g, g, u, n, F);
        float *y = out->y + (long)a0 * H;
        sm_cpu_matmul(r->threads, y, g, r->down[i], NULL, n, F, H);
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
    .weight_dtypes = SM_DTYPE_BIT(SM_DTYPE_F32) | SM_DTYPE_BIT(SM_DTYPE_BF16) | SM_DTYPE_BIT(SM_DTYPE_F16),
    .on_device = false,
    .create = ref_create,
    .load_expert = ref_load_expert,
    .forward = ref_forward,
    .destroy = ref_destroy,
};
