#include "exp/recorder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exp/db.h"
#include "exp/environment.h"

enum {
    ST_REQUEST,
    ST_EMISSION,
    ST_STEP,
    ST_MOE,
    ST_ROUTE,
    ST_COUNT
};

static const char *const statement_sql[ST_COUNT] = {
    [ST_REQUEST] = "INSERT INTO requests (run_id, request_index, prompt_tokens, output_tokens, arrival_s, "
                   "first_token_s, finish_s, status, finish_reason) VALUES (?,?,?,?,?,?,?,?,?)",
    [ST_EMISSION] = "INSERT INTO token_emissions (run_id, request_index, emission_index, time_s, n_tokens) "
                    "VALUES (?,?,?,?,?)",
    [ST_STEP] = "INSERT INTO spec_steps (run_id, request_index, step, time_s, k_proposed, n_accepted, accepted_mask, "
                "accepted_positions, n_emitted, draft_s, verify_s, overhead_s, experts_touched_verify, "
                "experts_touched_single) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    [ST_MOE] = "INSERT INTO moe_layer_events (run_id, step, model, pass, layer, n_tokens, n_experts, "
               "distinct_experts, max_tokens_per_expert, mean_tokens_per_expert) VALUES (?,?,?,?,?,?,?,?,?,?)",
    [ST_ROUTE] = "INSERT INTO route_traces (run_id, request_index, model, position, layer, expert_ids, weights) "
                 "VALUES (?,?,?,?,?,?,?)",
};

static const char *const statement_purpose[ST_COUNT] = {
    [ST_REQUEST] = "recording a request",       [ST_EMISSION] = "recording a token emission",
    [ST_STEP] = "recording a speculative step", [ST_MOE] = "recording an MoE layer event",
    [ST_ROUTE] = "recording a route trace",
};

struct sm_recorder {
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    int64_t experiment_id;
    int64_t run_id;   /* 0 when no run is open */
    bool in_run;
};

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Steps a bound statement that returns no rows, and resets it for the next use. */
static sm_status run_stmt(sm_recorder *r, sqlite3_stmt *st, const char *purpose, sm_error *err) {
    int rc = sqlite3_step(st);
    sm_status s = rc == SQLITE_DONE || rc == SQLITE_ROW ? SM_OK : sm_db_fail(r->db, err, purpose);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return s;
}

/* One-off statement: prepare, bind with the callback's help, step, finalize. */
static sm_status exec_once(sm_recorder *r, const char *sql, const char *purpose, sqlite3_stmt **keep, sm_error *err) {
    sqlite3_stmt *st;
    SM_TRY(sm_db_prepare(r->db, sql, purpose, &st, err));
    *keep = st;
    return SM_OK;
}

sm_status sm_recorder_create(sqlite3 *db, sm_recorder **out, sm_error *err) {
    sm_recorder *r;
    SM_TRY(sm_calloc((void **)&r, 1, sizeof *r, "recorder", err));
    r->db = db;
    for (int i = 0; i < ST_COUNT; i++) {
        sm_status s = sm_db_prepare(db, statement_sql[i], statement_purpose[i], &r->st[i], err);
        if (s != SM_OK) {
            sm_recorder_free(r);
            return s;
        }
    }
    *out = r;
    return SM_OK;
}

void sm_recorder_free(sm_recorder *r) {
    if (!r) return;
    if (r->in_run) {
        sm_error ignored;
        sm_recorder_end_run(r, SM_RUN_INTERRUPTED, "specmoe stopped before the run finished", &ignored);
    }
    for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(r->st[i]);
    free(r);
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s) {
    if (s) sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, i);
}

static sm_status insert_environment(sm_recorder *r, sm_error *err) {
    sm_environment env;
    sm_environment_capture(&env, NULL);
    sqlite3_stmt *st;
    SM_TRY(exec_once(r,
                     "INSERT INTO environment (experiment_id, host, os, cpu, cpu_count, gpu_name, gpu_count, "
                     "gpu_driver, cuda_version, nccl_version, git_commit, build_flags, compiler, specmoe_version, "
                     "captured_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     "recording the environment", &st, err));
    sqlite3_bind_int64(st, 1, r->experiment_id);
    const char *texts[] = {env.host, env.os, env.cpu};
    for (int i = 0; i < 3; i++) bind_text_or_null(st, 2 + i, texts[i][0] ? texts[i] : NULL);
    sqlite3_bind_int(st, 5, env.cpu_count);
    bind_text_or_null(st, 6, env.gpu_name[0] ? env.gpu_name : NULL);
    if (env.gpu_count) sqlite3_bind_int(st, 7, env.gpu_count);
    bind_text_or_null(st, 8, env.gpu_driver[0] ? env.gpu_driver : NULL);
    bind_text_or_null(st, 9, env.cuda_version[0] ? env.cuda_version : NULL);
    bind_text_or_null(st, 10, env.nccl_version[0] ? env.nccl_version : NULL);
    bind_text_or_null(st, 11, env.git_commit);
    bind_text_or_null(st, 12, env.build_flags);
    bind_text_or_null(st, 13, env.compiler[0] ? env.compiler : NULL);
    bind_text_or_null(st, 14, env.specmoe_version);
    sqlite3_bind_double(st, 15, wall_now());
    sm_status s = run_stmt(r, st, "recording the environment", err);
    sqlite3_finalize(st);
    return s;
}

static sm_status insert_arm(sm_recorder *r, const sm_arm *a, int64_t *arm_id, sm_error *err) {
    /* Column list built from the setting table: adding a setting never touches this code. */
    char sql[4096];
    size_t used = (size_t)snprintf(sql, sizeof sql, "INSERT INTO arms (experiment_id, arm_index, name, settings_json");
    for (int i = 0; i < sm_n_arm_settings; i++)
        used += (size_t)snprintf(sql + used, sizeof sql - used, ", %s", sm_arm_settings[i].name);
    used += (size_t)snprintf(sql + used, sizeof sql - used, ") VALUES (?,?,?,?");
    for (int i = 0; i < sm_n_arm_settings; i++) used += (size_t)snprintf(sql + used, sizeof sql - used, ",?");
    if (used + 2 >= sizeof sql) return sm_fail(err, SM_EINTERNAL, "arms INSERT statement too long");
    snprintf(sql + used, sizeof sql - used, ")");
    sqlite3_stmt *st;
    SM_TRY(exec_once(r, sql, "recording an arm", &st, err));
    sqlite3_bind_int64(st, 1, r->experiment_id);
    sqlite3_bind_int(st, 2, a->index);
    sqlite3_bind_text(st, 3, a->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, a->settings_json, -1, SQLITE_TRANSIENT);
    for (int i = 0; i < sm_n_arm_settings; i++) {
        const sm_setting *set = &sm_arm_settings[i];
        const char *p = (const char *)a + set->offset;
        int col = 5 + i;
        switch (set->kind) {
        case SM_SETTING_STRING: bind_text_or_null(st, col, *(char *const *)p); break;
        case SM_SETTING_INT:
            if (set->nullable && *(const int *)p == 0) sqlite3_bind_null(st, col);
            else sqlite3_bind_int(st, col, *(const int *)p);
            break;
        case SM_SETTING_INT64: sqlite3_bind_int64(st, col, *(const int64_t *)p); break;
        case SM_SETTING_REAL:
            if (set->nullable && *(const double *)p == 0) sqlite3_bind_null(st, col);
            else sqlite3_bind_double(st, col, *(const double *)p);
            break;
        }
    }
    sm_status s = run_stmt(r, st, "recording an arm", err);
    sqlite3_finalize(st);
    if (s == SM_OK) *arm_id = sqlite3_last_insert_rowid(r->db);
    return s;
}

static sm_status find_experiment(sm_recorder *r, const sm_experiment *x, int64_t *arm_ids, bool *found, sm_error *err) {
    *found = false;
    sqlite3_stmt *st;
    SM_TRY(exec_once(r,
                     "SELECT experiment_id FROM experiments WHERE name = ? AND settings_json = ? "
                     "ORDER BY experiment_id DESC LIMIT 1",
                     "looking for the experiment to resume", &st, err));
    sqlite3_bind_text(st, 1, x->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, x->settings_json, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        r->experiment_id = sqlite3_column_int64(st, 0);
        *found = true;
    } else if (rc != SQLITE_DONE) {
        sm_db_fail(r->db, err, "looking for the experiment to resume");
        sqlite3_finalize(st);
        return SM_ESQL;
    }
    sqlite3_finalize(st);
    if (!*found) return SM_OK;
    SM_TRY(exec_once(r, "SELECT arm_id FROM arms WHERE experiment_id = ? AND arm_index = ?", "looking up arms", &st, err));
    sm_status s = SM_OK;
    for (int i = 0; s == SM_OK && i < x->n_arms; i++) {
        sqlite3_bind_int64(st, 1, r->experiment_id);
        sqlite3_bind_int(st, 2, i);
        if (sqlite3_step(st) == SQLITE_ROW) arm_ids[i] = sqlite3_column_int64(st, 0);
        else s = sm_fail(err, SM_EFORMAT, "experiment %lld has no arm %d; start over with --fresh",
                         (long long)r->experiment_id, i);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return s;
}

sm_status sm_recorder_open_experiment(sm_recorder *r, const sm_experiment *x, bool fresh, int64_t *experiment_id,
                                      bool *resumed, int64_t *arm_ids, sm_error *err) {
    *resumed = false;
    if (!fresh) {
        SM_TRY(find_experiment(r, x, arm_ids, resumed, err));
        if (*resumed) {
            *experiment_id = r->experiment_id;
            return SM_OK;
        }
    }
    SM_TRY(sm_db_exec(r->db, "BEGIN IMMEDIATE", "recording the experiment", err));
    sqlite3_stmt *st;
    sm_status s = exec_once(r,
                            "INSERT INTO experiments (name, description, script_path, script_text, settings_json, "
                            "created_at) VALUES (?,?,?,?,?,?)",
                            "recording the experiment", &st, err);
    if (s == SM_OK) {
        bind_text_or_null(st, 1, x->name);
        bind_text_or_null(st, 2, x->description);
        bind_text_or_null(st, 3, x->script_path);
        bind_text_or_null(st, 4, x->script_text);
        bind_text_or_null(st, 5, x->settings_json);
        sqlite3_bind_double(st, 6, wall_now());
        s = run_stmt(r, st, "recording the experiment", err);
        sqlite3_finalize(st);
    }
    if (s == SM_OK) {
        r->experiment_id = sqlite3_last_insert_rowid(r->db);
        s = insert_environment(r, err);
    }
    for (int i = 0; s == SM_OK && i < x->n_arms; i++) s = insert_arm(r, &x->arms[i], &arm_ids[i], err);
    if (s == SM_OK) s = sm_db_exec(r->db, "COMMIT", "recording the experiment", err);
    if (s != SM_OK) {
        sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
        return s;
    }
    *experiment_id = r->experiment_id;
    return SM_OK;
}

sm_status sm_recorder_close_experiment(sm_recorder *r, sm_error *err) {
    sqlite3_stmt *st;
    SM_TRY(exec_once(r, "UPDATE experiments SET ended_at = ? WHERE experiment_id = ?", "closing the experiment", &st, err));
    sqlite3_bind_double(st, 1, wall_now());
    sqlite3_bind_int64(st, 2, r->experiment_id);
    sm_status s = run_stmt(r, st, "closing the experiment", err);
    sqlite3_finalize(st);
    return s;
}

sm_status sm_recorder_run_complete(sm_recorder *r, int64_t arm_id, int repeat, bool *complete, sm_error *err) {
    sqlite3_stmt *st;
    SM_TRY(exec_once(r, "SELECT COUNT(*) FROM runs WHERE arm_id = ? AND repeat_index = ? AND status = 'ok'",
                     "checking for a completed run", &st, err));
    sqlite3_bind_int64(st, 1, arm_id);
    sqlite3_bind_int(st, 2, repeat);
    sm_status s = sqlite3_step(st) == SQLITE_ROW ? SM_OK : sm_db_fail(r->db, err, "checking for a completed run");
    *complete = s == SM_OK && sqlite3_column_int(st, 0) > 0;
    sqlite3_finalize(st);
    return s;
}

sm_status sm_recorder_begin_run(sm_recorder *r, int64_t arm_id, int repeat, int64_t seed, int64_t *run_id,
                                sm_error *err) {
    if (r->in_run) return sm_fail(err, SM_EINTERNAL, "begin_run while run %lld is open", (long long)r->run_id);
    sqlite3_stmt *st;
    SM_TRY(exec_once(r, "INSERT INTO runs (arm_id, repeat_index, seed, status, started_at) VALUES (?,?,?,'running',?)",
                     "starting a run", &st, err));
    sqlite3_bind_int64(st, 1, arm_id);
    sqlite3_bind_int(st, 2, repeat);
    sqlite3_bind_int64(st, 3, seed);
    sqlite3_bind_double(st, 4, wall_now());
    sm_status s = run_stmt(r, st, "starting a run", err);
    sqlite3_finalize(st);
    SM_TRY(s);
    r->run_id = sqlite3_last_insert_rowid(r->db);
    SM_TRY(sm_db_exec(r->db, "BEGIN IMMEDIATE", "starting a run's transaction", err));
    r->in_run = true;
    *run_id = r->run_id;
    return SM_OK;
}

sm_status sm_recorder_end_run(sm_recorder *r, sm_run_outcome outcome, const char *message, sm_error *err) {
    if (!r->in_run) return sm_fail(err, SM_EINTERNAL, "end_run without an open run");
    r->in_run = false;
    sqlite3_stmt *st;
    sm_status s = SM_OK;
    if (outcome == SM_RUN_OK) {
        s = exec_once(r, "UPDATE runs SET status = 'ok', ended_at = ? WHERE run_id = ?", "finishing a run", &st, err);
        if (s == SM_OK) {
            sqlite3_bind_double(st, 1, wall_now());
            sqlite3_bind_int64(st, 2, r->run_id);
            s = run_stmt(r, st, "finishing a run", err);
            sqlite3_finalize(st);
        }
        /* The deferred foreign keys are checked here: every emission has its request. */
        if (s == SM_OK) s = sm_db_exec(r->db, "COMMIT", "committing a run", err);
        if (s == SM_OK) return SM_OK;
        sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
        outcome = SM_RUN_FAILED;
        message = err->msg;
    } else {
        sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
    }
    /* Outside the rolled-back transaction: the run's row says what happened. */
    char msg_copy[SM_ERROR_MSG_CAP];
    snprintf(msg_copy, sizeof msg_copy, "%s", message ? message : "");
    sm_error local;
    sm_status s2 = exec_once(r, "UPDATE runs SET status = ?, error_message = ?, ended_at = ? WHERE run_id = ?",
                             "marking a run as failed", &st, &local);
    if (s2 == SM_OK) {
        sqlite3_bind_text(st, 1, outcome == SM_RUN_INTERRUPTED ? "interrupted" : "failed", -1, SQLITE_STATIC);
        bind_text_or_null(st, 2, msg_copy[0] ? msg_copy : NULL);
        sqlite3_bind_double(st, 3, wall_now());
        sqlite3_bind_int64(st, 4, r->run_id);
        s2 = run_stmt(r, st, "marking a run as failed", &local);
        sqlite3_finalize(st);
    }
    if (s != SM_OK) return s;
    if (s2 != SM_OK && err) *err = local;
    return s2;
}

sm_status sm_recorder_request(sm_recorder *r, const sm_recorded_request *q, sm_error *err) {
    sqlite3_stmt *st = r->st[ST_REQUEST];
    sqlite3_bind_int64(st, 1, r->run_id);
    sqlite3_bind_int(st, 2, q->request_index);
    sqlite3_bind_int(st, 3, q->prompt_tokens);
    sqlite3_bind_int(st, 4, q->output_tokens);
    sqlite3_bind_double(st, 5, q->arrival_s);
    if (q->first_token_s >= 0) sqlite3_bind_double(st, 6, q->first_token_s);
    if (q->finish_s >= 0) sqlite3_bind_double(st, 7, q->finish_s);
    sqlite3_bind_text(st, 8, q->status, -1, SQLITE_STATIC);
    bind_text_or_null(st, 9, q->finish_reason);
    return run_stmt(r, st, statement_purpose[ST_REQUEST], err);
}

sm_status sm_recorder_emission(sm_recorder *r, int request_index, int emission_index, double time_s, int n_tokens,
                               sm_error *err) {
    sqlite3_stmt *st = r->st[ST_EMISSION];
    sqlite3_bind_int64(st, 1, r->run_id);
    sqlite3_bind_int(st, 2, request_index);
    sqlite3_bind_int(st, 3, emission_index);
    sqlite3_bind_double(st, 4, time_s);
    sqlite3_bind_int(st, 5, n_tokens);
    return run_stmt(r, st, statement_purpose[ST_EMISSION], err);
}

sm_status sm_recorder_step(sm_recorder *r, const sm_recorded_step *s, sm_error *err) {
    sqlite3_stmt *st = r->st[ST_STEP];
    char positions[64 * 4 + 4];
    size_t used = 0;
    positions[used++] = '[';
    for (int i = 0; i < s->k_proposed && i < 64; i++)
        if (s->accepted_mask >> i & 1)
            used += (size_t)snprintf(positions + used, sizeof positions - used, "%s%d", used > 1 ? "," : "", i);
    snprintf(positions + used, sizeof positions - used, "]");
    sqlite3_bind_int64(st, 1, r->run_id);
    sqlite3_bind_int(st, 2, s->request_index);
    sqlite3_bind_int64(st, 3, s->step);
    sqlite3_bind_double(st, 4, s->time_s);
    sqlite3_bind_int(st, 5, s->k_proposed);
    sqlite3_bind_int(st, 6, s->n_accepted);
    if (s->k_proposed <= 62) sqlite3_bind_int64(st, 7, (int64_t)s->accepted_mask);
    sqlite3_bind_text(st, 8, positions, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 9, s->n_emitted);
    sqlite3_bind_double(st, 10, s->draft_s);
    sqlite3_bind_double(st, 11, s->verify_s);
    sqlite3_bind_double(st, 12, s->overhead_s);
    if (s->experts_touched_verify >= 0) sqlite3_bind_int64(st, 13, s->experts_touched_verify);
    if (s->experts_touched_single >= 0) sqlite3_bind_int64(st, 14, s->experts_touched_single);
    return run_stmt(r, st, statement_purpose[ST_STEP], err);
}

sm_status sm_recorder_moe(sm_recorder *r, const sm_recorded_moe *m, sm_error *err) {
    sqlite3_stmt *st = r->st[ST_MOE];
    sqlite3_bind_int64(st, 1, r->run_id);
    sqlite3_bind_int64(st, 2, m->step);
    sqlite3_bind_text(st, 3, m->model, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, m->pass, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, m->layer);
    sqlite3_bind_int(st, 6, m->n_tokens);
    sqlite3_bind_int(st, 7, m->n_experts);
    sqlite3_bind_int(st, 8, m->distinct_experts);
    sqlite3_bind_int(st, 9, m->max_tokens_per_expert);
    sqlite3_bind_double(st, 10, m->mean_tokens_per_expert);
    return run_stmt(r, st, statement_purpose[ST_MOE], err);
}

sm_status sm_recorder_route(sm_recorder *r, int request_index, const char *model, int position, int layer, int top_k,
                            const int *expert_ids, const float *weights, sm_error *err) {
    char ids[1024], ws[2048];
    size_t ui = 0, uw = 0;
    ids[ui++] = '[';
    ws[uw++] = '[';
    for (int i = 0; i < top_k && ui < sizeof ids - 16 && uw < sizeof ws - 32; i++) {
        ui += (size_t)snprintf(ids + ui, sizeof ids - ui, "%s%d", i ? "," : "", expert_ids[i]);
        uw += (size_t)snprintf(ws + uw, sizeof ws - uw, "%s%.6g", i ? "," : "", (double)weights[i]);
    }
    snprintf(ids + ui, sizeof ids - ui, "]");
    snprintf(ws + uw, sizeof ws - uw, "]");
    sqlite3_stmt *st = r->st[ST_ROUTE];
    sqlite3_bind_int64(st, 1, r->run_id);
    sqlite3_bind_int(st, 2, request_index);
    sqlite3_bind_text(st, 3, model, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, position);
    sqlite3_bind_int(st, 5, layer);
    sqlite3_bind_text(st, 6, ids, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 7, ws, -1, SQLITE_TRANSIENT);
    return run_stmt(r, st, statement_purpose[ST_ROUTE], err);
}
