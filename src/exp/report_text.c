/* src/exp/report_text.c — `specmoe report` for people at a terminal: a table per arm and, for
 * every pair of arms, differences with bootstrap 95% intervals and a plain verdict. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "exp/report.h"

#define BOOTSTRAP_ITERATIONS 1000

static bool same_text(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

/* Seconds as milliseconds, "-" when undefined. */
static const char *ms(double s, char *buf, size_t cap) {
    if (isnan(s)) snprintf(buf, cap, "-");
    else snprintf(buf, cap, "%.3f", s * 1e3);
    return buf;
}

static void print_diff(FILE *f, const char *label, sm_report_diff d, bool seconds) {
    double scale = seconds ? 1e3 : 1.0;
    const char *unit = seconds ? " ms" : "";
    if (!d.defined) {
        fprintf(f, "    %-18s n/a (not measured in both arms)\n", label);
        return;
    }
    fprintf(f, "    %-18s %+10.4f%s  95%% CI [%+.4f, %+.4f]  %s\n", label, d.estimate * scale, unit, d.lo * scale,
            d.hi * scale, d.significant ? "significant" : "not significant (the interval includes 0)");
}

void sm_report_print_text(const sm_report *r, FILE *f) {
    fprintf(f, "experiment '%s' (id %lld) in %s%s%s\n\n", r->experiment, (long long)r->experiment_id, r->db_path,
            r->description ? ": " : "", r->description ? r->description : "");
    /* A device column only when the arms' models do not all run on one device: then it
     * explains a latency gap. Shown as target/draft ("cuda/cpu"), or the target's alone. */
    bool show_devices = false;
    const char *first = r->n_arms ? r->arms[0].target_device : NULL;
    for (int i = 0; i < r->n_arms; i++) {
        const sm_report_arm *a = &r->arms[i];
        if (!same_text(a->target_device, first) || (a->draft_device && !same_text(a->draft_device, first)))
            show_devices = true;
    }
    /* Likewise a chunk column when the arms' rows per forward pass differ ("-": the default). */
    bool show_chunks = false;
    for (int i = 1; i < r->n_arms; i++)
        if (r->arms[i].target_chunk != r->arms[0].target_chunk || r->arms[i].draft_chunk != r->arms[0].draft_chunk)
            show_chunks = true;
    fprintf(f, "%-20s ", "arm");
    if (show_devices) fprintf(f, "%-13s ", "device (t/d)");
    if (show_chunks) fprintf(f, "%-13s ", "chunk (t/d)");
    fprintf(f, "%5s %6s %9s %8s %7s %8s  %-19s %-19s %-19s %-19s\n", "runs", "reqs", "tok/s", "accept",
            "acc_len", "drafts", "TTFT p50/p99 ms", "ITL p50/p99 ms", "TPOT p50/p99 ms", "E2E p50/p99 ms");
    for (int i = 0; i < r->n_arms; i++) {
        const sm_report_arm *a = &r->arms[i];
        char cols[4][64];
        for (int m = 0; m < SM_METRIC_COUNT; m++) {
            char p50[24], p99[24];
            int n;
            double v50 = sm_report_percentile(a, (sm_report_metric)m, 50, &n);
            double v99 = sm_report_percentile(a, (sm_report_metric)m, 99, NULL);
            snprintf(cols[m], sizeof cols[m], "%s/%s (n=%d)", ms(v50, p50, sizeof p50), ms(v99, p99, sizeof p99), n);
        }
        double acc = sm_report_acceptance_rate(a);
        char accs[16], lens[16];
        if (isnan(acc)) snprintf(accs, sizeof accs, "-"), snprintf(lens, sizeof lens, "-");
        else {
            snprintf(accs, sizeof accs, "%.3f", acc);
            snprintf(lens, sizeof lens, "%.3f", 1.0 + (double)a->num_accepted_tokens / (double)a->num_drafts);
        }
        fprintf(f, "%-20s ", a->name);
        if (show_devices) {
            char dev[64];
            snprintf(dev, sizeof dev, "%s%s%s", a->target_device ? a->target_device : "?", a->draft_device ? "/" : "",
                     a->draft_device ? a->draft_device : "");
            fprintf(f, "%-13s ", dev);
        }
        if (show_chunks) {
            char t[16] = "-", d[16] = "-", both[40];
            if (a->target_chunk) snprintf(t, sizeof t, "%d", a->target_chunk);
            if (a->draft_chunk) snprintf(d, sizeof d, "%d", a->draft_chunk);
            snprintf(both, sizeof both, "%s%s%s", t, a->draft_device ? "/" : "", a->draft_device ? d : "");
            fprintf(f, "%-13s ", both);
        }
        fprintf(f, "%5d %6d %9.1f %8s %7s %8lld  %-19s %-19s %-19s %-19s\n", a->n_runs, a->n_reqs,
                isnan(a->output_tok_per_s) ? 0.0 : a->output_tok_per_s, accs, lens, (long long)a->num_drafts, cols[0],
                cols[1], cols[2], cols[3]);
    }
    fprintf(f, "\nn = samples behind each percentile: a p99 over fewer than 100 samples is the maximum.\n");

    if (r->n_arms < 2) return;
    fprintf(f, "\nA/B differences (B - A), bootstrap over requests, %d resamples:\n", BOOTSTRAP_ITERATIONS);
    for (int i = 0; i < r->n_arms; i++)
        for (int j = i + 1; j < r->n_arms; j++) {
            const sm_report_arm *a = &r->arms[i], *b = &r->arms[j];
            fprintf(f, "\n  A = %s, B = %s\n", a->name, b->name);
            uint64_t seed = (uint64_t)(i * 1000 + j);
            print_diff(f, "acceptance_rate", sm_report_bootstrap(a, b, SM_METRIC_COUNT, 0, BOOTSTRAP_ITERATIONS, seed), false);
            for (int m = 0; m < SM_METRIC_COUNT; m++)
                for (int pi = 0; pi < 2; pi++) {
                    double p = pi ? 99 : 50;
                    char label[32];
                    snprintf(label, sizeof label, "%s p%.0f", sm_report_metric_name((sm_report_metric)m), p);
                    print_diff(f, label, sm_report_bootstrap(a, b, (sm_report_metric)m, p, BOOTSTRAP_ITERATIONS, seed + 7 * (uint64_t)(m * 2 + pi + 1)), true);
                }
        }
}
