/* The expert weight dtype of sm_model_opts reaches the runner: the ref runner keeps bf16 weights
 * as bf16 (a bf16 checkpoint gives the same logits as f32 storage, bit for bit, since bf16 -> f32
 * is exact), rounds f32 / f16 checkpoints to bf16 (logits move, a little), and refuses a dtype it
 * does not store, naming the ones it does. */
#include "model/model.h"
#include "test.h"

#define CKPT "tests/fixtures/loader/ckpt/"

/* Logits of a fixed 5-token prompt (every row) with the given dtype; NULL on failure. */
static float *logits_with(const char *dir, const char *dtype, int *vocab, sm_error *err) {
    sm_model_opts o = {.n_threads = 1, .max_seqs = 1, .dtype = dtype, .moe_runner_backend = "ref"};
    sm_model *m = NULL;
    if (sm_model_load(dir, &o, &m, err) != SM_OK) return NULL;
    *vocab = sm_model_cfg(m)->vocab_size;
    sm_row rows[5];
    for (int i = 0; i < 5; i++) rows[i] = (sm_row){.seq = 0, .token = (3 + 5 * i) % *vocab, .pos = i, .want_logits = true};
    float *logits = malloc(5 * (size_t)*vocab * sizeof(float));
    if (sm_model_forward(m, rows, 5, NULL, logits, err) != SM_OK) {
        free(logits);
        logits = NULL;
    }
    sm_model_free(m);
    return logits;
}

static void compare(const char *fixture, bool same_expected) {
    char dir[256];
    snprintf(dir, sizeof dir, CKPT "%s", fixture);
    sm_error err = {0};
    int v32 = 0, v16 = 0;
    float *a = logits_with(dir, "f32", &v32, &err);
    CHECK(a, "%s f32: %s", fixture, err.msg);
    float *b = logits_with(dir, "bf16", &v16, &err);
    CHECK(b, "%s bf16: %s", fixture, err.msg);
    if (a && b) {
        size_t n = 5 * (size_t)v32;
        bool same = !memcmp(a, b, n * sizeof(float));
        double rel = test_rel_l2(b, a, n);
        if (same_expected) {
            CHECK(same, "%s: a bf16 checkpoint stored as bf16 must give the f32-storage logits exactly (rel %g)", fixture, rel);
        } else {
            CHECK(!same, "%s: rounding experts to bf16 left every logit unchanged: was the dtype ignored?", fixture);
            CHECK(rel < 2e-2, "%s: bf16 experts moved logits by rel L2 %g (> 2e-2)", fixture, rel);
        }
    }
    free(a);
    free(b);
}

int main(void) {
    compare("qwen3_moe_hub", true);  /* BF16 checkpoint */
    compare("qwen2_moe_hub", false); /* F32 checkpoint */
    compare("olmoe_hub", false);     /* F16 checkpoint */

    sm_error err = {0};
    int vocab;
    float *l = logits_with(CKPT "qwen3_moe_hub", "f16", &vocab, &err);
    CHECK(!l && err.code == SM_EUNSUPPORTED, "dtype f16 on the ref runner must fail (got %s)", sm_status_name(err.code));
    CHECK(strstr(err.msg, "'f16'") && strstr(err.msg, "'ref'") && strstr(err.msg, "f32, bf16"), "message: %s", err.msg);
    free(l);
    l = logits_with(CKPT "qwen3_moe_hub", "int3", &vocab, &err);
    CHECK(!l && strstr(err.msg, "'int3'"), "unknown dtype message: %s", err.msg);
    free(l);
    /* leaving the MoE blocks out is a GPU benchmark: the CPU model refuses it, naming the model */
    sm_model *m = NULL;
    sm_status st = sm_model_load(CKPT "qwen3_moe_hub", &(sm_model_opts){.leave_out_moe = true}, &m, &err);
    CHECK(st == SM_EUNSUPPORTED && !m && strstr(err.msg, "qwen3_moe_hub") && strstr(err.msg, "MoE"),
          "leave_out_moe on the CPU must be refused (got %s: %s)", sm_status_name(st), err.msg);
    TEST_MAIN_END
}
