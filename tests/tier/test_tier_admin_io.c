/* The admin moves do their RocksDB work without the store's lock (issue 7,
 * item 4): drain, evict (to SSD, DROPPED, HOST) and close (with and without
 * retain) decide under the lock, write outside it, publish after.
 *
 * Shown with the store's write gate (KVTIER_TEST_WRITE_GATE, tier_ssd.h):
 * while the move's first RocksDB write is held at the gate, a reader thread
 * fetches blocks of another sequence (RAM and SSD), reads the stats and
 * lists sequences; the test counts what it completed while the write was
 * held (with the write under the lock it completes nothing). The block
 * being moved stays readable from RAM until its copy landed; a writer waits
 * for the write; a write that fails leaves every block where it was. Real
 * RocksDB in a temp dir; ThreadSanitizer runs this too (ops/test.sh --tsan). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <cmocka.h>

#include "tier.h"
#include "tier_test_util.h"

#define BB 65536u  /* block bytes */
#define NA 300u    /* blocks of the moved sequence: several rounds of 8 MiB */
#define NB 8u      /* blocks of the other sequence (4 in RAM, 4 on SSD) */
#define OPS 60     /* reader operations required while the write is held */
#define WAIT_S 120 /* safety bound only (the assertions count, they do not time) */

typedef struct ctx {
    char *dir, *gdir;
    char gate[600], held[620];
    tier_t *t;
    char err[256];
} ctx;

static tier_seq_info shape(void) {
    tier_seq_info i = {.n_layers = 1,
                       .n_kv_heads = 8,
                       .head_dim = 128,
                       .block_tokens = 16,
                       .max_blocks = 4096,
                       .block_bytes = BB};
    return i;
}

static int setup(void **state) {
    ctx *c = calloc(1, sizeof *c);
    c->dir = tt_tmpdir();
    c->gdir = tt_tmpdir();
    if (!c->dir || !c->gdir)
        return -1;
    snprintf(c->gate, sizeof c->gate, "%s/gate", c->gdir);
    snprintf(c->held, sizeof c->held, "%s/gate.held", c->gdir);
    *state = c;
    return 0;
}

static int teardown(void **state) {
    ctx *c = *state;
    remove(c->gate);
    tier_close(c->t);
    tt_rmrf(c->dir);
    tt_rmrf(c->gdir);
    free(c->dir);
    free(c->gdir);
    free(c);
    return 0;
}

static void open_store(ctx *c) {
    tier_options o;
    tier_options_init(&o);
    o.data_dir = c->dir;
    o.write_policy = TIER_WRITE_BACK; /* RAM blocks have no RocksDB copy yet */
    o.host_budget = 64ULL << 20;
    setenv("KVTIER_TEST_WRITE_GATE", c->gate, 1); /* read at open */
    tier_status rc = tier_open(&o, &c->t, c->err, sizeof c->err);
    unsetenv("KVTIER_TEST_WRITE_GATE");
    if (rc != TIER_OK)
        fail_msg("tier_open: %s", c->err);
}

static void reopen(ctx *c) {
    assert_int_equal(tier_close(c->t), TIER_OK);
    c->t = NULL;
    open_store(c);
}

static void gate_set(ctx *c, const char *content) {
    FILE *f = fopen(c->gate, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static int exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* puts blocks [b0, b1) of (tenant, seq) in one batch, placed at `target`
 * (0: the service picks: RAM) */
static void put_range(ctx *c, const char *ten, uint64_t seq, uint32_t b0, uint32_t b1,
                      uint8_t target) {
    uint32_t n = b1 - b0;
    uint8_t *buf = malloc((size_t)n * BB);
    tier_put_item *it = calloc(n, sizeof *it);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *p = buf + (size_t)i * BB;
        tt_pattern(p, BB, 0, b0 + i, (uint32_t)seq);
        it[i] = (tier_put_item){{ten, seq, 0, b0 + i}, p, BB, tier_crc32c(0, p, BB), 16, target};
    }
    size_t bad = 0;
    tier_status rc = tier_put_batch(c->t, it, n, NULL, &bad, c->err, sizeof c->err);
    if (rc != TIER_OK)
        fail_msg("put_batch: %s", c->err);
    free(it);
    free(buf);
}

static void seq_open(ctx *c, const char *ten, uint64_t seq) {
    tier_seq_info i = shape();
    assert_int_equal(tier_seq_open(c->t, ten, seq, &i, c->err, sizeof c->err), TIER_OK);
}

/* fetch (ten, seq, 0, b): the status; on OK the payload must be the pattern
 * and *where (may be NULL) gets its tier */
static tier_status fetch(tier_t *t, const char *ten, uint64_t seq, uint32_t b, int *where) {
    tier_block_key k = {ten, seq, 0, b};
    void *d = NULL;
    size_t n = 0;
    char err[256];
    tier_status rc = tier_fetch(t, &k, &d, &n, NULL, where, err, sizeof err);
    if (rc == TIER_OK) {
        uint8_t *want = malloc(BB);
        tt_pattern(want, BB, 0, b, (uint32_t)seq);
        if (n != BB || memcmp(d, want, BB) != 0)
            rc = TIER_EDATALOSS;
        free(want);
    }
    tier_buf_free(d);
    return rc;
}

/* ---------------------------------------------------------------- threads */

typedef struct reader {
    tier_t *t;
    atomic_int stop;
    atomic_long ops;  /* fetches, stats and lists completed */
    atomic_int fails; /* a fetch that was not the right block */
} reader;

/* Sequence b/2 on another tenant: blocks 0..3 in RAM, 4..7 on SSD. */
static void *reader_main(void *arg) {
    reader *r = arg;
    for (uint32_t i = 0; !atomic_load(&r->stop); i++) {
        int where = -1;
        uint32_t b = i % NB;
        if (fetch(r->t, "b", 2, b, &where) != TIER_OK || where != (b < 4 ? TIER_HOST : TIER_SSD))
            atomic_fetch_add(&r->fails, 1);
        tier_stats st;
        tier_stats_get(r->t, &st);
        tier_seq_desc *list = NULL;
        size_t n = 0;
        char err[200];
        if (tier_seq_list(r->t, NULL, &list, &n, err, sizeof err) != TIER_OK || n < 1)
            atomic_fetch_add(&r->fails, 1);
        tier_buf_free(list);
        atomic_fetch_add(&r->ops, 1);
    }
    return NULL;
}

typedef enum { OP_DRAIN, OP_EVICT_SSD, OP_EVICT_DROP, OP_CLOSE_RETAIN, OP_CLOSE_DELETE } op_kind;

typedef struct admin_op {
    tier_t *t;
    op_kind kind;
    tier_status rc;
    uint64_t moved;
    char err[256];
    atomic_int done;
} admin_op;

static tier_status run_op(tier_t *t, op_kind kind, uint64_t *moved, char *err, size_t errlen) {
    switch (kind) {
    case OP_DRAIN:
        return tier_drain(t, moved, err, errlen);
    case OP_EVICT_SSD:
        return tier_evict(t, "a", 1, -1, TIER_SSD, moved, err, errlen);
    case OP_EVICT_DROP:
        return tier_evict(t, "a", 1, -1, TIER_DROPPED, moved, err, errlen);
    case OP_CLOSE_RETAIN:
        return tier_seq_close(t, "a", 1, 1, err, errlen);
    default:
        return tier_seq_close(t, "a", 1, 0, err, errlen);
    }
}

static void *op_main(void *arg) {
    admin_op *o = arg;
    o->rc = run_op(o->t, o->kind, &o->moved, o->err, sizeof o->err);
    atomic_store(&o->done, 1);
    return NULL;
}

typedef struct writer {
    tier_t *t;
    tier_status rc;
    atomic_int done;
} writer;

/* re-puts block 0 of b/2 (same payload) */
static void *writer_main(void *arg) {
    writer *w = arg;
    uint8_t *buf = malloc(BB);
    char err[256];
    tt_pattern(buf, BB, 0, 0, 2);
    tier_block_key k = {"b", 2, 0, 0};
    w->rc = tier_put(w->t, &k, buf, BB, tier_crc32c(0, buf, BB), 16, NULL, err, sizeof err);
    free(buf);
    atomic_store(&w->done, 1);
    return NULL;
}

/* ---------------------------------------------------------------- scenario */

/* a/1: NA blocks in RAM (written back: no RocksDB copy); b/2: NB blocks,
 * the last 4 evicted to SSD. */
static void fill(ctx *c) {
    seq_open(c, "a", 1);
    seq_open(c, "b", 2);
    put_range(c, "a", 1, 0, NA, 0);
    put_range(c, "b", 2, 0, 4, 0);
    put_range(c, "b", 2, 4, NB, TIER_SSD);
    tier_stats st;
    tier_stats_get(c->t, &st);
    assert_int_equal(st.level[TIER_HOST].blocks, NA + 4);
    assert_int_equal(st.level[TIER_SSD].blocks, 4);
}

/* Runs `kind` with its first write held at the gate; returns the op (done). */
static void gated(ctx *c, op_kind kind, admin_op *o) {
    reader r = {.t = c->t};
    writer w = {.t = c->t};
    *o = (admin_op){.t = c->t, .kind = kind};
    gate_set(c, "");
    pthread_t rt, ot, wt;
    pthread_create(&ot, NULL, op_main, o);
    long waited = 0;
    while (!exists(c->held) && !atomic_load(&o->done) && waited++ < WAIT_S * 1000)
        sleep_ms(1);
    assert_true(exists(c->held)); /* the move is inside a RocksDB write */
    pthread_create(&rt, NULL, reader_main, &r);
    pthread_create(&wt, NULL, writer_main, &w);
    waited = 0;
    while (atomic_load(&r.ops) < OPS && waited++ < WAIT_S * 1000)
        sleep_ms(1);
    long ops = atomic_load(&r.ops);
    int held = exists(c->held), op_done = atomic_load(&o->done), w_done = atomic_load(&w.done);
    /* a block of the moved sequence, read while its move is in flight (only
     * when the reader got through: else the lock is held and it would hang) */
    int where = -1, got_through = ops >= OPS;
    tier_status a0 = got_through ? fetch(c->t, "a", 1, 0, &where) : TIER_EIO;
    atomic_store(&r.stop, 1); /* before the move goes on (b/2's RAM blocks may move too) */
    if (!got_through)
        remove(c->gate); /* the reader is stuck behind the write: let it go */
    pthread_join(rt, NULL);
    remove(c->gate);
    pthread_join(ot, NULL);
    pthread_join(wt, NULL);
    print_message("op %d: %ld reader operations while the write was held\n", (int)kind, ops);
    assert_true(held);
    assert_false(op_done);
    assert_true(ops >= OPS); /* with RocksDB under the lock: 0 */
    assert_int_equal(atomic_load(&r.fails), 0);
    assert_false(w_done); /* writers wait for the write */
    assert_int_equal(w.rc, TIER_OK);
    if (kind == OP_EVICT_DROP || kind == OP_CLOSE_DELETE) {
        assert_int_equal(a0, TIER_ENOTFOUND); /* decided: gone at once */
    } else {
        assert_int_equal(a0, TIER_OK); /* still served from RAM */
        assert_int_equal(where, TIER_HOST);
    }
    if (o->rc != TIER_OK)
        fail_msg("op %d: %s: %s", (int)kind, tier_status_name(o->rc), o->err);
}

/* after a move to SSD: every block of a/1 on SSD, also after a restart */
static void check_on_ssd(ctx *c) {
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t b = 0; b < NA; b++) {
            int where = -1;
            assert_int_equal(fetch(c->t, "a", 1, b, &where), TIER_OK);
            assert_int_equal(where, TIER_SSD);
        }
        reopen(c);
    }
}

static void check_gone(ctx *c) {
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t b = 0; b < NA; b += 7)
            assert_int_equal(fetch(c->t, "a", 1, b, NULL), TIER_ENOTFOUND);
        assert_int_equal(fetch(c->t, "b", 2, 5, NULL), TIER_OK);
        reopen(c);
    }
}

/* ---------------------------------------------------------------- tests */

static void test_drain(void **state) {
    ctx *c = *state;
    open_store(c);
    fill(c);
    admin_op o;
    gated(c, OP_DRAIN, &o);
    assert_int_equal(o.moved, NA + 4);
    tier_stats st;
    tier_stats_get(c->t, &st);
    /* the writer's block came in after the drain's count was taken (or was
     * drained): RAM holds at most it */
    assert_true(st.level[TIER_HOST].blocks <= 1);
    check_on_ssd(c);
}

static void test_evict_ssd(void **state) {
    ctx *c = *state;
    open_store(c);
    fill(c);
    admin_op o;
    gated(c, OP_EVICT_SSD, &o);
    assert_int_equal(o.moved, NA);
    tier_stats st;
    tier_stats_get(c->t, &st);
    assert_int_equal(st.level[TIER_HOST].blocks, 4); /* b/2's RAM blocks stay */
    check_on_ssd(c);
}

static void test_close_retain(void **state) {
    ctx *c = *state;
    open_store(c);
    fill(c);
    admin_op o;
    gated(c, OP_CLOSE_RETAIN, &o);
    tier_seq_desc d;
    assert_int_equal(tier_seq_get(c->t, "a", 1, &d, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(d.open, 0);
    assert_int_equal(d.blocks[TIER_SSD], NA);
    check_on_ssd(c);
    assert_int_equal(tier_seq_get(c->t, "a", 1, &d, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(d.open, 0); /* the record landed too */
}

static void test_evict_dropped(void **state) {
    ctx *c = *state;
    open_store(c);
    fill(c);
    uint64_t moved = 0; /* on SSD: the evict deletes payloads */
    assert_int_equal(tier_evict(c->t, "a", 1, -1, TIER_SSD, &moved, c->err, sizeof c->err),
                     TIER_OK);
    admin_op o;
    gated(c, OP_EVICT_DROP, &o);
    assert_int_equal(o.moved, NA);
    check_gone(c);
}

static void test_close_delete(void **state) {
    ctx *c = *state;
    open_store(c);
    fill(c);
    admin_op o;
    gated(c, OP_CLOSE_DELETE, &o);
    tier_seq_desc d;
    assert_int_equal(tier_seq_get(c->t, "a", 1, &d, c->err, sizeof c->err), TIER_ENOTFOUND);
    check_gone(c);
    assert_int_equal(tier_seq_get(c->t, "a", 1, &d, c->err, sizeof c->err), TIER_ENOTFOUND);
}

/* A write that fails (gate "fail"): drain, evict and close with retain
 * report it (EIO, the message names the write) and every block stays in RAM,
 * readable; once writes work again the same calls move everything. */
static void test_write_fails(void **state) {
    ctx *c = *state;
    open_store(c);
    fill(c);
    gate_set(c, "fail");
    uint64_t moved = 7;
    for (int k = 0; k < 3; k++) {
        op_kind kind = k == 0 ? OP_DRAIN : k == 1 ? OP_EVICT_SSD : OP_CLOSE_RETAIN;
        c->err[0] = 0;
        assert_int_equal(run_op(c->t, kind, &moved, c->err, sizeof c->err), TIER_EIO);
        assert_non_null(strstr(c->err, "test gate"));
        tier_stats st;
        tier_stats_get(c->t, &st);
        assert_int_equal(st.level[TIER_HOST].blocks, NA + 4); /* nothing lost, nothing moved */
        for (uint32_t b = 0; b < NA; b += 13) {
            int where = -1;
            assert_int_equal(fetch(c->t, "a", 1, b, &where), TIER_OK);
            assert_int_equal(where, TIER_HOST);
        }
    }
    assert_int_equal(moved, 0);
    remove(c->gate);
    assert_int_equal(tier_drain(c->t, &moved, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(moved, NA + 4);
    check_on_ssd(c);
}

/* Evict to HOST reads outside the lock too: SSD blocks come back into RAM
 * (verified) while they fit the RAM budget, nothing else pushed out. */
static void test_evict_host(void **state) {
    ctx *c = *state;
    open_store(c);
    fill(c);
    uint64_t moved = 0;
    assert_int_equal(tier_evict(c->t, "a", 1, -1, TIER_SSD, &moved, c->err, sizeof c->err),
                     TIER_OK);
    assert_int_equal(moved, NA);
    assert_int_equal(tier_evict(c->t, "a", 1, -1, TIER_HOST, &moved, c->err, sizeof c->err),
                     TIER_OK);
    /* 64 MiB of RAM, 4 blocks of b/2 in it: NA more fit */
    assert_int_equal(moved, NA);
    for (uint32_t b = 0; b < NA; b += 11) {
        int where = -1;
        assert_int_equal(fetch(c->t, "a", 1, b, &where), TIER_OK);
        assert_int_equal(where, TIER_HOST);
    }
    tier_stats st;
    tier_stats_get(c->t, &st);
    assert_int_equal(st.level[TIER_HOST].blocks, NA + 4);
    assert_int_equal(tier_evict(c->t, "a", 1, -1, TIER_HOST, &moved, c->err, sizeof c->err),
                     TIER_OK);
    assert_int_equal(moved, 0); /* nothing left on SSD */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_drain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evict_ssd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_retain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evict_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_evict_host, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
