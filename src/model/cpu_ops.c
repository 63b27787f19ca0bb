#include "model/cpu_ops.h"

#include <math.h>

float sm_cpu_dot(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    for (; i < n; i++) acc[i & 7] += a[i] * b[i];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

typedef struct matmul_job {
    float *y;
    const float *x, *w, *bias;
    int rows, in, out, block;
} matmul_job;

/* One task computes a block of output features for every row, so each weight row is read once
 * from memory per call however many rows (tokens) the batch holds. */
static void matmul_task(void *ctx, int task) {
    const matmul_job *j = ctx;
    int o0 = task * j->block, o1 = o0 + j->block < j->out ? o0 + j->block : j->out;
    for (int o = o0; o < o1; o++) {
        const float *wo = j->w + (long)o * j->in;
        float b = j->bias ? j->bias[o] : 0.0f;
        for (int r = 0; r < j->rows; r++) j->y[(long)r * j->out + o] = sm_cpu_dot(j->x + (long)r * j->in, wo, j->in) + b;
    }
}

void sm_cpu_matmul(sm_threadpool *tp, float *y, const float *x, const float *w, const float *bias,
                   int rows, int in, int out) {
    int threads = tp ? sm_threadpool_size(tp) : 1;
    /* Enough tasks for load balance, each big enough to amortise the hand-off. */
    int block = out / (threads * 4);
    if (block < 16) block = 16;
    matmul_job job = {y, x, w, bias, rows, in, out, block};
    int tasks = (out + block - 1) / block;
    if (!tp || tasks == 1 || (long)rows * in * out < 32768) {
        for (int t = 0; t < tasks; t++) matmul_task(&job, t);
        return;
    }
    sm_threadpool_run(tp, tasks, matmul_task, &job);
}

void sm_cpu_rmsnorm(float *out, const float *x, const float *weight, int rows, int dim, float eps) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (long)r * dim;
        float *yr = out + (long)r * dim;
        float ss = sm_cpu_dot(xr, xr, dim);
        float scale = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int i = 0; i < dim; i++) yr[i] = (xr[i] * scale) * weight[i];
    }
}

void sm_cpu_rope(float *x, const int *pos, int rows, int heads, int head_dim, float theta) {
    int half = head_dim / 2;
    for (int r = 0; r < rows; r++) {
        for (int i = 0; i < half; i++) {
            /* Same arithmetic as transformers: inv_freq in fp32, angle = pos * inv_freq in fp32. */
            float inv_freq = (float)(1.0 / pow((double)theta, (double)(2 * i) / (double)head_dim));
            float angle = (float)pos[r] * inv_freq;
            float c = cosf(angle), s = sinf(angle);
            for (int h = 0; h < heads; h++) {
                float *v = x + ((long)r * heads + h) * head_dim;
                float a = v[i], b = v[i + half];
                v[i] = a * c - b * s;
                v[i + half] = b * c + a * s;
            }
        }
    }
}

void sm_cpu_silu_mul(float *out, const float *gate, const float *up, int rows, int n) {
    for (long i = 0; i < (long)rows * n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void sm_cpu_softmax(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
    float sum = 0;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - max); sum += x[i]; }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
}
