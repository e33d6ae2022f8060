/* test_kvcache_policy.c - attention summaries (top-p active sets, windows,
 * SnapKV observation window, cumulative mass) and the local policies (full,
 * drop, window, h2o), alone and applied by the cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache.h"
#include "local_policy.h"
#include "summary.h"
#include "threadpool.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t urand(void) {
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}

/* ---------------------------------------------------------------- top-p */

static int brute_top_p(const float *m, int n, float top_p, uint8_t *act) {
    int *ix = malloc((size_t)n * sizeof *ix);
    for (int i = 0; i < n; i++)
        ix[i] = i;
    for (int i = 1; i < n; i++) /* insertion sort: mass desc, index asc */
        for (int j = i;
             j > 0 && (m[ix[j]] > m[ix[j - 1]] || (m[ix[j]] == m[ix[j - 1]] && ix[j] < ix[j - 1]));
             j--) {
            int t = ix[j];
            ix[j] = ix[j - 1], ix[j - 1] = t;
        }
    double tot = 0, acc = 0;
    for (int i = 0; i < n; i++)
        tot += m[i] > 0 ? m[i] : 0;
    memset(act, 0, (size_t)n);
    int c = 0;
    for (int i = 0; i < n && acc < top_p * tot && m[ix[i]] > 0; i++)
        act[ix[i]] = 1, acc += m[ix[i]], c++;
    free(ix);
    return c;
}

static void test_top_p_set(void **st) {
    (void)st;
    const float tps[] = {0.5f, 0.9f, 0.95f, 0.99f, 1.0f};
    for (int trial = 0; trial < 400; trial++) {
        int n = 1 + (int)(urand() % 300);
        float *m = malloc((size_t)n * sizeof *m);
        for (int i = 0; i < n; i++) {
            uint32_t r = urand() % 10;
            m[i] = r == 0
                       ? 0.0f
                       : (r == 1 ? 0.25f : (float)(urand() % 100000) / 100000.0f); /* zeros, ties */
            if (trial % 3 == 0)
                m[i] = m[i] * m[i] * m[i] * m[i]; /* skewed */
        }
        uint8_t *a = malloc((size_t)n), *b = malloc((size_t)n);
        int *scratch = malloc((size_t)n * sizeof *scratch);
        float tp = tps[trial % 5];
        int ca = summary_top_p_set(m, n, tp, a, scratch), cb = brute_top_p(m, n, tp, b);
        assert_int_equal(ca, cb);
        assert_memory_equal(a, b, (size_t)n);
        free(m), free(a), free(b), free(scratch);
    }
    float z[3] = {0, 0, 0};
    uint8_t a[3];
    int s[3];
    assert_int_equal(summary_top_p_set(z, 3, 0.95f, a, s), 0);
    float one[3] = {0.0f, 1.0f, 0.0f};
    assert_int_equal(summary_top_p_set(one, 3, 0.95f, a, s), 1);
    assert_int_equal(a[1], 1);
}

/* ---------------------------------------------------------------- summaries via attention */

/* Layer with 4 blocks (64 tokens): block 3 keys = 3*e0, all others 0, v = 0.
 * Head 0 (q = +10 e0) puts ~all mass on block 3; head 1 (q = -10 e0) spreads
 * it evenly over blocks 0..2. */
static kvcache_t *make_peaked(int *seq, int window) {
    kvcache_opts o = {
        .n_layers = 2, .n_heads = 2, .n_kv_heads = 1, .head_dim = 8, .kv_dtype = DT_F32};
    char err[200];
    kvcache_t *kv = kvcache_new(&o, err, sizeof err);
    assert_non_null(kv);
    *seq = kvcache_seq_new(kv);
    assert_int_equal(kvcache_seq_stats(kv, *seq, 1, 0.95f, window), KV_OK);
    float k[8] = {0}, v[8] = {0};
    for (int l = 0; l < 2; l++)
        for (int p = 0; p < 64; p++) {
            k[0] = p / 16 == 3 ? 3.0f : 0.0f;
            assert_int_equal(kvcache_append(kv, *seq, l, p, k, v), KV_OK);
        }
    return kv;
}

static void peaked_q(float *q, int rows) {
    memset(q, 0, (size_t)rows * 16 * sizeof(float));
    for (int r = 0; r < rows; r++)
        q[r * 16 + 0] = 10.0f, q[r * 16 + 8] = -10.0f;
}

static void test_active_set_and_window(void **st) {
    (void)st;
    int seq;
    kvcache_t *kv = make_peaked(&seq, 4);
    float q[64 * 16], out[64 * 16];
    peaked_q(q, 64);
    /* prefill of rows 48..63 on layer 0: only the last W = 4 rows observed */
    threadpool_t *tp = tp_new(3); /* per-thread cumulative masses are reduced */
    assert_non_null(tp);
    assert_int_equal(kvcache_attend(kv, seq, 0, q, 16, 48, out, tp), KV_OK);
    tp_free(tp);
    summary_t *s = kvcache_summary(kv, seq);
    assert_non_null(s);
    int n;
    const summary_block_t *B = summary_layer_blocks(s, 0, &n);
    assert_int_equal(n, 4);
    assert_int_equal(s->layers[0].win_steps, 4);
    assert_int_equal(s->layers[0].cur_step, 63);
    assert_int_equal(s->layers[0].last_active_n, 4); /* union of {3} and {0,1,2} */
    for (int b = 0; b < 4; b++) {
        assert_int_equal(B[b].win_count, 4);
        assert_int_equal(B[b].last_active, 63);
    }
    assert_true(B[3].peak_mass > 0.999f);
    assert_true(fabsf(B[0].peak_mass - 1.0f / 3.0f) < 1e-3f);
    /* cum_mass takes every row of the chunk: 16 rows x 2 heads of mass 1 */
    double cum = 0;
    for (int b = 0; b < 4; b++)
        cum += B[b].cum_mass;
    assert_true(fabs(cum - 32.0) < 1e-3);
    assert_true(B[3].cum_mass > 15.9f && B[3].cum_mass < 16.1f);
    /* layer 1 untouched */
    assert_int_equal(s->layers[1].win_steps, 0);
    assert_int_equal(summary_window_steps(s), 4);

    /* new window; decode steps with head 1 only looking at block 3 too */
    summary_reset_window(s);
    assert_int_equal(B[0].win_count, 0);
    assert_true(B[3].peak_mass == 0.0f);
    assert_int_equal(B[0].last_active, 63); /* kept */
    assert_int_equal(s->win_start, 64);
    float k[8] = {0}, v[8] = {0};
    for (int p = 64; p < 70; p++) {
        assert_int_equal(kvcache_append(kv, seq, 0, p, k, v), KV_OK);
        float qq[16] = {0};
        qq[0] = 10.0f, qq[8] = 10.0f; /* both heads on block 3 */
        assert_int_equal(kvcache_attend(kv, seq, 0, qq, 1, p, out, NULL), KV_OK);
    }
    B = summary_layer_blocks(s, 0, &n);
    assert_int_equal(n, 5);
    assert_int_equal(B[3].win_count, 6);
    assert_int_equal(B[3].last_active, 69);
    assert_int_equal(B[0].win_count, 0);
    assert_int_equal(B[0].last_active, 63);
    assert_int_equal(B[4].last_active, 64); /* new block: its first position */
    assert_int_equal(s->layers[0].last_active_n, 1);
    assert_int_equal(s->layers[0].win_active_max, 1);
    /* iteration: only the active ones, in (layer, block) order */
    int64_t cur = 0;
    summary_entry_t e;
    int seen = 0;
    while (summary_next(s, &cur, 1, &e)) {
        assert_int_equal(e.layer, 0);
        assert_int_equal(e.block, 3);
        assert_true(e.active);
        seen++;
    }
    assert_int_equal(seen, 1);
    /* recalled / demoted flags */
    void *bytes;
    size_t len;
    assert_int_equal(kvcache_block_take(kv, seq, 0, 1, &bytes, &len), KV_OK);
    assert_int_equal(kvcache_block_put(kv, seq, 0, 1, bytes, len), KV_OK);
    free(bytes);
    assert_int_equal(B[1].recalled, 1);
    assert_int_equal(B[1].demoted, 1);
    cur = 0, seen = 0;
    while (summary_next(s, &cur, 0, &e))
        seen++;
    assert_int_equal(seen, 5 + 4);
    kvcache_free(kv);
}

/* ---------------------------------------------------------------- policies (pure) */

static void test_policy_full_and_budget(void **st) {
    (void)st;
    local_policy_params p;
    local_policy_defaults(&p, LP_FULL);
    uint8_t state[20] = {0};
    local_policy_view v = {.n_blocks = 20, .state = state, .stats = NULL, .cur_step = 10000};
    int vic[20];
    p.hot_blocks = 2;
    assert_int_equal(local_policy_decide(&p, &v, 0, 1, vic, 20), 0);
    assert_int_equal(local_policy_budget(&p, 0, 20), 2);
    p.hot_blocks = 0;
    assert_int_equal(local_policy_budget(&p, 0, 20), INT32_MAX);
    p.hot_frac = 0.5f;
    assert_int_equal(local_policy_budget(&p, 0, 20), 10);
    assert_int_equal(local_policy_budget(&p, 0, 4), 5); /* at least sink + R */
    int per_layer[2] = {0, 7};
    p.layer_hot_blocks = per_layer, p.n_layer_budgets = 2;
    assert_int_equal(local_policy_budget(&p, 1, 20), 7);
    assert_int_equal(local_policy_budget(&p, 0, 20), 10);
    local_policy_t k;
    assert_int_equal(local_policy_parse("h2o", &k), 0);
    assert_int_equal(k, LP_H2O);
    assert_int_equal(local_policy_parse("lru", &k), -1);
    assert_string_equal(local_policy_name(LP_WINDOW), "window");
    assert_int_equal(local_policy_decide(NULL, &v, 0, 0, vic, 20), -1);
    assert_int_equal(local_policy_decide(&p, &v, 0, -1, vic, 20), -1);
}

static void test_policy_drop(void **st) {
    (void)st;
    local_policy_params p;
    local_policy_defaults(&p, LP_DROP); /* T 50, R 4, sink 1 */
    uint8_t state[20] = {0};
    summary_block_t stats[20];
    memset(stats, 0, sizeof stats);
    for (int b = 0; b < 20; b++)
        stats[b].last_active = 300 + b; /* all recent */
    stats[0].last_active = 0;           /* sink: protected */
    stats[18].last_active = 0;          /* recent: protected */
    stats[5].last_active = 100;         /* inactive */
    stats[7].last_active = 268;         /* exactly T + 1 steps ago */
    stats[8].last_active = 269;         /* exactly T steps ago: still kept */
    state[9] = KV_BLOCK_OUT;            /* not hot: never a victim */
    stats[9].last_active = 0;
    local_policy_view v = {.n_blocks = 20, .state = state, .stats = stats, .cur_step = 319};
    int vic[20];
    int n = local_policy_decide(&p, &v, 0, 1, vic, 20);
    assert_int_equal(n, 2);
    assert_int_equal(vic[0], 5);
    assert_int_equal(vic[1], 7);
    /* budget 10 with one slot needed: 19 hot - 2 inactive = 17 -> evict 8
     * more, longest inactive first: 8 (269), then 1, 2, 3, 4, 6, 10, 11 */
    p.hot_blocks = 10;
    n = local_policy_decide(&p, &v, 0, 1, vic, 20);
    assert_int_equal(n, 10);
    const int want[] = {1, 2, 3, 4, 5, 6, 7, 8, 10, 11};
    assert_memory_equal(vic, want, sizeof want);
    /* max truncates */
    assert_int_equal(local_policy_decide(&p, &v, 0, 1, vic, 3), 3);
    /* budget below sink + R: protected blocks stay */
    p.hot_blocks = 1;
    n = local_policy_decide(&p, &v, 0, 0, vic, 20);
    assert_int_equal(n, 14); /* every unprotected hot block: 1..15 minus 9 */
    for (int i = 0; i < n; i++)
        assert_true(vic[i] >= 1 && vic[i] < 16 && vic[i] != 9);
}

static void test_policy_window(void **st) {
    (void)st;
    local_policy_params p;
    local_policy_defaults(&p, LP_WINDOW);
    uint8_t state[20] = {0};
    state[3] = KV_BLOCK_DROPPED;
    local_policy_view v = {.n_blocks = 20, .state = state, .stats = NULL, .cur_step = 319};
    int vic[20];
    int n = local_policy_decide(&p, &v, 0, 0, vic, 20); /* no budget: sink + R */
    assert_int_equal(n, 14);                            /* 1..15 minus 3 */
    for (int i = 0; i < n; i++)
        assert_true(vic[i] >= 1 && vic[i] <= 15 && vic[i] != 3);
    p.hot_blocks = 8;
    n = local_policy_decide(&p, &v, 0, 1, vic, 20); /* keep 0 + last 6 (room for 1) */
    assert_int_equal(n, 12);                        /* 1..13 minus 3 */
    assert_int_equal(vic[0], 1);
    assert_int_equal(vic[n - 1], 13);
}

static void test_policy_h2o(void **st) {
    (void)st;
    local_policy_params p;
    local_policy_defaults(&p, LP_H2O);
    p.hot_blocks = 6;
    uint8_t state[12] = {0};
    summary_block_t stats[12];
    memset(stats, 0, sizeof stats);
    const float cm[12] = {0.1f, 5, 0.2f, 3, 0.3f, 9, 0.4f, 7, 0, 0, 0, 0};
    for (int b = 0; b < 12; b++)
        stats[b].cum_mass = cm[b];
    local_policy_view v = {.n_blocks = 12, .state = state, .stats = stats, .cur_step = 191};
    int vic[12];
    /* 12 hot, budget 6: evict 6 of the unprotected 1..7, lightest first:
     * 2 (0.2), 4, 6, 3 (3), 1 (5), 7 (7); keep 5 (9) */
    int n = local_policy_decide(&p, &v, 0, 0, vic, 12);
    assert_int_equal(n, 6);
    const int want[] = {1, 2, 3, 4, 6, 7};
    assert_memory_equal(vic, want, sizeof want);
    p.hot_blocks = 11; /* one over budget with need 0 */
    n = local_policy_decide(&p, &v, 0, 0, vic, 12);
    assert_int_equal(n, 1);
    assert_int_equal(vic[0], 2);
    p.hot_blocks = 12;
    assert_int_equal(local_policy_decide(&p, &v, 0, 0, vic, 12), 0);
}

/* ---------------------------------------------------------------- policies applied by the cache */

static void test_policy_in_cache(void **st) {
    (void)st;
    kvcache_opts o = {.n_layers = 1,
                      .n_heads = 2,
                      .n_kv_heads = 1,
                      .head_dim = 8,
                      .kv_dtype = DT_F32,
                      .pool_blocks = 6};
    char err[200];
    kvcache_t *kv = kvcache_new(&o, err, sizeof err);
    int seq = kvcache_seq_new(kv);
    float k[8] = {0}, v[8] = {0}, q[16] = {0}, out[16];
    /* without a policy the pool fills up */
    for (int p = 0; p < 96; p++)
        assert_int_equal(kvcache_append(kv, seq, 0, p, k, v), KV_OK);
    assert_int_equal(kvcache_append(kv, seq, 0, 96, k, v), KV_EFULL);
    /* make_room with a window policy and need 1 */
    local_policy_params pol;
    local_policy_defaults(&pol, LP_WINDOW);
    pol.hot_blocks = 6;
    int n = kvcache_make_room(kv, seq, 0, &pol, 1);
    assert_int_equal(n, 1);
    assert_int_equal(kvcache_block_state(kv, seq, 0, 1), KV_BLOCK_DROPPED);
    assert_int_equal(kvcache_append(kv, seq, 0, 96, k, v), KV_OK);
    /* attached policy: appends never fail, sink + recent stay hot */
    assert_int_equal(kvcache_seq_set_policy(kv, seq, &pol), KV_OK);
    for (int p = 97; p < 400; p++) {
        assert_int_equal(kvcache_append(kv, seq, 0, p, k, v), KV_OK);
        assert_true(kvcache_hot_blocks(kv, seq, 0) <= 6);
        assert_int_equal(kvcache_attend(kv, seq, 0, q, 1, p, out, NULL), KV_OK);
    }
    int nb = kvcache_seq_blocks(kv, seq, 0);
    assert_int_equal(nb, 25);
    assert_int_equal(kvcache_block_state(kv, seq, 0, 0), KV_BLOCK_HOT);
    for (int b = nb - 5; b < nb; b++)
        assert_int_equal(kvcache_block_state(kv, seq, 0, b), KV_BLOCK_HOT);
    for (int b = 1; b < nb - 5; b++)
        assert_int_equal(kvcache_block_state(kv, seq, 0, b), KV_BLOCK_DROPPED);
    /* drop policy with stats: a block the queries keep using survives */
    kvcache_seq_free(kv, seq);
    seq = kvcache_seq_new(kv);
    assert_int_equal(kvcache_seq_stats(kv, seq, 1, 0.95f, 16), KV_OK);
    local_policy_defaults(&pol, LP_DROP);
    pol.hot_blocks = 6;
    pol.recent_blocks = 2; /* sink + 2 recent + new tail leave room for 2 more */
    assert_int_equal(kvcache_seq_set_policy(kv, seq, &pol), KV_OK);
    q[0] = q[8] = 10.0f;
    for (int p = 0; p < 400; p++) {
        k[0] = p / 16 == 2 ? 3.0f : 0.0f; /* block 2 is what attention wants */
        assert_int_equal(kvcache_append(kv, seq, 0, p, k, v), KV_OK);
        assert_int_equal(kvcache_attend(kv, seq, 0, q, 1, p, out, NULL), KV_OK);
    }
    assert_int_equal(kvcache_block_state(kv, seq, 0, 2), KV_BLOCK_HOT);
    assert_int_equal(kvcache_block_state(kv, seq, 0, 0), KV_BLOCK_HOT);
    assert_int_equal(kvcache_block_state(kv, seq, 0, 1), KV_BLOCK_DROPPED);
    assert_int_equal(kvcache_block_state(kv, seq, 0, 10), KV_BLOCK_DROPPED);
    const summary_block_t *B = summary_layer_blocks(kvcache_summary(kv, seq), 0, &nb);
    assert_int_equal(B[2].last_active, 399);
    kvcache_free(kv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_top_p_set),
        cmocka_unit_test(test_active_set_and_window),
        cmocka_unit_test(test_policy_full_and_budget),
        cmocka_unit_test(test_policy_drop),
        cmocka_unit_test(test_policy_window),
        cmocka_unit_test(test_policy_h2o),
        cmocka_unit_test(test_policy_in_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
