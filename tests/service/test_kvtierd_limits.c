/* test_kvtierd_limits.c - issue 9's unbounded memory, against the real
 * kvtierd binary with small limits: every limit refuses with
 * RESOURCE_EXHAUSTED naming its flag, changes nothing, and the service goes
 * on:
 *   --max-seq-blocks: counts stored index entries (chunks of 64 blocks), not
 *     layers x largest block id: 256 layers and one block at 65535 (+768 MiB
 *     of index per sequence once, then refused) is stored and RSS stays; a
 *     summary or a put that would store more chunks is refused;
 *   --max-fetch-refs: a FetchRequest with one ref too many;
 *   --max-staged: two open PutBlocks streams together over the bound (each
 *     under its own), the bytes come back when a stream ends;
 *   --tenant-max-sequences and --tenant-max-bytes (quotas);
 *   --help lists every limit flag.
 *
 * argv[1] = path of the kvtierd binary (from CMake). */
#include <setjmp.h>
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

#define BIG 65536u  /* 16 tokens x 8 kv heads x 128 x 2 (K,V) x bf16 */
#define SMALL 1024u /* 16 tokens x 1 kv head x 16 x 2 (K,V) x bf16 */

static int setup(void **state) {
    static const char *const flags[] = {"--max-seq-blocks",
                                        "65536",
                                        "--max-fetch-refs",
                                        "100",
                                        "--max-staged",
                                        "512KiB",
                                        "--tenant-max-sequences",
                                        "3",
                                        "--tenant-max-bytes",
                                        "1MiB",
                                        NULL};
    kvd_proc *d = kvd_new();
    assert_non_null(d);
    if (kvd_start(d, g_bin, flags) != 0) {
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

static void expect(grpc_status_code got, const rpc_status *st, grpc_status_code want,
                   const char *has) {
    if (got != want || !strstr(st->message, has))
        fprintf(stderr, "got %d \"%s\", want %d with \"%s\"\n", got, st->message, want, has);
    assert_int_equal(got, want);
    assert_non_null(strstr(st->message, has));
}

static grpc_status_code open_seq(rpc_channel *ch, const char *tenant, uint64_t seq, uint32_t layers,
                                 uint32_t block_bytes, rpc_status *st) {
    Kvtier__V1__OpenSequenceRequest r = KVTIER__V1__OPEN_SEQUENCE_REQUEST__INIT;
    r.tenant = (char *)tenant;
    r.sequence_id = seq;
    r.layers = layers;
    r.kv_heads = block_bytes == BIG ? 8 : 1;
    r.head_dim = block_bytes == BIG ? 128 : 16;
    r.block_tokens = 16;
    r.block_bytes = block_bytes;
    ProtobufCMessage *resp = NULL;
    grpc_status_code c = rpc_unary(ch, T_OPEN, NULL, &r.base,
                                   &kvtier__v1__open_sequence_response__descriptor, &resp, st);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return c;
}

/* Writes block (layer, block) of len bytes into an open put stream. */
static int put_write(rpc_stream *s, const char *tenant, uint64_t seq, uint32_t layer,
                     uint32_t block, uint32_t len) {
    uint8_t *buf = malloc(len);
    for (uint32_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(i + block * 3 + layer);
    Kvtier__V1__BlockKey key = KVTIER__V1__BLOCK_KEY__INIT;
    key.tenant = (char *)tenant;
    key.sequence_id = seq;
    key.layer = layer;
    key.block = block;
    Kvtier__V1__Block b = KVTIER__V1__BLOCK__INIT;
    b.key = &key;
    b.payload.data = buf;
    b.payload.len = len;
    b.crc32c = tier_crc32c(0, buf, len);
    b.token_count = 16;
    int w = rpc_stream_write(s, &b.base);
    free(buf);
    return w;
}

static grpc_status_code put_close(rpc_stream *s, rpc_status *st) {
    ProtobufCMessage *resp = NULL;
    grpc_status_code c =
        rpc_stream_close_and_recv(s, &kvtier__v1__put_response__descriptor, &resp, st);
    rpc_stream_free(s);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return c;
}

/* Puts blocks [b0, b1) of layer 0 in one stream. */
static grpc_status_code put_range(rpc_channel *ch, const char *tenant, uint64_t seq, uint32_t b0,
                                  uint32_t b1, uint32_t len, rpc_status *st) {
    rpc_stream *s = rpc_stream_open(ch, T_PUT, NULL, st);
    assert_non_null(s);
    for (uint32_t b = b0; b < b1; b++)
        if (put_write(s, tenant, seq, 0, b, len) != 0)
            break;
    return put_close(s, st);
}

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

/* One summary of acme/seq at `step`: layer 0 says block_count nb; layers
 * [0, nl) each name `per` active blocks 64 apart from b0 (each in a chunk of
 * its own). Returns the final status of the stream. */
static grpc_status_code summarize(rpc_channel *ch, uint64_t seq, uint64_t step, uint32_t nb,
                                  uint32_t nl, uint32_t per, uint32_t b0, rpc_status *st) {
    rpc_opts o = {.tenant = "acme"};
    rpc_stream *s = rpc_stream_open(ch, T_SUM, &o, st);
    assert_non_null(s);
    size_t nls = nl ? nl : 1;
    Kvtier__V1__LayerSummary *ls = calloc(nls, sizeof *ls), **lsp = calloc(nls, sizeof *lsp);
    Kvtier__V1__ActiveBlock *ab = calloc(nls * per + 1, sizeof *ab);
    Kvtier__V1__ActiveBlock **abp = calloc(nls * per + 1, sizeof *abp);
    for (size_t l = 0; l < nls; l++) {
        kvtier__v1__layer_summary__init(&ls[l]);
        ls[l].layer = (uint32_t)l;
        ls[l].block_count = l == 0 ? nb : 0;
        ls[l].n_active = nl ? per : 0;
        ls[l].active = abp + l * per;
        for (size_t i = 0; nl && i < per; i++) {
            kvtier__v1__active_block__init(&ab[l * per + i]);
            ab[l * per + i].block = b0 + 64 * (uint32_t)i;
            abp[l * per + i] = &ab[l * per + i];
        }
        lsp[l] = &ls[l];
    }
    Kvtier__V1__SummaryRequest r = KVTIER__V1__SUMMARY_REQUEST__INIT;
    r.sequence_id = seq;
    r.step = step;
    r.n_layers = nls;
    r.layers = lsp;
    assert_int_equal(rpc_stream_write(s, &r.base), 0);
    ProtobufCMessage *m = NULL;
    if (rpc_stream_read(s, &kvtier__v1__decisions__descriptor, &m) == 1)
        protobuf_c_message_free_unpacked(m, NULL);
    grpc_status_code c = rpc_stream_finish(s, st);
    rpc_stream_free(s);
    free(ls);
    free(lsp);
    free(ab);
    free(abp);
    return c;
}

static void test_seq_blocks(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    long rss0 = rss_kib(d->pid);
    for (uint64_t seq = 1; seq <= 3; seq++) { /* was +768 MiB each, then refused */
        assert_int_equal(open_seq(d->ch, "acme", seq, 256, SMALL, &st), GRPC_STATUS_OK);
        rpc_stream *s = rpc_stream_open(d->ch, T_PUT, NULL, &st);
        put_write(s, "acme", seq, 0, 65535, SMALL);
        expect(put_close(s, &st), &st, GRPC_STATUS_OK, "");
    }
    long rss1 = rss_kib(d->pid);
    fprintf(stderr, "kvtierd RSS %ld -> %ld KiB\n", rss0, rss1);
    assert_true(rss1 - rss0 < 32 * 1024);
    /* a summary's block count alone costs nothing either */
    assert_int_equal(summarize(d->ch, 1, 1, 65536, 0, 0, 0, &st), GRPC_STATUS_OK);
    /* the limit counts stored entries: 256 layers x 3 blocks in chunks of
     * their own = 768 chunks x 64 = 49152 entries fit the 65536 ... */
    assert_int_equal(summarize(d->ch, 2, 2, 65536, 256, 3, 0, &st), GRPC_STATUS_OK);
    /* ... 256 more chunks (65536 + the far block's and the growth records) do not */
    expect(summarize(d->ch, 2, 3, 0, 256, 1, 64 * 10, &st), &st, GRPC_STATUS_RESOURCE_EXHAUSTED,
           "index entries (stored blocks, in chunks of 64 blocks of a layer, plus growth "
           "records), over the limit of 65536 per sequence (kvtierd --max-seq-blocks)");
    /* the same through a put: a block in yet another chunk */
    rpc_stream *s = rpc_stream_open(d->ch, T_PUT, NULL, &st);
    put_write(s, "acme", 2, 5, 64 * 20, SMALL);
    expect(put_close(s, &st), &st, GRPC_STATUS_RESOURCE_EXHAUSTED, "--max-seq-blocks");
    /* within the limit: blocks in chunks the sequence holds already */
    rpc_stream *s2 = rpc_stream_open(d->ch, T_PUT, NULL, &st);
    put_write(s2, "acme", 2, 5, 1, SMALL);
    put_write(s2, "acme", 2, 255, 65, SMALL);
    expect(put_close(s2, &st), &st, GRPC_STATUS_OK, "");
    assert_int_equal(put_range(d->ch, "acme", 1, 0, 256, SMALL, &st), GRPC_STATUS_OK);
}

static grpc_status_code fetch_n(rpc_channel *ch, uint64_t seq, size_t n, rpc_status *st) {
    Kvtier__V1__FetchRequest r = KVTIER__V1__FETCH_REQUEST__INIT;
    Kvtier__V1__BlockRef *br = calloc(n, sizeof *br), **bp = calloc(n, sizeof *bp);
    for (size_t i = 0; i < n; i++) {
        kvtier__v1__block_ref__init(&br[i]);
        br[i].block = 255;
        bp[i] = &br[i];
    }
    r.tenant = "f";
    r.sequence_id = seq;
    r.n_blocks = n;
    r.blocks = bp;
    rpc_stream *s = rpc_stream_open(ch, T_FETCH, NULL, st);
    assert_int_equal(rpc_stream_write(s, &r.base), 0);
    size_t got = 0;
    ProtobufCMessage *b;
    while (rpc_stream_read(s, &kvtier__v1__block__descriptor, &b) == 1) {
        got++;
        protobuf_c_message_free_unpacked(b, NULL);
    }
    grpc_status_code c = rpc_stream_finish(s, st);
    rpc_stream_free(s);
    free(br);
    free(bp);
    if (c == GRPC_STATUS_OK)
        assert_int_equal(got, n);
    return c;
}

static void test_fetch_refs(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    assert_int_equal(open_seq(d->ch, "f", 20, 1, SMALL, &st), GRPC_STATUS_OK);
    assert_int_equal(put_range(d->ch, "f", 20, 255, 256, SMALL, &st), GRPC_STATUS_OK);
    assert_int_equal(fetch_n(d->ch, 20, 100, &st), GRPC_STATUS_OK);
    expect(fetch_n(d->ch, 20, 101, &st), &st, GRPC_STATUS_RESOURCE_EXHAUSTED,
           "101 block references in one request, over kvtierd's --max-fetch-refs 100");
}

static void test_staged_total(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    assert_int_equal(open_seq(d->ch, "stage", 30, 1, BIG, &st), GRPC_STATUS_OK);
    /* A: 6 x 64 KiB staged, stream left open */
    rpc_stream *a = rpc_stream_open(d->ch, T_PUT, NULL, &st);
    for (uint32_t b = 0; b < 6; b++)
        assert_int_equal(put_write(a, "stage", 30, 0, b, BIG), 0);
    kvd_sleep_ms(500); /* let kvtierd read them */
    /* B: 2 more fit (512 KiB together), the 3rd does not */
    rpc_stream *b = rpc_stream_open(d->ch, T_PUT, NULL, &st);
    for (uint32_t k = 6; k < 9; k++)
        if (put_write(b, "stage", 30, 0, k, BIG) != 0)
            break;
    expect(put_close(b, &st), &st, GRPC_STATUS_RESOURCE_EXHAUSTED,
           "--max-staged 512 KiB; retry when other streams finished");
    assert_int_equal(put_close(a, &st), GRPC_STATUS_OK); /* A commits */
    /* both streams gave their bytes back: 8 blocks (512 KiB) fit again */
    assert_int_equal(put_range(d->ch, "stage", 30, 6, 14, BIG, &st), GRPC_STATUS_OK);
}

static void test_tenant_quotas(void **state) {
    kvd_proc *d = *state;
    rpc_status st;
    for (uint64_t seq = 40; seq < 43; seq++)
        assert_int_equal(open_seq(d->ch, "q", seq, 1, BIG, &st), GRPC_STATUS_OK);
    expect(open_seq(d->ch, "q", 43, 1, BIG, &st), &st, GRPC_STATUS_RESOURCE_EXHAUSTED,
           "tenant q has 3 sequences (open or retained), its quota (kvtierd "
           "--tenant-max-sequences)");
    assert_int_equal(open_seq(d->ch, "q", 42, 1, BIG, &st), GRPC_STATUS_OK); /* re-attach */
    assert_int_equal(open_seq(d->ch, "other", 43, 1, BIG, &st), GRPC_STATUS_OK);
    Kvtier__V1__CloseSequenceRequest cr = KVTIER__V1__CLOSE_SEQUENCE_REQUEST__INIT;
    cr.tenant = "q";
    cr.sequence_id = 42;
    ProtobufCMessage *resp = NULL;
    assert_int_equal(rpc_unary(d->ch, T_CLOSE, NULL, &cr.base,
                               &kvtier__v1__close_sequence_response__descriptor, &resp, &st),
                     GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(resp, NULL);
    assert_int_equal(open_seq(d->ch, "q", 43, 1, BIG, &st), GRPC_STATUS_OK);
    /* bytes: 1 MiB = 16 blocks over two sequences, then one more is refused */
    assert_int_equal(put_range(d->ch, "q", 40, 0, 8, BIG, &st), GRPC_STATUS_OK);
    assert_int_equal(put_range(d->ch, "q", 41, 0, 8, BIG, &st), GRPC_STATUS_OK);
    expect(put_range(d->ch, "q", 43, 0, 1, BIG, &st), &st, GRPC_STATUS_RESOURCE_EXHAUSTED,
           "tenant q stores 1048576 bytes; this put adds 65536 more, over its quota of 1048576 "
           "bytes (kvtierd --tenant-max-bytes)");
    assert_int_equal(put_range(d->ch, "q", 40, 0, 1, BIG, &st), GRPC_STATUS_OK); /* replaces */
    assert_int_equal(put_range(d->ch, "other", 43, 0, 1, BIG, &st), GRPC_STATUS_OK);
}

static void test_help_lists_limits(void **state) {
    (void)state;
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' --help", g_bin);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char out[16384];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    pclose(p);
    const char *flags[] = {"--max-seq-blocks", "--max-fetch-refs", "--max-staged",
                           "--tenant-max-sequences", "--tenant-max-bytes"};
    for (size_t i = 0; i < 5; i++)
        assert_non_null(strstr(out, flags[i]));
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH_TO_KVTIERD\n", argv[0]);
        return 2;
    }
    g_bin = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seq_blocks),        cmocka_unit_test(test_fetch_refs),
        cmocka_unit_test(test_staged_total),      cmocka_unit_test(test_tenant_quotas),
        cmocka_unit_test(test_help_lists_limits),
    };
    return cmocka_run_group_tests_name("kvtierd_limits", tests, setup, teardown) ? 1 : 0;
}
