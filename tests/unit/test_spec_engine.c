/* The speculative engine's contract beyond greedy equality:
 *  - bad input is a clear error naming the bad value (k out of range, no drafter, unknown
 *    drafter, a draft with another vocabulary, a prompt longer than the context, token ids
 *    outside the vocabulary, no free KV slot, bad self-drafter layers / experts);
 *  - per-step metrics add up (emitted tokens, accepted masks, counters, experts touched);
 *  - sampled speculative decoding keeps the target's distribution on a real (fixture) model:
 *    the 2nd and 3rd output tokens, whose drafts a different model proposed, pass a chi-square
 *    test against the exact target probabilities obtained by enumerating the forward. */
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "spec/spec.h"
#include "test.h"

#define CKPT "tests/fixtures/loader/ckpt/"

static sm_status create(sm_model *t, sm_spec_config c, sm_error *err) {
    sm_spec_engine *e = NULL;
    sm_status s = sm_spec_engine_create(t, &c, &e, err);
    sm_spec_engine_free(e);
    return s;
}

#define CHECK_FAILS(expr, errp, needle)                                                                     \
    do {                                                                                                     \
        (errp)->msg[0] = 0;                                                                                  \
        sm_status st_ = (expr);                                                                              \
        CHECK(st_ != SM_OK && strstr((errp)->msg, needle), "%s: expected an error with '%s', got %s: %s", #expr, \
              needle, sm_status_name(st_), (errp)->msg);                                                     \
    } while (0)

static void test_errors(sm_model *target, sm_model *draft) {
    sm_error err;
    CHECK_FAILS(create(target, (sm_spec_config){.drafter = "ngram", .num_speculative_tokens = 0}, &err), &err, "between 1 and 64");
    CHECK_FAILS(create(target, (sm_spec_config){.drafter = "ngram", .num_speculative_tokens = 65}, &err), &err, "got 65");
    CHECK_FAILS(create(target, (sm_spec_config){.drafter = "ngram", .num_speculative_tokens = -3}, &err), &err, "got -3");
    CHECK_FAILS(create(target, (sm_spec_config){.num_speculative_tokens = 2}, &err), &err, "no drafter");
    CHECK_FAILS(create(target, (sm_spec_config){.drafter = "medusa", .num_speculative_tokens = 2}, &err), &err,
                "unknown drafter 'medusa' (available: model, ngram, self");
    CHECK_FAILS(create(target, (sm_spec_config){.drafter = "model", .num_speculative_tokens = 2}, &err), &err, "draft model directory");
    CHECK_FAILS(create(target, (sm_spec_config){.drafter = "model", .num_speculative_tokens = 2,
                                                .draft_dir = "tests/fixtures/spec/llama_vocab24"}, &err),
                &err, "draft model tests/fixtures/spec/llama_vocab24 has a vocabulary of 24 tokens but target " CKPT "qwen3_moe_hub has 16");
    CHECK_FAILS(create(target, (sm_spec_config){.drafter = "model", .num_speculative_tokens = 2, .draft_dir = "no/such/dir"}, &err),
                &err, "loading draft model no/such/dir");
    CHECK_FAILS(create(target, (sm_spec_config){.drafter = "self", .num_speculative_tokens = 2, .self_top_k = 5}, &err), &err,
                "5 experts per token requested but target " CKPT "qwen3_moe_hub has 4 experts");
    int bad_layer[] = {0, 7};
    CHECK_FAILS(create(target, (sm_spec_config){.drafter = "self", .num_speculative_tokens = 2, .self_layers = bad_layer,
                                                .n_self_layers = 2}, &err), &err, "self_layers entry 1 is layer 7");
    int all_layers[] = {0, 1};
    CHECK_FAILS(create(target, (sm_spec_config){.drafter = "self", .num_speculative_tokens = 2, .self_skip_layers = all_layers,
                                                .n_self_skip_layers = 2}, &err), &err, "leaves no layer");
    CHECK_FAILS(create(target, (sm_spec_config){.drafter = "ngram", .num_speculative_tokens = 2, .ngram_min = 5, .ngram_max = 2}, &err),
                &err, "ngram_min (5) <= ngram_max (2)");
    CHECK_FAILS(create(target, (sm_spec_config){.sampling = {.temperature = -1}}, &err), &err, "temperature >= 0");
    CHECK_OK(create(target, (sm_spec_config){.drafter = "model", .num_speculative_tokens = 64, .draft_model = draft}, &err), &err);

    sm_spec_engine *e;
    CHECK_OK(sm_spec_engine_create(target, &(sm_spec_config){.drafter = "ngram", .num_speculative_tokens = 3}, &e, &err), &err);
    if (!e) return;
    int long_prompt[65] = {0};
    sm_spec_seq_params p = {.prompt = long_prompt, .n_prompt = 65, .max_new_tokens = 4};
    CHECK_FAILS(sm_spec_add_sequence(e, &p, NULL, &err), &err, "prompt of 65 tokens is longer than the context of 64 tokens");
    int bad_id[] = {1, 16};
    p = (sm_spec_seq_params){.prompt = bad_id, .n_prompt = 2, .max_new_tokens = 4};
    CHECK_FAILS(sm_spec_add_sequence(e, &p, NULL, &err), &err, "prompt token 1 is id 16");
    p = (sm_spec_seq_params){.prompt = long_prompt, .n_prompt = 0, .max_new_tokens = 4};
    CHECK_FAILS(sm_spec_add_sequence(e, &p, NULL, &err), &err, "empty");
    p = (sm_spec_seq_params){.prompt = long_prompt, .n_prompt = 3, .max_new_tokens = 0};
    CHECK_FAILS(sm_spec_add_sequence(e, &p, NULL, &err), &err, "max_new_tokens must be >= 1");
    /* Fill every slot, then one more. */
    p = (sm_spec_seq_params){.prompt = long_prompt, .n_prompt = 3, .max_new_tokens = 4};
    int64_t id = 0;
    for (int i = 0; i < sm_model_max_seqs(target); i++) CHECK_OK(sm_spec_add_sequence(e, &p, &id, &err), &err);
    CHECK_FAILS(sm_spec_add_sequence(e, &p, NULL, &err), &err, "KV slots are in use");
    CHECK_OK(sm_spec_remove_sequence(e, id, &err), &err);
    CHECK_OK(sm_spec_add_sequence(e, &p, NULL, &err), &err);
    CHECK_FAILS(sm_spec_remove_sequence(e, id, &err), &err, "no sequence");
    /* A full-context prompt finishes at once with reason "context", one token emitted. */
    sm_spec_engine_free(e);
    CHECK_OK(sm_spec_engine_create(target, &(sm_spec_config){.drafter = "ngram", .num_speculative_tokens = 3}, &e, &err), &err);
    p = (sm_spec_seq_params){.prompt = long_prompt, .n_prompt = 64, .max_new_tokens = 4};
    CHECK_OK(sm_spec_add_sequence(e, &p, &id, &err), &err);
    CHECK_OK(sm_spec_step(e, NULL, &err), &err);
    const int *toks;
    int n;
    sm_spec_finish f;
    CHECK_OK(sm_spec_seq_output(e, id, &toks, &n, &f, &err), &err);
    CHECK(n == 1 && f == SM_SPEC_FINISH_CONTEXT, "full context: %d tokens, finish %s", n, sm_spec_finish_name(f));
    sm_spec_engine_free(e);
}

/* Per-step metrics must add up to the counters and the outputs. */
static void test_metrics(sm_model *target, sm_model *draft) {
    sm_error err;
    sm_spec_engine *e;
    const int k = 3;
    CHECK_OK(sm_spec_engine_create(target, &(sm_spec_config){.drafter = "model", .num_speculative_tokens = k, .draft_model = draft,
                                                             .sampling = {.temperature = 1.0f}}, &e, &err), &err);
    if (!e) return;
    const int prompt[] = {3, 1, 4, 1, 5};
    int64_t ids[4];
    for (int i = 0; i < 4; i++) {
        sm_spec_seq_params p = {.prompt = prompt, .n_prompt = 5, .max_new_tokens = 10 + i, .seed = (uint64_t)i, .stop_ids = (int[]){15}, .n_stop_ids = i == 3};
        CHECK_OK(sm_spec_add_sequence(e, &p, &ids[i], &err), &err);
    }
    long emitted = 0, accepted = 0, proposed = 0, drafts = 0, per_pos[3] = {0};
    const sm_model_config *mc = sm_model_cfg(target);
    bool experts_ok = true;
    int steps = 0;
    while (sm_spec_active_count(e) > 0 && steps++ < 100) {
        const sm_spec_step_metrics *m;
        CHECK_OK(sm_spec_step(e, &m, &err), &err);
        CHECK(m->t_end_ns >= m->t_start_ns && m->draft_ns + m->verify_ns + m->overhead_ns == m->t_end_ns - m->t_start_ns,
              "step times do not add up");
        for (int i = 0; i < m->n_seqs; i++) {
            const sm_spec_seq_step *s = &m->seqs[i];
            emitted += s->num_emitted;
            accepted += s->num_accepted;
            proposed += s->num_proposed;
            drafts += s->num_proposed > 0;
            for (int j = 0; j < s->num_accepted; j++) per_pos[j]++;
            CHECK(s->accepted_mask == (s->num_accepted ? (1ull << s->num_accepted) - 1 : 0), "mask %llx for %d accepted",
                  (unsigned long long)s->accepted_mask, s->num_accepted);
            CHECK(s->num_emitted >= 1 && s->num_emitted <= s->num_accepted + 1, "emitted %d with %d accepted", s->num_emitted, s->num_accepted);
            CHECK(s->phase == SM_SPEC_PHASE_PREFILL ? s->num_proposed == 0 && !s->experts_touched_verify
                                                    : s->experts_touched_verify != NULL, "phase %d", s->phase);
            for (int l = 0; s->experts_touched_verify && l < m->num_layers; l++) {
                int v = s->experts_touched_verify[l], one = s->experts_touched_single[l];
                int max_v = (s->num_proposed + 1) * mc->num_experts_per_tok;
                if (one != mc->num_experts_per_tok || v < one || v > max_v || v > mc->num_experts) experts_ok = false;
            }
        }
        for (int l = 0; m->experts_touched_verify && l < m->num_layers; l++)
            if (m->experts_touched_verify[l] < m->experts_touched_single[l]) experts_ok = false;
    }
    CHECK(experts_ok, "experts touched out of bounds (single = top_k <= verify <= (k+1) top_k)");
    const sm_spec_counters *c = sm_spec_engine_counters(e);
    CHECK(c->num_emitted_tokens == emitted && c->num_accepted_tokens == accepted && c->num_draft_tokens == proposed &&
          c->num_drafts == drafts && drafts > 0, "counters disagree with the steps");
    for (int j = 0; j < k; j++) CHECK(c->accepted_per_pos[j] == per_pos[j], "accepted_per_pos[%d]", j);
    CHECK(fabs(sm_spec_accept_length(c) - (1.0 + (double)accepted / drafts)) < 1e-12, "accept_length");
    CHECK(fabs(sm_spec_acceptance_rate(c) - (double)accepted / proposed) < 1e-12, "acceptance_rate");
    long total = 0;
    for (int i = 0; i < 4; i++) {
        const int *t;
        int n;
        sm_spec_finish f;
        CHECK_OK(sm_spec_seq_output(e, ids[i], &t, &n, &f, &err), &err);
        total += n;
        if (i < 3) CHECK(n == 10 + i && f == SM_SPEC_FINISH_LENGTH, "seq %d: %d tokens, %s", i, n, sm_spec_finish_name(f));
        else CHECK((f == SM_SPEC_FINISH_STOP && t[n - 1] == 15) || (f == SM_SPEC_FINISH_LENGTH && n == 13), "stop id");
        for (int j = 0; i == 3 && j < n - 1; j++) CHECK(t[j] != 15, "token after a stop id");
    }
    CHECK(total == emitted, "outputs %ld vs emitted %ld", total, emitted);
    sm_spec_engine_free(e);
}

/* Exact target distribution of output tokens 2 and 3 by enumeration. */
static void exact_marginals(sm_model *m, const int *prompt, int n_prompt, const sm_sampling *s, double *p2, double *p3) {
    int V = sm_model_cfg(m)->vocab_size;
    float logits[16], p1[16], pa[16], pb[16];
    sm_row rows[32];
    sm_error err;
    for (int i = 0; i < n_prompt; i++) rows[i] = (sm_row){0, prompt[i], i, i == n_prompt - 1};
    sm_model_truncate(m, 0, 0, &err);
    sm_model_forward(m, rows, n_prompt, NULL, logits, &err);
    sm_sampling_probs(logits, V, s, p1);
    memset(p2, 0, V * sizeof(double));
    memset(p3, 0, V * sizeof(double));
    for (int a = 0; a < V; a++) {
        if (p1[a] == 0) continue;
        sm_row ra = {0, a, n_prompt, true};
        sm_model_truncate(m, 0, n_prompt, &err);
        sm_model_forward(m, &ra, 1, NULL, logits, &err);
        sm_sampling_probs(logits, V, s, pa);
        for (int b = 0; b < V; b++) {
            p2[b] += (double)p1[a] * pa[b];
            if (p1[a] * pa[b] == 0) continue;
            sm_row rb = {0, b, n_prompt + 1, true};
            sm_model_truncate(m, 0, n_prompt + 1, &err);
            sm_model_forward(m, &rb, 1, NULL, logits, &err);
            sm_sampling_probs(logits, V, s, pb);
            for (int c = 0; c < V; c++) p3[c] += (double)p1[a] * pa[b] * pb[c];
        }
    }
}

/* Chi-square with cells of expected count < 5 pooled; returns the statistic and its df. */
static double chi_square(const long *counts, const double *p, int V, long n, int *df) {
    double chi = 0, pool_e = 0, pool_o = 0;
    int cells = 0;
    for (int i = 0; i < V; i++) {
        double e = p[i] * n;
        if (e < 5) { pool_e += e; pool_o += counts[i]; continue; }
        chi += (counts[i] - e) * (counts[i] - e) / e;
        cells++;
    }
    if (pool_e >= 1) { chi += (pool_o - pool_e) * (pool_o - pool_e) / pool_e; cells++; }
    *df = cells - 1;
    return chi;
}

static void test_distribution(sm_model *target, sm_model *draft, sm_model *ref, sm_sampling s, const char *drafter) {
    sm_error err;
    /* Every id occurs in the prompt, so the n-gram drafter always finds a match. */
    const int prompt[] = {7, 3, 0, 1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15};
    const int V = 16;
    double p2[16], p3[16];
    exact_marginals(ref, prompt, 16, &s, p2, p3);
    sm_spec_engine *e;
    CHECK_OK(sm_spec_engine_create(target, &(sm_spec_config){.drafter = drafter, .num_speculative_tokens = 2,
                                                             .draft_model = draft, .self_top_k = 1, .sampling = s}, &e, &err), &err);
    if (!e) return;
    long c2[16] = {0}, c3[16] = {0};
    const long N = 6000;
    long added = 0, done = 0, drafted = 0;
    while (done < N) {
        while (added < N && sm_spec_free_slots(e) > 0) {
            /* 4 tokens: the step after prefill drafts k = 2 (tokens 2 and 3) */
            sm_spec_seq_params p = {.prompt = prompt, .n_prompt = 16, .max_new_tokens = 4, .seed = 1000 + (uint64_t)added};
            CHECK_OK(sm_spec_add_sequence(e, &p, NULL, &err), &err);
            added++;
        }
        const sm_spec_step_metrics *m;
        if (sm_spec_step(e, &m, &err)) { CHECK(0, "%s", err.msg); break; }
        for (int i = 0; i < m->n_seqs; i++) {
            const sm_spec_seq_step *st = &m->seqs[i];
            drafted += st->num_proposed;
            if (!st->finish) continue;
            const int *t;
            int n;
            sm_spec_seq_output(e, st->seq_id, &t, &n, NULL, &err);
            if (n >= 3) { c2[t[1]]++; c3[t[2]]++; }
            sm_spec_remove_sequence(e, st->seq_id, &err);
            done++;
        }
    }
    int df2, df3;
    double x2 = chi_square(c2, p2, V, N, &df2), x3 = chi_square(c3, p3, V, N, &df3);
    printf("%s T=%.1f top_k=%d: chi-square token 2: %.1f (df %d), token 3: %.1f (df %d); %ld drafts proposed\n", drafter,
           (double)s.temperature, s.top_k, x2, df2, x3, df3, drafted);
    /* 0.1% critical values of chi-square for df 1..15 */
    static const double crit[16] = {0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26, 32.91, 34.53, 36.12, 37.70};
    CHECK(df2 >= 1 && df2 <= 15 && x2 < crit[df2], "%s: token 2 distribution differs from the target's: chi2 %.1f df %d", drafter, x2, df2);
    CHECK(df3 >= 1 && df3 <= 15 && x3 < crit[df3], "%s: token 3 distribution differs from the target's: chi2 %.1f df %d", drafter, x3, df3);
    CHECK(drafted > N * 3 / 2, "%s: too few drafts (%ld) to test verification", drafter, drafted);
    sm_spec_engine_free(e);
}

/* argv[1]: the device of target, draft and reference ("cpu" by default; "cuda" is the GPU test
 * test_gpu_spec_engine, where sampling and the acceptance test run on the device). Without a
 * usable GPU that run is skipped (exit 77) unless SPECMOE_REQUIRE_GPU=1. */
int main(int argc, char **argv) {
    sm_error err = {0};
    const char *device = argc > 1 ? argv[1] : "cpu";
    sm_model_opts opts = {.n_threads = 1, .max_seqs = 8, .max_context = 64, .device = device};
    sm_model *target = NULL, *draft = NULL, *ref = NULL;
    if (strcmp(device, "cpu") && sm_model_load(CKPT "qwen3_moe_hub", &opts, &target, &err)) {
        const char *req = getenv("SPECMOE_REQUIRE_GPU");
        fprintf(stderr, "test_spec_engine on %s: %s: %s\n", device, req && req[0] == '1' ? "FAIL" : "SKIPPED", err.msg);
        return req && req[0] == '1' ? 1 : 77;
    }
    if (!target) CHECK_OK(sm_model_load(CKPT "qwen3_moe_hub", &opts, &target, &err), &err);
    CHECK_OK(sm_model_load(CKPT "mixtral_hub", &opts, &draft, &err), &err);
    if (!target || !draft) { TEST_MAIN_END }
    CHECK_OK(sm_model_fork(target, &(sm_model_opts){.n_threads = 1, .max_seqs = 1, .max_context = 64, .device = device},
                           &ref, &err), &err);
    printf("test_spec_engine on %s (sampling %s)\n", device, sm_model_samples_on_device(target) ? "on the device" : "on the host");
    test_errors(target, draft);
    test_metrics(target, draft);
    test_distribution(target, draft, ref, (sm_sampling){.temperature = 1.0f, .top_p = 1.0f}, "model");
    test_distribution(target, draft, ref, (sm_sampling){.temperature = 0.7f, .top_p = 0.9f, .top_k = 6}, "model");
    test_distribution(target, draft, ref, (sm_sampling){.temperature = 1.0f, .top_p = 1.0f}, "ngram");
    test_distribution(target, draft, ref, (sm_sampling){.temperature = 1.0f, .top_p = 1.0f}, "self");
    sm_model_free(ref);
    sm_model_free(draft);
    sm_model_free(target);
    TEST_MAIN_END
}
