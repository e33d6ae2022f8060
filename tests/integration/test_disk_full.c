/* test_disk_full.c — issue 9 item 4, faults that heal: kvtierd on a real
 * small filesystem (a 16 MiB tmpfs, --disk-reserve 4MiB), filled with puts:
 *   - the put that does not fit is RESOURCE_EXHAUSTED "disk full" (never
 *     UNAVAILABLE); Admin/Health DEGRADED with "disk full" in its detail,
 *     grpc.health.v1 kvtier.v1.Tier NOT_SERVING, "" still SERVING;
 *   - reads still served, byte-identical;
 *   - CloseSequence frees space online: puts work again, health SERVING;
 *   - filled again, kvtierd restarts on the full disk (SIGTERM, then kill -9:
 *     WAL replay) and serves what it had; deleting then heals it.
 * Needs root to mount the tmpfs (CI runs as root); skips (77) otherwise. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "health.pb-c.h"
#include "itest.h"
#include "rpc.h"

#define BLOCK ITEST_BLOCK
#define PER_STREAM 4

static char g_mnt[256];

static uint64_t free_bytes(void) {
    struct statvfs v;
    assert_int_equal(statvfs(g_mnt, &v), 0);
    return (uint64_t)v.f_bavail * v.f_frsize;
}

/* Puts blocks [b, b + n) of layer 0 in one stream. Returns the code; e set. */
static kvtier_code put_some(kvtier_client *c, uint64_t seq, uint32_t b, uint32_t n,
                            kvtier_error *e) {
    uint8_t *buf = malloc(BLOCK);
    kvtier_put_stream *p = kvtier_put_open(c, seq, e);
    assert_non_null(p);
    kvtier_code code = KVTIER_OK;
    for (uint32_t i = 0; i < n && code == KVTIER_OK; i++) {
        itest_payload(buf, BLOCK, seq, 0, b + i, 0);
        kvtier_block blk = {0, b + i, buf, BLOCK, 0, 0, 16, KVTIER_TIER_ABSENT};
        code = kvtier_put_send(p, &blk, e);
    }
    kvtier_put_result r;
    kvtier_code fc = kvtier_put_finish(p, &r, e);
    if (fc == KVTIER_OK)
        kvtier_put_result_free(&r);
    free(buf);
    return fc;
}

/* Puts streams of PER_STREAM blocks from block b on until one is refused, then single
 * blocks until two in a row are refused 300 ms apart (RocksDB's flushes
 * move free space around). Returns the blocks stored; *code and *e have the
 * first refusal. */
static uint32_t fill(kvtier_client *c, uint64_t seq, uint32_t b, kvtier_code *code,
                     kvtier_error *e) {
    while ((*code = put_some(c, seq, b, PER_STREAM, e)) == KVTIER_OK) {
        b += PER_STREAM;
        assert_true(b < 100000);
    }
    kvtier_error e2;
    for (int refused = 0; refused < 2;) {
        usleep(300 * 1000);
        if (put_some(c, seq, b, 1, &e2) == KVTIER_OK) {
            b++;
            refused = 0;
        } else {
            refused++;
        }
    }
    return b;
}

/* Fetches block b of layer 0: asserts OK and byte-identical. */
static void read_ok(kvtier_client *c, uint64_t seq, uint32_t b) {
    int identical = 0;
    assert_int_equal(itest_fetch_one(c, seq, 0, b, &identical), KVTIER_OK);
    assert_true(identical);
}

/* grpc.health.v1 Check(service): the serving status, -1 on error. */
static int grpc_health(const itest_server *s, const char *service) {
    rpc_channel *ch = rpc_channel_new(s->addr, 0);
    Grpc__Health__V1__HealthCheckRequest r = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    r.service = (char *)service;
    Grpc__Health__V1__HealthCheckResponse *resp = NULL;
    rpc_opts o = {.timeout_ms = 5000};
    rpc_status st;
    int v = -1;
    if (rpc_unary(ch, "/grpc.health.v1.Health/Check", &o, &r.base,
                  &grpc__health__v1__health_check_response__descriptor, (ProtobufCMessage **)&resp,
                  &st) == GRPC_STATUS_OK)
        v = (int)resp->status;
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    rpc_channel_free(ch);
    return v;
}

/* Waits up to 5 s (the health monitor checks every second) for service's
 * status to be `want`. */
static void expect_health(const itest_server *s, const char *service, int want) {
    int got = -1;
    for (int i = 0; i < 50 && (got = grpc_health(s, service)) != want; i++)
        usleep(100 * 1000);
    if (got != want)
        fprintf(stderr, "health '%s': %d, want %d\n", service, got, want);
    assert_int_equal(got, want);
}

static void admin_health(kvtier_client *c, const char *want_status, const char *detail_has) {
    kvtier_health h;
    kvtier_error e;
    assert_int_equal(kvtier_health_check(c, &h, &e), KVTIER_OK);
    if (strcmp(h.status, want_status) != 0 || !strstr(h.detail, detail_has))
        fprintf(stderr, "Admin/Health: %s \"%s\"\n", h.status, h.detail);
    assert_string_equal(h.status, want_status);
    assert_non_null(strstr(h.detail, detail_has));
}

#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING

static void test_disk_full_heals(void **state) {
    (void)state;
    itest_server s = {0};
    snprintf(s.dir, sizeof s.dir, "%s/data", g_mnt);
    static const char *flags[] = {"--disk-reserve", "4MiB", "--host-budget", "1MiB", NULL};
    assert_int_equal(itest_server_start(&s, flags), 0);
    kvtier_client *c = itest_client(&s, "t1");
    itest_open_seq(c, 1, 1);
    itest_open_seq(c, 2, 1);

    /* 1. fill: the put that does not fit is RESOURCE_EXHAUSTED "disk full" */
    kvtier_code code;
    kvtier_error e;
    uint64_t t0 = itest_now_ms();
    uint32_t n1 = fill(c, 1, 0, &code, &e);
    fprintf(stderr, "seq 1: %u blocks of 64 KiB stored in %llu ms, then %s: %s (free %llu KiB)\n",
            n1, (unsigned long long)(itest_now_ms() - t0), kvtier_code_name(code), e.message,
            (unsigned long long)(free_bytes() >> 10));
    assert_int_equal(code, KVTIER_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(e.message, "disk full"));
    assert_true(n1 >= 64); /* most of the 12 MiB above the reserve */

    /* 2. health says so; reads still work; kvtierd is alive */
    admin_health(c, "DEGRADED", "disk full");
    expect_health(&s, "kvtier.v1.Tier", NOT_SERVING);
    expect_health(&s, "", SERVING);
    read_ok(c, 1, 0);
    read_ok(c, 1, n1 - 1);

    /* 3. closing a sequence frees space online: puts work, health SERVING */
    uint64_t before = free_bytes();
    t0 = itest_now_ms();
    uint64_t dropped = 0;
    code = kvtier_close_sequence(c, 1, 0, &dropped, NULL, &e);
    if (code)
        fprintf(stderr, "close: %s\n", e.message);
    assert_int_equal(code, KVTIER_OK);
    fprintf(stderr, "close of seq 1 (%llu blocks) in %llu ms: free %llu -> %llu KiB\n",
            (unsigned long long)dropped, (unsigned long long)(itest_now_ms() - t0),
            (unsigned long long)(before >> 10), (unsigned long long)(free_bytes() >> 10));
    assert_true(free_bytes() > before + (4u << 20));
    code = put_some(c, 2, 0, PER_STREAM, &e);
    if (code)
        fprintf(stderr, "put after close: %s\n", e.message);
    assert_int_equal(code, KVTIER_OK);
    expect_health(&s, "kvtier.v1.Tier", SERVING);
    admin_health(c, "SERVING", "");

    /* 4. full again, then restart on the full disk: SIGTERM, then kill -9 */
    uint32_t n2 = fill(c, 2, PER_STREAM, &code, &e);
    assert_int_equal(code, KVTIER_RESOURCE_EXHAUSTED);
    fprintf(stderr, "seq 2: %u blocks, then full again (free %llu KiB)\n", n2,
            (unsigned long long)(free_bytes() >> 10));
    kvtier_client_free(c);
    int st = 0;
    assert_int_equal(itest_server_signal(&s, SIGTERM, 30000, &st), 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(itest_server_restart(&s), 0);
    c = itest_client(&s, "t1");
    fprintf(stderr, "restarted (SIGTERM) on the full disk: free %llu KiB\n",
            (unsigned long long)(free_bytes() >> 10));
    read_ok(c, 2, 0);
    read_ok(c, 2, n2 - 1);
    /* what room the restart found (flushes move free space around) is used
     * up, then refused again, and health says so */
    uint32_t n3 = fill(c, 2, n2, &code, &e);
    assert_int_equal(code, KVTIER_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(e.message, "disk full"));
    fprintf(stderr, "after the restart: %u more blocks, then %s again\n", n3 - n2,
            kvtier_code_name(code));
    admin_health(c, "DEGRADED", "disk full");
    expect_health(&s, "kvtier.v1.Tier", NOT_SERVING);
    kvtier_client_free(c);
    assert_int_equal(itest_server_signal(&s, SIGKILL, 30000, &st), 0);
    assert_int_equal(itest_server_restart(&s), 0); /* WAL replay on the full disk */
    c = itest_client(&s, "t1");
    fprintf(stderr, "restarted (kill -9, WAL replay) on the full disk: free %llu KiB\n",
            (unsigned long long)(free_bytes() >> 10));
    read_ok(c, 2, 0);
    read_ok(c, 2, n3 - 1);

    /* 5. and it heals after the restart too */
    assert_int_equal(kvtier_close_sequence(c, 2, 0, NULL, NULL, &e), KVTIER_OK);
    itest_open_seq(c, 3, 1);
    assert_int_equal(put_some(c, 3, 0, PER_STREAM, &e), KVTIER_OK);
    expect_health(&s, "kvtier.v1.Tier", SERVING);
    read_ok(c, 3, 1);
    kvtier_client_free(c);
    itest_server_stop(&s);
}

int main(void) {
    char tmpl[] = "/tmp/kvtier-diskfull-XXXXXX";
    if (geteuid() != 0 || !mkdtemp(tmpl)) {
        printf("skipped: mounting a small tmpfs needs root\n");
        return 77;
    }
    snprintf(g_mnt, sizeof g_mnt, "%s", tmpl);
    if (mount("tmpfs", g_mnt, "tmpfs", 0, "size=16m") != 0) {
        printf("skipped: cannot mount a 16 MiB tmpfs on %s: %m\n", g_mnt);
        rmdir(g_mnt);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disk_full_heals),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (umount2(g_mnt, MNT_DETACH) != 0)
        fprintf(stderr, "umount %s: %m\n", g_mnt);
    rmdir(g_mnt);
    return rc;
}
