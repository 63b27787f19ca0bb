/* Verification rules on synthetic distributions.
 *
 *  - Greedy keeps the longest prefix equal to the argmax and emits the correction / bonus.
 *  - Rejection sampling keeps the target's distribution: a two-token process (p1, p2(.|x1)) is
 *    drafted from a different (q1, q2(.|x1)) with k = 2; the joint distribution of the two
 *    emitted tokens passes a chi-square test against p1(x1) p2(x2|x1). The same test run on a
 *    deliberately broken rule (resample from p instead of max(0, p - q) after a rejection)
 *    must fail, so the test has the power to catch a wrong rule.
 *  - With a random draft, the acceptance rate of a position is sum_x min(p(x), q(x)). */
#include "spec/spec.h"
#include "test.h"

#define V 5

static void random_dist(sm_rng *rng, float *d, int n, double spike) {
    double s = 0;
    for (int i = 0; i < n; i++) {
        double u = sm_rng_uniform(rng);
        d[i] = (float)(u * u + 0.02); /* uneven, never zero */
        s += d[i];
    }
    int hot = (int)(sm_rng_uniform(rng) * n);
    d[hot] += (float)(spike * s);
    s += spike * s;
    for (int i = 0; i < n; i++) d[i] = (float)(d[i] / s);
}

/* A broken rule for the power check: after a rejection, sample from p itself. */
static int verify_broken(float *p, const float *q, int vocab, const int *drafts, int n_draft, sm_rng *rng, int *next) {
    for (int i = 0; i < n_draft; i++) {
        int x = drafts[i];
        if (sm_rng_uniform(rng) * q[(long)i * vocab + x] < p[(long)i * vocab + x]) continue;
        *next = sm_sample_from_probs(p + (long)i * vocab, vocab, sm_rng_uniform(rng));
        return i;
    }
    *next = sm_sample_from_probs(p + (long)n_draft * vocab, vocab, sm_rng_uniform(rng));
    return n_draft;
}

typedef int (*verify_fn)(float *, const float *, int, const int *, int, sm_rng *, int *);

typedef struct process {
    float p1[V], p2[V][V], p3[V]; /* target: first token, second given first, a bonus row */
    float q1[V], q2[V][V];        /* draft */
} process;

/* One speculative decode of two tokens with k = 2 (and a k = 1 round when the first draft is
 * rejected, as the engine's next step would do). */
static void decode_two(const process *pr, verify_fn verify, sm_rng *rng, int out[2]) {
    float p[3 * V], q[2 * V];
    int d[2], next;
    d[0] = sm_sample_from_probs(pr->q1, V, sm_rng_uniform(rng));
    d[1] = sm_sample_from_probs(pr->q2[d[0]], V, sm_rng_uniform(rng));
    memcpy(p, pr->p1, sizeof pr->p1);
    memcpy(p + V, pr->p2[d[0]], sizeof pr->p1);
    memcpy(p + 2 * V, pr->p3, sizeof pr->p3);
    memcpy(q, pr->q1, sizeof pr->q1);
    memcpy(q + V, pr->q2[d[0]], sizeof pr->q1);
    int n = verify(p, q, V, d, 2, rng, &next);
    if (n >= 2) { out[0] = d[0]; out[1] = d[1]; return; }
    if (n == 1) { out[0] = d[0]; out[1] = next; return; }
    out[0] = next;
    int d1 = sm_sample_from_probs(pr->q2[next], V, sm_rng_uniform(rng));
    memcpy(p, pr->p2[next], sizeof pr->p1);
    memcpy(p + V, pr->p3, sizeof pr->p3);
    int bonus;
    out[1] = verify(p, pr->q2[next], V, &d1, 1, rng, &bonus) == 1 ? d1 : bonus;
}

static double chi_square_joint(const process *pr, verify_fn verify, uint64_t seed, int n_samples) {
    static long counts[V][V];
    memset(counts, 0, sizeof counts);
    sm_rng rng;
    sm_rng_seed(&rng, seed);
    for (int s = 0; s < n_samples; s++) {
        int out[2];
        decode_two(pr, verify, &rng, out);
        counts[out[0]][out[1]]++;
    }
    double chi = 0;
    for (int a = 0; a < V; a++)
        for (int b = 0; b < V; b++) {
            double expect = (double)n_samples * pr->p1[a] * pr->p2[a][b];
            chi += (counts[a][b] - expect) * (counts[a][b] - expect) / expect;
        }
    return chi;
}

static void test_greedy(void) {
    /* rows' argmax: 2, 0, 4, 1 */
    float logits[4 * V] = {0, 1, 5, 2, 0, /**/ 9, 1, 5, 2, 0, /**/ 0, 1, 5, 2, 6, /**/ 0, 8, 5, 2, 6};
    int next;
    int all[3] = {2, 0, 4};
    CHECK(sm_verify_greedy(logits, V, all, 3, &next) == 3 && next == 1, "all accepted, bonus 1 (next=%d)", next);
    int second_wrong[3] = {2, 3, 4};
    CHECK(sm_verify_greedy(logits, V, second_wrong, 3, &next) == 1 && next == 0, "one accepted, correction 0 (next=%d)", next);
    int first_wrong[3] = {1, 0, 4};
    CHECK(sm_verify_greedy(logits, V, first_wrong, 3, &next) == 0 && next == 2, "none accepted, correction 2");
    CHECK(sm_verify_greedy(logits, V, NULL, 0, &next) == 0 && next == 2, "no drafts: plain decode");
}

/* A one-hot q (n-gram drafter) is accepted with probability p(x). */
static void test_acceptance_rate(void) {
    sm_rng gen;
    sm_rng_seed(&gen, 11);
    for (int trial = 0; trial < 6; trial++) {
        float p[2 * V], q[V];
        random_dist(&gen, p, V, trial * 0.5);
        random_dist(&gen, p + V, V, 0);
        if (trial == 5) { memset(q, 0, sizeof q); q[1] = 1; } /* deterministic draft */
        else random_dist(&gen, q, V, 1.0);
        double expect = 0;
        for (int i = 0; i < V; i++) expect += p[i] < q[i] ? p[i] : q[i];
        int n = 40000, accepted = 0;
        sm_rng rng;
        sm_rng_seed(&rng, 100 + trial);
        for (int s = 0; s < n; s++) {
            float pw[2 * V];
            memcpy(pw, p, sizeof pw);
            int d = sm_sample_from_probs(q, V, sm_rng_uniform(&rng)), next;
            accepted += sm_verify_sample(pw, q, V, &d, 1, &rng, &next);
        }
        double rate = (double)accepted / n, sigma = sqrt(expect * (1 - expect) / n);
        CHECK(fabs(rate - expect) < 4.5 * sigma + 1e-9, "trial %d: acceptance %.4f, sum min(p,q) = %.4f (sigma %.4f)",
              trial, rate, expect, sigma);
    }
}

int main(void) {
    test_greedy();
    test_acceptance_rate();

    sm_rng gen;
    sm_rng_seed(&gen, 2024);
    process pr;
    random_dist(&gen, pr.p1, V, 0.3);
    random_dist(&gen, pr.q1, V, 2.0);
    random_dist(&gen, pr.p3, V, 0);
    for (int a = 0; a < V; a++) {
        random_dist(&gen, pr.p2[a], V, 0.5);
        random_dist(&gen, pr.q2[a], V, 1.5);
    }
    /* df = 24; the 0.1% critical value is 51.2. */
    const double critical = 51.2;
    int n = 200000;
    double good = chi_square_joint(&pr, sm_verify_sample, 1, n);
    double good2 = chi_square_joint(&pr, sm_verify_sample, 2, n);
    double broken = chi_square_joint(&pr, verify_broken, 1, n);
    printf("chi-square (df 24): rejection rule %.1f / %.1f, broken rule %.1f\n", good, good2, broken);
    CHECK(good < critical && good2 < critical, "rejection sampling changed the distribution: chi2 %.1f, %.1f", good, good2);
    CHECK(broken > 10 * critical, "the test cannot tell a broken rule apart (chi2 %.1f)", broken);

    /* Identical draft and target: nothing is ever rejected. */
    sm_rng rng;
    sm_rng_seed(&rng, 5);
    int rejected = 0;
    for (int s = 0; s < 10000; s++) {
        float p[3 * V], q[2 * V];
        memcpy(p, pr.p1, sizeof pr.p1); memcpy(p + V, pr.p2[0], sizeof pr.p1); memcpy(p + 2 * V, pr.p3, sizeof pr.p3);
        memcpy(q, p, sizeof q);
        int d[2] = {sm_sample_from_probs(q, V, sm_rng_uniform(&rng)), sm_sample_from_probs(q + V, V, sm_rng_uniform(&rng))}, next;
        rejected += sm_verify_sample(p, q, V, d, 2, &rng, &next) != 2;
    }
    CHECK(rejected == 0, "q == p but %d drafts were rejected", rejected);
    TEST_MAIN_END
}
