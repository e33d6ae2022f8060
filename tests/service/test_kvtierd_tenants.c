/* test_kvtierd_tenants.c - issue 9's identity and tenants, against the real
 * kvtierd binary started with --auth-tokens FILE (alice and bob: tenant
 * tokens; ops: an operator token):
 *   cross_tenant     alice cannot Open/Put/Fetch/Evict/Close/GetTierMap bob's
 *                    sequence: PERMISSION_DENIED when naming bob in the field,
 *                    in x-kvtier-tenant or both; without naming him she only
 *                    reaches her own namespace (NOT_FOUND); bob's blocks are
 *                    unchanged; the operator inspects and fetches bob's;
 *   listing_admin    ListSequences of a tenant token shows its own only (naming
 *                    another: PERMISSION_DENIED), the operator's all; GetStats
 *                    of a tenant counts its own sequences; Drain with a tenant
 *                    token PERMISSION_DENIED, with the operator's OK; Health
 *                    (Admin and grpc.health.v1) answers without a token;
 *   unauthenticated  no token, a wrong one, an empty Bearer: UNAUTHENTICATED;
 *                    the bare token (no "Bearer ") works;
 *   sighup_reload    SIGHUP after adding carol and removing alice: carol works,
 *                    alice is UNAUTHENTICATED; a malformed file on SIGHUP keeps
 *                    the old table (logged with its line number); no token is
 *                    ever in the log;
 *   bad_files        malformed lines (bad role, duplicate token, short token,
 *                    bad tenant, two fields), a missing file, --auth-tokens with
 *                    --auth-token: refused at start, the line named; a
 *                    world-readable file starts with a warning.
 *
 * argv[1] = path of the kvtierd binary (from CMake). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "health.pb-c.h"
#include "kvtier.pb-c.h"
#include "kvtierd_proc.h"
#include "rpc.h"
#include "tier.h"

static const char *g_bin;

#define T_OPEN "/kvtier.v1.Tier/OpenSequence"
#define T_PUT "/kvtier.v1.Tier/PutBlocks"
#define T_FETCH "/kvtier.v1.Tier/FetchBlocks"
#define T_CLOSE "/kvtier.v1.Tier/CloseSequence"
#define A_LIST "/kvtier.v1.Admin/ListSequences"
#define A_MAP "/kvtier.v1.Admin/GetTierMap"
#define A_STATS "/kvtier.v1.Admin/GetStats"
#define A_EVICT "/kvtier.v1.Admin/Evict"
#define A_DRAIN "/kvtier.v1.Admin/Drain"
#define A_HEALTH "/kvtier.v1.Admin/Health"
#define H_CHECK "/grpc.health.v1.Health/Check"

#define LAYERS 2
#define BLOCK_BYTES 512 /* 16 tokens x 1 kv head x 8 x 2 (K,V) x 2 bytes */

#define TOK_ALICE "tok-alice-0123456789"
#define TOK_BOB "tok-bob-0123456789ab"
#define TOK_OPS "tok-ops-0123456789ab"
#define TOK_CAROL "tok-carol-0123456789"

static const char k_tokens[] = "# kvtierd tokens: TOKEN TENANT ROLE\n"
                               "\n" TOK_ALICE " alice tenant\n" TOK_BOB
                               "\tbob tenant   # bob's worker\n" TOK_OPS " ops operator\n";

/* ================================================================ helpers */

/* Who calls: the token (NULL = none) and the x-kvtier-tenant header (NULL = none). */
typedef struct {
    const char *tok, *md;
} who;

static rpc_opts opts_of(who w, char *buf, size_t len) {
    rpc_opts o = {.tenant = w.md, .timeout_ms = 10000};
    if (w.tok) {
        snprintf(buf, len, "Bearer %s", w.tok);
        o.auth = buf;
    }
    return o;
}

static void write_file(const char *path, const char *text, mode_t mode) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

/* Starts d with --auth-tokens DIR/tokens holding text (mode 0600). */
static int start_with(kvd_proc *d, const char *text, char *path, size_t len) {
    snprintf(path, len, "%s/tokens", d->dir);
    write_file(path, text, 0600);
    const char *extra[] = {"--auth-tokens", path, NULL};
    return kvd_start(d, g_bin, extra);
}

static int setup(void **state) {
    kvd_proc *d = kvd_new();
    assert_non_null(d);
    char path[300];
    if (start_with(d, k_tokens, path, sizeof path) != 0) {
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

static grpc_status_code unary(rpc_channel *ch, const char *method, who w,
                              const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rd,
                              ProtobufCMessage **resp, rpc_status *st) {
    char auth[128];
    rpc_opts o = opts_of(w, auth, sizeof auth);
    ProtobufCMessage *r = NULL;
    grpc_status_code c = rpc_unary(ch, method, &o, req, rd, &r, st);
    if (resp)
        *resp = r;
    else if (r)
        protobuf_c_message_free_unpacked(r, NULL);
    return c;
}

static grpc_status_code open_seq(rpc_channel *ch, who w, const char *tenant, uint64_t seq,
                                 rpc_status *st) {
    Kvtier__V1__OpenSequenceRequest r = KVTIER__V1__OPEN_SEQUENCE_REQUEST__INIT;
    r.tenant = (char *)(tenant ? tenant : "");
    r.sequence_id = seq;
    r.layers = LAYERS;
    r.kv_heads = 1;
    r.head_dim = 8;
    r.block_tokens = 16;
    r.block_bytes = BLOCK_BYTES;
    return unary(ch, T_OPEN, w, &r.base, &kvtier__v1__open_sequence_response__descriptor, NULL, st);
}

static void fill(uint8_t *buf, uint64_t seq, uint32_t layer, uint32_t block, uint8_t version) {
    for (size_t i = 0; i < BLOCK_BYTES; i++)
        buf[i] = (uint8_t)(seq * 131 + layer * 31 + block * 7 + i + version);
}

/* Puts block (layer, 0) of every layer of seq in one stream, payload version v. */
static grpc_status_code put_seq(rpc_channel *ch, who w, const char *tenant, uint64_t seq, uint8_t v,
                                rpc_status *st) {
    char auth[128];
    rpc_opts o = opts_of(w, auth, sizeof auth);
    rpc_stream *s = rpc_stream_open(ch, T_PUT, &o, st);
    assert_non_null(s);
    for (uint32_t l = 0; l < LAYERS; l++) {
        uint8_t buf[BLOCK_BYTES];
        fill(buf, seq, l, 0, v);
        Kvtier__V1__BlockKey key = KVTIER__V1__BLOCK_KEY__INIT;
        key.tenant = (char *)(tenant ? tenant : "");
        key.sequence_id = seq;
        key.layer = l;
        Kvtier__V1__Block b = KVTIER__V1__BLOCK__INIT;
        b.key = &key;
        b.payload.data = buf;
        b.payload.len = BLOCK_BYTES;
        b.crc32c = tier_crc32c(0, buf, BLOCK_BYTES);
        b.token_count = 16;
        if (rpc_stream_write(s, &b.base) != 0)
            break;
    }
    Kvtier__V1__PutResponse *resp = NULL;
    grpc_status_code c = rpc_stream_close_and_recv(s, &kvtier__v1__put_response__descriptor,
                                                   (ProtobufCMessage **)&resp, st);
    rpc_stream_free(s);
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return c;
}

/* Fetches block (layer, 0) of every layer; *ok_payloads counts the payloads
 * equal to version v. */
static grpc_status_code fetch_seq(rpc_channel *ch, who w, const char *tenant, uint64_t seq,
                                  uint8_t v, int *ok_payloads, rpc_status *st) {
    char auth[128];
    rpc_opts o = opts_of(w, auth, sizeof auth);
    Kvtier__V1__BlockRef br[LAYERS], *bp[LAYERS];
    for (uint32_t l = 0; l < LAYERS; l++) {
        kvtier__v1__block_ref__init(&br[l]);
        br[l].layer = l;
        bp[l] = &br[l];
    }
    Kvtier__V1__FetchRequest r = KVTIER__V1__FETCH_REQUEST__INIT;
    r.tenant = (char *)(tenant ? tenant : "");
    r.sequence_id = seq;
    r.n_blocks = LAYERS;
    r.blocks = bp;
    rpc_stream *s = rpc_stream_open(ch, T_FETCH, &o, st);
    assert_non_null(s);
    assert_int_equal(rpc_stream_write(s, &r.base), 0);
    *ok_payloads = 0;
    Kvtier__V1__Block *b;
    while (rpc_stream_read(s, &kvtier__v1__block__descriptor, (ProtobufCMessage **)&b) == 1) {
        uint8_t want[BLOCK_BYTES];
        fill(want, seq, b->key->layer, 0, v);
        if (b->payload.len == BLOCK_BYTES && memcmp(b->payload.data, want, BLOCK_BYTES) == 0)
            (*ok_payloads)++;
        protobuf_c_message_free_unpacked(&b->base, NULL);
    }
    grpc_status_code c = rpc_stream_finish(s, st);
    rpc_stream_free(s);
    return c;
}

static grpc_status_code close_seq(rpc_channel *ch, who w, const char *tenant, uint64_t seq,
                                  rpc_status *st) {
    Kvtier__V1__CloseSequenceRequest r = KVTIER__V1__CLOSE_SEQUENCE_REQUEST__INIT;
    r.tenant = (char *)(tenant ? tenant : "");
    r.sequence_id = seq;
    return unary(ch, T_CLOSE, w, &r.base, &kvtier__v1__close_sequence_response__descriptor, NULL,
                 st);
}

static grpc_status_code evict_seq(rpc_channel *ch, who w, const char *tenant, uint64_t seq,
                                  rpc_status *st) {
    Kvtier__V1__EvictRequest r = KVTIER__V1__EVICT_REQUEST__INIT;
    r.tenant = (char *)(tenant ? tenant : "");
    r.sequence_id = seq;
    r.to = KVTIER__V1__TIER_KIND__TIER_DROPPED;
    return unary(ch, A_EVICT, w, &r.base, &kvtier__v1__evict_response__descriptor, NULL, st);
}

/* GetTierMap; *stored = HOST + SSD blocks in it (when OK). */
static grpc_status_code map_seq(rpc_channel *ch, who w, const char *tenant, uint64_t seq,
                                int *stored, rpc_status *st) {
    Kvtier__V1__GetTierMapRequest r = KVTIER__V1__GET_TIER_MAP_REQUEST__INIT;
    r.tenant = (char *)(tenant ? tenant : "");
    r.sequence_id = seq;
    Kvtier__V1__GetTierMapResponse *m = NULL;
    grpc_status_code c =
        unary(ch, A_MAP, w, &r.base, &kvtier__v1__get_tier_map_response__descriptor,
              (ProtobufCMessage **)&m, st);
    *stored = 0;
    for (size_t l = 0; m && l < m->n_layers; l++)
        for (size_t b = 0; b < m->layers[l]->n_tiers; b++)
            *stored += m->layers[l]->tiers[b] == KVTIER__V1__TIER_KIND__TIER_HOST ||
                       m->layers[l]->tiers[b] == KVTIER__V1__TIER_KIND__TIER_SSD;
    if (m)
        protobuf_c_message_free_unpacked(&m->base, NULL);
    return c;
}

/* ListSequences; on OK *out gets the response (caller frees). */
static grpc_status_code list(rpc_channel *ch, who w, const char *tenant,
                             Kvtier__V1__ListSequencesResponse **out, rpc_status *st) {
    Kvtier__V1__ListSequencesRequest r = KVTIER__V1__LIST_SEQUENCES_REQUEST__INIT;
    r.tenant = (char *)(tenant ? tenant : "");
    return unary(ch, A_LIST, w, &r.base, &kvtier__v1__list_sequences_response__descriptor,
                 (ProtobufCMessage **)out, st);
}

/* Sequences of tenant t in a listing. */
static size_t count_of(const Kvtier__V1__ListSequencesResponse *r, const char *t) {
    size_t n = 0;
    for (size_t i = 0; i < r->n_sequences; i++)
        n += strcmp(r->sequences[i]->tenant, t) == 0;
    return n;
}

static void expect(grpc_status_code got, const rpc_status *st, grpc_status_code want,
                   const char *has) {
    if (got != want || (has && !strstr(st->message, has)))
        fprintf(stderr, "got %s \"%s\", want %s with \"%s\"\n", rpc_status_name(got), st->message,
                rpc_status_name(want), has ? has : "");
    assert_int_equal(got, want);
    if (has)
        assert_non_null(strstr(st->message, has));
}

/* 1 when the file at path contains s. */
static int file_has(const char *path, const char *s) {
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, s) != NULL;
}

/* ================================================================ tests */

static void test_cross_tenant(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    const who bob = {TOK_BOB, NULL}, ops = {TOK_OPS, NULL};
    expect(open_seq(d->ch, bob, NULL, 7, &st), &st, GRPC_STATUS_OK, NULL);
    expect(put_seq(d->ch, bob, "bob", 7, 1, &st), &st, GRPC_STATUS_OK, NULL);

    /* alice naming bob: in the field, in the header, in both */
    const struct {
        who w;
        const char *field;
    } tries[] = {
        {{TOK_ALICE, NULL}, "bob"}, {{TOK_ALICE, "bob"}, NULL}, {{TOK_ALICE, "bob"}, "bob"}};
    for (size_t i = 0; i < 3; i++) {
        who w = tries[i].w;
        const char *f = tries[i].field;
        int n = -1;
        expect(open_seq(d->ch, w, f, 7, &st), &st, GRPC_STATUS_PERMISSION_DENIED, "alice");
        expect(put_seq(d->ch, w, f, 7, 2, &st), &st, GRPC_STATUS_PERMISSION_DENIED, "alice");
        expect(fetch_seq(d->ch, w, f, 7, 1, &n, &st), &st, GRPC_STATUS_PERMISSION_DENIED, "alice");
        assert_int_equal(n, 0); /* not one of bob's blocks went out */
        expect(evict_seq(d->ch, w, f, 7, &st), &st, GRPC_STATUS_PERMISSION_DENIED, "alice");
        expect(close_seq(d->ch, w, f, 7, &st), &st, GRPC_STATUS_PERMISSION_DENIED, "alice");
        expect(map_seq(d->ch, w, f, 7, &n, &st), &st, GRPC_STATUS_PERMISSION_DENIED, "alice");
    }
    /* alice without naming anyone reaches her own namespace only */
    const who alice = {TOK_ALICE, NULL};
    int n = -1;
    expect(fetch_seq(d->ch, alice, NULL, 7, 1, &n, &st), &st, GRPC_STATUS_NOT_FOUND, NULL);
    assert_int_equal(n, 0);
    expect(map_seq(d->ch, alice, NULL, 7, &n, &st), &st, GRPC_STATUS_NOT_FOUND, NULL);
    expect(evict_seq(d->ch, alice, NULL, 7, &st), &st, GRPC_STATUS_NOT_FOUND, NULL);
    expect(close_seq(d->ch, alice, NULL, 7, &st), &st, GRPC_STATUS_NOT_FOUND, NULL);
    /* her own sequence 7 (her own name is fine) is another sequence than bob's */
    expect(open_seq(d->ch, alice, "alice", 7, &st), &st, GRPC_STATUS_OK, NULL);
    expect(put_seq(d->ch, (who){TOK_ALICE, "alice"}, NULL, 7, 9, &st), &st, GRPC_STATUS_OK, NULL);
    expect(fetch_seq(d->ch, alice, NULL, 7, 9, &n, &st), &st, GRPC_STATUS_OK, NULL);
    assert_int_equal(n, LAYERS);

    /* bob's blocks are what bob put */
    expect(fetch_seq(d->ch, bob, NULL, 7, 1, &n, &st), &st, GRPC_STATUS_OK, NULL);
    assert_int_equal(n, LAYERS);
    expect(map_seq(d->ch, bob, "bob", 7, &n, &st), &st, GRPC_STATUS_OK, NULL);
    assert_int_equal(n, LAYERS);
    /* the operator inspects bob's map and fetches his blocks by naming him */
    expect(map_seq(d->ch, ops, "bob", 7, &n, &st), &st, GRPC_STATUS_OK, NULL);
    assert_int_equal(n, LAYERS);
    expect(fetch_seq(d->ch, (who){TOK_OPS, "bob"}, NULL, 7, 1, &n, &st), &st, GRPC_STATUS_OK, NULL);
    assert_int_equal(n, LAYERS);
    /* bob closes his own */
    expect(close_seq(d->ch, bob, NULL, 7, &st), &st, GRPC_STATUS_OK, NULL);
    expect(map_seq(d->ch, ops, "bob", 7, &n, &st), &st, GRPC_STATUS_NOT_FOUND, NULL);
    expect(fetch_seq(d->ch, alice, NULL, 7, 9, &n, &st), &st, GRPC_STATUS_OK, NULL);
    assert_int_equal(n, LAYERS);
}

static void test_listing_admin(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    const who alice = {TOK_ALICE, NULL}, bob = {TOK_BOB, NULL}, ops = {TOK_OPS, NULL};
    for (uint64_t s = 1; s <= 2; s++)
        expect(open_seq(d->ch, alice, NULL, s, &st), &st, GRPC_STATUS_OK, NULL);
    for (uint64_t s = 1; s <= 3; s++)
        expect(open_seq(d->ch, bob, NULL, 10 + s, &st), &st, GRPC_STATUS_OK, NULL);
    expect(put_seq(d->ch, bob, NULL, 11, 1, &st), &st, GRPC_STATUS_OK, NULL);

    Kvtier__V1__ListSequencesResponse *r = NULL;
    expect(list(d->ch, alice, NULL, &r, &st), &st, GRPC_STATUS_OK, NULL);
    assert_int_equal(r->n_sequences, 2);
    assert_int_equal(count_of(r, "alice"), 2);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    expect(list(d->ch, alice, "bob", &r, &st), &st, GRPC_STATUS_PERMISSION_DENIED, "alice");
    expect(list(d->ch, (who){TOK_ALICE, "bob"}, NULL, &r, &st), &st, GRPC_STATUS_PERMISSION_DENIED,
           "alice");
    expect(list(d->ch, bob, "bob", &r, &st), &st, GRPC_STATUS_OK, NULL);
    assert_int_equal(r->n_sequences, 3);
    assert_int_equal(count_of(r, "bob"), 3);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* the operator lists everyone, or one tenant by name */
    expect(list(d->ch, ops, NULL, &r, &st), &st, GRPC_STATUS_OK, NULL);
    assert_int_equal(count_of(r, "alice"), 2);
    assert_int_equal(count_of(r, "bob"), 3);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    expect(list(d->ch, ops, "alice", &r, &st), &st, GRPC_STATUS_OK, NULL);
    assert_int_equal(r->n_sequences, 2);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* GetStats: a tenant sees its own sequences and blocks, the operator all */
    Kvtier__V1__GetStatsRequest sr = KVTIER__V1__GET_STATS_REQUEST__INIT;
    Kvtier__V1__GetStatsResponse *s = NULL;
    expect(unary(d->ch, A_STATS, alice, &sr.base, &kvtier__v1__get_stats_response__descriptor,
                 (ProtobufCMessage **)&s, &st),
           &st, GRPC_STATUS_OK, NULL);
    assert_int_equal(s->sequences, 2);
    uint64_t blocks = 0;
    for (size_t i = 0; i < s->n_tiers; i++)
        blocks += s->tiers[i]->blocks;
    assert_int_equal(blocks, 0); /* bob's blocks are not hers */
    protobuf_c_message_free_unpacked(&s->base, NULL);
    expect(unary(d->ch, A_STATS, bob, &sr.base, &kvtier__v1__get_stats_response__descriptor,
                 (ProtobufCMessage **)&s, &st),
           &st, GRPC_STATUS_OK, NULL);
    assert_int_equal(s->sequences, 3);
    blocks = 0;
    for (size_t i = 0; i < s->n_tiers; i++)
        blocks += s->tiers[i]->blocks;
    assert_int_equal(blocks, LAYERS);
    protobuf_c_message_free_unpacked(&s->base, NULL);
    expect(unary(d->ch, A_STATS, ops, &sr.base, &kvtier__v1__get_stats_response__descriptor,
                 (ProtobufCMessage **)&s, &st),
           &st, GRPC_STATUS_OK, NULL);
    assert_int_equal(s->sequences, 5);
    protobuf_c_message_free_unpacked(&s->base, NULL);

    /* Drain spans tenants: operator only */
    Kvtier__V1__DrainRequest dr = KVTIER__V1__DRAIN_REQUEST__INIT;
    expect(
        unary(d->ch, A_DRAIN, alice, &dr.base, &kvtier__v1__drain_response__descriptor, NULL, &st),
        &st, GRPC_STATUS_PERMISSION_DENIED, "operator");
    expect(unary(d->ch, A_DRAIN, bob, &dr.base, &kvtier__v1__drain_response__descriptor, NULL, &st),
           &st, GRPC_STATUS_PERMISSION_DENIED, "operator");
    expect(unary(d->ch, A_DRAIN, ops, &dr.base, &kvtier__v1__drain_response__descriptor, NULL, &st),
           &st, GRPC_STATUS_OK, NULL);

    /* health stays public */
    Kvtier__V1__HealthRequest hr = KVTIER__V1__HEALTH_REQUEST__INIT;
    expect(unary(d->ch, A_HEALTH, (who){0}, &hr.base, &kvtier__v1__health_response__descriptor,
                 NULL, &st),
           &st, GRPC_STATUS_OK, NULL);
    Grpc__Health__V1__HealthCheckRequest hc = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    hc.service = "";
    expect(unary(d->ch, H_CHECK, (who){0}, &hc.base,
                 &grpc__health__v1__health_check_response__descriptor, NULL, &st),
           &st, GRPC_STATUS_OK, NULL);
}

static void test_unauthenticated(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    const who none = {NULL, "alice"}, wrong = {"tok-alice-0123456788", NULL}, empty = {"", NULL};
    Kvtier__V1__ListSequencesResponse *r = NULL;
    const who bad[] = {none, wrong, empty};
    for (size_t i = 0; i < 3; i++) {
        expect(open_seq(d->ch, bad[i], "alice", 1, &st), &st, GRPC_STATUS_UNAUTHENTICATED, NULL);
        expect(list(d->ch, bad[i], NULL, &r, &st), &st, GRPC_STATUS_UNAUTHENTICATED, NULL);
        Kvtier__V1__DrainRequest dr = KVTIER__V1__DRAIN_REQUEST__INIT;
        expect(unary(d->ch, A_DRAIN, bad[i], &dr.base, &kvtier__v1__drain_response__descriptor,
                     NULL, &st),
               &st, GRPC_STATUS_UNAUTHENTICATED, NULL);
        assert_null(strstr(st.message, "tok-")); /* never echoes a token */
    }
    /* the bare token, without "Bearer ", is accepted too */
    rpc_opts o = {.auth = TOK_ALICE, .timeout_ms = 10000};
    Kvtier__V1__ListSequencesRequest lr = KVTIER__V1__LIST_SEQUENCES_REQUEST__INIT;
    ProtobufCMessage *x = NULL;
    expect(rpc_unary(d->ch, A_LIST, &o, &lr.base, &kvtier__v1__list_sequences_response__descriptor,
                     &x, &st),
           &st, GRPC_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(x, NULL);
}

/* Waits (up to 10 s) until the log at path holds s. */
static int wait_log(const char *path, const char *s) {
    for (int i = 0; i < 1000; i++) {
        if (file_has(path, s))
            return 1;
        kvd_sleep_ms(10);
    }
    return 0;
}

static void test_sighup_reload(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    char path[300], log[300];
    snprintf(path, sizeof path, "%s/tokens", d->dir);
    snprintf(log, sizeof log, "%s/log", d->dir);
    const who alice = {TOK_ALICE, NULL}, bob = {TOK_BOB, NULL}, carol = {TOK_CAROL, NULL};
    Kvtier__V1__ListSequencesResponse *r = NULL;
    expect(list(d->ch, carol, NULL, &r, &st), &st, GRPC_STATUS_UNAUTHENTICATED, NULL);
    expect(open_seq(d->ch, alice, NULL, 3, &st), &st, GRPC_STATUS_OK, NULL);

    /* carol in, alice out (written aside and renamed: a reader never sees half) */
    char tmp[320];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    write_file(tmp, TOK_CAROL " carol tenant\n" TOK_BOB " bob tenant\n" TOK_OPS " ops operator\n",
               0600);
    assert_int_equal(rename(tmp, path), 0);
    assert_int_equal(kill(d->pid, SIGHUP), 0);
    assert_true(wait_log(log, "SIGHUP: reloaded"));
    expect(open_seq(d->ch, carol, NULL, 3, &st), &st, GRPC_STATUS_OK, NULL);
    expect(list(d->ch, carol, NULL, &r, &st), &st, GRPC_STATUS_OK, NULL);
    assert_int_equal(r->n_sequences, 1);
    assert_int_equal(count_of(r, "carol"), 1);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    expect(list(d->ch, alice, NULL, &r, &st), &st, GRPC_STATUS_UNAUTHENTICATED, NULL);
    expect(open_seq(d->ch, alice, NULL, 4, &st), &st, GRPC_STATUS_UNAUTHENTICATED, NULL);
    expect(list(d->ch, bob, NULL, &r, &st), &st, GRPC_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* a malformed file on SIGHUP keeps the table it had */
    write_file(tmp, TOK_ALICE " alice tenant\n" TOK_BOB " bob admin\n", 0600);
    assert_int_equal(rename(tmp, path), 0);
    assert_int_equal(kill(d->pid, SIGHUP), 0);
    assert_true(wait_log(log, "keeping the old ones"));
    assert_true(file_has(log, "line 2: role \"admin\""));
    expect(list(d->ch, carol, NULL, &r, &st), &st, GRPC_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    expect(list(d->ch, alice, NULL, &r, &st), &st, GRPC_STATUS_UNAUTHENTICATED, NULL);
    /* and a world-readable one is loaded with a warning */
    write_file(path, TOK_ALICE " alice tenant\n", 0644);
    assert_int_equal(kill(d->pid, SIGHUP), 0);
    assert_true(wait_log(log, "chmod 600"));
    assert_true(wait_log(log, "reloaded") && file_has(log, "1 token (1 tenant, 0 operator)"));
    expect(list(d->ch, alice, NULL, &r, &st), &st, GRPC_STATUS_OK, NULL);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    expect(list(d->ch, carol, NULL, &r, &st), &st, GRPC_STATUS_UNAUTHENTICATED, NULL);

    /* no token ever reaches the log */
    const char *toks[] = {TOK_ALICE, TOK_BOB, TOK_OPS, TOK_CAROL};
    for (size_t i = 0; i < 4; i++)
        assert_false(file_has(log, toks[i]));
    assert_int_equal(kvd_stop(d, SIGTERM), 0);
}

/* kvtierd refuses to start with this file, and its log names `has`. */
static void refused(const char *text, const char *has) {
    kvd_proc *d = kvd_new();
    assert_non_null(d);
    char path[300], log[300];
    assert_int_equal(start_with(d, text, path, sizeof path), -1);
    snprintf(log, sizeof log, "%s/log", d->dir);
    if (!file_has(log, has)) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "cat %s >&2", log);
        (void)system(cmd);
    }
    assert_true(file_has(log, has));
    assert_false(file_has(log, "tok-"));
    kvd_free(d);
}

static void test_bad_files(void **state) {
    (void)state;
    refused("# ok\n" TOK_ALICE " alice tenant\n" TOK_BOB " bob admin\n", "line 3: role");
    refused(TOK_ALICE " alice tenant\n\n" TOK_BOB " bob tenant\n" TOK_ALICE " eve operator\n",
            "line 4: the token is already");
    refused("tok-short alice tenant\n", "line 1: the token has 9 characters");
    refused(TOK_ALICE " al/ice tenant\n", "line 1: tenant");
    refused("\n\n" TOK_ALICE " alice\n", "line 3: expected TOKEN TENANT ROLE");
    refused(TOK_ALICE " alice tenant extra\n", "line 1: expected TOKEN TENANT ROLE");

    kvd_proc *d = kvd_new();
    assert_non_null(d);
    char path[300], log[300];
    snprintf(log, sizeof log, "%s/log", d->dir);
    const char *missing[] = {"--auth-tokens", "/nonexistent/tokens", NULL};
    assert_int_equal(kvd_start(d, g_bin, missing), -1);
    assert_true(file_has(log, "/nonexistent/tokens: No such file"));
    snprintf(path, sizeof path, "%s/tokens", d->dir);
    write_file(path, k_tokens, 0600);
    const char *both[] = {"--auth-tokens", path, "--auth-token", "tok-xyz-0123456789ab", NULL};
    assert_int_equal(kvd_start(d, g_bin, both), -1);
    assert_true(file_has(log, "exclude each other"));
    /* world-readable: starts, warns */
    write_file(path, k_tokens, 0644);
    const char *ok[] = {"--auth-tokens", path, NULL};
    assert_int_equal(kvd_start(d, g_bin, ok), 0);
    assert_true(file_has(log, "readable by every user"));
    assert_true(file_has(log, "auth on: 3 tokens (2 tenant, 1 operator)"));
    assert_int_equal(kvd_stop(d, SIGTERM), 0);
    kvd_free(d);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s KVTIERD_BINARY\n", argv[0]);
        return 2;
    }
    g_bin = argv[1];
    unsetenv("KVTIERD_AUTH_TOKEN");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cross_tenant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listing_admin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unauthenticated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sighup_reload, setup, teardown),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
