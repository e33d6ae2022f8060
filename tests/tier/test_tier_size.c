/* Size parsing and formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "tier_size.h"

static uint64_t ok(const char *s) {
    uint64_t v = 0;
    char err[128] = "";
    int rc = tier_size_parse(s, &v, err, sizeof err);
    if (rc != 0)
        fail_msg("'%s' rejected: %s", s, err);
    return v;
}

static void bad(const char *s, const char *needle) {
    uint64_t v = 77;
    char err[128] = "";
    assert_int_equal(tier_size_parse(s, &v, err, sizeof err), -1);
    assert_int_equal(v, 77); /* untouched */
    if (!strstr(err, needle))
        fail_msg("'%s': error '%s' lacks '%s'", s, err, needle);
}

static void test_parse(void **st) {
    (void)st;
    assert_int_equal(ok("4096"), 4096);
    assert_int_equal(ok("0"), 0);
    assert_int_equal(ok("512MiB"), 512ULL << 20);
    assert_int_equal(ok("512 MiB"), 512ULL << 20);
    assert_int_equal(ok("20GiB"), 20ULL << 30);
    assert_int_equal(ok("20gib"), 20ULL << 30);
    assert_int_equal(ok("1.5G"), 3ULL << 29);
    assert_int_equal(ok("64KiB"), 65536);
    assert_int_equal(ok("64K"), 65536);
    assert_int_equal(ok("1KB"), 1000);
    assert_int_equal(ok("2MB"), 2000000);
    assert_int_equal(ok("1TiB"), 1ULL << 40);
    assert_int_equal(ok("0.5KiB"), 512);
    assert_int_equal(ok("100B"), 100);
}

static void test_parse_errors(void **st) {
    (void)st;
    bad("", "empty");
    bad("MiB", "number");
    bad("-5", "number");
    bad("12 XB", "unknown unit");
    bad("1.5", "whole number");
    bad("1.", "digits expected");
    bad("99999999999999999999", "too large");
    bad("17000000TiB", "too large");
    bad("12  MiB", "unknown unit");
}

static void test_format(void **st) {
    (void)st;
    char b[32];
    assert_string_equal(tier_size_format(512, b, sizeof b), "512 B");
    assert_string_equal(tier_size_format(65536, b, sizeof b), "64.0 KiB");
    assert_string_equal(tier_size_format(3ULL << 29, b, sizeof b), "1.50 GiB");
    assert_string_equal(tier_size_format(20ULL << 30, b, sizeof b), "20.0 GiB");
    assert_string_equal(tier_size_format(1023ULL << 20, b, sizeof b), "1.00 GiB");
    assert_string_equal(tier_size_format(UINT64_MAX, b, sizeof b), "16.0 EiB");
    /* round trip through the parser stays within formatting precision */
    uint64_t v = 0;
    char err[64];
    tier_size_format(768ULL << 20, b, sizeof b);
    assert_string_equal(b, "768 MiB");
    assert_int_equal(tier_size_parse(b, &v, err, sizeof err), 0);
    assert_int_equal(v, 768ULL << 20);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
