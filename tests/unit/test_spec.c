/* Greedy speculative decoding must return exactly the target's greedy tokens.
 *
 * For every tiny fixture architecture (random weights, vocabulary 16) as the target, and every
 * drafter ("ngram", "self" in a cheaper mode, "model" with another fixture as the draft), for
 * k = 1..8 and batches of 1 and 3 sequences (one of them joining mid-run), each sequence's
 * tokens equal a plain one-token-at-a-time greedy decode of the target. With the draft equal to
 * the target (model drafter on the same directory, self drafter at full strength), every
 * proposal must be accepted, under greedy and under sampling. */
#include "model/model.h"
#include "spec/spec.h"
#include "test.h"

#define CKPT "tests/fixtures/loader/ckpt/"
#define N_NEW 14
#define MAX_BATCH 3

static const char *const archs[] = {"llama", "qwen2", "qwen3_tied", "mixtral_hub", "mixtral_fused", "olmoe_hub",
                                    "qwen2_moe_hub", "qwen3_moe_hub", "qwen3_moe_fused", "qwen3_moe_sharded"};
#define N_ARCHS (int)(sizeof archs / sizeof archs[0])

/* Prompts with repeats (n-gram hits) and without. */
static const int prompt_a[] = {1, 2, 3, 4, 1, 2, 3};
static const int prompt_b[] = {5, 9, 9, 5, 9, 9, 5, 9};
static const int prompt_c[] = {15, 0, 7};
static const int *const prompts[MAX_BATCH] = {prompt_a, prompt_b, prompt_c};
static const int prompt_len[MAX_BATCH] = {7, 8, 3};

/* One token at a time, batch of one: the reference. */
static int ref_greedy(sm_model *m, const int *prompt, int n_prompt, int n_new, int *out, sm_error *err) {
    int vocab = sm_model_cfg(m)->vocab_size;
    float logits[64];
    if (vocab > 64) return -1;
    sm_row rows[16];
    for (int i = 0; i < n_prompt; i++) rows[i] = (sm_row){0, prompt[i], i, i == n_prompt - 1};
    if (sm_model_truncate(m, 0, 0, err) || sm_model_forward(m, rows, n_prompt, NULL, logits, err)) return -1;
    for (int t = 0; t < n_new; t++) {
        out[t] = sm_argmax(logits, vocab);
        sm_row r = {0, out[t], n_prompt + t, true};
        if (t + 1 < n_new && sm_model_forward(m, &r, 1, NULL, logits, err)) return -1;
    }
    return 0;
}

typedef struct run_result {
    int tokens[MAX_BATCH][N_NEW + 8];
    int n_tokens[MAX_BATCH];
    sm_spec_counters counters;
} run_result;

/* Decode `batch` prompts; the last one joins after two steps when batch > 1 (open-loop arrival). */
static int run_spec(sm_model *target, const sm_spec_config *cfg, int batch, run_result *res, sm_error *err) {
    sm_spec_engine *e;
    if (sm_spec_engine_create(target, cfg, &e, err)) return -1;
    int64_t ids[MAX_BATCH];
    int added = 0, rc = 0;
    for (int step = 0; step < 200 && !rc; step++) {
        while (added < batch && (added < batch - 1 || batch == 1 || step >= 2)) {
            sm_spec_seq_params p = {.prompt = prompts[added], .n_prompt = prompt_len[added], .max_new_tokens = N_NEW,
                                    .seed = 7u + (unsigned)added};
            if (sm_spec_add_sequence(e, &p, &ids[added], err)) { rc = -1; break; }
            added++;
        }
        if (rc) break;
        if (added == batch && sm_spec_active_count(e) == 0) break;
        const sm_spec_step_metrics *m;
        if (sm_spec_step(e, &m, err)) rc = -1;
    }
    for (int i = 0; i < added && !rc; i++) {
        const int *t;
        int n;
        sm_spec_finish f;
        if (sm_spec_seq_output(e, ids[i], &t, &n, &f, err)) { rc = -1; break; }
        memcpy(res->tokens[i], t, (size_t)n * sizeof(int));
        res->n_tokens[i] = n;
    }
    res->counters = *sm_spec_engine_counters(e);
    sm_spec_engine_free(e);
    return rc;
}

static void check_equal(const run_result *res, int ref[MAX_BATCH][N_NEW], int batch, const char *what) {
    for (int i = 0; i < batch; i++) {
        int ok = res->n_tokens[i] == N_NEW && !memcmp(res->tokens[i], ref[i], N_NEW * sizeof(int));
        CHECK(ok, "%s: sequence %d differs from the target's greedy tokens (n=%d)", what, i, res->n_tokens[i]);
        if (!ok) {
            for (int t = 0; t < res->n_tokens[i]; t++) fprintf(stderr, "%d ", res->tokens[i][t]);
            fprintf(stderr, " vs ref ");
            for (int t = 0; t < N_NEW; t++) fprintf(stderr, "%d ", ref[i][t]);
            fprintf(stderr, "\n");
        }
    }
}

int main(void) {
    sm_error err = {0};
    sm_model_opts opts = {.n_threads = 1, .max_seqs = MAX_BATCH, .max_context = 64};
    sm_model_opts ref_opts = {.n_threads = 1, .max_seqs = 1, .max_context = 64};
    sm_model *other_draft;
    CHECK_OK(sm_model_load(CKPT "llama", &opts, &other_draft, &err), &err);
    long total_drafts = 0, total_accepted = 0;

    for (int a = 0; a < N_ARCHS; a++) {
        char dir[256];
        snprintf(dir, sizeof dir, CKPT "%s", archs[a]);
        sm_model *target = NULL, *ref = NULL, *same = NULL;
        CHECK_OK(sm_model_load(dir, &opts, &target, &err), &err);
        CHECK_OK(sm_model_load(dir, &opts, &same, &err), &err);
        if (!target || !same) continue;
        CHECK_OK(sm_model_fork(target, &ref_opts, &ref, &err), &err);
        int ref_tokens[MAX_BATCH][N_NEW];
        for (int i = 0; i < MAX_BATCH; i++)
            CHECK(ref_greedy(ref, prompts[i], prompt_len[i], N_NEW, ref_tokens[i], &err) == 0, "%s: %s", dir, err.msg);
        const sm_model_config *mc = sm_model_cfg(target);
        bool moe = sm_config_is_moe(mc);
        int skip_last[] = {mc->num_layers - 1};

        /* The baseline arm itself must match the reference. */
        run_result res;
        sm_spec_config base = {.drafter = "none"};
        for (int batch = 1; batch <= MAX_BATCH; batch += 2) {
            CHECK(run_spec(target, &base, batch, &res, &err) == 0, "%s baseline: %s", archs[a], err.msg);
            check_equal(&res, ref_tokens, batch, archs[a]);
            CHECK(res.counters.num_drafts == 0, "%s: baseline drafted", archs[a]);
        }

        for (int k = 1; k <= 8; k++) {
            sm_spec_config cfgs[] = {
                {.drafter = "ngram", .num_speculative_tokens = k, .ngram_min = 1, .ngram_max = 3},
                /* cheaper self-draft: top-1 expert on MoE targets, last layer skipped on dense ones */
                {.drafter = "self", .num_speculative_tokens = k, .self_top_k = moe ? 1 : 0,
                 .self_skip_layers = moe ? NULL : skip_last, .n_self_skip_layers = moe ? 0 : 1},
                {.drafter = "model", .num_speculative_tokens = k, .draft_model = other_draft},
                {.drafter = "model", .num_speculative_tokens = k, .draft_model = same},
                {.drafter = "self", .num_speculative_tokens = k},
            };
            for (int c = 0; c < (int)(sizeof cfgs / sizeof cfgs[0]); c++) {
                for (int batch = 1; batch <= MAX_BATCH; batch += 2) {
                    char what[128];
                    snprintf(what, sizeof what, "%s drafter=%s variant=%d k=%d batch=%d", archs[a], cfgs[c].drafter, c, k, batch);
                    if (run_spec(target, &cfgs[c], batch, &res, &err)) {
                        CHECK(0, "%s: %s", what, err.msg);
                        continue;
                    }
                    check_equal(&res, ref_tokens, batch, what);
                    const sm_spec_counters *cn = &res.counters;
                    CHECK(cn->num_accepted_tokens <= cn->num_draft_tokens && cn->num_draft_tokens <= (long)k * cn->num_drafts,
                          "%s: counters %lld accepted of %lld proposed in %lld drafts", what,
                          (long long)cn->num_accepted_tokens, (long long)cn->num_draft_tokens, (long long)cn->num_drafts);
                    CHECK(cn->num_emitted_tokens == (long)batch * N_NEW, "%s: emitted %lld", what, (long long)cn->num_emitted_tokens);
                    if (c >= 3) { /* draft identical to the target */
                        CHECK(cn->num_drafts > 0 && cn->num_accepted_tokens == cn->num_draft_tokens,
                              "%s: draft == target but only %lld of %lld proposals accepted", what,
                              (long long)cn->num_accepted_tokens, (long long)cn->num_draft_tokens);
                    }
                    if (c < 3) { total_drafts += cn->num_draft_tokens; total_accepted += cn->num_accepted_tokens; }
                }
            }
        }
        /* Sampling with draft == target: p == q, so every proposal is accepted. */
        for (int c = 0; c < 2; c++) {
            sm_spec_config s = {.drafter = c ? "self" : "model", .num_speculative_tokens = 4, .draft_model = same,
                                .sampling = {.temperature = 1.0f, .top_p = 1.0f}};
            CHECK(run_spec(target, &s, MAX_BATCH, &res, &err) == 0, "%s sampled: %s", archs[a], err.msg);
            CHECK(res.counters.num_drafts > 0 && res.counters.num_accepted_tokens == res.counters.num_draft_tokens,
                  "%s sampled %s draft == target: %lld of %lld accepted", archs[a], s.drafter,
                  (long long)res.counters.num_accepted_tokens, (long long)res.counters.num_draft_tokens);
        }
        sm_model_free(ref);
        sm_model_free(same);
        sm_model_free(target);
    }
    /* Not a tautology: the cheaper drafters must be rejected sometimes, or verification did nothing. */
    CHECK(total_accepted < total_drafts && total_drafts > 0, "cheap drafters: %ld of %ld accepted", total_accepted, total_drafts);
    printf("cheap drafters accepted %ld of %ld proposals\n", total_accepted, total_drafts);
    sm_model_free(other_draft);
    TEST_MAIN_END
}
