/* src/spec/verify.c — deciding which drafts the target keeps.
 *
 * Greedy: a draft survives while it equals the target's argmax. Sampling: the rejection rule
 * of Leviathan et al. (2023) / Chen et al. (2023), which makes every emitted token distributed
 * exactly as if it had been sampled from the target alone. */
#include "spec/spec.h"

int sm_verify_greedy(const float *logits, int vocab, const int *drafts, int n_draft, int *next) {
    int n = 0;
    while (n < n_draft) {
        int best = sm_argmax(logits + (long)n * vocab, vocab);
        if (best != drafts[n]) {
            *next = best; /* the target's correction */
            return n;
        }
        n++;
    }
    *next = sm_argmax(logits + (long)n_draft * vocab, vocab); /* bonus token */
    return n;
}

int sm_verify_sample(float *p, const float *q, int vocab, const int *drafts, int n_draft, sm_rng *rng, int *next) {
    for (int i = 0; i < n_draft; i++) {
        float *pi = p + (long)i * vocab;
        const float *qi = q + (long)i * vocab;
        int x = drafts[i];
        /* Accept with probability min(1, p(x)/q(x)); written as u*q < p so q(x) = 0 (a draft
         * q never proposes) cannot divide by zero. */
        double u = sm_rng_uniform(rng);
        if (u * qi[x] < pi[x]) continue;
        /* Rejected: draw from the part of p that q under-covers, max(0, p - q), normalised. */
        double mass = 0;
        for (int v = 0; v < vocab; v++) {
            float r = pi[v] - qi[v];
            pi[v] = r > 0 ? r : 0;
            mass += pi[v];
        }
        double u2 = sm_rng_uniform(rng);
        if (mass <= 0) {
            /* Only reachable through rounding (p == q everywhere rejects with probability 0):
             * fall back to the unfiltered p, which is now lost, so take x itself. */
            *next = x;
            return i;
        }
        for (int v = 0; v < vocab; v++) pi[v] = (float)(pi[v] / mass);
        *next = sm_sample_from_probs(pi, vocab, u2);
        return i;
    }
    *next = sm_sample_from_probs(p + (long)n_draft * vocab, vocab, sm_rng_uniform(rng));
    return n_draft;
}
