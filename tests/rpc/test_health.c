/* test_health.c - grpc.health.v1.Health (proto/rpc_health.c) on a real rpc_server
 * on a loopback port, called through the project's RPC client: Check for "", a
 * known and an unknown name; NOT_SERVING after a drain; Watch sees changes,
 * SERVICE_UNKNOWN until a name is set, ends on cancel and at shutdown without
 * holding the grace period; public despite an auth token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "health.pb-c.h"
#include "kvtier.pb-c.h"
#include "rpc.h"
#include "rpc_health.h"

#define H_CHECK "/grpc.health.v1.Health/Check"
#define H_WATCH "/grpc.health.v1.Health/Watch"
#define TIER "kvtier.v1.Tier"

typedef struct {
    rpc_server *srv;
    rpc_health *h;
    rpc_channel *ch;
} fixture;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Admin/Health stand-in: a second, non-public method for the auth test. */
static void h_admin_health(rpc_call *c, const ProtobufCMessage *req, void *user) {
    (void)req, (void)user;
    Kvtier__V1__HealthResponse r = KVTIER__V1__HEALTH_RESPONSE__INIT;
    r.status = "SERVING";
    rpc_call_reply(c, &r.base);
}

/* A started server with the health service ("" and TIER SERVING) and an Admin/
 * Health method; token: auth token or NULL. */
static fixture *fixture_new(const char *token) {
    fixture *f = calloc(1, sizeof *f);
    char err[256];
    f->srv = rpc_server_new("127.0.0.1:0", 2, 0, err, sizeof err);
    assert_non_null(f->srv);
    assert_int_equal(rpc_server_set_auth_token(f->srv, token), 0);
    assert_int_equal(rpc_server_register_service(f->srv, &kvtier__v1__admin__descriptor, "Health",
                                                 h_admin_health, NULL),
                     0);
    const char *names[] = {TIER, NULL};
    f->h = rpc_health_new(f->srv, names, err, sizeof err);
    assert_non_null(f->h);
    assert_int_equal(rpc_server_start(f->srv), 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", rpc_server_port(f->srv));
    f->ch = rpc_channel_new(addr, 0);
    return f;
}

static void fixture_free(fixture *f) {
    rpc_channel_free(f->ch);
    rpc_server_free(f->srv);
    rpc_health_free(f->h);
    free(f);
}

static int setup(void **state) {
    *state = fixture_new(NULL);
    return 0;
}

static int teardown(void **state) {
    fixture_free(*state);
    return 0;
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

static rpc_stream *watch_open(rpc_channel *ch, const char *service) {
    rpc_status st;
    rpc_stream *s = rpc_stream_open(ch, H_WATCH, NULL, &st);
    assert_non_null(s);
    Grpc__Health__V1__HealthCheckRequest r = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    r.service = (char *)service;
    assert_int_equal(rpc_stream_write(s, &r.base), 0);
    assert_int_equal(rpc_stream_close_send(s), 0);
    rpc_stream_set_op_timeout(s, 10000); /* a lost update fails, never hangs */
    return s;
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

/* Waits up to 5 s for the server's in-flight calls to reach n. */
static int wait_inflight(rpc_server *srv, int n) {
    for (int i = 0; i < 500; i++) {
        if (rpc_server_inflight(srv) == n)
            return 1;
        usleep(10000);
    }
    return 0;
}

/* ---------------------------------------------------------------- tests */

static void test_check(void **state) {
    fixture *f = *state;
    rpc_status st;
    int v;
    assert_int_equal(check(f->ch, "", &v, &st), GRPC_STATUS_OK);
    assert_int_equal(v, RPC_HEALTH_SERVING);
    assert_int_equal(check(f->ch, TIER, &v, &st), GRPC_STATUS_OK);
    assert_int_equal(v, RPC_HEALTH_SERVING);
    assert_int_equal(check(f->ch, "kvtier.v1.Nope", &v, &st), GRPC_STATUS_NOT_FOUND);
    assert_non_null(strstr(st.message, "kvtier.v1.Nope"));
    /* an overall NOT_SERVING leaves the other names alone, and comes back */
    assert_int_equal(rpc_health_set(f->h, "", RPC_HEALTH_NOT_SERVING), 0);
    assert_int_equal(check(f->ch, "", &v, &st), GRPC_STATUS_OK);
    assert_int_equal(v, RPC_HEALTH_NOT_SERVING);
    assert_int_equal(check(f->ch, TIER, &v, &st), GRPC_STATUS_OK);
    assert_int_equal(v, RPC_HEALTH_SERVING);
    assert_int_equal(rpc_health_set(f->h, "", RPC_HEALTH_SERVING), 0);
    assert_int_equal(check(f->ch, "", &v, &st), GRPC_STATUS_OK);
    assert_int_equal(v, RPC_HEALTH_SERVING);
    /* a malformed request is refused by the RPC layer */
    const uint8_t junk[] = {0x0a, 0x40, 'x'};
    assert_int_equal(rpc_unary_raw(f->ch, H_CHECK, NULL, junk, sizeof junk, NULL, NULL, &st),
                     GRPC_STATUS_INVALID_ARGUMENT);
}

static void test_registry(void **state) {
    fixture *f = *state;
    assert_int_equal(rpc_health_get(f->h, ""), RPC_HEALTH_SERVING);
    assert_int_equal(rpc_health_get(f->h, "x"), RPC_HEALTH_SERVICE_UNKNOWN);
    assert_int_equal(rpc_health_get(f->h, NULL), RPC_HEALTH_SERVICE_UNKNOWN);
    assert_int_equal(rpc_health_set(f->h, NULL, RPC_HEALTH_SERVING), -1);
    assert_int_equal(rpc_health_set(f->h, "x", RPC_HEALTH_SERVICE_UNKNOWN), -1);
    assert_int_equal(rpc_health_set(f->h, "x", (rpc_health_status)7), -1);
    char longname[RPC_HEALTH_NAME_MAX + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    assert_int_equal(rpc_health_set(f->h, longname, RPC_HEALTH_SERVING), -1);
    /* many names: the table grows */
    for (int i = 0; i < 40; i++) {
        char n[32];
        snprintf(n, sizeof n, "svc.%d", i);
        assert_int_equal(rpc_health_set(f->h, n, RPC_HEALTH_NOT_SERVING), 0);
    }
    assert_int_equal(rpc_health_get(f->h, "svc.39"), RPC_HEALTH_NOT_SERVING);
    assert_int_equal(rpc_health_get(f->h, TIER), RPC_HEALTH_SERVING);
    assert_string_equal(rpc_health_name(RPC_HEALTH_NOT_SERVING), "NOT_SERVING");
    assert_string_equal(rpc_health_name(RPC_HEALTH_SERVICE_UNKNOWN), "SERVICE_UNKNOWN");
    /* a started server takes no new registration */
    char err[256] = "";
    assert_null(rpc_health_new(f->srv, NULL, err, sizeof err));
    assert_non_null(strstr(err, "already started"));
}

/* Watch: the status at once, then each change (a set to the same value sends
 * nothing); the cancelled stream frees its handler. */
static void test_watch_change(void **state) {
    fixture *f = *state;
    rpc_stream *s = watch_open(f->ch, TIER);
    assert_int_equal(watch_next(s), RPC_HEALTH_SERVING);
    assert_int_equal(rpc_health_set(f->h, TIER, RPC_HEALTH_NOT_SERVING), 0);
    assert_int_equal(watch_next(s), RPC_HEALTH_NOT_SERVING);
    assert_int_equal(rpc_health_set(f->h, TIER, RPC_HEALTH_NOT_SERVING), 0); /* no change */
    assert_int_equal(rpc_health_set(f->h, "", RPC_HEALTH_NOT_SERVING), 0);   /* other name */
    assert_int_equal(rpc_health_set(f->h, TIER, RPC_HEALTH_SERVING), 0);
    assert_int_equal(watch_next(s), RPC_HEALTH_SERVING); /* the next message is the change */
    assert_true(wait_inflight(f->srv, 1));
    rpc_stream_cancel(s);
    rpc_stream_free(s);
    assert_true(wait_inflight(f->srv, 0)); /* the handler noticed the cancel */
    assert_int_equal(rpc_health_set(f->h, "", RPC_HEALTH_SERVING), 0);
}

/* Watch of a name never set: SERVICE_UNKNOWN, the stream stays open, and the
 * status arrives once the name is set. */
static void test_watch_unknown(void **state) {
    fixture *f = *state;
    rpc_stream *s = watch_open(f->ch, "kvtier.v1.Later");
    assert_int_equal(watch_next(s), RPC_HEALTH_SERVICE_UNKNOWN);
    usleep(300 * 1000); /* longer than the handler's poll: it must not end the call */
    assert_int_equal(rpc_health_set(f->h, "kvtier.v1.Later", RPC_HEALTH_SERVING), 0);
    assert_int_equal(watch_next(s), RPC_HEALTH_SERVING);
    rpc_stream_free(s);
    assert_true(wait_inflight(f->srv, 0));
}

/* Drain with the server still accepting calls: every name NOT_SERVING for good,
 * watchers told so, then their streams end UNAVAILABLE. */
static void test_drain(void **state) {
    fixture *f = *state;
    rpc_stream *s = watch_open(f->ch, "");
    assert_int_equal(watch_next(s), RPC_HEALTH_SERVING);
    rpc_health_shutdown(f->h);
    assert_int_equal(watch_next(s), RPC_HEALTH_NOT_SERVING);
    assert_int_equal(watch_next(s), -1);
    rpc_status st;
    assert_int_equal(rpc_stream_finish(s, &st), GRPC_STATUS_UNAVAILABLE);
    rpc_stream_free(s);
    int v;
    assert_int_equal(check(f->ch, "", &v, &st), GRPC_STATUS_OK);
    assert_int_equal(v, RPC_HEALTH_NOT_SERVING);
    assert_int_equal(check(f->ch, TIER, &v, &st), GRPC_STATUS_OK);
    assert_int_equal(v, RPC_HEALTH_NOT_SERVING);
    assert_int_equal(check(f->ch, "kvtier.v1.Nope", &v, &st), GRPC_STATUS_NOT_FOUND);
    /* no way back after shutdown */
    assert_int_equal(rpc_health_set(f->h, "", RPC_HEALTH_SERVING), -1);
    assert_int_equal(rpc_health_get(f->h, ""), RPC_HEALTH_NOT_SERVING);
    rpc_health_shutdown(f->h); /* idempotent */
    /* a watch that arrives after the drain gets the status and the end at once */
    s = watch_open(f->ch, TIER);
    assert_int_equal(watch_next(s), RPC_HEALTH_NOT_SERVING);
    assert_int_equal(watch_next(s), -1);
    assert_int_equal(rpc_stream_finish(s, &st), GRPC_STATUS_UNAVAILABLE);
    rpc_stream_free(s);
}

/* Open Watch streams (a known and an unknown name) do not hold the server's
 * shutdown for its grace period (60 s): the shutdown hook ends them, with
 * UNAVAILABLE (a grace period run out would give CANCELLED). The time bound is
 * loose: the machine may be busy. */
static void test_shutdown_with_watchers(void **state) {
    (void)state;
    fixture *f = fixture_new(NULL);
    rpc_stream *a = watch_open(f->ch, "");
    rpc_stream *b = watch_open(f->ch, "kvtier.v1.Nope");
    assert_int_equal(watch_next(a), RPC_HEALTH_SERVING);
    assert_int_equal(watch_next(b), RPC_HEALTH_SERVICE_UNKNOWN);
    double t0 = now_s();
    rpc_server_shutdown(f->srv, 60000);
    double took = now_s() - t0;
    assert_true(took < 30.0);
    assert_int_equal(watch_next(a), RPC_HEALTH_NOT_SERVING);
    assert_int_equal(watch_next(a), -1);
    assert_int_equal(watch_next(b), -1);
    rpc_status st;
    assert_int_equal(rpc_stream_finish(a, &st), GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(rpc_stream_finish(b, &st), GRPC_STATUS_UNAVAILABLE);
    rpc_stream_free(a);
    rpc_stream_free(b);
    assert_int_equal(rpc_health_get(f->h, ""), RPC_HEALTH_NOT_SERVING);
    fixture_free(f);
}

/* With an auth token, health answers without it; other methods still refuse. */
static void test_public_with_auth(void **state) {
    (void)state;
    fixture *f = fixture_new("s3cret");
    rpc_status st;
    int v;
    assert_int_equal(check(f->ch, "", &v, &st), GRPC_STATUS_OK);
    assert_int_equal(v, RPC_HEALTH_SERVING);
    rpc_stream *s = watch_open(f->ch, TIER);
    assert_int_equal(watch_next(s), RPC_HEALTH_SERVING);
    rpc_stream_free(s);
    Kvtier__V1__HealthRequest hr = KVTIER__V1__HEALTH_REQUEST__INIT;
    ProtobufCMessage *x = NULL;
    assert_int_equal(rpc_unary(f->ch, "/kvtier.v1.Admin/Health", NULL, &hr.base,
                               &kvtier__v1__health_response__descriptor, &x, &st),
                     GRPC_STATUS_UNAUTHENTICATED);
    rpc_opts auth = {.auth = "Bearer s3cret"};
    assert_int_equal(rpc_unary(f->ch, "/kvtier.v1.Admin/Health", &auth, &hr.base,
                               &kvtier__v1__health_response__descriptor, &x, &st),
                     GRPC_STATUS_OK);
    protobuf_c_message_free_unpacked(x, NULL);
    fixture_free(f);
}

/* Registration rules: twice on one server fails; public needs a registered
 * method; the method table knows the health methods' kinds. */
static void test_registration(void **state) {
    (void)state;
    char err[256];
    rpc_server *srv = rpc_server_new("127.0.0.1:0", 1, 0, err, sizeof err);
    assert_non_null(srv);
    assert_int_equal(rpc_server_set_public(srv, H_CHECK), -1); /* not registered yet */
    rpc_health *h = rpc_health_new(srv, NULL, err, sizeof err);
    assert_non_null(h);
    assert_null(rpc_health_new(srv, NULL, err, sizeof err)); /* duplicate methods */
    rpc_server_free(srv); /* never started: the hook still runs */
    assert_int_equal(rpc_health_get(h, ""), RPC_HEALTH_NOT_SERVING);
    rpc_health_free(h);
    rpc_health_free(NULL);
    assert_int_equal(rpc_method_kind(H_CHECK), RPC_UNARY);
    assert_int_equal(rpc_method_kind(H_WATCH), RPC_SERVER_STREAM);
}

int main(void) {
    const struct CMUnitTest shared[] = {
        cmocka_unit_test(test_check),        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_watch_change), cmocka_unit_test(test_watch_unknown),
        cmocka_unit_test(test_drain), /* last: the registry is shut down after it */
    };
    const struct CMUnitTest own[] = {
        cmocka_unit_test(test_shutdown_with_watchers),
        cmocka_unit_test(test_public_with_auth),
        cmocka_unit_test(test_registration),
    };
    int fails = cmocka_run_group_tests_name("health_shared", shared, setup, teardown);
    fails += cmocka_run_group_tests_name("health_own", own, NULL, NULL);
    return fails ? 1 : 0;
}
