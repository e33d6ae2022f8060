/* test_faults.c — kvtierd under faults and bad input, each with its exact
 * gRPC status code:
 *   kill -9 during a PutBlocks stream -> restart: acknowledged blocks fetch
 *     byte-identical and the map shows them; unacknowledged ones are
 *     NOT_FOUND or identical, never garbage; never-sent ones NOT_FOUND;
 *   write-back: kill -9 -> RAM-only blocks NOT_FOUND, evicted-to-SSD survive;
 *   bad crc32c -> DATA_LOSS, not stored (fetch NOT_FOUND);
 *   malformed protobuf (raw bytes through the RPC layer) -> INVALID_ARGUMENT;
 *   payload over the limits -> RESOURCE_EXHAUSTED;
 *   unknown sequence -> NOT_FOUND (fetch, put, map, evict);
 *   client cancels mid-stream -> server stays healthy;
 *   SIGTERM -> exit 0 with write-back data flushed. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "itest.h"
#include "rpc.h"

#define BLOCK (64 * 1024)

/* ---------------------------------------------------------------- helpers */

static void open_seq(kvtier_client *c, uint64_t seq, uint32_t layers) {
    kvtier_seq_shape sh = {0};
    sh.sequence_id = seq;
    sh.layers = layers;
    sh.kv_heads = 8;
    sh.head_dim = 128;
    sh.block_tokens = 16;
    sh.block_bytes = BLOCK;
    kvtier_error e;
    kvtier_code code = kvtier_open_sequence(c, &sh, NULL, &e);
    if (code)
        fprintf(stderr, "open %llu: %s\n", (unsigned long long)seq, e.message);
    assert_int_equal(code, KVTIER_OK);
}

/* Puts blocks [b0, b1) of every layer in one stream; asserts OK. */
static void put_range(kvtier_client *c, uint64_t seq, uint32_t layers, uint32_t b0, uint32_t b1) {
    uint8_t *buf = malloc(BLOCK);
    kvtier_error e;
    kvtier_put_stream *p = kvtier_put_open(c, seq, &e);
    assert_non_null(p);
    for (uint32_t l = 0; l < layers; l++)
        for (uint32_t b = b0; b < b1; b++) {
            itest_payload(buf, BLOCK, seq, l, b, 0);
            kvtier_block blk = {l, b, buf, BLOCK, 0, 0, 16, KVTIER_TIER_ABSENT};
            assert_int_equal(kvtier_put_send(p, &blk, &e), KVTIER_OK);
        }
    kvtier_put_result r;
    kvtier_code code = kvtier_put_finish(p, &r, &e);
    if (code)
        fprintf(stderr, "put: %s\n", e.message);
    assert_int_equal(code, KVTIER_OK);
    assert_int_equal(r.acked, layers * (b1 - b0));
    kvtier_put_result_free(&r);
    free(buf);
}

typedef struct {
    uint64_t seq;
    int identical;
    uint8_t *buf;
} one_ctx;

static int on_one(const kvtier_fetched *b, void *user) {
    one_ctx *o = user;
    itest_payload(o->buf, BLOCK, o->seq, b->layer, b->block, 0);
    o->identical = b->len == BLOCK && memcmp(b->payload, o->buf, BLOCK) == 0;
    return 0;
}

/* Fetches one block. Returns the status; *identical says whether the payload
 * was the expected one (only meaningful on OK). */
static kvtier_code fetch_one(kvtier_client *c, uint64_t seq, uint32_t l, uint32_t b,
                             int *identical) {
    one_ctx o = {seq, 0, malloc(BLOCK)};
    kvtier_block_ref r = {l, b};
    kvtier_error e;
    size_t got = 0;
    kvtier_code code = kvtier_fetch_blocks(c, seq, &r, 1, on_one, &o, &got, &e);
    free(o.buf);
    if (code == KVTIER_OK)
        assert_int_equal(got, 1);
    *identical = o.identical;
    return code;
}

/* ---------------------------------------------------------------- crash tests */

static void test_kill9_during_put(void **state) {
    (void)state;
    itest_server s = {0};
    assert_int_equal(itest_server_start(&s, NULL), 0);
    kvtier_client *c = itest_client(&s, "crash");
    const uint64_t seq = 7;
    const uint32_t L = 2, acked_to = 40, inflight_to = 52, total = 64;
    open_seq(c, seq, L);
    put_range(c, seq, L, 0, 20); /* two acknowledged streams */
    put_range(c, seq, L, 20, acked_to);

    /* A third stream is cut by kill -9 after 24 blocks were written into it. */
    uint8_t *buf = malloc(BLOCK);
    kvtier_error e;
    kvtier_put_stream *p = kvtier_put_open(c, seq, &e);
    assert_non_null(p);
    for (uint32_t l = 0; l < L; l++)
        for (uint32_t b = acked_to; b < inflight_to; b++) {
            itest_payload(buf, BLOCK, seq, l, b, 0);
            kvtier_block blk = {l, b, buf, BLOCK, 0, 0, 16, KVTIER_TIER_ABSENT};
            assert_int_equal(kvtier_put_send(p, &blk, &e), KVTIER_OK);
        }
    /* Kill while the server is inside the stream: wait (up to 3 s) until the
     * first in-flight block shows in the map, so the cut stream has stored
     * blocks that were never acknowledged. */
    kvtier_client *probe = itest_client(&s, "crash");
    for (uint64_t t0 = itest_now_ms(); itest_now_ms() - t0 < 3000;) {
        kvtier_tier_map pm;
        int seen = 0;
        if (kvtier_tier_map_get(probe, seq, &pm, &e) == KVTIER_OK) {
            seen = pm.n_blocks > acked_to && pm.tiers[acked_to] != KVTIER_TIER_HOT &&
                   pm.tiers[acked_to] != KVTIER_TIER_ABSENT;
            kvtier_tier_map_free(&pm);
        }
        if (seen)
            break;
        usleep(2000);
    }
    kvtier_client_free(probe);
    int st = 0;
    assert_int_equal(itest_server_signal(&s, SIGKILL, 5000, &st), 0);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    kvtier_code code = kvtier_put_finish(p, NULL, &e);
    assert_int_not_equal(code, KVTIER_OK); /* never acknowledged */
    kvtier_client_free(c);
    free(buf);

    assert_int_equal(itest_server_restart(&s), 0);
    c = itest_client(&s, "crash");
    /* The index is recovered: the map shows every acknowledged block stored,
     * without reopening the sequence. */
    kvtier_tier_map m;
    code = kvtier_tier_map_get(c, seq, &m, &e);
    if (code)
        fprintf(stderr, "map after restart: %s\n", e.message);
    assert_int_equal(code, KVTIER_OK);
    assert_int_equal(m.n_layers, L);
    for (uint32_t l = 0; l < L; l++)
        for (uint32_t b = 0; b < acked_to; b++) {
            uint8_t t = m.tiers[(size_t)l * m.n_blocks + b];
            assert_true(t == KVTIER_TIER_SSD || t == KVTIER_TIER_HOST);
        }
    size_t inflight_found = 0, inflight_missing = 0;
    for (uint32_t l = 0; l < L; l++)
        for (uint32_t b = 0; b < total; b++) {
            int same = 0;
            code = fetch_one(c, seq, l, b, &same);
            if (b < acked_to) {
                if (code)
                    fprintf(stderr, "acked block (%u,%u): %s\n", l, b, kvtier_code_name(code));
                assert_int_equal(code, KVTIER_OK);
                assert_true(same);
            } else if (b < inflight_to) {
                assert_true(code == KVTIER_OK || code == KVTIER_NOT_FOUND);
                if (code == KVTIER_OK) {
                    assert_true(same); /* never garbage */
                    inflight_found++;
                } else {
                    inflight_missing++;
                }
            } else {
                assert_int_equal(code, KVTIER_NOT_FOUND);
            }
        }
    fprintf(stderr,
            "kill -9: %u acked blocks intact; unacked in-flight: %zu stored, %zu NOT_FOUND\n",
            L * acked_to, inflight_found, inflight_missing);
    kvtier_open_result orr;
    kvtier_seq_shape sh = {seq, L, 8, 128, 16, BLOCK, 0, 0, 0, 0, NULL, 0, 0};
    assert_int_equal(kvtier_open_sequence(c, &sh, &orr, &e), KVTIER_OK);
    assert_int_equal(orr.created, 0);
    assert_true(orr.blocks_ssd + orr.blocks_host >= L * acked_to);
    kvtier_tier_map_free(&m);
    kvtier_client_free(c);
    itest_server_stop(&s);
}

static void test_writeback_kill9(void **state) {
    (void)state;
    itest_server s = {0};
    static const char *flags[] = {"--host-write-policy", "back", NULL};
    assert_int_equal(itest_server_start(&s, flags), 0);
    kvtier_client *c = itest_client(&s, NULL);
    const uint64_t seq = 8;
    open_seq(c, seq, 2);
    put_range(c, seq, 2, 0, 16); /* acked at RAM speed: HOST only */
    kvtier_error e;
    uint64_t moved = 0;
    assert_int_equal(kvtier_evict(c, seq, 0, KVTIER_TIER_SSD, &moved, &e), KVTIER_OK);
    assert_int_equal(moved, 16); /* layer 0 now durable */
    kvtier_client_free(c);
    int st = 0;
    assert_int_equal(itest_server_signal(&s, SIGKILL, 5000, &st), 0);
    assert_int_equal(itest_server_restart(&s), 0);
    c = itest_client(&s, NULL);
    for (uint32_t b = 0; b < 16; b++) {
        int same = 0;
        assert_int_equal(fetch_one(c, seq, 0, b, &same), KVTIER_OK);
        assert_true(same);
        assert_int_equal(fetch_one(c, seq, 1, b, &same), KVTIER_NOT_FOUND);
    }
    kvtier_tier_map m;
    assert_int_equal(kvtier_tier_map_get(c, seq, &m, &e), KVTIER_OK);
    assert_int_equal(kvtier_tier_map_count(&m, KVTIER_TIER_SSD), 16);
    assert_int_equal(kvtier_tier_map_count(&m, KVTIER_TIER_HOST), 0);
    kvtier_tier_map_free(&m);
    kvtier_client_free(c);
    itest_server_stop(&s);
}

static void test_sigterm_flushes(void **state) {
    (void)state;
    itest_server s = {0};
    static const char *flags[] = {"--host-write-policy", "back", NULL};
    assert_int_equal(itest_server_start(&s, flags), 0);
    kvtier_client *c = itest_client(&s, NULL);
    const uint64_t seq = 9;
    open_seq(c, seq, 2);
    put_range(c, seq, 2, 0, 16); /* RAM only until flushed */
    kvtier_client_free(c);
    int st = 0;
    assert_int_equal(itest_server_signal(&s, SIGTERM, 30000, &st), 0);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(itest_server_restart(&s), 0);
    c = itest_client(&s, NULL);
    for (uint32_t l = 0; l < 2; l++)
        for (uint32_t b = 0; b < 16; b++) {
            int same = 0;
            assert_int_equal(fetch_one(c, seq, l, b, &same), KVTIER_OK);
            assert_true(same);
        }
    kvtier_client_free(c);
    itest_server_stop(&s);
}

/* ---------------------------------------------------------------- bad input */

static itest_server g_srv; /* shared by the bad-input tests */

static void test_bad_crc(void **state) {
    (void)state;
    kvtier_client *c = itest_client(&g_srv, NULL);
    const uint64_t seq = 20;
    open_seq(c, seq, 1);
    uint8_t *buf = malloc(BLOCK);
    itest_payload(buf, BLOCK, seq, 0, 3, 0);
    kvtier_block b = {0, 3, buf, BLOCK, 0, 1, 16, KVTIER_TIER_ABSENT};
    b.crc32c = kvtier_crc32c(0, buf, BLOCK) ^ 0x1;
    kvtier_error e;
    kvtier_stats before, after;
    assert_int_equal(kvtier_stats_get(c, &before, &e), KVTIER_OK);
    kvtier_code code = kvtier_put_blocks(c, seq, &b, 1, NULL, &e);
    assert_int_equal(code, KVTIER_DATA_LOSS);
    assert_non_null(strstr(e.message, "crc32c"));
    int same;
    assert_int_equal(fetch_one(c, seq, 0, 3, &same), KVTIER_NOT_FOUND);
    assert_int_equal(kvtier_stats_get(c, &after, &e), KVTIER_OK);
    assert_int_equal(after.checksum_failures, before.checksum_failures + 1);
    /* A flipped payload bit with the original crc is caught the same way. */
    b.crc32c = kvtier_crc32c(0, buf, BLOCK);
    buf[1000] ^= 0x40;
    assert_int_equal(kvtier_put_blocks(c, seq, &b, 1, NULL, &e), KVTIER_DATA_LOSS);
    assert_int_equal(fetch_one(c, seq, 0, 3, &same), KVTIER_NOT_FOUND);
    free(buf);
    kvtier_client_free(c);
}

static void test_malformed_protobuf(void **state) {
    (void)state;
    rpc_channel *ch = rpc_channel_new(g_srv.addr, 0);
    assert_non_null(ch);
    /* Field 1 with wire type 7 (invalid), then junk: no protobuf decodes it. */
    static const uint8_t junk[] = {0x0f, 0xff, 0xff, 0xff, 0xff, 0x13, 0x37, 0x00, 0x42};
    rpc_opts o = {0};
    o.timeout_ms = 10000;
    rpc_status st;
    grpc_status_code code =
        rpc_unary_raw(ch, "/kvtier.v1.Tier/OpenSequence", &o, junk, sizeof junk, NULL, NULL, &st);
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    code = rpc_unary_raw(ch, "/kvtier.v1.Admin/GetTierMap", &o, junk, sizeof junk, NULL, NULL, &st);
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    /* Garbage inside a client stream. */
    rpc_stream *s = rpc_stream_open(ch, "/kvtier.v1.Tier/PutBlocks", &o, &st);
    assert_non_null(s);
    rpc_stream_write_raw(s, junk, sizeof junk);
    code = rpc_stream_finish(s, &st);
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    rpc_stream_free(s);
    /* And inside the bidi Summarize stream. */
    s = rpc_stream_open(ch, "/kvtier.v1.Tier/Summarize", &o, &st);
    assert_non_null(s);
    rpc_stream_write_raw(s, junk, sizeof junk);
    code = rpc_stream_finish(s, &st);
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    rpc_stream_free(s);
    rpc_channel_free(ch);
}

static void test_oversize(void **state) {
    (void)state;
    const uint64_t seq = 21;
    kvtier_connect_opts co = {0};
    co.address = g_srv.addr;
    co.max_msg_bytes = 64u << 20; /* let the client send what the server must refuse */
    kvtier_error e;
    kvtier_client *c = kvtier_connect(&co, &e);
    assert_non_null(c);
    open_seq(c, seq, 1);
    size_t sizes[] = {BLOCK + 1,  /* over the sequence's block_bytes */
                      2u << 20,   /* over --max-block (1 MiB) */
                      20u << 20}; /* over the gRPC max message (16 MiB) */
    uint8_t *buf = calloc(1, 20u << 20);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        kvtier_block b = {0, (uint32_t)i, buf, sizes[i], 0, 0, 16, KVTIER_TIER_ABSENT};
        kvtier_code code = kvtier_put_blocks(c, seq, &b, 1, NULL, &e);
        if (code != KVTIER_RESOURCE_EXHAUSTED)
            fprintf(stderr, "size %zu: %s: %s\n", sizes[i], kvtier_code_name(code), e.message);
        assert_int_equal(code, KVTIER_RESOURCE_EXHAUSTED);
        int same;
        assert_int_equal(fetch_one(c, seq, 0, (uint32_t)i, &same), KVTIER_NOT_FOUND);
    }
    free(buf);
    kvtier_client_free(c);
}

static void test_unknown_sequence(void **state) {
    (void)state;
    kvtier_client *c = itest_client(&g_srv, NULL);
    const uint64_t seq = 999999;
    kvtier_error e;
    int same;
    assert_int_equal(fetch_one(c, seq, 0, 0, &same), KVTIER_NOT_FOUND);
    kvtier_tier_map m;
    assert_int_equal(kvtier_tier_map_get(c, seq, &m, &e), KVTIER_NOT_FOUND);
    assert_int_equal(kvtier_evict(c, seq, -1, KVTIER_TIER_SSD, NULL, &e), KVTIER_NOT_FOUND);
    uint8_t buf[64] = {0};
    kvtier_block b = {0, 0, buf, sizeof buf, 0, 0, 16, KVTIER_TIER_ABSENT};
    assert_int_equal(kvtier_put_blocks(c, seq, &b, 1, NULL, &e), KVTIER_NOT_FOUND);
    assert_int_equal(kvtier_close_sequence(c, seq, 0, NULL, NULL, &e), KVTIER_NOT_FOUND);
    kvtier_client_free(c);
}

static int cancel_after_one(const kvtier_fetched *b, void *user) {
    (void)b;
    (*(int *)user)++;
    return 1;
}

static void test_client_cancel(void **state) {
    (void)state;
    kvtier_client *c = itest_client(&g_srv, NULL);
    const uint64_t seq = 22;
    open_seq(c, seq, 1);
    put_range(c, seq, 1, 0, 32);
    kvtier_error e;
    for (int round = 0; round < 3; round++) {
        /* Put stream cancelled after some blocks. */
        kvtier_put_stream *p = kvtier_put_open(c, seq, &e);
        assert_non_null(p);
        uint8_t *buf = malloc(BLOCK);
        for (uint32_t b = 32; b < 40; b++) {
            itest_payload(buf, BLOCK, seq, 0, b, 0);
            kvtier_block blk = {0, b, buf, BLOCK, 0, 0, 16, KVTIER_TIER_ABSENT};
            kvtier_put_send(p, &blk, &e);
        }
        kvtier_put_abort(p);
        free(buf);
        /* Fetch stream cancelled by the reader after the first block. */
        kvtier_block_ref refs[32];
        for (uint32_t b = 0; b < 32; b++)
            refs[b] = (kvtier_block_ref){0, b};
        int n = 0;
        assert_int_equal(kvtier_fetch_blocks(c, seq, refs, 32, cancel_after_one, &n, NULL, &e),
                         KVTIER_CANCELLED);
        assert_int_equal(n, 1);
        /* Summarize stream opened and dropped without a word. */
        kvtier_summarize_stream *z = kvtier_summarize_open(c, seq, &e);
        assert_non_null(z);
        kvtier_layer_summary ls = {0};
        ls.block_count = 40;
        kvtier_summary sum = {16, &ls, 1};
        kvtier_decisions d;
        assert_int_equal(kvtier_summarize_send(z, &sum, &d, &e), KVTIER_OK);
        kvtier_free(d.d);
        kvtier_summarize_finish(z, &e);
    }
    /* The server is healthy and serves further calls. */
    kvtier_health h;
    assert_int_equal(kvtier_health_check(c, &h, &e), KVTIER_OK);
    assert_string_equal(h.status, "SERVING");
    put_range(c, seq, 1, 40, 44);
    for (uint32_t b = 0; b < 44; b += 7) {
        int same = 0;
        kvtier_code code = fetch_one(c, seq, 0, b, &same);
        if (b < 32 || b >= 40) {
            assert_int_equal(code, KVTIER_OK);
            assert_true(same);
        } else { /* blocks of a cancelled stream: stored whole or absent */
            assert_true(code == KVTIER_NOT_FOUND || (code == KVTIER_OK && same));
        }
    }
    kvtier_client_free(c);
}

static int shared_up(void **state) {
    (void)state;
    return itest_server_start(&g_srv, NULL);
}

static int shared_down(void **state) {
    (void)state;
    itest_server_stop(&g_srv);
    return 0;
}

int main(void) {
    const struct CMUnitTest crash[] = {
        cmocka_unit_test(test_kill9_during_put),
        cmocka_unit_test(test_writeback_kill9),
        cmocka_unit_test(test_sigterm_flushes),
    };
    const struct CMUnitTest bad[] = {
        cmocka_unit_test(test_bad_crc),       cmocka_unit_test(test_malformed_protobuf),
        cmocka_unit_test(test_oversize),      cmocka_unit_test(test_unknown_sequence),
        cmocka_unit_test(test_client_cancel),
    };
    int fails = cmocka_run_group_tests_name("faults_crash", crash, NULL, NULL);
    fails += cmocka_run_group_tests_name("faults_bad_input", bad, shared_up, shared_down);
    return fails;
}
