/* specmoe run EXPERIMENT.lua — check the script, then run every (arm, repeat) into the results
 * database, one transaction per run. Re-running the same script resumes: runs already complete
 * are skipped (--fresh starts a new experiment). SIGINT/SIGTERM stop after marking the current
 * run interrupted; completed runs stay. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "exp/db.h"
#include "exp/experiment.h"
#include "exp/lua_experiment.h"
#include "exp/recorder.h"
#include "exp/route_tap.h"
#include "model/model.h"
#include "sched/sched.h"
#include "sched/workload.h"
#include "spec/spec.h"

/* The one piece of process state: a signal handler can only reach a global. */
static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* ---- models, loaded once and shared by the arms that name the same settings ---------------- */

typedef struct loaded_model {
    const sm_model_settings *settings;
    const char *role;   /* a draft never shares the target's instance: each needs its own KV cache */
    sm_model *model;
} loaded_model;

typedef struct model_cache {
    loaded_model *items;
    int n;
    sm_model_opts base; /* threads, slots */
} model_cache;

static bool same_str(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

static sm_status get_model(model_cache *c, const sm_model_settings *ms, const char *role, const char *where,
                           sm_model **out, sm_error *err) {
    for (int i = 0; i < c->n; i++) {
        const sm_model_settings *x = c->items[i].settings;
        if (!strcmp(c->items[i].role, role) && same_str(x->path, ms->path) &&
            same_str(x->moe_runner_backend, ms->moe_runner_backend) &&
            same_str(x->moe_a2a_backend, ms->moe_a2a_backend) && same_str(x->dtype, ms->dtype) &&
            same_str(x->device, ms->device) && same_str(x->weights, ms->weights) && x->weights_seed == ms->weights_seed &&
            x->chunked_prefill_size == ms->chunked_prefill_size) {
            *out = c->items[i].model;
            return SM_OK;
        }
    }
    sm_model_opts o = c->base;
    o.moe_runner_backend = ms->moe_runner_backend;
    o.moe_a2a_backend = ms->moe_a2a_backend;
    o.dtype = ms->dtype;
    o.device = ms->device;
    o.random_weights = ms->weights && !strcmp(ms->weights, "random");
    o.seed = (uint64_t)ms->weights_seed;
    o.chunked_prefill_size = ms->chunked_prefill_size;
    sm_model *m;
    if (sm_model_load(ms->path, &o, &m, err) != SM_OK)
        return sm_error_prefix(err, "%s: loading the %s model %s: ", where, role, ms->path);
    loaded_model *grown = realloc(c->items, (size_t)(c->n + 1) * sizeof *grown);
    if (!grown) {
        sm_model_free(m);
        return sm_fail(err, SM_ENOMEM, "out of memory");
    }
    c->items = grown;
    c->items[c->n++] = (loaded_model){ms, role, m};
    *out = m;
    return SM_OK;
}

static void free_models(model_cache *c) {
    for (int i = 0; i < c->n; i++) sm_model_free(c->items[i].model);
    free(c->items);
}

/* KV slots one arm needs: its concurrency, or every request when unlimited (capped). */
static int arm_slots(const sm_arm *a) {
    int n = a->max_concurrency > 0 ? a->max_concurrency : a->num_prompts;
    if (n > a->num_prompts) n = a->num_prompts;
    return n < 64 ? n : 64;
}

/* ---- the sink: scheduler events -> recorder ------------------------------------------------- */

typedef struct run_ctx {
    sm_recorder *rec;
    sm_route_tap *tap;
    bool tty;
    const char *arm_name;
    int repeat, run_no, n_runs;
    int num_layers;
    double progress_shown_s; /* when the progress line was last drawn (run time) */
} run_ctx;

static sm_status sink_emission(void *ctx, const sm_request_state *r, int emission_index, double time_s, int n_tokens,
                               sm_error *err) {
    run_ctx *c = ctx;
    return sm_recorder_emission(c->rec, r->index, emission_index, time_s, n_tokens, err);
}

static int64_t sum_layers(const int *per_layer, int n) {
    if (!per_layer) return -1;
    int64_t s = 0;
    for (int i = 0; i < n; i++) s += per_layer[i];
    return s;
}

static sm_status sink_step(void *ctx, const sm_request_state *r, const sm_spec_seq_step *st, int64_t step,
                           double time_s, sm_error *err) {
    run_ctx *c = ctx;
    sm_recorded_step row = {
        .request_index = r->index,
        .step = step,
        .time_s = time_s,
        .k_proposed = st->num_proposed,
        .n_accepted = st->num_accepted,
        .n_emitted = st->num_emitted,
        .accepted_mask = st->accepted_mask,
        .draft_s = (double)st->draft_ns * 1e-9,
        .verify_s = (double)st->verify_ns * 1e-9,
        .overhead_s = (double)st->overhead_ns * 1e-9,
        .experts_touched_verify = sum_layers(st->experts_touched_verify, c->num_layers),
        .experts_touched_single = sum_layers(st->experts_touched_single, c->num_layers),
    };
    return sm_recorder_step(c->rec, &row, err);
}

static sm_status sink_request_done(void *ctx, const sm_request_state *r, sm_error *err) {
    run_ctx *c = ctx;
    sm_recorded_request q = {
        .request_index = r->index,
        .prompt_tokens = r->item->n_prompt,
        .output_tokens = r->output_tokens,
        .arrival_s = r->arrival_s,
        .first_token_s = r->first_token_s,
        .finish_s = r->finish_s,
        .status = "ok",
        .finish_reason = sm_spec_finish_name(r->finish),
    };
    return sm_recorder_request(c->rec, &q, err);
}

static sm_status sink_after_step(void *ctx, const sm_spec_step_metrics *m, sm_error *err) {
    run_ctx *c = ctx;
    return c->tap ? sm_route_tap_flush(c->tap, c->rec, m, err) : SM_OK;
}

static void sink_progress(void *ctx, int done, int total, int64_t tokens, double elapsed_s) {
    run_ctx *c = ctx;
    /* Redrawn at most ten times a second: a tiny model steps far faster than a terminal reads. */
    if (!c->tty || (done < total && elapsed_s - c->progress_shown_s < 0.1 && c->progress_shown_s > 0)) return;
    c->progress_shown_s = elapsed_s;
    fprintf(stderr, "\r\033[K[%d/%d] arm %s, repeat %d: %d/%d requests, %lld tokens, %.1f tok/s", c->run_no, c->n_runs,
            c->arm_name, c->repeat, done, total, (long long)tokens, elapsed_s > 0 ? tokens / elapsed_s : 0.0);
    fflush(stderr);
}

/* ---- one run ---------------------------------------------------------------------------------- */

typedef struct run_env {
    const sm_experiment *x;
    model_cache *models;
    sm_recorder *rec;
    bool tty;
} run_env;

static sm_status run_arm_repeat(run_env *env, const sm_arm *a, int64_t arm_id, int repeat, int run_no,
                                sm_error *err) {
    sm_model *target, *draft = NULL;
    SM_TRY(get_model(env->models, &a->target, "target", a->where, &target, err));
    if (!strcmp(a->drafter, "model")) SM_TRY(get_model(env->models, &a->draft, "draft", a->where, &draft, err));
    const sm_model_config *cfg = sm_model_cfg(target);

    sm_prompt_set prompts = {0};
    if (a->prompts_file) SM_TRY(sm_prompts_read(a->prompts_file, &prompts, err));
    int64_t seed = a->seed + repeat;
    sm_workload_opts wo = {
        .prompts = a->prompts_file ? &prompts : NULL,
        .tokenizer = sm_model_tokenizer(target),
        .num_prompts = a->num_prompts,
        .random_input_len = a->random_input_len,
        .vocab_size = cfg->vocab_size,
        .avoid_ids = cfg->eos_token_ids,
        .n_avoid_ids = cfg->n_eos_token_ids,
        .max_new_tokens = a->max_new_tokens,
        .request_rate = a->request_rate,
        .seed = (uint64_t)seed,
    };
    sm_workload w;
    sm_status s = sm_workload_build(&wo, &w, err);
    sm_prompts_free(&prompts);
    if (s != SM_OK) return sm_error_prefix(err, "%s: arm '%s': ", a->where, a->name);

    sm_spec_config sc = {
        .num_speculative_tokens = a->num_speculative_tokens,
        .drafter = a->drafter,
        .sampling = {.temperature = (float)a->temperature, .top_p = (float)a->top_p, .top_k = a->top_k},
        .draft_model = draft,
        .ngram_min = a->prompt_lookup_min,
        .ngram_max = a->prompt_lookup_max,
        .self_top_k = a->self_draft_top_k,
    };
    sm_spec_engine *engine = NULL;
    sm_route_tap *tap = NULL;
    sm_request_state *reqs = NULL;
    s = sm_spec_engine_create(target, &sc, &engine, err);
    if (s != SM_OK) sm_error_prefix(err, "%s: arm '%s': ", a->where, a->name);
    /* the drafter's model: the draft, or the self drafter's fork of the target */
    if (s == SM_OK) s = sm_route_tap_create(engine, target, sm_spec_draft_model(engine), env->x->record_routes, &tap, err);
    if (s == SM_OK) s = sm_calloc((void **)&reqs, (size_t)w.n, sizeof *reqs, "requests", err);
    /* Generated prompts run to max_new_tokens (vLLM's random dataset ignores EOS too), so
     * every arm produces the same number of tokens; prompts from a file stop at EOS. */
    bool use_eos = a->prompts_file != NULL;
    sm_sched_opts so = {.request_rate = a->request_rate, .max_concurrency = a->max_concurrency,
                        .stop_ids = use_eos ? cfg->eos_token_ids : NULL,
                        .n_stop_ids = use_eos ? cfg->n_eos_token_ids : 0,
                        .seed = (uint64_t)seed, .stop_flag = &stop_requested};
    if (s == SM_OK && env->x->warmup_requests > 0) {
        /* The first requests of the workload, closed loop and unrecorded: CUDA graph captures,
         * lazy allocations and cold caches land here instead of in the first run's tails. */
        sm_workload warm = {.items = w.items, .n = env->x->warmup_requests < w.n ? env->x->warmup_requests : w.n};
        sm_sched_opts wso = so;
        wso.request_rate = 0;
        s = sm_sched_run(engine, &warm, &wso, NULL, reqs, err);
        if (s != SM_OK) {
            sm_error_prefix(err, "%s: arm '%s' repeat %d: warm-up: ", a->where, a->name, repeat);
        } else {
            int64_t tokens = 0;
            for (int i = 0; i < warm.n; i++) tokens += reqs[i].output_tokens;
            fprintf(stderr, "warm-up before arm '%s' repeat %d: %d requests, %lld tokens (not recorded)\n", a->name,
                    repeat, warm.n, (long long)tokens);
        }
    }
    int64_t run_id = 0;
    if (s == SM_OK) s = sm_recorder_begin_run(env->rec, arm_id, repeat, seed, &run_id, err);
    if (s == SM_OK) {
        run_ctx rc = {.rec = env->rec, .tap = tap, .tty = env->tty, .arm_name = a->name, .repeat = repeat,
                      .run_no = run_no, .n_runs = env->x->n_schedule, .num_layers = cfg->num_layers};
        sm_sched_sink sink = {.ctx = &rc, .on_emission = sink_emission, .on_step = sink_step,
                              .on_request_done = sink_request_done, .after_step = sink_after_step,
                              .progress = sink_progress};
        s = sm_sched_run(engine, &w, &so, &sink, reqs, err);
        if (env->tty) fputs("\r\033[K", stderr);
        if (s == SM_OK) {
            s = sm_recorder_end_run(env->rec, SM_RUN_OK, NULL, err);
        } else {
            sm_error keep = *err;
            sm_error_prefix(&keep, "%s: arm '%s' repeat %d: ", a->where, a->name, repeat);
            sm_recorder_end_run(env->rec, stop_requested ? SM_RUN_INTERRUPTED : SM_RUN_FAILED, keep.msg, err);
            *err = keep;
        }
    }
    free(reqs);
    sm_route_tap_free(tap);
    sm_spec_engine_free(engine);
    sm_workload_free(&w);
    return s;
}

int sm_cmd_run(int argc, char **argv) {
    const char *db_path = "results.db";
    bool dry_run = false, fresh = false;
    int threads = 0;
    sm_arg args[] = {
        {"db", SM_ARG_STRING, &db_path, "results database (default results.db; created if missing)"},
        {"dry-run", SM_ARG_FLAG, &dry_run, "check the script and print the resolved arms; run nothing"},
        {"fresh", SM_ARG_FLAG, &fresh, "start a new experiment instead of resuming a matching one"},
        {"threads", SM_ARG_INT, &threads, "CPU threads per model (default: all cores)"},
    };
    const char *pos[1];
    int n_pos;
    /* Says which devices sm.model { device = ... } may name here (tests read it too). */
#ifdef SPECMOE_HAVE_CUDA
#define RUN_DEVICES "cpu, cuda"
#else
#define RUN_DEVICES "cpu (this specmoe was built without CUDA)"
#endif
    int rc = sm_args_parse("run", "EXPERIMENT.lua [--db results.db] [--dry-run] [--fresh]\n\n"
                           "devices for sm.model { device = ... }: " RUN_DEVICES, args,
                           (int)(sizeof args / sizeof args[0]), argc, argv, pos, 1, &n_pos);
    if (rc) return rc < 0 ? 0 : rc;
    if (n_pos != 1) {
        fprintf(stderr, "specmoe run: give one experiment script (specmoe run EXPERIMENT.lua)\n");
        return 2;
    }

    sm_error err = {0};
    sm_experiment x;
    if (sm_experiment_load(pos[0], NULL, &x, &err) != SM_OK) {
        fprintf(stderr, "specmoe run: %s\n", err.msg);
        return 1;
    }
    if (dry_run) {
        sm_experiment_print(&x, stdout);
        sm_experiment_free(&x);
        return 0;
    }

    bool tty = isatty(STDERR_FILENO);
    sqlite3 *db = NULL;
    sm_recorder *rec = NULL;
    int64_t *arm_ids = calloc((size_t)x.n_arms, sizeof *arm_ids);
    model_cache models = {0};
    int exit_code = 1, ran = 0, skipped = 0;
    int64_t experiment_id = 0;
    bool resumed = false;
    sm_status s = arm_ids ? SM_OK : sm_fail(&err, SM_ENOMEM, "out of memory");
    if (s == SM_OK) s = sm_db_open(db_path, NULL, &db, &err);
    if (s == SM_OK) s = sm_recorder_create(db, &rec, &err);
    if (s == SM_OK) s = sm_recorder_open_experiment(rec, &x, fresh, &experiment_id, &resumed, arm_ids, &err);
    if (s == SM_OK) {
        struct sigaction sa = {0};
        sa.sa_handler = on_signal;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        int slots = 1;
        for (int i = 0; i < x.n_arms; i++)
            if (arm_slots(&x.arms[i]) > slots) slots = arm_slots(&x.arms[i]);
        models.base = (sm_model_opts){.n_threads = threads, .max_seqs = slots};
        if (tty)
            fprintf(stderr, "%s experiment '%s' (id %lld) in %s: %d runs\n", resumed ? "resuming" : "running", x.name,
                    (long long)experiment_id, db_path, x.n_schedule);
        run_env env = {.x = &x, .models = &models, .rec = rec, .tty = tty};
        for (int i = 0; s == SM_OK && i < x.n_schedule; i++) {
            const sm_arm *a = &x.arms[x.schedule[i].arm];
            int repeat = x.schedule[i].repeat;
            bool complete;
            s = sm_recorder_run_complete(rec, arm_ids[a->index], repeat, &complete, &err);
            if (s != SM_OK) break;
            if (complete) {
                skipped++;
                continue;
            }
            if (stop_requested) {
                s = sm_fail(&err, SM_EINVAL, "interrupted");
                break;
            }
            s = run_arm_repeat(&env, a, arm_ids[a->index], repeat, i + 1, &err);
            if (s == SM_OK) ran++;
        }
        if (s == SM_OK) s = sm_recorder_close_experiment(rec, &err);
    }
    if (s == SM_OK) {
        exit_code = 0;
        printf("%s: experiment '%s' (id %lld): %d run%s recorded", db_path, x.name, (long long)experiment_id, ran,
               ran == 1 ? "" : "s");
        if (skipped) printf(", %d skipped as already complete", skipped);
        printf("\n");
    } else {
        fprintf(stderr, "specmoe run: %s\n", err.msg);
        if (stop_requested) {
            fprintf(stderr, "specmoe run: stopped; completed runs are kept in %s (run the script again to resume)\n",
                    db_path);
            exit_code = 130;
        }
    }
    sm_recorder_free(rec);
    free_models(&models);
    sm_db_close(db);
    free(arm_ids);
    sm_experiment_free(&x);
    return exit_code;
}
