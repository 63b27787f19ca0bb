/* src/core/threadpool.h — a fixed pool of worker threads for the CPU backend.
 *
 * sm_threadpool_run splits n_tasks over the workers and returns when all are done. Results are
 * deterministic as long as each task writes its own outputs: which thread runs a task never
 * changes what the task computes. */
#ifndef SM_THREADPOOL_H
#define SM_THREADPOOL_H

#include "core/status.h"

typedef struct sm_threadpool sm_threadpool;
typedef void (*sm_task_fn)(void *ctx, int task);

/* n_threads <= 0: one per online core. */
sm_status sm_threadpool_create(int n_threads, sm_threadpool **out, sm_error *err);
void sm_threadpool_run(sm_threadpool *tp, int n_tasks, sm_task_fn fn, void *ctx);
int sm_threadpool_size(const sm_threadpool *tp);
void sm_threadpool_destroy(sm_threadpool *tp);

#endif
