/* test_svc_unit.c - pure parts of the kvtierd front end: flag parsing,
 * wire <-> tier mappings, summary conversion, histograms and the metrics text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"
#include "svc_map.h"
#include "svc_opts.h"

static int parse(kvtierd_opts *o, char *err, ...) {
    char *argv[32];
    int argc = 0;
    argv[argc++] = "kvtierd";
    va_list ap;
    va_start(ap, err);
    char *a;
    while ((a = va_arg(ap, char *)) != NULL)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    return kvtierd_opts_parse(argc, argv, o, err, 256);
}

static void test_opts(void **state) {
    (void)state;
    kvtierd_opts o;
    char err[256];
    unsetenv("KVTIERD_AUTH_TOKEN");
    assert_int_equal(parse(&o, err, NULL), 0);
    assert_string_equal(o.listen, "127.0.0.1:7070");
    assert_int_equal(o.host_budget, 512ull << 20);
    assert_int_equal(o.ssd_budget, 20ull << 30);
    assert_int_equal(o.write_policy, TIER_WRITE_THROUGH);
    assert_null(o.metrics_listen);
    assert_null(o.auth_token);
    assert_int_equal(o.params.hot_inactive_steps, 50);
    assert_int_equal(parse(&o, err, "--host-budget", "64MiB", "--ssd-budget", "2GiB",
                           "--host-write-policy", "back", "--top-p", "0.9", "--hot-inactive-steps",
                           "20", "--recent-blocks", "2", "--sink-blocks", "0", "--threads", "8",
                           "--max-message", "4MiB", "--auth-token", "t", "--metrics-listen",
                           "0.0.0.0:9100", NULL),
                     0);
    assert_int_equal(o.host_budget, 64ull << 20);
    assert_int_equal(o.ssd_budget, 2ull << 30);
    assert_int_equal(o.write_policy, TIER_WRITE_BACK);
    assert_true(o.params.top_p > 0.89 && o.params.top_p < 0.91);
    assert_int_equal(o.params.hot_inactive_steps, 20);
    assert_int_equal(o.params.recent_blocks, 2);
    assert_int_equal(o.params.sink_blocks, 0);
    assert_int_equal(o.threads, 8);
    assert_int_equal(o.max_message, 4u << 20);
    assert_string_equal(o.auth_token, "t");
    assert_string_equal(o.metrics_listen, "0.0.0.0:9100");
    /* errors name the flag */
    assert_int_equal(parse(&o, err, "--host-write-policy", "sideways", NULL), -1);
    assert_non_null(strstr(err, "--host-write-policy"));
    assert_int_equal(parse(&o, err, "--threads", "0", NULL), -1);
    assert_non_null(strstr(err, "--threads"));
    assert_int_equal(parse(&o, err, "--threads", "3x", NULL), -1);
    assert_int_equal(parse(&o, err, "--top-p", "0", NULL), -1);
    assert_int_equal(parse(&o, err, "--ssd-budget", "-5", NULL), -1);
    assert_non_null(strstr(err, "--ssd-budget"));
    assert_int_equal(parse(&o, err, "--max-message", "100", NULL), -1);
    assert_int_equal(parse(&o, err, "--nope", NULL), -1);
    assert_non_null(strstr(err, "--nope"));
    assert_int_equal(parse(&o, err, "--data-dir", NULL), -1);
    assert_non_null(strstr(err, "needs a value"));
    assert_int_equal(parse(&o, err, "stray", NULL), -1);
    assert_int_equal(parse(&o, err, "--help", NULL), 0);
    assert_true(o.help);
    setenv("KVTIERD_AUTH_TOKEN", "fromenv", 1);
    assert_int_equal(parse(&o, err, NULL), 0);
    assert_string_equal(o.auth_token, "fromenv");
    unsetenv("KVTIERD_AUTH_TOKEN");
}

static void test_map_enums(void **state) {
    (void)state;
    assert_int_equal(svc_status_code(TIER_OK), GRPC_STATUS_OK);
    assert_int_equal(svc_status_code(TIER_ENOTFOUND), GRPC_STATUS_NOT_FOUND);
    assert_int_equal(svc_status_code(TIER_EDATALOSS), GRPC_STATUS_DATA_LOSS);
    assert_int_equal(svc_status_code(TIER_EINVAL), GRPC_STATUS_INVALID_ARGUMENT);
    assert_int_equal(svc_status_code(TIER_ETOOBIG), GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(svc_status_code(TIER_EFULL), GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(svc_status_code(TIER_EEXIST), GRPC_STATUS_ALREADY_EXISTS);
    for (int t = TIER_HOT; t <= TIER_DROPPED; t++)
        assert_int_equal(svc_tier_from_proto(svc_tier_to_proto(t)), t);
    assert_int_equal(svc_tier_to_proto(TIER_NONE), KVTIER__V1__TIER_KIND__TIER_UNSPECIFIED);
    assert_int_equal(svc_tier_from_proto(KVTIER__V1__TIER_KIND__TIER_UNSPECIFIED), -1);
    assert_int_equal(svc_kind_to_proto(POLICY_DEMOTE_SSD),
                     KVTIER__V1__DECISION_KIND__DECISION_DEMOTE_SSD);
    assert_int_equal(svc_kind_to_proto(POLICY_PREFETCH),
                     KVTIER__V1__DECISION_KIND__DECISION_PREFETCH);
}

static void test_tenant(void **state) {
    (void)state;
    char t[TIER_TENANT_MAX + 1], err[256];
    assert_int_equal(svc_tenant("a", NULL, t, err, sizeof err), 0);
    assert_string_equal(t, "a");
    assert_int_equal(svc_tenant("", "md", t, err, sizeof err), 0);
    assert_string_equal(t, "md");
    assert_int_equal(svc_tenant(NULL, NULL, t, err, sizeof err), 0);
    assert_string_equal(t, SVC_DEFAULT_TENANT);
    assert_int_equal(svc_tenant("x", "x", t, err, sizeof err), 0);
    assert_int_equal(svc_tenant("x", "y", t, err, sizeof err), -1);
    assert_non_null(strstr(err, "differs"));
    char longname[100];
    memset(longname, 'a', 99);
    longname[99] = 0;
    assert_int_equal(svc_tenant(longname, NULL, t, err, sizeof err), -1);
}

static void test_params_merge(void **state) {
    (void)state;
    policy_params d, out;
    policy_params_init(&d);
    char err[256];
    assert_int_equal(svc_params_merge(&d, NULL, &out, err, sizeof err), 0);
    assert_int_equal(out.hot_inactive_steps, d.hot_inactive_steps);
    Kvtier__V1__PolicyParams pp = KVTIER__V1__POLICY_PARAMS__INIT;
    uint32_t budgets[3] = {10, 20, 30};
    pp.hot_inactive_steps = 7;
    pp.retain_on_close = 1;
    pp.n_layer_hot_budget_blocks = 3;
    pp.layer_hot_budget_blocks = budgets;
    assert_int_equal(svc_params_merge(&d, &pp, &out, err, sizeof err), 0);
    assert_int_equal(out.hot_inactive_steps, 7);
    assert_int_equal(out.recent_blocks, d.recent_blocks); /* 0 keeps the default */
    assert_true(out.retain_on_close);
    assert_int_equal(out.n_layer_budgets, 3);
    assert_int_equal(out.layer_hot_budget[2], 30);
    Kvtier__V1__PolicyParams back = KVTIER__V1__POLICY_PARAMS__INIT;
    svc_params_to_proto(&out, &back);
    assert_int_equal(back.hot_inactive_steps, 7);
    assert_int_equal(back.n_layer_hot_budget_blocks, 3);
    pp.top_p = 3.0f;
    assert_int_equal(svc_params_merge(&d, &pp, &out, err, sizeof err), -1);
    assert_non_null(strstr(err, "top_p"));
    pp.top_p = 0;
    pp.n_layer_hot_budget_blocks = POLICY_MAX_LAYERS + 1;
    assert_int_equal(svc_params_merge(&d, &pp, &out, err, sizeof err), -1);
}

static void test_summary_convert(void **state) {
    (void)state;
    Kvtier__V1__ActiveBlock a[3], *ap[3];
    for (int i = 0; i < 3; i++) {
        kvtier__v1__active_block__init(&a[i]);
        a[i].block = (uint32_t)(10 + i);
        a[i].peak_mass = 0.1f * (float)(i + 1);
        ap[i] = &a[i];
    }
    uint32_t rec[2] = {4, 5}, drop[1] = {7};
    Kvtier__V1__LayerSummary l0 = KVTIER__V1__LAYER_SUMMARY__INIT,
                             l1 = KVTIER__V1__LAYER_SUMMARY__INIT;
    l0.layer = 0;
    l0.n_active = 2;
    l0.active = ap;
    l0.block_count = 12;
    l1.layer = 3;
    l1.n_active = 1;
    l1.active = ap + 2;
    l1.n_recalled = 2;
    l1.recalled = rec;
    l1.n_locally_dropped = 1;
    l1.locally_dropped = drop;
    l1.block_count = 14;
    Kvtier__V1__LayerSummary *lp[2] = {&l0, &l1};
    Kvtier__V1__SummaryRequest r = KVTIER__V1__SUMMARY_REQUEST__INIT;
    r.step = 64;
    r.n_layers = 2;
    r.layers = lp;
    svc_summary s;
    char err[256];
    assert_int_equal(svc_summary_from_proto(&r, &s, err, sizeof err), 0);
    assert_int_equal(s.s.step, 64);
    assert_int_equal(s.s.n_blocks, 14);
    assert_int_equal(s.s.n_layers, 2);
    assert_int_equal(s.s.layers[0].n_active, 2);
    assert_int_equal(s.s.layers[0].active[1], 11);
    assert_int_equal(s.s.layers[1].layer, 3);
    assert_int_equal(s.s.layers[1].active[0], 12);
    assert_float_equal(s.s.layers[1].peak_mass[0], 0.3f, 1e-6);
    assert_int_equal(s.s.layers[1].n_recalled, 2);
    assert_int_equal(s.s.layers[1].recalled[1], 5);
    assert_int_equal(s.s.layers[1].n_dropped, 1);
    assert_int_equal(s.s.layers[1].dropped[0], 7);
    svc_summary_free(&s);
    /* an empty active entry (possible on the wire) is refused */
    ap[1] = NULL;
    assert_int_equal(svc_summary_from_proto(&r, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "active entry 1"));
}

static void test_histogram(void **state) {
    (void)state;
    static metrics m;
    metrics_init(&m);
    assert_true(metrics_quantile(&m.put, 0.5) == 0.0);
    for (int i = 0; i < 90; i++)
        metrics_observe(&m.put, 70000); /* 70 us: (50, 100] */
    for (int i = 0; i < 10; i++)
        metrics_observe(&m.put, 3000000); /* 3 ms: (2.5, 5] ms */
    double p50 = metrics_quantile(&m.put, 0.5), p99 = metrics_quantile(&m.put, 0.99);
    assert_true(p50 > 50e-6 && p50 <= 100e-6);
    assert_true(p99 > 2.5e-3 && p99 <= 5e-3);
    metrics_observe(&m.put, 5000000000ull); /* 5 s: +Inf bucket */
    assert_true(metrics_quantile(&m.put, 1.0) == 1.0);
    metrics_rpc(&m, "/kvtier.v1.Tier/PutBlocks", GRPC_STATUS_DATA_LOSS, 1000);
    metrics_rpc(&m, "/elsewhere/X", GRPC_STATUS_UNIMPLEMENTED, 1000);
    /* a long Watch has its own series: it does not skew "other" */
    metrics_rpc(&m, "/grpc.health.v1.Health/Watch", GRPC_STATUS_UNAVAILABLE, 60000000000ull);
    tier_stats st;
    memset(&st, 0, sizeof st);
    st.level[TIER_HOST].hits = 3;
    st.level[TIER_HOST].misses = 1;
    st.decisions[POLICY_DROP] = 5;
    size_t len = 0;
    char *text = metrics_render(&m, &st, 12, "9.9.9", &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    assert_non_null(strstr(text, "kvtier_build_info{version=\"9.9.9\"} 1\n"));
    assert_non_null(strstr(text, "kvtier_put_seconds_bucket{le=\"0.0001\"} 90\n"));
    assert_non_null(strstr(text, "kvtier_put_seconds_bucket{le=\"+Inf\"} 101\n"));
    assert_non_null(strstr(text, "kvtier_put_seconds_count 101\n"));
    assert_non_null(strstr(text, "kvtier_tier_hit_ratio{tier=\"host\"} 0.75\n"));
    assert_non_null(strstr(text, "kvtier_decisions_total{kind=\"drop\"} 5\n"));
    assert_non_null(strstr(
        text,
        "kvtier_rpc_requests_total{method=\"/kvtier.v1.Tier/PutBlocks\",code=\"DATA_LOSS\"} 1\n"));
    assert_non_null(
        strstr(text, "kvtier_rpc_requests_total{method=\"other\",code=\"UNIMPLEMENTED\"} 1\n"));
    assert_non_null(strstr(text, "kvtier_rpc_requests_total{method=\"/grpc.health.v1.Health/"
                                 "Watch\",code=\"UNAVAILABLE\"} 1\n"));
    assert_null(strstr(text, "kvtier_rpc_requests_total{method=\"other\",code=\"UNAVAILABLE\"}"));
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opts),
        cmocka_unit_test(test_map_enums),
        cmocka_unit_test(test_tenant),
        cmocka_unit_test(test_params_merge),
        cmocka_unit_test(test_summary_convert),
        cmocka_unit_test(test_histogram),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
