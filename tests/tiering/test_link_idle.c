/* test_link_idle.c - a worker session quiet for longer than kvtierd's
 * --stream-idle-timeout: kvtierd ends its Summarize stream (CANCELLED), and
 * the next summary still goes through, sent on a new stream (the remote link
 * reopens it at once instead of failing that summary). Real kvtierd, real
 * gRPC, the worker's remote tier link in-process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "itest.h"
#include "tierlink.h"

/* Sends one summary of step `step` (layer 0, no active block) and waits for
 * its result. Returns its status; err gets the message. */
static tier_status summary(tiersess_t *s, uint64_t step, char *err, size_t errlen) {
    tier_layer_summary ls = {0};
    tier_summary sum = {.step = step, .n_blocks = 1, .layers = &ls, .n_layers = 1};
    tier_status st = tiersess_summary_send(s, &sum, err, errlen);
    if (st != TIER_OK)
        return st;
    tiersess_summary_result r;
    assert_int_equal(tiersess_summary_results(s, &r, 1, 1), 1);
    free(r.d);
    snprintf(err, errlen, "%s", r.err);
    return r.status;
}

static void test_summary_after_idle(void **state) {
    (void)state;
    itest_server srv = {0};
    static const char *flags[] = {"--stream-idle-timeout", "1", NULL};
    assert_int_equal(itest_server_start(&srv, flags), 0);
    tierlink_t *link = tierlink_remote_new(srv.addr, "t1", NULL, 5000);
    assert_non_null(link);
    tier_seq_info info = {.n_layers = 1, .n_kv_heads = 1, .head_dim = 16, .block_tokens = 16};
    tiersess_t *s = NULL;
    char err[512];
    assert_int_equal(tiersess_open(link, 7, &info, &s, err, sizeof err), TIER_OK);
    if (summary(s, 16, err, sizeof err) != TIER_OK)
        fail_msg("first summary: %s", err);
    usleep(2000 * 1000); /* > --stream-idle-timeout: kvtierd ends the stream */
    if (summary(s, 32, err, sizeof err) != TIER_OK)
        fail_msg("summary after the idle timeout: %s", err);
    tiersess_counts c;
    tiersess_counts_get(s, &c);
    fprintf(stderr, "summaries on %llu Summarize streams\n",
            (unsigned long long)c.summarize_streams);
    assert_int_equal(c.summarize_streams, 2);
    assert_int_equal(tiersess_close(s, 0, err, sizeof err), TIER_OK);
    tiersess_free(s);
    tierlink_free(link);
    itest_server_stop(&srv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_summary_after_idle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
