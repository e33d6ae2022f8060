/* test_kvtierd_streams.c - issue 9: one client cannot stop the service. A
 * real kvtierd (default stream caps, --stream-idle-timeout 3) on loopback;
 * client A opens 300 PutBlocks streams and sends nothing on them. Then, from
 * client B (its own connection):
 *   - grpc.health.v1.Health/Check and Admin/Health answer SERVING promptly,
 *   - a unary call (GetStats) and a stream of its own (PutBlocks) work,
 * and client A's streams get their statuses: those over the per-client cap
 * RESOURCE_EXHAUSTED at once (a 301st one too, timed), the others CANCELLED
 * by the idle timeout, with messages saying so; afterwards client A can open
 * streams again. The latencies are printed.
 *
 * argv[1] = path of the kvtierd binary (from CMake).
 * argv[2] = "--baseline" (by hand): start argv[1] with the flags after it
 * (none: an older kvtierd works too), open the 300 streams, print how long
 * Health and a unary call take (3 s deadline each), exit 0. E.g.
 *   test_kvtierd_streams kvtierd --baseline --max-streams 0 \
 *       --max-streams-per-client 0 --stream-idle-timeout 0 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "health.pb-c.h"
#include "kvtier.pb-c.h"
#include "kvtierd_proc.h"
#include "rpc.h"

#define H_CHECK "/grpc.health.v1.Health/Check"
#define A_HEALTH "/kvtier.v1.Admin/Health"
#define A_STATS "/kvtier.v1.Admin/GetStats"
#define T_PUT "/kvtier.v1.Tier/PutBlocks"

#define NSTREAMS 300
#define PER_CLIENT 128 /* kvtierd's default --max-streams-per-client */
#define IDLE_S 3

static const char *g_bin;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A channel of its own connection: gRPC shares one connection between
 * channels of one process whose arguments are equal, so each client gets a
 * different max message size. */
static rpc_channel *client(const kvd_proc *d, int which) {
    return rpc_channel_new(d->addr, (8u << 20) + (size_t)which);
}

/* Health/Check(""): the code; *serving 1 when SERVING. */
static grpc_status_code health_check(rpc_channel *ch, int *serving, double *secs) {
    Grpc__Health__V1__HealthCheckRequest r = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    r.service = "";
    Grpc__Health__V1__HealthCheckResponse *resp = NULL;
    rpc_opts o = {.timeout_ms = 3000};
    rpc_status st;
    double t0 = now_s();
    grpc_status_code c =
        rpc_unary(ch, H_CHECK, &o, &r.base, &grpc__health__v1__health_check_response__descriptor,
                  (ProtobufCMessage **)&resp, &st);
    *secs = now_s() - t0;
    *serving =
        resp && resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return c;
}

/* Admin/Health: the code; status string copied into out. */
static grpc_status_code admin_health(rpc_channel *ch, char *out, size_t len, double *secs) {
    Kvtier__V1__HealthRequest r = KVTIER__V1__HEALTH_REQUEST__INIT;
    Kvtier__V1__HealthResponse *resp = NULL;
    rpc_opts o = {.timeout_ms = 3000};
    rpc_status st;
    double t0 = now_s();
    grpc_status_code c =
        rpc_unary(ch, A_HEALTH, &o, &r.base, &kvtier__v1__health_response__descriptor,
                  (ProtobufCMessage **)&resp, &st);
    *secs = now_s() - t0;
    snprintf(out, len, "%s", resp && resp->status ? resp->status : "");
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return c;
}

/* Admin/GetStats: a plain unary call. */
static grpc_status_code get_stats(rpc_channel *ch, double *secs) {
    Kvtier__V1__GetStatsRequest r = KVTIER__V1__GET_STATS_REQUEST__INIT;
    Kvtier__V1__GetStatsResponse *resp = NULL;
    rpc_opts o = {.timeout_ms = 3000};
    rpc_status st;
    double t0 = now_s();
    grpc_status_code c =
        rpc_unary(ch, A_STATS, &o, &r.base, &kvtier__v1__get_stats_response__descriptor,
                  (ProtobufCMessage **)&resp, &st);
    *secs = now_s() - t0;
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return c;
}

/* A PutBlocks stream opened and started (the server sees the call), idle. */
static rpc_stream *idle_stream(rpc_channel *ch) {
    rpc_status st;
    rpc_stream *s = rpc_stream_open(ch, T_PUT, NULL, &st);
    if (s && rpc_stream_start(s) != 0) {
        rpc_stream_free(s);
        return NULL;
    }
    return s;
}

/* Waits for a stream's status without half-closing it (a half-close would
 * let the handler answer normally). */
static grpc_status_code stream_status(rpc_stream *s, rpc_status *st) {
    Kvtier__V1__PutResponse *m = NULL;
    if (rpc_stream_read(s, &kvtier__v1__put_response__descriptor, (ProtobufCMessage **)&m) == 1)
        protobuf_c_message_free_unpacked(&m->base, NULL);
    return rpc_stream_finish(s, st);
}

/* An empty PutBlocks stream, half-closed at once: OK with 0 acks. */
static grpc_status_code empty_put(rpc_channel *ch, rpc_status *st) {
    rpc_stream *s = rpc_stream_open(ch, T_PUT, NULL, st);
    if (!s)
        return GRPC_STATUS_INTERNAL;
    Kvtier__V1__PutResponse *resp = NULL;
    grpc_status_code c = rpc_stream_close_and_recv(s, &kvtier__v1__put_response__descriptor,
                                                   (ProtobufCMessage **)&resp, st);
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    rpc_stream_free(s);
    return c;
}

static void test_idle_streams(void **state) {
    (void)state;
    static const char *const flags[] = {"--stream-idle-timeout", "3", NULL};
    kvd_proc *d = kvd_new();
    assert_non_null(d);
    assert_int_equal(kvd_start(d, g_bin, flags), 0);
    rpc_channel *a = client(d, 1), *b = client(d, 2);
    assert_non_null(a);
    assert_non_null(b);

    /* client A: 300 idle streams */
    static rpc_stream *s[NSTREAMS];
    double t_open = now_s();
    for (int i = 0; i < NSTREAMS; i++) {
        s[i] = idle_stream(a);
        assert_non_null(s[i]);
    }
    double opened = now_s();
    kvd_sleep_ms(300); /* let every call reach kvtierd */

    /* client B: health, a unary call, a stream of its own */
    int serving = 0;
    double hs = 0, as = 0, gs = 0, ps = 0;
    assert_int_equal(health_check(b, &serving, &hs), GRPC_STATUS_OK);
    assert_true(serving);
    char status[32];
    assert_int_equal(admin_health(b, status, sizeof status, &as), GRPC_STATUS_OK);
    assert_string_equal(status, "SERVING");
    assert_int_equal(get_stats(b, &gs), GRPC_STATUS_OK);
    rpc_status st;
    double t0 = now_s();
    assert_int_equal(empty_put(b, &st), GRPC_STATUS_OK);
    ps = now_s() - t0;
    /* client A's health answers too (health is no stream) */
    int serving_a = 0;
    double hsa = 0;
    assert_int_equal(health_check(a, &serving_a, &hsa), GRPC_STATUS_OK);
    fprintf(stderr,
            "300 idle streams opened in %.3f s; with them open: Health/Check %.1f ms, "
            "Admin/Health %.1f ms, GetStats %.1f ms, PutBlocks stream %.1f ms (client B); "
            "Health/Check from client A %.1f ms\n",
            opened - t_open, hs * 1e3, as * 1e3, gs * 1e3, ps * 1e3, hsa * 1e3);
    assert_true(hs < 1.0 && as < 1.0 && gs < 1.0 && ps < 1.0);

    /* one more stream from A: refused at once, the cap named */
    t0 = now_s();
    rpc_stream *extra = idle_stream(a);
    assert_non_null(extra);
    grpc_status_code ec = stream_status(extra, &st);
    double es = now_s() - t0;
    rpc_stream_free(extra);
    fprintf(stderr, "stream #301 from client A: %s in %.1f ms: %s\n", rpc_status_name(ec), es * 1e3,
            st.message);
    assert_int_equal(ec, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(st.message, "per client connection"));
    assert_true(es < 1.0);

    /* the 300: RESOURCE_EXHAUSTED (over the cap) or CANCELLED (idle) */
    int refused = 0, idled = 0, other = 0;
    for (int i = 0; i < NSTREAMS; i++) {
        grpc_status_code c = stream_status(s[i], &st);
        if (c == GRPC_STATUS_RESOURCE_EXHAUSTED && strstr(st.message, "per client connection"))
            refused++;
        else if (c == GRPC_STATUS_CANCELLED && strstr(st.message, "idle"))
            idled++;
        else {
            if (other++ < 3)
                fprintf(stderr, "stream %d: %s: %s\n", i, rpc_status_name(c), st.message);
        }
        rpc_stream_free(s[i]);
    }
    double done = now_s() - opened;
    fprintf(stderr,
            "statuses: %d RESOURCE_EXHAUSTED, %d CANCELLED by the idle timeout (%d s), %d other; "
            "all in %.2f s after opening\n",
            refused, idled, IDLE_S, other, done);
    assert_int_equal(other, 0);
    assert_int_equal(idled, PER_CLIENT);
    assert_int_equal(refused, NSTREAMS - PER_CLIENT);
    assert_true(done > IDLE_S - 0.5 && done < IDLE_S + 5.0);

    /* the slots came back: client A opens streams again */
    assert_int_equal(empty_put(a, &st), GRPC_STATUS_OK);
    assert_int_equal(health_check(b, &serving, &hs), GRPC_STATUS_OK);
    rpc_channel_free(a);
    rpc_channel_free(b);
    assert_int_equal(kvd_stop(d, SIGTERM), 0);
    kvd_free(d);
}

/* --baseline: no new flags; how long do calls take with 300 idle streams? */
static int baseline(const char *const *flags) {
    kvd_proc *d = kvd_new();
    if (!d || kvd_start(d, g_bin, flags) != 0)
        return 1;
    rpc_channel *a = client(d, 1), *b = client(d, 2);
    static rpc_stream *s[NSTREAMS];
    for (int i = 0; i < NSTREAMS; i++)
        s[i] = idle_stream(a);
    kvd_sleep_ms(300);
    int serving = 0;
    double hs = 0, as = 0, gs = 0;
    char status[32];
    grpc_status_code hc = health_check(b, &serving, &hs);
    grpc_status_code ac = admin_health(b, status, sizeof status, &as);
    grpc_status_code gc = get_stats(b, &gs);
    printf("baseline, 300 idle streams open: Health/Check %s in %.1f ms, Admin/Health %s in %.1f "
           "ms, GetStats %s in %.1f ms (deadline 3000 ms)\n",
           rpc_status_name(hc), hs * 1e3, rpc_status_name(ac), as * 1e3, rpc_status_name(gc),
           gs * 1e3);
    for (int i = 0; i < NSTREAMS; i++)
        rpc_stream_free(s[i]);
    rpc_channel_free(a);
    rpc_channel_free(b);
    kvd_free(d);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s KVTIERD [--baseline]\n", argv[0]);
        return 2;
    }
    g_bin = argv[1];
    if (argc > 2 && strcmp(argv[2], "--baseline") == 0)
        return baseline((const char *const *)argv + 3);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
