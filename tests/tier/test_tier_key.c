/* Key encoding: round trip, ordering like the tuples, prefix ranges. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tier_key.h"

typedef struct tup {
    const char *tenant;
    uint64_t seq;
    uint32_t layer, block;
} tup;

static int tup_cmp(const tup *a, const tup *b) {
    int c = strcmp(a->tenant, b->tenant);
    if (c)
        return c < 0 ? -1 : 1;
    if (a->seq != b->seq)
        return a->seq < b->seq ? -1 : 1;
    if (a->layer != b->layer)
        return a->layer < b->layer ? -1 : 1;
    if (a->block != b->block)
        return a->block < b->block ? -1 : 1;
    return 0;
}

static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl) {
    int c = memcmp(a, b, al < bl ? al : bl);
    if (c)
        return c < 0 ? -1 : 1;
    return al < bl ? -1 : al > bl;
}

static void test_roundtrip(void **st) {
    (void)st;
    uint8_t k[TIER_KEY_MAX];
    char tenant[TIER_KEY_TENANT_MAX + 1];
    uint64_t seq;
    uint32_t l, b;
    size_t n = tier_key_encode("acme", 0x0102030405060708ULL, 35, 4095, k);
    assert_int_equal(n, 4 + 1 + 16);
    assert_int_equal(k[5], 0x01); /* big-endian */
    assert_int_equal(tier_key_decode(k, n, tenant, &seq, &l, &b), 0);
    assert_string_equal(tenant, "acme");
    assert_true(seq == 0x0102030405060708ULL);
    assert_int_equal(l, 35);
    assert_int_equal(b, 4095);
    assert_int_equal(tier_key_decode(k, n - 1, tenant, &seq, &l, &b), -1);
    assert_int_equal(tier_key_decode(k + 4, n - 4, tenant, &seq, &l, &b), -1); /* empty tenant */
    char longt[80];
    memset(longt, 'x', sizeof longt);
    longt[64] = 0;
    assert_int_equal(tier_key_encode(longt, 1, 0, 0, k), TIER_KEY_MAX);
    longt[64] = 'x';
    longt[65] = 0;
    assert_int_equal(tier_key_encode(longt, 1, 0, 0, k), 0);
    assert_int_equal(tier_key_encode("", 1, 0, 0, k), 0);
    char err[100];
    assert_int_equal(tier_key_check_tenant(longt, err, sizeof err), -1);
    assert_non_null(strstr(err, "longer than 64"));
}

static void test_order(void **st) {
    (void)st;
    static const char *tenants[] = {"a", "ab", "b", "a\x7f", "B", "zz"};
    static const uint64_t seqs[] = {0, 1, 255, 256, 0xFFFFFFFFFFFFFFFFULL};
    static const uint32_t nums[] = {0, 1, 255, 256, 65536, 0xFFFFFFFFu};
    enum { N = 6 * 5 * 6 * 6 };
    tup *t = malloc(N * sizeof *t);
    uint8_t(*k)[TIER_KEY_MAX] = malloc(N * sizeof *k);
    size_t *kl = malloc(N * sizeof *kl);
    size_t n = 0;
    for (int a = 0; a < 6; a++)
        for (int s = 0; s < 5; s++)
            for (int l = 0; l < 6; l++)
                for (int b = 0; b < 6; b++) {
                    t[n] = (tup){tenants[a], seqs[s], nums[l], nums[b]};
                    kl[n] = tier_key_encode(t[n].tenant, t[n].seq, t[n].layer, t[n].block, k[n]);
                    assert_true(kl[n] > 0);
                    n++;
                }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j += 7) /* a dense sample of pairs */
            assert_int_equal(key_cmp(k[i], kl[i], k[j], kl[j]), tup_cmp(&t[i], &t[j]));
    free(t);
    free(k);
    free(kl);
}

static int in_range(const uint8_t *k, size_t kl, const uint8_t *lo, size_t ll, const uint8_t *hi,
                    size_t hl) {
    return key_cmp(k, kl, lo, ll) >= 0 && (hl == 0 || key_cmp(k, kl, hi, hl) < 0);
}

static void test_prefix_ranges(void **st) {
    (void)st;
    uint8_t lo[TIER_KEY_MAX], hi[TIER_KEY_MAX], k[TIER_KEY_MAX];
    size_t ll = tier_key_prefix_seq("a", 7, lo);
    size_t hl = tier_key_upper_bound(lo, ll, hi);
    assert_true(hl > 0);
    size_t kl = tier_key_encode("a", 7, 0xFFFFFFFFu, 0xFFFFFFFFu, k);
    assert_true(in_range(k, kl, lo, ll, hi, hl));
    kl = tier_key_encode("a", 7, 0, 0, k);
    assert_true(in_range(k, kl, lo, ll, hi, hl));
    kl = tier_key_encode("a", 8, 0, 0, k);
    assert_false(in_range(k, kl, lo, ll, hi, hl));
    kl = tier_key_encode("ab", 7, 0, 0, k); /* "a" must not cover "ab" */
    assert_false(in_range(k, kl, lo, ll, hi, hl));
    /* seq 0xFF..FF: the bound carries into the tenant's terminator */
    ll = tier_key_prefix_seq("a", UINT64_MAX, lo);
    hl = tier_key_upper_bound(lo, ll, hi);
    assert_int_equal(hl, 2);
    kl = tier_key_encode("a", UINT64_MAX, 3, 3, k);
    assert_true(in_range(k, kl, lo, ll, hi, hl));
    kl = tier_key_encode("a\x01", 0, 0, 0, k);
    assert_false(in_range(k, kl, lo, ll, hi, hl));
    /* layer range */
    ll = tier_key_prefix_layer("t", 1, 5, lo);
    hl = tier_key_upper_bound(lo, ll, hi);
    kl = tier_key_encode("t", 1, 5, 123, k);
    assert_true(in_range(k, kl, lo, ll, hi, hl));
    kl = tier_key_encode("t", 1, 6, 0, k);
    assert_false(in_range(k, kl, lo, ll, hi, hl));
    kl = tier_key_encode("t", 1, 4, 0xFFFFFFFFu, k);
    assert_false(in_range(k, kl, lo, ll, hi, hl));
    /* all 0xFF: no bound */
    uint8_t ff[3] = {0xFF, 0xFF, 0xFF};
    assert_int_equal(tier_key_upper_bound(ff, 3, hi), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_prefix_ranges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
