/* Speculative decoding with target and draft on the GPU (device "cuda", sampling and the
 * acceptance test on the device), on the trained pair of experiments/models:
 *  - greedy: every drafter (model k=4, ngram k=4, self with half the layers) against target-only
 *    greedy decoding on the GPU, 8 prompts decoded together, 64 new tokens each. Reported: how
 *    many sequences are identical and the tokens before the first difference (BF16 may flip a
 *    near-tie when the batch shape changes); required: at least 90% of tokens agree;
 *  - GPU greedy against the CPU reference (fp32 weights): reported, not required;
 *  - the acceptance rate of each drafter on the GPU, next to the CPU's for the model drafter.
 * The sampled-distribution test on the GPU is test_spec_engine run with "cuda" (tests/gpu.cmake). */
#include <string.h>

#include "gpu/gpu_test.h"
#include "model/model.h"
#include "spec/spec.h"

#define N_SEQ 8
#define NEW_TOKENS 64
#define MAX_PROMPT 64

static const char *prompts[N_SEQ] = {
    "def fibonacci(n):", "import os\nimport sys\n\n", "class Stack:\n    def __init__(self):",
    "def read_json(path):\n    \"\"\"Read a JSON file and return the parsed object.\"\"\"", "for i in range(10):",
    "if __name__ == \"__main__\":", "    def __repr__(self):", "# Copyright (C) 2024 Python Software Foundation\n"};

typedef struct run_out {
    int tokens[N_SEQ][MAX_PROMPT + NEW_TOKENS];
    int n[N_SEQ];
    double acceptance;
} run_out;

static void run(sm_model *target, sm_spec_config cfg, int *const ids[N_SEQ], const int n_ids[N_SEQ], run_out *out) {
    sm_error err = {0};
    sm_spec_engine *e = NULL;
    CHECK_OK(sm_spec_engine_create(target, &cfg, &e, &err), &err);
    if (!e) return;
    int64_t seq[N_SEQ];
    for (int i = 0; i < N_SEQ; i++)
        CHECK_OK(sm_spec_add_sequence(e, &(sm_spec_seq_params){.prompt = ids[i], .n_prompt = n_ids[i],
                                                              .max_new_tokens = NEW_TOKENS, .seed = 7 + (uint64_t)i},
                                      &seq[i], &err), &err);
    for (int guard = 0; guard < 4 * NEW_TOKENS; guard++) {
        const sm_spec_step_metrics *m;
        if (sm_spec_step(e, &m, &err)) { CHECK(0, "step: %s", err.msg); break; }
        if (m->n_seqs == 0) break;
    }
    for (int i = 0; i < N_SEQ; i++) {
        const int *t;
        int n;
        sm_spec_finish f;
        CHECK_OK(sm_spec_seq_output(e, seq[i], &t, &n, &f, &err), &err);
        out->n[i] = n < NEW_TOKENS ? n : NEW_TOKENS;
        memcpy(out->tokens[i], t, (size_t)out->n[i] * sizeof(int));
    }
    out->acceptance = sm_spec_acceptance_rate(sm_spec_engine_counters(e));
    sm_spec_engine_free(e);
}

/* Tokens equal before the first difference, over all sequences; *same: sequences equal throughout. */
static int agreement(const run_out *a, const run_out *b, int *same) {
    int agree = 0;
    *same = 0;
    for (int i = 0; i < N_SEQ; i++) {
        int j = 0, n = a->n[i] < b->n[i] ? a->n[i] : b->n[i];
        while (j < n && a->tokens[i][j] == b->tokens[i][j]) j++;
        agree += j;
        *same += j == n && a->n[i] == b->n[i];
    }
    return agree;
}

int main(void) {
    gpu_test_require_device("test_gpu_spec");
    sm_error err = {0};
    sm_model_opts gpu = {.device = "cuda", .max_seqs = N_SEQ, .max_context = 256};
    sm_model_opts cpu = {.max_seqs = N_SEQ, .max_context = 256};
    sm_model *target = NULL, *draft = NULL, *target_cpu = NULL;
    CHECK_OK(sm_model_load("experiments/models/target", &gpu, &target, &err), &err);
    CHECK_OK(sm_model_load("experiments/models/draft", &gpu, &draft, &err), &err);
    CHECK_OK(sm_model_load("experiments/models/target", &cpu, &target_cpu, &err), &err);
    if (!target || !draft || !target_cpu) { TEST_MAIN_END }
    CHECK(sm_model_samples_on_device(target) && !sm_model_samples_on_device(target_cpu), "device sampling flags");
    int *ids[N_SEQ], n_ids[N_SEQ];
    for (int i = 0; i < N_SEQ; i++) {
        CHECK_OK(sm_tokenizer_encode(sm_model_tokenizer(target), prompts[i], strlen(prompts[i]), false, &ids[i], &n_ids[i], &err),
                 &err);
        if (n_ids[i] > MAX_PROMPT) n_ids[i] = MAX_PROMPT;
    }
    static run_out base, base_cpu, got;
    run(target, (sm_spec_config){0}, ids, n_ids, &base);
    run(target_cpu, (sm_spec_config){0}, ids, n_ids, &base_cpu);
    int same, agree = agreement(&base, &base_cpu, &same);
    printf("GPU (BF16) vs CPU (fp32) target greedy: %d/%d sequences identical, %d/%d tokens before the first difference\n",
           same, N_SEQ, agree, N_SEQ * NEW_TOKENS);
    int self_layers[] = {0, 1};
    const sm_spec_config arms[] = {
        {.drafter = "model", .num_speculative_tokens = 4, .draft_model = draft},
        {.drafter = "ngram", .num_speculative_tokens = 4},
        {.drafter = "self", .num_speculative_tokens = 3, .self_layers = self_layers, .n_self_layers = 2},
    };
    for (size_t a = 0; a < sizeof arms / sizeof arms[0]; a++) {
        run(target, arms[a], ids, n_ids, &got);
        agree = agreement(&base, &got, &same);
        printf("greedy spec on the GPU, drafter %-5s k=%d: acceptance_rate %.3f; vs target-only GPU greedy: %d/%d sequences "
               "identical, %d/%d tokens (%.1f%%) before the first difference\n", arms[a].drafter,
               arms[a].num_speculative_tokens, got.acceptance, same, N_SEQ, agree, N_SEQ * NEW_TOKENS,
               100.0 * agree / (N_SEQ * NEW_TOKENS));
        CHECK(agree >= N_SEQ * NEW_TOKENS * 9 / 10, "drafter %s: only %d of %d tokens agree with target-only greedy",
              arms[a].drafter, agree, N_SEQ * NEW_TOKENS);
        CHECK(got.acceptance > 0.2, "drafter %s: acceptance %.3f is implausibly low for the trained pair", arms[a].drafter,
              got.acceptance);
    }
    for (int i = 0; i < N_SEQ; i++) free(ids[i]);
    sm_model_free(target_cpu);
    sm_model_free(draft);
    sm_model_free(target);
    TEST_MAIN_END
}
