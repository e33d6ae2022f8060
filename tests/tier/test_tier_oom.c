/* Allocation failures of the block index (issue 9: the cleanup after "out
 * of memory growing the index" in tier_put_batch wrote into slots that were
 * never grown, and kvtierd died with SIGSEGV). With the index's fault seam
 * (tier_index_fault_set) every index allocation of a put batch, a summary,
 * a sequence open and a recovery is made to fail in turn: each failure is an
 * error status, never a crash, and every block stored before is still there
 * byte for byte, also after a reopen. Real RocksDB in a temp dir. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tier.h"
#include "tier_index.h"
#include "tier_test_util.h"

#define BB 4096u /* block bytes */
#define NL 256u  /* layers: a far block id then needs a large index */

typedef struct ctx {
    char *dir;
    tier_options o;
    tier_t *t;
    uint8_t buf[BB];
    char err[256];
} ctx;

static int setup(void **state) {
    ctx *c = calloc(1, sizeof *c);
    c->dir = tt_tmpdir();
    if (!c->dir)
        return -1;
    tier_options_init(&c->o);
    c->o.data_dir = c->dir;
    c->o.host_budget = 16ULL * BB;
    *state = c;
    return 0;
}

static int teardown(void **state) {
    ctx *c = *state;
    tier_index_fault_set(0);
    tier_close(c->t);
    tt_rmrf(c->dir);
    free(c->dir);
    free(c);
    return 0;
}

static tier_status open_seq(ctx *c, uint64_t seq) {
    tier_seq_info i = {.n_layers = NL, .n_kv_heads = 1, .head_dim = 64, .block_tokens = 16};
    return tier_seq_open(c->t, "oom", seq, &i, c->err, sizeof c->err);
}

static tier_status put_one(ctx *c, uint64_t seq, uint32_t l, uint32_t b, uint32_t salt,
                           size_t *bad) {
    tt_pattern(c->buf, BB, l, b, salt);
    tier_put_item it = {{"oom", seq, l, b}, c->buf, BB, tier_crc32c(0, c->buf, BB), 16, 0};
    return tier_put_batch(c->t, &it, 1, NULL, bad, c->err, sizeof c->err);
}

/* TIER_OK only when (seq, l, b) fetches byte-identical to pattern salt. */
static tier_status fetch_is(ctx *c, uint64_t seq, uint32_t l, uint32_t b, uint32_t salt) {
    tier_block_key k = {"oom", seq, l, b};
    void *d = NULL;
    size_t len = 0;
    tier_status rc = tier_fetch(c->t, &k, &d, &len, NULL, NULL, c->err, sizeof c->err);
    if (rc == TIER_OK) {
        tt_pattern(c->buf, BB, l, b, salt);
        if (len != BB || memcmp(d, c->buf, BB) != 0)
            rc = TIER_EDATALOSS;
    }
    tier_buf_free(d);
    return rc;
}

/* Stores the baseline every step checks: seq 1, blocks (0,0), (255,3), (7,1). */
static void store_baseline(ctx *c) {
    assert_int_equal(open_seq(c, 1), TIER_OK);
    assert_int_equal(put_one(c, 1, 0, 0, 1, NULL), TIER_OK);
    assert_int_equal(put_one(c, 1, 255, 3, 1, NULL), TIER_OK);
    assert_int_equal(put_one(c, 1, 7, 1, 1, NULL), TIER_OK);
}

static void check_baseline(ctx *c) {
    assert_int_equal(fetch_is(c, 1, 0, 0, 1), TIER_OK);
    assert_int_equal(fetch_is(c, 1, 255, 3, 1), TIER_OK);
    assert_int_equal(fetch_is(c, 1, 7, 1, 1), TIER_OK);
}

/* The crash of issue 9: the growth of a batch fails; the cleanup must not
 * touch the slots that were never grown. */
static void test_put_grow_fails(void **state) {
    ctx *c = *state;
    assert_int_equal(tier_open(&c->o, &c->t, c->err, sizeof c->err), TIER_OK);
    store_baseline(c);
    long hits = tier_index_fault_set(1);
    size_t bad = 0;
    tier_status rc = put_one(c, 1, NL - 1, 65535, 2, &bad);
    assert_int_equal(tier_index_fault_set(0), hits + 1);
    assert_int_equal(rc, TIER_EFULL);
    assert_int_equal(bad, 1); /* the batch as a whole */
    assert_non_null(strstr(c->err, "out of memory growing the index"));
    assert_int_equal(fetch_is(c, 1, NL - 1, 65535, 2), TIER_ENOTFOUND);
    check_baseline(c);
    /* without the fault the same put works, and the store still does */
    assert_int_equal(put_one(c, 1, NL - 1, 65535, 2, NULL), TIER_OK);
    assert_int_equal(fetch_is(c, 1, NL - 1, 65535, 2), TIER_OK);
    check_baseline(c);
}

/* One round of every call that allocates index memory, on a new sequence
 * `seq`. Returns how many calls failed; each failure must be a status. */
static int round_of_calls(ctx *c, uint64_t seq) {
    int failed = 0;
    tier_status rc = open_seq(c, seq);
    if (rc != TIER_OK) {
        assert_int_equal(rc, TIER_EIO); /* out of memory adding the sequence */
        return 1;
    }
    rc = put_one(c, seq, 3, 40, 3, NULL);
    if (rc != TIER_OK) {
        assert_int_equal(rc, TIER_EFULL);
        failed++;
    }
    tier_layer_summary ls = {0};
    tier_summary s = {.step = 10, .n_blocks = 700, .layers = &ls, .n_layers = 0};
    tier_decision *d = NULL;
    size_t nd = 0;
    rc = tier_summarize(c->t, "oom", seq, &s, &d, &nd, c->err, sizeof c->err);
    tier_buf_free(d);
    if (rc != TIER_OK) {
        assert_int_equal(rc, TIER_EFULL);
        failed++;
    }
    rc = put_one(c, seq, 0, 5000, 3, NULL);
    if (rc != TIER_OK) {
        assert_int_equal(rc, TIER_EFULL);
        failed++;
    }
    return failed;
}

/* Fails the 1st, 2nd, ... index allocation of a round of calls until a round
 * needs no more; after each, everything stored before is intact. */
static void test_every_allocation(void **state) {
    ctx *c = *state;
    assert_int_equal(tier_open(&c->o, &c->t, c->err, sizeof c->err), TIER_OK);
    store_baseline(c);
    int rounds = 0;
    for (long nth = 1; nth < 64; nth++) {
        long before = tier_index_fault_set(nth);
        int failed = round_of_calls(c, 100 + (uint64_t)nth);
        long hit = tier_index_fault_set(0) - before;
        assert_int_equal(failed, hit); /* the failed allocation is the failed call */
        check_baseline(c);
        rounds++;
        if (!hit)
            break; /* the round made fewer than nth allocations */
    }
    assert_true(rounds >= 5); /* open, 3 growths (2 arrays each) were all tried */
    assert_true(rounds < 63);
}

/* Recovery: a failed allocation while rebuilding the index fails the open
 * (EIO) and changes nothing on disk; the next open recovers everything. */
static void test_recovery_fails(void **state) {
    ctx *c = *state;
    assert_int_equal(tier_open(&c->o, &c->t, c->err, sizeof c->err), TIER_OK);
    store_baseline(c);
    assert_int_equal(open_seq(c, 2), TIER_OK);
    assert_int_equal(put_one(c, 2, 9, 300, 4, NULL), TIER_OK);
    assert_int_equal(tier_close(c->t), TIER_OK);
    c->t = NULL;
    int failures = 0;
    for (long nth = 1; nth < 32; nth++) {
        long before = tier_index_fault_set(nth);
        tier_status rc = tier_open(&c->o, &c->t, c->err, sizeof c->err);
        long hit = tier_index_fault_set(0) - before;
        if (!hit) {
            assert_int_equal(rc, TIER_OK);
            break;
        }
        assert_int_equal(rc, TIER_EIO);
        assert_null(c->t);
        assert_non_null(strstr(c->err, "out of memory"));
        failures++;
    }
    assert_true(failures >= 3); /* buckets, sequences, block arrays */
    assert_non_null(c->t);
    check_baseline(c);
    assert_int_equal(fetch_is(c, 2, 9, 300, 4), TIER_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_grow_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_allocation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recovery_fails, setup, teardown),
    };
    return cmocka_run_group_tests_name("tier_oom", tests, NULL, NULL);
}
