/* The results database: created from db/schema.sql, migrated step by step, a newer one refused,
 * a read-only one refused without losing anything, and every view checked on known contents
 * against percentiles computed here, independently of SQL. */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "exp/db.h"
#include "exp/paths.h"
#include "test.h"

static char tmpdir[256];

static int64_t scalar(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -999;
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -998;
    sqlite3_finalize(st);
    return v;
}

static double scalar_d(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return NAN;
    double v = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL ? sqlite3_column_double(st, 0) : NAN;
    sqlite3_finalize(st);
    return v;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest rank, computed the obvious way. */
static double pct(double *v, int n, double p) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    int rank = (int)ceil(p / 100.0 * n - 1e-9);
    return v[(rank < 1 ? 1 : rank) - 1];
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_create_migrate_refuse(const char *dbdir) {
    sm_error err = {0};
    char path[1024], schema_dir[512], cmd[9000];
    const int cur = SM_DB_SCHEMA_VERSION, next = SM_DB_SCHEMA_VERSION + 1;
    /* A schema directory of our own with a migration to the version after this build's. */
    snprintf(schema_dir, sizeof schema_dir, "%s/schema", tmpdir);
    int n = snprintf(cmd, sizeof cmd, "mkdir -p %s/migrations && cp %s/schema.sql %s/views.sql %s/", schema_dir, dbdir,
                     dbdir, schema_dir);
    CHECK(n < (int)sizeof cmd && system(cmd) == 0, "copy schema");
    n = snprintf(path, sizeof path, "%s/migrations/%03d.sql", schema_dir, next);
    CHECK(n < (int)sizeof path, "path");
    char migration[256];
    snprintf(migration, sizeof migration,
             "ALTER TABLE runs ADD COLUMN note TEXT;\n"
             "INSERT INTO schema_version VALUES (%d, 0, 'test migration');\nPRAGMA user_version = %d;\n", next, next);
    write_file(path, migration);

    snprintf(path, sizeof path, "%s/m.db", tmpdir);
    sqlite3 *db;
    CHECK_OK(sm_db_open(path, &(sm_db_opts){.schema_dir = schema_dir}, &db, &err), &err);
    CHECK(scalar(db, "PRAGMA user_version") == cur, "new database is version %d", cur);
    CHECK(scalar(db, "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'view' AND name = 'arm_summary'") == 1, "views");
    CHECK(scalar(db, "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'runs'") == 1, "tables");
    sqlite3_exec(db, "INSERT INTO experiments (name, settings_json, created_at) VALUES ('keep', '{}', 1)", 0, 0, 0);
    sm_db_close(db);

    CHECK_OK(sm_db_open(path, &(sm_db_opts){.schema_dir = schema_dir, .schema_version = next}, &db, &err), &err);
    CHECK(scalar(db, "PRAGMA user_version") == next, "migrated to %d", next);
    CHECK(scalar(db, "SELECT COUNT(*) FROM pragma_table_info('runs') WHERE name = 'note'") == 1, "migration applied");
    CHECK(scalar(db, "SELECT COUNT(*) FROM experiments WHERE name = 'keep'") == 1, "data kept across migration");
    CHECK(scalar(db, "SELECT COUNT(*) FROM schema_version") == 2, "one schema_version row per step");
    sm_db_close(db);

    /* The next version is newer than this build's: refused, untouched. */
    db = NULL;
    sm_status s = sm_db_open(path, &(sm_db_opts){.schema_dir = schema_dir}, &db, &err);
    CHECK(s == SM_EUNSUPPORTED && db == NULL, "newer schema refused (%s)", err.msg);
    CHECK(strstr(err.msg, "newer") && strstr(err.msg, path), "message names the file and says newer: %s", err.msg);

    /* A database that is not ours is refused. */
    snprintf(path, sizeof path, "%s/other.db", tmpdir);
    sqlite3_open(path, &db);
    sqlite3_exec(db, "CREATE TABLE t (x)", 0, 0, 0);
    sqlite3_close(db);
    db = NULL;
    s = sm_db_open(path, NULL, &db, &err);
    CHECK(s == SM_EFORMAT && strstr(err.msg, "not a specmoe"), "foreign database refused: %s", err.msg);
}

/* db/migrations/002.sql on a database built from the version-1 schema (kept as a fixture):
 * arms gain target_device / draft_device = 'cpu' (draft only where there was a draft model), the
 * data stays, and the migrated arms table has exactly the columns of a new database. */
static char *table_layout(sqlite3 *db, const char *table) {
    char sql[256], *out = NULL;
    snprintf(sql, sizeof sql,
             "SELECT group_concat(name || ':' || type || ':' || \"notnull\" || ':' || IFNULL(dflt_value, '-'), ',') "
             "FROM pragma_table_info('%s')", table);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return NULL;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0)) out = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return out;
}

static void test_migration_from_v1(void) {
    sm_error err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/v1.db", tmpdir);
    char *v1_sql = NULL;
    CHECK_OK(sm_read_text_file("tests/fixtures/db/schema_v1.sql", &v1_sql, NULL, &err), &err);
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK, "create v1 database");
    CHECK(sqlite3_exec(db, v1_sql, 0, 0, 0) == SQLITE_OK, "apply v1 schema: %s", sqlite3_errmsg(db));
    free(v1_sql);
    const char *arm_cols = "(experiment_id, arm_index, name, target_model_path, target_moe_runner_backend, target_dtype, "
                           "target_moe_a2a_backend, draft_model_path, draft_moe_runner_backend, draft_dtype, "
                           "draft_moe_a2a_backend, drafter, num_speculative_tokens, temperature, top_p, top_k, seed, "
                           "workload_kind, num_prompts, max_new_tokens, settings_json)";
    char sql[2048];
    snprintf(sql, sizeof sql,
             "INSERT INTO experiments (experiment_id, name, settings_json, created_at) VALUES (1, 'old', '{}', 0);"
             "INSERT INTO arms %s VALUES (1, 0, 'base', 'm', 'ref', 'auto', 'local', NULL, NULL, NULL, NULL, 'none', 0,"
             " 0, 1, 0, 0, 'random', 2, 4, '{}');"
             "INSERT INTO arms %s VALUES (1, 1, 'spec', 'm', 'ref', 'auto', 'local', 'd', 'ref', 'auto', 'local', 'model', 2,"
             " 0, 1, 0, 0, 'random', 2, 4, '{}');"
             "INSERT INTO runs VALUES (1, 2, 0, 0, 'ok', NULL, 100, 110);",
             arm_cols, arm_cols);
    CHECK(sqlite3_exec(db, sql, 0, 0, 0) == SQLITE_OK, "v1 rows: %s", sqlite3_errmsg(db));
    CHECK(scalar(db, "PRAGMA user_version") == 1, "fixture is version 1");
    sqlite3_close(db);

    /* Read-only (report) refuses the old version and says how to migrate; nothing changes. */
    db = NULL;
    sm_status s = sm_db_open(path, &(sm_db_opts){.read_only = true}, &db, &err);
    CHECK(s == SM_EUNSUPPORTED && db == NULL && strstr(err.msg, "older"), "read-only open of v1: %s", err.msg);

    CHECK_OK(sm_db_open(path, NULL, &db, &err), &err);
    CHECK(scalar(db, "PRAGMA user_version") == SM_DB_SCHEMA_VERSION, "migrated to the current version");
    CHECK(scalar(db, "SELECT COUNT(*) FROM arms WHERE target_device = 'cpu'") == 2, "old arms ran on the cpu");
    CHECK(scalar(db, "SELECT COUNT(*) FROM arms WHERE name = 'spec' AND draft_device = 'cpu'") == 1, "draft on cpu");
    CHECK(scalar(db, "SELECT COUNT(*) FROM arms WHERE name = 'base' AND draft_device IS NULL") == 1,
          "no draft device without a draft model");
    CHECK(scalar(db, "SELECT COUNT(*) FROM runs WHERE arm_id = 2 AND status = 'ok'") == 1, "runs kept");
    CHECK(scalar(db, "SELECT MAX(version) FROM schema_version") == SM_DB_SCHEMA_VERSION, "schema_version row added");
    /* A row written the way specmoe 1 wrote it (no device) still gets the default. */
    snprintf(sql, sizeof sql,
             "INSERT INTO arms %s VALUES (1, 2, 'later', 'm', 'ref', 'auto', 'local', NULL, NULL, NULL, NULL, 'none', 0,"
             " 0, 1, 0, 0, 'random', 2, 4, '{}')", arm_cols);
    CHECK(sqlite3_exec(db, sql, 0, 0, 0) == SQLITE_OK, "insert without device: %s", sqlite3_errmsg(db));
    CHECK(scalar(db, "SELECT COUNT(*) FROM arms WHERE name = 'later' AND target_device = 'cpu'") == 1, "default cpu");
    char *migrated = table_layout(db, "arms");
    sm_db_close(db);

    snprintf(path, sizeof path, "%s/fresh.db", tmpdir);
    CHECK_OK(sm_db_open(path, NULL, &db, &err), &err);
    char *fresh = table_layout(db, "arms");
    sm_db_close(db);
    CHECK(migrated && fresh && !strcmp(migrated, fresh), "migrated arms table differs from a new one:\n  %s\n  %s",
          migrated ? migrated : "?", fresh ? fresh : "?");
    free(migrated);
    free(fresh);
}

static void test_read_only(void) {
    sm_error err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/ro.db", tmpdir);
    sqlite3 *db;
    CHECK_OK(sm_db_open(path, NULL, &db, &err), &err);
    sqlite3_exec(db, "INSERT INTO experiments (name, settings_json, created_at) VALUES ('kept', '{}', 1)", 0, 0, 0);
    sm_db_close(db);
    chmod(path, 0444);
    if (access(path, W_OK) == 0) {
        printf("running as root: file permissions do not stop writes; read-only case checked via mode=ro\n");
        char uri[600];
        snprintf(uri, sizeof uri, "file:%s?mode=ro", path);
        sm_status s = sm_db_open(uri, NULL, &db, &err);
        CHECK(s != SM_OK && strstr(err.msg, "read-only"), "mode=ro refused for writing: %s", err.msg);
    } else {
        sm_status s = sm_db_open(path, NULL, &db, &err);
        CHECK(s == SM_EIO && strstr(err.msg, "read-only"), "read-only file refused: %s", err.msg);
    }
    chmod(path, 0644);
    /* Reading still works, and nothing was lost. */
    CHECK_OK(sm_db_open(path, &(sm_db_opts){.read_only = true}, &db, &err), &err);
    CHECK(scalar(db, "SELECT COUNT(*) FROM experiments WHERE name = 'kept'") == 1, "contents kept");
    sm_db_close(db);
}

/* Known contents: 2 arms, arm A with 1 run of 7 requests, arm B with 2 runs (one failed). */
static void test_views(void) {
    sm_error err = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/v.db", tmpdir);
    sqlite3 *db;
    CHECK_OK(sm_db_open(path, NULL, &db, &err), &err);
    const char *arm_cols = "(experiment_id, arm_index, name, target_model_path, target_moe_runner_backend, target_dtype, "
                           "target_moe_a2a_backend, drafter, num_speculative_tokens, temperature, top_p, top_k, seed, "
                           "workload_kind, num_prompts, max_new_tokens, settings_json)";
    char sql[2048];
    /* One transaction, as the recorder writes a run: emissions may precede their request. */
    sqlite3_exec(db, "BEGIN", 0, 0, 0);
    sqlite3_exec(db, "INSERT INTO experiments (experiment_id, name, settings_json, created_at) VALUES (1, 'e', '{}', 0)", 0, 0, 0);
    snprintf(sql, sizeof sql,
             "INSERT INTO arms %s VALUES (1, 0, 'A', 'm', 'ref', 'auto', 'local', 'none', 0, 0, 1, 0, 0, 'random', 7, 4, '{}');"
             "INSERT INTO arms %s VALUES (1, 1, 'B', 'm', 'ref', 'auto', 'local', 'ngram', 3, 0, 1, 0, 0, 'random', 7, 4, '{}');",
             arm_cols, arm_cols);
    CHECK(sqlite3_exec(db, sql, 0, 0, 0) == SQLITE_OK, "arms: %s", sqlite3_errmsg(db));
    sqlite3_exec(db, "INSERT INTO runs VALUES (1, 1, 0, 0, 'ok', NULL, 100, 110);"
                     "INSERT INTO runs VALUES (2, 2, 0, 0, 'ok', NULL, 100, 104);"
                     "INSERT INTO runs VALUES (3, 2, 1, 1, 'failed', 'x', 100, 101);", 0, 0, 0);
    /* Arm A: request i arrives at i*0.1, first token after ttft[i], then 3 more events. */
    double ttft[7] = {0.5, 0.2, 0.9, 0.4, 0.3, 0.8, 0.1}, e2e[7], itl[21];
    int n_itl = 0;
    for (int i = 0; i < 7; i++) {
        double arr = i * 0.1, t = arr + ttft[i];
        snprintf(sql, sizeof sql, "INSERT INTO token_emissions VALUES (1, %d, 0, %.17g, 1)", i, t);
        sqlite3_exec(db, sql, 0, 0, 0);
        for (int e = 1; e <= 3; e++) {
            double gap = 0.01 * ((i * 3 + e) % 5 + 1);
            t += gap;
            itl[n_itl++] = gap;
            snprintf(sql, sizeof sql, "INSERT INTO token_emissions VALUES (1, %d, %d, %.17g, %d)", i, e, t, e == 3 ? 2 : 1);
            sqlite3_exec(db, sql, 0, 0, 0);
        }
        e2e[i] = t - arr;
        snprintf(sql, sizeof sql, "INSERT INTO requests (run_id, request_index, prompt_tokens, output_tokens, arrival_s, "
                                  "first_token_s, finish_s, status) VALUES (1, %d, 5, 5, %.17g, %.17g, %.17g, 'ok')",
                 i, arr, arr + ttft[i], t);
        CHECK(sqlite3_exec(db, sql, 0, 0, 0) == SQLITE_OK, "request: %s", sqlite3_errmsg(db));
    }
    /* Arm B run 2: two requests with drafts; failed run 3 must not count. */
    sqlite3_exec(db,
                 "INSERT INTO requests (run_id, request_index, prompt_tokens, output_tokens, arrival_s, first_token_s, finish_s, status) "
                 "VALUES (2, 0, 5, 3, 0, 0.1, 0.3, 'ok'), (2, 1, 5, 1, 0, 0.2, 0.2, 'ok'), (3, 0, 5, 9, 0, 9, 9, 'ok');"
                 "INSERT INTO token_emissions VALUES (2, 0, 0, 0.1, 1), (2, 0, 1, 0.3, 2), (2, 1, 0, 0.2, 1), (3, 0, 0, 9, 9);"
                 "INSERT INTO spec_steps (run_id, request_index, step, k_proposed, n_accepted, accepted_mask, accepted_positions) "
                 "VALUES (2, 0, 1, 3, 2, 3, '[0,1]'), (2, 0, 2, 3, 0, 0, '[]'), (2, 1, 1, 2, 1, 1, '[0]'), (2, 1, 2, 0, 0, 0, '[]'),"
                 " (3, 0, 1, 3, 3, 7, '[0,1,2]');",
                 0, 0, 0);
    CHECK(sqlite3_exec(db, "COMMIT", 0, 0, 0) == SQLITE_OK, "commit: %s", sqlite3_errmsg(db));

    /* percentiles of arm A against the direct computation */
    const char *metrics[] = {"ttft", "e2e", "itl"};
    double *vals[] = {ttft, e2e, itl};
    int ns[] = {7, 7, 21};
    const char *cols[] = {"p50_s", "p90_s", "p99_s", "p999_s"};
    double ps[] = {50, 90, 99, 99.9};
    for (int m = 0; m < 3; m++) {
        snprintf(sql, sizeof sql, "SELECT n FROM latency_percentiles WHERE arm = 'A' AND metric = '%s'", metrics[m]);
        CHECK(scalar(db, sql) == ns[m], "%s n = %lld, want %d", metrics[m], (long long)scalar(db, sql), ns[m]);
        for (int c = 0; c < 4; c++) {
            double copy[32];
            memcpy(copy, vals[m], (size_t)ns[m] * sizeof(double));
            double want = pct(copy, ns[m], ps[c]);
            snprintf(sql, sizeof sql, "SELECT %s FROM latency_percentiles WHERE arm = 'A' AND metric = '%s'", cols[c], metrics[m]);
            double got = scalar_d(db, sql);
            CHECK(fabs(got - want) < 1e-9, "%s %s = %.17g, want %.17g", metrics[m], cols[c], got, want);
        }
    }
    /* TPOT of request 0 of arm B: (0.3 - 0.1) / (3 - 1); request 1 has a single token: none */
    CHECK(scalar(db, "SELECT n FROM latency_percentiles WHERE arm = 'B' AND metric = 'tpot'") == 1, "tpot samples");
    CHECK(fabs(scalar_d(db, "SELECT p50_s FROM latency_percentiles WHERE arm = 'B' AND metric = 'tpot'") - 0.1) < 1e-12, "tpot");
    /* acceptance of arm B: drafts with k>0: 3; draft tokens 8; accepted 3 (the failed run ignored) */
    CHECK(scalar(db, "SELECT num_drafts FROM arm_acceptance WHERE arm = 'B'") == 3, "num_drafts");
    CHECK(scalar(db, "SELECT num_draft_tokens FROM arm_acceptance WHERE arm = 'B'") == 8, "num_draft_tokens");
    CHECK(scalar(db, "SELECT num_accepted_tokens FROM arm_acceptance WHERE arm = 'B'") == 3, "num_accepted_tokens");
    CHECK(fabs(scalar_d(db, "SELECT acceptance_rate FROM arm_acceptance WHERE arm = 'B'") - 3.0 / 8) < 1e-12, "rate");
    CHECK(fabs(scalar_d(db, "SELECT accept_length FROM arm_acceptance WHERE arm = 'B'") - 2.0) < 1e-12, "accept_length");
    CHECK(scalar(db, "SELECT accepted_per_pos FROM acceptance_by_position WHERE arm = 'B' AND position = 0") == 2, "pos 0");
    CHECK(scalar(db, "SELECT accepted_per_pos FROM acceptance_by_position WHERE arm = 'B' AND position = 1") == 1, "pos 1");
    CHECK(scalar(db, "SELECT accepted_per_pos FROM acceptance_by_position WHERE arm = 'B' AND position = 2") == 0, "pos 2 (zero row)");
    CHECK(scalar(db, "SELECT num_proposed FROM acceptance_by_position WHERE arm = 'B' AND position = 2") == 2, "proposed at 2");
    /* counts and consistency */
    CHECK(scalar(db, "SELECT n_requests FROM arm_throughput WHERE arm = 'A'") == 7, "requests A");
    CHECK(scalar(db, "SELECT n_runs FROM arm_throughput WHERE arm = 'B'") == 1, "failed run excluded");
    CHECK(fabs(scalar_d(db, "SELECT output_tok_per_s FROM arm_throughput WHERE arm = 'A'") - 35.0 / 10) < 1e-12, "tok/s");
    CHECK(scalar(db, "SELECT COUNT(*) FROM request_token_check WHERE consistent = 0") == 0, "tokens consistent");
    CHECK(scalar(db, "SELECT COUNT(*) FROM ab_compare WHERE arm_a = 'A' AND arm_b = 'B'") == 1, "ab row");
    CHECK(scalar(db, "SELECT COUNT(*) FROM arm_summary") == 2, "summary rows");
    sm_db_close(db);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/specmoe_exp_db_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    char dbdir[4096];
    sm_error err = {0};
    CHECK_OK(sm_resource_dir_find(SM_RESOURCE_DB, dbdir, sizeof dbdir, &err), &err);
    test_create_migrate_refuse(dbdir);
    test_migration_from_v1();
    test_read_only();
    test_views();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    TEST_MAIN_END
}
