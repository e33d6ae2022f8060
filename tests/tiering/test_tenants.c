/* test_tenants.c - a worker tiering through a kvtierd that runs with
 * --auth-tokens FILE (issue 9, identity and tenants), all real processes:
 *
 *   worker_token_file  `kvtier-worker serve --tier ADDR --tier-token-file F
 *                      --tenant alice --retain` with alice's tenant token:
 *                      a tiered generation demotes blocks to kvtierd and is
 *                      not degraded; its sequence is listed under alice (by
 *                      the operator and by alice), bob's token lists nothing;
 *   worker_env_token   the same token from KVTIER_TIER_TOKEN;
 *   worker_wrong_token a worker with bob's token claiming --tenant alice is
 *                      refused by kvtierd (PERMISSION_DENIED): its generation
 *                      completes degraded, nothing is stored under alice.
 * Skips (77) when the fixture model is not there.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itest.h"
#include "kvtier.h"
#include "worker_proc.h"

static const char *g_fixture = FIXTURE_DIR;
static const char *g_prompt =
    "The history of the city begins with a small market by the river, where traders from the "
    "hills brought wool and salt, and the fishermen sold their catch at dawn before the heat";

#define TOK_ALICE "tok-alice-0123456789"
#define TOK_BOB "tok-bob-0123456789ab"
#define TOK_OPS "tok-ops-0123456789ab"

static char g_dir[512], g_tokens[600], g_alice_file[600], g_bob_file[600];

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, 0600), 0);
}

static int on_tok(const kvtier_token_event *ev, void *user) {
    (void)ev;
    (*(int *)user)++;
    return 0;
}

/* One tiered generation (hot budget 0.2, 64 tokens) through the worker. */
static void generate(const char *addr, uint64_t seq, kvtier_generate_result *res) {
    kvtier_connect_opts co = {0};
    co.address = addr;
    co.stream_timeout_ms = 300000;
    kvtier_error err;
    kvtier_client *c = kvtier_connect(&co, &err);
    assert_non_null(c);
    kvtier_generate_params p = {0};
    p.prompt = g_prompt;
    p.max_new_tokens = 64;
    p.policy = "tier";
    p.hot_budget_fraction = 0.2f;
    p.sequence_id = seq;
    int events = 0;
    kvtier_code code = kvtier_generate(c, &p, on_tok, &events, res, &err);
    if (code != KVTIER_OK)
        fprintf(stderr, "generate: %s\n", err.message);
    assert_int_equal(code, KVTIER_OK);
    assert_true(events > 0);
    kvtier_client_free(c);
}

/* Sequences the token `tok` sees on srv (all tenants it may see). */
static size_t listed(const itest_server *srv, const char *tok, const char *tenant,
                     size_t *of_tenant) {
    itest_server view = *srv;
    view.token = tok;
    kvtier_client *c = itest_client(&view, NULL);
    kvtier_seq_info *s = NULL;
    size_t n = 0;
    kvtier_error err;
    assert_int_equal(kvtier_list_sequences(c, NULL, &s, &n, &err), KVTIER_OK);
    *of_tenant = 0;
    for (size_t i = 0; i < n; i++)
        *of_tenant += strcmp(s[i].tenant, tenant) == 0;
    kvtier_free(s);
    kvtier_client_free(c);
    return n;
}

static void start_server(itest_server *srv) {
    memset(srv, 0, sizeof *srv);
    srv->token = TOK_OPS;
    const char *flags[] = {"--auth-tokens", g_tokens, NULL};
    assert_int_equal(itest_server_start(srv, flags), 0);
}

/* A worker tiering with alice's token from `tok_file` (NULL: environment). */
static void alice_worker(const char *tok_file) {
    itest_server srv;
    start_server(&srv);
    const char *extra[] = {"--tier",    srv.addr, "--tenant",          "alice",  "--retain",
                           "--threads", "2",      "--tier-token-file", tok_file, NULL};
    if (!tok_file)
        extra[7] = NULL;
    worker_proc w = {0};
    assert_int_equal(worker_start(&w, KVTIER_WORKER_PATH, g_fixture, extra), 0);
    kvtier_generate_result res;
    generate(w.addr, 4242, &res);
    if (res.degraded)
        fprintf(stderr, "degraded: %s\n", res.degraded_reason);
    assert_false(res.degraded);
    assert_true(res.blocks_demoted_host + res.blocks_demoted_ssd > 0);
    assert_int_equal(worker_stop(&w), 0);

    size_t alice = 0, other = 0;
    size_t n = listed(&srv, TOK_OPS, "alice", &alice);
    assert_true(alice >= 1);
    assert_int_equal(n, alice); /* every sequence kvtierd holds is alice's */
    assert_int_equal(listed(&srv, TOK_ALICE, "alice", &other), n);
    assert_int_equal(listed(&srv, TOK_BOB, "bob", &other), 0);
    /* the operator inspects alice's sequence: its blocks are on the tier */
    itest_server view = srv;
    view.token = TOK_OPS;
    kvtier_client *c = itest_client(&view, "alice");
    kvtier_tier_map m;
    kvtier_error err;
    assert_int_equal(kvtier_tier_map_get(c, 4242, &m, &err), KVTIER_OK);
    size_t stored = 0;
    for (size_t i = 0; i < (size_t)m.n_layers * m.n_blocks; i++)
        stored += m.tiers[i] == KVTIER_TIER_HOST || m.tiers[i] == KVTIER_TIER_SSD;
    assert_true(stored > 0);
    kvtier_tier_map_free(&m);
    kvtier_client_free(c);
    itest_server_stop(&srv);
}

static void worker_token_file(void **state) {
    (void)state;
    alice_worker(g_alice_file);
}

static void worker_env_token(void **state) {
    (void)state;
    setenv("KVTIER_TIER_TOKEN", TOK_ALICE, 1); /* the worker inherits it */
    alice_worker(NULL);
    unsetenv("KVTIER_TIER_TOKEN");
}

static void worker_wrong_token(void **state) {
    (void)state;
    itest_server srv;
    start_server(&srv);
    const char *extra[] = {"--tier",    srv.addr, "--tenant",          "alice",
                           "--threads", "2",      "--tier-token-file", g_bob_file,
                           NULL};
    worker_proc w = {0};
    assert_int_equal(worker_start(&w, KVTIER_WORKER_PATH, g_fixture, extra), 0);
    kvtier_generate_result res;
    generate(w.addr, 4343, &res);
    assert_true(res.degraded);
    fprintf(stderr, "wrong token: degraded: %s\n", res.degraded_reason);
    assert_int_equal(worker_stop(&w), 0);
    size_t alice = 0;
    assert_int_equal(listed(&srv, TOK_OPS, "alice", &alice), 0);
    itest_server_stop(&srv);
}

int main(void) {
    if (getenv("KVTIER_FIXTURE_DIR"))
        g_fixture = getenv("KVTIER_FIXTURE_DIR");
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "%s/model.safetensors", g_fixture);
    if (access(cfg, R_OK) != 0) {
        fprintf(stderr, "SKIP: no fixture model at %s\n", g_fixture);
        return 77;
    }
    unsetenv("KVTIER_TIER_TOKEN");
    if (itest_tmpdir(g_dir, sizeof g_dir) != 0)
        return 1;
    snprintf(g_tokens, sizeof g_tokens, "%s/tokens", g_dir);
    snprintf(g_alice_file, sizeof g_alice_file, "%s/alice.token", g_dir);
    snprintf(g_bob_file, sizeof g_bob_file, "%s/bob.token", g_dir);
    write_file(g_tokens,
               TOK_ALICE " alice tenant\n" TOK_BOB " bob tenant\n" TOK_OPS " ops operator\n");
    write_file(g_alice_file, TOK_ALICE "\n");
    write_file(g_bob_file, TOK_BOB "\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(worker_token_file),
        cmocka_unit_test(worker_env_token),
        cmocka_unit_test(worker_wrong_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
