/* test_sampler.c - greedy ties, NaN handling, determinism per seed, top-k and
 * top-p restrict the support, temperature sharpens, option validation. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "sampler.h"

static void test_argmax_ties(void **state) {
    (void)state;
    float x[6] = {1, 5, 3, 5, -1, 5};
    assert_int_equal(sampler_argmax(x, 6), 1);
    float y[4] = {NAN, 2, NAN, 2};
    assert_int_equal(sampler_argmax(y, 4), 1);
    float z[2] = {NAN, NAN};
    assert_int_equal(sampler_argmax(z, 2), 0);
    float w[3] = {-INFINITY, -INFINITY, -3};
    assert_int_equal(sampler_argmax(w, 3), 2);
}

static void test_greedy(void **state) {
    (void)state;
    sampler_opts_t o;
    sampler_defaults(&o);
    sampler_t *s = sampler_new(6, &o);
    float x[6] = {1, 5, 3, 5, -1, 5};
    for (int i = 0; i < 10; i++)
        assert_int_equal(sampler_sample(s, x), 1);
    sampler_free(s);
    o.temperature = 1.0f;
    o.top_k = 1; /* top-k 1 is greedy too */
    s = sampler_new(6, &o);
    assert_int_equal(sampler_sample(s, x), 1);
    sampler_free(s);
}

static void draw(const sampler_opts_t *o, const float *logits, int n, int *out, int cnt) {
    sampler_t *s = sampler_new(n, o);
    for (int i = 0; i < cnt; i++)
        out[i] = sampler_sample(s, logits);
    sampler_free(s);
}

static void test_determinism(void **state) {
    (void)state;
    float logits[50];
    for (int i = 0; i < 50; i++)
        logits[i] = (float)sin(i * 1.7) * 2;
    sampler_opts_t o = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 42};
    int a[200], b[200], c[200];
    draw(&o, logits, 50, a, 200);
    draw(&o, logits, 50, b, 200);
    assert_memory_equal(a, b, sizeof a);
    o.seed = 43;
    draw(&o, logits, 50, c, 200);
    assert_true(memcmp(a, c, sizeof a) != 0);
    /* a sample is spread over many ids at T=1 */
    int seen[50] = {0}, distinct = 0;
    for (int i = 0; i < 200; i++)
        distinct += !seen[a[i]]++;
    assert_true(distinct > 10);
}

static void test_top_k_top_p(void **state) {
    (void)state;
    float logits[100];
    for (int i = 0; i < 100; i++)
        logits[i] = (float)((i * 37) % 100) / 10.0f; /* distinct */
    /* the three largest: ids with (i*37)%100 in {99,98,97} */
    int top[3], nt = 0;
    for (int i = 0; i < 100; i++)
        if ((i * 37) % 100 >= 97)
            top[nt++] = i;
    assert_int_equal(nt, 3);
    sampler_opts_t o = {.temperature = 1.0f, .top_k = 3, .top_p = 1.0f, .seed = 7};
    int out[300];
    draw(&o, logits, 100, out, 300);
    int hit[3] = {0};
    for (int i = 0; i < 300; i++) {
        int ok = 0;
        for (int j = 0; j < 3; j++)
            if (out[i] == top[j])
                ok = 1, hit[j]++;
        assert_true(ok);
    }
    assert_true(hit[0] > 0 && hit[1] > 0 && hit[2] > 0);
    /* a tiny nucleus keeps only the argmax */
    o.top_k = 0;
    o.top_p = 0.01f;
    draw(&o, logits, 100, out, 50);
    for (int i = 0; i < 50; i++)
        assert_int_equal(out[i], sampler_argmax(logits, 100));
    /* p = 0.4 over two equal logits far above the rest: only those two */
    float two[10] = {0, 0, 10, 0, 0, 0, 10, 0, 0, 0};
    o.top_p = 0.4f;
    draw(&o, two, 10, out, 100);
    for (int i = 0; i < 100; i++)
        assert_true(out[i] == 2); /* ties by lower id: id 2 alone reaches 0.4 */
    o.top_p = 0.9f;
    draw(&o, two, 10, out, 100);
    int n2 = 0, n6 = 0;
    for (int i = 0; i < 100; i++) {
        assert_true(out[i] == 2 || out[i] == 6);
        n2 += out[i] == 2, n6 += out[i] == 6;
    }
    assert_true(n2 > 20 && n6 > 20);
}

static void test_temperature(void **state) {
    (void)state;
    float logits[2] = {1.0f, 0.0f};
    sampler_opts_t o = {.temperature = 0.05f, .top_p = 1.0f, .seed = 3};
    int out[500], zeros = 0;
    draw(&o, logits, 2, out, 500);
    for (int i = 0; i < 500; i++)
        zeros += out[i] == 0;
    assert_true(zeros >= 499); /* p(1) = e^-20 */
    o.temperature = 1.0f;
    draw(&o, logits, 2, out, 500);
    zeros = 0;
    for (int i = 0; i < 500; i++)
        zeros += out[i] == 0;
    assert_true(zeros > 300 && zeros < 430); /* p(0) = 0.731 */
}

static void test_validate(void **state) {
    (void)state;
    char err[128];
    sampler_opts_t o;
    sampler_defaults(&o);
    assert_int_equal(sampler_validate(&o, err, sizeof err), 0);
    o.temperature = -1;
    assert_int_equal(sampler_validate(&o, err, sizeof err), -1);
    assert_non_null(strstr(err, "temperature"));
    sampler_defaults(&o);
    o.top_p = 1.5f;
    assert_int_equal(sampler_validate(&o, err, sizeof err), -1);
    o.top_p = NAN;
    assert_int_equal(sampler_validate(&o, err, sizeof err), -1);
    sampler_defaults(&o);
    o.top_k = -2;
    assert_int_equal(sampler_validate(&o, err, sizeof err), -1);
    assert_null(sampler_new(0, &o));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argmax_ties), cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_determinism), cmocka_unit_test(test_top_k_top_p),
        cmocka_unit_test(test_temperature), cmocka_unit_test(test_validate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
