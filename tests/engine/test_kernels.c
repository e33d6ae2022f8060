/* test_kernels.c - matvec (every ISA, every dtype) and GEMM against a naive
 * double reference; RMSNorm, RoPE, SwiGLU against their formulas. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "kernels.h"

static uint64_t g_rng = 88172645463325252ULL;
static float frand(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)(g_rng >> 40) * 0x1p-24f * 2.0f - 1.0f;
}

/* A rows x cols matrix in dtype dt with random values; *ref gets the exact
 * f32 values (after rounding to dt). */
static tensor_t make_mat(dtype_t dt, int rows, int cols, float **ref, void **store) {
    size_t n = (size_t)rows * cols;
    *ref = malloc(sizeof(float) * n);
    *store = malloc(n * dtype_size(dt));
    for (size_t i = 0; i < n; i++) {
        float v = frand();
        if (dt == DT_F32) {
            ((float *)*store)[i] = v;
        } else if (dt == DT_BF16) {
            uint16_t h = dtype_f32_to_bf16(v);
            ((uint16_t *)*store)[i] = h;
            v = dtype_bf16_to_f32(h);
        } else {
            uint16_t h = dtype_f32_to_f16(v);
            ((uint16_t *)*store)[i] = h;
            v = dtype_f16_to_f32(h);
        }
        (*ref)[i] = v;
    }
    tensor_t t = {.data = *store, .dtype = dt, .ndim = 2, .shape = {rows, cols}, .name = "test"};
    return t;
}

static void check_matvec(dtype_t dt, int rows, int cols, threadpool_t *tp) {
    float *ref;
    void *store;
    tensor_t w = make_mat(dt, rows, cols, &ref, &store);
    float *x = malloc(sizeof(float) * cols), *y = malloc(sizeof(float) * rows);
    for (int i = 0; i < cols; i++)
        x[i] = frand();
    kn_job_t job = {&w, y};
    kn_matvec(tp, &job, 1, x);
    for (int r = 0; r < rows; r++) {
        double s = 0, mag = 0;
        for (int c = 0; c < cols; c++) {
            s += (double)ref[(size_t)r * cols + c] * x[c];
            mag += fabs((double)ref[(size_t)r * cols + c] * x[c]);
        }
        double tol = 1e-5 * mag + 1e-6;
        if (fabs(y[r] - s) > tol)
            fail_msg("%s %s %dx%d row %d: got %.8g want %.8g (tol %.3g)",
                     kn_isa_name(kn_isa_active()), dtype_name(dt), rows, cols, r, y[r], s, tol);
    }
    free(ref), free(store), free(x), free(y);
}

static void test_matvec_all_isas(void **state) {
    (void)state;
    threadpool_t *tp = tp_new(2);
    kn_isa_t best = kn_isa_best();
    for (int isa = KN_ISA_SCALAR; isa <= (int)best; isa++) {
        assert_int_equal(kn_isa_set((kn_isa_t)isa), 0);
        dtype_t dts[3] = {DT_F32, DT_BF16, DT_F16};
        for (int d = 0; d < 3; d++) {
            check_matvec(dts[d], 37, 64, tp);    /* rows not a multiple of 4 */
            check_matvec(dts[d], 128, 1000, tp); /* cols not a multiple of 16 */
            check_matvec(dts[d], 5, 7, NULL);    /* scalar tails only */
            check_matvec(dts[d], 300, 256, tp);  /* several tasks */
        }
    }
    kn_isa_set(best);
    assert_int_equal(kn_isa_set((kn_isa_t)(best + 1)), -1); /* beyond the CPU: refused */
    assert_int_equal(kn_isa_active(), best);
    tp_free(tp);
}

static void test_fused_jobs(void **state) {
    (void)state;
    threadpool_t *tp = tp_new(2);
    float *r1, *r2, *r3;
    void *s1, *s2, *s3;
    tensor_t a = make_mat(DT_BF16, 96, 80, &r1, &s1), b = make_mat(DT_BF16, 32, 80, &r2, &s2),
             c = make_mat(DT_BF16, 33, 80, &r3, &s3);
    float x[80], ya[96], yb[32], yc[33], za[96], zb[32], zc[33];
    for (int i = 0; i < 80; i++)
        x[i] = frand();
    kn_job_t jobs[3] = {{&a, ya}, {&b, yb}, {&c, yc}};
    kn_matvec(tp, jobs, 3, x);
    kn_matvec_rows(&a, 0, 96, x, za);
    kn_matvec_rows(&b, 0, 32, x, zb);
    kn_matvec_rows(&c, 0, 33, x, zc);
    assert_memory_equal(ya, za, sizeof ya); /* same kernel, same order: bit-identical */
    assert_memory_equal(yb, zb, sizeof yb);
    assert_memory_equal(yc, zc, sizeof yc);
    free(r1), free(r2), free(r3), free(s1), free(s2), free(s3);
    tp_free(tp);
}

static void check_gemm(dtype_t dt, int n, int rows, int cols, int nthreads) {
    threadpool_t *tp = tp_new(nthreads);
    kn_gemm_ws_t *ws = kn_gemm_ws_new(nthreads, cols);
    assert_non_null(ws);
    float *ref;
    void *store;
    tensor_t w = make_mat(dt, rows, cols, &ref, &store);
    float *x = malloc(sizeof(float) * n * cols), *y = malloc(sizeof(float) * n * rows),
          *yv = malloc(sizeof(float) * rows);
    for (int i = 0; i < n * cols; i++)
        x[i] = frand();
    kn_job_t job = {&w, y};
    kn_gemm(tp, ws, &job, 1, x, n);
    for (int t = 0; t < n; t++) {
        kn_job_t jv = {&w, yv};
        kn_matvec(tp, &jv, 1, x + (size_t)t * cols);
        for (int r = 0; r < rows; r++) {
            double s = 0;
            for (int c = 0; c < cols; c++)
                s += (double)ref[(size_t)r * cols + c] * x[(size_t)t * cols + c];
            double tol = 1e-5 * sqrt((double)cols);
            if (fabs(y[(size_t)t * rows + r] - s) > tol || fabs(yv[r] - s) > tol)
                fail_msg("gemm %s n=%d %dx%d [%d,%d]: gemm %.7g matvec %.7g ref %.7g",
                         dtype_name(dt), n, rows, cols, t, r, y[(size_t)t * rows + r], yv[r], s);
        }
    }
    free(ref), free(store), free(x), free(y), free(yv);
    kn_gemm_ws_free(ws);
    tp_free(tp);
}

static void test_gemm(void **state) {
    (void)state;
    check_gemm(DT_F32, 5, 70, 48, 2);
    check_gemm(DT_BF16, 17, 300, 64,
               2); /* > 1 panel per matrix at 64 cols? panels of 4096 rows: 1 */
    check_gemm(DT_F16, 3, 33, 1000, 1);
    check_gemm(DT_BF16, 9, 1200, 512, 2); /* 512 cols -> 512-row panels: 3 panels */
}

static void test_rmsnorm(void **state) {
    (void)state;
    float x[50], out[50], wv[50];
    for (int i = 0; i < 50; i++)
        x[i] = frand() * 3, wv[i] = 1 + frand() * 0.5f;
    tensor_t w = {.data = wv, .dtype = DT_F32, .ndim = 1, .shape = {50}};
    kn_rmsnorm(out, x, &w, 50, 1e-6f);
    double ss = 0;
    for (int i = 0; i < 50; i++)
        ss += (double)x[i] * x[i];
    double inv = 1 / sqrt(ss / 50 + 1e-6);
    for (int i = 0; i < 50; i++)
        assert_float_equal(out[i], wv[i] * x[i] * inv, 1e-5);
    /* in place, many vectors */
    float xs[100];
    memcpy(xs, x, sizeof x);
    memcpy(xs + 50, x, sizeof x);
    kn_rmsnorm_many(xs, 2, &w, 50, 1e-6f);
    assert_memory_equal(xs, out, sizeof out);
    assert_memory_equal(xs + 50, out, sizeof out);
    /* bf16 weights */
    uint16_t wb[50];
    for (int i = 0; i < 50; i++)
        wb[i] = dtype_f32_to_bf16(wv[i]);
    tensor_t w2 = {.data = wb, .dtype = DT_BF16, .ndim = 1, .shape = {50}};
    kn_rmsnorm(out, x, &w2, 50, 1e-6f);
    for (int i = 0; i < 50; i++)
        assert_float_equal(out[i], dtype_bf16_to_f32(wb[i]) * x[i] * inv, 1e-5);
}

static void test_rope(void **state) {
    (void)state;
    kn_rope_t r;
    assert_int_equal(kn_rope_init(&r, 7, 1e6, NULL), -1); /* odd head_dim */
    assert_int_equal(kn_rope_init(&r, 128, 1e6, NULL), 0);
    assert_int_equal(kn_rope_reserve(&r, 5000), 0);
    assert_true(r.cap >= 5000);
    /* inv_freq as torch: 1/theta^(2i/d) */
    for (int i = 0; i < 64; i++)
        assert_float_equal(r.inv_freq[i], pow(1e6, -2.0 * i / 128), 1e-6 * r.inv_freq[0]);
    int positions[4] = {0, 1, 123, 4999};
    for (int pi = 0; pi < 4; pi++) {
        int pos = positions[pi];
        float v[2 * 128], orig[2 * 128];
        for (int i = 0; i < 256; i++)
            orig[i] = v[i] = frand();
        kn_rope_apply(&r, v, 2, pos);
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < 64; i++) {
                double ang = (double)(float)((float)pos * r.inv_freq[i]);
                double a = orig[h * 128 + i], b = orig[h * 128 + i + 64];
                assert_float_equal(v[h * 128 + i], a * cos(ang) - b * sin(ang), 1e-5);
                assert_float_equal(v[h * 128 + i + 64], b * cos(ang) + a * sin(ang), 1e-5);
            }
        if (pos == 0)
            assert_memory_equal(v, orig, sizeof v); /* identity at position 0 */
        /* rotation keeps the norm */
        double n0 = 0, n1 = 0;
        for (int i = 0; i < 256; i++)
            n0 += (double)orig[i] * orig[i], n1 += (double)v[i] * v[i];
        assert_float_equal(n0, n1, 1e-4);
    }
    /* the table grows without changing earlier entries */
    float c100 = r.cos[100 * 64 + 3];
    assert_int_equal(kn_rope_reserve(&r, 20000), 0);
    assert_true(r.cos[100 * 64 + 3] == c100);
    kn_rope_free(&r);
}

static void test_silu_add(void **state) {
    (void)state;
    float g[6] = {-20, -1, 0, 0.5f, 3, 20}, u[6] = {1, 2, 3, 4, 5, 6}, g0[6];
    memcpy(g0, g, sizeof g);
    kn_silu_mul(g, u, 6);
    for (int i = 0; i < 6; i++)
        assert_float_equal(g[i], g0[i] / (1 + exp(-g0[i])) * u[i], 1e-5);
    float y[3] = {1, 2, 3}, x[3] = {0.5f, -2, 1};
    kn_add(y, x, 3);
    assert_float_equal(y[0], 1.5, 0);
    assert_float_equal(y[1], 0, 0);
    assert_float_equal(y[2], 4, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matvec_all_isas),
        cmocka_unit_test(test_fused_jobs),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_silu_add),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
