/* Route traces recorded by `specmoe run` (record_routes = true) are the routes the target takes
 * over the text: for every request of every arm (baseline, n-gram and self drafts, two sequences
 * batched), the experts and weights stored per (position, layer) must equal those of one direct
 * forward of the request's prompt + output — no rejected draft, no duplicate, nothing missing.
 * The run goes through the public engine API (sm_spec_set_route_observer), batched with other
 * sequences; the oracle is a plain sm_model_forward of one sequence. */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "model/model.h"
#include "spec/sampler.h"
#include "test.h"

#define FIXTURE "tests/fixtures/loader/ckpt/qwen3_moe_hub"
#define MAX_LEN 64
#define MAX_LAYERS 4
#define MAX_TOPK 8

static const int prompts[3][10] = {
    {5, 6, 7, 8, 5, 6, 7, 8, 5, 6},
    {3, 4, 9, 10, 3, 4, 9, 10, 3, 4},
    {11, 12, 13, 14, 15, 11, 12, 13, 14, 15},
};
enum { N_PROMPTS = 3, PROMPT_LEN = 10, MAX_NEW = 20 };

/* The direct forward's routes: [layer][position][top_k]. */
typedef struct routes {
    int ids[MAX_LAYERS][MAX_LEN][MAX_TOPK];
    float w[MAX_LAYERS][MAX_LEN][MAX_TOPK];
    int top_k;
} routes;

static void capture(void *ctx, int layer, int n_rows, int top_k, const int *ids, const float *w) {
    routes *r = ctx;
    if (layer < 0 || layer >= MAX_LAYERS || top_k > MAX_TOPK) return;
    r->top_k = top_k;
    for (int i = 0; i < n_rows && i < MAX_LEN; i++)
        for (int j = 0; j < top_k; j++) {
            r->ids[layer][i][j] = ids[i * top_k + j];
            r->w[layer][i][j] = w[i * top_k + j];
        }
}

/* Greedy tokens of the target (the output of every greedy arm), then one forward of
 * prompt + output[0 .. n-2] with an observer: the routes of the whole text. */
static int direct_routes(sm_model *m, const int *prompt, int n_out, routes *out, sm_error *err) {
    int vocab = sm_model_cfg(m)->vocab_size, len = PROMPT_LEN;
    int tokens[MAX_LEN];
    sm_row rows[MAX_LEN];
    float *logits = malloc((size_t)vocab * sizeof(float));
    memcpy(tokens, prompt, PROMPT_LEN * sizeof(int));
    sm_model_truncate(m, 0, 0, err);
    int fed = 0;
    for (int t = 0; t < n_out; t++) {
        int n = 0;
        for (int p = fed; p < len; p++) rows[n++] = (sm_row){.seq = 0, .token = tokens[p], .pos = p, .want_logits = p == len - 1};
        if (sm_model_forward(m, rows, n, NULL, logits, err) != SM_OK) {
            free(logits);
            return -1;
        }
        fed = len;
        tokens[len++] = sm_argmax(logits, vocab);
    }
    free(logits);
    sm_model_truncate(m, 0, 0, err);
    int n = len - 1; /* the last emitted token is never fed to the target */
    for (int p = 0; p < n; p++) rows[p] = (sm_row){.seq = 0, .token = tokens[p], .pos = p, .want_logits = false};
    memset(out, 0, sizeof *out);
    sm_model_set_route_observer(m, &(sm_route_observer){.on_route = capture, .ctx = out});
    sm_status s = sm_model_forward(m, rows, n, NULL, NULL, err);
    sm_model_set_route_observer(m, NULL);
    return s == SM_OK ? n : -1;
}

static int parse_ints(const char *json, int *v, int cap) {
    int n = 0;
    for (const char *p = json; *p && n < cap; p++)
        if ((*p >= '0' && *p <= '9') || *p == '-') v[n++] = (int)strtol(p, (char **)&p, 10);
    return n;
}

static int parse_floats(const char *json, float *v, int cap) {
    int n = 0;
    const char *p = json;
    while (*p && n < cap) {
        if ((*p >= '0' && *p <= '9') || *p == '-' || *p == '.') {
            char *e;
            v[n++] = strtof(p, &e);
            p = e;
        } else {
            p++;
        }
    }
    return n;
}

int main(void) {
    char dir[] = "/tmp/specmoe_routes_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char jsonl[256], script[256], db_path[256];
    snprintf(jsonl, sizeof jsonl, "%s/prompts.jsonl", dir);
    snprintf(script, sizeof script, "%s/routes.lua", dir);
    snprintf(db_path, sizeof db_path, "%s/results.db", dir);
    FILE *f = fopen(jsonl, "w");
    for (int i = 0; i < N_PROMPTS; i++) {
        fprintf(f, "{\"prompt_ids\": [");
        for (int j = 0; j < PROMPT_LEN; j++) fprintf(f, "%s%d", j ? ", " : "", prompts[i][j]);
        fprintf(f, "]}\n");
    }
    fclose(f);
    f = fopen(script, "w");
    fprintf(f,
            "local sm = require \"specmoe\"\n"
            "return sm.experiment {\n"
            "  name = \"routes\", record_routes = true,\n"
            "  target = sm.model { path = \"%s\" },\n"
            "  workload = { prompts_file = \"%s\", num_prompts = %d, max_new_tokens = %d, max_concurrency = 2 },\n"
            "  arms = {\n"
            "    sm.arm { name = \"baseline\" },\n"
            "    sm.arm { name = \"ngram\", drafter = \"ngram\", k = 4 },\n"
            "    sm.arm { name = \"self\", drafter = \"self\", k = 3, self_draft_top_k = 1 },\n"
            "  },\n"
            "}\n",
            FIXTURE, jsonl, N_PROMPTS, MAX_NEW);
    fclose(f);
    char *argv[] = {"run", script, "--db", db_path, "--threads", "1", NULL};
    int rc = sm_cmd_run(6, argv);
    CHECK(rc == 0, "specmoe run exited %d", rc);

    sm_error err = {0};
    sm_model *m = NULL;
    sm_model_opts mo = {.n_threads = 1, .max_seqs = 1};
    CHECK_OK(sm_model_load(FIXTURE, &mo, &m, &err), &err);
    sqlite3 *db = NULL;
    CHECK(sqlite3_open(db_path, &db) == SQLITE_OK, "open %s", db_path);
    if (m && db && rc == 0) {
        int n_layers = sm_model_cfg(m)->num_layers;
        int checked_requests = 0, rejected_steps = 0;
        sqlite3_stmt *q;
        sqlite3_prepare_v2(db,
                           "SELECT q.run_id, a.name, q.request_index, q.output_tokens FROM requests q "
                           "JOIN runs r USING (run_id) JOIN arms a USING (arm_id) ORDER BY q.run_id, q.request_index",
                           -1, &q, NULL);
        while (sqlite3_step(q) == SQLITE_ROW) {
            int64_t run = sqlite3_column_int64(q, 0);
            const char *arm = (const char *)sqlite3_column_text(q, 1);
            int req = sqlite3_column_int(q, 2), n_out = sqlite3_column_int(q, 3);
            routes want;
            int n = direct_routes(m, prompts[req], n_out, &want, &err);
            CHECK(n == PROMPT_LEN + n_out - 1, "direct forward: %s", err.msg);
            if (n < 0) continue;
            sqlite3_stmt *t;
            sqlite3_prepare_v2(db,
                               "SELECT position, layer, expert_ids, weights FROM route_traces "
                               "WHERE run_id = ?1 AND request_index = ?2 AND model = 'target' ORDER BY layer, position",
                               -1, &t, NULL);
            sqlite3_bind_int64(t, 1, run);
            sqlite3_bind_int(t, 2, req);
            int rows = 0, bad = 0, expect_pos = 0, expect_layer = 0;
            while (sqlite3_step(t) == SQLITE_ROW) {
                int pos = sqlite3_column_int(t, 0), layer = sqlite3_column_int(t, 1);
                int ids[MAX_TOPK];
                float w[MAX_TOPK];
                int ni = parse_ints((const char *)sqlite3_column_text(t, 2), ids, MAX_TOPK);
                int nw = parse_floats((const char *)sqlite3_column_text(t, 3), w, MAX_TOPK);
                if (pos != expect_pos || layer != expect_layer || ni != want.top_k || nw != want.top_k) {
                    if (bad++ < 3)
                        fprintf(stderr, "%s request %d: row (layer %d, pos %d) with %d ids; expected (layer %d, pos %d), %d ids\n",
                                arm, req, layer, pos, ni, expect_layer, expect_pos, want.top_k);
                } else {
                    for (int j = 0; j < ni; j++)
                        if (ids[j] != want.ids[layer][pos][j] || fabsf(w[j] - want.w[layer][pos][j]) > 1e-5f) {
                            if (bad++ < 3)
                                fprintf(stderr, "%s request %d layer %d pos %d slot %d: expert %d w %g, direct %d w %g\n",
                                        arm, req, layer, pos, j, ids[j], (double)w[j], want.ids[layer][pos][j],
                                        (double)want.w[layer][pos][j]);
                        }
                }
                rows++;
                if (++expect_pos == n) {
                    expect_pos = 0;
                    expect_layer++;
                }
            }
            sqlite3_finalize(t);
            CHECK(bad == 0, "%s request %d: %d route rows differ from the direct forward", arm, req, bad);
            CHECK(rows == n * n_layers, "%s request %d: %d route rows, expected %d positions x %d layers", arm, req,
                  rows, n, n_layers);
            checked_requests++;
        }
        sqlite3_finalize(q);
        CHECK(checked_requests == 3 * N_PROMPTS, "checked %d requests", checked_requests);
        /* The check is only meaningful if some drafts were rejected (their rows must be dropped). */
        sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM spec_steps WHERE n_accepted < k_proposed", -1, &q, NULL);
        if (sqlite3_step(q) == SQLITE_ROW) rejected_steps = sqlite3_column_int(q, 0);
        sqlite3_finalize(q);
        CHECK(rejected_steps > 0, "no draft was rejected: the filter of rejected rows went untested");
    }
    sqlite3_close(db);
    sm_model_free(m);
    unlink(jsonl);
    unlink(script);
    unlink(db_path);
    char side[300];
    snprintf(side, sizeof side, "%s-wal", db_path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", db_path);
    unlink(side);
    rmdir(dir);
    TEST_MAIN_END
}
