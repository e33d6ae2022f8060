/* test_rpc.c - the RPC layer over real gRPC on loopback: an in-process server
 * (rpc_server) with handlers for the Tier service and a client (rpc_channel) in
 * the same process, talking through a real TCP port.
 *
 * Handlers (test behaviour, not the service's):
 *   OpenSequence  unary: echoes fields; seq 404 -> NOT_FOUND; seq 999 sleeps 2 s
 *   PutBlocks     client stream: checks payload pattern, acks each block
 *   FetchBlocks   server stream: one 64 KiB block per ref; seq 777 streams until cancelled
 *   Summarize     bidi: one Decisions per SummaryRequest
 *   CloseSequence unary: sleeps 400 ms (in-flight call for graceful shutdown)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>

#include "health.pb-c.h"
#include "kvtier.pb-c.h"
#include "rpc.h"

#define M_OPEN "/kvtier.v1.Tier/OpenSequence"
#define M_PUT "/kvtier.v1.Tier/PutBlocks"
#define M_FETCH "/kvtier.v1.Tier/FetchBlocks"
#define M_SUM "/kvtier.v1.Tier/Summarize"
#define M_CLOSE "/kvtier.v1.Tier/CloseSequence"
#define SERVER_MAX (256u << 10)
#define BLOCK_BYTES (64u << 10)

static atomic_int g_stream_cancel_seen; /* FetchBlocks(777) saw its call end */
static atomic_int g_slow_started;       /* CloseSequence handler entered */
static atomic_int g_sum_blocked;        /* Summarize handler is waiting on read */
static atomic_int g_obs_calls;          /* calls seen by the observer */
static atomic_int g_obs_last_code;      /* code of the last OpenSequence call */

static void observer(const char *method, grpc_status_code code, uint64_t ns, void *user) {
    (void)ns;
    (void)user;
    atomic_fetch_add(&g_obs_calls, 1);
    if (strcmp(method, "/kvtier.v1.Tier/OpenSequence") == 0)
        atomic_store(&g_obs_last_code, code);
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint8_t pattern(uint64_t seq, uint32_t block, size_t i) {
    return (uint8_t)(seq * 31 + block * 7 + i * 13);
}

/* ================================================================ handlers */

static void h_open(rpc_call *c, const ProtobufCMessage *req, void *user) {
    (void)user;
    const Kvtier__V1__OpenSequenceRequest *r = (const Kvtier__V1__OpenSequenceRequest *)req;
    if (r->sequence_id == 404) {
        rpc_call_finish(c, GRPC_STATUS_NOT_FOUND, "sequence %llu unknown",
                        (unsigned long long)r->sequence_id);
        return;
    }
    if (r->sequence_id == 999)
        sleep_ms(2000);
    Kvtier__V1__OpenSequenceResponse resp = KVTIER__V1__OPEN_SEQUENCE_RESPONSE__INIT;
    resp.created = 1;
    resp.blocks_host = r->layers;
    resp.blocks_ssd = rpc_call_tenant(c) ? strlen(rpc_call_tenant(c)) : 0;
    resp.blocks_lost = rpc_call_sequence(c) ? strtoull(rpc_call_sequence(c), NULL, 10) : 0;
    rpc_call_reply(c, &resp.base);
}

static void h_put(rpc_call *c, const ProtobufCMessage *req, void *user) {
    (void)req;
    (void)user;
    Kvtier__V1__BlockAck acks[64];
    Kvtier__V1__BlockAck *ackp[64];
    size_t n = 0;
    Kvtier__V1__Block *b;
    int r;
    while ((r = rpc_call_read(c, &kvtier__v1__block__descriptor, (ProtobufCMessage **)&b)) == 1) {
        int bad = !b->key;
        for (size_t i = 0; !bad && i < b->payload.len; i++)
            if (b->payload.data[i] != pattern(b->key->sequence_id, b->key->block, i))
                bad = 1;
        if (!bad && n < 64) {
            kvtier__v1__block_ack__init(&acks[n]);
            acks[n].layer = b->key->layer;
            acks[n].block = b->key->block;
            acks[n].tier = KVTIER__V1__TIER_KIND__TIER_HOST;
            ackp[n] = &acks[n];
            n++;
        }
        protobuf_c_message_free_unpacked(&b->base, NULL);
        if (bad) {
            rpc_call_finish(c, GRPC_STATUS_DATA_LOSS, "payload mismatch");
            return;
        }
    }
    if (r < 0)
        return;
    Kvtier__V1__PutResponse resp = KVTIER__V1__PUT_RESPONSE__INIT;
    resp.acked = (uint32_t)n;
    resp.n_blocks = n;
    resp.blocks = ackp;
    rpc_call_reply(c, &resp.base);
}

static void h_fetch(rpc_call *c, const ProtobufCMessage *req, void *user) {
    (void)user;
    const Kvtier__V1__FetchRequest *r = (const Kvtier__V1__FetchRequest *)req;
    if (r->sequence_id == 404) {
        rpc_call_finish(c, GRPC_STATUS_NOT_FOUND, "no blocks for sequence 404");
        return;
    }
    uint8_t *buf = malloc(BLOCK_BYTES);
    Kvtier__V1__BlockKey key = KVTIER__V1__BLOCK_KEY__INIT;
    Kvtier__V1__Block b = KVTIER__V1__BLOCK__INIT;
    b.key = &key;
    key.sequence_id = r->sequence_id;
    b.payload.data = buf;
    b.payload.len = BLOCK_BYTES;
    size_t count = r->sequence_id == 777 ? SIZE_MAX : r->n_blocks;
    for (size_t i = 0; i < count; i++) {
        uint32_t blk = r->sequence_id == 777 ? (uint32_t)i : r->blocks[i]->block;
        key.layer = r->sequence_id == 777 ? 0 : r->blocks[i]->layer;
        key.block = blk;
        for (size_t j = 0; j < BLOCK_BYTES; j++)
            buf[j] = pattern(r->sequence_id, blk, j);
        if (rpc_call_write(c, &b.base) != 0) {
            if (r->sequence_id == 777)
                atomic_store(&g_stream_cancel_seen, 1);
            free(buf);
            return;
        }
        if (r->sequence_id == 777)
            sleep_ms(5);
    }
    free(buf);
    rpc_call_finish(c, GRPC_STATUS_OK, NULL);
}

static void h_sum(rpc_call *c, const ProtobufCMessage *req, void *user) {
    (void)req;
    (void)user;
    Kvtier__V1__SummaryRequest *s;
    int r;
    atomic_store(&g_sum_blocked, 1);
    while ((r = rpc_call_read(c, &kvtier__v1__summary_request__descriptor,
                              (ProtobufCMessage **)&s)) == 1) {
        Kvtier__V1__Decisions d = KVTIER__V1__DECISIONS__INIT;
        Kvtier__V1__BlockDecision bd[16], *bdp[16];
        size_t n = 0;
        for (size_t l = 0; l < s->n_layers && n < 16; l++)
            for (size_t a = 0; a < s->layers[l]->n_active && n < 16; a++) {
                kvtier__v1__block_decision__init(&bd[n]);
                bd[n].layer = s->layers[l]->layer;
                bd[n].block = s->layers[l]->active[a]->block;
                bd[n].decision = KVTIER__V1__DECISION_KIND__DECISION_KEEP_HOT;
                bdp[n] = &bd[n];
                n++;
            }
        d.sequence_id = s->sequence_id;
        d.step = s->step;
        d.n_decisions = n;
        d.decisions = bdp;
        protobuf_c_message_free_unpacked(&s->base, NULL);
        if (rpc_call_write(c, &d.base) != 0)
            return;
    }
    if (r == 0)
        rpc_call_finish(c, GRPC_STATUS_OK, NULL);
}

static void h_close(rpc_call *c, const ProtobufCMessage *req, void *user) {
    (void)user;
    atomic_store(&g_slow_started, 1);
    sleep_ms(400);
    Kvtier__V1__CloseSequenceResponse resp = KVTIER__V1__CLOSE_SEQUENCE_RESPONSE__INIT;
    resp.blocks_dropped = ((const Kvtier__V1__CloseSequenceRequest *)req)->sequence_id;
    rpc_call_reply(c, &resp.base);
}

/* ================================================================ fixture */

typedef struct {
    rpc_server *srv;
    rpc_channel *ch;
    char addr[64];
} fixture;

static rpc_server *start_server(const char *token, int *port) {
    char err[256];
    rpc_server *srv = rpc_server_new("127.0.0.1:0", 2, SERVER_MAX, err, sizeof err);
    assert_non_null(srv);
    if (token)
        assert_int_equal(rpc_server_set_auth_token(srv, token), 0);
    const ProtobufCServiceDescriptor *t = &kvtier__v1__tier__descriptor;
    assert_int_equal(rpc_server_register_service(srv, t, "OpenSequence", h_open, NULL), 0);
    assert_int_equal(rpc_server_register_service(srv, t, "PutBlocks", h_put, NULL), 0);
    assert_int_equal(rpc_server_register_service(srv, t, "FetchBlocks", h_fetch, NULL), 0);
    assert_int_equal(rpc_server_register_service(srv, t, "Summarize", h_sum, NULL), 0);
    assert_int_equal(rpc_server_register_service(srv, t, "CloseSequence", h_close, NULL), 0);
    /* duplicate and unknown registrations are refused */
    assert_int_equal(rpc_server_register_service(srv, t, "OpenSequence", h_open, NULL), -1);
    assert_int_equal(rpc_server_register_service(srv, t, "NoSuchMethod", h_open, NULL), -1);
    assert_int_equal(rpc_server_set_observer(srv, observer, NULL), 0);
    assert_int_equal(rpc_server_start(srv), 0);
    assert_int_equal(rpc_server_set_observer(srv, observer, NULL), -1); /* after start */
    *port = rpc_server_port(srv);
    assert_true(*port > 0);
    return srv;
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    int port;
    f->srv = start_server(NULL, &port);
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d", port);
    f->ch = rpc_channel_new(f->addr, 8u << 20);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    rpc_channel_free(f->ch);
    rpc_server_free(f->srv);
    free(f);
    return 0;
}

static grpc_status_code open_seq(rpc_channel *ch, uint64_t seq, const rpc_opts *o,
                                 Kvtier__V1__OpenSequenceResponse **out, rpc_status *st) {
    Kvtier__V1__OpenSequenceRequest req = KVTIER__V1__OPEN_SEQUENCE_REQUEST__INIT;
    req.sequence_id = seq;
    req.layers = 36;
    return rpc_unary(ch, M_OPEN, o, &req.base, &kvtier__v1__open_sequence_response__descriptor,
                     (ProtobufCMessage **)out, st);
}

/* ================================================================ tests */

static void test_unary_and_metadata(void **state) {
    fixture *f = *state;
    rpc_opts o = {.tenant = "acme", .sequence = "4242", .timeout_ms = 5000};
    Kvtier__V1__OpenSequenceResponse *resp = NULL;
    rpc_status st;
    int before = atomic_load(&g_obs_calls);
    assert_int_equal(open_seq(f->ch, 1, &o, &resp, &st), GRPC_STATUS_OK);
    for (int i = 0; i < 200 && atomic_load(&g_obs_calls) == before; i++)
        sleep_ms(5);
    assert_int_equal(atomic_load(&g_obs_calls), before + 1);
    assert_int_equal(atomic_load(&g_obs_last_code), GRPC_STATUS_OK);
    assert_non_null(resp);
    assert_true(resp->created);
    assert_int_equal(resp->blocks_host, 36);
    assert_int_equal(resp->blocks_ssd, 4);     /* strlen("acme") */
    assert_int_equal(resp->blocks_lost, 4242); /* x-kvtier-sequence */
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void test_unary_error_status(void **state) {
    fixture *f = *state;
    Kvtier__V1__OpenSequenceResponse *resp = NULL;
    rpc_status st;
    assert_int_equal(open_seq(f->ch, 404, NULL, &resp, &st), GRPC_STATUS_NOT_FOUND);
    assert_null(resp);
    assert_int_equal(st.code, GRPC_STATUS_NOT_FOUND);
    assert_string_equal(st.message, "sequence 404 unknown");
    assert_string_equal(rpc_status_name(st.code), "NOT_FOUND");
    /* the observer runs after the call ended, possibly just after the reply */
    for (int i = 0; i < 200 && atomic_load(&g_obs_last_code) != GRPC_STATUS_NOT_FOUND; i++)
        sleep_ms(5);
    assert_int_equal(atomic_load(&g_obs_last_code), GRPC_STATUS_NOT_FOUND);
}

static void put_block(rpc_stream *s, uint64_t seq, uint32_t layer, uint32_t blk, size_t len,
                      int corrupt) {
    uint8_t *buf = malloc(len);
    for (size_t i = 0; i < len; i++)
        buf[i] = pattern(seq, blk, i);
    if (corrupt)
        buf[len / 2] ^= 0xff;
    Kvtier__V1__BlockKey key = KVTIER__V1__BLOCK_KEY__INIT;
    key.sequence_id = seq;
    key.layer = layer;
    key.block = blk;
    Kvtier__V1__Block b = KVTIER__V1__BLOCK__INIT;
    b.key = &key;
    b.payload.data = buf;
    b.payload.len = len;
    rpc_stream_write(s, &b.base); /* failures show up in the final status */
    free(buf);
}

static void test_client_stream(void **state) {
    fixture *f = *state;
    rpc_status st;
    rpc_stream *s = rpc_stream_open(f->ch, M_PUT, NULL, &st);
    assert_non_null(s);
    for (uint32_t i = 0; i < 5; i++)
        put_block(s, 9, 2, i, i == 4 ? 200000 : BLOCK_BYTES, 0);
    Kvtier__V1__PutResponse *resp = NULL;
    assert_int_equal(rpc_stream_close_and_recv(s, &kvtier__v1__put_response__descriptor,
                                               (ProtobufCMessage **)&resp, &st),
                     GRPC_STATUS_OK);
    assert_int_equal(resp->acked, 5);
    assert_int_equal(resp->n_blocks, 5);
    assert_int_equal(resp->blocks[4]->block, 4);
    assert_int_equal(resp->blocks[4]->layer, 2);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    rpc_stream_free(s);

    /* a corrupt payload is reported by the handler's status */
    s = rpc_stream_open(f->ch, M_PUT, NULL, &st);
    put_block(s, 9, 0, 0, BLOCK_BYTES, 1);
    assert_int_equal(rpc_stream_close_and_recv(s, &kvtier__v1__put_response__descriptor,
                                               (ProtobufCMessage **)&resp, &st),
                     GRPC_STATUS_DATA_LOSS);
    assert_null(resp);
    rpc_stream_free(s);
}

static void test_server_stream(void **state) {
    fixture *f = *state;
    Kvtier__V1__FetchRequest req = KVTIER__V1__FETCH_REQUEST__INIT;
    Kvtier__V1__BlockRef refs[10], *refp[10];
    for (int i = 0; i < 10; i++) {
        kvtier__v1__block_ref__init(&refs[i]);
        refs[i].layer = 3;
        refs[i].block = (uint32_t)(100 + i);
        refp[i] = &refs[i];
    }
    req.sequence_id = 5;
    req.n_blocks = 10;
    req.blocks = refp;
    rpc_status st;
    rpc_stream *s = rpc_stream_open(f->ch, M_FETCH, NULL, &st);
    assert_int_equal(rpc_stream_write(s, &req.base), 0);
    assert_int_equal(rpc_stream_close_send(s), 0);
    Kvtier__V1__Block *b;
    int n = 0, r;
    while ((r = rpc_stream_read(s, &kvtier__v1__block__descriptor, (ProtobufCMessage **)&b)) == 1) {
        assert_int_equal(b->key->block, 100 + n);
        assert_int_equal(b->payload.len, BLOCK_BYTES);
        for (size_t j = 0; j < BLOCK_BYTES; j += 997)
            assert_int_equal(b->payload.data[j], pattern(5, b->key->block, j));
        protobuf_c_message_free_unpacked(&b->base, NULL);
        n++;
    }
    assert_int_equal(r, 0);
    assert_int_equal(n, 10);
    assert_int_equal(rpc_stream_finish(s, &st), GRPC_STATUS_OK);
    rpc_stream_free(s);

    /* a stream that ends with an error status: read gives -1, finish the code */
    req.sequence_id = 404;
    s = rpc_stream_open(f->ch, M_FETCH, NULL, &st);
    assert_int_equal(rpc_stream_write(s, &req.base), 0);
    r = rpc_stream_read(s, &kvtier__v1__block__descriptor, (ProtobufCMessage **)&b);
    assert_int_equal(r, -1);
    assert_int_equal(rpc_stream_finish(s, &st), GRPC_STATUS_NOT_FOUND);
    assert_string_equal(st.message, "no blocks for sequence 404");
    rpc_stream_free(s);
}

static void test_bidi(void **state) {
    fixture *f = *state;
    rpc_status st;
    rpc_stream *s = rpc_stream_open(f->ch, M_SUM, NULL, &st);
    for (uint64_t step = 16; step <= 320; step += 16) {
        Kvtier__V1__ActiveBlock ab = KVTIER__V1__ACTIVE_BLOCK__INIT, *abp = &ab;
        ab.block = (uint32_t)step / 16;
        ab.peak_mass = 0.5f;
        Kvtier__V1__LayerSummary ls = KVTIER__V1__LAYER_SUMMARY__INIT, *lsp = &ls;
        ls.layer = 7;
        ls.n_active = 1;
        ls.active = &abp;
        Kvtier__V1__SummaryRequest req = KVTIER__V1__SUMMARY_REQUEST__INIT;
        req.sequence_id = 11;
        req.step = step;
        req.n_layers = 1;
        req.layers = &lsp;
        assert_int_equal(rpc_stream_write(s, &req.base), 0);
        Kvtier__V1__Decisions *d;
        assert_int_equal(
            rpc_stream_read(s, &kvtier__v1__decisions__descriptor, (ProtobufCMessage **)&d), 1);
        assert_int_equal(d->step, step);
        assert_int_equal(d->n_decisions, 1);
        assert_int_equal(d->decisions[0]->layer, 7);
        assert_int_equal(d->decisions[0]->block, step / 16);
        assert_int_equal(d->decisions[0]->decision, KVTIER__V1__DECISION_KIND__DECISION_KEEP_HOT);
        protobuf_c_message_free_unpacked(&d->base, NULL);
    }
    assert_int_equal(rpc_stream_finish(s, &st), GRPC_STATUS_OK);
    rpc_stream_free(s);
}

static void test_deadline_exceeded(void **state) {
    fixture *f = *state;
    rpc_opts o = {.timeout_ms = 200};
    Kvtier__V1__OpenSequenceResponse *resp = NULL;
    rpc_status st;
    assert_int_equal(open_seq(f->ch, 999, &o, &resp, &st), GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_null(resp);
}

static void test_unknown_method(void **state) {
    fixture *f = *state;
    Kvtier__V1__HealthRequest req = KVTIER__V1__HEALTH_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    rpc_status st;
    /* in the proto but not served here, and not in any proto */
    assert_int_equal(rpc_unary(f->ch, "/kvtier.v1.Admin/Health", NULL, &req.base,
                               &kvtier__v1__health_response__descriptor, &resp, &st),
                     GRPC_STATUS_UNIMPLEMENTED);
    assert_non_null(strstr(st.message, "/kvtier.v1.Admin/Health"));
    assert_int_equal(rpc_unary(f->ch, "/nope.Svc/Nothing", NULL, &req.base,
                               &kvtier__v1__health_response__descriptor, &resp, &st),
                     GRPC_STATUS_UNIMPLEMENTED);
    assert_null(resp);
}

static void test_oversize(void **state) {
    fixture *f = *state;
    /* beyond the server's 256 KiB limit: the transport refuses it */
    rpc_status st;
    rpc_stream *s = rpc_stream_open(f->ch, M_PUT, NULL, &st);
    put_block(s, 1, 0, 0, 1u << 20, 0);
    ProtobufCMessage *resp = NULL;
    assert_int_equal(
        rpc_stream_close_and_recv(s, &kvtier__v1__put_response__descriptor, &resp, &st),
        GRPC_STATUS_RESOURCE_EXHAUSTED);
    rpc_stream_free(s);
    /* beyond the client's own limit: refused before sending */
    rpc_channel *small = rpc_channel_new(f->addr, 1024);
    Kvtier__V1__OpenSequenceRequest req = KVTIER__V1__OPEN_SEQUENCE_REQUEST__INIT;
    Kvtier__V1__PolicyParams pp = KVTIER__V1__POLICY_PARAMS__INIT;
    uint32_t budgets[1000];
    for (int i = 0; i < 1000; i++)
        budgets[i] = 100000u + (uint32_t)i;
    pp.n_layer_hot_budget_blocks = 1000;
    pp.layer_hot_budget_blocks = budgets;
    req.params = &pp;
    req.sequence_id = 1;
    assert_int_equal(rpc_unary(small, M_OPEN, NULL, &req.base,
                               &kvtier__v1__open_sequence_response__descriptor, &resp, &st),
                     GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(st.message, "exceeds"));
    rpc_channel_free(small);
    /* the server is fine afterwards */
    Kvtier__V1__OpenSequenceResponse *ok = NULL;
    assert_int_equal(open_seq(f->ch, 2, NULL, &ok, &st), GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(&ok->base, NULL);
}

static void test_malformed_payload(void **state) {
    fixture *f = *state;
    /* 0xff... is an invalid varint tag: protobuf-c cannot unpack it */
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                               0xff, 0xff, 0xff, 0xff, 0x01, 0x02};
    rpc_status st;
    void *rb = NULL;
    size_t rl = 0;
    assert_int_equal(rpc_unary_raw(f->ch, M_OPEN, NULL, garbage, sizeof garbage, &rb, &rl, &st),
                     GRPC_STATUS_INVALID_ARGUMENT);
    assert_null(rb);
    assert_non_null(strstr(st.message, "malformed"));
    assert_non_null(strstr(st.message, "kvtier.v1.OpenSequenceRequest"));
    /* the same inside a client stream */
    rpc_stream *s = rpc_stream_open(f->ch, M_PUT, NULL, &st);
    put_block(s, 9, 0, 0, 100, 0);
    rpc_stream_write_raw(s, garbage, sizeof garbage);
    ProtobufCMessage *resp = NULL;
    assert_int_equal(
        rpc_stream_close_and_recv(s, &kvtier__v1__put_response__descriptor, &resp, &st),
        GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "kvtier.v1.Block"));
    rpc_stream_free(s);
    /* a valid raw request still works and the bytes come back undecoded */
    Kvtier__V1__OpenSequenceRequest req = KVTIER__V1__OPEN_SEQUENCE_REQUEST__INIT;
    req.sequence_id = 3;
    req.layers = 2;
    uint8_t buf[64];
    size_t n = protobuf_c_message_pack(&req.base, buf);
    assert_int_equal(rpc_unary_raw(f->ch, M_OPEN, NULL, buf, n, &rb, &rl, &st), GRPC_STATUS_OK);
    assert_non_null(rb);
    Kvtier__V1__OpenSequenceResponse *resp2 =
        kvtier__v1__open_sequence_response__unpack(NULL, rl, rb);
    assert_non_null(resp2);
    assert_int_equal(resp2->blocks_host, 2);
    kvtier__v1__open_sequence_response__free_unpacked(resp2, NULL);
    free(rb);
    /* a response that does not decode as the expected type -> INTERNAL */
    ProtobufCMessage *wrong = NULL;
    Kvtier__V1__FetchRequest freq = KVTIER__V1__FETCH_REQUEST__INIT;
    freq.sequence_id = 5;
    Kvtier__V1__BlockRef ref = KVTIER__V1__BLOCK_REF__INIT, *refp = &ref;
    freq.n_blocks = 1;
    freq.blocks = &refp;
    s = rpc_stream_open(f->ch, M_FETCH, NULL, &st);
    assert_int_equal(rpc_stream_write(s, &freq.base), 0);
    /* Block payload bytes as a Decisions message: field 2 (payload) has wire type 2
     * where Decisions.step wants a varint -> protobuf-c refuses it */
    int r = rpc_stream_read(s, &kvtier__v1__decisions__descriptor, &wrong);
    assert_int_equal(r, -1);
    assert_int_equal(rpc_stream_finish(s, &st), GRPC_STATUS_INTERNAL);
    assert_non_null(strstr(st.message, "malformed response"));
    rpc_stream_free(s);
}

static void test_cancel_mid_stream(void **state) {
    fixture *f = *state;
    atomic_store(&g_stream_cancel_seen, 0);
    Kvtier__V1__FetchRequest req = KVTIER__V1__FETCH_REQUEST__INIT;
    req.sequence_id = 777; /* endless */
    rpc_status st;
    rpc_stream *s = rpc_stream_open(f->ch, M_FETCH, NULL, &st);
    assert_int_equal(rpc_stream_write(s, &req.base), 0);
    for (int i = 0; i < 3; i++) {
        Kvtier__V1__Block *b;
        assert_int_equal(
            rpc_stream_read(s, &kvtier__v1__block__descriptor, (ProtobufCMessage **)&b), 1);
        protobuf_c_message_free_unpacked(&b->base, NULL);
    }
    rpc_stream_cancel(s);
    assert_int_equal(rpc_stream_finish(s, &st), GRPC_STATUS_CANCELLED);
    rpc_stream_free(s);
    /* the handler notices and returns; the server keeps serving */
    for (int i = 0; i < 500 && !atomic_load(&g_stream_cancel_seen); i++)
        sleep_ms(10);
    assert_true(atomic_load(&g_stream_cancel_seen));
    for (int i = 0; i < 500 && rpc_server_inflight(f->srv) > 0; i++)
        sleep_ms(10);
    assert_int_equal(rpc_server_inflight(f->srv), 0);
    Kvtier__V1__OpenSequenceResponse *resp = NULL;
    assert_int_equal(open_seq(f->ch, 8, NULL, &resp, &st), GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}

typedef struct {
    rpc_channel *ch;
    int id;
    int failures;
} stress_arg;

/* One client thread: unary calls interleaved with a bidi and a server stream. */
static void *stress_thread(void *p) {
    stress_arg *a = p;
    for (int i = 0; i < 30; i++) {
        Kvtier__V1__OpenSequenceResponse *resp = NULL;
        rpc_status st;
        rpc_opts o = {.tenant = "t", .timeout_ms = 10000};
        if (open_seq(a->ch, (uint64_t)(1000 + a->id * 100 + i), &o, &resp, &st) != GRPC_STATUS_OK ||
            resp->blocks_host != 36)
            a->failures++;
        if (resp)
            protobuf_c_message_free_unpacked(&resp->base, NULL);
        if (i % 10 == 0) {
            rpc_stream *s = rpc_stream_open(a->ch, M_SUM, &o, &st);
            for (uint64_t step = 1; step <= 5; step++) {
                Kvtier__V1__SummaryRequest req = KVTIER__V1__SUMMARY_REQUEST__INIT;
                req.step = step;
                ProtobufCMessage *d = NULL;
                Kvtier__V1__Decisions *dd;
                if (rpc_stream_write(s, &req.base) != 0 ||
                    rpc_stream_read(s, &kvtier__v1__decisions__descriptor, &d) != 1) {
                    a->failures++;
                    break;
                }
                dd = (Kvtier__V1__Decisions *)d;
                if (dd->step != step)
                    a->failures++;
                protobuf_c_message_free_unpacked(d, NULL);
            }
            if (rpc_stream_finish(s, &st) != GRPC_STATUS_OK)
                a->failures++;
            rpc_stream_free(s);
        }
    }
    return NULL;
}

static void test_concurrent_clients(void **state) {
    fixture *f = *state;
    pthread_t t[6];
    stress_arg a[6];
    for (int i = 0; i < 6; i++) {
        a[i] = (stress_arg){f->ch, i, 0};
        pthread_create(&t[i], NULL, stress_thread, &a[i]);
    }
    int failures = 0;
    for (int i = 0; i < 6; i++) {
        pthread_join(t[i], NULL);
        failures += a[i].failures;
    }
    assert_int_equal(failures, 0);
}

static void test_auth(void **state) {
    (void)state;
    int port;
    rpc_server *srv = start_server("s3cret", &port);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    rpc_channel *ch = rpc_channel_new(addr, 0);
    Kvtier__V1__OpenSequenceResponse *resp = NULL;
    rpc_status st;
    assert_int_equal(open_seq(ch, 1, NULL, &resp, &st), GRPC_STATUS_UNAUTHENTICATED);
    rpc_opts wrong = {.auth = "Bearer nope"};
    assert_int_equal(open_seq(ch, 1, &wrong, &resp, &st), GRPC_STATUS_UNAUTHENTICATED);
    rpc_opts right = {.auth = "Bearer s3cret"};
    assert_int_equal(open_seq(ch, 1, &right, &resp, &st), GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    rpc_channel_free(ch);
    rpc_server_free(srv);
}

typedef struct {
    rpc_channel *ch;
    grpc_status_code code;
    uint64_t dropped;
} slow_arg;

static void *slow_call(void *p) {
    slow_arg *a = p;
    Kvtier__V1__CloseSequenceRequest req = KVTIER__V1__CLOSE_SEQUENCE_REQUEST__INIT;
    req.sequence_id = 31;
    Kvtier__V1__CloseSequenceResponse *resp = NULL;
    rpc_status st;
    a->code =
        rpc_unary(a->ch, M_CLOSE, NULL, &req.base, &kvtier__v1__close_sequence_response__descriptor,
                  (ProtobufCMessage **)&resp, &st);
    if (resp) {
        a->dropped = resp->blocks_dropped;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    return NULL;
}

static void test_graceful_shutdown(void **state) {
    (void)state;
    int port;
    rpc_server *srv = start_server(NULL, &port);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    rpc_channel *ch = rpc_channel_new(addr, 0);
    atomic_store(&g_slow_started, 0);
    slow_arg a = {ch, GRPC_STATUS_UNKNOWN, 0};
    pthread_t t;
    pthread_create(&t, NULL, slow_call, &a);
    for (int i = 0; i < 500 && !atomic_load(&g_slow_started); i++)
        sleep_ms(10);
    assert_true(atomic_load(&g_slow_started));
    rpc_server_shutdown(srv, 5000); /* the in-flight call (400 ms) completes */
    pthread_join(t, NULL);
    assert_int_equal(a.code, GRPC_STATUS_OK);
    assert_int_equal(a.dropped, 31);
    /* no longer serving */
    Kvtier__V1__OpenSequenceResponse *resp = NULL;
    rpc_status st;
    rpc_opts o = {.timeout_ms = 2000};
    assert_int_equal(open_seq(ch, 1, &o, &resp, &st), GRPC_STATUS_UNAVAILABLE);
    rpc_channel_free(ch);
    rpc_server_free(srv);
}

static void test_shutdown_cancels_after_grace(void **state) {
    (void)state;
    int port;
    rpc_server *srv = start_server(NULL, &port);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    rpc_channel *ch = rpc_channel_new(addr, 0);
    atomic_store(&g_sum_blocked, 0);
    rpc_status st;
    rpc_stream *s = rpc_stream_open(ch, M_SUM, NULL, &st);
    Kvtier__V1__SummaryRequest req = KVTIER__V1__SUMMARY_REQUEST__INIT;
    req.step = 1;
    assert_int_equal(rpc_stream_write(s, &req.base), 0);
    ProtobufCMessage *d;
    assert_int_equal(rpc_stream_read(s, &kvtier__v1__decisions__descriptor, &d), 1);
    protobuf_c_message_free_unpacked(d, NULL);
    assert_true(atomic_load(&g_sum_blocked));
    /* the stream stays open: shutdown must cancel it after the grace period */
    rpc_server_shutdown(srv, 200);
    assert_int_equal(rpc_server_inflight(srv), 0);
    grpc_status_code code = rpc_stream_finish(s, &st);
    assert_true(code == GRPC_STATUS_CANCELLED || code == GRPC_STATUS_UNAVAILABLE);
    rpc_stream_free(s);
    rpc_channel_free(ch);
    rpc_server_free(srv);
}

static void test_method_kinds(void **state) {
    (void)state;
    assert_int_equal(rpc_method_kind("/kvtier.v1.Tier/OpenSequence"), RPC_UNARY);
    assert_int_equal(rpc_method_kind("/kvtier.v1.Tier/PutBlocks"), RPC_CLIENT_STREAM);
    assert_int_equal(rpc_method_kind("/kvtier.v1.Tier/FetchBlocks"), RPC_SERVER_STREAM);
    assert_int_equal(rpc_method_kind("/kvtier.v1.Tier/Summarize"), RPC_BIDI);
    assert_int_equal(rpc_method_kind("/kvtier.v1.Inference/Generate"), RPC_SERVER_STREAM);
    assert_int_equal(rpc_method_kind("/kvtier.v1.Admin/Health"), RPC_UNARY);
    assert_int_equal(rpc_method_kind("/kvtier.v1.Admin/Nope"), -1);
    /* every method protoc-c knows is in the table */
    const ProtobufCServiceDescriptor *svcs[] = {
        &kvtier__v1__inference__descriptor, &kvtier__v1__tier__descriptor,
        &kvtier__v1__admin__descriptor, &grpc__health__v1__health__descriptor};
    for (size_t i = 0; i < 4; i++)
        for (unsigned m = 0; m < svcs[i]->n_methods; m++) {
            char name[256];
            snprintf(name, sizeof name, "/%s/%s", svcs[i]->name, svcs[i]->methods[m].name);
            assert_true(rpc_method_kind(name) >= 0);
        }
}

static void test_unreachable(void **state) {
    (void)state;
    /* bind a port, close it: nobody listens there */
    char err[256];
    rpc_server *tmp = rpc_server_new("127.0.0.1:0", 1, 0, err, sizeof err);
    int port = rpc_server_port(tmp);
    rpc_server_free(tmp);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    rpc_channel *ch = rpc_channel_new(addr, 0);
    Kvtier__V1__OpenSequenceResponse *resp = NULL;
    rpc_status st;
    rpc_opts o = {.timeout_ms = 5000};
    assert_int_equal(open_seq(ch, 1, &o, &resp, &st), GRPC_STATUS_UNAVAILABLE);
    rpc_stream *s = rpc_stream_open(ch, M_SUM, &o, &st);
    assert_non_null(s);
    Kvtier__V1__SummaryRequest req = KVTIER__V1__SUMMARY_REQUEST__INIT;
    rpc_stream_write(s, &req.base);
    ProtobufCMessage *d = NULL;
    assert_int_equal(rpc_stream_read(s, &kvtier__v1__decisions__descriptor, &d), -1);
    assert_int_equal(rpc_stream_finish(s, &st), GRPC_STATUS_UNAVAILABLE);
    rpc_stream_free(s);
    rpc_channel_free(ch);
}

static void test_bad_listen_address(void **state) {
    (void)state;
    char err[256] = "";
    rpc_server *srv = rpc_server_new("256.1.1.1:notaport", 1, 0, err, sizeof err);
    assert_null(srv);
    assert_non_null(strstr(err, "cannot listen"));
}

int main(void) {
    const struct CMUnitTest shared[] = {
        cmocka_unit_test(test_unary_and_metadata),
        cmocka_unit_test(test_unary_error_status),
        cmocka_unit_test(test_client_stream),
        cmocka_unit_test(test_server_stream),
        cmocka_unit_test(test_bidi),
        cmocka_unit_test(test_deadline_exceeded),
        cmocka_unit_test(test_unknown_method),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_malformed_payload),
        cmocka_unit_test(test_cancel_mid_stream),
        cmocka_unit_test(test_concurrent_clients),
    };
    const struct CMUnitTest own[] = {
        cmocka_unit_test(test_method_kinds),
        cmocka_unit_test(test_bad_listen_address),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_graceful_shutdown),
        cmocka_unit_test(test_shutdown_cancels_after_grace),
    };
    int fails = cmocka_run_group_tests_name("rpc_shared_server", shared, setup, teardown);
    fails += cmocka_run_group_tests_name("rpc_own_server", own, NULL, NULL);
    return fails ? 1 : 0;
}
