/* tier_put_batch against real RocksDB in a temp dir: all-or-nothing on a bad
 * item anywhere in the batch (every validation error, with its index), the
 * whole batch survives close + reopen and a SIGKILL right after the call,
 * last copy wins, SSD budget checked for the whole batch without dropping
 * anything when it cannot fit, write-back batches land in RAM and delete
 * older durable copies. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "tier.h"
#include "tier_test_util.h"

#define BB 65536u /* block bytes */
#define NB 8      /* items per batch */

typedef struct ctx {
    char *dir;
    tier_options o;
    tier_t *t;
    uint8_t buf[NB][BB]; /* payloads of one batch */
    tier_put_item it[NB];
    int tiers[NB];
    char err[256];
} ctx;

static int setup(void **state) {
    ctx *c = calloc(1, sizeof *c);
    c->dir = tt_tmpdir();
    if (!c->dir)
        return -1;
    tier_options_init(&c->o);
    c->o.data_dir = c->dir;
    c->o.host_budget = 64ULL * BB;
    c->o.ssd_budget = 1ULL << 30;
    *state = c;
    return 0;
}

static int teardown(void **state) {
    ctx *c = *state;
    tier_close(c->t);
    tt_rmrf(c->dir);
    free(c->dir);
    free(c);
    return 0;
}

static void open_store(ctx *c) {
    tier_status rc = tier_open(&c->o, &c->t, c->err, sizeof c->err);
    if (rc != TIER_OK)
        fail_msg("tier_open: %s: %s", tier_status_name(rc), c->err);
}

static void seq_open(ctx *c, uint64_t seq) {
    tier_seq_info i = {.n_layers = 2,
                       .n_kv_heads = 8,
                       .head_dim = 128,
                       .block_tokens = 16,
                       .max_blocks = 64,
                       .block_bytes = BB};
    assert_int_equal(tier_seq_open(c->t, "b", seq, &i, c->err, sizeof c->err), TIER_OK);
}

/* Items 0..NB-1: seq, layer i % 2, block b0 + i / 2, pattern salt. */
static void fill(ctx *c, uint64_t seq, uint32_t b0, uint32_t salt) {
    for (uint32_t i = 0; i < NB; i++) {
        uint32_t l = i % 2, b = b0 + i / 2;
        tt_pattern(c->buf[i], BB, l, b, salt);
        c->it[i] =
            (tier_put_item){{"b", seq, l, b}, c->buf[i], BB, tier_crc32c(0, c->buf[i], BB), 16, 0};
    }
}

/* Fetches (seq, l, b): TIER_OK only when byte-identical to pattern salt. */
static tier_status fetch_is(ctx *c, uint64_t seq, uint32_t l, uint32_t b, uint32_t salt) {
    tier_block_key k = {"b", seq, l, b};
    void *d = NULL;
    size_t len = 0;
    tier_status rc = tier_fetch(c->t, &k, &d, &len, NULL, NULL, c->err, sizeof c->err);
    if (rc != TIER_OK)
        return rc;
    uint8_t *want = malloc(BB);
    tt_pattern(want, BB, l, b, salt);
    int same = len == BB && memcmp(d, want, BB) == 0;
    free(want);
    tier_buf_free(d);
    if (!same)
        fail_msg("(%llu,%u,%u): payload differs from salt %u", (unsigned long long)seq, l, b, salt);
    return TIER_OK;
}

/* Every item of the batch is absent: fetch NOT_FOUND and the stat says not stored. */
static void assert_none_stored(ctx *c) {
    for (uint32_t i = 0; i < NB; i++) {
        assert_int_equal(fetch_is(c, c->it[i].key.seq, c->it[i].key.layer, c->it[i].key.block, 0),
                         TIER_ENOTFOUND);
        tier_block_meta m;
        assert_int_equal(tier_block_stat(c->t, &c->it[i].key, &m, c->err, sizeof c->err), TIER_OK);
        assert_true(m.tier != TIER_HOST && m.tier != TIER_SSD);
        assert_int_equal(m.durable, 0);
    }
}

static void assert_all_stored(ctx *c, uint32_t salt) {
    for (uint32_t i = 0; i < NB; i++)
        assert_int_equal(
            fetch_is(c, c->it[i].key.seq, c->it[i].key.layer, c->it[i].key.block, salt), TIER_OK);
}

/* A bad item in the middle, of every kind: nothing stored, its index reported. */
static void test_all_or_nothing(void **state) {
    ctx *c = *state;
    open_store(c);
    seq_open(c, 1);
    size_t bad = 99;
    tier_stats before, after;

    fill(c, 1, 0, 1);
    c->it[4].crc32c ^= 1; /* bad crc32c */
    tier_stats_get(c->t, &before);
    assert_int_equal(tier_put_batch(c->t, c->it, NB, c->tiers, &bad, c->err, sizeof c->err),
                     TIER_EDATALOSS);
    assert_int_equal(bad, 4);
    assert_non_null(strstr(c->err, "crc32c"));
    tier_stats_get(c->t, &after);
    assert_int_equal(after.dataloss, before.dataloss + 1);
    assert_int_equal(after.level[TIER_HOST].puts + after.level[TIER_SSD].puts,
                     before.level[TIER_HOST].puts + before.level[TIER_SSD].puts);
    assert_none_stored(c);

    fill(c, 1, 0, 1);
    c->it[5].key.layer = 7; /* outside the shape */
    assert_int_equal(tier_put_batch(c->t, c->it, NB, NULL, &bad, c->err, sizeof c->err),
                     TIER_EINVAL);
    assert_int_equal(bad, 5);
    assert_non_null(strstr(c->err, "outside the sequence shape"));
    c->it[5].key.layer = 1;
    assert_none_stored(c);

    c->it[6].ntokens = 17; /* > block_tokens */
    assert_int_equal(tier_put_batch(c->t, c->it, NB, NULL, &bad, c->err, sizeof c->err),
                     TIER_EINVAL);
    assert_int_equal(bad, 6);
    c->it[6].ntokens = 16;

    uint8_t *over = calloc(1, BB + 1);
    c->it[3] = (tier_put_item){{"b", 1, 1, 1}, over, BB + 1, tier_crc32c(0, over, BB + 1), 16, 0};
    assert_int_equal(tier_put_batch(c->t, c->it, NB, NULL, &bad, c->err, sizeof c->err),
                     TIER_ETOOBIG);
    assert_int_equal(bad, 3); /* over the sequence's block_bytes */
    assert_non_null(strstr(c->err, "block_bytes"));
    free(over);
    c->it[3].len = 0; /* empty */
    assert_int_equal(tier_put_batch(c->t, c->it, NB, NULL, &bad, c->err, sizeof c->err),
                     TIER_EINVAL);
    assert_int_equal(bad, 3);
    fill(c, 1, 0, 1);

    c->it[7].key.seq = 404; /* unknown sequence, last item */
    assert_int_equal(tier_put_batch(c->t, c->it, NB, NULL, &bad, c->err, sizeof c->err),
                     TIER_ENOTFOUND);
    assert_int_equal(bad, 7);
    c->it[7].key.seq = 1;
    assert_none_stored(c);

    /* tier_put_check agrees with the batch and stores nothing */
    c->it[2].crc32c ^= 1;
    assert_int_equal(tier_put_check(c->t, &c->it[1], c->err, sizeof c->err), TIER_OK);
    assert_int_equal(tier_put_check(c->t, &c->it[2], c->err, sizeof c->err), TIER_EDATALOSS);
    c->it[2].crc32c ^= 1;
    assert_none_stored(c);

    /* the same batch, all good: every item stored where it says */
    bad = 99;
    assert_int_equal(tier_put_batch(c->t, c->it, NB, c->tiers, &bad, c->err, sizeof c->err),
                     TIER_OK);
    assert_int_equal(bad, NB);
    for (int i = 0; i < NB; i++)
        assert_int_equal(c->tiers[i], TIER_HOST);
    assert_all_stored(c, 1);
    /* n == 0 is a no-op */
    assert_int_equal(tier_put_batch(c->t, NULL, 0, NULL, &bad, c->err, sizeof c->err), TIER_OK);
}

/* Close + reopen: the batch is in RocksDB and the index comes back. */
static void test_reopen_shows_all(void **state) {
    ctx *c = *state;
    open_store(c);
    seq_open(c, 2);
    seq_open(c, 3);
    fill(c, 2, 10, 2);
    for (uint32_t i = NB / 2; i < NB; i++)
        c->it[i].key.seq = 3; /* two sequences in one batch */
    assert_int_equal(tier_put_batch(c->t, c->it, NB, c->tiers, NULL, c->err, sizeof c->err),
                     TIER_OK);
    assert_int_equal(tier_close(c->t), TIER_OK);
    c->t = NULL;
    open_store(c);
    assert_all_stored(c, 2);
    tier_block_meta m;
    assert_int_equal(tier_block_stat(c->t, &c->it[NB - 1].key, &m, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(m.tier, TIER_SSD); /* RAM is gone: served from RocksDB */
    assert_int_equal(m.ntokens, 16);
    assert_int_equal(m.durable, 1);
}

/* A process killed right after tier_put_batch returned (no close): all there. */
static void test_kill_after_batch(void **state) {
    ctx *c = *state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        if (tier_open(&c->o, &c->t, c->err, sizeof c->err) != TIER_OK)
            _exit(2);
        tier_seq_info i = {.n_layers = 2,
                           .n_kv_heads = 8,
                           .head_dim = 128,
                           .block_tokens = 16,
                           .max_blocks = 64,
                           .block_bytes = BB};
        if (tier_seq_open(c->t, "b", 4, &i, c->err, sizeof c->err) != TIER_OK)
            _exit(3);
        fill(c, 4, 0, 4);
        if (tier_put_batch(c->t, c->it, NB, NULL, NULL, c->err, sizeof c->err) != TIER_OK)
            _exit(4);
        if (write(p[1], "k", 1) != 1)
            _exit(5);
        for (;;)
            pause(); /* killed here */
    }
    close(p[1]);
    char ch = 0;
    ssize_t r = read(p[0], &ch, 1);
    close(p[0]);
    int status = 0;
    if (r != 1) {
        waitpid(pid, &status, 0);
        fail_msg("child failed before the kill (exit %d)", WEXITSTATUS(status));
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status));
    open_store(c);
    fill(c, 4, 0, 4);
    assert_all_stored(c, 4);
}

/* A block twice in one batch: the last copy is stored, both get its tier. */
static void test_last_copy_wins(void **state) {
    ctx *c = *state;
    open_store(c);
    seq_open(c, 5);
    fill(c, 5, 0, 5);
    tt_pattern(c->buf[6], BB, 0, 0, 55); /* item 6 rewrites item 0's block (0,0) */
    c->it[6] = (tier_put_item){{"b", 5, 0, 0}, c->buf[6], BB, tier_crc32c(0, c->buf[6], BB), 16, 0};
    assert_int_equal(tier_put_batch(c->t, c->it, NB, c->tiers, NULL, c->err, sizeof c->err),
                     TIER_OK);
    assert_int_equal(c->tiers[0], c->tiers[6]);
    assert_int_equal(fetch_is(c, 5, 0, 0, 55), TIER_OK);
    tier_stats st;
    tier_stats_get(c->t, &st);
    assert_int_equal(st.level[TIER_HOST].blocks, NB - 1);
    assert_int_equal(st.level[TIER_HOST].bytes, (uint64_t)(NB - 1) * BB);
    assert_int_equal(tier_close(c->t), TIER_OK);
    c->t = NULL;
    open_store(c);
    assert_int_equal(fetch_is(c, 5, 0, 0, 55), TIER_OK);
}

/* SSD budget for the whole batch: too big -> EFULL, nothing dropped for it;
 * fits after dropping older blocks -> OK. */
static void test_ssd_budget(void **state) {
    ctx *c = *state;
    c->o.host_budget = 0; /* straight to RocksDB */
    c->o.ssd_budget = 10ULL * BB;
    open_store(c);
    seq_open(c, 6);
    seq_open(c, 7);
    fill(c, 6, 0, 6);
    assert_int_equal(tier_put_batch(c->t, c->it, NB, c->tiers, NULL, c->err, sizeof c->err),
                     TIER_OK);
    for (int i = 0; i < NB; i++)
        assert_int_equal(c->tiers[i], TIER_SSD);
    /* 8 + 8 blocks of budget 10: room can be made by dropping the older ones */
    fill(c, 7, 0, 7);
    assert_int_equal(tier_put_batch(c->t, c->it, NB, c->tiers, NULL, c->err, sizeof c->err),
                     TIER_OK);
    assert_all_stored(c, 7);
    tier_stats st;
    tier_stats_get(c->t, &st);
    assert_true(st.level[TIER_SSD].bytes <= 10ULL * BB);
    uint64_t ssd_blocks = st.level[TIER_SSD].blocks, dropped = st.level[TIER_DROPPED].blocks;
    assert_true(dropped >= 6);
    /* a batch bigger than the budget: EFULL, nothing dropped to make room */
    tier_put_item big[12];
    for (uint32_t i = 0; i < 12; i++)
        big[i] = (tier_put_item){{"b", 6, 1, 20 + i}, c->buf[0], BB, c->it[0].crc32c, 16, 0};
    size_t bad = 0;
    assert_int_equal(tier_put_batch(c->t, big, 12, NULL, &bad, c->err, sizeof c->err), TIER_EFULL);
    assert_int_equal(bad, 12);
    assert_non_null(strstr(c->err, "SSD budget"));
    tier_stats_get(c->t, &st);
    assert_int_equal(st.level[TIER_SSD].blocks, ssd_blocks);
    assert_int_equal(st.level[TIER_DROPPED].blocks, dropped);
    assert_all_stored(c, 7);
}

/* Write-back: the batch lands in RAM (not durable); re-putting durable blocks
 * deletes their older copy, so a reopen without flush cannot revive it. */
static void test_write_back(void **state) {
    ctx *c = *state;
    c->o.write_policy = TIER_WRITE_BACK;
    open_store(c);
    seq_open(c, 8);
    fill(c, 8, 0, 8);
    assert_int_equal(tier_put_batch(c->t, c->it, NB, c->tiers, NULL, c->err, sizeof c->err),
                     TIER_OK);
    tier_block_meta m;
    for (int i = 0; i < NB; i++) {
        assert_int_equal(c->tiers[i], TIER_HOST);
        assert_int_equal(tier_block_stat(c->t, &c->it[i].key, &m, c->err, sizeof c->err), TIER_OK);
        assert_int_equal(m.durable, 0);
    }
    uint64_t moved = 0;
    assert_int_equal(tier_drain(c->t, &moved, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(moved, NB); /* now durable */
    fill(c, 8, 0, 88);           /* rewrite the same blocks */
    assert_int_equal(tier_put_batch(c->t, c->it, NB, c->tiers, NULL, c->err, sizeof c->err),
                     TIER_OK);
    for (int i = 0; i < NB; i++) {
        assert_int_equal(tier_block_stat(c->t, &c->it[i].key, &m, c->err, sizeof c->err), TIER_OK);
        assert_int_equal(m.durable, 0);
        assert_int_equal(m.tier, TIER_HOST);
    }
    assert_all_stored(c, 88);
    tier_stats st;
    tier_stats_get(c->t, &st);
    assert_int_equal(st.level[TIER_SSD].blocks, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_shows_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_after_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_copy_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ssd_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_back, setup, teardown),
    };
    return cmocka_run_group_tests_name("tier_batch", tests, NULL, NULL);
}
