/* Write policies across a crash: a child process puts blocks and is
 * SIGKILLed without tier_close. After reopening, write-through blocks and
 * write-back blocks that reached RocksDB are intact; write-back blocks that
 * were only in RAM are NOT_FOUND (never garbage). A clean close flushes. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "tier.h"
#include "tier_test_util.h"

#define BB 65536u

static tier_seq_info shape(void) {
    tier_seq_info i = {.n_layers = 3,
                       .n_kv_heads = 8,
                       .head_dim = 128,
                       .block_tokens = 16,
                       .max_blocks = 1024,
                       .block_bytes = BB};
    return i;
}

static tier_t *open_at(const char *dir, tier_write_policy wp, uint64_t host_budget) {
    tier_options o;
    tier_options_init(&o);
    o.data_dir = dir;
    o.write_policy = wp;
    o.host_budget = host_budget;
    tier_t *t = NULL;
    char err[256];
    if (tier_open(&o, &t, err, sizeof err) != TIER_OK) {
        fprintf(stderr, "tier_open: %s\n", err);
        return NULL;
    }
    return t;
}

static int put_range(tier_t *t, uint32_t layer, uint32_t n, uint32_t salt) {
    uint8_t *buf = malloc(BB);
    char err[256];
    int bad = 0;
    for (uint32_t b = 0; b < n; b++) {
        tt_pattern(buf, BB, layer, b, salt);
        tier_block_key k = {"crash", 1, layer, b};
        if (tier_put(t, &k, buf, BB, tier_crc32c(0, buf, BB), 16, NULL, err, sizeof err) !=
            TIER_OK) {
            fprintf(stderr, "put: %s\n", err);
            bad++;
        }
    }
    free(buf);
    return bad;
}

/* count intact / not-found blocks of a layer; fails on anything else */
static void check_range(tier_t *t, uint32_t layer, uint32_t n, uint32_t salt, uint32_t *intact,
                        uint32_t *missing) {
    uint8_t *buf = malloc(BB);
    char err[256];
    *intact = *missing = 0;
    for (uint32_t b = 0; b < n; b++) {
        tier_block_key k = {"crash", 1, layer, b};
        void *d = NULL;
        size_t len = 0;
        tier_status rc = tier_fetch(t, &k, &d, &len, NULL, NULL, err, sizeof err);
        if (rc == TIER_ENOTFOUND) {
            (*missing)++;
            continue;
        }
        if (rc != TIER_OK)
            fail_msg("layer %u block %u: %s: %s", layer, b, tier_status_name(rc), err);
        tt_pattern(buf, BB, layer, b, salt);
        assert_int_equal(len, BB);
        assert_memory_equal(d, buf, BB);
        tier_buf_free(d);
        (*intact)++;
    }
    free(buf);
}

/* Child: phase 1 write-through (layer 0, 40 blocks), clean close; phase 2
 * write-back with RAM for 16 blocks (layer 1, 40 blocks: 24 evicted to
 * RocksDB, 16 only in RAM); then tells the parent and waits to be killed. */
static void child(const char *dir, int fd) {
    tier_t *t = open_at(dir, TIER_WRITE_THROUGH, 8 * BB);
    if (!t)
        _exit(2);
    tier_seq_info i = shape();
    char err[256];
    if (tier_seq_open(t, "crash", 1, &i, err, sizeof err) != TIER_OK)
        _exit(3);
    if (put_range(t, 0, 40, 1))
        _exit(4);
    tier_close(t);
    t = open_at(dir, TIER_WRITE_BACK, 16 * BB);
    if (!t)
        _exit(5);
    if (tier_seq_open(t, "crash", 1, &i, err, sizeof err) != TIER_OK)
        _exit(6);
    if (put_range(t, 1, 40, 2))
        _exit(7);
    if (write(fd, "k", 1) != 1)
        _exit(8);
    for (;;)
        pause(); /* killed here, RAM blocks never written */
}

static void test_crash(void **st) {
    (void)st;
    char *dir = tt_tmpdir();
    assert_non_null(dir);
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        child(dir, p[1]);
    }
    close(p[1]);
    char ch = 0;
    ssize_t r = read(p[0], &ch, 1);
    close(p[0]);
    int status = 0;
    if (r != 1) {
        waitpid(pid, &status, 0);
        fail_msg("child failed before the crash point (exit %d)", WEXITSTATUS(status));
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status));

    tier_t *t = open_at(dir, TIER_WRITE_THROUGH, 64 * BB);
    assert_non_null(t);
    uint32_t ok, miss;
    check_range(t, 0, 40, 1, &ok, &miss);
    assert_int_equal(ok, 40); /* write-through: all intact */
    assert_int_equal(miss, 0);
    check_range(t, 1, 40, 2, &ok, &miss);
    assert_int_equal(ok, 24);   /* evicted to RocksDB before the crash */
    assert_int_equal(miss, 16); /* RAM only: lost, reported NOT_FOUND */
    uint8_t *map;
    uint32_t nl, nb;
    char err[256];
    assert_int_equal(tier_map(t, "crash", 1, &map, &nl, &nb, err, sizeof err), TIER_OK);
    for (uint32_t b = 0; b < 40; b++)
        assert_int_equal(map[nb + b], b < 24 ? TIER_SSD : TIER_NONE);
    tier_buf_free(map);
    tier_close(t);
    tt_rmrf(dir);
    free(dir);
}

/* write-back + clean close: everything reaches RocksDB */
static void test_clean_close_flushes(void **st) {
    (void)st;
    char *dir = tt_tmpdir();
    tier_t *t = open_at(dir, TIER_WRITE_BACK, 64 * BB);
    assert_non_null(t);
    tier_seq_info i = shape();
    char err[256];
    assert_int_equal(tier_seq_open(t, "crash", 1, &i, err, sizeof err), TIER_OK);
    assert_int_equal(put_range(t, 2, 30, 3), 0);
    /* re-put of a block replaces it (write-back keeps no stale durable copy) */
    assert_int_equal(put_range(t, 2, 5, 4), 0);
    tier_stats s;
    tier_stats_get(t, &s);
    assert_int_equal(s.level[TIER_HOST].blocks, 30);
    assert_int_equal(s.level[TIER_SSD].puts, 0); /* nothing written yet */
    assert_int_equal(tier_close(t), TIER_OK);
    t = open_at(dir, TIER_WRITE_BACK, 64 * BB);
    uint32_t ok, miss;
    check_range(t, 2, 5, 4, &ok, &miss);
    assert_int_equal(ok, 5);
    uint8_t *buf = malloc(BB);
    for (uint32_t b = 5; b < 30; b++) {
        tier_block_key k = {"crash", 1, 2, b};
        void *d;
        size_t len;
        assert_int_equal(tier_fetch(t, &k, &d, &len, NULL, NULL, err, sizeof err), TIER_OK);
        tt_pattern(buf, BB, 2, b, 3);
        assert_memory_equal(d, buf, BB);
        tier_buf_free(d);
    }
    free(buf);
    tier_close(t);
    tt_rmrf(dir);
    free(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash),
        cmocka_unit_test(test_clean_close_flushes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
