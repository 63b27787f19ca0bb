/* src/exp/experiment.h — a resolved experiment: its arms (fully resolved configurations), how
 * often and in which order they run.
 *
 * The setting names are the flat names of the Lua API and the columns of the `arms` table
 * (db/schema.sql); sm_arm_settings[] is the one list of them, and drives reading a resolved arm
 * from Lua, its JSON, its database row and the --dry-run listing. */
#ifndef SM_EXP_EXPERIMENT_H
#define SM_EXP_EXPERIMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct sm_model_settings {
    char *path;               /* NULL for a draft unless drafter = "model" */
    char *moe_runner_backend; /* "auto", "ref", ... */
    char *dtype;              /* "auto" (as stored) or a dtype name */
    char *moe_a2a_backend;    /* "local", ... */
    char *device;             /* "cpu" or "cuda" (sm_model_opts.device) */
    char *weights;            /* "checkpoint" or "random" (sm_model_opts.random_weights; cuda only) */
    int64_t weights_seed;     /* seed of random weights */
    int chunked_prefill_size; /* rows per GPU forward pass (sm_model_opts); 0 = unset: 4096 */
} sm_model_settings;

typedef struct sm_arm {
    int index;                /* 0-based position in the script's list */
    char *name;
    char *where;              /* "script.lua:12": where the arm was declared, for messages */
    sm_model_settings target, draft;
    char *drafter;            /* "none", "model", "ngram", "self" */
    int num_speculative_tokens;
    int prompt_lookup_min, prompt_lookup_max; /* 0 = unset */
    int self_draft_top_k;                     /* 0 = unset */
    double temperature, top_p;
    int top_k;
    int64_t seed;
    char *workload_kind;      /* "prompts" or "random" */
    char *prompts_file;       /* NULL for random */
    int num_prompts;
    int random_input_len;     /* 0 = unset */
    int max_new_tokens;
    double request_rate;      /* 0 = closed loop */
    int max_concurrency;      /* 0 = unlimited */
    char *settings_json;      /* every setting, as JSON */
} sm_arm;

typedef struct sm_run_slot {
    int arm;                  /* index into arms */
    int repeat;
} sm_run_slot;

typedef struct sm_experiment {
    char *name, *description;
    char *script_path, *script_text;
    int repeats;
    char *order;              /* "interleaved", "sequential", "shuffled" */
    bool record_routes;
    int warmup_requests;      /* untimed requests through each run's engine first (SGLang's --warmup-requests) */
    sm_arm *arms;
    int n_arms;
    sm_run_slot *schedule;    /* the runs in execution order */
    int n_schedule;
    char *settings_json;      /* the whole resolved experiment */
} sm_experiment;

/* ---- the setting table -------------------------------------------------------------------- */

typedef enum sm_setting_kind { SM_SETTING_STRING, SM_SETTING_INT, SM_SETTING_INT64, SM_SETTING_REAL } sm_setting_kind;

typedef struct sm_setting {
    const char *name;         /* flat Lua name == arms column */
    sm_setting_kind kind;
    size_t offset;            /* into sm_arm */
    bool nullable;            /* NULL string / 0 number stored as SQL NULL */
    /* Left out of the arm's JSON while at its default (NULL / "checkpoint" / 0): an experiment
     * recorded before the setting existed keeps its JSON, so it still matches and resumes. */
    bool json_if_set;
} sm_setting;

extern const sm_setting sm_arm_settings[];
extern const int sm_n_arm_settings;

/* Builds arm->settings_json from the fields. */
sm_status sm_arm_make_json(sm_arm *arm, sm_error *err);
void sm_experiment_free(sm_experiment *x);

/* Writes the resolved arms and schedule for people (--dry-run). */
void sm_experiment_print(const sm_experiment *x, void *file /* FILE* */);

#endif
