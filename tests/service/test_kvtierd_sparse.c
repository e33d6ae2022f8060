/* test_kvtierd_sparse.c - issue 9, item 3: the block index allocates what a
 * sequence uses, not layers x its largest block id. Against the real kvtierd
 * binary with its default limits (--max-seq-blocks 2Mi):
 *   sequences of 256 layers with one block at 65535 (was +768 MiB each, or
 *   refused by the limit), one far block in every layer, a few far ids in
 *   one layer, a summary saying 65536 blocks with far active blocks, a
 *   retained (closed) far sequence: kvtierd's RSS (/proc/PID/status VmRSS)
 *   grows by less than 2 MiB per sequence; every block fetches back byte for
 *   byte; after a restart (recovery from RocksDB) RSS stays as small and the
 *   blocks are still there; more far blocks after the restart cost no more.
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

#define BB 1024u /* 16 tokens x 1 kv head x 16 x 2 (K,V) x bf16 */
/* allowed RSS growth per sequence: 2 MiB, 16 MiB under a sanitizer (shadow
 * memory); the dense index cost ~768 MiB for the shape below */
#define PER_SEQ_KIB (getenv("KVTIER_SANITIZE") ? 16384L : 2048L)
#define NSHAPES 5
#define PER_SHAPE 2 /* sequences of each shape */
#define MAXB 300    /* blocks of one sequence, at most */

typedef struct blk {
    uint32_t layer, block;
} blk;

/* One sequence: its layers and the blocks stored in it. */
typedef struct seqdef {
    uint64_t seq;
    uint32_t layers;
    blk b[MAXB];
    size_t n;
} seqdef;

static long rss_kib(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &v) == 1)
            break;
    fclose(f);
    return v;
}

static void fill(uint8_t *buf, uint64_t seq, uint32_t layer, uint32_t block) {
    for (uint32_t i = 0; i < BB; i++)
        buf[i] = (uint8_t)(i * 7 + block * 3 + layer + seq * 11);
}

static grpc_status_code open_seq(rpc_channel *ch, uint64_t seq, uint32_t layers, rpc_status *st) {
    Kvtier__V1__OpenSequenceRequest r = KVTIER__V1__OPEN_SEQUENCE_REQUEST__INIT;
    r.tenant = "sparse";
    r.sequence_id = seq;
    r.layers = layers;
    r.kv_heads = 1;
    r.head_dim = 16;
    r.block_tokens = 16;
    r.block_bytes = BB;
    ProtobufCMessage *resp = NULL;
    grpc_status_code c = rpc_unary(ch, T_OPEN, NULL, &r.base,
                                   &kvtier__v1__open_sequence_response__descriptor, &resp, st);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return c;
}

/* Puts blocks b[0..n) of seq in one stream. */
static grpc_status_code put_blocks(rpc_channel *ch, uint64_t seq, const blk *b, size_t n,
                                   rpc_status *st) {
    rpc_stream *s = rpc_stream_open(ch, T_PUT, NULL, st);
    assert_non_null(s);
    uint8_t buf[BB];
    for (size_t i = 0; i < n; i++) {
        fill(buf, seq, b[i].layer, b[i].block);
        Kvtier__V1__BlockKey key = KVTIER__V1__BLOCK_KEY__INIT;
        key.tenant = "sparse";
        key.sequence_id = seq;
        key.layer = b[i].layer;
        key.block = b[i].block;
        Kvtier__V1__Block m = KVTIER__V1__BLOCK__INIT;
        m.key = &key;
        m.payload.data = buf;
        m.payload.len = BB;
        m.crc32c = tier_crc32c(0, buf, BB);
        m.token_count = 16;
        if (rpc_stream_write(s, &m.base) != 0)
            break;
    }
    ProtobufCMessage *resp = NULL;
    grpc_status_code c =
        rpc_stream_close_and_recv(s, &kvtier__v1__put_response__descriptor, &resp, st);
    rpc_stream_free(s);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return c;
}

/* Fetches every block of q and checks its bytes. */
static void fetch_all(rpc_channel *ch, const seqdef *q) {
    Kvtier__V1__FetchRequest r = KVTIER__V1__FETCH_REQUEST__INIT;
    Kvtier__V1__BlockRef *br = calloc(q->n, sizeof *br), **bp = calloc(q->n, sizeof *bp);
    for (size_t i = 0; i < q->n; i++) {
        kvtier__v1__block_ref__init(&br[i]);
        br[i].layer = q->b[i].layer;
        br[i].block = q->b[i].block;
        bp[i] = &br[i];
    }
    r.tenant = "sparse";
    r.sequence_id = q->seq;
    r.n_blocks = q->n;
    r.blocks = bp;
    rpc_status st;
    rpc_stream *s = rpc_stream_open(ch, T_FETCH, NULL, &st);
    assert_int_equal(rpc_stream_write(s, &r.base), 0);
    size_t got = 0;
    Kvtier__V1__Block *b;
    uint8_t want[BB];
    while (rpc_stream_read(s, &kvtier__v1__block__descriptor, (ProtobufCMessage **)&b) == 1) {
        fill(want, q->seq, b->key->layer, b->key->block);
        assert_int_equal(b->payload.len, BB);
        assert_memory_equal(b->payload.data, want, BB);
        got++;
        protobuf_c_message_free_unpacked(&b->base, NULL);
    }
    grpc_status_code c = rpc_stream_finish(s, &st);
    if (c != GRPC_STATUS_OK)
        fprintf(stderr, "fetch of seq %llu: %d %s\n", (unsigned long long)q->seq, c, st.message);
    assert_int_equal(c, GRPC_STATUS_OK);
    assert_int_equal(got, q->n);
    rpc_stream_free(s);
    free(br);
    free(bp);
}

/* A summary of seq at step: block_count 65536 on layer 0, block 65535
 * active on layers [0, 8). */
static void summarize_far(rpc_channel *ch, uint64_t seq, uint64_t step) {
    rpc_opts o = {.tenant = "sparse"};
    rpc_status st;
    rpc_stream *s = rpc_stream_open(ch, T_SUM, &o, &st);
    assert_non_null(s);
    Kvtier__V1__LayerSummary ls[8], *lsp[8];
    Kvtier__V1__ActiveBlock ab[8], *abp[8];
    for (uint32_t l = 0; l < 8; l++) {
        kvtier__v1__active_block__init(&ab[l]);
        ab[l].block = 65535;
        ab[l].peak_mass = 0.5f;
        abp[l] = &ab[l];
        kvtier__v1__layer_summary__init(&ls[l]);
        ls[l].layer = l;
        ls[l].block_count = l == 0 ? 65536 : 0;
        ls[l].n_active = 1;
        ls[l].active = &abp[l];
        lsp[l] = &ls[l];
    }
    Kvtier__V1__SummaryRequest r = KVTIER__V1__SUMMARY_REQUEST__INIT;
    r.sequence_id = seq;
    r.step = step;
    r.n_layers = 8;
    r.layers = lsp;
    assert_int_equal(rpc_stream_write(s, &r.base), 0);
    ProtobufCMessage *m = NULL;
    assert_int_equal(rpc_stream_read(s, &kvtier__v1__decisions__descriptor, &m), 1);
    protobuf_c_message_free_unpacked(m, NULL);
    assert_int_equal(rpc_stream_finish(s, &st), GRPC_STATUS_OK);
    rpc_stream_free(s);
}

static void close_retain(rpc_channel *ch, uint64_t seq) {
    Kvtier__V1__CloseSequenceRequest r = KVTIER__V1__CLOSE_SEQUENCE_REQUEST__INIT;
    r.tenant = "sparse";
    r.sequence_id = seq;
    r.retain = 1;
    rpc_status st;
    ProtobufCMessage *resp = NULL;
    assert_int_equal(rpc_unary(ch, T_CLOSE, NULL, &r.base,
                               &kvtier__v1__close_sequence_response__descriptor, &resp, &st),
                     GRPC_STATUS_OK);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
}

/* Sequence q of shape k: opens it, stores its blocks (and more). */
static void load_shape(rpc_channel *ch, seqdef *q, int k) {
    rpc_status st;
    q->layers = k == 2 ? 64 : 256;
    q->n = 0;
    switch (k) {
    case 0: /* the shape: one block at 65535 */
    case 4: /* the same, closed with retain */
        q->b[q->n++] = (blk){0, 65535};
        break;
    case 1: /* one far block in every layer */
        for (uint32_t l = 0; l < 256; l++)
            q->b[q->n++] = (blk){l, 65535};
        break;
    case 2: /* a few far ids in one layer */
        q->b[q->n++] = (blk){63, 0};
        q->b[q->n++] = (blk){63, 1000};
        q->b[q->n++] = (blk){63, 30000};
        q->b[q->n++] = (blk){63, 65535};
        q->b[q->n++] = (blk){0, 65535};
        break;
    case 3: /* a summary of 65536 blocks, far ones active; a block in between */
        q->b[q->n++] = (blk){3, 40000};
        break;
    }
    assert_int_equal(open_seq(ch, q->seq, q->layers, &st), GRPC_STATUS_OK);
    if (k == 3)
        summarize_far(ch, q->seq, 16);
    grpc_status_code c = put_blocks(ch, q->seq, q->b, q->n, &st);
    if (c != GRPC_STATUS_OK)
        fprintf(stderr, "put of seq %llu: %d %s\n", (unsigned long long)q->seq, c, st.message);
    assert_int_equal(c, GRPC_STATUS_OK);
    if (k == 4)
        close_retain(ch, q->seq);
}

static void test_sparse_rss(void **state) {
    (void)state;
    kvd_proc *d = kvd_new();
    assert_non_null(d);
    assert_int_equal(kvd_start(d, g_bin, NULL), 0);
    rpc_status st;
    /* warm up (RocksDB memtable, gRPC threads) with a small dense sequence */
    seqdef *warm = calloc(1, sizeof *warm);
    warm->seq = 999;
    for (uint32_t b = 0; b < 64; b++)
        warm->b[warm->n++] = (blk){b % 4, b};
    assert_int_equal(open_seq(d->ch, warm->seq, 4, &st), GRPC_STATUS_OK);
    assert_int_equal(put_blocks(d->ch, warm->seq, warm->b, warm->n, &st), GRPC_STATUS_OK);
    fetch_all(d->ch, warm);
    long rss0 = rss_kib(d->pid);

    enum { NSEQ = NSHAPES * PER_SHAPE };
    seqdef *q = calloc(NSEQ, sizeof *q);
    long prev = rss0;
    for (int i = 0; i < NSEQ; i++) {
        q[i].seq = 100 + (uint64_t)i;
        load_shape(d->ch, &q[i], i % NSHAPES);
        long now = rss_kib(d->pid);
        fprintf(stderr, "seq %llu (shape %d, %zu blocks): RSS %ld KiB (+%ld)\n",
                (unsigned long long)q[i].seq, i % NSHAPES, q[i].n, now, now - prev);
        prev = now;
    }
    long rss1 = rss_kib(d->pid);
    fprintf(stderr, "kvtierd RSS %ld -> %ld KiB for %d sparse sequences (%ld KiB each)\n", rss0,
            rss1, NSEQ, (rss1 - rss0) / NSEQ);
    assert_true(rss1 - rss0 < (long)NSEQ * PER_SEQ_KIB);
    for (int i = 0; i < NSEQ; i++)
        fetch_all(d->ch, &q[i]);

    /* restart: recovery must not rebuild layers x largest block id either */
    assert_int_equal(kvd_stop(d, SIGTERM), 0);
    assert_int_equal(kvd_start(d, g_bin, NULL), 0);
    long rss2 = rss_kib(d->pid);
    fprintf(stderr, "after a restart: RSS %ld KiB (first start, warmed up: %ld KiB)\n", rss2, rss0);
    assert_true(rss2 - rss0 < (long)NSEQ * PER_SEQ_KIB);
    for (int i = 0; i < NSEQ; i++) {
        if (i % NSHAPES != 4) /* retained ones stay closed */
            assert_int_equal(open_seq(d->ch, q[i].seq, q[i].layers, &st), GRPC_STATUS_OK);
        fetch_all(d->ch, &q[i]);
    }
    /* more far blocks after the restart: still what is used */
    for (int i = 0; i < NSEQ; i++) {
        if (i % NSHAPES == 4)
            continue;
        q[i].b[q[i].n] = (blk){q[i].layers - 1, 65535 - 64 * 5};
        assert_int_equal(put_blocks(d->ch, q[i].seq, &q[i].b[q[i].n], 1, &st), GRPC_STATUS_OK);
        q[i].n++;
    }
    long rss3 = rss_kib(d->pid);
    fprintf(stderr, "after a far block more in each: RSS %ld KiB\n", rss3);
    assert_true(rss3 - rss0 < (long)NSEQ * PER_SEQ_KIB);
    for (int i = 0; i < NSEQ; i++)
        fetch_all(d->ch, &q[i]);
    free(q);
    free(warm);
    kvd_free(d);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s KVTIERD\n", argv[0]);
        return 2;
    }
    g_bin = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sparse_rss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
