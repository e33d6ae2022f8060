/* test_ctl.c — kvtierctl as a process against a real kvtierd: exit codes
 * (0 ok, 1 failed, 2 usage), error messages (unreachable server, NOT_FOUND
 * sequence), --help, --version, each command's output (human and --json),
 * NO_COLOR on a terminal, and --token-file against a kvtierd with a tokens
 * file (a tenant token sees its own sequences, drain needs an operator). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include <pty.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "itest.h"

#define BLOCK (64 * 1024)
#define SEQ 31ull

static itest_server g_srv;

typedef struct {
    int rc;
    char *out, *err;
} run_res;

/* Runs kvtierctl with the given arguments (NULL-terminated). */
static run_res ctl(const char *a0, ...) {
    const char *argv[32];
    int n = 0;
    argv[n++] = itest_kvtierctl();
    va_list ap;
    va_start(ap, a0);
    for (const char *a = a0; a && n < 31; a = va_arg(ap, const char *))
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    run_res r;
    r.rc = itest_run(argv, &r.out, &r.err);
    return r;
}

/* Runs kvtierctl on a pseudo-terminal (stdout is a tty) with NO_COLOR set to
 * no_color (NULL: unset); returns what it printed (malloc'd) and its exit code. */
static char *ctl_tty(const char *no_color, int *rc, const char *a0, ...) {
    const char *argv[32];
    int n = 0;
    argv[n++] = itest_kvtierctl();
    va_list ap;
    va_start(ap, a0);
    for (const char *a = a0; a && n < 31; a = va_arg(ap, const char *))
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    int master;
    struct winsize ws = {.ws_row = 40, .ws_col = 120};
    pid_t pid = forkpty(&master, NULL, NULL, &ws);
    assert_true(pid >= 0);
    if (pid == 0) {
        if (no_color)
            setenv("NO_COLOR", no_color, 1);
        else
            unsetenv("NO_COLOR");
        unsetenv("COLORTERM");
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        ssize_t r = read(master, buf + len, cap - len - 1);
        if (r <= 0) /* EIO once the child closed the terminal */
            break;
        len += (size_t)r;
        if (len + 1 >= cap)
            break;
    }
    buf[len] = 0;
    close(master);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return buf;
}

static void run_free(run_res *r) {
    free(r->out);
    free(r->err);
}

static int setup(void **state) {
    (void)state;
    if (itest_server_start(&g_srv, NULL))
        return -1;
    /* One sequence with 2 layers x 10 stored blocks. */
    kvtier_client *c = itest_client(&g_srv, NULL);
    kvtier_seq_shape sh = {0};
    sh.sequence_id = SEQ;
    sh.layers = 2;
    sh.kv_heads = 8;
    sh.head_dim = 128;
    sh.block_bytes = BLOCK;
    kvtier_error e;
    if (kvtier_open_sequence(c, &sh, NULL, &e))
        return -1;
    uint8_t *buf = malloc(BLOCK);
    kvtier_block blocks[20];
    for (int i = 0; i < 20; i++) {
        blocks[i] = (kvtier_block){(uint32_t)(i / 10), (uint32_t)(i % 10), buf, BLOCK, 0, 0, 16,
                                   KVTIER_TIER_ABSENT};
    }
    itest_payload(buf, BLOCK, SEQ, 0, 0, 0);
    kvtier_code code = kvtier_put_blocks(c, SEQ, blocks, 20, NULL, &e);
    free(buf);
    kvtier_client_free(c);
    return code == KVTIER_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    itest_server_stop(&g_srv);
    return 0;
}

static void test_usage_errors(void **state) {
    (void)state;
    run_res r = ctl(NULL);
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "usage:"));
    run_free(&r);
    r = ctl("frobnicate", NULL);
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "unknown command 'frobnicate'"));
    run_free(&r);
    r = ctl("map", NULL);
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "missing sequence id"));
    run_free(&r);
    r = ctl("map", "12x", NULL);
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "sequence id must be a positive decimal integer"));
    run_free(&r);
    r = ctl("evict", "5", "--to", "moon", NULL);
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "--to wants host, ssd or drop"));
    run_free(&r);
    r = ctl("stats", "--layer", "3", NULL);
    assert_int_equal(r.rc, 2);
    run_free(&r);
    r = ctl("--bogus", "health", NULL);
    assert_int_equal(r.rc, 2);
    assert_non_null(strstr(r.err, "unknown option '--bogus'"));
    run_free(&r);
}

/* NO_COLOR turns the map's colors off on a terminal unless --color asks. */
static void test_no_color(void **state) {
    (void)state;
    int rc;
    char *out = ctl_tty(NULL, &rc, "--server", g_srv.addr, "map", "31", NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "\x1b[48;5;")); /* a terminal: colors */
    free(out);
    out = ctl_tty("1", &rc, "--server", g_srv.addr, "map", "31", NULL);
    assert_int_equal(rc, 0);
    if (strstr(out, "\x1b[") || !strstr(out, "L0    ") || !strstr(out, "totals:"))
        fail_msg("NO_COLOR=1 on a terminal printed:\n%s", out);
    free(out);
    out = ctl_tty("1", &rc, "--server", g_srv.addr, "map", "31", "--color", "256", NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "\x1b[48;5;")); /* the flag wins */
    free(out);
    out = ctl_tty("", &rc, "--server", g_srv.addr, "map", "31", NULL); /* empty: ignored */
    assert_non_null(strstr(out, "\x1b[48;5;"));
    free(out);
}

static void test_help(void **state) {
    (void)state;
    run_res v = ctl("--version", NULL);
    assert_int_equal(v.rc, 0);
    assert_non_null(strstr(v.out, "kvtierctl 0."));
    run_free(&v);
    run_res r = ctl("--help", NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "usage: kvtierctl"));
    assert_non_null(strstr(r.out, "127.0.0.1:7070"));
    run_free(&r);
    const char *cmds[] = {"health", "stats", "sequences", "map", "evict", "drain"};
    for (size_t i = 0; i < 6; i++) {
        r = ctl(cmds[i], "--help", NULL);
        assert_int_equal(r.rc, 0);
        char want[64];
        snprintf(want, sizeof want, "usage: kvtierctl %s", cmds[i]);
        assert_non_null(strstr(r.out, want));
        run_free(&r);
    }
    r = ctl("help", "map", NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "usage: kvtierctl map"));
    run_free(&r);
}

static void test_unreachable(void **state) {
    (void)state;
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", itest_free_port());
    run_res r = ctl("--server", addr, "health", NULL);
    assert_int_equal(r.rc, 1);
    char want[128];
    snprintf(want, sizeof want, "kvtierctl: cannot reach kvtierd at %s: ", addr);
    assert_non_null(strstr(r.err, want));
    assert_string_equal(r.out, "");
    run_free(&r);
    /* KVTIER_SERVER is honoured too (the env of this process is inherited). */
    setenv("KVTIER_SERVER", addr, 1);
    r = ctl("stats", NULL);
    unsetenv("KVTIER_SERVER");
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, want));
    run_free(&r);
}

static void test_not_found(void **state) {
    (void)state;
    run_res r = ctl("--server", g_srv.addr, "map", "424242", NULL);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "kvtierctl: map: sequence 424242 not found"));
    run_free(&r);
    r = ctl("--server", g_srv.addr, "evict", "424242", NULL);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "sequence 424242 not found"));
    run_free(&r);
}

static void test_commands(void **state) {
    (void)state;
    run_res r = ctl("--server", g_srv.addr, "health", NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "SERVING"));
    run_free(&r);

    r = ctl("--server", g_srv.addr, "stats", NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "TIER"));
    assert_non_null(strstr(r.out, "1.25 MiB")); /* 20 x 64 KiB on HOST */
    run_free(&r);

    r = ctl("--server", g_srv.addr, "sequences", "--json", NULL);
    assert_int_equal(r.rc, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    cJSON *s0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "sequences"), 0);
    assert_int_equal(cJSON_GetObjectItem(s0, "sequence_id")->valuedouble, SEQ);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(s0, "blocks"), "HOST")->valuedouble,
                     20);
    cJSON_Delete(j);
    run_free(&r);

    /* Colors forced on a pipe: ANSI backgrounds; --plain: none. */
    r = ctl("--server", g_srv.addr, "map", "31", "--color", "always", NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "\x1b[48;5;214m")); /* HOST cells */
    run_free(&r);
    r = ctl("--server", g_srv.addr, "map", "31", "--plain", NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "L0    hhhhhhhhhh\n"));
    assert_non_null(strstr(r.out, "L1    hhhhhhhhhh\n"));
    run_free(&r);

    /* evict layer 1 to SSD, then the map shows it. */
    r = ctl("--server", g_srv.addr, "--json", "evict", "31", "--layer", "1", "--to", "ssd", NULL);
    assert_int_equal(r.rc, 0);
    j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItem(j, "blocks_moved")->valuedouble, 10);
    cJSON_Delete(j);
    run_free(&r);
    r = ctl("--server", g_srv.addr, "map", "31", "--plain", NULL);
    assert_non_null(strstr(r.out, "L1    ssssssssss\n"));
    run_free(&r);

    r = ctl("--server", g_srv.addr, "drain", NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "drained: 10 blocks written to SSD"));
    run_free(&r);
    r = ctl("--server", g_srv.addr, "--json", "map", "31", NULL);
    j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "counts"), "SSD")->valuedouble, 20);
    cJSON_Delete(j);
    run_free(&r);
}

static void test_auth_token(void **state) {
    (void)state;
    itest_server s = {0};
    s.token = "s3cret";
    static const char *flags[] = {"--auth-token", "s3cret", NULL};
    assert_int_equal(itest_server_start(&s, flags), 0);
    run_res r = ctl("--server", s.addr, "health", NULL); /* health needs no token */
    assert_int_equal(r.rc, 0);
    run_free(&r);
    r = ctl("--server", s.addr, "stats", NULL);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "UNAUTHENTICATED"));
    assert_non_null(strstr(r.err, "--token"));
    run_free(&r);
    r = ctl("--server", s.addr, "--token", "wrong", "stats", NULL);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "UNAUTHENTICATED"));
    run_free(&r);
    r = ctl("--server", s.addr, "--token", "s3cret", "health", NULL);
    assert_int_equal(r.rc, 0);
    run_free(&r);
    setenv("KVTIER_TOKEN", "s3cret", 1);
    r = ctl("--server", s.addr, "sequences", NULL);
    unsetenv("KVTIER_TOKEN");
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "no sequences"));
    run_free(&r);
    itest_server_stop(&s);
}

static void write_secret(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, 0600), 0);
}

/* Opens sequence seq with token tok (tenant: the token's). */
static void open_as(const itest_server *s, const char *tok, uint64_t seq) {
    itest_server view = *s;
    view.token = tok;
    kvtier_client *c = itest_client(&view, NULL);
    kvtier_seq_shape sh = {0};
    sh.sequence_id = seq;
    sh.layers = 2;
    sh.kv_heads = 8;
    sh.head_dim = 128;
    sh.block_bytes = BLOCK;
    kvtier_error e;
    assert_int_equal(kvtier_open_sequence(c, &sh, NULL, &e), KVTIER_OK);
    kvtier_client_free(c);
}

static void test_token_file(void **state) {
    (void)state;
    char dir[512], tokens[600], alice[600], ops[600];
    assert_int_equal(itest_tmpdir(dir, sizeof dir), 0);
    snprintf(tokens, sizeof tokens, "%s/tokens", dir);
    snprintf(alice, sizeof alice, "%s/alice.token", dir);
    snprintf(ops, sizeof ops, "%s/ops.token", dir);
    write_secret(tokens, "tok-alice-0123456789 alice tenant\n"
                         "tok-bob-0123456789ab bob tenant\n"
                         "tok-ops-0123456789ab ops operator\n");
    write_secret(alice, "tok-alice-0123456789\n");
    write_secret(ops, "tok-ops-0123456789ab\n");
    itest_server s = {0};
    const char *flags[] = {"--auth-tokens", tokens, NULL};
    assert_int_equal(itest_server_start(&s, flags), 0);
    open_as(&s, "tok-alice-0123456789", 5);
    open_as(&s, "tok-bob-0123456789ab", 6);

    run_res r = ctl("--server", s.addr, "health", NULL); /* public */
    assert_int_equal(r.rc, 0);
    run_free(&r);
    r = ctl("--server", s.addr, "sequences", NULL);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "UNAUTHENTICATED"));
    run_free(&r);
    r = ctl("--server", s.addr, "--token-file", alice, "--json", "sequences", NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "\"alice\""));
    assert_null(strstr(r.out, "\"bob\""));
    run_free(&r);
    r = ctl("--server", s.addr, "--token-file", alice, "drain", NULL);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "PERMISSION_DENIED"));
    run_free(&r);
    r = ctl("--server", s.addr, "--token-file", alice, "--tenant", "bob", "map", "6", NULL);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "PERMISSION_DENIED"));
    run_free(&r);
    r = ctl("--server", s.addr, "--token-file", ops, "--tenant", "bob", "--plain", "map", "6",
            NULL);
    assert_int_equal(r.rc, 0);
    run_free(&r);
    r = ctl("--server", s.addr, "--token-file", ops, "--json", "sequences", NULL);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "\"alice\""));
    assert_non_null(strstr(r.out, "\"bob\""));
    run_free(&r);
    r = ctl("--server", s.addr, "--token-file", ops, "drain", NULL);
    assert_int_equal(r.rc, 0);
    run_free(&r);
    /* usage: both token flags; an unreadable file */
    r = ctl("--server", s.addr, "--token", "x", "--token-file", ops, "stats", NULL);
    assert_int_equal(r.rc, 2);
    run_free(&r);
    r = ctl("--server", s.addr, "--token-file", "/nonexistent/token", "stats", NULL);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "/nonexistent/token"));
    run_free(&r);
    itest_server_stop(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_usage_errors), cmocka_unit_test(test_help),
        cmocka_unit_test(test_unreachable),  cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_commands),     cmocka_unit_test(test_auth_token),
        cmocka_unit_test(test_no_color),     cmocka_unit_test(test_token_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
