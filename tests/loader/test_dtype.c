/* test_dtype.c - bf16 / f16 <-> f32 converters: special values, rounding,
 * exhaustive round trips, and vectorized rows == scalar, bit for bit. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dtype.h"

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void loader_dtype_f16_specials(void **state) {
    (void)state;
    assert_true(dtype_f16_to_f32(0x3c00) == 1.0f);
    assert_true(dtype_f16_to_f32(0xc000) == -2.0f);
    assert_true(dtype_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(dtype_f16_to_f32(0x0400) == 0x1p-14f);        /* smallest normal */
    assert_true(dtype_f16_to_f32(0x0001) == 0x1p-24f);        /* smallest subnormal */
    assert_true(dtype_f16_to_f32(0x03ff) == 1023 * 0x1p-24f); /* largest subnormal */
    assert_true(dtype_f16_to_f32(0x8001) == -0x1p-24f);
    assert_int_equal(bits_of(dtype_f16_to_f32(0x8000)), 0x80000000u); /* -0 */
    assert_true(isinf(dtype_f16_to_f32(0x7c00)) && dtype_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(dtype_f16_to_f32(0xfc00)) && dtype_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(dtype_f16_to_f32(0x7e00)));
    assert_true(isnan(dtype_f16_to_f32(0x7c01))); /* signalling payload stays NaN */

    assert_int_equal(dtype_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(dtype_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(dtype_f32_to_f16(65519.0f), 0x7bff); /* below the halfway point */
    assert_int_equal(dtype_f32_to_f16(65520.0f), 0x7c00); /* tie -> even = inf */
    assert_int_equal(dtype_f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(dtype_f32_to_f16(-1e10f), 0xfc00);
    assert_int_equal(dtype_f32_to_f16(0x1p-24f), 0x0001);
    assert_int_equal(dtype_f32_to_f16(0x1p-25f), 0x0000);   /* tie -> even = 0 */
    assert_int_equal(dtype_f32_to_f16(0x1.8p-25f), 0x0001); /* above the tie */
    assert_int_equal(dtype_f32_to_f16(0x1.8p-24f), 0x0002); /* 1.5 ulp: tie -> even 2 */
    assert_int_equal(dtype_f32_to_f16(0x1.4p-24f), 0x0001);
    assert_int_equal(dtype_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(dtype_f32_to_f16(1e-30f), 0x0000);
    assert_int_equal(dtype_f32_to_f16(1.0f + 0x1p-11f), 0x3c00); /* tie -> even */
    assert_int_equal(dtype_f32_to_f16(1.0f + 0x1.8p-11f), 0x3c01);
    assert_int_equal(dtype_f32_to_f16(1.0f + 0x3p-11f), 0x3c02); /* tie, odd -> up */
    assert_int_equal(dtype_f32_to_f16(0x1.ffcp-15f),
                     0x0400); /* rounds up into the smallest normal */
    assert_true((dtype_f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (dtype_f32_to_f16(NAN) & 0x3ff) != 0);
}

static void loader_dtype_bf16_specials(void **state) {
    (void)state;
    assert_true(dtype_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(dtype_bf16_to_f32(0x0001) == 0x1p-133f); /* subnormal */
    assert_true(isinf(dtype_bf16_to_f32(0xff80)));
    assert_true(isnan(dtype_bf16_to_f32(0x7fc0)));
    assert_int_equal(dtype_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(dtype_f32_to_bf16(float_of(0x3f808000u)), 0x3f80); /* tie, even stays */
    assert_int_equal(dtype_f32_to_bf16(float_of(0x3f818000u)), 0x3f82); /* tie, odd goes up */
    assert_int_equal(dtype_f32_to_bf16(float_of(0x3f808001u)), 0x3f81);
    assert_int_equal(dtype_f32_to_bf16(float_of(0x7f7fffffu)),
                     0x7f80); /* max float rounds to inf */
    assert_int_equal(dtype_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(dtype_f32_to_bf16(-0.0f), 0x8000);
    uint16_t n =
        dtype_f32_to_bf16(float_of(0x7f800001u)); /* NaN with a low payload must not become inf */
    assert_true((n & 0x7f80) == 0x7f80 && (n & 0x7f) != 0);
}

/* Every f16 / bf16 value: 16 -> 32 -> 16 is the identity (NaNs stay NaN),
 * and the vectorized rows match the scalar code bit for bit. */
static void loader_dtype_exhaustive(void **state) {
    (void)state;
    uint16_t *h = malloc(65536 * 2 + 2);
    float *v = malloc(65536 * 4), *s = malloc(65536 * 4);
    uint16_t *back = malloc(65536 * 2);
    for (uint32_t i = 0; i < 65536; i++)
        h[i] = (uint16_t)i;
    /* f16 */
    dtype_row_to_f32(DT_F16, h, v, 65536);
    for (uint32_t i = 0; i < 65536; i++) {
        s[i] = dtype_f16_to_f32((uint16_t)i);
        if (bits_of(s[i]) != bits_of(v[i]))
            fail_msg("f16 %04x: vector %08x scalar %08x", i, bits_of(v[i]), bits_of(s[i]));
        uint16_t r = dtype_f32_to_f16(s[i]);
        if (isnan(s[i]) ? (r & 0x7c00) != 0x7c00 || (r & 0x3ff) == 0 : r != i)
            fail_msg("f16 %04x -> %04x", i, r);
    }
    dtype_f32_to_f16_row(s, back, 65536);
    for (uint32_t i = 0; i < 65536; i++)
        if (back[i] != dtype_f32_to_f16(s[i]))
            fail_msg("f16 row %04x: %04x", i, back[i]);
    /* bf16 */
    dtype_row_to_f32(DT_BF16, h, v, 65536);
    for (uint32_t i = 0; i < 65536; i++) {
        s[i] = dtype_bf16_to_f32((uint16_t)i);
        if (bits_of(s[i]) != bits_of(v[i]))
            fail_msg("bf16 %04x differs", i);
        uint16_t r = dtype_f32_to_bf16(s[i]);
        if (isnan(s[i]) ? !isnan(dtype_bf16_to_f32(r)) : r != i)
            fail_msg("bf16 %04x -> %04x", i, r);
    }
    /* odd-aligned source and odd lengths (vector tails) */
    memmove((unsigned char *)h + 1, h, 2000);
    dtype_row_to_f32(DT_BF16, (unsigned char *)h + 1, v, 999);
    for (uint32_t i = 0; i < 999; i++)
        assert_int_equal(bits_of(v[i]), bits_of(dtype_bf16_to_f32((uint16_t)i)));
    /* random f32 -> f16 / bf16 rows vs scalar */
    uint32_t x = 12345;
    for (int i = 0; i < 65536; i++) {
        x = x * 1664525u + 1013904223u;
        s[i] = float_of(x);
    }
    dtype_f32_to_f16_row(s, back, 65536);
    for (int i = 0; i < 65536; i++)
        if (back[i] != dtype_f32_to_f16(s[i]) &&
            !(isnan(s[i]) && (back[i] & 0x7c00) == 0x7c00 && (back[i] & 0x3ff)))
            fail_msg("f32 %08x -> f16 row %04x scalar %04x", bits_of(s[i]), back[i],
                     dtype_f32_to_f16(s[i]));
    dtype_f32_to_bf16_row(s, back, 65536);
    for (int i = 0; i < 65536; i++)
        assert_int_equal(back[i], dtype_f32_to_bf16(s[i]));
    /* f32 -> f16 rounding against a double-precision reference on normals */
    for (int i = 0; i < 65536; i++) {
        float f = s[i];
        if (isnan(f) || fabsf(f) >= 65520.0f || fabsf(f) < 0x1p-14f)
            continue;
        float r = dtype_f16_to_f32(dtype_f32_to_f16(f));
        int e;
        frexp((double)f, &e);
        double ulp = ldexp(1.0, e - 11);
        assert_true(fabs((double)r - (double)f) <= ulp / 2);
    }
    free(h);
    free(v);
    free(s);
    free(back);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loader_dtype_f16_specials),
        cmocka_unit_test(loader_dtype_bf16_specials),
        cmocka_unit_test(loader_dtype_exhaustive),
    };
    return cmocka_run_group_tests_name("loader_dtype", tests, NULL, NULL);
}
