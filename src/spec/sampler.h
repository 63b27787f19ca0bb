/* src/spec/sampler.h — turning logits into tokens: greedy, temperature, top-k, top-p, with a
 * seeded generator so the same seed gives the same tokens. The same filtered distribution is
 * what rejection-sampling verification compares (target p against draft q). */
#ifndef SM_SAMPLER_H
#define SM_SAMPLER_H

#include <stdint.h>

typedef struct sm_sampling {
    float temperature;   /* 0 = greedy */
    float top_p;         /* 1 (or 0) = off */
    int top_k;           /* 0 = off */
} sm_sampling;

/* xoshiro256** seeded through splitmix64: small, fast, and reproducible everywhere. */
typedef struct sm_rng {
    uint64_t s[4];
} sm_rng;

void sm_rng_seed(sm_rng *rng, uint64_t seed);
uint64_t sm_rng_next(sm_rng *rng);
double sm_rng_uniform(sm_rng *rng); /* [0, 1) with 53 random bits */
float sm_rng_uniform_f32(sm_rng *rng); /* [0, 1) with 24 random bits (uniforms handed to a GPU) */

static inline int sm_sampling_is_greedy(const sm_sampling *s) { return s->temperature <= 0.0f; }

/* Highest logit; ties go to the lowest id (as torch.argmax). */
int sm_argmax(const float *logits, int vocab);

/* probs = the distribution sampling draws from: softmax(logits / T) restricted to the top-k
 * and then to the smallest set whose mass reaches top_p (ties by lower id), renormalised.
 * Greedy settings give a one-hot distribution at the argmax. */
void sm_sampling_probs(const float *logits, int vocab, const sm_sampling *s, float *probs);

/* Inverse-CDF draw from probs (sums to 1) with uniform u in [0, 1). */
int sm_sample_from_probs(const float *probs, int vocab, double u);

#endif
