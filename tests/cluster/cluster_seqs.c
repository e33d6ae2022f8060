/* cluster_seqs.c — stores sequences with known block bytes through a tier
 * address (the load balancer or a shard) and checks them back, for the
 * cluster tests (remove_shard_test.sh).
 *
 *   cluster_seqs put ADDR FIRST COUNT   sequences FIRST..FIRST+COUNT-1 (tenant
 *       "default"): 2 layers x (3 + seq % 4) blocks of 4 KiB, payload
 *       itest_payload(seq, layer, block, 1), token count 16 (the last block of
 *       a layer: 7); closed retained, except seq % 5 == 0, left open.
 *   cluster_seqs check ADDR SEQ...      each sequence is there with every
 *       block stored and byte-identical, with its token count.
 * Prints one line per sequence; exit 0 when all went well, 1 otherwise, 2
 * usage. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "itest.h"
#include "kvtier.h"

#define LAYERS 2u
#define BLOCK_BYTES 4096u /* 16 tokens x 2 heads x 32 dims x 2 (K,V) x 2 bytes */

static uint32_t blocks_of(uint64_t seq) {
    return 3u + (uint32_t)(seq % 4);
}

static uint32_t tokens_of(uint64_t seq, uint32_t block) {
    return block + 1 == blocks_of(seq) ? 7u : 16u;
}

static kvtier_client *connect_to(const char *addr) {
    kvtier_connect_opts o = {0};
    o.address = addr;
    kvtier_error e;
    kvtier_client *c = kvtier_connect(&o, &e);
    if (!c)
        fprintf(stderr, "cluster_seqs: %s: %s\n", addr, e.message);
    return c;
}

static int put_one(kvtier_client *c, uint64_t seq) {
    kvtier_seq_shape sh = {.sequence_id = seq,
                           .layers = LAYERS,
                           .kv_heads = 2,
                           .head_dim = 32,
                           .block_tokens = 16,
                           .block_bytes = BLOCK_BYTES,
                           .retain_on_close = 1};
    kvtier_error e;
    uint32_t nb = blocks_of(seq);
    size_t n = (size_t)LAYERS * nb;
    uint8_t *buf = malloc(n * BLOCK_BYTES);
    kvtier_block *b = calloc(n, sizeof *b);
    kvtier_code code = buf && b ? kvtier_open_sequence(c, &sh, NULL, &e) : KVTIER_INTERNAL;
    for (size_t i = 0; code == KVTIER_OK && i < n; i++) {
        uint32_t l = (uint32_t)(i / nb), k = (uint32_t)(i % nb);
        itest_payload(buf + i * BLOCK_BYTES, BLOCK_BYTES, seq, l, k, 1);
        b[i] = (kvtier_block){.layer = l,
                              .block = k,
                              .payload = buf + i * BLOCK_BYTES,
                              .len = BLOCK_BYTES,
                              .token_count = tokens_of(seq, k)};
    }
    kvtier_put_result pr = {0};
    if (code == KVTIER_OK)
        code = kvtier_put_blocks(c, seq, b, n, &pr, &e);
    if (code == KVTIER_OK && pr.acked != n)
        code = KVTIER_DATA_LOSS;
    kvtier_put_result_free(&pr);
    int open = seq % 5 == 0;
    if (code == KVTIER_OK && !open)
        code = kvtier_close_sequence(c, seq, 1, NULL, NULL, &e);
    free(buf);
    free(b);
    if (code != KVTIER_OK) {
        printf("FAIL put %" PRIu64 ": %s: %s\n", seq, kvtier_code_name(code), e.message);
        return 1;
    }
    printf("put %" PRIu64 ": %zu blocks%s\n", seq, n, open ? " (left open)" : "");
    return 0;
}

typedef struct {
    uint64_t seq;
    size_t seen, bad;
} check_ctx;

static int on_block(const kvtier_fetched *f, void *user) {
    check_ctx *x = user;
    uint8_t want[BLOCK_BYTES];
    itest_payload(want, BLOCK_BYTES, x->seq, f->layer, f->block, 1);
    if (f->len != BLOCK_BYTES || memcmp(f->payload, want, BLOCK_BYTES) != 0 ||
        f->token_count != tokens_of(x->seq, f->block))
        x->bad++;
    x->seen++;
    return 0;
}

static int check_one(kvtier_client *c, uint64_t seq) {
    uint32_t nb = blocks_of(seq);
    size_t n = (size_t)LAYERS * nb;
    kvtier_tier_map m;
    kvtier_error e;
    kvtier_code code = kvtier_tier_map_get(c, seq, &m, &e);
    if (code != KVTIER_OK) {
        printf("FAIL check %" PRIu64 ": map: %s: %s\n", seq, kvtier_code_name(code), e.message);
        return 1;
    }
    uint64_t stored =
        kvtier_tier_map_count(&m, KVTIER_TIER_HOST) + kvtier_tier_map_count(&m, KVTIER_TIER_SSD);
    kvtier_tier_map_free(&m);
    if (stored != n) {
        printf("FAIL check %" PRIu64 ": %" PRIu64 " of %zu blocks stored\n", seq, stored, n);
        return 1;
    }
    kvtier_block_ref refs[LAYERS * 8];
    for (size_t i = 0; i < n; i++)
        refs[i] = (kvtier_block_ref){(uint32_t)(i / nb), (uint32_t)(i % nb)};
    check_ctx x = {seq, 0, 0};
    code = kvtier_fetch_blocks(c, seq, refs, n, on_block, &x, NULL, &e);
    if (code != KVTIER_OK || x.seen != n || x.bad) {
        printf("FAIL check %" PRIu64 ": fetch %s (%s): %zu of %zu blocks, %zu differ\n", seq,
               kvtier_code_name(code), code == KVTIER_OK ? "" : e.message, x.seen, n, x.bad);
        return 1;
    }
    printf("ok %" PRIu64 ": %zu blocks byte-identical\n", seq, n);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "put") && strcmp(argv[1], "check")) ||
        (!strcmp(argv[1], "put") && argc != 5)) {
        fprintf(stderr, "usage: cluster_seqs put ADDR FIRST COUNT | check ADDR SEQ...\n");
        return 2;
    }
    kvtier_client *c = connect_to(argv[2]);
    if (!c)
        return 1;
    int bad = 0;
    if (!strcmp(argv[1], "put")) {
        uint64_t first = strtoull(argv[3], NULL, 10), count = strtoull(argv[4], NULL, 10);
        for (uint64_t s = first; s < first + count; s++)
            bad |= put_one(c, s);
    } else {
        for (int i = 3; i < argc; i++)
            bad |= check_one(c, strtoull(argv[i], NULL, 10));
    }
    kvtier_client_free(c);
    return bad ? 1 : 0;
}
