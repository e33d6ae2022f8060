/* test_svc_authz.c - the pure parts of kvtierd's tenancy: the tokens-file
 * format (svc_tokens_parse: comments, blank lines, every malformed line named
 * by number, duplicates, tokens never in messages), the constant-time lookup,
 * and the policy (svc_authz_call / _tenant / _scope: which call needs which
 * role, a tenant token pinned to its tenant, the operator free to name one). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "svc_authz.h"
#include "svc_tokens.h"

#define TA "alice-token-0123456789"
#define TB "bob#token-0123456789ab" /* a `#` inside a token is not a comment */
#define TO "operator-token-01234567"

static const char k_file[] = "# tokens\n"
                             "   \n" TA " alice tenant # alice's worker\n" TB "\tbob\ttenant\r\n"
                             "#" TA " nobody operator\n" TO " ops operator";

static svc_tokens *parse_ok(const char *text) {
    char err[256] = "";
    svc_tokens *t = svc_tokens_parse(text, err, sizeof err);
    if (!t)
        fprintf(stderr, "parse: %s\n", err);
    assert_non_null(t);
    return t;
}

/* Parsing text fails with a message holding `has` and no token. */
static void parse_bad(const char *text, const char *has) {
    char err[256] = "";
    svc_tokens *t = svc_tokens_parse(text, err, sizeof err);
    if (t || !strstr(err, has))
        fprintf(stderr, "want failure with \"%s\", got \"%s\"\n", has, err);
    assert_null(t);
    assert_non_null(strstr(err, has));
    assert_null(strstr(err, "-token-"));
}

static void test_parse(void **state) {
    (void)state;
    svc_tokens *t = parse_ok(k_file);
    assert_int_equal(t->n, 3);
    assert_string_equal(t->e[0].token, TA);
    assert_string_equal(t->e[0].tenant, "alice");
    assert_int_equal(t->e[0].role, SVC_ROLE_TENANT);
    assert_string_equal(t->e[1].token, TB);
    assert_string_equal(t->e[1].tenant, "bob");
    assert_string_equal(t->e[2].tenant, "ops");
    assert_int_equal(t->e[2].role, SVC_ROLE_OPERATOR);
    svc_tokens_free(t);
    t = parse_ok("");
    assert_int_equal(t->n, 0);
    svc_tokens_free(t);

    parse_bad(TA " alice tenant\n" TB " bob admin\n", "line 2: role \"admin\"");
    parse_bad("\n\n" TA " alice\n", "line 3: expected TOKEN TENANT ROLE (3 fields), found 2");
    parse_bad(TA " alice tenant x\n", "line 1: expected TOKEN TENANT ROLE (3 fields), found more");
    parse_bad(TA " alice tenant\n" TA " bob tenant\n", "line 2: the token is already");
    parse_bad("short alice tenant\n", "line 1: the token has 5 characters, it needs 16");
    parse_bad(TA " al*ce tenant\n", "line 1: tenant");
    char longname[100];
    memset(longname, 'a', 65);
    longname[65] = 0;
    char text[300];
    snprintf(text, sizeof text, "# x\n" TA " %s tenant\n", longname);
    parse_bad(text, "line 2: the tenant name has 65 characters");
    parse_bad(TA " alice Tenant\n", "line 1: role");
    parse_bad("alice-token-01234\x01"
              "5678 alice tenant\n",
              "line 1: the token has a character");
}

static void test_find(void **state) {
    (void)state;
    svc_tokens *t = parse_ok(k_file);
    assert_ptr_equal(svc_tokens_find(t, TB, strlen(TB)), &t->e[1]);
    assert_ptr_equal(svc_tokens_find(t, TO "xyz", strlen(TO)), &t->e[2]); /* by length */
    assert_null(svc_tokens_find(t, TA, strlen(TA) - 1));                  /* a prefix */
    assert_null(svc_tokens_find(t, TA "0", strlen(TA) + 1));              /* longer */
    assert_null(svc_tokens_find(t, "alice-token-0123456788", strlen(TA)));
    assert_null(svc_tokens_find(t, "", 0));
    assert_null(svc_tokens_find(t, NULL, 0));
    svc_tokens_free(t);
    svc_tokens *one = svc_tokens_single("legacy");
    assert_non_null(one);
    assert_int_equal(one->e[0].role, SVC_ROLE_OPERATOR);
    assert_string_equal(one->e[0].tenant, "");
    assert_non_null(svc_tokens_find(one, "legacy", 6));
    svc_tokens_free(one);
    assert_null(svc_tokens_single(""));
}

static void test_call(void **state) {
    (void)state;
    svc_tokens *t = parse_ok(k_file);
    rpc_identity id;
    char msg[300];
    const char *open = "/kvtier.v1.Tier/OpenSequence", *drain = "/kvtier.v1.Admin/Drain";
    assert_int_equal(svc_authz_call(t, open, NULL, 0, &id, msg, sizeof msg),
                     GRPC_STATUS_UNAUTHENTICATED);
    assert_non_null(strstr(msg, "no authorization token"));
    assert_int_equal(svc_authz_call(t, open, "nope-nope-nope-nope", 19, &id, msg, sizeof msg),
                     GRPC_STATUS_UNAUTHENTICATED);
    assert_null(strstr(msg, "nope"));
    assert_int_equal(svc_authz_call(t, open, TA, strlen(TA), &id, msg, sizeof msg), GRPC_STATUS_OK);
    assert_string_equal(id.tenant, "alice");
    assert_int_equal(id.role, SVC_ROLE_TENANT);
    assert_int_equal(svc_authz_call(t, drain, TA, strlen(TA), &id, msg, sizeof msg),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_non_null(strstr(msg, "operator"));
    assert_int_equal(svc_authz_call(t, drain, TO, strlen(TO), &id, msg, sizeof msg),
                     GRPC_STATUS_OK);
    assert_int_equal(id.role, SVC_ROLE_OPERATOR);
    assert_true(svc_authz_needs_operator(drain));
    assert_false(svc_authz_needs_operator("/kvtier.v1.Admin/ListSequences"));
    assert_false(svc_authz_needs_operator("/kvtier.v1.Admin/GetStats"));
    svc_tokens_free(t);
}

static void test_tenant(void **state) {
    (void)state;
    rpc_identity alice = {"alice", SVC_ROLE_TENANT}, ops = {"ops", SVC_ROLE_OPERATOR};
    char out[TIER_TENANT_MAX + 1], err[300];
    /* a tenant token: its own tenant whatever the request leaves empty */
    assert_int_equal(svc_authz_tenant(&alice, NULL, NULL, out, err, sizeof err), GRPC_STATUS_OK);
    assert_string_equal(out, "alice");
    assert_int_equal(svc_authz_tenant(&alice, "alice", "alice", out, err, sizeof err),
                     GRPC_STATUS_OK);
    assert_int_equal(svc_authz_tenant(&alice, "", "alice", out, err, sizeof err), GRPC_STATUS_OK);
    assert_int_equal(svc_authz_tenant(&alice, "bob", NULL, out, err, sizeof err),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_non_null(strstr(err, "\"bob\""));
    assert_int_equal(svc_authz_tenant(&alice, NULL, "bob", out, err, sizeof err),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_non_null(strstr(err, "x-kvtier-tenant"));
    assert_int_equal(svc_authz_tenant(&alice, "alice", "bob", out, err, sizeof err),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(svc_authz_tenant(&alice, "default", NULL, out, err, sizeof err),
                     GRPC_STATUS_PERMISSION_DENIED);
    /* the operator and auth off: the request names it */
    const rpc_identity *open_ids[] = {&ops, NULL};
    for (int i = 0; i < 2; i++) {
        const rpc_identity *id = open_ids[i];
        assert_int_equal(svc_authz_tenant(id, "bob", NULL, out, err, sizeof err), GRPC_STATUS_OK);
        assert_string_equal(out, "bob");
        assert_int_equal(svc_authz_tenant(id, NULL, "bob", out, err, sizeof err), GRPC_STATUS_OK);
        assert_string_equal(out, "bob");
        assert_int_equal(svc_authz_tenant(id, NULL, NULL, out, err, sizeof err), GRPC_STATUS_OK);
        assert_string_equal(out, "default");
        assert_int_equal(svc_authz_tenant(id, "bob", "eve", out, err, sizeof err),
                         GRPC_STATUS_INVALID_ARGUMENT);
        assert_int_equal(svc_authz_tenant(id, "b/b", NULL, out, err, sizeof err),
                         GRPC_STATUS_INVALID_ARGUMENT);
    }
    /* listings: "" = every tenant, only where the caller may see them */
    assert_int_equal(svc_authz_scope(&alice, NULL, NULL, out, err, sizeof err), GRPC_STATUS_OK);
    assert_string_equal(out, "alice");
    assert_int_equal(svc_authz_scope(&alice, "bob", NULL, out, err, sizeof err),
                     GRPC_STATUS_PERMISSION_DENIED);
    assert_int_equal(svc_authz_scope(&ops, NULL, NULL, out, err, sizeof err), GRPC_STATUS_OK);
    assert_string_equal(out, "");
    assert_int_equal(svc_authz_scope(NULL, "", "", out, err, sizeof err), GRPC_STATUS_OK);
    assert_string_equal(out, "");
    assert_int_equal(svc_authz_scope(&ops, NULL, "bob", out, err, sizeof err), GRPC_STATUS_OK);
    assert_string_equal(out, "bob");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_call),
        cmocka_unit_test(test_tenant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
