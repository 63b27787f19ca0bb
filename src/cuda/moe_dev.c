/* src/cuda/moe_dev.c — see moe_dev.h. */
#include "cuda/moe_dev.h"

#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "core/dtype.h"
#include "cuda/cuda_check.h"
#include "fill_random.h"

sm_status sm_moe_dev_init(sm_moe_dev *d, const char *who, const sm_moe_shape *shape, sm_error *err) {
    memset(d, 0, sizeof *d);
    d->who = who;
    if (!shape || shape->num_layers <= 0 || shape->num_experts <= 0 || shape->hidden <= 0 || shape->ffn <= 0 ||
        shape->top_k <= 0 || shape->max_rows < 0)
        return sm_fail(err, SM_EINVAL, "%s runner: bad MoE shape (layers %d, experts %d, hidden %d, ffn %d, top_k %d)",
                       who, shape ? shape->num_layers : 0, shape ? shape->num_experts : 0, shape ? shape->hidden : 0,
                       shape ? shape->ffn : 0, shape ? shape->top_k : 0);
    d->shape = *shape;
    d->hp = sm_moe_device_stride(shape->hidden);
    d->fp = sm_moe_device_stride(shape->ffn);
    SM_TRY(sm_cuda_device_ready(err));
    SM_TRY(sm_cuda_check(cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking), err, "%s runner: creating its stream", who));
    size_t layers = (size_t)shape->num_layers;
    SM_TRY(sm_calloc((void **)&d->gate_up, layers, sizeof *d->gate_up, "GPU runner layer table", err));
    SM_TRY(sm_calloc((void **)&d->down, layers, sizeof *d->down, "GPU runner layer table", err));
    SM_TRY(sm_calloc((void **)&d->loaded, layers * (size_t)shape->num_experts, 1, "GPU runner expert table", err));
    return SM_OK;
}

void sm_moe_dev_release(sm_moe_dev *d) {
    if (d->stream) cudaStreamSynchronize(d->stream); /* nothing may still use what is freed below */
    for (int l = 0; d->gate_up && l < d->shape.num_layers; l++) {
        cudaFree(d->gate_up[l]);
        cudaFree(d->down[l]);
    }
    free(d->gate_up);
    free(d->down);
    free(d->loaded);
    cudaFree(d->d_x); cudaFree(d->d_y); cudaFree(d->d_weight); cudaFree(d->d_offsets);
    cudaFreeHost(d->h_x); cudaFreeHost(d->h_y); cudaFreeHost(d->h_weight); cudaFreeHost(d->h_offsets);
    free(d->h_stage);
    if (d->stream) cudaStreamDestroy(d->stream);
    memset(d, 0, sizeof *d);
}

static size_t expert_elems(const sm_moe_dev *d) { return (size_t)3 * d->fp * d->hp; } /* gate, up, down */

/* The layer's weight slabs, allocated (zeroed: the padding must stay zero) on first use. */
static sm_status layer_slabs(sm_moe_dev *d, int layer, sm_error *err) {
    if (d->gate_up[layer]) return SM_OK;
    size_t E = (size_t)d->shape.num_experts;
    size_t gu = E * 2 * d->fp * d->hp * sizeof(sm_bf16_bits), dn = E * d->hp * d->fp * sizeof(sm_bf16_bits);
    SM_TRY(sm_cuda_check(cudaMalloc((void **)&d->gate_up[layer], gu), err,
                         "%s runner: allocating %.1f MB of gate/up weights for layer %d", d->who, gu / 1e6, layer));
    SM_TRY(sm_cuda_check(cudaMalloc((void **)&d->down[layer], dn), err,
                         "%s runner: allocating %.1f MB of down weights for layer %d", d->who, dn / 1e6, layer));
    SM_TRY(sm_cuda_check(cudaMemsetAsync(d->gate_up[layer], 0, gu, d->stream), err, "%s runner: zeroing layer %d", d->who, layer));
    SM_TRY(sm_cuda_check(cudaMemsetAsync(d->down[layer], 0, dn, d->stream), err, "%s runner: zeroing layer %d", d->who, layer));
    return SM_OK;
}

/* rows x cols of src (dtype) into dst with row stride ld_dst, as BF16 (padding left as is). */
static void to_bf16_rows(sm_bf16_bits *dst, int ld_dst, const void *src, sm_dtype dtype, int rows, int cols,
                         float *row_f32) {
    size_t esz = sm_dtype_size(dtype);
    for (int r = 0; r < rows; r++) {
        const unsigned char *s = (const unsigned char *)src + (size_t)r * cols * esz;
        sm_bf16_bits *o = dst + (size_t)r * ld_dst;
        if (dtype == SM_DTYPE_BF16) {
            memcpy(o, s, (size_t)cols * 2); /* already BF16: copied bit for bit */
            continue;
        }
        sm_convert_to_f32(row_f32, s, dtype, (size_t)cols);
        for (int c = 0; c < cols; c++) o[c] = sm_f32_to_bf16(row_f32[c]);
    }
}

sm_status sm_moe_dev_load_expert(sm_moe_dev *d, int layer, int expert, const sm_expert_weights *w, sm_error *err) {
    const sm_moe_shape *s = &d->shape;
    if (layer < 0 || layer >= s->num_layers || expert < 0 || expert >= s->num_experts)
        return sm_fail(err, SM_EINTERNAL, "%s runner: expert (%d, %d) out of range (%d layers, %d experts)", d->who,
                       layer, expert, s->num_layers, s->num_experts);
    if (w->dtype != SM_DTYPE_F32 && w->dtype != SM_DTYPE_BF16 && w->dtype != SM_DTYPE_F16)
        return sm_fail(err, SM_EUNSUPPORTED, "%s runner: expert weights of dtype %s are not supported (f32, bf16, f16)",
                       d->who, sm_dtype_name(w->dtype));
    if (!w->gate || !w->up || !w->down)
        return sm_fail(err, SM_EINVAL, "%s runner: expert %d of layer %d has a missing projection", d->who, expert, layer);
    SM_TRY(layer_slabs(d, layer, err));
    if (!d->h_stage) {
        SM_TRY(sm_calloc((void **)&d->h_stage, expert_elems(d), sizeof(sm_bf16_bits), "GPU runner load staging", err));
    }
    float *row;
    int longest = s->hidden > s->ffn ? s->hidden : s->ffn;
    SM_TRY(sm_alloc((void **)&row, (size_t)longest * sizeof(float), "GPU runner load row", err));
    /* Staging layout = device layout of this expert: gate [fp][hp], up [fp][hp], then down [hp][fp]. */
    sm_bf16_bits *gu = d->h_stage, *dn = d->h_stage + (size_t)2 * d->fp * d->hp;
    to_bf16_rows(gu, d->hp, w->gate, w->dtype, s->ffn, s->hidden, row);
    to_bf16_rows(gu + (size_t)d->fp * d->hp, d->hp, w->up, w->dtype, s->ffn, s->hidden, row);
    to_bf16_rows(dn, d->fp, w->down, w->dtype, s->hidden, s->ffn, row);
    free(row);
    size_t gu_bytes = (size_t)2 * d->fp * d->hp * 2, dn_bytes = (size_t)d->hp * d->fp * 2;
    /* Synchronous copies: the staging buffer is reused by the next expert. */
    SM_TRY(sm_cuda_check(cudaStreamSynchronize(d->stream), err, "%s runner: before loading layer %d", d->who, layer));
    SM_TRY(sm_cuda_check(cudaMemcpy((char *)d->gate_up[layer] + (size_t)expert * gu_bytes, gu, gu_bytes, cudaMemcpyHostToDevice),
                         err, "%s runner: copying gate/up of expert %d of layer %d to the device", d->who, expert, layer));
    SM_TRY(sm_cuda_check(cudaMemcpy((char *)d->down[layer] + (size_t)expert * dn_bytes, dn, dn_bytes, cudaMemcpyHostToDevice),
                         err, "%s runner: copying down of expert %d of layer %d to the device", d->who, expert, layer));
    d->loaded[(size_t)layer * s->num_experts + expert] = 1;
    return SM_OK;
}

sm_status sm_moe_dev_random_layer(sm_moe_dev *d, int layer, uint64_t seed, float scale, sm_error *err) {
    if (layer < 0 || layer >= d->shape.num_layers)
        return sm_fail(err, SM_EINVAL, "%s runner: layer %d out of range (%d layers)", d->who, layer, d->shape.num_layers);
    if (d->hp != d->shape.hidden || d->fp != d->shape.ffn)
        return sm_fail(err, SM_EINVAL, "%s runner: random weights need hidden (%d) and ffn (%d) multiples of 8", d->who,
                       d->shape.hidden, d->shape.ffn);
    SM_TRY(layer_slabs(d, layer, err));
    size_t E = (size_t)d->shape.num_experts;
    SM_TRY(sm_cuda_fill_uniform_bf16(d->stream, d->gate_up[layer], E * 2 * d->fp * d->hp, seed, scale, err));
    SM_TRY(sm_cuda_fill_uniform_bf16(d->stream, d->down[layer], E * d->hp * d->fp, seed ^ 0x5eed5eedull, scale, err));
    SM_TRY(sm_cuda_check(cudaStreamSynchronize(d->stream), err, "%s runner: filling layer %d with random weights", d->who, layer));
    memset(d->loaded + (size_t)layer * E, 1, E);
    return SM_OK;
}

sm_status sm_moe_dev_check_batch(const sm_moe_dev *d, const sm_moe_device_batch *b, sm_error *err) {
    const sm_moe_shape *s = &d->shape;
    if (!b || b->layer < 0 || b->layer >= s->num_layers || b->n_assign < 0)
        return sm_fail(err, SM_EINVAL, "%s runner: bad batch (layer %d of %d, %d assignments)", d->who, b ? b->layer : -1,
                       s->num_layers, b ? b->n_assign : -1);
    if (b->n_assign == 0) return SM_OK;
    if (!b->expert_offsets || (!b->x && !b->route) || !b->weight || !b->y)
        return sm_fail(err, SM_EINVAL, "%s runner: batch for layer %d has a NULL device pointer", d->who, b->layer);
    if (b->route && (b->route->expert_offsets != b->expert_offsets || b->route->sorted_weight != b->weight ||
                     b->route->rows * b->route->top_k != b->n_assign))
        return sm_fail(err, SM_EINVAL,
                       "%s runner: the routing job of layer %d must write the batch's expert offsets and weights "
                       "(%d rows x top_k %d for %d assignments)",
                       d->who, b->layer, b->route->rows, b->route->top_k, b->n_assign);
    if (!d->gate_up[b->layer])
        return sm_fail(err, SM_EINTERNAL, "%s runner: no expert of layer %d was ever loaded", d->who, b->layer);
    const int *off = b->expert_offsets_host;
    if (!off) return SM_OK;
    if (off[0] != 0 || off[s->num_experts] != b->n_assign)
        return sm_fail(err, SM_EINVAL, "%s runner: expert offsets of layer %d span %d..%d, expected 0..%d", d->who,
                       b->layer, off[0], off[s->num_experts], b->n_assign);
    for (int e = 0; e < s->num_experts; e++) {
        if (off[e + 1] < off[e])
            return sm_fail(err, SM_EINVAL, "%s runner: expert offsets of layer %d decrease at expert %d", d->who, b->layer, e);
        if (off[e + 1] > off[e] && !d->loaded[(size_t)b->layer * s->num_experts + e])
            return sm_fail(err, SM_EINTERNAL, "%s runner: expert %d of layer %d was never loaded", d->who, e, b->layer);
    }
    return SM_OK;
}

sm_status sm_moe_dev_grow(void **buf, size_t *cap_bytes, size_t bytes, cudaStream_t stream, const char *what,
                          sm_error *err) {
    if (bytes <= *cap_bytes && *buf) return SM_OK;
    enum cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    SM_TRY(sm_cuda_check(cudaStreamIsCapturing(stream, &cap), err, "%s: querying capture state", what));
    if (cap != cudaStreamCaptureStatusNone)
        return sm_fail(err, SM_EINVAL, "%s: workspace must grow to %zu bytes during graph capture: call "
                       "sm_runner_device_reserve before capturing", what, bytes);
    SM_TRY(sm_cuda_check(cudaStreamSynchronize(stream), err, "%s: before growing the workspace", what));
    cudaFree(*buf);
    *buf = NULL;
    *cap_bytes = 0;
    SM_TRY(sm_cuda_check(cudaMalloc(buf, bytes), err, "%s: allocating %zu bytes of workspace", what, bytes));
    *cap_bytes = bytes;
    return SM_OK;
}

static sm_status grow_io(sm_moe_dev *d, int n_assign, sm_error *err) {
    if (n_assign <= d->io_cap) return SM_OK;
    long cap = d->io_cap ? d->io_cap : 64;
    while (cap < n_assign) cap *= 2;
    SM_TRY(sm_cuda_check(cudaStreamSynchronize(d->stream), err, "%s runner: before growing its buffers", d->who));
    cudaFree(d->d_x); cudaFree(d->d_y); cudaFree(d->d_weight);
    cudaFreeHost(d->h_x); cudaFreeHost(d->h_y); cudaFreeHost(d->h_weight);
    d->d_x = d->d_y = d->h_x = d->h_y = NULL;
    d->d_weight = d->h_weight = NULL;
    d->io_cap = 0;
    size_t rows = (size_t)cap * d->hp * sizeof(sm_bf16_bits), w = (size_t)cap * sizeof(float);
    const char *who = d->who;
    SM_TRY(sm_cuda_check(cudaMalloc((void **)&d->d_x, rows), err, "%s runner: device activations for %ld rows", who, cap));
    SM_TRY(sm_cuda_check(cudaMalloc((void **)&d->d_y, rows), err, "%s runner: device outputs for %ld rows", who, cap));
    SM_TRY(sm_cuda_check(cudaMalloc((void **)&d->d_weight, w), err, "%s runner: device routing weights", who));
    SM_TRY(sm_cuda_check(cudaMallocHost((void **)&d->h_x, rows), err, "%s runner: pinned activations", who));
    SM_TRY(sm_cuda_check(cudaMallocHost((void **)&d->h_y, rows), err, "%s runner: pinned outputs", who));
    SM_TRY(sm_cuda_check(cudaMallocHost((void **)&d->h_weight, w), err, "%s runner: pinned routing weights", who));
    if (!d->d_offsets) {
        size_t ob = (size_t)(d->shape.num_experts + 1) * sizeof(int);
        SM_TRY(sm_cuda_check(cudaMalloc((void **)&d->d_offsets, ob), err, "%s runner: device expert offsets", who));
        SM_TRY(sm_cuda_check(cudaMallocHost((void **)&d->h_offsets, ob), err, "%s runner: pinned expert offsets", who));
    }
    memset(d->h_x, 0, rows); /* padding columns stay zero from here on */
    d->io_cap = cap;
    return SM_OK;
}

sm_status sm_moe_dev_host_forward(sm_moe_dev *d, sm_runner *r, sm_moe_dev_forward_fn fn, const sm_dispatch_out *in,
                                  sm_combine_in *out, sm_error *err) {
    const sm_moe_shape *s = &d->shape;
    if (in->hidden != s->hidden || in->num_experts != s->num_experts)
        return sm_fail(err, SM_EINVAL, "%s runner: dispatch of hidden %d / %d experts, runner made for %d / %d", d->who,
                       in->hidden, in->num_experts, s->hidden, s->num_experts);
    int n = in->n_assign, H = s->hidden, E = s->num_experts;
    if (n == 0) return SM_OK;
    SM_TRY(grow_io(d, n, err));
    for (int a = 0; a < n; a++) {
        const float *xr = in->x + (size_t)a * H;
        sm_bf16_bits *o = d->h_x + (size_t)a * d->hp;
        for (int h = 0; h < H; h++) o[h] = sm_f32_to_bf16(xr[h]);
    }
    memcpy(d->h_weight, in->weight, (size_t)n * sizeof(float));
    memcpy(d->h_offsets, in->expert_offsets, (size_t)(E + 1) * sizeof(int));
    size_t rows = (size_t)n * d->hp * sizeof(sm_bf16_bits);
    const char *who = d->who;
    SM_TRY(sm_cuda_check(cudaMemcpyAsync(d->d_x, d->h_x, rows, cudaMemcpyHostToDevice, d->stream), err,
                         "%s runner: copying %d activation rows to the device", who, n));
    SM_TRY(sm_cuda_check(cudaMemcpyAsync(d->d_weight, d->h_weight, (size_t)n * sizeof(float), cudaMemcpyHostToDevice, d->stream),
                         err, "%s runner: copying routing weights to the device", who));
    SM_TRY(sm_cuda_check(cudaMemcpyAsync(d->d_offsets, d->h_offsets, (size_t)(E + 1) * sizeof(int), cudaMemcpyHostToDevice,
                                         d->stream), err, "%s runner: copying expert offsets to the device", who));
    sm_moe_device_batch b = {.layer = in->layer, .n_assign = n, .expert_offsets = d->d_offsets,
                             .expert_offsets_host = d->h_offsets, .x = d->d_x, .weight = d->d_weight, .y = d->d_y};
    SM_TRY(fn(r, d->stream, &b, err));
    SM_TRY(sm_cuda_check(cudaMemcpyAsync(d->h_y, d->d_y, rows, cudaMemcpyDeviceToHost, d->stream), err,
                         "%s runner: copying %d output rows to the host", who, n));
    SM_TRY(sm_cuda_check(cudaStreamSynchronize(d->stream), err, "%s runner: MoE layer %d on the device", who, in->layer));
    for (int a = 0; a < n; a++) {
        const sm_bf16_bits *yr = d->h_y + (size_t)a * d->hp;
        float *o = out->y + (size_t)a * H;
        for (int h = 0; h < H; h++) o[h] = sm_bf16_to_f32(yr[h]);
    }
    return SM_OK;
}
