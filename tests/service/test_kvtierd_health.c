/* test_kvtierd_health.c - grpc.health.v1.Health of a real kvtierd process on a
 * loopback port: Check for "", its services and an unknown name; answered
 * without the auth token; a Watch open across SIGTERM sees NOT_SERVING (the
 * drain) and ends without holding kvtierd's grace period.
 *
 * argv[1] = path of the kvtierd binary (from CMake).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "health.pb-c.h"
#include "kvtier.pb-c.h"
#include "kvtierd_proc.h"
#include "rpc.h"
#include "rpc_health.h"

#define H_CHECK "/grpc.health.v1.Health/Check"
#define H_WATCH "/grpc.health.v1.Health/Watch"

static const char *g_bin;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Check(service): the code; *out gets the status when OK (-1 otherwise). */
static grpc_status_code check(rpc_channel *ch, const char *service, int *out, rpc_status *st) {
    Grpc__Health__V1__HealthCheckRequest r = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    r.service = (char *)service;
    Grpc__Health__V1__HealthCheckResponse *resp = NULL;
    rpc_opts o = {.timeout_ms = 5000};
    grpc_status_code c =
        rpc_unary(ch, H_CHECK, &o, &r.base, &grpc__health__v1__health_check_response__descriptor,
                  (ProtobufCMessage **)&resp, st);
    *out = resp ? (int)resp->status : -1;
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    return c;
}

/* Next Watch message's status, -1 when the stream ended. */
static int watch_next(rpc_stream *s) {
    Grpc__Health__V1__HealthCheckResponse *m = NULL;
    if (rpc_stream_read(s, &grpc__health__v1__health_check_response__descriptor,
                        (ProtobufCMessage **)&m) != 1)
        return -1;
    int v = (int)m->status;
    protobuf_c_message_free_unpacked(&m->base, NULL);
    return v;
}

static int own_setup(void **state) {
    *state = kvd_new();
    return *state ? 0 : -1;
}

/* Runs even when a test failed: kills the process, removes the temp dir. */
static int own_teardown(void **state) {
    kvd_free(*state);
    return 0;
}

/* Check for "", Tier, Admin (SERVING) and an unknown name (NOT_FOUND), with an
 * auth token set and none sent: health (both services) is public, the rest is
 * not. */
static void test_check(void **state) {
    kvd_proc *d = *state;
    const char *extra[] = {"--auth-token", "tok3n", NULL};
    assert_int_equal(kvd_start(d, g_bin, extra), 0);
    rpc_status st;
    int v;
    const char *names[] = {"", kvtier__v1__tier__descriptor.name,
                           kvtier__v1__admin__descriptor.name};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(check(d->ch, names[i], &v, &st), GRPC_STATUS_OK);
        assert_int_equal(v, RPC_HEALTH_SERVING);
    }
    assert_string_equal(names[1], "kvtier.v1.Tier");
    assert_int_equal(check(d->ch, "kvtier.v1.Inference", &v, &st), GRPC_STATUS_NOT_FOUND);
    assert_int_equal(check(d->ch, "grpc.health.v1.Health", &v, &st), GRPC_STATUS_NOT_FOUND);
    Kvtier__V1__HealthRequest hr = KVTIER__V1__HEALTH_REQUEST__INIT;
    ProtobufCMessage *x = NULL;
    assert_int_equal(rpc_unary(d->ch, "/kvtier.v1.Admin/Health", NULL, &hr.base,
                               &kvtier__v1__health_response__descriptor, &x, &st),
                     GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(x, NULL);
    x = NULL;
    Kvtier__V1__GetStatsRequest sr = KVTIER__V1__GET_STATS_REQUEST__INIT;
    assert_int_equal(rpc_unary(d->ch, "/kvtier.v1.Admin/GetStats", NULL, &sr.base,
                               &kvtier__v1__get_stats_response__descriptor, &x, &st),
                     GRPC_STATUS_UNAUTHENTICATED);
    /* the store check runs every second: still SERVING after a few of them */
    kvd_sleep_ms(2500);
    assert_int_equal(check(d->ch, "", &v, &st), GRPC_STATUS_OK);
    assert_int_equal(v, RPC_HEALTH_SERVING);
    assert_int_equal(kvd_stop(d, SIGTERM), 0);
}

/* A Watch of "" and one of Tier, open when kvtierd gets SIGTERM: both see
 * NOT_SERVING, then end UNAVAILABLE (not CANCELLED: the server ended them, the
 * grace period did not run out); kvtierd exits 0 long before its 60 s grace
 * period. The bound is loose: the machine may be busy. */
static void test_watch_across_sigterm(void **state) {
    kvd_proc *d = *state;
    const char *extra[] = {"--grace-ms", "60000", NULL};
    assert_int_equal(kvd_start(d, g_bin, extra), 0);
    rpc_stream *w[2];
    const char *names[2] = {"", "kvtier.v1.Tier"};
    for (int i = 0; i < 2; i++) {
        rpc_status st;
        w[i] = rpc_stream_open(d->ch, H_WATCH, NULL, &st);
        assert_non_null(w[i]);
        Grpc__Health__V1__HealthCheckRequest r = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        r.service = (char *)names[i];
        assert_int_equal(rpc_stream_write(w[i], &r.base), 0);
        assert_int_equal(rpc_stream_close_send(w[i]), 0);
        rpc_stream_set_op_timeout(w[i], 15000);
        assert_int_equal(watch_next(w[i]), RPC_HEALTH_SERVING);
    }
    double t0 = now_s();
    assert_int_equal(kill(d->pid, SIGTERM), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(watch_next(w[i]), RPC_HEALTH_NOT_SERVING);
        assert_int_equal(watch_next(w[i]), -1);
        rpc_status st;
        assert_int_equal(rpc_stream_finish(w[i], &st), GRPC_STATUS_UNAVAILABLE);
        rpc_stream_free(w[i]);
    }
    rpc_channel_free(d->ch); /* an idle connection would hold gRPC's shutdown ~5 s */
    d->ch = NULL;
    /* exits 0 without waiting out the grace period */
    int status = 0;
    pid_t r;
    while ((r = waitpid(d->pid, &status, WNOHANG)) != d->pid && now_s() - t0 < 40)
        kvd_sleep_ms(10);
    double took = now_s() - t0;
    fprintf(stderr, "kvtierd exited %.2f s after SIGTERM (grace 60 s)\n", took);
    assert_int_equal(r, d->pid); /* else own_teardown kills it */
    d->pid = 0;
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(took < 30.0);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PATH_TO_KVTIERD\n", argv[0]);
        return 2;
    }
    g_bin = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_check, own_setup, own_teardown),
        cmocka_unit_test_setup_teardown(test_watch_across_sigterm, own_setup, own_teardown),
    };
    return cmocka_run_group_tests_name("kvtierd_health", tests, NULL, NULL) ? 1 : 0;
}
