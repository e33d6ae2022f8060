/* test_admin_io.c — kvtierd's admin moves do their RocksDB work without the
 * store's lock (issue 7, item 4), end to end: a real kvtierd (write-back, so
 * RAM blocks have no RocksDB copy yet) on loopback, its first RocksDB write
 * of Evict --to ssd, of `kvtierctl drain` and of CloseSequence(retain) held
 * at the store's write gate (KVTIER_TEST_WRITE_GATE, tier_ssd.h).
 *
 * While the write is held, another client's FetchBlocks (another sequence,
 * from SSD) and GetStats complete: the test counts them (with the write under
 * the lock there are none) and reads a block of the moving sequence, still
 * served from RAM. Evict --to host brings the blocks back after the first
 * move (reads outside the lock); puts make them RAM-only again before the
 * next. After each move every block is byte-identical; after a kill -9 and
 * a restart too. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "itest.h"

#define LAYERS 2
#define NBLK 128   /* per layer: 256 blocks of 64 KiB, two 8 MiB rounds */
#define OTHER_N 8  /* blocks of the other sequence (on SSD) */
#define OPS 20     /* reader calls required while the write is held */
#define WAIT_S 120 /* safety bound only: the assertions count */

typedef struct world {
    itest_server srv;
    char gate[600], held[620];
} world;

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---------------------------------------------------------------- threads */

typedef struct reader {
    const itest_server *srv;
    atomic_int stop;
    atomic_long ops;  /* FetchBlocks + GetStats answered */
    atomic_int fails; /* a call that failed or a payload that differed */
} reader;

static void *reader_main(void *arg) {
    reader *r = arg;
    kvtier_client *c = itest_client(r->srv, NULL);
    for (uint32_t i = 0; !atomic_load(&r->stop); i++) {
        int same = 0;
        if (itest_fetch_one(c, 2, 0, i % OTHER_N, &same) != KVTIER_OK || !same)
            atomic_fetch_add(&r->fails, 1);
        kvtier_stats st;
        kvtier_error e;
        if (kvtier_stats_get(c, &st, &e) != KVTIER_OK)
            atomic_fetch_add(&r->fails, 1);
        atomic_fetch_add(&r->ops, 2);
    }
    kvtier_client_free(c);
    return NULL;
}

typedef enum { OP_EVICT_SSD, OP_DRAIN_CTL, OP_CLOSE_RETAIN } op_kind;

typedef struct admin_op {
    const itest_server *srv;
    op_kind kind;
    int ok;
    uint64_t moved;
    char msg[512];
    atomic_int done;
} admin_op;

static void *op_main(void *arg) {
    admin_op *o = arg;
    kvtier_error e = {0};
    if (o->kind == OP_DRAIN_CTL) {
        const char *argv[] = {itest_kvtierctl(), "--server", o->srv->addr, "drain", NULL};
        char *out = NULL, *err = NULL;
        int rc = itest_run(argv, &out, &err);
        o->ok = rc == 0 && out && strstr(out, "drained: 256 blocks written to SSD");
        snprintf(o->msg, sizeof o->msg, "kvtierctl drain: rc %d: %s%s", rc, out ? out : "",
                 err ? err : "");
        free(out);
        free(err);
    } else {
        kvtier_client *c = itest_client(o->srv, NULL);
        kvtier_code code = o->kind == OP_EVICT_SSD
                               ? kvtier_evict(c, 1, -1, KVTIER_TIER_SSD, &o->moved, &e)
                               : kvtier_close_sequence(c, 1, 1, NULL, NULL, &e);
        o->ok = code == KVTIER_OK;
        snprintf(o->msg, sizeof o->msg, "code %d: %.400s", (int)code, e.message);
        kvtier_client_free(c);
    }
    atomic_store(&o->done, 1);
    return NULL;
}

/* ---------------------------------------------------------------- steps */

/* every block of sequence 1 byte-identical */
static void check_seq1(kvtier_client *c) {
    for (uint32_t l = 0; l < LAYERS; l++)
        for (uint32_t b = 0; b < NBLK; b++) {
            int same = 0;
            assert_int_equal(itest_fetch_one(c, 1, l, b, &same), KVTIER_OK);
            assert_true(same);
        }
}

/* Runs `kind` with its first RocksDB write held at the gate. */
static void gated(world *w, kvtier_client *c, op_kind kind) {
    FILE *f = fopen(w->gate, "w");
    assert_non_null(f);
    fclose(f);
    admin_op o = {.srv = &w->srv, .kind = kind};
    reader r = {.srv = &w->srv};
    pthread_t ot, rt;
    pthread_create(&ot, NULL, op_main, &o);
    long waited = 0;
    while (!exists(w->held) && !atomic_load(&o.done) && waited++ < WAIT_S * 1000)
        sleep_ms(1);
    int held0 = exists(w->held);
    pthread_create(&rt, NULL, reader_main, &r);
    waited = 0;
    while (held0 && atomic_load(&r.ops) < OPS && waited++ < WAIT_S * 1000)
        sleep_ms(1);
    long ops = atomic_load(&r.ops);
    int held = exists(w->held), op_done = atomic_load(&o.done), same = 0;
    /* a block of the moving sequence, while its move is in flight */
    kvtier_code a0 = ops >= OPS ? itest_fetch_one(c, 1, 0, 0, &same) : KVTIER_INTERNAL;
    atomic_store(&r.stop, 1);
    remove(w->gate);
    pthread_join(rt, NULL);
    pthread_join(ot, NULL);
    print_message("op %d: %ld FetchBlocks/GetStats answered while the write was held\n", (int)kind,
                  ops);
    if (!held0)
        fail_msg("op %d never reached a RocksDB write: %s", (int)kind, o.msg);
    assert_true(held);
    assert_false(op_done);
    assert_true(ops >= OPS); /* with the write under the lock: none */
    assert_int_equal(atomic_load(&r.fails), 0);
    assert_int_equal(a0, KVTIER_OK); /* served from RAM until its copy landed */
    assert_true(same);
    if (!o.ok)
        fail_msg("op %d failed: %s", (int)kind, o.msg);
}

/* Evict --to host: every block of sequence 1 back in RAM (read outside the lock). */
static void back_to_host(kvtier_client *c) {
    uint64_t moved = 0;
    kvtier_error e;
    kvtier_code code = kvtier_evict(c, 1, -1, KVTIER_TIER_HOST, &moved, &e);
    if (code)
        fprintf(stderr, "evict --to host: %s\n", e.message);
    assert_int_equal(code, KVTIER_OK);
    assert_int_equal(moved, LAYERS * NBLK);
}

static void test_admin_moves_unlocked(void **state) {
    (void)state;
    world w;
    memset(&w, 0, sizeof w);
    char gdir[512];
    assert_int_equal(itest_tmpdir(gdir, sizeof gdir), 0);
    snprintf(w.gate, sizeof w.gate, "%s/gate", gdir);
    snprintf(w.held, sizeof w.held, "%s/gate.held", gdir);
    const char *extra[] = {"--host-write-policy", "back", "--host-budget", "256MiB", NULL};
    setenv("KVTIER_TEST_WRITE_GATE", w.gate, 1); /* read by kvtierd's store at open */
    assert_int_equal(itest_server_start(&w.srv, extra), 0);
    unsetenv("KVTIER_TEST_WRITE_GATE");
    kvtier_client *c = itest_client(&w.srv, NULL);
    itest_open_seq(c, 1, LAYERS);
    itest_put_range(c, 1, LAYERS, 0, NBLK);
    itest_open_seq(c, 2, 1);
    itest_put_range(c, 2, 1, 0, OTHER_N);
    uint64_t moved = 0;
    kvtier_error e;
    assert_int_equal(kvtier_evict(c, 2, -1, KVTIER_TIER_SSD, &moved, &e), KVTIER_OK);
    assert_int_equal(moved, OTHER_N);

    gated(&w, c, OP_EVICT_SSD);
    check_seq1(c);
    back_to_host(c);                        /* in RAM again, but with their RocksDB copies: */
    itest_put_range(c, 1, LAYERS, 0, NBLK); /* RAM only again (write-back) */
    gated(&w, c, OP_DRAIN_CTL);
    check_seq1(c);
    itest_put_range(c, 1, LAYERS, 0, NBLK);
    gated(&w, c, OP_CLOSE_RETAIN);
    check_seq1(c);
    kvtier_stats st;
    assert_int_equal(kvtier_stats_get(c, &st, &e), KVTIER_OK);
    assert_int_equal(st.tier[KVTIER_TIER_HOST].blocks, 0);
    assert_int_equal(st.tier[KVTIER_TIER_SSD].blocks, LAYERS * NBLK + OTHER_N);

    /* every move landed in RocksDB: all there after kill -9 */
    kvtier_client_free(c);
    itest_server_stop(&w.srv);
    assert_int_equal(itest_server_restart(&w.srv), 0);
    c = itest_client(&w.srv, NULL);
    check_seq1(c);
    kvtier_client_free(c);
    itest_server_stop(&w.srv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_moves_unlocked),
    };
    return cmocka_run_group_tests_name("admin_io", tests, NULL, NULL);
}
