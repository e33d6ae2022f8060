/* threadpool.c - fixed-size pool with caller-driven completion.
 *
 * One 64-bit atomic word holds (generation << 32 | next task index). A
 * parallel_for publishes fn/ctx/ntasks, then stores (g, 0); every thread,
 * the caller included, claims task indices with a compare-and-swap that only
 * succeeds while the word still belongs to generation g. The caller waits
 * for the count of *completed tasks*, not for the workers: a worker that the
 * OS has not scheduled (2 cores shared with other jobs) simply claims
 * nothing, and the caller runs the tasks itself instead of waiting for a time
 * slice. When all tasks are done the caller closes the generation
 * (g, TP_CLOSED) before the next job's parameters are written, so a late
 * worker can never pair an old index with new parameters.
 *
 * Workers spin briefly on the word (decode issues a few hundred short loops
 * per token), then sleep on a condition variable.
 */
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define TP_SPIN_ITERS 20000
#define TP_CLOSED 0xffffffffu

struct threadpool {
    int nthreads;
    pthread_t *threads;        /* [nthreads-1] */
    pthread_mutex_t lock;      /* guards the sleep/wake handshakes */
    pthread_cond_t wake;       /* sleeping workers wait for a new generation */
    pthread_cond_t done_cv;    /* the caller waits for the last task */
    pthread_mutex_t call_lock; /* serializes tp_parallel_for callers */
    _Atomic uint64_t word;     /* generation << 32 | next task (TP_CLOSED: none) */
    atomic_int done;           /* tasks completed in this generation */
    atomic_int sleepers;       /* workers blocked on wake */
    atomic_int caller_waiting; /* caller blocked on done_cv */
    atomic_int stop;
    atomic_uint nap;   /* bumped by tp_nap: spinning workers go to sleep */
    atomic_int ntasks; /* parameters of the current generation (ntasks is read
                          by late workers racing the next job: atomic) */
    tp_fn fn;
    void *ctx;
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

static inline uint32_t w_gen(uint64_t w) {
    return (uint32_t)(w >> 32);
}
static inline uint32_t w_idx(uint64_t w) {
    return (uint32_t)w;
}

/* Claims and runs tasks of generation gen until none is left. */
static void tp_run_tasks(threadpool_t *p, uint32_t gen, int thread) {
    for (;;) {
        uint64_t w = atomic_load_explicit(&p->word, memory_order_acquire);
        if (w_gen(w) != gen || w_idx(w) == TP_CLOSED)
            return;
        uint32_t i = w_idx(w);
        if (i >= (uint32_t)atomic_load_explicit(&p->ntasks, memory_order_relaxed))
            return;
        if (!atomic_compare_exchange_weak_explicit(&p->word, &w, w + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        /* task i of gen is ours: the job cannot end before we report it, so
         * its parameters are stable until the fetch_add below */
        const int nt = atomic_load_explicit(&p->ntasks, memory_order_relaxed);
        p->fn(p->ctx, (int)i, thread);
        /* seq_cst pairs with the caller's store of caller_waiting (Dekker) */
        if (atomic_fetch_add(&p->done, 1) + 1 == nt && atomic_load(&p->caller_waiting)) {
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->lock);
        }
    }
}

static void *tp_worker(void *argp) {
    tp_worker_arg *arg = argp;
    threadpool_t *p = arg->pool;
    int index = arg->index;
    free(arg);
    uint32_t seen = 0;
    for (;;) {
        uint64_t w = atomic_load_explicit(&p->word, memory_order_acquire);
        unsigned nap = atomic_load_explicit(&p->nap, memory_order_relaxed);
        for (int i = 0; i < TP_SPIN_ITERS && w_gen(w) == seen && !atomic_load(&p->stop) &&
                        atomic_load_explicit(&p->nap, memory_order_relaxed) == nap;
             i++) {
            cpu_relax();
            w = atomic_load_explicit(&p->word, memory_order_acquire);
        }
        if (w_gen(w) == seen && !atomic_load(&p->stop)) {
            pthread_mutex_lock(&p->lock);
            atomic_fetch_add(&p->sleepers, 1);
            while (w_gen(w = atomic_load(&p->word)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->wake, &p->lock);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->lock);
        }
        if (atomic_load(&p->stop))
            break;
        seen = w_gen(w);
        tp_run_tasks(p, seen, index);
    }
    return NULL;
}

void tp_nap(threadpool_t *p) {
    if (p)
        atomic_fetch_add_explicit(&p->nap, 1, memory_order_relaxed);
}

int tp_online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

threadpool_t *tp_new(int nthreads) {
    if (nthreads <= 0)
        nthreads = tp_online_cpus();
    threadpool_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->nthreads = nthreads;
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->call_lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    atomic_init(&p->word, (uint64_t)TP_CLOSED); /* generation 0, closed */
    atomic_init(&p->done, 0);
    atomic_init(&p->ntasks, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->caller_waiting, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->nap, 0);
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
            if (rc != 0)
                free(arg);
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
    if (ntasks <= 0)
        return;
    if (!p || p->nthreads == 1 || ntasks == 1) {
        for (int t = 0; t < ntasks; t++)
            fn(ctx, t, 0);
        return;
    }
    pthread_mutex_lock(&p->call_lock);
    /* the previous generation is closed: no one reads these now */
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->ntasks, ntasks, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    uint32_t gen = w_gen(atomic_load_explicit(&p->word, memory_order_relaxed)) + 1;
    atomic_store(&p->word, (uint64_t)gen << 32); /* seq_cst: pairs with sleepers (Dekker) */
    if (atomic_load(&p->sleepers)) {
        pthread_mutex_lock(&p->lock);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
    }

    tp_run_tasks(p, gen, 0);

    for (int i = 0;
         i < TP_SPIN_ITERS && atomic_load_explicit(&p->done, memory_order_acquire) < ntasks; i++)
        cpu_relax();
    if (atomic_load_explicit(&p->done, memory_order_acquire) < ntasks) {
        pthread_mutex_lock(&p->lock);
        atomic_store(&p->caller_waiting, 1);
        while (atomic_load(&p->done) < ntasks)
            pthread_cond_wait(&p->done_cv, &p->lock);
        atomic_store(&p->caller_waiting, 0);
        pthread_mutex_unlock(&p->lock);
    }
    /* close the generation before anyone can write new parameters */
    atomic_store_explicit(&p->word, ((uint64_t)gen << 32) | TP_CLOSED, memory_order_release);
    pthread_mutex_unlock(&p->call_lock);
}

void tp_free(threadpool_t *p) {
    if (!p)
        return;
    if (p->nthreads > 1) {
        pthread_mutex_lock(&p->lock);
        atomic_store(&p->stop, 1);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
        for (int i = 0; i < p->nthreads - 1; i++)
            pthread_join(p->threads[i], NULL);
    }
    free(p->threads);
    pthread_mutex_destroy(&p->lock);
    pthread_mutex_destroy(&p->call_lock);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done_cv);
    free(p);
}

int tp_nthreads(const threadpool_t *p) {
    return p ? p->nthreads : 1;
}
