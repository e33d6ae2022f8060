/* Block index: record codecs round trip, growth keeps state, hash lookup,
 * sparse storage (chunks on first use, growth records), its fault seam. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tier_index.h"

static tier_seq_info shape(void) {
    tier_seq_info i = {.n_layers = 3,
                       .n_kv_heads = 8,
                       .head_dim = 128,
                       .block_tokens = 16,
                       .max_blocks = 1000,
                       .block_bytes = 65536};
    return i;
}

static void test_seq_record(void **st) {
    (void)st;
    tier_index ix;
    assert_int_equal(tier_index_init(&ix), 0);
    tier_seq_info info = shape();
    policy_params p;
    policy_params_init(&p);
    p.top_p = 0.9;
    p.host_budget_bytes = 123456789012ULL;
    p.n_layer_budgets = 3;
    p.layer_hot_budget[2] = 77;
    p.retain_on_close = 1;
    tier_seqent *se = tier_index_add(&ix, "acme", 42, &info, &p);
    assert_non_null(se);
    se->created_ms = 1700000000123ULL;
    se->open = 0;
    assert_int_equal(tier_index_grow(se, 20, TIER_HOT, 5), 0);
    se->st.step = 321;
    uint8_t buf[TIER_SEQREC_MAX];
    size_t n = tier_seqrec_encode(se, buf);
    tier_seq_info i2;
    policy_params p2;
    int open;
    uint64_t created, step;
    uint32_t nb;
    assert_int_equal(tier_seqrec_decode(buf, n, &i2, &p2, &open, &created, &step, &nb), 0);
    assert_int_equal(i2.n_layers, 3);
    assert_int_equal(i2.block_bytes, 65536);
    assert_int_equal(i2.max_blocks, 1000);
    assert_true(p2.top_p == 0.9);
    assert_true(p2.host_budget_bytes == 123456789012ULL);
    assert_int_equal(p2.n_layer_budgets, 3);
    assert_int_equal(p2.layer_hot_budget[2], 77);
    assert_int_equal(p2.retain_on_close, 1);
    assert_int_equal(open, 0);
    assert_true(created == 1700000000123ULL);
    assert_int_equal(step, 321);
    assert_int_equal(nb, 20);
    assert_int_equal(tier_seqrec_decode(buf, n - 1, &i2, &p2, &open, &created, &step, &nb), -1);
    buf[0] = 99;
    assert_int_equal(tier_seqrec_decode(buf, n, &i2, &p2, &open, &created, &step, &nb), -1);
    tier_index_free(&ix);
}

static void test_block_record(void **st) {
    (void)st;
    policy_block b = {TIER_SSD, 65536, 987654321ULL, 12, 3};
    tier_slot s = {.crc = 0xDEADBEEF, .ntokens = 16, .durable = 1, .notify_drop = 0, .host = NULL};
    uint8_t buf[TIER_BLOCKREC_LEN];
    tier_blockrec_encode(&b, &s, buf);
    policy_block b2;
    tier_slot s2;
    memset(&s2, 0, sizeof s2);
    assert_int_equal(tier_blockrec_decode(buf, sizeof buf, &b2, &s2), 0);
    assert_int_equal(b2.tier, TIER_SSD);
    assert_int_equal(b2.bytes, 65536);
    assert_true(b2.last_active == 987654321ULL);
    assert_int_equal(b2.hits, 12);
    assert_int_equal(b2.revivals, 3);
    assert_int_equal(s2.crc, 0xDEADBEEF);
    assert_int_equal(s2.ntokens, 16);
    assert_int_equal(s2.durable, 1);
    buf[1] = 9; /* bad tier */
    assert_int_equal(tier_blockrec_decode(buf, sizeof buf, &b2, &s2), -1);
    assert_int_equal(tier_blockrec_decode(buf, 5, &b2, &s2), -1);
}

static void test_grow_keeps_state(void **st) {
    (void)st;
    tier_index ix;
    tier_index_init(&ix);
    tier_seq_info info = shape();
    policy_params p;
    policy_params_init(&p);
    tier_seqent *se = tier_index_add(&ix, "t", 1, &info, &p);
    assert_int_equal(tier_index_grow(se, 10, TIER_HOT, 7), 0);
    assert_null(tier_seq_block(se, 2, 9)); /* growing stores nothing */
    assert_int_equal(se->st.n_chunks, 0);
    assert_non_null(tier_index_touch(se, 2, 9));
    tier_seq_block(se, 2, 9)->revivals = 5;
    assert_non_null(tier_index_touch(se, 1, 3));
    tier_seq_slot(se, 1, 3)->crc = 77;
    assert_int_equal(tier_seq_block(se, 1, 3)->last_active, 7); /* the values it had */
    assert_int_equal(tier_index_grow(se, 300, TIER_NONE, 9), 0);
    assert_int_equal(se->st.n_blocks, 300);
    assert_int_equal(tier_seq_block(se, 2, 9)->revivals, 5);
    assert_int_equal(tier_seq_block(se, 2, 9)->tier, TIER_HOT);
    assert_int_equal(tier_seq_slot(se, 1, 3)->crc, 77);
    /* a stored chunk across the old end: its new blocks got the new values */
    assert_int_equal(tier_seq_block(se, 2, 10)->tier, TIER_NONE);
    assert_int_equal(tier_seq_block(se, 2, 10)->last_active, 9);
    policy_block b;
    tier_slot sl;
    tier_index_peek(se, 2, 299, &b, &sl);
    assert_int_equal(b.tier, TIER_NONE);
    assert_int_equal(b.last_active, 9);
    tier_index_peek(se, 0, 5, &b, NULL); /* never stored: the first growth's values */
    assert_int_equal(b.tier, TIER_HOT);
    assert_int_equal(b.last_active, 7);
    tier_index_peek(se, 1, 3, &b, &sl);
    assert_int_equal(sl.crc, 77);
    tier_index_peek(se, 0, 300, &b, &sl); /* past the end */
    assert_int_equal(b.tier, TIER_NONE);
    assert_int_equal(tier_index_grow(se, 5, TIER_HOT, 0), 0); /* never shrinks */
    assert_int_equal(se->st.n_blocks, 300);
    assert_int_equal(tier_index_grow(se, 1000, TIER_NONE, 9), 0); /* same values: no record */
    assert_int_equal(se->n_grows, 2);
    assert_int_equal(se->st.n_chunks, 2);
    assert_int_equal(tier_index_entries(se), 2 * POLICY_CHUNK_BLOCKS + 2);
    tier_index_free(&ix);
}

/* The issue-9 shape: 256 layers, one block at 65535. The index holds one
 * chunk and one growth record, whatever the block id; everything else reads
 * as the growth made it. */
static void test_sparse_far_block(void **st) {
    (void)st;
    tier_index ix;
    tier_index_init(&ix);
    tier_seq_info info = shape();
    info.n_layers = 256;
    info.max_blocks = 0;
    policy_params p;
    policy_params_init(&p);
    tier_seqent *se = tier_index_add(&ix, "t", 2, &info, &p);
    assert_int_equal(tier_index_grow(se, 65536, TIER_HOT, 3), 0);
    policy_block *x = tier_index_touch(se, 255, 65535);
    assert_non_null(x);
    x->tier = TIER_SSD;
    x->bytes = 1;
    assert_int_equal(se->st.n_chunks, 1);
    assert_true(se->st.table_size <= 16);
    assert_int_equal(tier_index_entries(se), POLICY_CHUNK_BLOCKS + 1);
    uint64_t n[TIER_NLEVELS];
    tier_index_unstored(se, n);
    assert_true(n[TIER_HOT] == 256ull * 65536 - POLICY_CHUNK_BLOCKS);
    assert_true(n[TIER_SSD] == 0 && n[TIER_NONE] == 0);
    policy_block b;
    tier_index_peek(se, 0, 0, &b, NULL);
    assert_int_equal(b.tier, TIER_HOT);
    assert_int_equal(b.last_active, 3);
    /* a close with retain: unstored HOT blocks become DROPPED, stored ones
     * are the caller's */
    tier_index_retier_unstored(se, TIER_HOT, TIER_DROPPED);
    tier_index_peek(se, 7, 100, &b, NULL);
    assert_int_equal(b.tier, TIER_DROPPED);
    assert_int_equal(tier_seq_block(se, 255, 65535)->tier, TIER_SSD);
    assert_int_equal(tier_seq_block(se, 255, 65472)->tier, TIER_HOT);
    size_t pos = 0, seen = 0;
    for (tier_chunk *c; (c = tier_index_next_chunk(se, &pos));) {
        assert_int_equal(c->pc.layer, 255);
        assert_int_equal(c->pc.first, 65536 - POLICY_CHUNK_BLOCKS);
        seen++;
    }
    assert_int_equal(seen, 1);
    tier_index_free(&ix);
}

/* Dense use: every block of 4 layers x 10000 stored and found again; growth
 * in many steps with alternating values; tier map = stored + unstored. */
static void test_dense_and_mixed_growth(void **st) {
    (void)st;
    tier_index ix;
    tier_index_init(&ix);
    tier_seq_info info = shape();
    info.n_layers = 4;
    info.max_blocks = 0;
    policy_params p;
    policy_params_init(&p);
    tier_seqent *se = tier_index_add(&ix, "t", 3, &info, &p);
    for (uint32_t nb = 100; nb <= 10000; nb += 100)
        assert_int_equal(tier_index_grow(se, nb, (nb / 100) % 2 ? TIER_HOT : TIER_NONE, nb), 0);
    assert_int_equal(se->n_grows, 100);
    uint8_t *m = malloc(4 * 10000);
    tier_index_fill_tiers(se, m);
    for (uint32_t l = 0; l < 4; l++)
        for (uint32_t b = 0; b < 10000; b += 37) {
            policy_block pb;
            tier_index_peek(se, l, b, &pb, NULL);
            uint32_t g = b / 100 * 100; /* made by the growth to g + 100 */
            assert_int_equal(pb.tier, ((g + 100) / 100) % 2 ? TIER_HOT : TIER_NONE);
            assert_int_equal(pb.last_active, g + 100);
            assert_int_equal(m[l * 10000 + b], pb.tier);
        }
    for (uint32_t l = 0; l < 4; l++)
        for (uint32_t b = 0; b < 10000; b++) {
            policy_block before;
            tier_index_peek(se, l, b, &before, NULL);
            policy_block *x = tier_index_touch(se, l, b);
            assert_non_null(x);
            assert_int_equal(x->tier, before.tier); /* storing keeps the values */
            assert_int_equal(x->last_active, before.last_active);
            x->revivals = l * 100000 + b;
            x->tier = TIER_SSD;
        }
    uint32_t per_layer = (10000 + POLICY_CHUNK_BLOCKS - 1) / POLICY_CHUNK_BLOCKS;
    assert_int_equal(se->st.n_chunks, 4 * per_layer);
    assert_true(se->st.table_size >= 2 * se->st.n_chunks);
    for (uint32_t l = 0; l < 4; l++)
        for (uint32_t b = 0; b < 10000; b++)
            assert_int_equal(tier_seq_block(se, l, b)->revivals, l * 100000 + b);
    uint64_t n[TIER_NLEVELS];
    tier_index_unstored(se, n);
    for (int i = 0; i < TIER_NLEVELS; i++)
        assert_true(n[i] == 0);
    tier_index_fill_tiers(se, m);
    for (size_t i = 0; i < 4 * 10000; i++)
        assert_int_equal(m[i], TIER_SSD);
    free(m);
    tier_index_free(&ix);
}

/* Every allocation of the new structure goes through the fault seam: a
 * growth record, a chunk, the chunk table when it doubles. A failure changes
 * nothing. */
static void test_alloc_faults(void **st) {
    (void)st;
    tier_index ix;
    tier_index_init(&ix);
    tier_seq_info info = shape();
    policy_params p;
    policy_params_init(&p);
    tier_seqent *se = tier_index_add(&ix, "t", 4, &info, &p);
    long h0 = tier_index_fault_set(1);
    assert_int_equal(tier_index_grow(se, 1000, TIER_HOT, 1), -1); /* the first record */
    assert_int_equal(tier_index_fault_set(0), h0 + 1);
    assert_int_equal(se->st.n_blocks, 0);
    assert_int_equal(tier_index_grow(se, 1000, TIER_HOT, 1), 0);
    for (uint32_t b = 0; b < 8 * POLICY_CHUNK_BLOCKS; b += POLICY_CHUNK_BLOCKS)
        assert_non_null(tier_index_touch(se, 0, b)); /* 8 chunks: the table of 16 is full */
    assert_int_equal(se->st.table_size, 16);
    tier_index_fault_set(1); /* the bigger table */
    assert_null(tier_index_touch(se, 1, 0));
    assert_int_equal(tier_index_fault_set(0), h0 + 2);
    assert_int_equal(se->st.n_chunks, 8);
    assert_int_equal(se->st.table_size, 16);
    tier_index_fault_set(2); /* the table works, the chunk fails */
    assert_null(tier_index_touch(se, 1, 0));
    assert_int_equal(tier_index_fault_set(0), h0 + 3);
    assert_int_equal(se->st.n_chunks, 8);
    assert_null(tier_seq_block(se, 1, 0));
    for (uint32_t b = 0; b < 8 * POLICY_CHUNK_BLOCKS; b += POLICY_CHUNK_BLOCKS)
        assert_non_null(tier_seq_block(se, 0, b)); /* still found after the new table */
    assert_non_null(tier_index_touch(se, 1, 0));
    assert_int_equal(se->st.n_chunks, 9);
    tier_index_free(&ix);
}

static void test_many_sequences(void **st) {
    (void)st;
    tier_index ix;
    tier_index_init(&ix);
    tier_seq_info info = shape();
    policy_params p;
    policy_params_init(&p);
    char t[16];
    for (uint64_t i = 0; i < 2000; i++) {
        snprintf(t, sizeof t, "ten%llu", (unsigned long long)(i % 7));
        assert_non_null(tier_index_add(&ix, t, i, &info, &p));
    }
    assert_int_equal(ix.count, 2000);
    for (uint64_t i = 0; i < 2000; i++) {
        snprintf(t, sizeof t, "ten%llu", (unsigned long long)(i % 7));
        tier_seqent *se = tier_index_find(&ix, t, i);
        assert_non_null(se);
        assert_int_equal(se->seq, i);
        snprintf(t, sizeof t, "ten%llu", (unsigned long long)((i + 1) % 7));
        assert_null(tier_index_find(&ix, t, i));
    }
    tier_index_remove(&ix, tier_index_find(&ix, "ten3", 3));
    assert_null(tier_index_find(&ix, "ten3", 3));
    assert_int_equal(ix.count, 1999);
    uint8_t k1[TIER_META_KEY_MAX], k2[TIER_META_KEY_MAX];
    size_t n1 = tier_meta_prefix_blocks("a", 5, k1);
    size_t n2 = tier_meta_key_block("a", 5, 1, 2, k2);
    assert_true(n2 > n1);
    assert_memory_equal(k1, k2, n1);
    assert_int_equal(k1[0], 'B');
    assert_int_equal(tier_meta_key_seq("a", 5, k1), n1);
    assert_int_equal(k1[0], 'S');
    tier_index_free(&ix);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seq_record),
        cmocka_unit_test(test_block_record),
        cmocka_unit_test(test_grow_keeps_state),
        cmocka_unit_test(test_sparse_far_block),
        cmocka_unit_test(test_dense_and_mixed_growth),
        cmocka_unit_test(test_alloc_faults),
        cmocka_unit_test(test_many_sequences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
