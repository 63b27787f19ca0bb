/* specmoe report results.db [--experiment NAME] [--html FILE] — read an experiment back: a table
 * per arm, A/B differences with bootstrap intervals, optionally an HTML page with plots. */
#include <stdio.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "exp/db.h"
#include "exp/report.h"

int sm_cmd_report(int argc, char **argv) {
    const char *experiment = NULL, *html = NULL;
    sm_arg args[] = {
        {"experiment", SM_ARG_STRING, &experiment, "experiment name (default: the most recent one)"},
        {"html", SM_ARG_STRING, &html, "also write a self-contained HTML page with plots to this file"},
    };
    const char *pos[1];
    int n_pos;
    int rc = sm_args_parse("report", "RESULTS.db [--experiment NAME] [--html FILE]", args,
                           (int)(sizeof args / sizeof args[0]), argc, argv, pos, 1, &n_pos);
    if (rc) return rc < 0 ? 0 : rc;
    if (n_pos != 1) {
        fprintf(stderr, "specmoe report: give one results database (specmoe report results.db)\n");
        return 2;
    }
    sm_error err = {0};
    sqlite3 *db = NULL;
    sm_report r = {0};
    /* Read-only: a report never changes the database (and works on a read-only copy). */
    sm_db_opts o = {.read_only = true};
    sm_status s = sm_db_open(pos[0], &o, &db, &err);
    if (s == SM_OK) s = sm_report_load(db, pos[0], experiment, &r, &err);
    if (s == SM_OK) sm_report_print_text(&r, stdout);
    if (s == SM_OK && html) {
        s = sm_report_write_html(&r, html, &err);
        if (s == SM_OK) printf("\nwrote %s\n", html);
    }
    if (s != SM_OK) fprintf(stderr, "specmoe report: %s\n", err.msg);
    sm_report_free(&r);
    sm_db_close(db);
    return s == SM_OK ? 0 : 1;
}
