/* src/sched/workload.h — the requests of one run: prompts (read from a file or generated with
 * a seeded generator) and their arrival times (all at once, or open-loop Poisson arrivals).
 *
 * Prompt files: plain text (one prompt per non-empty line) or JSONL (.jsonl / .json: one object
 * per line with "prompt" text or "prompt_ids" token ids; "max_new_tokens" optional). Text needs
 * the target's tokenizer; token ids do not. */
#ifndef SM_SCHED_WORKLOAD_H
#define SM_SCHED_WORKLOAD_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "model/tokenizer.h"

typedef struct sm_prompt {
    char *text;          /* NULL when given as ids */
    int *ids;            /* NULL when given as text */
    int n_ids;
    int max_new_tokens;  /* 0 = the arm's */
} sm_prompt;

typedef struct sm_prompt_set {
    sm_prompt *items;
    int n;
    bool needs_tokenizer; /* some prompt is text */
    int max_ids;          /* longest id prompt (text prompts not counted) */
} sm_prompt_set;

/* Errors name the file and line. */
sm_status sm_prompts_read(const char *path, sm_prompt_set *out, sm_error *err);
void sm_prompts_free(sm_prompt_set *p);

typedef struct sm_workload_opts {
    const sm_prompt_set *prompts; /* NULL: generate random prompts */
    const sm_tokenizer *tokenizer;/* needed for text prompts */
    int num_prompts;
    int random_input_len;         /* generated prompt length */
    int vocab_size;               /* generated ids are drawn from [0, vocab_size) */
    const int *avoid_ids;         /* ids never generated (end-of-sequence ids) */
    int n_avoid_ids;
    int max_new_tokens;
    double request_rate;          /* > 0: Poisson arrivals at this rate; 0: all at time 0 */
    uint64_t seed;
} sm_workload_opts;

typedef struct sm_workload_item {
    int *prompt;
    int n_prompt;
    int max_new_tokens;
    double arrival_s;   /* planned, seconds after the run starts (0 in a closed loop) */
} sm_workload_item;

typedef struct sm_workload {
    sm_workload_item *items;
    int n;
} sm_workload;

sm_status sm_workload_build(const sm_workload_opts *o, sm_workload *out, sm_error *err);
void sm_workload_free(sm_workload *w);

#endif
