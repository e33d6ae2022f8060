/* crc32c convention: standard check value, chaining, and agreement with a
 * bitwise reference implementation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "tier.h"

static uint32_t crc32c_ref(uint32_t crc, const uint8_t *p, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void test_check_value(void **st) {
    (void)st;
    assert_int_equal(tier_crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(tier_crc32c(0, "", 0), 0);
    /* RFC 3720 B.4: 32 bytes of zeros -> 0x8A9136AA, of 0xFF -> 0x62A8AB43 */
    uint8_t z[32];
    memset(z, 0, sizeof z);
    assert_int_equal(tier_crc32c(0, z, 32), 0x8A9136AAu);
    memset(z, 0xFF, sizeof z);
    assert_int_equal(tier_crc32c(0, z, 32), 0x62A8AB43u);
}

static void test_chain_and_ref(void **st) {
    (void)st;
    uint8_t buf[65536 + 7];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)((x = x * 1103515245u + 12345u) >> 16);
    uint32_t whole = tier_crc32c(0, buf, sizeof buf);
    assert_int_equal(whole, crc32c_ref(0, buf, sizeof buf));
    uint32_t part = tier_crc32c(0, buf, 1000);
    part = tier_crc32c(part, buf + 1000, sizeof buf - 1000);
    assert_int_equal(part, whole);
    buf[40000] ^= 1; /* a single bit flip changes it */
    assert_int_not_equal(tier_crc32c(0, buf, sizeof buf), whole);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_value),
        cmocka_unit_test(test_chain_and_ref),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
