/* test_kvtierd_batches.c - PutBlockBatches / FetchBlockBatches (many blocks
 * per message) against the real kvtierd binary on a loopback port (temp
 * RocksDB dir):
 *   roundtrip      60 blocks put in 3 messages are stored whole (60 acks,
 *                  GetTierMap HOST), fetched back in fewer messages than
 *                  blocks (batched), bytes and crc32c identical, request
 *                  order kept;
 *   bad_block      a wrong-sized block in the 2nd message: INVALID_ARGUMENT
 *                  naming it (block #25 of the stream), nothing of the stream
 *                  stored, not even the 1st message's blocks;
 *   empty_batch    a stream of one empty message: OK, 0 acks;
 *   fetch_missing  a fetch whose 31st reference is unknown: every block before
 *                  it arrives, then NOT_FOUND naming it and "30 blocks before
 *                  it were sent" (the worker asks again from there, so a good
 *                  block never reads as missing);
 *   libkvtier      kvtier_put_blocks / kvtier_fetch_blocks use the batched
 *                  methods (the metrics count them, not PutBlocks/FetchBlocks);
 *                  with KVTIER_PER_BLOCK_RPCS=1 the per-block ones.
 *
 * argv[1] = path of the kvtierd binary (from CMake). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kvtier.h"
#include "kvtier.pb-c.h"
#include "kvtierd_proc.h"
#include "rpc.h"
#include "tier.h"

static const char *g_bin;

#define T_OPEN "/kvtier.v1.Tier/OpenSequence"
#define T_PUTB "/kvtier.v1.Tier/PutBlockBatches"
#define T_FETCHB "/kvtier.v1.Tier/FetchBlockBatches"
#define A_MAP "/kvtier.v1.Admin/GetTierMap"

/* 16 tokens x 2 kv heads x 96 head_dim x 2 (K,V) x 2 bytes (bf16) */
#define BLOCK_BYTES 12288u
#define NB 60

static int setup(void **state) {
    kvd_proc *d = kvd_new();
    assert_non_null(d);
    if (kvd_start(d, g_bin, NULL) != 0) {
        kvd_free(d);
        return -1;
    }
    *state = d;
    return 0;
}

static int teardown(void **state) {
    kvd_free(*state);
    return 0;
}

static void open_seq(rpc_channel *ch, uint64_t seq) {
    Kvtier__V1__OpenSequenceRequest r = KVTIER__V1__OPEN_SEQUENCE_REQUEST__INIT;
    r.tenant = "acme";
    r.sequence_id = seq;
    r.layers = 4;
    r.kv_heads = 2;
    r.head_dim = 96;
    r.block_tokens = 16;
    r.block_bytes = BLOCK_BYTES;
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    assert_int_equal(rpc_unary(ch, T_OPEN, NULL, &r.base,
                               &kvtier__v1__open_sequence_response__descriptor, &resp, &st),
                     GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(resp, NULL);
}

/* Payload of block i (layer i % 4, block i / 4). */
static void fill(uint8_t *buf, size_t len, int i) {
    for (size_t j = 0; j < len; j++)
        buf[j] = (uint8_t)(j * 13 + (size_t)i * 7);
}

/* Puts NB blocks of seq in messages of `per` blocks; block `bad` (or -1) has
 * one byte too few. Returns the status; *acked the acks. */
static grpc_status_code put_batches(rpc_channel *ch, uint64_t seq, int per, int bad, size_t *acked,
                                    rpc_status *st) {
    static uint8_t buf[NB][BLOCK_BYTES];
    Kvtier__V1__BlockKey key[NB];
    Kvtier__V1__Block b[NB], *bp[NB];
    for (int i = 0; i < NB; i++) {
        fill(buf[i], BLOCK_BYTES, i);
        kvtier__v1__block_key__init(&key[i]);
        key[i].tenant = "acme";
        key[i].sequence_id = seq;
        key[i].layer = (uint32_t)(i % 4);
        key[i].block = (uint32_t)(i / 4);
        kvtier__v1__block__init(&b[i]);
        b[i].key = &key[i];
        b[i].payload.data = buf[i];
        b[i].payload.len = i == bad ? BLOCK_BYTES - 1 : BLOCK_BYTES;
        b[i].crc32c = tier_crc32c(0, buf[i], b[i].payload.len);
        b[i].token_count = 16;
        bp[i] = &b[i];
    }
    rpc_stream *s = rpc_stream_open(ch, T_PUTB, NULL, st);
    assert_non_null(s);
    for (int i = 0; i < NB; i += per) {
        Kvtier__V1__BlockBatch bb = KVTIER__V1__BLOCK_BATCH__INIT;
        bb.n_blocks = (size_t)(NB - i < per ? NB - i : per);
        bb.blocks = bp + i;
        if (rpc_stream_write(s, &bb.base) != 0)
            break; /* answered early: the status says why */
    }
    Kvtier__V1__PutResponse *r = NULL;
    grpc_status_code c = rpc_stream_close_and_recv(s, &kvtier__v1__put_response__descriptor,
                                                   (ProtobufCMessage **)&r, st);
    rpc_stream_free(s);
    *acked = r ? r->acked : 0;
    if (r)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    return c;
}

/* Blocks of seq the tier map shows stored (HOST or SSD). */
static int stored(rpc_channel *ch, uint64_t seq) {
    Kvtier__V1__GetTierMapRequest r = KVTIER__V1__GET_TIER_MAP_REQUEST__INIT;
    r.tenant = "acme";
    r.sequence_id = seq;
    Kvtier__V1__GetTierMapResponse *m = NULL;
    rpc_status st;
    if (rpc_unary(ch, A_MAP, NULL, &r.base, &kvtier__v1__get_tier_map_response__descriptor,
                  (ProtobufCMessage **)&m, &st) != GRPC_STATUS_OK)
        return -1;
    int n = 0;
    for (size_t l = 0; l < m->n_layers; l++)
        for (size_t b = 0; m->layers[l] && b < m->layers[l]->n_tiers; b++)
            n += m->layers[l]->tiers[b] == KVTIER__V1__TIER_KIND__TIER_HOST ||
                 m->layers[l]->tiers[b] == KVTIER__V1__TIER_KIND__TIER_SSD;
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return n;
}

/* Fetches refs (i = block index as in put_batches) with FetchBlockBatches;
 * checks each block's bytes and order; returns the status, *msgs the
 * messages and *got the blocks received. */
static grpc_status_code fetch_batches(rpc_channel *ch, uint64_t seq, const int *idx, int n,
                                      int *msgs, int *got, rpc_status *st) {
    Kvtier__V1__BlockRef rv[NB + 1], *rp[NB + 1];
    for (int i = 0; i < n; i++) {
        kvtier__v1__block_ref__init(&rv[i]);
        rv[i].layer = (uint32_t)(idx[i] % 4);
        rv[i].block = (uint32_t)(idx[i] / 4);
        rp[i] = &rv[i];
    }
    Kvtier__V1__FetchRequest req = KVTIER__V1__FETCH_REQUEST__INIT;
    req.tenant = "acme";
    req.sequence_id = seq;
    req.n_blocks = (size_t)n;
    req.blocks = rp;
    rpc_stream *s = rpc_stream_open(ch, T_FETCHB, NULL, st);
    assert_non_null(s);
    assert_int_equal(rpc_stream_write(s, &req.base), 0);
    rpc_stream_close_send(s);
    *msgs = *got = 0;
    static uint8_t want[BLOCK_BYTES];
    for (;;) {
        Kvtier__V1__BlockBatch *bb = NULL;
        if (rpc_stream_read(s, &kvtier__v1__block_batch__descriptor, (ProtobufCMessage **)&bb) <= 0)
            break;
        (*msgs)++;
        for (size_t j = 0; j < bb->n_blocks; j++) {
            const Kvtier__V1__Block *b = bb->blocks[j];
            int i = idx[*got];
            assert_int_equal(b->key->layer, (uint32_t)(i % 4)); /* request order */
            assert_int_equal(b->key->block, (uint32_t)(i / 4));
            assert_int_equal(b->payload.len, BLOCK_BYTES);
            fill(want, BLOCK_BYTES, i);
            assert_memory_equal(b->payload.data, want, BLOCK_BYTES);
            assert_int_equal(b->crc32c, tier_crc32c(0, want, BLOCK_BYTES));
            (*got)++;
        }
        protobuf_c_message_free_unpacked(&bb->base, NULL);
    }
    grpc_status_code c = rpc_stream_finish(s, st);
    rpc_stream_free(s);
    return c;
}

static void test_roundtrip(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    open_seq(d->ch, 1);
    size_t acked = 0;
    assert_int_equal(put_batches(d->ch, 1, 20, -1, &acked, &st), GRPC_STATUS_OK);
    assert_int_equal(acked, NB);
    assert_int_equal(stored(d->ch, 1), NB);
    int idx[NB], msgs = 0, got = 0;
    for (int i = 0; i < NB; i++)
        idx[i] = (i * 37) % NB; /* a permutation: the answer keeps this order */
    assert_int_equal(fetch_batches(d->ch, 1, idx, NB, &msgs, &got, &st), GRPC_STATUS_OK);
    assert_int_equal(got, NB);
    assert_true(msgs >= 1 && msgs < NB / 10); /* 720 KiB: one or a few messages */
}

static void test_bad_block(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    open_seq(d->ch, 2);
    size_t acked = 0;
    grpc_status_code c = put_batches(d->ch, 2, 20, 25, &acked, &st);
    if (c != GRPC_STATUS_INVALID_ARGUMENT || !strstr(st.message, "block #25 of the stream"))
        fprintf(stderr, "bad_block: %d %s\n", c, st.message);
    assert_int_equal(c, GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "block #25 of the stream"));
    assert_int_equal(acked, 0);
    assert_int_equal(stored(d->ch, 2), 0); /* not even the first message's 20 */
}

static void test_empty_batch(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    open_seq(d->ch, 3);
    rpc_stream *s = rpc_stream_open(d->ch, T_PUTB, NULL, &st);
    assert_non_null(s);
    Kvtier__V1__BlockBatch bb = KVTIER__V1__BLOCK_BATCH__INIT;
    assert_int_equal(rpc_stream_write(s, &bb.base), 0);
    Kvtier__V1__PutResponse *r = NULL;
    assert_int_equal(rpc_stream_close_and_recv(s, &kvtier__v1__put_response__descriptor,
                                               (ProtobufCMessage **)&r, &st),
                     GRPC_STATUS_OK);
    rpc_stream_free(s);
    assert_non_null(r);
    assert_int_equal(r->acked, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(stored(d->ch, 3), 0);
}

static void test_fetch_missing(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    open_seq(d->ch, 4);
    size_t acked = 0;
    assert_int_equal(put_batches(d->ch, 4, 60, -1, &acked, &st), GRPC_STATUS_OK);
    int idx[NB + 1], msgs = 0, got = 0;
    for (int i = 0; i < 30; i++)
        idx[i] = i;
    idx[30] = 4 * 999; /* layer 0, block 999: never stored */
    for (int i = 31; i <= NB; i++)
        idx[i] = i - 1;
    grpc_status_code c = fetch_batches(d->ch, 4, idx, NB + 1, &msgs, &got, &st);
    if (c != GRPC_STATUS_NOT_FOUND || !strstr(st.message, "30 blocks before it were sent"))
        fprintf(stderr, "fetch_missing: %d %s\n", c, st.message);
    assert_int_equal(c, GRPC_STATUS_NOT_FOUND);
    assert_non_null(strstr(st.message, "layer 0 block 999"));
    assert_non_null(strstr(st.message, "30 blocks before it were sent"));
    assert_int_equal(got, 30); /* everything before it arrived */
}

/* kvtierd's /metrics count of calls of `method` answered OK (-1: no
 * metrics). */
static long calls_ok(kvd_proc *d, const char *method) {
    char *text = kvd_metrics(d), pat[160];
    if (!text)
        return -1;
    snprintf(pat, sizeof pat, "kvtier_rpc_requests_total{method=\"%s\",code=\"OK\"} ", method);
    const char *at = strstr(text, pat);
    long n = at ? atol(at + strlen(pat)) : 0;
    free(text);
    return n;
}

static int on_fetched(const kvtier_fetched *f, void *user) {
    int *n = user;
    static uint8_t want[BLOCK_BYTES];
    fill(want, BLOCK_BYTES, (int)(f->block * 4 + f->layer));
    assert_int_equal(f->len, BLOCK_BYTES);
    assert_memory_equal(f->payload, want, BLOCK_BYTES);
    (*n)++;
    return 0;
}

static void test_libkvtier(void **state) {
    kvd_proc *d = *state;
    kvtier_error e;
    kvtier_connect_opts o = {0};
    o.address = d->addr;
    o.tenant = "acme";
    kvtier_client *c = kvtier_connect(&o, &e);
    assert_non_null(c);
    kvtier_seq_shape sh = {0};
    sh.sequence_id = 5;
    sh.layers = 4;
    sh.kv_heads = 2;
    sh.head_dim = 96;
    sh.block_tokens = 16;
    sh.block_bytes = BLOCK_BYTES;
    assert_int_equal(kvtier_open_sequence(c, &sh, NULL, &e), KVTIER_OK);
    static uint8_t buf[NB][BLOCK_BYTES];
    kvtier_block kb[NB];
    kvtier_block_ref refs[NB];
    for (int i = 0; i < NB; i++) {
        fill(buf[i], BLOCK_BYTES, i);
        memset(&kb[i], 0, sizeof kb[i]);
        kb[i].layer = refs[i].layer = (uint32_t)(i % 4);
        kb[i].block = refs[i].block = (uint32_t)(i / 4);
        kb[i].payload = buf[i];
        kb[i].len = BLOCK_BYTES;
        kb[i].token_count = 16;
    }
    long put0 = calls_ok(d, "/kvtier.v1.Tier/PutBlockBatches");
    assert_true(put0 >= 0);
    long fetch0 = calls_ok(d, "/kvtier.v1.Tier/FetchBlockBatches");
    long single0 =
        calls_ok(d, "/kvtier.v1.Tier/PutBlocks") + calls_ok(d, "/kvtier.v1.Tier/FetchBlocks");
    kvtier_put_result pr;
    assert_int_equal(kvtier_put_blocks(c, 5, kb, NB, &pr, &e), KVTIER_OK);
    assert_int_equal(pr.acked, NB);
    kvtier_put_result_free(&pr);
    int n = 0;
    size_t got = 0;
    assert_int_equal(kvtier_fetch_blocks(c, 5, refs, NB, on_fetched, &n, &got, &e), KVTIER_OK);
    assert_int_equal(n, NB);
    assert_int_equal(got, NB);
    assert_int_equal(calls_ok(d, "/kvtier.v1.Tier/PutBlockBatches"), put0 + 1);
    assert_int_equal(calls_ok(d, "/kvtier.v1.Tier/FetchBlockBatches"), fetch0 + 1);
    assert_int_equal(calls_ok(d, "/kvtier.v1.Tier/PutBlocks") +
                         calls_ok(d, "/kvtier.v1.Tier/FetchBlocks"),
                     single0);
    /* KVTIER_PER_BLOCK_RPCS=1: the per-block methods, same result */
    setenv("KVTIER_PER_BLOCK_RPCS", "1", 1);
    assert_int_equal(kvtier_put_blocks(c, 5, kb, NB, &pr, &e), KVTIER_OK);
    assert_int_equal(pr.acked, NB);
    kvtier_put_result_free(&pr);
    n = 0;
    assert_int_equal(kvtier_fetch_blocks(c, 5, refs, NB, on_fetched, &n, &got, &e), KVTIER_OK);
    assert_int_equal(n, NB);
    unsetenv("KVTIER_PER_BLOCK_RPCS");
    assert_int_equal(calls_ok(d, "/kvtier.v1.Tier/PutBlocks") +
                         calls_ok(d, "/kvtier.v1.Tier/FetchBlocks"),
                     single0 + 2);
    assert_int_equal(calls_ok(d, "/kvtier.v1.Tier/PutBlockBatches"), put0 + 1);
    kvtier_client_free(c);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH_TO_KVTIERD\n", argv[0]);
        return 2;
    }
    g_bin = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),   cmocka_unit_test(test_bad_block),
        cmocka_unit_test(test_empty_batch), cmocka_unit_test(test_fetch_missing),
        cmocka_unit_test(test_libkvtier),
    };
    return cmocka_run_group_tests_name("kvtierd_batches", tests, setup, teardown) ? 1 : 0;
}
