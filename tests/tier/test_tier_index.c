/* Block index: record codecs round trip, growth keeps state, hash lookup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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
    tier_seq_block(se, 2, 9)->revivals = 5;
    tier_seq_slot(se, 1, 3)->crc = 77;
    assert_int_equal(tier_index_grow(se, 300, TIER_NONE, 9), 0);
    assert_true(se->st.stride >= 300);
    assert_int_equal(se->st.n_blocks, 300);
    assert_int_equal(tier_seq_block(se, 2, 9)->revivals, 5);
    assert_int_equal(tier_seq_block(se, 2, 9)->tier, TIER_HOT);
    assert_int_equal(tier_seq_slot(se, 1, 3)->crc, 77);
    assert_int_equal(tier_seq_block(se, 2, 299)->tier, TIER_NONE);
    assert_int_equal(tier_seq_block(se, 0, 10)->last_active, 9);
    assert_int_equal(tier_index_grow(se, 5, TIER_HOT, 0), 0); /* never shrinks */
    assert_int_equal(se->st.n_blocks, 300);
    assert_int_equal(tier_index_grow(se, 1000, TIER_HOT, 0), 0);
    assert_int_equal(se->st.stride, 1000); /* capped at max_blocks */
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
        cmocka_unit_test(test_many_sequences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
