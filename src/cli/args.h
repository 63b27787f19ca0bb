/* src/cli/args.h — long-option parsing shared by the sub-commands ("--name value" and
 * "--name=value"), with errors that name the option. */
#ifndef SM_ARGS_H
#define SM_ARGS_H

#include <stdbool.h>

typedef enum { SM_ARG_FLAG, SM_ARG_STRING, SM_ARG_INT, SM_ARG_FLOAT } sm_arg_kind;

typedef struct sm_arg {
    const char *name;      /* without the leading "--" */
    sm_arg_kind kind;
    void *dest;            /* bool*, const char**, int*, double* */
    const char *help;
} sm_arg;

/* Parse argv[1..]; positional arguments are stored in positional[] (up to max_positional).
 * Returns 0 on success, 2 on a usage error (message printed to stderr), -1 when --help was
 * given (help printed to stdout). */
int sm_args_parse(const char *command, const char *usage_line, const sm_arg *args, int n_args, int argc,
                  char **argv, const char **positional, int max_positional, int *n_positional);

/* "1,2,3" -> malloc'd ids. Returns 0 on success, prints a message naming the option otherwise. */
int sm_args_parse_ids(const char *option, const char *text, int **ids, int *n_ids);

#endif
