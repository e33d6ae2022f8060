/* test_kvtierd.c - process-level tests of kvtierd: the real binary on a free
 * loopback port (port 0, address read from its stdout) with a RocksDB data dir
 * in a temp directory, driven through the project's RPC client.
 *
 * argv[1] = path of the kvtierd binary (from CMake).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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
#define T_CLOSE "/kvtier.v1.Tier/CloseSequence"
#define A_LIST "/kvtier.v1.Admin/ListSequences"
#define A_MAP "/kvtier.v1.Admin/GetTierMap"
#define A_STATS "/kvtier.v1.Admin/GetStats"
#define A_EVICT "/kvtier.v1.Admin/Evict"
#define A_DRAIN "/kvtier.v1.Admin/Drain"
#define A_HEALTH "/kvtier.v1.Admin/Health"

/* Sequence shape used throughout: 4 layers, 2 KV heads, head_dim 8, 16 tokens,
 * bf16 K+V: 2 * 2 * 16 * 8 * 2 = 1024 bytes per block. */
#define LAYERS 4
#define BLOCK_BYTES 1024

static int setup(void **state) {
    kvd_proc *d = kvd_new();
    assert_non_null(d);
    if (kvd_start(d, g_bin, NULL) != 0) {
        fprintf(stderr, "kvtierd did not start\n");
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

/* ================================================================ client helpers */

static grpc_status_code open_seq(rpc_channel *ch, const char *tenant, uint64_t seq,
                                 const Kvtier__V1__PolicyParams *pp,
                                 Kvtier__V1__OpenSequenceResponse **out, rpc_status *st) {
    Kvtier__V1__OpenSequenceRequest r = KVTIER__V1__OPEN_SEQUENCE_REQUEST__INIT;
    r.tenant = (char *)(tenant ? tenant : "");
    r.sequence_id = seq;
    r.layers = LAYERS;
    r.kv_heads = 2;
    r.head_dim = 8;
    r.block_tokens = 16;
    r.block_bytes = BLOCK_BYTES;
    r.params = (Kvtier__V1__PolicyParams *)pp;
    Kvtier__V1__OpenSequenceResponse *resp = NULL;
    grpc_status_code c =
        rpc_unary(ch, T_OPEN, NULL, &r.base, &kvtier__v1__open_sequence_response__descriptor,
                  (ProtobufCMessage **)&resp, st);
    if (out)
        *out = resp;
    else if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return c;
}

static void fill(uint8_t *buf, size_t len, uint64_t seq, uint32_t layer, uint32_t block) {
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(seq * 131 + layer * 31 + block * 7 + i);
}

typedef struct {
    uint32_t layer, block;
    size_t len;
    int bad_crc, no_key;
} put_spec;

/* Puts blocks of sequence seq in one client stream; returns the status, *acked
 * and tiers of the acks (when OK). */
static grpc_status_code put_blocks(rpc_channel *ch, uint64_t seq, const put_spec *ps, size_t n,
                                   Kvtier__V1__PutResponse **out, rpc_status *st) {
    rpc_opts o = {.tenant = "acme"};
    rpc_stream *s = rpc_stream_open(ch, T_PUT, &o, st);
    assert_non_null(s);
    for (size_t i = 0; i < n; i++) {
        uint8_t *buf = malloc(ps[i].len);
        fill(buf, ps[i].len, seq, ps[i].layer, ps[i].block);
        Kvtier__V1__BlockKey key = KVTIER__V1__BLOCK_KEY__INIT;
        key.sequence_id = seq;
        key.layer = ps[i].layer;
        key.block = ps[i].block;
        Kvtier__V1__Block b = KVTIER__V1__BLOCK__INIT;
        b.key = ps[i].no_key ? NULL : &key;
        b.payload.data = buf;
        b.payload.len = ps[i].len;
        b.crc32c = tier_crc32c(0, buf, ps[i].len) ^ (ps[i].bad_crc ? 1u : 0u);
        b.token_count = 16;
        int w = rpc_stream_write(s, &b.base);
        free(buf);
        if (w != 0)
            break;
    }
    Kvtier__V1__PutResponse *resp = NULL;
    grpc_status_code c = rpc_stream_close_and_recv(s, &kvtier__v1__put_response__descriptor,
                                                   (ProtobufCMessage **)&resp, st);
    rpc_stream_free(s);
    if (out)
        *out = resp;
    else if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return c;
}

/* Fetches (layer, block) pairs; verifies every payload and crc; returns the
 * status, *got = blocks received, tiers[] their tiers. */
static grpc_status_code fetch_blocks(rpc_channel *ch, uint64_t seq, const uint32_t (*refs)[2],
                                     size_t n, size_t *got, int *tiers, rpc_status *st) {
    Kvtier__V1__FetchRequest r = KVTIER__V1__FETCH_REQUEST__INIT;
    Kvtier__V1__BlockRef *br = calloc(n + 1, sizeof *br), **bp = calloc(n + 1, sizeof *bp);
    for (size_t i = 0; i < n; i++) {
        kvtier__v1__block_ref__init(&br[i]);
        br[i].layer = refs[i][0];
        br[i].block = refs[i][1];
        bp[i] = &br[i];
    }
    r.tenant = "acme";
    r.sequence_id = seq;
    r.n_blocks = n;
    r.blocks = bp;
    rpc_stream *s = rpc_stream_open(ch, T_FETCH, NULL, st);
    assert_int_equal(rpc_stream_write(s, &r.base), 0);
    *got = 0;
    Kvtier__V1__Block *b;
    while (rpc_stream_read(s, &kvtier__v1__block__descriptor, (ProtobufCMessage **)&b) == 1) {
        assert_non_null(b->key);
        assert_int_equal(b->key->layer, refs[*got][0]);
        assert_int_equal(b->key->block, refs[*got][1]);
        assert_int_equal(b->payload.len, BLOCK_BYTES);
        uint8_t want[BLOCK_BYTES];
        fill(want, BLOCK_BYTES, seq, b->key->layer, b->key->block);
        assert_memory_equal(b->payload.data, want, BLOCK_BYTES);
        assert_int_equal(b->crc32c, tier_crc32c(0, want, BLOCK_BYTES));
        if (tiers)
            tiers[*got] = b->tier;
        (*got)++;
        protobuf_c_message_free_unpacked(&b->base, NULL);
    }
    grpc_status_code c = rpc_stream_finish(s, st);
    rpc_stream_free(s);
    free(br);
    free(bp);
    return c;
}

static Kvtier__V1__GetTierMapResponse *get_map(rpc_channel *ch, uint64_t seq,
                                               grpc_status_code want) {
    Kvtier__V1__GetTierMapRequest r = KVTIER__V1__GET_TIER_MAP_REQUEST__INIT;
    r.tenant = "acme";
    r.sequence_id = seq;
    Kvtier__V1__GetTierMapResponse *resp = NULL;
    rpc_status st;
    assert_int_equal(rpc_unary(ch, A_MAP, NULL, &r.base,
                               &kvtier__v1__get_tier_map_response__descriptor,
                               (ProtobufCMessage **)&resp, &st),
                     want);
    return resp;
}

static grpc_status_code evict(rpc_channel *ch, uint64_t seq, Kvtier__V1__TierKind to,
                              uint64_t *moved, rpc_status *st) {
    Kvtier__V1__EvictRequest r = KVTIER__V1__EVICT_REQUEST__INIT;
    r.tenant = "acme";
    r.sequence_id = seq;
    r.to = to;
    Kvtier__V1__EvictResponse *resp = NULL;
    grpc_status_code c =
        rpc_unary(ch, A_EVICT, NULL, &r.base, &kvtier__v1__evict_response__descriptor,
                  (ProtobufCMessage **)&resp, st);
    if (resp) {
        *moved = resp->blocks_moved;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return c;
}

/* ================================================================ tests */

static void test_health(void **state) {
    kvd_proc *d = *state;
    Kvtier__V1__HealthRequest r = KVTIER__V1__HEALTH_REQUEST__INIT;
    Kvtier__V1__HealthResponse *h = NULL;
    rpc_status st;
    assert_int_equal(rpc_unary(d->ch, A_HEALTH, NULL, &r.base,
                               &kvtier__v1__health_response__descriptor, (ProtobufCMessage **)&h,
                               &st),
                     GRPC_STATUS_OK);
    assert_string_equal(h->status, "SERVING");
    assert_string_equal(h->version, "0.1.0");
    assert_false(h->degraded);
    protobuf_c_message_free_unpacked(&h->base, NULL);
}

static void test_open_sequence(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    Kvtier__V1__OpenSequenceResponse *r = NULL;
    assert_int_equal(open_seq(d->ch, "acme", 100, NULL, &r, &st), GRPC_STATUS_OK);
    assert_true(r->created);
    assert_non_null(r->effective_params);
    assert_float_equal(r->effective_params->top_p, 0.95f, 1e-6);
    assert_int_equal(r->effective_params->hot_inactive_steps, 50);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* same shape again: re-attach */
    assert_int_equal(open_seq(d->ch, "acme", 100, NULL, &r, &st), GRPC_STATUS_OK);
    assert_false(r->created);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* other shape: refused */
    Kvtier__V1__OpenSequenceRequest req = KVTIER__V1__OPEN_SEQUENCE_REQUEST__INIT;
    req.tenant = "acme";
    req.sequence_id = 100;
    req.layers = 7;
    req.kv_heads = 2;
    req.head_dim = 8;
    req.block_bytes = BLOCK_BYTES;
    ProtobufCMessage *x = NULL;
    assert_int_equal(rpc_unary(d->ch, T_OPEN, NULL, &req.base,
                               &kvtier__v1__open_sequence_response__descriptor, &x, &st),
                     GRPC_STATUS_ALREADY_EXISTS);
    /* bad arguments */
    assert_int_equal(open_seq(d->ch, "acme", 0, NULL, NULL, &st), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "sequence_id"));
    Kvtier__V1__PolicyParams pp = KVTIER__V1__POLICY_PARAMS__INIT;
    pp.top_p = 1.5f;
    assert_int_equal(open_seq(d->ch, "acme", 101, &pp, NULL, &st), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "top_p"));
    /* metadata tenant and field disagree */
    rpc_opts o = {.tenant = "other"};
    req.layers = LAYERS;
    req.sequence_id = 102;
    assert_int_equal(rpc_unary(d->ch, T_OPEN, &o, &req.base,
                               &kvtier__v1__open_sequence_response__descriptor, &x, &st),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "tenant"));
    /* x-kvtier-sequence metadata (routing key) must match the message */
    rpc_opts seqmd = {.sequence = "103"};
    req.sequence_id = 104;
    assert_int_equal(rpc_unary(d->ch, T_OPEN, &seqmd, &req.base,
                               &kvtier__v1__open_sequence_response__descriptor, &x, &st),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "x-kvtier-sequence"));
    req.sequence_id = 103;
    assert_int_equal(rpc_unary(d->ch, T_OPEN, &seqmd, &req.base,
                               &kvtier__v1__open_sequence_response__descriptor, &x, &st),
                     GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(x, NULL);
}

static void test_put_fetch(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    assert_int_equal(open_seq(d->ch, "acme", 200, NULL, NULL, &st), GRPC_STATUS_OK);
    put_spec ps[8];
    uint32_t refs[8][2];
    for (uint32_t i = 0; i < 8; i++) {
        ps[i] = (put_spec){i % 2, 1 + i / 2, BLOCK_BYTES, 0, 0};
        refs[i][0] = i % 2;
        refs[i][1] = 1 + i / 2;
    }
    Kvtier__V1__PutResponse *pr = NULL;
    assert_int_equal(put_blocks(d->ch, 200, ps, 8, &pr, &st), GRPC_STATUS_OK);
    assert_int_equal(pr->acked, 8);
    assert_int_equal(pr->n_blocks, 8);
    for (size_t i = 0; i < 8; i++) {
        assert_int_equal(pr->blocks[i]->layer, ps[i].layer);
        assert_int_equal(pr->blocks[i]->block, ps[i].block);
        assert_true(pr->blocks[i]->tier == KVTIER__V1__TIER_KIND__TIER_HOST ||
                    pr->blocks[i]->tier == KVTIER__V1__TIER_KIND__TIER_SSD);
    }
    protobuf_c_message_free_unpacked(&pr->base, NULL);
    size_t got;
    int tiers[8];
    assert_int_equal(fetch_blocks(d->ch, 200, (const uint32_t(*)[2])refs, 8, &got, tiers, &st),
                     GRPC_STATUS_OK);
    assert_int_equal(got, 8);
    assert_int_equal(tiers[0], KVTIER__V1__TIER_KIND__TIER_HOST);

    /* bad checksum: DATA_LOSS, nothing stored */
    put_spec bad = {2, 9, BLOCK_BYTES, 1, 0};
    assert_int_equal(put_blocks(d->ch, 200, &bad, 1, NULL, &st), GRPC_STATUS_DATA_LOSS);
    assert_non_null(strstr(st.message, "crc32c"));
    uint32_t badref[1][2] = {{2, 9}};
    assert_int_equal(fetch_blocks(d->ch, 200, (const uint32_t(*)[2])badref, 1, &got, NULL, &st),
                     GRPC_STATUS_NOT_FOUND);
    assert_int_equal(got, 0);
    /* key outside the shape, missing key, oversize payload, unknown sequence */
    put_spec outside = {99, 0, BLOCK_BYTES, 0, 0};
    assert_int_equal(put_blocks(d->ch, 200, &outside, 1, NULL, &st), GRPC_STATUS_INVALID_ARGUMENT);
    put_spec nokey = {0, 0, BLOCK_BYTES, 0, 1};
    assert_int_equal(put_blocks(d->ch, 200, &nokey, 1, NULL, &st), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "no key"));
    put_spec big = {0, 0, BLOCK_BYTES * 2, 0, 0};
    assert_int_equal(put_blocks(d->ch, 200, &big, 1, NULL, &st), GRPC_STATUS_RESOURCE_EXHAUSTED);
    put_spec ok = {0, 0, BLOCK_BYTES, 0, 0};
    assert_int_equal(put_blocks(d->ch, 999999, &ok, 1, NULL, &st), GRPC_STATUS_NOT_FOUND);
    /* a failure mid-stream: a PutBlocks stream is stored whole or not at all
     * (it is acknowledged only by its one final response), so the good blocks
     * before the bad one are NOT stored either; the message names the bad
     * block and says so */
    put_spec mixed[3] = {
        {3, 1, BLOCK_BYTES, 0, 0}, {3, 2, BLOCK_BYTES, 0, 0}, {3, 3, BLOCK_BYTES, 1, 0}};
    assert_int_equal(put_blocks(d->ch, 200, mixed, 3, NULL, &st), GRPC_STATUS_DATA_LOSS);
    assert_non_null(strstr(st.message, "block #2 of the stream"));
    assert_non_null(strstr(st.message, "nothing of this stream was stored"));
    uint32_t mref[2][2] = {{3, 1}, {3, 2}};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(
            fetch_blocks(d->ch, 200, (const uint32_t(*)[2])mref + i, 1, &got, NULL, &st),
            GRPC_STATUS_NOT_FOUND);
        assert_int_equal(got, 0);
    }
    /* the same stream without the bad block is stored whole */
    assert_int_equal(put_blocks(d->ch, 200, mixed, 2, NULL, &st), GRPC_STATUS_OK);
    assert_int_equal(fetch_blocks(d->ch, 200, (const uint32_t(*)[2])mref, 2, &got, NULL, &st),
                     GRPC_STATUS_OK);
    assert_int_equal(got, 2);
    /* fetch errors: never-stored block after good ones, unknown sequence */
    uint32_t part[2][2] = {{0, 1}, {0, 30}};
    assert_int_equal(fetch_blocks(d->ch, 200, (const uint32_t(*)[2])part, 2, &got, NULL, &st),
                     GRPC_STATUS_NOT_FOUND);
    assert_int_equal(got, 1);
    assert_int_equal(fetch_blocks(d->ch, 424242, (const uint32_t(*)[2])part, 1, &got, NULL, &st),
                     GRPC_STATUS_NOT_FOUND);
}

static void test_summarize(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    Kvtier__V1__PolicyParams pp = KVTIER__V1__POLICY_PARAMS__INIT;
    pp.hot_inactive_steps = 10;
    pp.recent_blocks = 1;
    pp.sink_blocks = 1;
    assert_int_equal(open_seq(d->ch, "acme", 300, &pp, NULL, &st), GRPC_STATUS_OK);
    /* block 5 demoted by the worker, then moved to SSD by the operator */
    put_spec ps = {0, 5, BLOCK_BYTES, 0, 0};
    assert_int_equal(put_blocks(d->ch, 300, &ps, 1, NULL, &st), GRPC_STATUS_OK);
    uint64_t moved = 0;
    assert_int_equal(evict(d->ch, 300, KVTIER__V1__TIER_KIND__TIER_SSD, &moved, &st),
                     GRPC_STATUS_OK);
    assert_int_equal(moved, 1);
    rpc_opts o = {.tenant = "acme"};
    rpc_stream *s = rpc_stream_open(d->ch, T_SUM, &o, &st);
    uint32_t active_first[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, active_later[1] = {0};
    uint32_t revived[1] = {5};
    int prefetch5 = 0, demote_host = 0;
    for (int round = 0; round < 3; round++) {
        Kvtier__V1__ActiveBlock ab[10], *abp[10];
        uint32_t *act = round == 0 ? active_first : active_later;
        size_t na = round == 0 ? 10 : 1;
        for (size_t i = 0; i < na; i++) {
            kvtier__v1__active_block__init(&ab[i]);
            ab[i].block = act[i];
            ab[i].peak_mass = 0.3f;
            abp[i] = &ab[i];
        }
        Kvtier__V1__LayerSummary ls = KVTIER__V1__LAYER_SUMMARY__INIT, *lsp = &ls;
        ls.layer = 0;
        ls.n_active = na;
        ls.active = abp;
        ls.block_count = 10;
        if (round > 0) { /* fetched back and out again: one revival per window */
            ls.n_revived = 1;
            ls.revived = revived;
        }
        Kvtier__V1__SummaryRequest r = KVTIER__V1__SUMMARY_REQUEST__INIT;
        r.sequence_id = 300;
        r.step = 16 + 42 * (uint64_t)round;
        r.n_layers = 1;
        r.layers = &lsp;
        assert_int_equal(rpc_stream_write(s, &r.base), 0);
        Kvtier__V1__Decisions *dec = NULL;
        assert_int_equal(
            rpc_stream_read(s, &kvtier__v1__decisions__descriptor, (ProtobufCMessage **)&dec), 1);
        assert_int_equal(dec->step, r.step);
        assert_int_equal(dec->sequence_id, 300);
        for (size_t i = 0; i < dec->n_decisions; i++) {
            Kvtier__V1__BlockDecision *bd = dec->decisions[i];
            if (bd->decision == KVTIER__V1__DECISION_KIND__DECISION_DEMOTE_HOST)
                demote_host++;
            if (bd->decision == KVTIER__V1__DECISION_KIND__DECISION_PREFETCH && bd->block == 5) {
                assert_int_equal(bd->from_tier, KVTIER__V1__TIER_KIND__TIER_SSD);
                assert_int_equal(bd->to_tier, KVTIER__V1__TIER_KIND__TIER_HOST);
                prefetch5 = round;
            }
        }
        protobuf_c_message_free_unpacked(&dec->base, NULL);
    }
    assert_int_equal(rpc_stream_finish(s, &st), GRPC_STATUS_OK);
    rpc_stream_free(s);
    /* blocks idle for 100 steps > 10 stay HOT: the hot pool is the worker's */
    assert_int_equal(demote_host, 0);
    assert_int_equal(prefetch5, 2); /* revived twice on SSD: back into RAM */

    /* unknown sequence ends the stream with NOT_FOUND */
    s = rpc_stream_open(d->ch, T_SUM, &o, &st);
    Kvtier__V1__SummaryRequest r = KVTIER__V1__SUMMARY_REQUEST__INIT;
    r.sequence_id = 31337;
    r.step = 1;
    assert_int_equal(rpc_stream_write(s, &r.base), 0);
    ProtobufCMessage *m = NULL;
    assert_int_equal(rpc_stream_read(s, &kvtier__v1__decisions__descriptor, &m), -1);
    assert_int_equal(rpc_stream_finish(s, &st), GRPC_STATUS_NOT_FOUND);
    rpc_stream_free(s);
}

static void test_admin(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    assert_int_equal(open_seq(d->ch, "acme", 400, NULL, NULL, &st), GRPC_STATUS_OK);
    put_spec ps[4] = {{0, 1, BLOCK_BYTES, 0, 0},
                      {0, 2, BLOCK_BYTES, 0, 0},
                      {1, 1, BLOCK_BYTES, 0, 0},
                      {2, 3, BLOCK_BYTES, 0, 0}};
    assert_int_equal(put_blocks(d->ch, 400, ps, 4, NULL, &st), GRPC_STATUS_OK);

    /* ListSequences: our sequence, with its stored blocks */
    Kvtier__V1__ListSequencesRequest lr = KVTIER__V1__LIST_SEQUENCES_REQUEST__INIT;
    lr.tenant = "acme";
    Kvtier__V1__ListSequencesResponse *ls = NULL;
    assert_int_equal(rpc_unary(d->ch, A_LIST, NULL, &lr.base,
                               &kvtier__v1__list_sequences_response__descriptor,
                               (ProtobufCMessage **)&ls, &st),
                     GRPC_STATUS_OK);
    int found = 0;
    for (size_t i = 0; i < ls->n_sequences; i++)
        if (ls->sequences[i]->sequence_id == 400) {
            found = 1;
            assert_string_equal(ls->sequences[i]->tenant, "acme");
            assert_int_equal(ls->sequences[i]->layers, LAYERS);
            assert_int_equal(ls->sequences[i]->blocks_host + ls->sequences[i]->blocks_ssd, 4);
            assert_true(ls->sequences[i]->open);
        }
    assert_true(found);
    protobuf_c_message_free_unpacked(&ls->base, NULL);

    /* GetTierMap: LAYERS rows; the put blocks are HOST */
    Kvtier__V1__GetTierMapResponse *map = get_map(d->ch, 400, GRPC_STATUS_OK);
    assert_int_equal(map->n_layers, LAYERS);
    assert_true(map->layers[0]->n_tiers >= 4);
    assert_int_equal(map->layers[0]->tiers[1], KVTIER__V1__TIER_KIND__TIER_HOST);
    assert_int_equal(map->layers[2]->tiers[3], KVTIER__V1__TIER_KIND__TIER_HOST);
    protobuf_c_message_free_unpacked(&map->base, NULL);
    assert_null(get_map(d->ch, 777777, GRPC_STATUS_NOT_FOUND));

    /* Evict layer-less to SSD: 4 moved; the map says SSD; fetch still serves */
    uint64_t moved = 0;
    assert_int_equal(evict(d->ch, 400, KVTIER__V1__TIER_KIND__TIER_SSD, &moved, &st),
                     GRPC_STATUS_OK);
    assert_int_equal(moved, 4);
    map = get_map(d->ch, 400, GRPC_STATUS_OK);
    assert_int_equal(map->layers[0]->tiers[1], KVTIER__V1__TIER_KIND__TIER_SSD);
    protobuf_c_message_free_unpacked(&map->base, NULL);
    uint32_t refs[1][2] = {{0, 2}};
    size_t got;
    int tiers[1];
    assert_int_equal(fetch_blocks(d->ch, 400, (const uint32_t(*)[2])refs, 1, &got, tiers, &st),
                     GRPC_STATUS_OK);
    assert_int_equal(tiers[0], KVTIER__V1__TIER_KIND__TIER_SSD);
    assert_int_equal(evict(d->ch, 400, KVTIER__V1__TIER_KIND__TIER_HOT, &moved, &st),
                     GRPC_STATUS_INVALID_ARGUMENT); /* HOT is the worker's */

    /* GetStats: counts reflect the work */
    Kvtier__V1__GetStatsRequest sr = KVTIER__V1__GET_STATS_REQUEST__INIT;
    Kvtier__V1__GetStatsResponse *gs = NULL;
    assert_int_equal(rpc_unary(d->ch, A_STATS, NULL, &sr.base,
                               &kvtier__v1__get_stats_response__descriptor,
                               (ProtobufCMessage **)&gs, &st),
                     GRPC_STATUS_OK);
    assert_int_equal(gs->n_tiers, 4);
    Kvtier__V1__TierStats *ssd = gs->tiers[2];
    assert_int_equal(ssd->tier, KVTIER__V1__TIER_KIND__TIER_SSD);
    assert_true(ssd->blocks >= 4);
    assert_true(ssd->hits >= 1);
    assert_true(ssd->fetch_latency_p50_us > 0.0);
    assert_true(gs->tiers[1]->budget_bytes == 512ull << 20);
    assert_true(gs->sequences >= 1);
    assert_int_equal(gs->n_decisions, 5);
    protobuf_c_message_free_unpacked(&gs->base, NULL);
    /* Evict to HOST brings the SSD blocks back into RAM */
    assert_int_equal(evict(d->ch, 400, KVTIER__V1__TIER_KIND__TIER_HOST, &moved, &st),
                     GRPC_STATUS_OK);
    assert_int_equal(moved, 4);
    map = get_map(d->ch, 400, GRPC_STATUS_OK);
    assert_int_equal(map->layers[0]->tiers[1], KVTIER__V1__TIER_KIND__TIER_HOST);
    protobuf_c_message_free_unpacked(&map->base, NULL);

    /* Drain succeeds; Evict to DROPPED deletes; fetch then NOT_FOUND */
    Kvtier__V1__DrainRequest dr = KVTIER__V1__DRAIN_REQUEST__INIT;
    ProtobufCMessage *x = NULL;
    assert_int_equal(
        rpc_unary(d->ch, A_DRAIN, NULL, &dr.base, &kvtier__v1__drain_response__descriptor, &x, &st),
        GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(x, NULL);
    assert_int_equal(evict(d->ch, 400, KVTIER__V1__TIER_KIND__TIER_DROPPED, &moved, &st),
                     GRPC_STATUS_OK);
    assert_int_equal(moved, 4);
    assert_int_equal(fetch_blocks(d->ch, 400, (const uint32_t(*)[2])refs, 1, &got, NULL, &st),
                     GRPC_STATUS_NOT_FOUND);

    /* CloseSequence, then it is unknown */
    Kvtier__V1__CloseSequenceRequest cr = KVTIER__V1__CLOSE_SEQUENCE_REQUEST__INIT;
    cr.tenant = "acme";
    cr.sequence_id = 400;
    assert_int_equal(rpc_unary(d->ch, T_CLOSE, NULL, &cr.base,
                               &kvtier__v1__close_sequence_response__descriptor, &x, &st),
                     GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(x, NULL);
    assert_null(get_map(d->ch, 400, GRPC_STATUS_NOT_FOUND));
    assert_int_equal(rpc_unary(d->ch, T_CLOSE, NULL, &cr.base,
                               &kvtier__v1__close_sequence_response__descriptor, &x, &st),
                     GRPC_STATUS_NOT_FOUND);
}

static void test_malformed_and_unknown(void **state) {
    kvd_proc *d = *state;
    const uint8_t garbage[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01};
    rpc_status st;
    assert_int_equal(rpc_unary_raw(d->ch, T_OPEN, NULL, garbage, sizeof garbage, NULL, NULL, &st),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "malformed"));
    Kvtier__V1__HealthRequest r = KVTIER__V1__HEALTH_REQUEST__INIT;
    ProtobufCMessage *x = NULL;
    assert_int_equal(rpc_unary(d->ch, "/kvtier.v1.Inference/Generate", NULL, &r.base,
                               &kvtier__v1__health_response__descriptor, &x, &st),
                     GRPC_STATUS_UNIMPLEMENTED);
}

static int have_promtool(void) {
    return system("command -v promtool >/dev/null 2>&1") == 0;
}

static void test_metrics(void **state) {
    kvd_proc *d = *state;
    char *text = kvd_metrics(d);
    assert_non_null(text);
    assert_non_null(strstr(text, "# TYPE kvtier_put_seconds histogram"));
    assert_non_null(strstr(text, "kvtier_tier_blocks{tier=\"ssd\"}"));
    assert_non_null(strstr(text, "kvtier_decisions_total{kind=\"demote_host\"}"));
    assert_non_null(strstr(text, "kvtier_rocksdb_live_data_bytes"));
    /* earlier tests ran PutBlocks calls that ended OK and with DATA_LOSS */
    assert_non_null(strstr(
        text, "kvtier_rpc_requests_total{method=\"/kvtier.v1.Tier/PutBlocks\",code=\"OK\"}"));
    assert_non_null(strstr(
        text,
        "kvtier_rpc_requests_total{method=\"/kvtier.v1.Tier/PutBlocks\",code=\"DATA_LOSS\"}"));
    assert_null(strstr(text, "kvtier_put_seconds_count 0\n"));
    if (have_promtool()) {
        char path[300], cmd[700];
        snprintf(path, sizeof path, "%s/metrics.txt", d->dir);
        FILE *f = fopen(path, "w");
        fputs(text, f);
        fclose(f);
        snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
        assert_int_equal(system(cmd), 0);
    } else {
        fprintf(stderr, "promtool not installed: skipping promtool check metrics\n");
    }
    free(text);
}

/* Own daemon: --auth-token; restart on the same data dir; SIGTERM exit 0. */
static void test_auth_restart_sigterm(void **state) {
    kvd_proc *d = *state; /* own process; own_setup/own_teardown clean up */
    const char *extra[] = {"--auth-token", "tok3n", NULL};
    assert_int_equal(kvd_start(d, g_bin, extra), 0);
    rpc_status st;
    assert_int_equal(open_seq(d->ch, "acme", 500, NULL, NULL, &st), GRPC_STATUS_UNAUTHENTICATED);
    rpc_channel_free(d->ch);
    d->ch = rpc_channel_new(d->addr, 0);
    /* authenticated calls through a helper that sets the header */
    Kvtier__V1__OpenSequenceRequest r = KVTIER__V1__OPEN_SEQUENCE_REQUEST__INIT;
    r.tenant = "acme";
    r.sequence_id = 500;
    r.layers = LAYERS;
    r.kv_heads = 2;
    r.head_dim = 8;
    r.block_tokens = 16;
    r.block_bytes = BLOCK_BYTES;
    rpc_opts auth = {.auth = "Bearer tok3n"};
    ProtobufCMessage *x = NULL;
    assert_int_equal(rpc_unary(d->ch, T_OPEN, &auth, &r.base,
                               &kvtier__v1__open_sequence_response__descriptor, &x, &st),
                     GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(x, NULL);
    assert_int_equal(kvd_stop(d, SIGTERM), 0);

    /* restart without auth on the same dir: the sequence is still known */
    assert_int_equal(kvd_start(d, g_bin, NULL), 0);
    assert_int_equal(open_seq(d->ch, "acme", 501, NULL, NULL, &st), GRPC_STATUS_OK);
    put_spec ps[2] = {{0, 1, BLOCK_BYTES, 0, 0}, {1, 2, BLOCK_BYTES, 0, 0}};
    assert_int_equal(put_blocks(d->ch, 501, ps, 2, NULL, &st), GRPC_STATUS_OK);
    /* write-through: acked blocks are in RocksDB, so they survive a restart */
    assert_int_equal(kvd_stop(d, SIGINT), 0);
    assert_int_equal(kvd_start(d, g_bin, NULL), 0);
    Kvtier__V1__OpenSequenceResponse *o = NULL;
    assert_int_equal(open_seq(d->ch, "acme", 501, NULL, &o, &st), GRPC_STATUS_OK);
    assert_false(o->created);
    protobuf_c_message_free_unpacked(&o->base, NULL);
    uint32_t refs[2][2] = {{0, 1}, {1, 2}};
    size_t got;
    assert_int_equal(fetch_blocks(d->ch, 501, (const uint32_t(*)[2])refs, 2, &got, NULL, &st),
                     GRPC_STATUS_OK);
    assert_int_equal(got, 2);
    assert_int_equal(kvd_stop(d, SIGTERM), 0);
}

/* SIGTERM while a Summarize stream is open: the stream is cancelled after the
 * grace period, the daemon still exits 0. */
static void test_sigterm_with_open_stream(void **state) {
    kvd_proc *d = *state; /* own process; own_setup/own_teardown clean up */
    const char *extra[] = {"--grace-ms", "300", NULL};
    assert_int_equal(kvd_start(d, g_bin, extra), 0);
    rpc_status st;
    assert_int_equal(open_seq(d->ch, "acme", 600, NULL, NULL, &st), GRPC_STATUS_OK);
    rpc_opts o = {.tenant = "acme"};
    rpc_stream *s = rpc_stream_open(d->ch, T_SUM, &o, &st);
    Kvtier__V1__SummaryRequest r = KVTIER__V1__SUMMARY_REQUEST__INIT;
    r.sequence_id = 600;
    r.step = 16;
    assert_int_equal(rpc_stream_write(s, &r.base), 0);
    ProtobufCMessage *m = NULL;
    assert_int_equal(rpc_stream_read(s, &kvtier__v1__decisions__descriptor, &m), 1);
    protobuf_c_message_free_unpacked(m, NULL);
    kill(d->pid, SIGTERM);
    /* the client neither writes nor half-closes: the server cancels the stream
     * once its grace period is over, and the blocked read returns */
    assert_int_equal(rpc_stream_read(s, &kvtier__v1__decisions__descriptor, &m), -1);
    grpc_status_code c = rpc_stream_finish(s, &st);
    assert_true(c == GRPC_STATUS_CANCELLED || c == GRPC_STATUS_UNAVAILABLE);
    rpc_stream_free(s);
    assert_int_equal(kvd_stop(d, SIGTERM), 0);
}

static int own_setup(void **state) {
    *state = kvd_new();
    return *state ? 0 : -1;
}

/* Runs even when a test failed: kills the process, removes the temp dir. */
static int own_teardown(void **state) {
    kvd_free(*state);
    return 0;
}

static void test_bad_flags(void **state) {
    (void)state;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s --host-budget 12XB >/dev/null 2>&1", g_bin);
    int rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    snprintf(cmd, sizeof cmd, "%s --help | grep -q -- --host-write-policy", g_bin);
    assert_int_equal(system(cmd), 0);
    /* data dir that cannot be created: exit 1 with a message */
    snprintf(
        cmd, sizeof cmd,
        "%s --listen 127.0.0.1:0 --data-dir /proc/nope/data 2>&1 | grep -q 'cannot open the store'",
        g_bin);
    assert_int_equal(system(cmd), 0);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH_TO_KVTIERD\n", argv[0]);
        return 2;
    }
    g_bin = argv[1];
    const struct CMUnitTest shared[] = {
        cmocka_unit_test(test_health),    cmocka_unit_test(test_open_sequence),
        cmocka_unit_test(test_put_fetch), cmocka_unit_test(test_summarize),
        cmocka_unit_test(test_admin),     cmocka_unit_test(test_malformed_and_unknown),
        cmocka_unit_test(test_metrics),
    };
    const struct CMUnitTest own[] = {
        cmocka_unit_test(test_bad_flags),
        cmocka_unit_test_setup_teardown(test_auth_restart_sigterm, own_setup, own_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_with_open_stream, own_setup, own_teardown),
    };
    int fails = cmocka_run_group_tests_name("kvtierd_shared", shared, setup, teardown);
    fails += cmocka_run_group_tests_name("kvtierd_own", own, NULL, NULL);
    return fails ? 1 : 0;
}
