/* test_admit.c - proto/rpc_admit.c (pure): stream counts per peer and the
 * two caps, entries freed when their count drops to 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "rpc_admit.h"

static void test_caps(void **state) {
    (void)state;
    rpc_admit a;
    rpc_admit_init(&a, 5, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(rpc_admit_take(&a, "ipv4:1.2.3.4:1"), RPC_ADMIT_OK);
    assert_int_equal(rpc_admit_take(&a, "ipv4:1.2.3.4:1"), RPC_ADMIT_PER_PEER);
    assert_int_equal(rpc_admit_count(&a, "ipv4:1.2.3.4:1"), 3);
    assert_int_equal(rpc_admit_take(&a, "ipv4:1.2.3.4:2"), RPC_ADMIT_OK);
    assert_int_equal(rpc_admit_take(&a, NULL), RPC_ADMIT_OK); /* counted as "?" */
    assert_int_equal(rpc_admit_take(&a, "ipv4:9.9.9.9:9"), RPC_ADMIT_TOTAL);
    assert_int_equal(a.total, 5);
    rpc_admit_put(&a, "ipv4:1.2.3.4:1");
    assert_int_equal(rpc_admit_take(&a, "ipv4:9.9.9.9:9"), RPC_ADMIT_OK);
    rpc_admit_put(&a, "never-taken"); /* ignored */
    assert_int_equal(a.total, 5);
    rpc_admit_free(&a);
    assert_int_equal(a.total, 0);
}

static void test_entries_freed(void **state) {
    (void)state;
    rpc_admit a;
    rpc_admit_init(&a, 0, 0); /* no caps */
    char peer[64];
    for (int i = 0; i < 1000; i++) {
        snprintf(peer, sizeof peer, "ipv6:[::1]:%d", i);
        assert_int_equal(rpc_admit_take(&a, peer), RPC_ADMIT_OK);
        assert_int_equal(rpc_admit_take(&a, peer), RPC_ADMIT_OK);
    }
    assert_int_equal(a.total, 2000);
    for (int i = 0; i < 1000; i++) {
        snprintf(peer, sizeof peer, "ipv6:[::1]:%d", i);
        rpc_admit_put(&a, peer);
        rpc_admit_put(&a, peer);
        assert_int_equal(rpc_admit_count(&a, peer), 0);
    }
    assert_int_equal(a.total, 0);
    for (size_t b = 0; b < RPC_ADMIT_BUCKETS; b++)
        assert_null(a.bucket[b]);
    rpc_admit_free(&a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_caps),
        cmocka_unit_test(test_entries_freed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
