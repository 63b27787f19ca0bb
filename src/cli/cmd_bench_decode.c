/* specmoe bench decode — end-to-end decode steps of a whole model on the GPU per batch size, next
 * to the roofline (src/cuda/bench_decode.h). --preset writes the named config.json into a
 * temporary directory and draws random weights, so full-size shapes need no download. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#ifdef SPECMOE_HAVE_CUDA
#include "cuda/bench_decode.h"
#endif

typedef struct decode_preset {
    const char *name;
    int layers;              /* the real model's depth (--layers may cut it for profiling) */
    const char *config_json; /* printf format: %d = num_hidden_layers */
} decode_preset;

static const decode_preset presets[] = {
    {"qwen3-30b-a3b", 48,
     "{\"architectures\":[\"Qwen3MoeForCausalLM\"],\"model_type\":\"qwen3_moe\",\"hidden_size\":2048,"
     "\"num_hidden_layers\":%d,\"num_attention_heads\":32,\"num_key_value_heads\":4,\"head_dim\":128,"
     "\"intermediate_size\":6144,\"moe_intermediate_size\":768,\"num_experts\":128,\"num_experts_per_tok\":8,"
     "\"norm_topk_prob\":true,\"decoder_sparse_step\":1,\"mlp_only_layers\":[],\"vocab_size\":151936,"
     "\"max_position_embeddings\":40960,\"rope_theta\":1000000.0,\"rms_norm_eps\":1e-06,"
     "\"tie_word_embeddings\":false,\"attention_bias\":false,\"bos_token_id\":151643,\"eos_token_id\":151645}"},
};

static int parse_list(const char *text, int **out, int *n) {
    int cap = 16, k = 0;
    int *v = malloc((size_t)cap * sizeof *v);
    const char *p = text;
    while (v && *p) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 1 || x > 512) { free(v); return -1; }
        if (k == cap) { int *g = realloc(v, (size_t)(cap *= 2) * sizeof *v); if (!g) { free(v); return -1; } v = g; }
        v[k++] = (int)x;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') { free(v); return -1; }
    }
    *out = v;
    *n = k;
    return v && k ? 0 : -1;
}

int sm_cmd_bench_decode(int argc, char **argv) {
    const char *preset = NULL, *model = NULL, *weights = NULL, *batches_text = "1,2,4,8,16,32,64", *runner = NULL;
    const char *drafter = NULL, *draft_dir = NULL, *draft_runner = NULL, *pdl_trace = NULL;
    int k = 4, top_k = 0;
    double temperature = 0, top_p = 1;
    int seed = 0, prompt = 32, steps = 20, warmup = 3, layers = 0, chunk = 0;
    bool eager = false, host_logits = false, leave_out_moe = false;
    sm_arg args[] = {
        {"preset", SM_ARG_STRING, &preset, "qwen3-30b-a3b (full 48 layers, random weights)"},
        {"model", SM_ARG_STRING, &model, "checkpoint directory (instead of --preset)"},
        {"weights", SM_ARG_STRING, &weights, "checkpoint | random (default: random with --preset, checkpoint with --model)"},
        {"seed", SM_ARG_INT, &seed, "seed of random weights (default 0)"},
        {"layers", SM_ARG_INT, &layers, "with --preset: this many layers instead of the model's (profiling)"},
        {"batch", SM_ARG_STRING, &batches_text, "batch sizes (default 1,2,4,8,16,32,64)"},
        {"prompt", SM_ARG_INT, &prompt, "tokens prefilled per sequence (default 32)"},
        {"steps", SM_ARG_INT, &steps, "timed decode steps per batch size (default 20)"},
        {"warmup", SM_ARG_INT, &warmup, "untimed steps first (default 3)"},
        {"moe-runner-backend", SM_ARG_STRING, &runner, "MoE runner backend: cuda (auto) or cublaslt"},
        {"eager", SM_ARG_FLAG, &eager, "no CUDA graphs"},
        {"host-logits", SM_ARG_FLAG, &host_logits,
         "copy every row's logits to the host each step (default: greedy ids sampled on the device, fed back)"},
        {"leave-out-moe", SM_ARG_FLAG, &leave_out_moe,
         "time the steps without their MoE blocks: the rest of the step (attention, norms, lm_head) against the "
         "bytes of its own weights; outputs are not the model's"},
        {"pdl-trace", SM_ARG_STRING, &pdl_trace,
         "record the last timed step of each batch size into PATH.b<batch> (a -DSPECMOE_PDL_TRACE=ON build; "
         "scripts/pdl_trace_report.py reads it)"},
        {"chunked-prefill-size", SM_ARG_INT, &chunk, "rows per forward pass; longer prompts run in pieces (default 4096)"},
        {"speculative-algorithm", SM_ARG_STRING, &drafter, "also decode speculatively: model | ngram | self (first half of the layers)"},
        {"speculative-draft-model-path", SM_ARG_STRING, &draft_dir, "draft checkpoint for --speculative-algorithm model"},
        {"num-speculative-tokens", SM_ARG_INT, &k, "k, drafts per step (default 4)"},
        {"speculative-moe-runner-backend", SM_ARG_STRING, &draft_runner, "MoE runner backend of the draft model"},
        {"temperature", SM_ARG_FLOAT, &temperature, "sampling of the speculation rows, 0 = greedy (default 0)"},
        {"top-p", SM_ARG_FLOAT, &top_p, "nucleus mass of the speculation rows (default 1 = off)"},
        {"top-k", SM_ARG_INT, &top_k, "top-k of the speculation rows (default 0 = off)"},
    };
    const char *pos[1];
    int n_pos;
    int rc = sm_args_parse("bench decode", "[--preset NAME | --model DIR] [--weights random] [--batch 1,2,4] [options]",
                           args, (int)(sizeof args / sizeof args[0]), argc, argv, pos, 0, &n_pos);
    if (rc) return rc < 0 ? 0 : rc;
    if (preset && model) { fprintf(stderr, "specmoe bench decode: give --preset or --model, not both\n"); return 2; }
    if (weights && strcmp(weights, "random") && strcmp(weights, "checkpoint")) {
        fprintf(stderr, "specmoe bench decode: --weights is checkpoint or random, not '%s'\n", weights);
        return 2;
    }
    int *batches = NULL, n_batches = 0;
    if (parse_list(batches_text, &batches, &n_batches) || prompt < 1 || steps < 1 || warmup < 0 || layers < 0 ||
        (layers && !preset) || chunk < 0) {
        fprintf(stderr, "specmoe bench decode: need --batch like 1,2,4 (1..512), --prompt >= 1, --steps >= 1, --warmup >= 0,"
                        " --layers >= 1 only with --preset, --chunked-prefill-size >= 1\n");
        free(batches);
        return 2;
    }
    if (drafter && strcmp(drafter, "model") && strcmp(drafter, "ngram") && strcmp(drafter, "self")) {
        fprintf(stderr, "specmoe bench decode: --speculative-algorithm is model, ngram or self, not '%s'\n", drafter);
        free(batches);
        return 2;
    }
    if (leave_out_moe && drafter) {
        fprintf(stderr, "specmoe bench decode: --leave-out-moe times plain decode steps; drop --speculative-algorithm\n");
        free(batches);
        return 2;
    }
    if (temperature < 0 || top_p <= 0 || top_p > 1 || top_k < 0) {
        fprintf(stderr, "specmoe bench decode: need --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0\n");
        free(batches);
        return 2;
    }
    if (drafter && (k < 1 || k > 16 || (!strcmp(drafter, "model") != !!draft_dir))) {
        fprintf(stderr, "specmoe bench decode: need --num-speculative-tokens 1..16, and --speculative-draft-model-path "
                        "exactly with --speculative-algorithm model\n");
        free(batches);
        return 2;
    }
    if (!preset && !model) preset = "qwen3-30b-a3b";
    char dir[64] = "";
    const char *model_dir = model;
    if (preset) {
        size_t i = 0;
        while (i < sizeof presets / sizeof presets[0] && strcmp(presets[i].name, preset)) i++;
        if (i == sizeof presets / sizeof presets[0]) {
            fprintf(stderr, "specmoe bench decode: unknown preset '%s' (qwen3-30b-a3b)\n", preset);
            free(batches);
            return 2;
        }
        snprintf(dir, sizeof dir, "/tmp/specmoe-preset-XXXXXX");
        char path[128];
        FILE *f = NULL;
        if (mkdtemp(dir)) {
            snprintf(path, sizeof path, "%s/config.json", dir);
            f = fopen(path, "w");
        }
        if (!f || fprintf(f, presets[i].config_json, layers ? layers : presets[i].layers) < 0 || fclose(f)) {
            fprintf(stderr, "specmoe bench decode: cannot write the preset's config.json under /tmp\n");
            free(batches);
            return 1;
        }
        model_dir = dir;
    }
    rc = 1;
#ifdef SPECMOE_HAVE_CUDA
    sm_bench_decode_opts o = {.model_dir = model_dir, .label = preset ? preset : model,
                              .random_weights = preset ? !weights || !strcmp(weights, "random") : weights && !strcmp(weights, "random"),
                              .seed = (uint64_t)seed, .runner = runner, .batches = batches, .n_batches = n_batches,
                              .prompt = prompt, .steps = steps, .warmup = warmup, .eager = eager,
                              .host_logits = host_logits, .leave_out_moe = leave_out_moe, .pdl_trace = pdl_trace,
                              .chunked_prefill_size = chunk,
                              .drafter = drafter, .num_speculative_tokens = k, .draft_dir = draft_dir,
                              .draft_runner = draft_runner, .temperature = (float)temperature, .top_p = (float)top_p,
                              .top_k = top_k, .out = stdout};
    sm_error err = {0};
    if (sm_bench_decode(&o, &err)) fprintf(stderr, "specmoe bench decode: %s\n", err.msg);
    else rc = 0;
#else
    (void)model_dir;
    (void)eager;
    (void)host_logits;
    (void)leave_out_moe;
    (void)pdl_trace;
    (void)draft_dir;
    (void)draft_runner;
    fprintf(stderr, "specmoe bench decode: this build has no CUDA (configure with -DSPECMOE_CUDA=ON)\n");
#endif
    if (preset) {
        char path[128];
        snprintf(path, sizeof path, "%s/config.json", dir);
        remove(path);
        rmdir(dir);
    }
    free(batches);
    return rc;
}
