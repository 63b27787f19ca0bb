#include "exp/report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exp/db.h"
#include "spec/sampler.h"

static char *dup_col(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? strdup((const char *)t) : NULL;
}

/* Prepares sql with one int64 parameter. */
static sm_status prep1(sqlite3 *db, const char *sql, int64_t id, const char *purpose, sqlite3_stmt **st, sm_error *err) {
    SM_TRY(sm_db_prepare(db, sql, purpose, st, err));
    sqlite3_bind_int64(*st, 1, id);
    return SM_OK;
}

static sm_status step_done(sqlite3 *db, sqlite3_stmt *st, int rc, const char *purpose, sm_error *err) {
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SM_OK : sm_db_fail(db, err, purpose);
}

static sm_status load_requests(sqlite3 *db, sm_report_arm *a, sm_error *err) {
    const char *purpose = "reading request latencies";
    sqlite3_stmt *st;
    SM_TRY(prep1(db,
                 "SELECT rl.run_id, rl.request_index, rl.ttft_s, rl.e2e_s, rl.tpot_s, rl.output_tokens, "
                 "COALESCE(SUM(s.k_proposed), 0), COALESCE(SUM(s.n_accepted), 0) "
                 "FROM request_latency rl LEFT JOIN spec_steps s ON s.run_id = rl.run_id "
                 "AND s.request_index = rl.request_index AND s.k_proposed > 0 "
                 "WHERE rl.arm_id = ? GROUP BY rl.run_id, rl.request_index ORDER BY rl.run_id, rl.request_index",
                 a->arm_id, purpose, &st, err));
    int cap = 0, rc;
    int64_t *keys = NULL; /* run_id, request_index pairs for matching ITL samples */
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (a->n_reqs == cap) {
            cap = cap ? cap * 2 : 64;
            sm_report_request *g = realloc(a->reqs, (size_t)cap * sizeof *g);
            int64_t *k = realloc(keys, (size_t)cap * 2 * sizeof *k);
            if (g) a->reqs = g;
            if (k) keys = k;
            if (!g || !k) {
                free(keys);
                sqlite3_finalize(st);
                return sm_fail(err, SM_ENOMEM, "out of memory reading requests");
            }
        }
        sm_report_request *q = &a->reqs[a->n_reqs];
        keys[2 * a->n_reqs] = sqlite3_column_int64(st, 0);
        keys[2 * a->n_reqs + 1] = sqlite3_column_int64(st, 1);
        q->ttft_s = sqlite3_column_double(st, 2);
        q->e2e_s = sqlite3_column_double(st, 3);
        q->tpot_s = sqlite3_column_type(st, 4) == SQLITE_NULL ? -1 : sqlite3_column_double(st, 4);
        q->output_tokens = sqlite3_column_int(st, 5);
        q->k_proposed = sqlite3_column_int64(st, 6);
        q->n_accepted = sqlite3_column_int64(st, 7);
        q->itl_begin = q->itl_end = 0;
        a->n_reqs++;
    }
    sm_status s = step_done(db, st, rc, purpose, err);
    if (s != SM_OK) {
        free(keys);
        return s;
    }

    purpose = "reading inter-token latencies";
    s = prep1(db,
              "SELECT run_id, request_index, itl_s FROM itl_samples WHERE arm_id = ? "
              "ORDER BY run_id, request_index, emission_index",
              a->arm_id, purpose, &st, err);
    if (s != SM_OK) {
        free(keys);
        return s;
    }
    /* Read every sample with its (run, request), then give each request its range: both lists
     * are sorted by (run, request). */
    int icap = 0;
    int64_t *ikeys = NULL;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (a->n_itl == icap) {
            icap = icap ? icap * 2 : 256;
            double *g = realloc(a->itl, (size_t)icap * sizeof *g);
            int64_t *k = realloc(ikeys, (size_t)icap * 2 * sizeof *k);
            if (g) a->itl = g;
            if (k) ikeys = k;
            if (!g || !k) {
                free(keys);
                free(ikeys);
                sqlite3_finalize(st);
                return sm_fail(err, SM_ENOMEM, "out of memory reading ITL samples");
            }
        }
        ikeys[2 * a->n_itl] = sqlite3_column_int64(st, 0);
        ikeys[2 * a->n_itl + 1] = sqlite3_column_int64(st, 1);
        a->itl[a->n_itl++] = sqlite3_column_double(st, 2);
    }
    int pos = 0;
    for (int j = 0; j < a->n_reqs; j++) {
        int64_t run = keys[2 * j], req = keys[2 * j + 1];
        while (pos < a->n_itl && (ikeys[2 * pos] < run || (ikeys[2 * pos] == run && ikeys[2 * pos + 1] < req))) pos++;
        a->reqs[j].itl_begin = pos;
        while (pos < a->n_itl && ikeys[2 * pos] == run && ikeys[2 * pos + 1] == req) pos++;
        a->reqs[j].itl_end = pos;
    }
    free(ikeys);
    free(keys);
    return step_done(db, st, rc, purpose, err);
}

static sm_status load_acceptance(sqlite3 *db, sm_report_arm *a, sm_error *err) {
    const char *purpose = "reading acceptance";
    sqlite3_stmt *st;
    SM_TRY(prep1(db,
                 "SELECT COALESCE(num_drafts, 0), COALESCE(num_draft_tokens, 0), COALESCE(num_accepted_tokens, 0) "
                 "FROM arm_acceptance WHERE arm_id = ?",
                 a->arm_id, purpose, &st, err));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        a->num_drafts = sqlite3_column_int64(st, 0);
        a->num_draft_tokens = sqlite3_column_int64(st, 1);
        a->num_accepted_tokens = sqlite3_column_int64(st, 2);
        rc = SQLITE_DONE;
    }
    SM_TRY(step_done(db, st, rc, purpose, err));

    SM_TRY(prep1(db, "SELECT MAX(position) + 1 FROM acceptance_by_position WHERE arm_id = ?", a->arm_id, purpose, &st, err));
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        a->max_k = sqlite3_column_int(st, 0);
        rc = SQLITE_DONE;
    }
    SM_TRY(step_done(db, st, rc, purpose, err));
    int n = a->max_k > 0 ? a->max_k : 0;
    SM_TRY(sm_calloc((void **)&a->accepted_per_pos, (size_t)n + 1, sizeof(int64_t), "acceptance", err));
    SM_TRY(sm_calloc((void **)&a->proposed_per_pos, (size_t)n + 1, sizeof(int64_t), "acceptance", err));
    SM_TRY(sm_calloc((void **)&a->accept_length_hist, (size_t)n + 2, sizeof(int64_t), "acceptance", err));
    SM_TRY(prep1(db,
                 "SELECT position, num_proposed, accepted_per_pos FROM acceptance_by_position WHERE arm_id = ? "
                 "ORDER BY position",
                 a->arm_id, purpose, &st, err));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int p = sqlite3_column_int(st, 0);
        if (p < 0 || p >= n) continue;
        a->proposed_per_pos[p] = sqlite3_column_int64(st, 1);
        a->accepted_per_pos[p] = sqlite3_column_int64(st, 2);
    }
    SM_TRY(step_done(db, st, rc, purpose, err));
    SM_TRY(prep1(db,
                 "SELECT s.n_accepted + 1, COUNT(*) FROM spec_steps s JOIN run_info ri ON ri.run_id = s.run_id "
                 "WHERE ri.arm_id = ? AND s.k_proposed > 0 GROUP BY 1",
                 a->arm_id, purpose, &st, err));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int len = sqlite3_column_int(st, 0);
        if (len >= 0 && len <= n + 1) a->accept_length_hist[len] = sqlite3_column_int64(st, 1);
    }
    return step_done(db, st, rc, purpose, err);
}

static sm_status load_expert_load(sqlite3 *db, sm_report_arm *a, sm_error *err) {
    const char *purpose = "reading expert load";
    sqlite3_stmt *st;
    SM_TRY(prep1(db,
                 "SELECT layer, mean_imbalance FROM expert_load_by_layer WHERE arm_id = ? AND model = 'target' "
                 "ORDER BY layer",
                 a->arm_id, purpose, &st, err));
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int layer = sqlite3_column_int(st, 0);
        if (layer < 0 || layer > 100000) continue;
        if (layer >= a->n_layers) {
            double *g = realloc(a->layer_imbalance, (size_t)(layer + 1) * sizeof *g);
            if (!g) {
                sqlite3_finalize(st);
                return sm_fail(err, SM_ENOMEM, "out of memory");
            }
            for (int i = a->n_layers; i <= layer; i++) g[i] = NAN;
            a->layer_imbalance = g;
            a->n_layers = layer + 1;
        }
        a->layer_imbalance[layer] = sqlite3_column_double(st, 1);
    }
    return step_done(db, st, rc, purpose, err);
}

sm_status sm_report_load(sqlite3 *db, const char *db_path, const char *experiment, sm_report *out, sm_error *err) {
    memset(out, 0, sizeof *out);
    out->db_path = strdup(db_path);
    const char *purpose = "finding the experiment";
    sqlite3_stmt *st;
    SM_TRY(sm_db_prepare(db,
                         "SELECT experiment_id, name, description FROM experiments WHERE ?1 IS NULL OR name = ?1 "
                         "ORDER BY experiment_id DESC LIMIT 1",
                         purpose, &st, err));
    if (experiment) sqlite3_bind_text(st, 1, experiment, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->experiment_id = sqlite3_column_int64(st, 0);
        out->experiment = dup_col(st, 1);
        out->description = dup_col(st, 2);
        rc = SQLITE_DONE;
    } else if (rc == SQLITE_DONE) {
        sqlite3_finalize(st);
        if (experiment) return sm_fail(err, SM_EINVAL, "%s: no experiment named '%s'", db_path, experiment);
        return sm_fail(err, SM_EINVAL, "%s: no experiments recorded yet", db_path);
    }
    SM_TRY(step_done(db, st, rc, purpose, err));

    purpose = "reading arms";
    SM_TRY(prep1(db,
                 "SELECT a.arm_id, a.name, a.drafter, a.num_speculative_tokens, a.temperature, "
                 "COALESCE(t.n_runs, 0), COALESCE(t.wall_s, 0), t.output_tok_per_s, "
                 "a.target_device, a.draft_device, a.target_chunked_prefill_size, a.draft_chunked_prefill_size "
                 "FROM arms a LEFT JOIN arm_throughput t ON t.arm_id = a.arm_id "
                 "WHERE a.experiment_id = ? ORDER BY a.arm_index",
                 out->experiment_id, purpose, &st, err));
    int cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->n_arms == cap) {
            cap = cap ? cap * 2 : 8;
            sm_report_arm *g = realloc(out->arms, (size_t)cap * sizeof *g);
            if (!g) {
                sqlite3_finalize(st);
                return sm_fail(err, SM_ENOMEM, "out of memory reading arms");
            }
            out->arms = g;
        }
        sm_report_arm *a = &out->arms[out->n_arms++];
        memset(a, 0, sizeof *a);
        a->arm_id = sqlite3_column_int64(st, 0);
        a->name = dup_col(st, 1);
        a->drafter = dup_col(st, 2);
        a->k = sqlite3_column_int(st, 3);
        a->temperature = sqlite3_column_double(st, 4);
        a->n_runs = sqlite3_column_int(st, 5);
        a->wall_s = sqlite3_column_double(st, 6);
        a->output_tok_per_s = sqlite3_column_type(st, 7) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 7);
        a->target_device = dup_col(st, 8);
        a->draft_device = dup_col(st, 9);
        a->target_chunk = sqlite3_column_int(st, 10); /* NULL reads as 0: the default */
        a->draft_chunk = sqlite3_column_int(st, 11);
    }
    SM_TRY(step_done(db, st, rc, purpose, err));
    for (int i = 0; i < out->n_arms; i++) {
        SM_TRY(load_requests(db, &out->arms[i], err));
        SM_TRY(load_acceptance(db, &out->arms[i], err));
        SM_TRY(load_expert_load(db, &out->arms[i], err));
    }
    return SM_OK;
}

void sm_report_free(sm_report *r) {
    for (int i = 0; i < r->n_arms; i++) {
        sm_report_arm *a = &r->arms[i];
        free(a->name);
        free(a->drafter);
        free(a->target_device);
        free(a->draft_device);
        free(a->reqs);
        free(a->itl);
        free(a->accepted_per_pos);
        free(a->proposed_per_pos);
        free(a->accept_length_hist);
        free(a->layer_imbalance);
    }
    free(r->arms);
    free(r->experiment);
    free(r->description);
    free(r->db_path);
    memset(r, 0, sizeof *r);
}

/* ---- statistics ---------------------------------------------------------------------------- */

const char *sm_report_metric_name(sm_report_metric m) {
    static const char *const names[] = {"ttft", "itl", "tpot", "e2e"};
    return (unsigned)m < SM_METRIC_COUNT ? names[m] : "acceptance_rate";
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest rank: the sample of rank ceil(p/100 * n), 1-based (db/views.sql). */
static double nearest_rank(double *v, int n, double p) {
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    long rank = (long)ceil(p / 100.0 * n - 1e-9);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return v[rank - 1];
}

/* Samples of metric m for the requests idx[0..n) (NULL = all), into *buf (grown). */
static int gather(const sm_report_arm *a, sm_report_metric m, const int *idx, int n, double **buf, int *cap) {
    int used = 0;
    for (int j = 0; j < n; j++) {
        const sm_report_request *q = &a->reqs[idx ? idx[j] : j];
        int need = used + (m == SM_METRIC_ITL ? q->itl_end - q->itl_begin : 1);
        if (need > *cap) {
            int ncap = *cap ? *cap : 256;
            while (ncap < need) ncap *= 2;
            double *g = realloc(*buf, (size_t)ncap * sizeof *g);
            if (!g) return -1;
            *buf = g;
            *cap = ncap;
        }
        switch (m) {
        case SM_METRIC_TTFT: (*buf)[used++] = q->ttft_s; break;
        case SM_METRIC_E2E: (*buf)[used++] = q->e2e_s; break;
        case SM_METRIC_TPOT:
            if (q->tpot_s >= 0) (*buf)[used++] = q->tpot_s;
            break;
        case SM_METRIC_ITL:
            for (int i = q->itl_begin; i < q->itl_end; i++) (*buf)[used++] = a->itl[i];
            break;
        default: break;
        }
    }
    return used;
}

double sm_report_percentile(const sm_report_arm *a, sm_report_metric m, double p, int *n_out) {
    double *buf = NULL;
    int cap = 0;
    int n = gather(a, m, NULL, a->n_reqs, &buf, &cap);
    if (n_out) *n_out = n > 0 ? n : 0;
    double v = n > 0 ? nearest_rank(buf, n, p) : NAN;
    free(buf);
    return v;
}

double sm_report_acceptance_rate(const sm_report_arm *a) {
    return a->num_draft_tokens > 0 ? (double)a->num_accepted_tokens / (double)a->num_draft_tokens : NAN;
}

static double quantity(const sm_report_arm *a, sm_report_metric m, double p, const int *idx, int n, double **buf,
                       int *cap) {
    if (m == SM_METRIC_COUNT) {
        int64_t k = 0, acc = 0;
        for (int j = 0; j < n; j++) {
            k += a->reqs[idx ? idx[j] : j].k_proposed;
            acc += a->reqs[idx ? idx[j] : j].n_accepted;
        }
        return k > 0 ? (double)acc / (double)k : NAN;
    }
    int used = gather(a, m, idx, n, buf, cap);
    return used > 0 ? nearest_rank(*buf, used, p) : NAN;
}

sm_report_diff sm_report_bootstrap(const sm_report_arm *a, const sm_report_arm *b, sm_report_metric m, double p,
                                   int iterations, uint64_t seed) {
    sm_report_diff d = {0};
    if (a->n_reqs == 0 || b->n_reqs == 0 || iterations < 10) return d;
    double *buf = NULL;
    int cap = 0;
    double qa = quantity(a, m, p, NULL, a->n_reqs, &buf, &cap), qb = quantity(b, m, p, NULL, b->n_reqs, &buf, &cap);
    if (isnan(qa) || isnan(qb)) {
        free(buf);
        return d;
    }
    d.estimate = qb - qa;
    int *ia = malloc((size_t)a->n_reqs * sizeof *ia), *ib = malloc((size_t)b->n_reqs * sizeof *ib);
    double *diffs = malloc((size_t)iterations * sizeof *diffs);
    if (!ia || !ib || !diffs) {
        free(ia), free(ib), free(diffs), free(buf);
        return d;
    }
    sm_rng rng;
    sm_rng_seed(&rng, seed);
    int n = 0;
    for (int it = 0; it < iterations; it++) {
        for (int j = 0; j < a->n_reqs; j++) ia[j] = (int)(sm_rng_next(&rng) % (uint64_t)a->n_reqs);
        for (int j = 0; j < b->n_reqs; j++) ib[j] = (int)(sm_rng_next(&rng) % (uint64_t)b->n_reqs);
        double x = quantity(a, m, p, ia, a->n_reqs, &buf, &cap), y = quantity(b, m, p, ib, b->n_reqs, &buf, &cap);
        if (!isnan(x) && !isnan(y)) diffs[n++] = y - x;
    }
    if (n >= iterations / 2) {
        qsort(diffs, (size_t)n, sizeof *diffs, cmp_double);
        d.lo = diffs[(int)floor(0.025 * (n - 1))];
        d.hi = diffs[(int)ceil(0.975 * (n - 1))];
        d.defined = true;
        d.significant = d.lo > 0 || d.hi < 0;
    }
    free(ia), free(ib), free(diffs), free(buf);
    return d;
}
