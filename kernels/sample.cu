/* kernels/sample.cu — see sample.h.
 *
 * One block per row. The filtered distribution is built in place in the output row:
 *   1. max, exp and an fp64 sum, normalise (the host's arithmetic: fp32 exp argument, fp64 sum);
 *   2. top-k: radix select (three digit passes over the fp32 bit patterns, which order like the
 *      values since probabilities are >= 0) for the k-th largest value t_k; ties at t_k are cut
 *      by id with one ordered scan, only when more are tied than fit;
 *   3. top-p: the same radix select weighted by probability mass — in 2^-60 fixed point so the
 *      shared-memory atomics add exactly and the result does not depend on their order;
 *   4. renormalise over the kept set (fp64 sum).
 * Draws are an ordered fp64 prefix scan over tiles of the row, stopping at the tile that crosses u. */
#include "sample.h"

#include <climits>

#include "kernel_common.cuh"

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 2048; /* radix digits of 11 bits: passes over bits 31..22, 21..11, 10..0 */
constexpr int kBatch = 8;      /* independent loads in flight per thread in a pass over a row */
constexpr int kDrawItems = 16; /* elements per thread in a draw tile */
constexpr double kFixedOne = 1152921504606846976.0; /* 2^60 */

typedef unsigned long long u64;

/* One pass over a row: use(i, load(i)) for this thread's ids, kBatch coalesced loads issued
 * before any is used. One block streams a whole row, so its speed is the loads it keeps in
 * flight, not arithmetic. */
template <typename Load, typename Use> __device__ __forceinline__ void row_pass(int vocab, Load load, Use use) {
    for (int base = 0; base < vocab; base += kBatch * kThreads) {
        float v[kBatch];
#pragma unroll
        for (int j = 0; j < kBatch; j++) {
            const int i = base + j * kThreads + (int)threadIdx.x;
            v[j] = i < vocab ? load(i) : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < kBatch; j++) {
            const int i = base + j * kThreads + (int)threadIdx.x;
            if (i < vocab) use(i, v[j]);
        }
    }
}

__device__ __forceinline__ u64 fixed_mass(float p) { return (u64)__double2ll_rn((double)p * kFixedOne); }

/* Reductions over the block; every thread gets the result. Fixed order (butterfly, then warps in
 * order) so fp results are deterministic. `sh` holds kWarps values and may be reused right after. */
template <typename T> __device__ T warp_sum(T v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T> __device__ T block_sum(T v, T *sh) {
    v = warp_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    T t = sh[0];
    for (int w = 1; w < kWarps; w++) t += sh[w];
    return t;
}

__device__ float block_max(float v, float *sh) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    float t = sh[0];
    for (int w = 1; w < kWarps; w++) t = fmaxf(t, sh[w]);
    return t;
}

/* Exclusive prefix sum over threads in thread order; *total = the block's sum. */
template <typename T> __device__ T block_exclusive_scan(T v, T *sh, T *total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    T incl = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const T t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
    }
    T excl = __shfl_up_sync(0xffffffffu, incl, 1);
    if (lane == 0) excl = 0;
    __syncthreads();
    if (lane == 31) sh[warp] = incl;
    __syncthreads();
    if (warp == 0) { /* scan the warp totals in one warp */
        T w = sh[lane];
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const T t = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += t;
        }
        sh[lane] = w;
    }
    __syncthreads();
    *total = sh[kWarps - 1];
    return (warp ? sh[warp - 1] : (T)0) + excl;
}

/* First maximum (lowest id on ties), NaN skipped — sm_argmax's rule. */
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
    return bi < 0 || v > bv || (v == bv && i < bi);
}

struct Shared {
    u64 mass[kBins];
    unsigned count[kBins];
    double d[kWarps];
    u64 u[kWarps];
    float f[kWarps];
    int i[kWarps];
    int digit, found;
    u64 above_mass;
    int winner;
};

__device__ int block_argmax(const float *l, int vocab, Shared &sh) {
    float bv = 0;
    int bi = -1;
    row_pass(vocab, [&](int i) { return l[i]; }, [&](int i, float v) {
        if (!isnan(v) && better(v, i, bv, bi)) { bv = v; bi = i; }
    });
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (oi >= 0 && better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) { sh.f[warp] = bv; sh.i[warp] = bi; }
    __syncthreads();
    bv = sh.f[0];
    bi = sh.i[0];
    for (int w = 1; w < kWarps; w++)
        if (sh.i[w] >= 0 && better(sh.f[w], sh.i[w], bv, bi)) { bv = sh.f[w]; bi = sh.i[w]; }
    return bi < 0 ? 0 : bi;
}

/* The set a selection runs over: ids whose key is above `key`, or equal to it with id <= cut. */
struct KeptSet {
    uint32_t key;
    int cut;
    __device__ bool has(uint32_t k, int i) const { return k > key || (k == key && i <= cut); }
};

struct Selection {
    bool found;
    uint32_t key;      /* the selected value's bit pattern */
    u64 above;         /* weight of the set's elements strictly above it */
    unsigned eq_count; /* how many of the set's elements equal it */
};

/* The largest value t such that the weight of set elements >= t reaches `target`, where the
 * weight is the element count (by_mass false) or the fixed-point mass. Three radix passes; each
 * histograms the elements that share the digits chosen so far. Not found only when the whole
 * set weighs less than target. */
__device__ Selection radix_select(const float *row, int vocab, KeptSet set, bool by_mass, u64 target, uint32_t floor_key,
                                  Shared &sh) {
    uint32_t prefix = 0, mask = 0;
    u64 above = 0;
    unsigned eq_count = 0;
#pragma unroll 1
    for (int pass = 0; pass < 3; pass++) {
        const int shift = pass == 0 ? 22 : pass == 1 ? 11 : 0;
        const uint32_t digit_mask = pass == 0 ? 0x3ffu : 0x7ffu;
        for (int b = threadIdx.x; b < kBins; b += kThreads) { sh.mass[b] = 0; sh.count[b] = 0; }
        __syncthreads();
        row_pass(vocab, [&](int i) { return row[i]; }, [&](int i, float p) {
            const uint32_t k = __float_as_uint(p);
            if (k < floor_key || (k & mask) != prefix || !set.has(k, i)) return;
            const int b = (int)((k >> shift) & digit_mask);
            atomicAdd(&sh.count[b], 1u);
            if (by_mass) atomicAdd(&sh.mass[b], fixed_mass(p));
        });
        __syncthreads();
        /* Thread t owns bins kBins-1-2t and kBins-2-2t: scanning threads in order walks the bins
         * from the top, so the exclusive scan is the weight of the bins above. */
        const int b0 = kBins - 1 - 2 * (int)threadIdx.x, b1 = b0 - 1;
        const u64 w0 = by_mass ? sh.mass[b0] : (u64)sh.count[b0], w1 = by_mass ? sh.mass[b1] : (u64)sh.count[b1];
        u64 total_w;
        const u64 above_w = block_exclusive_scan<u64>(w0 + w1, sh.u, &total_w);
        if (threadIdx.x == 0) sh.found = 0;
        __syncthreads();
        if (above_w < target && above_w + w0 >= target) {
            sh.digit = b0; sh.above_mass = above_w; sh.found = 1;
        } else if (above_w + w0 < target && above_w + w0 + w1 >= target) {
            sh.digit = b1; sh.above_mass = above_w + w0; sh.found = 1;
        }
        __syncthreads();
        if (!sh.found) return Selection{false, 0, 0, 0};
        const int d = sh.digit;
        target -= sh.above_mass;
        above += sh.above_mass;
        eq_count = sh.count[d];
        prefix |= (uint32_t)d << shift;
        mask |= digit_mask << shift;
        __syncthreads(); /* the histograms are cleared by the next pass */
    }
    return Selection{true, prefix, above, eq_count};
}

/* The id of the n-th (1-based) element whose bit pattern is `key`, in id order; vocab - 1 when
 * there are fewer than n. Tiles of kThreads elements, a ballot count per warp. */
__device__ int nth_equal(const float *row, int vocab, uint32_t key, unsigned n, Shared &sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned base = 0;
    if (threadIdx.x == 0) sh.winner = vocab - 1;
    for (int tile = 0; tile < vocab; tile += kThreads) {
        const int i = tile + (int)threadIdx.x;
        const bool eq = i < vocab && __float_as_uint(row[i]) == key;
        const unsigned ballot = __ballot_sync(0xffffffffu, eq);
        __syncthreads();
        if (lane == 0) sh.i[warp] = __popc(ballot);
        __syncthreads();
        unsigned off = 0, tot = 0;
        for (int w = 0; w < kWarps; w++) {
            if (w == warp) off = tot;
            tot += (unsigned)sh.i[w];
        }
        if (eq && base + off + __popc(ballot & ((1u << lane) - 1u)) + 1 == n) sh.winner = i;
        base += tot;
        if (base >= n) break; /* uniform: every thread holds the same base */
    }
    __syncthreads();
    return sh.winner;
}

__global__ void __launch_bounds__(kThreads) probs_kernel(const float *__restrict__ logits, int vocab, float temperature,
                                                         int top_k, float top_p, float *__restrict__ probs) {
    __shared__ Shared sh;
    const float *l = logits + (size_t)blockIdx.x * vocab;
    float *out = probs + (size_t)blockIdx.x * vocab;
    if (temperature <= 0.0f) {
        const int best = block_argmax(l, vocab, sh);
        for (int i = threadIdx.x; i < vocab; i += kThreads) out[i] = i == best ? 1.0f : 0.0f;
        return;
    }
    float mx = -INFINITY;
    row_pass(vocab, [&](int i) { return l[i]; }, [&](int, float v) { mx = fmaxf(mx, v); });
    mx = block_max(mx, sh.f);
    /* The host's arithmetic: expf of an fp32 argument (CUDA's expf is within 2 ulp of glibc's;
     * fp64 exp would match more often but costs ~50 us per 151936-row on the FP64 units),
     * summed in fp64. Equal logits give equal probabilities on both, so ties stay ties. */
    double s = 0;
    row_pass(vocab, [&](int i) { return l[i]; }, [&](int i, float v) {
        const float e = expf((v - mx) / temperature);
        out[i] = e;
        s += (double)e;
    });
    s = block_sum<double>(s, sh.d);
    row_pass(vocab, [&](int i) { return out[i]; }, [&](int i, float v) { out[i] = (float)((double)v / s); });

    const int keep_k = top_k > 0 && top_k < vocab ? top_k : vocab;
    const bool use_p = top_p > 0.0f && top_p < 1.0f;
    if (keep_k == vocab && !use_p) return;
    __syncthreads(); /* the normalised row is read across threads from here on */

    KeptSet kept{0u, vocab - 1}; /* everything */
    if (keep_k < vocab) {
        const Selection k = radix_select(out, vocab, kept, false, (u64)keep_k, 0u, sh);
        if (k.found) {
            const unsigned need = (unsigned)((u64)keep_k - k.above); /* tied at t_k, lowest ids first */
            kept.key = k.key;
            kept.cut = need < k.eq_count ? nth_equal(out, vocab, k.key, need, sh) : vocab - 1;
        }
    }
    KeptSet final_set = kept;
    if (use_p) {
        u64 total = 0;
        row_pass(vocab, [&](int i) { return out[i]; }, [&](int i, float p) {
            if (kept.has(__float_as_uint(p), i)) total += fixed_mass(p);
        });
        total = block_sum<u64>(total, sh.u);
        u64 target = (u64)ceil((double)top_p * (double)total);
        if (target > total) target = total;
        if (target == 0) target = 1;
        /* The tokens from the cut on weigh more than total - target, and there are at most vocab
         * of them, so the cut value is above ((1 - top_p) total - 1) / vocab: lighter tokens
         * (most of a peaked distribution) are left out of the mass histograms, with a 2x margin. */
        const double floor_fixed = ((1.0 - (double)top_p) * (double)total - 1.0) / (2.0 * vocab);
        const uint32_t floor_key = floor_fixed > 0 ? __float_as_uint(__double2float_rd(floor_fixed / kFixedOne)) : 0u;
        const Selection m = radix_select(out, vocab, kept, true, target, floor_key, sh);
        if (m.found) {
            const u64 each = fixed_mass(__uint_as_float(m.key));
            const u64 rest = target - m.above;
            u64 need = each ? (rest + each - 1) / each : 1;
            if (need < 1) need = 1;
            final_set.key = m.key;
            final_set.cut = need < m.eq_count ? nth_equal(out, vocab, m.key, (unsigned)need, sh) : vocab - 1;
        }
    }
    double kept_sum = 0;
    row_pass(vocab, [&](int i) { return out[i]; }, [&](int i, float p) {
        const uint32_t k = __float_as_uint(p);
        if (kept.has(k, i) && final_set.has(k, i)) kept_sum += (double)p;
    });
    kept_sum = block_sum<double>(kept_sum, sh.d);
    row_pass(vocab, [&](int i) { return out[i]; }, [&](int i, float p) {
        const uint32_t k = __float_as_uint(p);
        out[i] = kept.has(k, i) && final_set.has(k, i) ? (float)((double)p / kept_sum) : 0.0f;
    });
}

/* Row views for draws. */
struct ProbsRow {
    const float *p;
    __device__ float operator()(int i) const { return p[i]; }
};

/* normalise(max(0, p - q)) with the host's roundings: fp32 difference, fp64 division by the mass. */
struct ResidualRow {
    const float *p, *q;
    int onehot; /* q == NULL: q is one-hot here */
    double mass;
    __device__ float raw(int i) const {
        const float qv = q ? q[i] : (i == onehot ? 1.0f : 0.0f);
        const float r = p[i] - qv;
        return r > 0 ? r : 0.0f;
    }
    __device__ float operator()(int i) const { return (float)((double)raw(i) / mass); }
};

/* sm_sample_from_probs: the first i with p_i > 0 whose fp64 cumulative sum exceeds u; else the
 * last i with p_i > 0 (0 if none). A tile is kThreads * kDrawItems ids; warp w owns the
 * contiguous stretch [w * 32 * kDrawItems, (w + 1) * 32 * kDrawItems) of it, read in coalesced
 * rows of 32. Warp totals are scanned across the block; only warps whose stretch reaches past u
 * walk their rows with warp scans to find the first crossing. */
template <typename Row> __device__ int draw_row(const Row &row, int vocab, double u, Shared &sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    double base = 0;
    int last_nonzero = -1;
    for (int tile = 0; tile < vocab; tile += kThreads * kDrawItems) {
        const int first = tile + warp * 32 * kDrawItems + lane;
        float v[kDrawItems];
        double lane_sum = 0;
#pragma unroll
        for (int j = 0; j < kDrawItems; j++) {
            const int i = first + 32 * j;
            v[j] = i < vocab ? row(i) : 0.0f;
            if (v[j] > 0) { lane_sum += (double)v[j]; last_nonzero = i; } else v[j] = 0.0f;
        }
        const double warp_total = warp_sum(lane_sum);
        double tile_total;
        /* lane 0 carries its warp's total into the scan, the other lanes 0 */
        const double warp_before = __shfl_sync(0xffffffffu, block_exclusive_scan<double>(lane ? 0.0 : warp_total, sh.d, &tile_total), 0);
        int hit = INT_MAX;
        if (u < base + warp_before + warp_total) {
            double run = base + warp_before;
#pragma unroll
            for (int j = 0; j < kDrawItems; j++) {
                double incl = (double)v[j];
#pragma unroll
                for (int o = 1; o < 32; o <<= 1) {
                    const double t = __shfl_up_sync(0xffffffffu, incl, o);
                    if (lane >= o) incl += t;
                }
                const unsigned crossed = __ballot_sync(0xffffffffu, v[j] > 0 && u < run + incl);
                if (crossed) { hit = first - lane + 32 * j + __ffs(crossed) - 1; break; }
                run += __shfl_sync(0xffffffffu, incl, 31);
            }
        }
        if (threadIdx.x == 0) sh.winner = INT_MAX;
        if (__syncthreads_or(hit != INT_MAX)) {
            if (hit != INT_MAX) atomicMin(&sh.winner, hit); /* the first crossing: min is order-free */
            __syncthreads();
            return sh.winner;
        }
        base += tile_total;
    }
    /* u beyond the rounded total: the last nonzero entry (0 when there is none) */
    if (threadIdx.x == 0) sh.winner = -1;
    __syncthreads();
    if (last_nonzero >= 0) atomicMax(&sh.winner, last_nonzero);
    __syncthreads();
    return sh.winner < 0 ? 0 : sh.winner;
}

__global__ void __launch_bounds__(kThreads) sample_kernel(const float *__restrict__ probs, int vocab,
                                                          const float *__restrict__ uniforms, int *__restrict__ tokens) {
    __shared__ Shared sh;
    const int tok = draw_row(ProbsRow{probs + (size_t)blockIdx.x * vocab}, vocab, (double)uniforms[blockIdx.x], sh);
    if (threadIdx.x == 0) tokens[blockIdx.x] = tok;
}

__global__ void __launch_bounds__(kThreads)
    verify_kernel(const float *__restrict__ p, const float *__restrict__ q, const int *__restrict__ drafts,
                  const int *__restrict__ n_draft, const int *__restrict__ p_row, const float *__restrict__ uniforms,
                  int k_max, int vocab, int *__restrict__ n_accepted, int *__restrict__ next_token) {
    __shared__ Shared sh;
    __shared__ int s_rej, s_x, s_bad;
    const int s = blockIdx.x, nd = n_draft[s];
    const float *u = uniforms + (size_t)s * (k_max + 1);
    if (threadIdx.x == 0) {
        int bad = nd < 0 || nd > k_max, rej = nd, x = -1;
        for (int i = 0; !bad && i < nd; i++) {
            x = drafts[(size_t)s * k_max + i];
            if (x < 0 || x >= vocab) { bad = 1; break; }
            const double pv = p[((size_t)p_row[s] + i) * vocab + x];
            const double qv = q ? q[((size_t)s * k_max + i) * vocab + x] : 1.0;
            if (!((double)u[i] * qv < pv)) { rej = i; break; } /* accept with prob min(1, p/q) */
        }
        s_rej = rej; s_x = x; s_bad = bad;
    }
    __syncthreads();
    const int rej = s_rej, x = s_x;
    if (s_bad) {
        if (threadIdx.x == 0) { n_accepted[s] = -1; next_token[s] = -1; }
        return;
    }
    const double ud = (double)u[k_max];
    const float *pr = p + ((size_t)p_row[s] + rej) * vocab;
    int tok;
    if (rej == nd) {
        tok = draw_row(ProbsRow{pr}, vocab, ud, sh); /* bonus token */
    } else {
        ResidualRow res{pr, q ? q + ((size_t)s * k_max + rej) * vocab : nullptr, x, 0.0};
        double mass = 0;
        row_pass(vocab, [&](int i) { return res.raw(i); }, [&](int, float r) { mass += (double)r; });
        res.mass = block_sum<double>(mass, sh.d);
        /* zero residual mass happens only through rounding (p == q); the host keeps x then */
        tok = res.mass <= 0 ? x : draw_row(res, vocab, ud, sh);
    }
    if (threadIdx.x == 0) { n_accepted[s] = rej; next_token[s] = tok; }
}

} // namespace

extern "C" sm_status sm_cuda_sampling_probs(cudaStream_t stream, const float *logits, int rows, int vocab,
                                            float temperature, int top_k, float top_p, float *probs, sm_error *err) {
    NEED(rows >= 0 && vocab > 0, "sampling_probs: bad shape (rows %d, vocab %d)", rows, vocab);
    NEED(!isnan(temperature) && !isnan(top_p), "sampling_probs: temperature %g / top_p %g is NaN", (double)temperature,
         (double)top_p);
    if (!rows) return SM_OK;
    NEED(logits && probs, "sampling_probs: NULL logits or probs");
    NEED(logits != probs, "sampling_probs: probs may not alias logits");
    probs_kernel<<<rows, kThreads, 0, stream>>>(logits, vocab, temperature, top_k, top_p, probs);
    return sm_kernel_launched("sampling_probs", err);
}

extern "C" sm_status sm_cuda_sample_tokens(cudaStream_t stream, const float *probs, int rows, int vocab,
                                           const float *uniforms, int *tokens, sm_error *err) {
    NEED(rows >= 0 && vocab > 0, "sample_tokens: bad shape (rows %d, vocab %d)", rows, vocab);
    if (!rows) return SM_OK;
    NEED(probs && uniforms && tokens, "sample_tokens: NULL probs, uniforms or tokens");
    sample_kernel<<<rows, kThreads, 0, stream>>>(probs, vocab, uniforms, tokens);
    return sm_kernel_launched("sample_tokens", err);
}

extern "C" sm_status sm_cuda_spec_verify(cudaStream_t stream, const float *p, const float *q, const int *drafts,
                                         const int *n_draft, const int *p_row, const float *uniforms, int n_seqs,
                                         int k_max, int vocab, int *n_accepted, int *next_token, sm_error *err) {
    NEED(n_seqs >= 0 && k_max >= 0 && vocab > 0, "spec_verify: bad shape (n_seqs %d, k_max %d, vocab %d)", n_seqs,
         k_max, vocab);
    if (!n_seqs) return SM_OK;
    NEED(p && n_draft && p_row && uniforms && n_accepted && next_token && (drafts || k_max == 0),
         "spec_verify: NULL argument (p, n_draft, p_row, uniforms, n_accepted, next_token and drafts are required)");
    verify_kernel<<<n_seqs, kThreads, 0, stream>>>(p, q, drafts, n_draft, p_row, uniforms, k_max, vocab, n_accepted,
                                                   next_token);
    return sm_kernel_launched("spec_verify", err);
}
