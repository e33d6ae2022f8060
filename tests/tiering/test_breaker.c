/* test_breaker.c - tier_breaker: closed until a timeout, skips for the
 * backoff window, doubles on failed probes up to the cap, closes on any
 * answer. Time is driven by the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tier_breaker.h"

static void windows(void **state) {
    (void)state;
    tier_breaker b;
    tier_breaker_init(&b, 400, 1500);
    assert_int_equal(tier_breaker_check(&b, 1000), 0); /* closed */
    tier_breaker_record(&b, 1000, 0);
    assert_int_equal(tier_breaker_check(&b, 1001), 0); /* an answer keeps it closed */
    tier_breaker_record(&b, 2000, 1);                  /* a timeout: 400 ms window */
    assert_int_equal(tier_breaker_check(&b, 2000), 400);
    assert_int_equal(tier_breaker_check(&b, 2399), 1);
    assert_int_equal(tier_breaker_check(&b, 2400), 0); /* the probe goes out */
    tier_breaker_record(&b, 2800, 1);                  /* fails: 800 ms */
    assert_int_equal(tier_breaker_check(&b, 2800), 800);
    tier_breaker_record(&b, 3600, 1); /* 1500 (cap, not 1600) */
    assert_int_equal(tier_breaker_check(&b, 3600), 1500);
    tier_breaker_record(&b, 5100, 1);
    assert_int_equal(tier_breaker_check(&b, 5100), 1500);
    assert_int_equal(b.skipped, 5);
    assert_int_equal(b.trips, 4);
    tier_breaker_record(&b, 6600, 0); /* the service answers: closed, backoff reset */
    assert_int_equal(tier_breaker_check(&b, 6600), 0);
    tier_breaker_record(&b, 7000, 1);
    assert_int_equal(tier_breaker_check(&b, 7000), 400);
    tier_breaker_destroy(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(windows)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
