/* specmoe bench — micro-benchmarks that print speed as ratios to ceilings measured in the same
 * run. Sub-commands: moe-layer (one MoE layer per GPU runner backend). Needs a CUDA build. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#ifdef SPECMOE_HAVE_CUDA
#include "cuda/bench_moe.h"
#endif

typedef struct moe_preset {
    const char *name;
    int hidden, ffn, experts, top_k;
} moe_preset;

static const moe_preset presets[] = {
    {"qwen3-30b-a3b", 2048, 768, 128, 8},
    {"mixtral-8x7b", 4096, 14336, 8, 2},
};

/* "a,b" -> names pointing into *storage (the caller frees both). */
static int split_names(const char *text, char **storage, const char ***out, int *n) {
    char *copy = strdup(text);
    if (!copy) return -1;
    int cap = 1;
    for (const char *c = text; *c; c++) cap += *c == ',';
    const char **names = calloc((size_t)cap, sizeof *names);
    if (!names) { free(copy); return -1; }
    *n = 0;
    for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) names[(*n)++] = tok;
    *storage = copy;
    *out = names;
    return 0;
}

static int bench_moe_layer(int argc, char **argv) {
    const char *preset = NULL, *tokens_text = "1,2,4,8,16,32,64,128,256,512,1024,2048,4096",
               *runners_text = "cublaslt,cuda", *regimes_text = NULL;
    int hidden = 0, ffn = 0, experts = 0, top_k = 0, iters = 20, warmup = 3, seed = 1;
    bool json = false;
    sm_arg args[] = {
        {"preset", SM_ARG_STRING, &preset, "qwen3-30b-a3b (2048,768,128,8) or mixtral-8x7b (4096,14336,8,2)"},
        {"hidden", SM_ARG_INT, &hidden, "hidden size (overrides the preset)"},
        {"ffn", SM_ARG_INT, &ffn, "expert intermediate size"},
        {"experts", SM_ARG_INT, &experts, "number of experts"},
        {"top-k", SM_ARG_INT, &top_k, "experts per token"},
        {"tokens", SM_ARG_STRING, &tokens_text, "token counts, e.g. 1,8,64,4096"},
        {"runners", SM_ARG_STRING, &runners_text, "GPU MoE runner backends (cublaslt,cuda)"},
        {"regimes", SM_ARG_STRING, &regimes_text,
         "`cuda` kernel regimes, each timed: auto,decode,prefill,decode-mma,prefill-mma,prefill-wgmma (default: auto)"},
        {"iters", SM_ARG_INT, &iters, "timed replays per point (median reported)"},
        {"warmup", SM_ARG_INT, &warmup, "untimed replays first"},
        {"seed", SM_ARG_INT, &seed, "seed of weights and routing"},
        {"json", SM_ARG_FLAG, &json, "one JSON object per line"},
    };
    const char *pos[1];
    int n_pos;
    int rc = sm_args_parse("bench moe-layer", "[--preset NAME | --hidden H --ffn F --experts E --top-k K] [options]",
                           args, (int)(sizeof args / sizeof args[0]), argc, argv, pos, 0, &n_pos);
    if (rc) return rc < 0 ? 0 : rc;
    moe_preset shape = {"custom", 0, 0, 0, 0};
    if (!preset && !(hidden && ffn && experts && top_k)) preset = "qwen3-30b-a3b";
    if (preset) {
        size_t i = 0;
        while (i < sizeof presets / sizeof presets[0] && strcmp(presets[i].name, preset)) i++;
        if (i == sizeof presets / sizeof presets[0]) {
            fprintf(stderr, "specmoe bench moe-layer: unknown preset '%s' (qwen3-30b-a3b, mixtral-8x7b)\n", preset);
            return 2;
        }
        shape = presets[i];
    }
    if (hidden) shape.hidden = hidden;
    if (ffn) shape.ffn = ffn;
    if (experts) shape.experts = experts;
    if (top_k) shape.top_k = top_k;
    if (iters <= 0 || warmup < 0) {
        fprintf(stderr, "specmoe bench moe-layer: --iters must be > 0 and --warmup >= 0\n");
        return 2;
    }
    int *tokens = NULL, n_tokens = 0;
    if (sm_args_parse_ids("tokens", tokens_text, &tokens, &n_tokens)) return 2;
    const char **runners = NULL;
    char *runner_storage = NULL;
    int n_runners = 0;
    if (split_names(runners_text, &runner_storage, &runners, &n_runners) || n_runners == 0) {
        fprintf(stderr, "specmoe bench moe-layer: --runners needs at least one name\n");
        free(tokens);
        free(runners);
        free(runner_storage);
        return 2;
    }
    const char **regimes = NULL;
    char *regime_storage = NULL;
    int n_regimes = 0;
    if (regimes_text && (split_names(regimes_text, &regime_storage, &regimes, &n_regimes) || n_regimes == 0)) {
        fprintf(stderr, "specmoe bench moe-layer: --regimes needs at least one name\n");
        free(tokens);
        free(runners);
        free(runner_storage);
        free(regimes);
        free(regime_storage);
        return 2;
    }
#ifdef SPECMOE_HAVE_CUDA
    sm_bench_moe_opts o = {.label = shape.name, .hidden = shape.hidden, .ffn = shape.ffn, .experts = shape.experts,
                           .top_k = shape.top_k, .tokens = tokens, .n_tokens = n_tokens, .runners = runners,
                           .n_runners = n_runners, .regimes = regimes, .n_regimes = n_regimes, .iters = iters,
                           .warmup = warmup, .seed = (uint64_t)seed, .json = json, .out = stdout};
    sm_error err = {0};
    rc = sm_bench_moe_layer(&o, &err) ? 1 : 0;
    if (rc) fprintf(stderr, "specmoe bench moe-layer: %s\n", err.msg);
#else
    (void)shape;
    (void)json;
    fprintf(stderr, "specmoe bench moe-layer: this build has no CUDA (configure with -DSPECMOE_CUDA=ON)\n");
    rc = 1;
#endif
    free(tokens);
    free(runners);
    free(runner_storage);
    free(regimes);
    free(regime_storage);
    return rc;
}

int sm_cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: specmoe bench <benchmark> [options]   (specmoe bench <benchmark> --help)\n\n"
                   "benchmarks:\n  moe-layer    one MoE layer per GPU runner: time, GB/s and TFLOP/s vs copy "
                   "bandwidth and cuBLASLt dense rate\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "moe-layer")) return bench_moe_layer(argc - 1, argv + 1);
    if (!strcmp(argv[1], "decode")) return sm_cmd_bench_decode(argc - 1, argv + 1);
    fprintf(stderr, "specmoe bench: unknown benchmark '%s' (moe-layer)\n", argv[1]);
    return 2;
}
