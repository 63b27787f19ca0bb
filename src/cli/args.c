#include "cli/args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_help(const char *command, const char *usage_line, const sm_arg *args, int n_args) {
    printf("usage: specmoe %s %s\n\noptions:\n", command, usage_line);
    for (int i = 0; i < n_args; i++) {
        const char *meta = args[i].kind == SM_ARG_FLAG ? "" : args[i].kind == SM_ARG_STRING ? " VALUE"
                         : args[i].kind == SM_ARG_INT ? " N" : " X";
        char left[64];
        snprintf(left, sizeof left, "--%s%s", args[i].name, meta);
        printf("  %-28s %s\n", left, args[i].help);
    }
}

static int store(const char *command, const sm_arg *a, const char *value) {
    char *end = NULL;
    errno = 0;
    switch (a->kind) {
    case SM_ARG_FLAG: *(bool *)a->dest = true; return 0;
    case SM_ARG_STRING: *(const char **)a->dest = value; return 0;
    case SM_ARG_INT: {
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < -2147483647L || v > 2147483647L) break;
        *(int *)a->dest = (int)v;
        return 0;
    }
    case SM_ARG_FLOAT: {
        double v = strtod(value, &end);
        if (errno || end == value || *end) break;
        *(double *)a->dest = v;
        return 0;
    }
    }
    fprintf(stderr, "specmoe %s: --%s expects %s, got '%s'\n", command, a->name,
            a->kind == SM_ARG_INT ? "an integer" : "a number", value);
    return 2;
}

int sm_args_parse(const char *command, const char *usage_line, const sm_arg *args, int n_args, int argc,
                  char **argv, const char **positional, int max_positional, int *n_positional) {
    *n_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            print_help(command, usage_line, args, n_args);
            return -1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            if (*n_positional >= max_positional) {
                fprintf(stderr, "specmoe %s: unexpected argument '%s'\n", command, arg);
                return 2;
            }
            positional[(*n_positional)++] = arg;
            continue;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const sm_arg *match = NULL;
        for (int j = 0; j < n_args; j++)
            if (strlen(args[j].name) == name_len && !strncmp(args[j].name, name, name_len)) match = &args[j];
        if (!match) {
            fprintf(stderr, "specmoe %s: unknown option '--%.*s' (see specmoe %s --help)\n", command,
                    (int)name_len, name, command);
            return 2;
        }
        const char *value = NULL;
        if (match->kind == SM_ARG_FLAG) {
            if (eq) {
                fprintf(stderr, "specmoe %s: --%s takes no value\n", command, match->name);
                return 2;
            }
        } else if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            fprintf(stderr, "specmoe %s: --%s needs a value\n", command, match->name);
            return 2;
        }
        int rc = store(command, match, value);
        if (rc) return rc;
    }
    return 0;
}

int sm_args_parse_ids(const char *option, const char *text, int **ids, int *n_ids) {
    size_t cap = 1;
    for (const char *p = text; *p; p++) cap += *p == ',';
    int *out = malloc(cap * sizeof *out);
    if (!out) { fprintf(stderr, "out of memory parsing %s\n", option); return 1; }
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > 2147483647L || (*end && *end != ',')) {
            fprintf(stderr, "%s: expected comma-separated non-negative token ids, got '%s'\n", option, text);
            free(out);
            return 1;
        }
        out[n++] = (int)v;
        p = *end ? end + 1 : end;
    }
    if (n == 0) { fprintf(stderr, "%s: no token ids given\n", option); free(out); return 1; }
    *ids = out;
    *n_ids = n;
    return 0;
}
