/* src/exp/report_html.c — `specmoe report --html`: one self-contained page (no scripts, no
 * external files) with the report's tables and inline SVG plots. Every plotted series is a
 * <g class="series" data-plot=".." data-arm=".."> so tools (and the test) can find them. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "exp/report.h"

#define W 640
#define H 320
#define ML 64 /* margins */
#define MR 150
#define MT 20
#define MB 44

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

static void esc(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

typedef struct axis {
    double lo, hi;
    bool log;
} axis;

static double map(const axis *a, double v, double p0, double p1) {
    double t = a->log ? (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo)) : (v - a->lo) / (a->hi - a->lo);
    if (!isfinite(t)) t = 0;
    return p0 + t * (p1 - p0);
}

static void frame(FILE *f, const char *id, const char *title, const axis *x, const axis *y, const char *xlabel,
                  const char *ylabel) {
    fprintf(f, "<figure><figcaption>%s</figcaption>\n<svg id=\"%s\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
               "height=\"%d\" viewBox=\"0 0 %d %d\">\n",
            title, id, W, H, W, H);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#999\"/>\n", ML, MT,
            W - ML - MR, H - MT - MB);
    for (int i = 0; i <= 4; i++) { /* ticks */
        double t = i / 4.0;
        double xv = x->log ? pow(10, log10(x->lo) + t * (log10(x->hi) - log10(x->lo))) : x->lo + t * (x->hi - x->lo);
        double yv = y->lo + t * (y->hi - y->lo);
        double px = ML + t * (W - ML - MR), py = H - MB - t * (H - MT - MB);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">%.3g</text>\n", px, H - MB + 14, xv);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%.3g</text>\n", ML - 4, py + 3, yv);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%s</text>\n", ML + (W - ML - MR) / 2,
            H - 8, xlabel);
    fprintf(f, "<text x=\"12\" y=\"%d\" font-size=\"11\" transform=\"rotate(-90 12 %d)\" text-anchor=\"middle\">%s</text>\n",
            MT + (H - MT - MB) / 2, MT + (H - MT - MB) / 2, ylabel);
}

static void legend(FILE *f, int i, const char *name) {
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"10\" height=\"10\" fill=\"%s\"/><text x=\"%d\" y=\"%d\" font-size=\"11\">",
            W - MR + 10, MT + 4 + 16 * i, palette[i % 10], W - MR + 24, MT + 13 + 16 * i);
    esc(f, name);
    fputs("</text>\n", f);
}

static void series_open(FILE *f, const char *plot, const char *arm) {
    fprintf(f, "<g class=\"series\" data-plot=\"%s\" data-arm=\"", plot);
    esc(f, arm);
    fputs("\">", f);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Latency CDF per arm, log x, with p50 / p99 / p99.9 marked on each curve. */
static void plot_cdf(FILE *f, const sm_report *r, sm_report_metric m) {
    double **vals = calloc((size_t)r->n_arms, sizeof *vals);
    int *ns = calloc((size_t)r->n_arms, sizeof *ns);
    if (!vals || !ns) {
        free(vals), free(ns);
        return;
    }
    axis x = {INFINITY, -INFINITY, true}, y = {0, 1, false};
    for (int i = 0; i < r->n_arms; i++) {
        const sm_report_arm *a = &r->arms[i];
        int cap = a->n_reqs + a->n_itl + 1, n = 0;
        vals[i] = malloc((size_t)cap * sizeof(double));
        if (!vals[i]) continue;
        for (int j = 0; j < a->n_reqs; j++) {
            const sm_report_request *q = &a->reqs[j];
            if (m == SM_METRIC_TTFT) vals[i][n++] = q->ttft_s;
            else if (m == SM_METRIC_E2E) vals[i][n++] = q->e2e_s;
            else if (m == SM_METRIC_TPOT && q->tpot_s >= 0) vals[i][n++] = q->tpot_s;
            else if (m == SM_METRIC_ITL)
                for (int k = q->itl_begin; k < q->itl_end; k++) vals[i][n++] = a->itl[k];
        }
        int kept = 0;
        for (int j = 0; j < n; j++)
            if (vals[i][j] > 0) vals[i][kept++] = vals[i][j]; /* log axis: positive samples only */
        ns[i] = kept;
        qsort(vals[i], (size_t)kept, sizeof(double), cmp_double);
        if (kept) {
            if (vals[i][0] < x.lo) x.lo = vals[i][0];
            if (vals[i][kept - 1] > x.hi) x.hi = vals[i][kept - 1];
        }
    }
    if (!isfinite(x.lo)) x.lo = 1e-4, x.hi = 1e-3;
    if (x.hi <= x.lo) x.hi = x.lo * 10;
    x.lo /= 1.2, x.hi *= 1.2;
    char id[32], title[96], xlabel[64];
    const char *name = sm_report_metric_name(m);
    snprintf(id, sizeof id, "cdf-%s", name);
    snprintf(title, sizeof title, "%s: cumulative distribution per arm (log scale; markers at p50, p99, p99.9)", name);
    snprintf(xlabel, sizeof xlabel, "%s (seconds, log scale)", name);
    frame(f, id, title, &x, &y, xlabel, "fraction of samples");
    for (int i = 0; i < r->n_arms; i++) {
        int n = ns[i];
        legend(f, i, r->arms[i].name);
        series_open(f, id, r->arms[i].name);
        if (n > 0) {
            fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" d=\"", palette[i % 10]);
            for (int j = 0; j < n; j++) {
                double px = map(&x, vals[i][j], ML, W - MR);
                fprintf(f, "%s%.1f %.1f L%.1f %.1f ", j ? "L" : "M", px, map(&y, (double)j / n, H - MB, MT), px,
                        map(&y, (double)(j + 1) / n, H - MB, MT));
            }
            fputs("\"/>", f);
            static const double ps[] = {50, 99, 99.9};
            for (int k = 0; k < 3; k++) {
                long rank = (long)ceil(ps[k] / 100.0 * n - 1e-9);
                if (rank < 1) rank = 1;
                double v = vals[i][rank - 1];
                fprintf(f, "<circle class=\"marker\" data-percentile=\"p%g\" cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\">"
                           "<title>p%g = %.4g s (n=%d)</title></circle>",
                        ps[k], map(&x, v, ML, W - MR), map(&y, (double)rank / n, H - MB, MT), palette[i % 10], ps[k], v, n);
            }
        }
        fputs("</g>\n", f);
    }
    fputs("</svg></figure>\n", f);
    for (int i = 0; i < r->n_arms; i++) free(vals[i]);
    free(vals), free(ns);
}

static bool any_drafts(const sm_report *r) {
    for (int i = 0; i < r->n_arms; i++)
        if (r->arms[i].num_drafts > 0) return true;
    return false;
}

/* Per-position acceptance rate (accepted_per_pos / num_drafts), a line per drafting arm. */
static void plot_acceptance_by_position(FILE *f, const sm_report *r) {
    int max_k = 1;
    for (int i = 0; i < r->n_arms; i++)
        if (r->arms[i].max_k > max_k) max_k = r->arms[i].max_k;
    axis x = {-0.5, max_k - 0.5, false}, y = {0, 1, false};
    frame(f, "acceptance-by-position", "acceptance by draft position (accepted_per_pos / num_drafts)", &x, &y,
          "draft position (0-based)", "acceptance rate");
    for (int i = 0; i < r->n_arms; i++) {
        const sm_report_arm *a = &r->arms[i];
        if (a->num_drafts == 0) continue;
        legend(f, i, a->name);
        series_open(f, "acceptance-by-position", a->name);
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" d=\"", palette[i % 10]);
        for (int p = 0; p < a->max_k; p++)
            fprintf(f, "%s%.1f %.1f ", p ? "L" : "M", map(&x, p, ML, W - MR),
                    map(&y, (double)a->accepted_per_pos[p] / (double)a->num_drafts, H - MB, MT));
        fputs("\"/>", f);
        for (int p = 0; p < a->max_k; p++)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>", map(&x, p, ML, W - MR),
                    map(&y, (double)a->accepted_per_pos[p] / (double)a->num_drafts, H - MB, MT), palette[i % 10]);
        fputs("</g>\n", f);
    }
    fputs("</svg></figure>\n", f);
}

/* Acceptance length (accepted + 1) histogram: grouped bars, fraction of each arm's drafts. */
static void plot_accept_length(FILE *f, const sm_report *r) {
    int max_len = 2, n_drafting = 0;
    for (int i = 0; i < r->n_arms; i++) {
        if (r->arms[i].max_k + 1 > max_len) max_len = r->arms[i].max_k + 1;
        if (r->arms[i].num_drafts > 0) n_drafting++;
    }
    axis x = {0.5, max_len + 0.5, false}, y = {0, 1, false};
    frame(f, "accept-length-histogram", "acceptance length (accepted drafts + 1) per draft", &x, &y,
          "acceptance length", "fraction of drafts");
    double slot = (double)(W - ML - MR) / max_len, bw = slot * 0.8 / (n_drafting ? n_drafting : 1);
    int g = 0;
    for (int i = 0; i < r->n_arms; i++) {
        const sm_report_arm *a = &r->arms[i];
        if (a->num_drafts == 0) continue;
        legend(f, i, a->name);
        series_open(f, "accept-length-histogram", a->name);
        for (int len = 1; len <= a->max_k + 1; len++) {
            double frac = (double)a->accept_length_hist[len] / (double)a->num_drafts;
            double x0 = map(&x, len, ML, W - MR) - slot * 0.4 + g * bw, y0 = map(&y, frac, H - MB, MT);
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>%d: %.3f</title></rect>",
                    x0, y0, bw, (H - MB) - y0, palette[i % 10], len, frac);
        }
        fputs("</g>\n", f);
        g++;
    }
    fputs("</svg></figure>\n", f);
}

/* Target expert load imbalance (max / mean tokens per expert) per layer. */
static void plot_expert_load(FILE *f, const sm_report *r) {
    int layers = 1;
    double ymax = 1;
    for (int i = 0; i < r->n_arms; i++) {
        if (r->arms[i].n_layers > layers) layers = r->arms[i].n_layers;
        for (int l = 0; l < r->arms[i].n_layers; l++)
            if (r->arms[i].layer_imbalance[l] > ymax) ymax = r->arms[i].layer_imbalance[l];
    }
    axis x = {-0.5, layers - 0.5, false}, y = {0, ymax * 1.1, false};
    frame(f, "expert-load", "target expert load per layer: max / mean tokens per expert (1 = balanced)", &x, &y,
          "layer", "load imbalance");
    for (int i = 0; i < r->n_arms; i++) {
        const sm_report_arm *a = &r->arms[i];
        if (a->n_layers == 0) continue;
        legend(f, i, a->name);
        series_open(f, "expert-load", a->name);
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" d=\"", palette[i % 10]);
        bool pen = false;
        for (int l = 0; l < a->n_layers; l++) {
            if (isnan(a->layer_imbalance[l])) {
                pen = false;
                continue;
            }
            fprintf(f, "%s%.1f %.1f ", pen ? "L" : "M", map(&x, l, ML, W - MR), map(&y, a->layer_imbalance[l], H - MB, MT));
            pen = true;
        }
        fputs("\"/></g>\n", f);
    }
    fputs("</svg></figure>\n", f);
}

sm_status sm_report_write_html(const sm_report *r, const char *path, sm_error *err) {
    FILE *f = fopen(path, "w");
    if (!f) return sm_fail(err, SM_EIO, "%s: cannot write: %s", path, strerror(errno));
    fputs("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>specmoe report: ", f);
    esc(f, r->experiment);
    fputs("</title>\n<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}pre{background:#f6f6f6;"
          "padding:1em;overflow-x:auto;font-size:12px}figure{margin:1.5em 0}figcaption{font-weight:bold;margin-bottom:.3em}"
          "</style></head><body>\n<h1>",
          f);
    esc(f, r->experiment);
    fputs("</h1>\n<h2>Arms and A/B differences</h2>\n<pre id=\"report-text\">", f);
    /* The same tables as the terminal report. */
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (mem) {
        sm_report_print_text(r, mem);
        fclose(mem);
        esc(f, text);
        free(text);
    }
    fputs("</pre>\n<h2>Latency</h2>\n", f);
    for (int m = 0; m < SM_METRIC_COUNT; m++) plot_cdf(f, r, (sm_report_metric)m);
    if (any_drafts(r)) {
        fputs("<h2>Acceptance</h2>\n", f);
        plot_acceptance_by_position(f, r);
        plot_accept_length(f, r);
    }
    fputs("<h2>Experts</h2>\n", f);
    plot_expert_load(f, r);
    fputs("</body></html>\n", f);
    if (fclose(f) != 0) return sm_fail(err, SM_EIO, "%s: write failed: %s", path, strerror(errno));
    return SM_OK;
}
