/* test_threadpool.c - every task runs exactly once, thread ids in range,
 * repeated calls and uneven tasks, inline pools. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "threadpool.h"

typedef struct {
    atomic_int *hits; /* [ntasks] */
    int nthreads;
    atomic_int bad_thread;
} count_ctx;

static void count_task(void *ctxp, int task, int thread) {
    count_ctx *c = ctxp;
    atomic_fetch_add(&c->hits[task], 1);
    if (thread < 0 || thread >= c->nthreads)
        atomic_fetch_add(&c->bad_thread, 1);
    if (task % 7 == 0) { /* uneven work */
        volatile double s = 0;
        for (int i = 0; i < 2000; i++)
            s += i;
    }
}

static void run_pool(int nthreads) {
    threadpool_t *p = tp_new(nthreads);
    assert_non_null(p);
    assert_int_equal(tp_nthreads(p), nthreads);
    for (int round = 0; round < 200; round++) {
        int ntasks = 1 + round % 37;
        atomic_int hits[64];
        for (int i = 0; i < 64; i++)
            atomic_init(&hits[i], 0);
        count_ctx c = {.hits = hits, .nthreads = nthreads};
        atomic_init(&c.bad_thread, 0);
        tp_parallel_for(p, ntasks, count_task, &c);
        for (int i = 0; i < ntasks; i++)
            assert_int_equal(atomic_load(&hits[i]), 1);
        for (int i = ntasks; i < 64; i++)
            assert_int_equal(atomic_load(&hits[i]), 0);
        assert_int_equal(atomic_load(&c.bad_thread), 0);
    }
    tp_free(p);
}

static void test_single(void **state) {
    (void)state;
    run_pool(1);
}
static void test_two(void **state) {
    (void)state;
    run_pool(2);
}
static void test_four(void **state) {
    (void)state;
    run_pool(4);
}

static void test_null_pool_inline(void **state) {
    (void)state;
    atomic_int hits[5];
    for (int i = 0; i < 5; i++)
        atomic_init(&hits[i], 0);
    count_ctx c = {.hits = hits, .nthreads = 1};
    atomic_init(&c.bad_thread, 0);
    tp_parallel_for(NULL, 5, count_task, &c);
    for (int i = 0; i < 5; i++)
        assert_int_equal(atomic_load(&hits[i]), 1);
    assert_int_equal(tp_nthreads(NULL), 1);
    tp_free(NULL);
}

static void test_default_threads(void **state) {
    (void)state;
    threadpool_t *p = tp_new(0);
    assert_non_null(p);
    assert_int_equal(tp_nthreads(p), tp_online_cpus());
    tp_free(p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single),
        cmocka_unit_test(test_two),
        cmocka_unit_test(test_four),
        cmocka_unit_test(test_null_pool_inline),
        cmocka_unit_test(test_default_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
