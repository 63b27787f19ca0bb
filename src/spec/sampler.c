#include "spec/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void sm_rng_seed(sm_rng *rng, uint64_t seed) {
    for (int i = 0; i < 4; i++) rng->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t sm_rng_next(sm_rng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double sm_rng_uniform(sm_rng *rng) { return (double)(sm_rng_next(rng) >> 11) * 0x1.0p-53; }

float sm_rng_uniform_f32(sm_rng *rng) { return (float)(sm_rng_next(rng) >> 40) * (1.0f / 16777216.0f); }

int sm_argmax(const float *logits, int vocab) {
    int best = 0;
    for (int i = 1; i < vocab; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

typedef struct ranked { float p; int id; } ranked;

static int by_prob_desc(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id - y->id;
}

void sm_sampling_probs(const float *logits, int vocab, const sm_sampling *s, float *probs) {
    if (sm_sampling_is_greedy(s)) {
        memset(probs, 0, (size_t)vocab * sizeof(float));
        probs[sm_argmax(logits, vocab)] = 1.0f;
        return;
    }
    float max = logits[0];
    for (int i = 1; i < vocab; i++) max = logits[i] > max ? logits[i] : max;
    double sum = 0;
    for (int i = 0; i < vocab; i++) {
        probs[i] = expf((logits[i] - max) / s->temperature);
        sum += probs[i];
    }
    for (int i = 0; i < vocab; i++) probs[i] = (float)(probs[i] / sum);
    int keep_k = s->top_k > 0 && s->top_k < vocab ? s->top_k : vocab;
    if (keep_k == vocab && !(s->top_p > 0.0f && s->top_p < 1.0f)) return;

    /* Rank tokens once; keep the top-k, then the shortest prefix reaching top_p. */
    ranked *order = malloc((size_t)vocab * sizeof *order);
    if (!order) return; /* leave the unfiltered distribution rather than fail mid-step */
    for (int i = 0; i < vocab; i++) order[i] = (ranked){probs[i], i};
    qsort(order, (size_t)vocab, sizeof *order, by_prob_desc);
    int keep = keep_k;
    if (s->top_p > 0.0f && s->top_p < 1.0f) {
        double kept_mass = 0, total = 0;
        for (int i = 0; i < keep_k; i++) total += order[i].p;
        for (int i = 0; i < keep_k; i++) {
            kept_mass += order[i].p;
            if (kept_mass >= s->top_p * total) { keep = i + 1; break; }
        }
    }
    double kept = 0;
    for (int i = 0; i < keep; i++) kept += order[i].p;
    memset(probs, 0, (size_t)vocab * sizeof(float));
    for (int i = 0; i < keep; i++) probs[order[i].id] = (float)(order[i].p / kept);
    free(order);
}

int sm_sample_from_probs(const float *probs, int vocab, double u) {
    double cum = 0;
    int last_nonzero = 0;
    for (int i = 0; i < vocab; i++) {
        if (probs[i] <= 0) continue;
        last_nonzero = i;
        cum += probs[i];
        if (u < cum) return i;
    }
    return last_nonzero; /* u landed in the rounding gap at the top */
}
