/* kernels/attention.cu — see attention.h. One block per (row, head) — or per (row, K/V group)
 * and per context chunk, as the launch's sm_attn_plan says — with eight warps; each warp walks
 * its share of the cached positions ATTN_POS at a time with an online softmax (running max, sum,
 * and weighted V in registers: lane l holds dims l, l+32, ...), then the warps merge through
 * shared memory, and split chunks through the workspace. */
#include "attention.h"

#include "kernel_common.cuh"

#define ATTN_WARPS 8
#define ATTN_POS 4 /* cached positions a warp takes per step */
#define ATTN_PREFETCH_MAX 256 /* cached positions a block asks into L2 before its PDL wait */

namespace {

__global__ void kv_write_kernel(const float *__restrict__ k, const float *__restrict__ v, int stride,
                                __nv_bfloat16 *kc, __nv_bfloat16 *vc, const int *__restrict__ seq,
                                const int *__restrict__ pos, int rows, int kvd, int max_context) {
    const long total = (long)rows * kvd;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total; i += (long)gridDim.x * blockDim.x) {
        const int r = (int)(i / kvd), c = (int)(i % kvd);
        const size_t at = ((size_t)seq[r] * max_context + pos[r]) * kvd + c;
        kc[at] = __float2bfloat16_rn(k[(size_t)r * stride + c]);
        vc[at] = __float2bfloat16_rn(v[(size_t)r * stride + c]);
    }
}

/* The q/k norm + RoPE + K/V write fused in front of a one-row attention
 * (sm_cuda_attention_decode_qk): q is then the row's un-rotated q|k|v. */
struct qk_fuse {
    const __nv_bfloat16 *q_norm, *k_norm; /* both NULL: no norm */
    float eps, theta;
    __nv_bfloat16 *k_cache, *v_cache;     /* the new position's slot is written here */
};

/* Split-context decode (SPLIT): `splits` blocks per (row, unit), each over a chunk of at least
 * ATTN_SPLIT_MIN_CHUNK positions, so a few rows still fill the machine; each block leaves its
 * heads' unnormalised partials (max, sum, weighted V) in the workspace and the last block of the
 * (row, unit) to arrive merges them. The chunk follows the row's length on the device, so one captured
 * launch serves every length (a shorter row leaves the last blocks idle). Workspace:
 * [SM_ATTN_SPLIT_MAX_ROWS * heads] arrival counts (zero between launches: the merging block
 * resets its count), then [rows * heads][splits][hd + 2] partials. */
#define ATTN_SPLIT_MIN_CHUNK 64

/* The counts always take room for SM_ATTN_SPLIT_MAX_ROWS rows, so launches with different row
 * counts never find partials where their counts are. */
__host__ __device__ inline size_t split_counts_bytes(int heads) {
    return ((size_t)SM_ATTN_SPLIT_MAX_ROWS * heads * sizeof(int) + 255) / 256 * 256;
}

/* One block per (row, unit [, split]). A unit is one query head (G == 1, any group size), or the
 * G query heads of one K/V group (G > 1, G == heads / kv_heads): then each K/V row is read once
 * for all G heads instead of once per head, which is what bounds long contexts (every head of a
 * group re-read the same rows from L2: Qwen3-30B has 8 per group). Per head the arithmetic is
 * the same in both modes. */
template <int NPER, int G, bool FUSED, bool SPLIT>
__global__ void __launch_bounds__(ATTN_WARPS * 32)
    attention_kernel(const float *__restrict__ q, int q_stride, const __nv_bfloat16 *kc, const __nv_bfloat16 *vc,
                     const int *__restrict__ seq, const int *__restrict__ pos, __nv_bfloat16 *__restrict__ out, int heads,
                     int kv_heads, int hd, int max_context, float scale, qk_fuse fuse, void *split_ws, int splits) {
    __shared__ float s_m[ATTN_WARPS][G], s_l[ATTN_WARPS][G];
    __shared__ float s_acc[ATTN_WARPS][G][NPER * 32];
    __shared__ int s_last;
    const int S = SPLIT ? splits : 1;
    const int units = G == 1 ? heads : kv_heads;
    const int ru = blockIdx.x / S, split = blockIdx.x % S;
    const int r = ru / units, u = ru % units;
    /* FUSED: the new position's RoPE cosines and sines before the PDL wait (positions are the
     * step's row table, uploaded before its first kernel): the double pow and the cosf/sinf per
     * element sat on the step's critical path in every block (H200, batch 1: 11.7 us a layer
     * for this launch, measured by leaving it out). */
    __shared__ float f_cs[FUSED ? NPER * 32 : 1];
    __shared__ __nv_bfloat16 f_qn[FUSED ? NPER * 32 : 1], f_kn[FUSED ? NPER * 32 : 1]; /* the q/k norm weights, too */
    sm_pdl_trigger(); /* PDL: see kernel_common.cuh */
    if (FUSED) {
        sm_rope_cos_sin(f_cs, hd, pos[r], fuse.theta);
        if (fuse.q_norm)
            for (int i = threadIdx.x; i < hd; i += blockDim.x) {
                f_qn[i] = fuse.q_norm[i];
                f_kn[i] = fuse.k_norm[i];
            }
        __syncthreads();
    }
    const int h0 = G == 1 ? u : u * G, g = G == 1 ? u / (heads / kv_heads) : u;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int kvd = kv_heads * hd, n = pos[r] + 1;
    int t_begin = 0, t_end = n, active = 1;
    if (SPLIT) {
        const int chunk = max(ATTN_SPLIT_MIN_CHUNK, (n + S - 1) / S);
        active = (n + chunk - 1) / chunk;
        if (split >= active) return; /* block-uniform */
        t_begin = split * chunk;
        t_end = min(n, t_begin + chunk);
    }
    /* The cached K/V rows this block reads are asked into L2 before the PDL wait: no kernel of
     * the step writes them (the rows this step adds are written by the kernel just before, or by
     * this one, and L2 is where those writes land). They came from HBM after the wait. */
    {
        const int lines_per_row = (hd * 2 + 127) / 128, rows = min(t_end, t_begin + ATTN_PREFETCH_MAX) - t_begin;
        const size_t base = (size_t)seq[r] * max_context * kvd + (size_t)g * hd;
        for (int i = threadIdx.x; i < 2 * rows * lines_per_row; i += blockDim.x) {
            const int t = t_begin + i / (2 * lines_per_row), rest = i % (2 * lines_per_row);
            const __nv_bfloat16 *cache = rest < lines_per_row ? kc : vc;
            sm_prefetch_l2(cache + base + (size_t)t * kvd + (size_t)(rest % lines_per_row) * 64);
        }
    }
    sm_pdl_wait();
    const float *qrow = q + (size_t)r * q_stride;
    /* FUSED: the unit's q heads and its group's new K/V, made here exactly as qk_norm_rope_kv
     * makes them (the same device function); the newest position is read from shared memory,
     * since the block of the group that writes it to the cache may not have done so yet. */
    __shared__ float f_q[FUSED ? G : 1][FUSED ? NPER * 32 : 1], f_buf[FUSED ? ATTN_WARPS : 1][FUSED ? NPER * 32 : 1];
    __shared__ __nv_bfloat16 f_k[FUSED ? NPER * 32 : 1], f_v[FUSED ? NPER * 32 : 1];
    if (FUSED) {
        const int p = n - 1;
        for (int task = warp; task < G + 2; task += ATTN_WARPS) {
            if (task < G)
                sm_warp_head_norm_rope(qrow + (size_t)(h0 + task) * hd, f_q[task], fuse.q_norm ? f_qn : NULL, fuse.eps, hd,
                                       p, fuse.theta, f_buf[warp], NULL, nullptr, f_cs);
            else if (task == G) /* only the BF16 k is kept: its fp32 result may overwrite the scratch */
                sm_warp_head_norm_rope(qrow + (size_t)(heads + g) * hd, f_buf[warp], fuse.k_norm ? f_kn : NULL, fuse.eps,
                                       hd, p, fuse.theta, f_buf[warp], f_k, nullptr, f_cs);
            else
                for (int i = lane; i < hd; i += 32) f_v[i] = __float2bfloat16_rn(qrow[(size_t)(heads + kv_heads + g) * hd + i]);
        }
        __syncthreads();
        if ((G > 1 || h0 % (heads / kv_heads) == 0) && split == 0) { /* one block of the group writes the slot */
            const size_t at = ((size_t)seq[r] * max_context + p) * kvd + (size_t)g * hd;
            for (int i = threadIdx.x; i < hd; i += blockDim.x) {
                fuse.k_cache[at + i] = f_k[i];
                fuse.v_cache[at + i] = f_v[i];
            }
        }
    }
    float qv[G][NPER], acc[G][NPER], m[G], l[G];
#pragma unroll
    for (int j = 0; j < G; j++) {
        const float *qh = FUSED ? f_q[j] : qrow + (size_t)(h0 + j) * hd;
#pragma unroll
        for (int i = 0; i < NPER; i++) {
            const int d = lane + 32 * i;
            qv[j][i] = d < hd ? qh[d] * scale : 0.0f;
            acc[j][i] = 0.0f;
        }
        m[j] = -INFINITY;
        l[j] = 0.0f;
    }
    const size_t base = (size_t)seq[r] * max_context * kvd + (size_t)g * hd;
    /* ATTN_POS positions a warp per step, all their K and V loads issued before any math: one
     * position at a time left each warp waiting out a load latency per position (the step loop
     * of a 48-layer decode spent ~1 ms more at 160 positions than at 40 on an H200, 2026-11-23). */
    for (int t0 = t_begin + warp * ATTN_POS; t0 < t_end; t0 += ATTN_WARPS * ATTN_POS) {
        float kf[ATTN_POS][NPER], vf[ATTN_POS][NPER];
#pragma unroll
        for (int p = 0; p < ATTN_POS; p++) {
            const int t = t0 + p;
            const bool newest = FUSED && t == n - 1;
            const __nv_bfloat16 *kt = newest ? f_k : kc + base + (size_t)t * kvd;
            const __nv_bfloat16 *vt = newest ? f_v : vc + base + (size_t)t * kvd;
#pragma unroll
            for (int i = 0; i < NPER; i++) {
                const int d = lane + 32 * i;
                const bool ok = t < t_end && d < hd;
                kf[p][i] = ok ? __bfloat162float(kt[d]) : 0.0f;
                vf[p][i] = ok ? __bfloat162float(vt[d]) : 0.0f;
            }
        }
        /* The step's G x ATTN_POS scores, each summed over the warp's dims in one multi-sum
         * (31 shuffles for 32 scores, where a warp sum each took 160), after which each lane
         * holds one score (REP neighbouring lanes the same one) and takes its exp; the weights
         * then reach every lane by one shuffle each. Per head, the positions of a step are
         * REP * ATTN_POS consecutive lanes. The grouped kernel (G = 8) was bound by issuing those
         * shuffles and exps at its one CTA an SM: H200, Qwen3-30B shape at 2048 positions,
         * batch 1 4.44 -> 4.25 ms a step, batch 8 20.0 -> 17.8. */
        constexpr int ITEMS = G * ATTN_POS, REP = 32 / ITEMS, SPAN = REP * ATTN_POS;
        float part[ITEMS];
#pragma unroll
        for (int j = 0; j < G; j++)
#pragma unroll
            for (int p = 0; p < ATTN_POS; p++) {
                float dot = 0.0f;
#pragma unroll
                for (int i = 0; i < NPER; i++) dot += qv[j][i] * kf[p][i];
                part[j * ATTN_POS + p] = dot;
            }
        const int item = lane / REP, my_j = item / ATTN_POS;
        float sc = sm_warp_multi_sum(part);
        if (t0 + item % ATTN_POS >= t_end) sc = -INFINITY;
        float step_max = sc;
#pragma unroll
        for (int o = REP; o < SPAN; o <<= 1) step_max = fmaxf(step_max, __shfl_xor_sync(0xffffffffu, step_max, o));
        float m_new[G];
#pragma unroll
        for (int j = 0; j < G; j++) m_new[j] = fmaxf(m[j], __shfl_sync(0xffffffffu, step_max, j * SPAN));
        float my_m = m_new[0];
#pragma unroll
        for (int j = 1; j < G; j++) my_m = j == my_j ? m_new[j] : my_m;
        const float e = expf(sc - my_m); /* 0 past the last position; position t0 always counts */
        float step_sum = e;
#pragma unroll
        for (int o = REP; o < SPAN; o <<= 1) step_sum += __shfl_xor_sync(0xffffffffu, step_sum, o);
#pragma unroll
        for (int j = 0; j < G; j++) {
            const float corr = expf(m[j] - m_new[j]);
            l[j] = l[j] * corr + __shfl_sync(0xffffffffu, step_sum, j * SPAN);
#pragma unroll
            for (int i = 0; i < NPER; i++) acc[j][i] *= corr;
#pragma unroll
            for (int p = 0; p < ATTN_POS; p++) {
                const float w = __shfl_sync(0xffffffffu, e, (j * ATTN_POS + p) * REP);
#pragma unroll
                for (int i = 0; i < NPER; i++) acc[j][i] += w * vf[p][i];
            }
            m[j] = m_new[j];
        }
    }
#pragma unroll
    for (int j = 0; j < G; j++) {
        if (lane == 0) { s_m[warp][j] = m[j]; s_l[warp][j] = l[j]; }
#pragma unroll
        for (int i = 0; i < NPER; i++) s_acc[warp][j][lane + 32 * i] = acc[j][i];
    }
    __syncthreads();
    /* warp j < G finishes head h0 + j: the warps' partial softmaxes merged */
    const int j = warp;
    float v[NPER], M = -INFINITY, L = 0.0f;
    if (j < G) {
        float f[ATTN_WARPS];
        for (int w = 0; w < ATTN_WARPS; w++) M = fmaxf(M, s_m[w][j]);
        for (int w = 0; w < ATTN_WARPS; w++) {
            f[w] = s_m[w][j] == -INFINITY ? 0.0f : expf(s_m[w][j] - M); /* a warp that saw no position adds nothing */
            L += s_l[w][j] * f[w];
        }
#pragma unroll
        for (int i = 0; i < NPER; i++) {
            const int d = lane + 32 * i;
            v[i] = 0.0f;
            if (d < hd)
                for (int w = 0; w < ATTN_WARPS; w++) v[i] += s_acc[w][j][d] * f[w];
        }
    }
    if (SPLIT && active > 1) {
        int *count = static_cast<int *>(split_ws) + (size_t)r * heads + h0;
        float *parts = reinterpret_cast<float *>(static_cast<char *>(split_ws) + split_counts_bytes(heads));
        const size_t rh = (size_t)r * heads + h0 + j;
        if (j < G) {
            float *mine = parts + (rh * S + split) * (hd + 2);
            if (lane == 0) { mine[0] = M; mine[1] = L; }
#pragma unroll
            for (int i = 0; i < NPER; i++)
                if (lane + 32 * i < hd) mine[2 + lane + 32 * i] = v[i];
            __threadfence(); /* the partial is visible before the arrival is counted */
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            s_last = atomicAdd(count, 1) == active - 1;
            if (s_last) *count = 0; /* ready for the next launch: every other block has arrived */
        }
        __syncthreads();
        if (!s_last || j >= G) return;
        __threadfence();
        /* lane c holds chunk c's max and sum; the weighted V rows are read MERGE_BATCH chunks at a
         * time, loads first, so the merge waits out a few load latencies, not one per chunk */
        const float *all = parts + rh * S * (hd + 2);
        const float mc = lane < active ? __ldcg(all + (size_t)lane * (hd + 2)) : -INFINITY;
        const float lc = lane < active ? __ldcg(all + (size_t)lane * (hd + 2) + 1) : 0.0f;
        float Mg = mc;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) Mg = fmaxf(Mg, __shfl_xor_sync(0xffffffffu, Mg, o));
        const float fc = lane < active ? expf(mc - Mg) : 0.0f; /* every active chunk saw a position */
        L = sm_warp_sum(lc * fc);
#pragma unroll
        for (int i = 0; i < NPER; i++) v[i] = 0.0f;
        constexpr int MERGE_BATCH = 4;
        for (int c0 = 0; c0 < active; c0 += MERGE_BATCH) {
            float pv[MERGE_BATCH][NPER];
#pragma unroll
            for (int b = 0; b < MERGE_BATCH; b++)
#pragma unroll
                for (int i = 0; i < NPER; i++) {
                    const int d = lane + 32 * i;
                    pv[b][i] = c0 + b < active && d < hd ? __ldcg(all + (size_t)(c0 + b) * (hd + 2) + 2 + d) : 0.0f;
                }
#pragma unroll
            for (int b = 0; b < MERGE_BATCH; b++) {
                const float f = __shfl_sync(0xffffffffu, fc, (c0 + b) & 31); /* 0 past the last chunk */
#pragma unroll
                for (int i = 0; i < NPER; i++) v[i] += pv[b][i] * f;
            }
        }
    }
    if (j >= G) return;
    const float inv = 1.0f / L;
    __nv_bfloat16 *o = out + (size_t)r * heads * hd + (size_t)(h0 + j) * hd;
#pragma unroll
    for (int i = 0; i < NPER; i++) {
        const int d = lane + 32 * i;
        if (d < hd) o[d] = __float2bfloat16_rn(v[i] * inv);
    }
}

/* Query heads a block takes on this shape when grouped (1: the shape has no group kernel). */
int group_width(int heads, int kv_heads, int head_dim) {
    const int group = heads / kv_heads;
    return (group == 2 || group == 4 || group == 8) && head_dim <= 128 ? group : 1;
}

template <int NPER, int G, bool FUSED>
void launch_attention(cudaStream_t stream, int rows, int heads, const float *q, int q_stride, const __nv_bfloat16 *kc,
                      const __nv_bfloat16 *vc, const int *seq, const int *pos, __nv_bfloat16 *o, int kv_heads, int hd,
                      int max_context, float scale, const qk_fuse &f, void *split_ws, int splits) {
    const unsigned blocks = (unsigned)((long)rows * (G == 1 ? heads : kv_heads));
    if (splits > 1)
        sm_launch_pdl(attention_kernel<NPER, G, FUSED, true>, blocks * splits, ATTN_WARPS * 32, 0, stream, q, q_stride, kc,
                      vc, seq, pos, o, heads, kv_heads, hd, max_context, scale, f, split_ws, splits);
    else
        sm_launch_pdl(attention_kernel<NPER, G, FUSED, false>, blocks, ATTN_WARPS * 32, 0, stream, q, q_stride, kc, vc, seq,
                      pos, o, heads, kv_heads, hd, max_context, scale, f, split_ws, 1);
}

/* Whole groups per block when the plan says so and the shape has a group kernel (its G query
 * heads fit the registers: Qwen3-30B's 8 x 128, Mixtral's 4 x 128); one head per block otherwise. */
template <int NPER, bool FUSED>
void launch_group(cudaStream_t stream, int rows, int heads, const float *q, int q_stride, const __nv_bfloat16 *kc,
                  const __nv_bfloat16 *vc, const int *seq, const int *pos, __nv_bfloat16 *o, int kv_heads, int hd,
                  int max_context, float scale, const qk_fuse &f, void *split_ws, sm_attn_plan plan) {
    const int splits = plan.splits;
#define SM_ATTN_G(GG) \
    launch_attention<NPER, GG, FUSED>(stream, rows, heads, q, q_stride, kc, vc, seq, pos, o, kv_heads, hd, max_context, \
                                      scale, f, split_ws, splits)
    const int group = plan.grouped ? group_width(heads, kv_heads, hd) : 1;
    if constexpr (NPER <= 4) { /* group kernels only where group_width can choose them */
        if (group == 8) SM_ATTN_G(8);
        else if (group == 4) SM_ATTN_G(4);
        else if (group == 2) SM_ATTN_G(2);
        else SM_ATTN_G(1);
    } else {
        SM_ATTN_G(1);
    }
#undef SM_ATTN_G
}

template <bool FUSED>
void launch_hd(cudaStream_t stream, int rows, int heads, const float *q, int q_stride, const __nv_bfloat16 *kc,
               const __nv_bfloat16 *vc, const int *seq, const int *pos, __nv_bfloat16 *o, int kv_heads, int hd,
               int max_context, float scale, const qk_fuse &f, void *split_ws, sm_attn_plan plan) {
#define SM_ATTN_HD(N) \
    launch_group<N, FUSED>(stream, rows, heads, q, q_stride, kc, vc, seq, pos, o, kv_heads, hd, max_context, scale, f, \
                               split_ws, plan)
    if (hd <= 32) SM_ATTN_HD(1);
    else if (hd <= 64) SM_ATTN_HD(2);
    else if (hd <= 128) SM_ATTN_HD(4);
    else SM_ATTN_HD(8);
#undef SM_ATTN_HD
}

sm_status check_plan(int rows, sm_attn_plan plan, const void *split_ws, sm_error *err) {
    const int splits = plan.splits;
    NEED(splits == 1 || (splits > 1 && splits <= SM_ATTN_MAX_SPLITS && rows <= SM_ATTN_SPLIT_MAX_ROWS && split_ws),
         "attention: %d splits for %d rows (1, or 2..%d for up to %d rows with a workspace)", splits, rows,
         SM_ATTN_MAX_SPLITS, SM_ATTN_SPLIT_MAX_ROWS);
    return SM_OK;
}

} // namespace

extern "C" sm_status sm_cuda_kv_write(cudaStream_t stream, const float *k, const float *v, int stride,
                                      sm_bf16_bits *k_cache, sm_bf16_bits *v_cache, const int *seq, const int *pos,
                                      int rows, int kv_dim, int max_context, sm_error *err) {
    if (rows < 0 || kv_dim <= 0 || stride < kv_dim || max_context <= 0)
        return sm_fail(err, SM_EINVAL, "kv_write: bad shape (rows %d, kv_dim %d, stride %d)", rows, kv_dim, stride);
    if (!rows) return SM_OK;
    const long work = (long)rows * kv_dim, blocks = (work + 255) / 256;
    kv_write_kernel<<<(unsigned)(blocks < 65536 ? blocks : 65536), 256, 0, stream>>>(
        k, v, stride, (__nv_bfloat16 *)k_cache, (__nv_bfloat16 *)v_cache, seq, pos, rows, kv_dim, max_context);
    return sm_kernel_launched("kv_write", err);
}

extern "C" size_t sm_cuda_attention_split_bytes(int heads, int head_dim) {
    return split_counts_bytes(heads) +
           (size_t)SM_ATTN_SPLIT_MAX_ROWS * heads * SM_ATTN_MAX_SPLITS * (head_dim + 2) * sizeof(float);
}

extern "C" sm_attn_plan sm_cuda_attention_plan(int rows, int heads, int kv_heads, int head_dim, int max_len,
                                               int sm_count) {
    sm_attn_plan plan = {1, group_width(heads, kv_heads, head_dim) > 1 && max_len >= SM_ATTN_GROUP_MIN_LEN};
    const long blocks = (long)rows * (plan.grouped ? kv_heads : heads);
    while (plan.splits < SM_ATTN_MAX_SPLITS && rows <= SM_ATTN_SPLIT_MAX_ROWS &&
           plan.splits * ATTN_SPLIT_MIN_CHUNK < max_len && blocks * 2 * plan.splits <= 2L * sm_count)
        plan.splits *= 2;
    return plan;
}

extern "C" sm_status sm_cuda_attention(cudaStream_t stream, const float *q, int q_stride, const sm_bf16_bits *k_cache,
                                       const sm_bf16_bits *v_cache, const int *seq, const int *pos, sm_bf16_bits *out,
                                       int rows, int heads, int kv_heads, int head_dim, int max_context, float scale,
                                       void *split_ws, sm_attn_plan plan, sm_error *err) {
    NEED(rows >= 0 && heads > 0 && kv_heads > 0 && heads % kv_heads == 0 && head_dim > 0 && head_dim <= 256 &&
             q_stride >= heads * head_dim,
         "attention: bad shape (rows %d, heads %d, kv_heads %d, head_dim %d)", rows, heads, kv_heads, head_dim);
    SM_TRY(check_plan(rows, plan, split_ws, err));
    if (!rows) return SM_OK;
    launch_hd<false>(stream, rows, heads, q, q_stride, (cbf)k_cache, (cbf)v_cache, seq, pos, (__nv_bfloat16 *)out,
                     kv_heads, head_dim, max_context, scale, qk_fuse{}, split_ws, plan);
    return sm_kernel_launched("attention", err);
}

extern "C" sm_status sm_cuda_attention_decode_qk(cudaStream_t stream, const float *qkv, int rows, int heads,
                                                 int kv_heads, int head_dim, const sm_bf16_bits *q_norm,
                                                 const sm_bf16_bits *k_norm, float eps, float theta, const int *seq,
                                                 const int *pos, sm_bf16_bits *k_cache, sm_bf16_bits *v_cache,
                                                 int max_context, float scale, sm_bf16_bits *out, void *split_ws,
                                                 sm_attn_plan plan, sm_error *err) {
    NEED(rows >= 0 && heads > 0 && kv_heads > 0 && heads % kv_heads == 0 && head_dim > 0 && head_dim <= 256 &&
             head_dim % 2 == 0,
         "attention_decode_qk: bad shape (rows %d, heads %d, kv_heads %d, head_dim %d: even head_dim up to 256)", rows,
         heads, kv_heads, head_dim);
    NEED(!q_norm == !k_norm, "attention_decode_qk: q_norm and k_norm go together");
    NEED(qkv && seq && pos && k_cache && v_cache && out, "attention_decode_qk: NULL device pointer");
    SM_TRY(check_plan(rows, plan, split_ws, err));
    if (!rows) return SM_OK;
    const qk_fuse f = {(cbf)q_norm, (cbf)k_norm, eps, theta, (__nv_bfloat16 *)k_cache, (__nv_bfloat16 *)v_cache};
    launch_hd<true>(stream, rows, heads, qkv, (heads + 2 * kv_heads) * head_dim, (cbf)k_cache, (cbf)v_cache, seq, pos,
                    (__nv_bfloat16 *)out, kv_heads, head_dim, max_context, scale, f, split_ws, plan);
    return sm_kernel_launched("attention_decode_qk", err);
}
