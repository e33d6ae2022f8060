/* threadpool.h - a small fixed-size thread pool for data-parallel loops.
 *
 * The pool owns nthreads-1 worker threads; the calling thread takes part as
 * thread 0, so tp_new(1) runs everything inline. One parallel_for runs at a
 * time per pool (concurrent callers are serialized); a task must not call
 * tp_parallel_for on the same pool (no nesting).
 */
#ifndef KVTIER_THREADPOOL_H
#define KVTIER_THREADPOOL_H

/* A task body: ctx is the caller's context, task in [0, ntasks), thread in
 * [0, tp_nthreads) identifies the executing thread (use it to index
 * per-thread scratch buffers). */
typedef void (*tp_fn)(void *ctx, int task, int thread);

typedef struct threadpool threadpool_t;

/* Creates a pool of nthreads threads in all (the caller counts as one);
 * nthreads <= 0 means the number of online CPUs. Returns NULL when a thread
 * cannot be created (nothing leaks). Free with tp_free. */
threadpool_t *tp_new(int nthreads);

/* Runs fn(ctx, t, thread) for every t in [0, ntasks) across the pool and
 * returns when all have finished. Tasks are handed out dynamically (an atomic
 * counter), so uneven tasks balance. pool NULL runs inline on the caller. */
void tp_parallel_for(threadpool_t *pool, int ntasks, tp_fn fn, void *ctx);

/* Workers waiting for work stop spinning now and sleep until the next
 * tp_parallel_for. Call before the caller blocks on I/O (a tier fetch), so
 * that spinning threads leave the CPU to the threads doing that I/O. Any
 * thread; NULL is a no-op. */
void tp_nap(threadpool_t *pool);

/* Joins the workers and frees the pool. NULL is a no-op. */
void tp_free(threadpool_t *pool);

/* Number of threads (including the caller); 1 for a NULL pool. */
int tp_nthreads(const threadpool_t *pool);

/* Number of online CPUs (at least 1). */
int tp_online_cpus(void);

#endif
