/* test_trace_stats.c - trace statistics on hand-made attention rows: active
 * sets, entropy, sink mass, token and block revivals, bad input. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trace_stats.h"

#define BT 16

static trace_t *mk(int layers, int heads, int max_pos, float top_p, int gap) {
    trace_opts_t o = {.n_layers = layers,
                      .n_heads = heads,
                      .max_pos = max_pos,
                      .block_tokens = BT,
                      .top_p = top_p,
                      .gap = gap};
    return trace_new(&o);
}

/* Uniform rows: with top-p 1 every token is active every step, so nothing is
 * ever idle; entropy ln(n); sink mass 1/n. */
static void test_uniform(void **state) {
    (void)state;
    const int P = 100;
    trace_t *t = mk(1, 2, P, 1.0f, 10);
    assert_non_null(t);
    float *row = malloc(sizeof(float) * 2 * P);
    double ent = 0, sink = 0;
    for (int pos = 1; pos < P; pos++) {
        for (int i = 0; i < 2 * (pos + 1); i++)
            row[i] = 1.0f / (float)(pos + 1);
        assert_int_equal(trace_row(t, 0, pos, row), 0);
        ent += log(pos + 1.0);
        sink += 1.0 / (pos + 1);
    }
    trace_head_res_t h;
    assert_int_equal(trace_head_result(t, 0, 1, &h), 0);
    assert_int_equal(h.rows, P - 1);
    assert_true(fabs(h.active_token_frac_median - 1.0) < 1e-12);
    assert_true(fabs(h.active_block_frac_median - 1.0) < 1e-12);
    assert_true(fabs(h.active_tokens_median - 51.0) < 1e-9); /* rows of 2..100 tokens */
    assert_true(fabs(h.entropy_mean - ent / (P - 1)) < 1e-4);
    assert_true(fabs(h.sink_mass_mean - sink / (P - 1)) < 1e-6);
    assert_int_equal(h.revivals, 0);
    assert_int_equal(h.tokens_revived, 0);
    assert_int_equal(h.max_gap, 0);
    trace_layer_res_t l;
    assert_int_equal(trace_layer_result(t, 0, &l), 0);
    assert_true(fabs(l.union_block_frac_median - 1.0) < 1e-12);
    assert_int_equal(l.block_revivals, 0);
    assert_int_equal(l.heads_with_revivals, 0);
    free(row);
    trace_free(t);
}

/* One-hot rows: token 5 active at steps 10..20, token 17 (block 1) at
 * 21..80, token 5 again at 81..90: token 5 is revived after 60 idle steps,
 * and so is block 0 at the layer level. With gap 61 nothing is a revival. */
static void run_onehot(int gap, int expect_rev) {
    const int P = 100;
    trace_t *t = mk(1, 1, P, 0.95f, gap);
    assert_non_null(t);
    float *row = calloc(P, sizeof(float));
    for (int pos = 10; pos <= 90; pos++) {
        memset(row, 0, sizeof(float) * P);
        int tok = pos <= 20 || pos >= 81 ? 5 : 17;
        row[tok] = 1.0f;
        assert_int_equal(trace_row(t, 0, pos, row), 0);
    }
    trace_head_res_t h;
    assert_int_equal(trace_head_result(t, 0, 0, &h), 0);
    assert_int_equal(h.rows, 81);
    assert_true(fabs(h.active_tokens_median - 1.0) < 1e-12);
    assert_true(fabs(h.active_blocks_median - 1.0) < 1e-12);
    assert_true(h.entropy_mean < 1e-9);
    assert_int_equal(h.max_gap, 60);
    assert_int_equal(h.max_gap_token, 5);
    assert_int_equal(h.revivals, expect_rev);
    assert_int_equal(h.tokens_revived, expect_rev);
    if (expect_rev)
        assert_int_equal(h.gap_hist[0], 1); /* 60 in [50, 100) */
    trace_layer_res_t l;
    assert_int_equal(trace_layer_result(t, 0, &l), 0);
    assert_int_equal(l.max_block_gap, 60);
    assert_int_equal(l.block_revivals, expect_rev);
    assert_int_equal(l.blocks_revived, expect_rev);
    assert_int_equal(l.heads_with_revivals, expect_rev);
    /* the series: one active block per row */
    int pos[81];
    double bf[81], tk[81];
    assert_int_equal(trace_series(t, 0, pos, bf, tk), 81);
    assert_int_equal(pos[0], 10);
    assert_true(fabs(bf[0] - 1.0) < 1e-12);        /* 1 of 1 block at pos 10 */
    assert_true(fabs(bf[80] - 1.0 / 6.0) < 1e-12); /* 1 of 6 blocks at pos 90 */
    assert_true(fabs(tk[40] - 1.0) < 1e-12);
    free(row);
    trace_free(t);
}

static void test_onehot_revival(void **state) {
    (void)state;
    run_onehot(50, 1);
    run_onehot(60, 1);
    run_onehot(61, 0);
}

/* top-p picks the smallest set: masses 0.6 / 0.3 / 0.1 at top-p 0.85 -> 2. */
static void test_top_p_set(void **state) {
    (void)state;
    trace_t *t = mk(1, 1, 64, 0.85f, 50);
    float row[41] = {0};
    row[3] = 0.3f, row[40] = 0.6f, row[20] = 0.1f;
    assert_int_equal(trace_row(t, 0, 40, row), 0);
    trace_head_res_t h;
    assert_int_equal(trace_head_result(t, 0, 0, &h), 0);
    assert_true(fabs(h.active_tokens_median - 2.0) < 1e-12);
    /* blocks: {0: 0.3, 1: 0.1, 2: 0.6} -> 2 of 3 */
    assert_true(fabs(h.active_blocks_median - 2.0) < 1e-12);
    assert_true(fabs(h.active_block_frac_median - 2.0 / 3.0) < 1e-12);
    trace_free(t);
}

static void test_bad_input(void **state) {
    (void)state;
    assert_null(mk(0, 1, 10, 0.9f, 5));
    assert_null(mk(1, 1, 10, 0.0f, 5));
    assert_null(mk(1, 1, 10, 1.5f, 5));
    assert_null(mk(1, 1, 10, 0.9f, 0));
    trace_t *t = mk(2, 1, 10, 0.9f, 5);
    float row[10] = {1.0f};
    assert_int_equal(trace_row(t, 2, 0, row), -1);  /* bad layer */
    assert_int_equal(trace_row(t, 0, 10, row), -1); /* pos >= max_pos */
    assert_int_equal(trace_row(t, 0, 3, row), 0);
    assert_int_equal(trace_row(t, 0, 3, row), -1); /* not increasing */
    assert_int_equal(trace_row(t, 0, 2, row), -1);
    trace_head_res_t h;
    assert_int_equal(trace_head_result(t, 0, 1, &h), -1);
    assert_int_equal(trace_head_result(t, 1, 0, &h), 0);
    assert_int_equal(h.rows, 0); /* layer 1 saw nothing */
    trace_free(t);
    trace_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uniform),
        cmocka_unit_test(test_onehot_revival),
        cmocka_unit_test(test_top_p_set),
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
