#include "core/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

struct sm_threadpool {
    int n_threads;              /* workers + the calling thread */
    pthread_t *workers;
    pthread_mutex_t lock;
    pthread_cond_t work_ready, work_done;
    unsigned long generation;   /* bumped for every run so workers notice new work */
    int workers_running;
    bool shutting_down;
    /* the current job */
    sm_task_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next_task;
};

static void run_tasks(sm_threadpool *tp) {
    for (;;) {
        int task = atomic_fetch_add(&tp->next_task, 1);
        if (task >= tp->n_tasks) return;
        tp->fn(tp->ctx, task);
    }
}

static void *worker_main(void *arg) {
    sm_threadpool *tp = arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&tp->lock);
    for (;;) {
        while (tp->generation == seen && !tp->shutting_down) pthread_cond_wait(&tp->work_ready, &tp->lock);
        if (tp->shutting_down) break;
        seen = tp->generation;
        pthread_mutex_unlock(&tp->lock);
        run_tasks(tp);
        pthread_mutex_lock(&tp->lock);
        if (--tp->workers_running == 0) pthread_cond_signal(&tp->work_done);
    }
    pthread_mutex_unlock(&tp->lock);
    return NULL;
}

sm_status sm_threadpool_create(int n_threads, sm_threadpool **out, sm_error *err) {
    if (n_threads <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = cores > 0 ? (int)cores : 1;
    }
    sm_threadpool *tp;
    SM_TRY(sm_calloc((void **)&tp, 1, sizeof *tp, "thread pool", err));
    tp->n_threads = n_threads;
    pthread_mutex_init(&tp->lock, NULL);
    pthread_cond_init(&tp->work_ready, NULL);
    pthread_cond_init(&tp->work_done, NULL);
    if (n_threads > 1) {
        sm_status s = sm_calloc((void **)&tp->workers, (size_t)n_threads - 1, sizeof(pthread_t), "thread pool", err);
        if (s != SM_OK) { free(tp); return s; }
        for (int i = 0; i < n_threads - 1; i++) {
            if (pthread_create(&tp->workers[i], NULL, worker_main, tp) != 0) {
                tp->n_threads = i + 1; /* destroy joins only those started */
                sm_threadpool_destroy(tp);
                return sm_fail(err, SM_ENOMEM, "could not start worker thread %d of %d", i + 1, n_threads - 1);
            }
        }
    }
    *out = tp;
    return SM_OK;
}

void sm_threadpool_run(sm_threadpool *tp, int n_tasks, sm_task_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (tp->n_threads == 1 || n_tasks == 1) {
        for (int i = 0; i < n_tasks; i++) fn(ctx, i);
        return;
    }
    pthread_mutex_lock(&tp->lock);
    tp->fn = fn;
    tp->ctx = ctx;
    tp->n_tasks = n_tasks;
    atomic_store(&tp->next_task, 0);
    tp->workers_running = tp->n_threads - 1;
    tp->generation++;
    pthread_cond_broadcast(&tp->work_ready);
    pthread_mutex_unlock(&tp->lock);

    run_tasks(tp); /* the caller works too */

    pthread_mutex_lock(&tp->lock);
    while (tp->workers_running > 0) pthread_cond_wait(&tp->work_done, &tp->lock);
    pthread_mutex_unlock(&tp->lock);
}

int sm_threadpool_size(const sm_threadpool *tp) { return tp->n_threads; }

void sm_threadpool_destroy(sm_threadpool *tp) {
    if (!tp) return;
    pthread_mutex_lock(&tp->lock);
    tp->shutting_down = true;
    pthread_cond_broadcast(&tp->work_ready);
    pthread_mutex_unlock(&tp->lock);
    for (int i = 0; i < tp->n_threads - 1; i++) pthread_join(tp->workers[i], NULL);
    pthread_mutex_destroy(&tp->lock);
    pthread_cond_destroy(&tp->work_ready);
    pthread_cond_destroy(&tp->work_done);
    free(tp->workers);
    free(tp);
}
