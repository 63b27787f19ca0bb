/* src/sched/sched.h — running a workload's requests through a speculative engine: admission
 * (closed loop with a concurrency limit, or open-loop arrivals at planned times), one engine
 * step after another, and the time of every emitted token. What happens is reported to a sink
 * (the recorder, a test), so the scheduler itself stores nothing.
 *
 * Times are seconds since the run started (CLOCK_MONOTONIC, the engine's clock). A request's
 * arrival is its planned time in an open loop; in a closed loop it is the moment a client slot
 * frees (or 0 for every request when concurrency is unlimited: all are sent at once, as
 * `vllm bench serve` does without a rate). TTFT = first token - arrival, so queueing counts. */
#ifndef SM_SCHED_H
#define SM_SCHED_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "sched/workload.h"
#include "spec/spec.h"

typedef struct sm_request_state {
    int index;
    const sm_workload_item *item;
    double arrival_s;
    double first_token_s, finish_s; /* -1 until they happen */
    int output_tokens;
    int n_emissions;
    sm_spec_finish finish;
    int64_t seq_id;
    bool admitted, done;
} sm_request_state;

typedef struct sm_sched_sink {
    void *ctx;
    /* Every callback is optional. A failure stops the run with that error. */
    sm_status (*on_emission)(void *ctx, const sm_request_state *r, int emission_index, double time_s, int n_tokens,
                             sm_error *err);
    /* A decode step of one request (prefill steps are not reported here). */
    sm_status (*on_step)(void *ctx, const sm_request_state *r, const sm_spec_seq_step *s, int64_t step, double time_s,
                         sm_error *err);
    sm_status (*on_request_done)(void *ctx, const sm_request_state *r, sm_error *err);
    /* After each engine step, once its sequences were reported. */
    sm_status (*after_step)(void *ctx, const sm_spec_step_metrics *m, sm_error *err);
    void (*progress)(void *ctx, int done, int total, int64_t output_tokens, double elapsed_s);
} sm_sched_sink;

typedef struct sm_sched_opts {
    double request_rate;      /* > 0: open loop (arrival times from the workload) */
    int max_concurrency;      /* requests in flight at most; 0 = as many as the engine has slots */
    const int *stop_ids;      /* end-of-sequence ids; NULL = run to max_new_tokens */
    int n_stop_ids;
    uint64_t seed;            /* request i samples with seed + i */
    const volatile sig_atomic_t *stop_flag; /* set (by a signal handler) to stop: SM_EINVAL "interrupted" */
} sm_sched_opts;

/* requests: [w->n] out, filled as the run goes (valid also after a failure). */
sm_status sm_sched_run(sm_spec_engine *e, const sm_workload *w, const sm_sched_opts *o, const sm_sched_sink *sink,
                       sm_request_state *requests, sm_error *err);

#endif
