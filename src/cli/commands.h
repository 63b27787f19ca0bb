/* src/cli/commands.h — the sub-commands of `specmoe`. Each returns the process exit code:
 * 0 success, 1 user error (message printed), 2 usage error. */
#ifndef SM_COMMANDS_H
#define SM_COMMANDS_H

typedef struct sm_command {
    const char *name;
    const char *summary;
    int (*main)(int argc, char **argv); /* argv[0] is the command name */
} sm_command;

int sm_cmd_generate(int argc, char **argv);
int sm_cmd_score(int argc, char **argv);
int sm_cmd_inspect(int argc, char **argv);
int sm_cmd_tokenize(int argc, char **argv);
int sm_cmd_detokenize(int argc, char **argv);
int sm_cmd_run(int argc, char **argv);
int sm_cmd_report(int argc, char **argv);
int sm_cmd_bench(int argc, char **argv);
int sm_cmd_bench_decode(int argc, char **argv); /* cmd_bench_decode.c */

#endif
