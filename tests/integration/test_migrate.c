/* test_migrate.c — `kvtierctl migrate` between two real kvtierd processes:
 * every stored block of every sequence reaches the destination byte for byte
 * (with its token count), retained sequences stay retained, open ones are
 * skipped unless --include-open, the source ends empty; a destination that is
 * down fails the run and leaves the source intact, a rerun then overwrites a
 * stale partial copy; a destination that refuses puts half way fails it and
 * the source keeps everything; a destination that routes back to the source
 * is refused; usage errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include <signal.h>

#include "itest.h"

/* 2 KV heads x head_dim 64 x 16 tokens x 2 (K,V) x 2 bytes */
#define BLOCK_BYTES 8192u
#define TAIL_TOKENS 5u /* token count of each layer's last block */

static itest_server g_a, g_b; /* source, destination */

typedef struct {
    int rc;
    char *out, *err;
} run_res;

/* Runs kvtierctl with the given arguments (NULL-terminated). */
static run_res ctl(const char *a0, ...) {
    const char *argv[32];
    int n = 0;
    argv[n++] = itest_kvtierctl();
    va_list ap;
    va_start(ap, a0);
    for (const char *a = a0; a && n < 31; a = va_arg(ap, const char *))
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    run_res r;
    r.rc = itest_run(argv, &r.out, &r.err);
    return r;
}

static void run_free(run_res *r) {
    free(r->out);
    free(r->err);
}

static uint64_t json_u64(const cJSON *j, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    assert_non_null(v);
    return (uint64_t)v->valuedouble;
}

static kvtier_seq_shape shape_of(uint64_t seq, uint32_t layers) {
    kvtier_seq_shape sh = {0};
    sh.sequence_id = seq;
    sh.layers = layers;
    sh.kv_heads = 2;
    sh.head_dim = 64;
    sh.block_tokens = 16;
    sh.block_bytes = BLOCK_BYTES;
    sh.retain_on_close = 1;
    return sh;
}

/* Stores layers x blocks blocks of (tenant, seq) on s, payload version v;
 * closes it retained unless keep_open. */
static void put_seq(const itest_server *s, const char *tenant, uint64_t seq, uint32_t layers,
                    uint32_t blocks, uint32_t v, int keep_open) {
    kvtier_client *c = itest_client(s, tenant);
    kvtier_seq_shape sh = shape_of(seq, layers);
    kvtier_error e;
    assert_int_equal(kvtier_open_sequence(c, &sh, NULL, &e), KVTIER_OK);
    size_t n = (size_t)layers * blocks;
    uint8_t *buf = malloc(n * BLOCK_BYTES);
    kvtier_block *b = calloc(n, sizeof *b);
    for (size_t i = 0; i < n; i++) {
        uint32_t l = (uint32_t)(i / blocks), k = (uint32_t)(i % blocks);
        itest_payload(buf + i * BLOCK_BYTES, BLOCK_BYTES, seq, l, k, v);
        b[i] = (kvtier_block){.layer = l,
                              .block = k,
                              .payload = buf + i * BLOCK_BYTES,
                              .len = BLOCK_BYTES,
                              .token_count = k + 1 == blocks ? TAIL_TOKENS : 16,
                              .target = (i % 2) ? KVTIER_TIER_SSD : KVTIER_TIER_HOST};
    }
    kvtier_put_result pr;
    assert_int_equal(kvtier_put_blocks(c, seq, b, n, &pr, &e), KVTIER_OK);
    assert_int_equal(pr.acked, n);
    kvtier_put_result_free(&pr);
    if (!keep_open)
        assert_int_equal(kvtier_close_sequence(c, seq, 1, NULL, NULL, &e), KVTIER_OK);
    free(buf);
    free(b);
    kvtier_client_free(c);
}

typedef struct {
    uint64_t seq;
    uint32_t blocks, v, seen, bad;
} check_ctx;

static int on_block(const kvtier_fetched *f, void *user) {
    check_ctx *x = user;
    uint8_t want[BLOCK_BYTES];
    itest_payload(want, BLOCK_BYTES, x->seq, f->layer, f->block, x->v);
    uint32_t tokens = f->block + 1 == x->blocks ? TAIL_TOKENS : 16;
    if (f->len != BLOCK_BYTES || memcmp(f->payload, want, BLOCK_BYTES) != 0 ||
        f->token_count != tokens)
        x->bad++;
    x->seen++;
    return 0;
}

/* Asserts that s holds (tenant, seq) with every one of layers x blocks
 * blocks stored, byte-identical to version v, with its token count. */
static void check_seq(const itest_server *s, const char *tenant, uint64_t seq, uint32_t layers,
                      uint32_t blocks, uint32_t v) {
    kvtier_client *c = itest_client(s, tenant);
    kvtier_tier_map m;
    kvtier_error e;
    assert_int_equal(kvtier_tier_map_get(c, seq, &m, &e), KVTIER_OK);
    assert_int_equal(m.n_layers, layers);
    assert_int_equal(m.n_blocks, blocks);
    assert_int_equal(kvtier_tier_map_count(&m, KVTIER_TIER_HOST) +
                         kvtier_tier_map_count(&m, KVTIER_TIER_SSD),
                     (uint64_t)layers * blocks);
    kvtier_tier_map_free(&m);
    size_t n = (size_t)layers * blocks;
    kvtier_block_ref *refs = calloc(n, sizeof *refs);
    for (size_t i = 0; i < n; i++)
        refs[i] = (kvtier_block_ref){(uint32_t)(i / blocks), (uint32_t)(i % blocks)};
    check_ctx x = {seq, blocks, v, 0, 0};
    assert_int_equal(kvtier_fetch_blocks(c, seq, refs, n, on_block, &x, NULL, &e), KVTIER_OK);
    assert_int_equal(x.seen, n);
    assert_int_equal(x.bad, 0);
    free(refs);
    kvtier_client_free(c);
}

/* The sequences s holds (all tenants): *n and, for seq, whether it is open
 * (-1 when absent). */
static int seq_state(const itest_server *s, uint64_t seq, size_t *n) {
    kvtier_client *c = itest_client(s, NULL);
    kvtier_seq_info *v = NULL;
    kvtier_error e;
    assert_int_equal(kvtier_list_sequences(c, NULL, &v, n, &e), KVTIER_OK);
    int st = -1;
    for (size_t i = 0; i < *n; i++)
        if (v[i].sequence_id == seq)
            st = v[i].open;
    kvtier_free(v);
    kvtier_client_free(c);
    return st;
}

static uint64_t stored_blocks(const itest_server *s) {
    kvtier_client *c = itest_client(s, NULL);
    kvtier_stats st;
    kvtier_error e;
    assert_int_equal(kvtier_stats_get(c, &st, &e), KVTIER_OK);
    kvtier_client_free(c);
    return st.tier[KVTIER_TIER_HOST].blocks + st.tier[KVTIER_TIER_SSD].blocks;
}

/* Each test: a fresh source and destination. */
static int setup(void **state) {
    (void)state;
    memset(&g_a, 0, sizeof g_a);
    memset(&g_b, 0, sizeof g_b);
    return itest_server_start(&g_a, NULL) || itest_server_start(&g_b, NULL) ? -1 : 0;
}

static int teardown(void **state) {
    (void)state;
    itest_server_stop(&g_a);
    itest_server_stop(&g_b);
    return 0;
}

/* Two retained sequences of two tenants and an open one; batches of 4. */
static void test_migrate_moves_everything(void **state) {
    (void)state;
    put_seq(&g_a, "t1", 101, 2, 6, 1, 0);
    put_seq(&g_a, "t2", 102, 3, 4, 1, 0);
    put_seq(&g_a, "t1", 103, 2, 3, 1, 1);
    run_res r =
        ctl("migrate", "--from", g_a.addr, "--to", g_b.addr, "--batch", "4", "--json", NULL);
    fprintf(stderr, "%s%s", r.out, r.err);
    assert_int_equal(r.rc, 1); /* the open one was left */
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_int_equal(json_u64(j, "sequences"), 3);
    assert_int_equal(json_u64(j, "moved"), 2);
    assert_int_equal(json_u64(j, "skipped_open"), 1);
    assert_int_equal(json_u64(j, "failed"), 0);
    assert_int_equal(json_u64(j, "blocks"), 2 * 6 + 3 * 4);
    assert_int_equal(json_u64(j, "bytes"), (2 * 6 + 3 * 4) * (uint64_t)BLOCK_BYTES);
    cJSON_Delete(j);
    assert_non_null(strstr(r.err, "sequence t1/103: skipped: open"));
    run_free(&r);
    check_seq(&g_b, "t1", 101, 2, 6, 1);
    check_seq(&g_b, "t2", 102, 3, 4, 1);
    size_t n;
    assert_int_equal(seq_state(&g_b, 101, &n), 0); /* retained, as on the source */
    assert_int_equal(seq_state(&g_b, 103, &n), -1);
    assert_int_equal(seq_state(&g_a, 103, &n), 1); /* only the open one is left */
    assert_int_equal(n, 1);
    check_seq(&g_a, "t1", 103, 2, 3, 1);

    r = ctl("migrate", "--from", g_a.addr, "--to", g_b.addr, "--include-open", NULL);
    fprintf(stderr, "%s%s", r.out, r.err);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "sequence t1/103: 6 blocks (48.0 KiB) moved"));
    assert_non_null(strstr(r.out, "1 of 1 sequence moved, 6 blocks"));
    run_free(&r);
    check_seq(&g_b, "t1", 103, 2, 3, 1);
    assert_int_equal(seq_state(&g_b, 103, &n), 1); /* open there, as it was */
    assert_int_equal(n, 3);
    assert_int_equal(seq_state(&g_a, 103, &n), -1); /* the source holds nothing */
    assert_int_equal(n, 0);
    assert_int_equal(stored_blocks(&g_a), 0);
    /* nothing left to move: a rerun is a no-op that succeeds */
    r = ctl("migrate", "--from", g_a.addr, "--to", g_b.addr, NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "0 of 0 sequences moved"));
    run_free(&r);
}

/* Destination down: the run fails, the source keeps everything; with the
 * destination back (holding a stale partial copy) a rerun moves it all. */
static void test_migrate_destination_down(void **state) {
    (void)state;
    put_seq(&g_a, "t1", 201, 2, 5, 1, 0);
    int status;
    assert_int_equal(itest_server_signal(&g_b, SIGTERM, 15000, &status), 0);
    run_res r =
        ctl("migrate", "--from", g_a.addr, "--to", g_b.addr, "--timeout", "2000", "--json", NULL);
    fprintf(stderr, "%s%s", r.out, r.err);
    assert_int_equal(r.rc, 1);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_int_equal(json_u64(j, "failed"), 1);
    assert_int_equal(json_u64(j, "moved"), 0);
    assert_int_equal(json_u64(j, "blocks"), 0);
    const cJSON *f = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "failures"), 0);
    assert_non_null(f);
    const char *msg = cJSON_GetObjectItemCaseSensitive(f, "error")->valuestring;
    assert_non_null(strstr(msg, "UNAVAILABLE"));
    cJSON_Delete(j);
    run_free(&r);
    size_t n;
    assert_int_equal(seq_state(&g_a, 201, &n), 0);
    check_seq(&g_a, "t1", 201, 2, 5, 1);

    assert_int_equal(itest_server_restart(&g_b), 0);
    put_seq(&g_b, "t1", 201, 2, 2, 7, 0); /* a stale partial copy (other bytes) */
    r = ctl("migrate", "--from", g_a.addr, "--to", g_b.addr, NULL);
    fprintf(stderr, "%s%s", r.out, r.err);
    assert_int_equal(r.rc, 0);
    run_free(&r);
    check_seq(&g_b, "t1", 201, 2, 5, 1);
    assert_int_equal(seq_state(&g_a, 201, &n), -1);
}

/* The destination refuses the puts half way (its tenant byte quota holds 4
 * of 10 blocks): the run fails, the source keeps everything. */
static void test_migrate_put_refused(void **state) {
    (void)state;
    itest_server_stop(&g_b);
    static const char *const quota[] = {"--tenant-max-bytes", "32KiB", NULL};
    memset(&g_b, 0, sizeof g_b);
    assert_int_equal(itest_server_start(&g_b, quota), 0);
    put_seq(&g_a, "t1", 401, 2, 5, 1, 0);
    run_res r = ctl("migrate", "--from", g_a.addr, "--to", g_b.addr, "--batch", "4", NULL);
    fprintf(stderr, "%s%s", r.out, r.err);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.out, "put to the destination: RESOURCE_EXHAUSTED"));
    assert_non_null(strstr(r.out, "0 of 1 sequence moved"));
    run_free(&r);
    size_t n;
    assert_int_equal(seq_state(&g_a, 401, &n), 0);
    check_seq(&g_a, "t1", 401, 2, 5, 1);
}

/* --to reaches the source itself under another name: refused per sequence. */
static void test_migrate_refuses_self(void **state) {
    (void)state;
    put_seq(&g_a, "t1", 301, 1, 3, 1, 0);
    char self[80];
    snprintf(self, sizeof self, "localhost:%d", g_a.port);
    run_res r = ctl("migrate", "--from", g_a.addr, "--to", self, NULL);
    fprintf(stderr, "%s%s", r.out, r.err);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.out, "routes this sequence to the source itself"));
    run_free(&r);
    size_t n;
    assert_int_equal(seq_state(&g_a, 301, &n), 0);
    assert_int_equal(n, 1); /* no probe left behind */
    check_seq(&g_a, "t1", 301, 1, 3, 1);
}

static void test_migrate_usage(void **state) {
    (void)state;
    run_res r = ctl("migrate", "--from", g_a.addr, NULL);
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "migrate needs --from ADDR and --to ADDR"));
    run_free(&r);
    r = ctl("migrate", "--from", g_a.addr, "--to", g_a.addr, NULL);
    assert_int_equal(r.rc, 2);
    run_free(&r);
    r = ctl("migrate", "--from", g_a.addr, "--to", g_b.addr, "--batch", "0", NULL);
    assert_int_equal(r.rc, 2);
    run_free(&r);
    r = ctl("evict", "5", "--to", g_b.addr, NULL);
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "--to wants host, ssd or drop"));
    run_free(&r);
    r = ctl("health", "--include-open", NULL);
    assert_int_equal(r.rc, 2);
    run_free(&r);
    r = ctl("migrate", "--help", NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "--include-open"));
    run_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrate_usage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_moves_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_destination_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_put_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_refuses_self, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
