/* threadpool.c - fixed-size pool: generation counter + atomic task counter.
 *
 * Workers sleep on a condition variable until the generation changes, spin
 * briefly first (decode issues a few hundred short parallel_fors per token,
 * and a futex wake costs tens of microseconds), then grab tasks with an
 * atomic fetch_add until none are left and report done.
 */
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define TP_SPIN_ITERS 20000

struct threadpool {
    int nthreads;
    pthread_t *threads;     /* [nthreads-1] */
    pthread_mutex_t lock;   /* guards sleeping and generation changes */
    pthread_cond_t wake;    /* workers wait here for a new generation */
    pthread_cond_t done_cv; /* the caller waits here for the last worker */
    pthread_mutex_t call_lock; /* serializes tp_parallel_for callers */
    atomic_uint generation; /* bumped once per parallel_for (and on stop) */
    atomic_int next_task;   /* next task index to hand out */
    atomic_int pending;     /* workers still busy with this generation */
    int ntasks;
    tp_fn fn;
    void *ctx;
    int stop;
};

typedef struct {
    threadpool_t *pool;
    int index;
} tp_worker_arg;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void tp_run_tasks(threadpool_t *p, int thread) {
    for (;;) {
        int t = atomic_fetch_add_explicit(&p->next_task, 1, memory_order_relaxed);
        if (t >= p->ntasks) break;
        p->fn(p->ctx, t, thread);
    }
}

static void *tp_worker(void *argp) {
    tp_worker_arg *arg = argp;
    threadpool_t *p = arg->pool;
    int index = arg->index;
    free(arg);
    unsigned seen = 0;
    for (;;) {
        unsigned g = atomic_load_explicit(&p->generation, memory_order_acquire);
        for (int i = 0; i < TP_SPIN_ITERS && g == seen; i++) {
            cpu_relax();
            g = atomic_load_explicit(&p->generation, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->lock);
            while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen)
                pthread_cond_wait(&p->wake, &p->lock);
            pthread_mutex_unlock(&p->lock);
        }
        seen = g;
        if (p->stop) break;
        tp_run_tasks(p, index);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->lock);
        }
    }
    return NULL;
}

int tp_online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

threadpool_t *tp_new(int nthreads) {
    if (nthreads <= 0) nthreads = tp_online_cpus();
    threadpool_t *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->nthreads = nthreads;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->call_lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->next_task, 0);
    atomic_init(&p->pending, 0);
    if (nthreads > 1) {
        p->threads = calloc((size_t)nthreads - 1, sizeof *p->threads);
        if (!p->threads) {
            free(p);
            return NULL;
        }
    }
    for (int i = 1; i < nthreads; i++) {
        tp_worker_arg *arg = malloc(sizeof *arg);
        int rc = -1;
        if (arg) {
            arg->pool = p;
            arg->index = i;
            rc = pthread_create(&p->threads[i - 1], NULL, tp_worker, arg);
            if (rc != 0) free(arg);
        }
        if (rc != 0) {
            p->nthreads = i; /* join only those started */
            tp_free(p);
            return NULL;
        }
    }
    return p;
}

void tp_parallel_for(threadpool_t *p, int ntasks, tp_fn fn, void *ctx) {
    if (ntasks <= 0) return;
    if (!p || p->nthreads == 1 || ntasks == 1) {
        for (int t = 0; t < ntasks; t++) fn(ctx, t, 0);
        return;
    }
    pthread_mutex_lock(&p->call_lock);
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    atomic_store_explicit(&p->next_task, 0, memory_order_relaxed);
    atomic_store_explicit(&p->pending, p->nthreads - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->lock);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    tp_run_tasks(p, 0);

    for (int i = 0; i < TP_SPIN_ITERS; i++) {
        if (atomic_load_explicit(&p->pending, memory_order_acquire) == 0) break;
        cpu_relax();
    }
    if (atomic_load_explicit(&p->pending, memory_order_acquire) != 0) {
        pthread_mutex_lock(&p->lock);
        while (atomic_load_explicit(&p->pending, memory_order_acquire) != 0)
            pthread_cond_wait(&p->done_cv, &p->lock);
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&p->call_lock);
}

void tp_free(threadpool_t *p) {
    if (!p) return;
    if (p->nthreads > 1) {
        pthread_mutex_lock(&p->lock);
        p->stop = 1;
        atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
        for (int i = 0; i < p->nthreads - 1; i++) pthread_join(p->threads[i], NULL);
    }
    free(p->threads);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->call_lock);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done_cv);
    free(p);
}

int tp_nthreads(const threadpool_t *p) { return p ? p->nthreads : 1; }
