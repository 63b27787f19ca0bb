/* specmoe generate / specmoe score — run a model on a prompt from the command line, plainly or with
 * speculative decoding (--draft DIR | --drafter ngram|self, --k N). */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "model/model.h"
#include "spec/sampler.h"
#include "spec/spec.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int fail(const char *cmd, const sm_error *err) {
    fprintf(stderr, "specmoe %s: %s\n", cmd, err->msg);
    return 1;
}

/* Prints the text of ids[0..n) that has not been printed yet. A trailing U+FFFD means a
 * multi-byte character is still incomplete: hold it back until the next token. */
static void stream_text(const sm_tokenizer *tok, const int *ids, int n, size_t *printed, bool final) {
    char *text;
    size_t len;
    if (sm_tokenizer_decode(tok, ids, n, false, &text, &len, NULL) != SM_OK) return;
    if (!final && len >= 3 && !memcmp(text + len - 3, "\xEF\xBF\xBD", 3)) len -= 3;
    if (len > *printed) {
        fwrite(text + *printed, 1, len - *printed, stdout);
        fflush(stdout);
        *printed = len;
    }
    free(text);
}

typedef struct gen_opts {
    const char *model_dir, *prompt, *prompt_ids, *runner, *draft_dir, *drafter, *draft_runner, *dtype, *draft_dtype;
    const char *device, *weights;
    const char *self_layers, *self_skip_layers;
    int max_new, seed, threads, top_k, k, self_top_k, ngram_min, ngram_max, chunk;
    double temperature, top_p;
    bool print_ids, ignore_eos, json, eager;
} gen_opts;

#define K_UNSET (-2147483647 - 1)

/* Speculative options, checked before anything is loaded: a usage error costs nothing. */
static int check_spec_usage(gen_opts *o) {
    if (o->draft_dir && o->drafter && strcmp(o->drafter, "model")) {
        fprintf(stderr, "specmoe generate: --draft DIR goes with --drafter model, not --drafter %s\n", o->drafter);
        return 2;
    }
    if (o->draft_dir && !o->drafter) o->drafter = "model";
    if (o->drafter && !strcmp(o->drafter, "none")) o->drafter = NULL;
    if (o->drafter && !strcmp(o->drafter, "model") && !o->draft_dir) {
        fprintf(stderr, "specmoe generate: --drafter model needs --draft DIR\n");
        return 2;
    }
    bool self = o->drafter && !strcmp(o->drafter, "self");
    if (!self && (o->self_layers || o->self_skip_layers || o->self_top_k)) {
        fprintf(stderr, "specmoe generate: --self-layers / --self-skip-layers / --self-top-k need --drafter self\n");
        return 2;
    }
    if (o->self_layers && o->self_skip_layers) {
        fprintf(stderr, "specmoe generate: give --self-layers or --self-skip-layers, not both\n");
        return 2;
    }
    if (o->k == K_UNSET) o->k = o->drafter ? 4 : 0; /* k without a drafter is caught by the engine */
    return 0;
}

static void print_summary(FILE *f, const sm_spec_engine *e, int n_prompt, int n_new, double prefill_s,
                          double decode_s, double verify_factor) {
    const sm_spec_counters *c = sm_spec_engine_counters(e);
    fprintf(f, "prompt %d tokens, prefill %.1f ms; generated %d tokens in %.1f ms (%.1f tokens/s)\n", n_prompt,
            prefill_s * 1e3, n_new, decode_s * 1e3, n_new > 1 && decode_s > 0 ? (n_new - 1) / decode_s : 0.0);
    if (!sm_spec_k(e)) return;
    fprintf(f, "speculative: drafter %s, k %d: num_drafts %lld, num_draft_tokens %lld, num_accepted_tokens %lld, "
               "acceptance_rate %.3f, accept_length %.3f\n",
            sm_spec_drafter_name(e), sm_spec_k(e), (long long)c->num_drafts, (long long)c->num_draft_tokens,
            (long long)c->num_accepted_tokens, sm_spec_acceptance_rate(c), sm_spec_accept_length(c));
    fprintf(f, "per-position acceptance:");
    for (int i = 0; i < sm_spec_k(e); i++)
        fprintf(f, " %.3f", c->num_drafts ? (double)c->accepted_per_pos[i] / (double)c->num_drafts : 0.0);
    fprintf(f, "\ntime: draft %.1f ms, verify %.1f ms, overhead %.1f ms", c->draft_ns * 1e-6, c->verify_ns * 1e-6,
            c->overhead_ns * 1e-6);
    if (verify_factor > 0) fprintf(f, "; experts touched, verify / single-token: %.2fx", verify_factor);
    fprintf(f, "\n");
}

static json_t *summary_json(const sm_spec_engine *e, const int *ids, int n_prompt, int n_new, const char *text,
                            sm_spec_finish finish, double prefill_s, double decode_s, double verify_factor) {
    const sm_spec_counters *c = sm_spec_engine_counters(e);
    json_t *tokens = json_array(), *per_pos = json_array();
    for (int i = 0; i < n_new; i++) json_array_append_new(tokens, json_integer(ids[n_prompt + i]));
    for (int i = 0; i < sm_spec_k(e); i++) json_array_append_new(per_pos, json_integer(c->accepted_per_pos[i]));
    json_t *o = json_pack("{s:o, s:i, s:i, s:s, s:s, s:i, s:f, s:f, s:f, s:I, s:I, s:I, s:f, s:f, s:o, s:f, s:f, s:f}",
                          "tokens", tokens, "num_prompt_tokens", n_prompt, "num_output_tokens", n_new,
                          "finish_reason", sm_spec_finish_name(finish), "drafter", sm_spec_drafter_name(e),
                          "num_speculative_tokens", sm_spec_k(e), "prefill_s", prefill_s, "decode_s", decode_s,
                          "tokens_per_s", n_new > 1 && decode_s > 0 ? (n_new - 1) / decode_s : 0.0,
                          "num_drafts", (json_int_t)c->num_drafts, "num_draft_tokens", (json_int_t)c->num_draft_tokens,
                          "num_accepted_tokens", (json_int_t)c->num_accepted_tokens,
                          "acceptance_rate", sm_spec_acceptance_rate(c), "accept_length", sm_spec_accept_length(c),
                          "accepted_per_pos", per_pos, "draft_s", c->draft_ns * 1e-9, "verify_s", c->verify_ns * 1e-9,
                          "overhead_s", c->overhead_ns * 1e-9);
    if (o && text) json_object_set_new(o, "text", json_string(text));
    if (o && verify_factor > 0) json_object_set_new(o, "experts_touched_verify_over_single", json_real(verify_factor));
    return o;
}

int sm_cmd_generate(int argc, char **argv) {
    gen_opts o = {.max_new = 64, .top_p = 1, .k = K_UNSET};
    sm_arg args[] = {
        {"model", SM_ARG_STRING, &o.model_dir, "checkpoint directory (config.json, safetensors, tokenizer.json)"},
        {"prompt", SM_ARG_STRING, &o.prompt, "prompt text"},
        {"prompt-ids", SM_ARG_STRING, &o.prompt_ids, "prompt as comma-separated token ids (instead of --prompt)"},
        {"max-new-tokens", SM_ARG_INT, &o.max_new, "tokens to generate (default 64)"},
        {"temperature", SM_ARG_FLOAT, &o.temperature, "sampling temperature, 0 = greedy (default 0)"},
        {"top-p", SM_ARG_FLOAT, &o.top_p, "nucleus sampling mass (default 1 = off)"},
        {"top-k", SM_ARG_INT, &o.top_k, "keep the k most likely tokens (default 0 = off)"},
        {"seed", SM_ARG_INT, &o.seed, "random seed (default 0); also of --weights random"},
        {"device", SM_ARG_STRING, &o.device, "cpu | cuda: where target and draft run (default cpu)"},
        {"weights", SM_ARG_STRING, &o.weights, "checkpoint | random (random: only config.json is read; needs --device cuda)"},
        {"eager", SM_ARG_FLAG, &o.eager, "with --device cuda: no CUDA graphs (every step launched kernel by kernel)"},
        {"chunked-prefill-size", SM_ARG_INT, &o.chunk, "with --device cuda: rows per forward pass of the target (default 4096)"},
        {"moe-runner-backend", SM_ARG_STRING, &o.runner, "MoE runner backend (default auto)"},
        {"dtype", SM_ARG_STRING, &o.dtype, "expert weight dtype: auto | f32 | bf16 | ... as the runner takes (default auto)"},
        {"threads", SM_ARG_INT, &o.threads, "CPU threads (default: all cores)"},
        {"print-ids", SM_ARG_FLAG, &o.print_ids, "print the generated token ids as JSON instead of text"},
        {"ignore-eos", SM_ARG_FLAG, &o.ignore_eos, "keep generating past the end-of-sequence token"},
        {"json", SM_ARG_FLAG, &o.json, "print tokens, text, speed and acceptance as one JSON object"},
        {"draft", SM_ARG_STRING, &o.draft_dir, "draft model directory (speculative decoding, --drafter model)"},
        {"drafter", SM_ARG_STRING, &o.drafter, "model | ngram | self | none (default: model with --draft, else none)"},
        {"k", SM_ARG_INT, &o.k, "draft tokens per step, 1..64 (default 4 with a drafter)"},
        {"num-speculative-tokens", SM_ARG_INT, &o.k, "same as --k"},
        {"speculative-moe-runner-backend", SM_ARG_STRING, &o.draft_runner, "MoE runner backend of the draft model"},
        {"speculative-dtype", SM_ARG_STRING, &o.draft_dtype, "expert weight dtype of the draft model (default auto)"},
        {"self-layers", SM_ARG_STRING, &o.self_layers, "self drafter: layers to run, e.g. 0,2"},
        {"self-skip-layers", SM_ARG_STRING, &o.self_skip_layers, "self drafter: layers to skip, e.g. 1"},
        {"self-top-k", SM_ARG_INT, &o.self_top_k, "self drafter: experts per token (default: the model's)"},
        {"ngram-min", SM_ARG_INT, &o.ngram_min, "ngram drafter: shortest suffix to match (default 1)"},
        {"ngram-max", SM_ARG_INT, &o.ngram_max, "ngram drafter: longest suffix to match (default 4)"},
    };
    const char *pos[1];
    int n_pos;
    int rc = sm_args_parse("generate", "--model DIR (--prompt TEXT | --prompt-ids 1,2,3) [--draft DIR | --drafter ngram|self] [--k N] [options]",
                           args, (int)(sizeof args / sizeof args[0]), argc, argv, pos, 0, &n_pos);
    if (rc) return rc < 0 ? 0 : rc;
    if (!o.model_dir || (!o.prompt == !o.prompt_ids)) {
        fprintf(stderr, "specmoe generate: need --model and exactly one of --prompt / --prompt-ids\n");
        return 2;
    }
    if (o.max_new < 1 || o.temperature < 0 || o.top_p <= 0 || o.top_p > 1 || o.top_k < 0 || o.chunk < 0) {
        fprintf(stderr, "specmoe generate: need --max-new-tokens >= 1, --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0, "
                        "--chunked-prefill-size >= 1\n");
        return 2;
    }
    if ((rc = check_spec_usage(&o))) return rc;
    if (o.weights && strcmp(o.weights, "checkpoint") && strcmp(o.weights, "random")) {
        fprintf(stderr, "specmoe generate: --weights is checkpoint or random, not '%s'\n", o.weights);
        return 2;
    }

    sm_error err = {0};
    sm_model *m = NULL;
    sm_spec_engine *e = NULL;
    int *ids = NULL, n_prompt = 0, *self_list = NULL, n_self_list = 0;
    char *text = NULL;
    rc = 1;
    if (o.self_layers || o.self_skip_layers) {
        const char *opt = o.self_layers ? "--self-layers" : "--self-skip-layers";
        if (sm_args_parse_ids(opt, o.self_layers ? o.self_layers : o.self_skip_layers, &self_list, &n_self_list)) return 2;
    }
    bool random_weights = o.weights && !strcmp(o.weights, "random");
    sm_model_opts opts = {.moe_runner_backend = o.runner, .n_threads = o.threads, .max_seqs = 1, .dtype = o.dtype,
                          .device = o.device, .random_weights = random_weights, .seed = (uint64_t)o.seed,
                          .eager = o.eager, .chunked_prefill_size = o.chunk};
    if (sm_model_load(o.model_dir, &opts, &m, &err)) { rc = fail("generate", &err); goto done; }
    const sm_model_config *cfg = sm_model_cfg(m);
    const sm_tokenizer *tok = sm_model_tokenizer(m);
    if (o.prompt) {
        if (!tok) {
            fprintf(stderr, "specmoe generate: %s has no tokenizer.json; use --prompt-ids\n", o.model_dir);
            goto done;
        }
        if (sm_tokenizer_encode(tok, o.prompt, strlen(o.prompt), true, &ids, &n_prompt, &err)) { rc = fail("generate", &err); goto done; }
    } else if (sm_args_parse_ids("--prompt-ids", o.prompt_ids, &ids, &n_prompt)) {
        goto done;
    }
    if (n_prompt == 0) { fprintf(stderr, "specmoe generate: the prompt encodes to no tokens\n"); goto done; }
    if (n_prompt + o.max_new > sm_model_max_context(m)) {
        fprintf(stderr, "specmoe generate: prompt (%d tokens) + --max-new-tokens (%d) exceeds the context of %d tokens\n",
                n_prompt, o.max_new, sm_model_max_context(m));
        goto done;
    }

    sm_spec_config sc = {
        .num_speculative_tokens = o.k, .drafter = o.drafter,
        .sampling = {.temperature = (float)o.temperature, .top_p = (float)o.top_p, .top_k = o.top_k},
        .draft_dir = o.draft_dir,
        .draft_opts = {.moe_runner_backend = o.draft_runner, .n_threads = o.threads, .dtype = o.draft_dtype,
                       .device = o.device, .eager = o.eager},
        .ngram_min = o.ngram_min, .ngram_max = o.ngram_max,
        .self_layers = o.self_layers ? self_list : NULL, .n_self_layers = o.self_layers ? n_self_list : 0,
        .self_skip_layers = o.self_skip_layers ? self_list : NULL, .n_self_skip_layers = o.self_skip_layers ? n_self_list : 0,
        .self_top_k = o.self_top_k,
    };
    if (sm_spec_engine_create(m, &sc, &e, &err)) { rc = fail("generate", &err); goto done; }
    sm_spec_seq_params sp = {.prompt = ids, .n_prompt = n_prompt, .max_new_tokens = o.max_new, .seed = (uint64_t)o.seed};
    if (!o.ignore_eos && cfg->n_eos_token_ids > 0) {
        sp.stop_ids = cfg->eos_token_ids;
        sp.n_stop_ids = cfg->n_eos_token_ids;
    } else if (!o.ignore_eos && cfg->eos_token_id >= 0) {
        sp.stop_ids = &cfg->eos_token_id;
        sp.n_stop_ids = 1;
    }
    int64_t seq;
    if (sm_spec_add_sequence(e, &sp, &seq, &err)) { rc = fail("generate", &err); goto done; }

    bool stream = tok && !o.print_ids && !o.json;
    size_t printed = 0;
    double t0 = now_s(), t_prefill = 0;
    long verify_experts = 0, single_experts = 0;
    const int *out = NULL;
    int n_new = 0;
    sm_spec_finish finish = SM_SPEC_RUNNING;
    while (sm_spec_active_count(e) > 0) {
        const sm_spec_step_metrics *sm;
        if (sm_spec_step(e, &sm, &err)) { rc = fail("generate", &err); goto done; }
        if (sm->step_index == 0) t_prefill = now_s() - t0;
        for (int i = 0; i < sm->n_seqs && sm->experts_touched_verify; i++)
            if (sm->seqs[i].phase == SM_SPEC_PHASE_DECODE)
                for (int l = 0; l < sm->num_layers; l++) {
                    verify_experts += sm->experts_touched_verify[l];
                    single_experts += sm->experts_touched_single[l];
                }
        if (sm_spec_seq_output(e, seq, &out, &n_new, &finish, &err)) { rc = fail("generate", &err); goto done; }
        if (stream) stream_text(tok, out, n_new, &printed, false);
    }
    double decode_s = now_s() - t0 - t_prefill;
    double factor = single_experts > 0 ? (double)verify_experts / (double)single_experts : 0;
    int *all = realloc(ids, (size_t)(n_prompt + n_new) * sizeof(int));
    if (!all) { fprintf(stderr, "specmoe generate: out of memory\n"); goto done; }
    ids = all;
    memcpy(ids + n_prompt, out, (size_t)n_new * sizeof(int));
    if (tok && (o.json || stream)) {
        size_t len;
        if (sm_tokenizer_decode(tok, ids + n_prompt, n_new, false, &text, &len, &err)) { rc = fail("generate", &err); goto done; }
    }
    if (o.json) {
        json_t *j = summary_json(e, ids, n_prompt, n_new, text, finish, t_prefill, decode_s, factor);
        char *dump = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!dump) { fprintf(stderr, "specmoe generate: out of memory\n"); goto done; }
        printf("%s\n", dump);
        free(dump);
    } else if (!stream) {
        printf("[");
        for (int i = 0; i < n_new; i++) printf("%s%d", i ? "," : "", ids[n_prompt + i]);
        printf("]\n");
    } else {
        stream_text(tok, ids + n_prompt, n_new, &printed, true);
        printf("\n");
    }
    if (!o.json) print_summary(stderr, e, n_prompt, n_new, t_prefill, decode_s, factor);
    rc = 0;
done:
    free(ids);
    free(text);
    free(self_list);
    sm_spec_engine_free(e);
    sm_model_free(m);
    return rc;
}

int sm_cmd_score(int argc, char **argv) {
    const char *model_dir = NULL, *ids_text = NULL, *runner = NULL;
    int last = 1, threads = 0;
    sm_arg args[] = {
        {"model", SM_ARG_STRING, &model_dir, "checkpoint directory"},
        {"ids", SM_ARG_STRING, &ids_text, "comma-separated token ids"},
        {"last", SM_ARG_INT, &last, "print the logits of the last N positions (default 1)"},
        {"moe-runner-backend", SM_ARG_STRING, &runner, "MoE runner backend (default auto)"},
        {"threads", SM_ARG_INT, &threads, "CPU threads (default: all cores)"},
    };
    const char *pos[1];
    int n_pos;
    int rc = sm_args_parse("score", "--model DIR --ids 1,2,3 [--last N]", args, (int)(sizeof args / sizeof args[0]),
                           argc, argv, pos, 0, &n_pos);
    if (rc) return rc < 0 ? 0 : rc;
    if (!model_dir || !ids_text) { fprintf(stderr, "specmoe score: need --model and --ids\n"); return 2; }
    int *ids = NULL, n = 0;
    if (sm_args_parse_ids("--ids", ids_text, &ids, &n)) return 1;
    if (last < 1 || last > n) {
        fprintf(stderr, "specmoe score: --last must be between 1 and the number of ids (%d)\n", n);
        free(ids);
        return 2;
    }
    sm_error err = {0};
    sm_model *m = NULL;
    sm_model_opts opts = {.moe_runner_backend = runner, .n_threads = threads, .max_seqs = 1, .max_context = n};
    rc = 1;
    sm_row *rows = malloc((size_t)n * sizeof *rows);
    float *logits = NULL;
    if (!rows) goto done;
    if (sm_model_load(model_dir, &opts, &m, &err)) { rc = fail("score", &err); goto done; }
    int vocab = sm_model_cfg(m)->vocab_size;
    if (!(logits = malloc((size_t)last * vocab * sizeof(float)))) goto done;
    for (int i = 0; i < n; i++) rows[i] = (sm_row){.seq = 0, .token = ids[i], .pos = i, .want_logits = i >= n - last};
    if (sm_model_forward(m, rows, n, NULL, logits, &err)) { rc = fail("score", &err); goto done; }
    printf("{\"ids\": [");
    for (int i = 0; i < n; i++) printf("%s%d", i ? ", " : "", ids[i]);
    printf("], \"first_position\": %d, \"logits\": [", n - last);
    for (int r = 0; r < last; r++) {
        printf("%s[", r ? ",\n  " : "\n  ");
        for (int v = 0; v < vocab; v++) printf("%s%.9g", v ? ", " : "", logits[(long)r * vocab + v]);
        printf("]");
    }
    printf("\n]}\n");
    rc = 0;
done:
    free(ids);
    free(rows);
    free(logits);
    sm_model_free(m);
    return rc;
}
