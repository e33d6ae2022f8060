/* test_kvtierd_validate.c - issue 9's validation gaps, each against the real
 * kvtierd binary on a loopback port (temp RocksDB dir), each answered with
 * INVALID_ARGUMENT and a message that names the field, and nothing changed:
 *   OpenSequence with kv_heads, head_dim or block_tokens of 2^32-1, or a
 *     block_bytes that no dtype of the shape gives;
 *   a payload whose size does not match the sequence's blocks (1 byte into
 *     blocks of 12288 bytes);
 *   a Summarize step going backwards;
 *   Evict of layer 2^32-1 (it used to mean "all layers");
 *   tenant names with a NUL byte ("a\0b" was cut to "a") or outside
 *     [A-Za-z0-9._-]{1,64}, in the message or in x-kvtier-tenant.
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

#include "kvtier.pb-c.h"
#include "kvtierd_proc.h"
#include "rpc.h"
#include "tier.h"

static const char *g_bin;

#define T_OPEN "/kvtier.v1.Tier/OpenSequence"
#define T_SUM "/kvtier.v1.Tier/Summarize"
#define T_PUT "/kvtier.v1.Tier/PutBlocks"
#define T_FETCH "/kvtier.v1.Tier/FetchBlocks"
#define A_LIST "/kvtier.v1.Admin/ListSequences"
#define A_MAP "/kvtier.v1.Admin/GetTierMap"
#define A_EVICT "/kvtier.v1.Admin/Evict"

/* 16 tokens x 2 kv heads x 96 head_dim x 2 (K,V) x 2 bytes (bf16) */
#define BLOCK_BYTES 12288u

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

static Kvtier__V1__OpenSequenceRequest shape(uint64_t seq) {
    Kvtier__V1__OpenSequenceRequest r = KVTIER__V1__OPEN_SEQUENCE_REQUEST__INIT;
    r.tenant = "acme";
    r.sequence_id = seq;
    r.layers = 4;
    r.kv_heads = 2;
    r.head_dim = 96;
    r.block_tokens = 16;
    r.block_bytes = BLOCK_BYTES;
    return r;
}

static grpc_status_code open_req(rpc_channel *ch, const Kvtier__V1__OpenSequenceRequest *r,
                                 rpc_status *st) {
    ProtobufCMessage *resp = NULL;
    grpc_status_code c = rpc_unary(ch, T_OPEN, NULL, &r->base,
                                   &kvtier__v1__open_sequence_response__descriptor, &resp, st);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return c;
}

/* Expects code and a message containing `has`. */
static void expect(grpc_status_code got, const rpc_status *st, grpc_status_code want,
                   const char *has) {
    if (got != want || !strstr(st->message, has))
        fprintf(stderr, "got %d \"%s\", want %d with \"%s\"\n", got, st->message, want, has);
    assert_int_equal(got, want);
    assert_non_null(strstr(st->message, has));
}

/* Puts one block of len bytes at (layer, block) of acme/seq. */
static grpc_status_code put_one(rpc_channel *ch, uint64_t seq, uint32_t layer, uint32_t block,
                                size_t len, rpc_status *st) {
    rpc_stream *s = rpc_stream_open(ch, T_PUT, NULL, st);
    assert_non_null(s);
    uint8_t *buf = calloc(1, len);
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i * 7 + block);
    Kvtier__V1__BlockKey key = KVTIER__V1__BLOCK_KEY__INIT;
    key.tenant = "acme";
    key.sequence_id = seq;
    key.layer = layer;
    key.block = block;
    Kvtier__V1__Block b = KVTIER__V1__BLOCK__INIT;
    b.key = &key;
    b.payload.data = buf;
    b.payload.len = len;
    b.crc32c = tier_crc32c(0, buf, len);
    b.token_count = 16;
    rpc_stream_write(s, &b.base);
    ProtobufCMessage *resp = NULL;
    grpc_status_code c =
        rpc_stream_close_and_recv(s, &kvtier__v1__put_response__descriptor, &resp, st);
    rpc_stream_free(s);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    free(buf);
    return c;
}

/* Tier of (layer, block) of acme/seq from GetTierMap. */
static int map_tier(rpc_channel *ch, uint64_t seq, uint32_t layer, uint32_t block) {
    Kvtier__V1__GetTierMapRequest r = KVTIER__V1__GET_TIER_MAP_REQUEST__INIT;
    r.tenant = "acme";
    r.sequence_id = seq;
    Kvtier__V1__GetTierMapResponse *m = NULL;
    rpc_status st;
    assert_int_equal(rpc_unary(ch, A_MAP, NULL, &r.base,
                               &kvtier__v1__get_tier_map_response__descriptor,
                               (ProtobufCMessage **)&m, &st),
                     GRPC_STATUS_OK);
    int t = -1;
    if (layer < m->n_layers && m->layers[layer] && block < m->layers[layer]->n_tiers)
        t = m->layers[layer]->tiers[block];
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return t;
}

static void test_shape_bounds(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    Kvtier__V1__OpenSequenceRequest r = shape(10);
    r.kv_heads = UINT32_MAX;
    expect(open_req(d->ch, &r, &st), &st, GRPC_STATUS_INVALID_ARGUMENT, "n_kv_heads 4294967295");
    r = shape(10);
    r.head_dim = UINT32_MAX;
    expect(open_req(d->ch, &r, &st), &st, GRPC_STATUS_INVALID_ARGUMENT, "head_dim 4294967295");
    r = shape(10);
    r.block_tokens = UINT32_MAX;
    expect(open_req(d->ch, &r, &st), &st, GRPC_STATUS_INVALID_ARGUMENT, "block_tokens 4294967295");
    r = shape(10);
    r.block_bytes = 1000; /* no dtype gives 1000 bytes for this shape */
    expect(open_req(d->ch, &r, &st), &st, GRPC_STATUS_INVALID_ARGUMENT,
           "block_bytes 1000 does not match the shape");
    /* none of them was created */
    Kvtier__V1__GetTierMapRequest m = KVTIER__V1__GET_TIER_MAP_REQUEST__INIT;
    m.tenant = "acme";
    m.sequence_id = 10;
    ProtobufCMessage *resp = NULL;
    assert_int_equal(rpc_unary(d->ch, A_MAP, NULL, &m.base,
                               &kvtier__v1__get_tier_map_response__descriptor, &resp, &st),
                     GRPC_STATUS_NOT_FOUND);
    r = shape(10); /* the valid shape opens */
    assert_int_equal(open_req(d->ch, &r, &st), GRPC_STATUS_OK);
}

static void test_payload_size(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    Kvtier__V1__OpenSequenceRequest r = shape(11);
    assert_int_equal(open_req(d->ch, &r, &st), GRPC_STATUS_OK);
    expect(put_one(d->ch, 11, 0, 0, 1, &st), &st, GRPC_STATUS_INVALID_ARGUMENT,
           "is 1 bytes; blocks of acme/11 are 12288 bytes");
    expect(put_one(d->ch, 11, 0, 1, BLOCK_BYTES - 2, &st), &st, GRPC_STATUS_INVALID_ARGUMENT,
           "is 12286 bytes");
    assert_int_equal(map_tier(d->ch, 11, 0, 0), -1); /* nothing stored, index not grown */
    assert_int_equal(put_one(d->ch, 11, 0, 0, BLOCK_BYTES, &st), GRPC_STATUS_OK);
    assert_int_equal(map_tier(d->ch, 11, 0, 0), KVTIER__V1__TIER_KIND__TIER_HOST);
}

/* Sends one summary of step `step` on a new stream; returns the status. */
static grpc_status_code summary_at(rpc_channel *ch, uint64_t seq, uint64_t step, rpc_status *st) {
    rpc_opts o = {.tenant = "acme"};
    rpc_stream *s = rpc_stream_open(ch, T_SUM, &o, st);
    assert_non_null(s);
    Kvtier__V1__ActiveBlock ab = KVTIER__V1__ACTIVE_BLOCK__INIT, *abp = &ab;
    ab.block = 0;
    ab.peak_mass = 0.5f;
    Kvtier__V1__LayerSummary ls = KVTIER__V1__LAYER_SUMMARY__INIT, *lsp = &ls;
    ls.n_active = 1;
    ls.active = &abp;
    ls.block_count = 2;
    Kvtier__V1__SummaryRequest r = KVTIER__V1__SUMMARY_REQUEST__INIT;
    r.sequence_id = seq;
    r.step = step;
    r.n_layers = 1;
    r.layers = &lsp;
    assert_int_equal(rpc_stream_write(s, &r.base), 0);
    ProtobufCMessage *m = NULL;
    if (rpc_stream_read(s, &kvtier__v1__decisions__descriptor, &m) == 1)
        protobuf_c_message_free_unpacked(m, NULL);
    grpc_status_code c = rpc_stream_finish(s, st);
    rpc_stream_free(s);
    return c;
}

static void test_summary_step_back(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    Kvtier__V1__OpenSequenceRequest r = shape(12);
    assert_int_equal(open_req(d->ch, &r, &st), GRPC_STATUS_OK);
    assert_int_equal(summary_at(d->ch, 12, 100, &st), GRPC_STATUS_OK);
    assert_int_equal(summary_at(d->ch, 12, 100, &st), GRPC_STATUS_OK); /* same step: fine */
    expect(summary_at(d->ch, 12, 50, &st), &st, GRPC_STATUS_INVALID_ARGUMENT,
           "step 50 of acme/12 goes back: the sequence is at step 100");
    assert_int_equal(summary_at(d->ch, 12, 116, &st), GRPC_STATUS_OK);
}

static void test_evict_layer(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    Kvtier__V1__OpenSequenceRequest r = shape(13);
    assert_int_equal(open_req(d->ch, &r, &st), GRPC_STATUS_OK);
    assert_int_equal(put_one(d->ch, 13, 2, 0, BLOCK_BYTES, &st), GRPC_STATUS_OK);
    uint32_t bad[] = {UINT32_MAX, 4, 256};
    for (size_t i = 0; i < 3; i++) {
        Kvtier__V1__EvictRequest e = KVTIER__V1__EVICT_REQUEST__INIT;
        e.tenant = "acme";
        e.sequence_id = 13;
        e.has_layer = 1;
        e.layer = bad[i];
        e.to = KVTIER__V1__TIER_KIND__TIER_DROPPED;
        ProtobufCMessage *resp = NULL;
        char want[64];
        snprintf(want, sizeof want, "layer %u out of range", bad[i]);
        expect(rpc_unary(d->ch, A_EVICT, NULL, &e.base, &kvtier__v1__evict_response__descriptor,
                         &resp, &st),
               &st, GRPC_STATUS_INVALID_ARGUMENT, want);
    }
    assert_int_equal(map_tier(d->ch, 13, 2, 0), KVTIER__V1__TIER_KIND__TIER_HOST); /* not dropped */
}

/* OpenSequence on the wire, tenant given as raw bytes (protobuf-c cannot
 * send a string with a NUL). */
static grpc_status_code open_raw_tenant(rpc_channel *ch, const char *tenant, size_t tlen,
                                        rpc_status *st) {
    uint8_t m[128];
    size_t n = 0;
    m[n++] = 0x0a; /* field 1, length-delimited */
    m[n++] = (uint8_t)tlen;
    memcpy(m + n, tenant, tlen);
    n += tlen;
    const uint8_t rest[] = {0x10, 77,  /* sequence_id 77 */
                            0x18, 1,   /* layers 1 */
                            0x20, 1,   /* kv_heads 1 */
                            0x28, 64,  /* head_dim 64 */
                            0x30, 16}; /* block_tokens 16 */
    memcpy(m + n, rest, sizeof rest);
    n += sizeof rest;
    rpc_opts o = {.timeout_ms = 10000};
    return rpc_unary_raw(ch, T_OPEN, &o, m, n, NULL, NULL, st);
}

static size_t sequences_of(rpc_channel *ch, const char *tenant) {
    Kvtier__V1__ListSequencesRequest r = KVTIER__V1__LIST_SEQUENCES_REQUEST__INIT;
    r.tenant = (char *)tenant;
    Kvtier__V1__ListSequencesResponse *resp = NULL;
    rpc_status st;
    assert_int_equal(rpc_unary(ch, A_LIST, NULL, &r.base,
                               &kvtier__v1__list_sequences_response__descriptor,
                               (ProtobufCMessage **)&resp, &st),
                     GRPC_STATUS_OK);
    size_t n = resp->n_sequences;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return n;
}

static void test_tenant_names(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    expect(open_raw_tenant(d->ch, "a\0b", 3, &st), &st, GRPC_STATUS_INVALID_ARGUMENT,
           "OpenSequenceRequest.tenant holds a NUL byte");
    assert_int_equal(sequences_of(d->ch, "a"), 0); /* not cut to "a" */
    const char *bad[] = {"a b", "caf\xc3\xa9", "x/y", "a\nb"};
    for (size_t i = 0; i < 4; i++)
        expect(open_raw_tenant(d->ch, bad[i], strlen(bad[i]), &st), &st,
               GRPC_STATUS_INVALID_ARGUMENT, "allowed: 1..64 characters of [A-Za-z0-9._-]");
    char longt[66];
    memset(longt, 'a', 65);
    longt[65] = 0;
    expect(open_raw_tenant(d->ch, longt, 65, &st), &st, GRPC_STATUS_INVALID_ARGUMENT,
           "exceeds 64 bytes");
    assert_int_equal(open_raw_tenant(d->ch, "Team-1.prod_x", 13, &st), GRPC_STATUS_OK);
    assert_int_equal(sequences_of(d->ch, "Team-1.prod_x"), 1);
    /* the same rule for the x-kvtier-tenant metadata */
    Kvtier__V1__OpenSequenceRequest r = shape(14);
    r.tenant = "";
    rpc_opts o = {.tenant = "bad tenant"};
    ProtobufCMessage *resp = NULL;
    expect(rpc_unary(d->ch, T_OPEN, &o, &r.base, &kvtier__v1__open_sequence_response__descriptor,
                     &resp, &st),
           &st, GRPC_STATUS_INVALID_ARGUMENT, "tenant name has byte 0x20 at offset 3");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH_TO_KVTIERD\n", argv[0]);
        return 2;
    }
    g_bin = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape_bounds),      cmocka_unit_test(test_payload_size),
        cmocka_unit_test(test_summary_step_back), cmocka_unit_test(test_evict_layer),
        cmocka_unit_test(test_tenant_names),
    };
    return cmocka_run_group_tests_name("kvtierd_validate", tests, setup, teardown) ? 1 : 0;
}
