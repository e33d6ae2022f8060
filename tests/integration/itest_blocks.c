/* itest_blocks.c - block helpers shared by the integration tests: open a
 * sequence of 64 KiB blocks, put a range of deterministic payloads, fetch one
 * back and compare. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itest.h"

void itest_open_seq(kvtier_client *c, uint64_t seq, uint32_t layers) {
    kvtier_seq_shape sh = {0};
    sh.sequence_id = seq;
    sh.layers = layers;
    sh.kv_heads = 8;
    sh.head_dim = 128;
    sh.block_tokens = 16;
    sh.block_bytes = ITEST_BLOCK;
    kvtier_error e;
    kvtier_code code = kvtier_open_sequence(c, &sh, NULL, &e);
    if (code)
        fprintf(stderr, "open %llu: %s\n", (unsigned long long)seq, e.message);
    assert_int_equal(code, KVTIER_OK);
}

void itest_put_range(kvtier_client *c, uint64_t seq, uint32_t layers, uint32_t b0, uint32_t b1) {
    uint8_t *buf = malloc(ITEST_BLOCK);
    kvtier_error e;
    kvtier_put_stream *p = kvtier_put_open(c, seq, &e);
    assert_non_null(p);
    for (uint32_t l = 0; l < layers; l++)
        for (uint32_t b = b0; b < b1; b++) {
            itest_payload(buf, ITEST_BLOCK, seq, l, b, 0);
            kvtier_block blk = {l, b, buf, ITEST_BLOCK, 0, 0, 16, KVTIER_TIER_ABSENT};
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
    itest_payload(o->buf, ITEST_BLOCK, o->seq, b->layer, b->block, 0);
    o->identical = b->len == ITEST_BLOCK && memcmp(b->payload, o->buf, ITEST_BLOCK) == 0;
    return 0;
}

kvtier_code itest_fetch_one(kvtier_client *c, uint64_t seq, uint32_t l, uint32_t b,
                            int *identical) {
    one_ctx o = {seq, 0, malloc(ITEST_BLOCK)};
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
