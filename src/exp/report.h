/* src/exp/report.h — reading one experiment back from a results database for `specmoe report`:
 * per-arm samples (one entry per finished request of a completed run), the comparisons between
 * arms with bootstrap confidence intervals, and the text and HTML renderings. */
#ifndef SM_EXP_REPORT_H
#define SM_EXP_REPORT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sqlite3.h>

#include "core/status.h"

typedef struct sm_report_request {
    double ttft_s, e2e_s, tpot_s; /* tpot_s < 0 when output_tokens < 2 */
    int output_tokens;
    int64_t k_proposed, n_accepted; /* sums over the request's drafts */
    int itl_begin, itl_end;         /* its ITL samples in arm.itl */
} sm_report_request;

typedef struct sm_report_arm {
    int64_t arm_id;
    char *name, *drafter;
    char *target_device, *draft_device; /* "cpu", "cuda"; draft_device NULL without a draft model */
    int target_chunk, draft_chunk;      /* chunked_prefill_size; 0 = the engine's default (NULL) */
    int k;
    double temperature;
    int n_runs;
    double wall_s, output_tok_per_s;
    sm_report_request *reqs;
    int n_reqs;
    double *itl;
    int n_itl;
    /* acceptance */
    int64_t num_drafts, num_draft_tokens, num_accepted_tokens;
    int64_t *accepted_per_pos, *proposed_per_pos; /* [max_k] */
    int max_k;
    int64_t *accept_length_hist;                  /* [max_k + 2]: drafts with accept length i */
    /* target expert load per layer (mean max/mean over passes), [n_layers] */
    double *layer_imbalance;
    int n_layers;
} sm_report_arm;

typedef struct sm_report {
    int64_t experiment_id;
    char *experiment, *description, *db_path;
    sm_report_arm *arms;
    int n_arms;
} sm_report;

/* experiment NULL = the most recent experiment. */
sm_status sm_report_load(sqlite3 *db, const char *db_path, const char *experiment, sm_report *out, sm_error *err);
void sm_report_free(sm_report *r);

/* ---- statistics ---------------------------------------------------------------------------- */

typedef enum sm_report_metric { SM_METRIC_TTFT, SM_METRIC_ITL, SM_METRIC_TPOT, SM_METRIC_E2E, SM_METRIC_COUNT } sm_report_metric;
const char *sm_report_metric_name(sm_report_metric m); /* "ttft", ... */

/* Nearest-rank percentile (as db/views.sql) of an arm's samples; NAN when none. n_out: samples. */
double sm_report_percentile(const sm_report_arm *a, sm_report_metric m, double p, int *n_out);
double sm_report_acceptance_rate(const sm_report_arm *a); /* NAN when nothing was drafted */

typedef struct sm_report_diff {
    double estimate;          /* b - a on all samples */
    double lo, hi;            /* bootstrap 95% interval (2.5th, 97.5th percentile) */
    bool defined, significant;/* significant: the interval excludes 0 */
} sm_report_diff;

/* quantity: metric percentile p (0..100), or acceptance rate when m == SM_METRIC_COUNT.
 * Resamples each arm's requests with replacement `iterations` times (seeded: reproducible). */
sm_report_diff sm_report_bootstrap(const sm_report_arm *a, const sm_report_arm *b, sm_report_metric m, double p,
                                   int iterations, uint64_t seed);

/* ---- renderings ---------------------------------------------------------------------------- */

void sm_report_print_text(const sm_report *r, FILE *f);
sm_status sm_report_write_html(const sm_report *r, const char *path, sm_error *err);

#endif
