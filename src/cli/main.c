/* specmoe — speculative-decoding testbed for Mixture-of-Experts models. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"

static const sm_command commands[] = {
    {"generate", "generate text with a model (optionally speculative)", sm_cmd_generate},
    {"score", "print the logits of given token ids as JSON", sm_cmd_score},
    {"inspect", "describe a checkpoint: architecture, parameters, shapes", sm_cmd_inspect},
    {"tokenize", "print the token ids of a text as JSON", sm_cmd_tokenize},
    {"detokenize", "print the text of token ids", sm_cmd_detokenize},
    {"run", "run an experiment script (Lua) into a results database", sm_cmd_run},
    {"report", "summarise a results database: per-arm table, A/B with CIs, --html plots", sm_cmd_report},
    {"bench", "GPU micro-benchmarks (moe-layer) reported as ratios to measured ceilings", sm_cmd_bench},
};

static void usage(FILE *f) {
    fprintf(f, "usage: specmoe <command> [options]   (specmoe <command> --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) { usage(stdout); return 0; }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].main(argc - 1, argv + 1);
    fprintf(stderr, "specmoe: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
