/* svc_tokens.c - the token table: parsing the tokens file, constant-time
 * lookup. Pure (see svc_tokens.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc.h"
#include "svc_tokens.h"
#include "tier_key.h"

/* Appends an entry (token copied). Returns 0, -1 when out of memory. */
static int tokens_add(svc_tokens *t, const char *tok, size_t len, const char *tenant,
                      svc_role role) {
    svc_token_entry *e = realloc(t->e, (t->n + 1) * sizeof *e);
    if (!e)
        return -1;
    t->e = e;
    svc_token_entry *x = &e[t->n];
    memset(x, 0, sizeof *x);
    if (!(x->token = malloc(len + 1)))
        return -1;
    memcpy(x->token, tok, len);
    x->token[len] = 0;
    x->len = len;
    snprintf(x->tenant, sizeof x->tenant, "%s", tenant);
    x->role = role;
    t->n++;
    return 0;
}

const svc_token_entry *svc_tokens_find(const svc_tokens *t, const char *tok, size_t len) {
    const svc_token_entry *hit = NULL;
    if (!t || !tok)
        return NULL;
    for (size_t i = 0; i < t->n; i++) /* no early exit */
        if (rpc_secret_equal(tok, len, t->e[i].token, t->e[i].len))
            hit = &t->e[i];
    return hit;
}

void svc_tokens_free(svc_tokens *t) {
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++) {
        volatile char *p = t->e[i].token;
        for (size_t k = 0; k < t->e[i].len; k++)
            p[k] = 0;
        free(t->e[i].token);
    }
    free(t->e);
    free(t);
}

svc_tokens *svc_tokens_single(const char *token) {
    svc_tokens *t = calloc(1, sizeof *t);
    if (!t || !token || !*token || tokens_add(t, token, strlen(token), "", SVC_ROLE_OPERATOR)) {
        svc_tokens_free(t);
        return NULL;
    }
    return t;
}

/* Splits line[len] (comment already cut) into at most 4 fields. Returns the
 * number of fields (4 = too many). */
static int split_fields(const char *line, size_t len, const char *f[4], size_t fl[4]) {
    int n = 0;
    size_t i = 0;
    while (i < len) {
        while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
            i++;
        if (i == len)
            break;
        if (n == 4)
            return 4;
        f[n] = line + i;
        while (i < len && line[i] != ' ' && line[i] != '\t' && line[i] != '\r')
            i++;
        fl[n] = (size_t)(line + i - f[n]);
        n++;
    }
    return n;
}

/* Checks and adds the entry of one line. Returns 0, -1 with err. */
static int parse_line(svc_tokens *t, int lineno, const char *f[3], const size_t fl[3], char *err,
                      size_t errlen) {
    if (fl[0] < SVC_TOKEN_MIN || fl[0] > SVC_TOKEN_MAX) {
        snprintf(err, errlen, "line %d: the token has %zu characters, it needs %d to %d", lineno,
                 fl[0], SVC_TOKEN_MIN, SVC_TOKEN_MAX);
        return -1;
    }
    for (size_t i = 0; i < fl[0]; i++)
        if ((unsigned char)f[0][i] < 0x21 || (unsigned char)f[0][i] > 0x7e) {
            snprintf(err, errlen,
                     "line %d: the token has a character that is not printable ASCII "
                     "(character %zu)",
                     lineno, i + 1);
            return -1;
        }
    char tenant[TIER_TENANT_MAX + 2], why[200];
    if (fl[1] > TIER_TENANT_MAX) {
        snprintf(err, errlen, "line %d: the tenant name has %zu characters, at most %d", lineno,
                 fl[1], TIER_TENANT_MAX);
        return -1;
    }
    memcpy(tenant, f[1], fl[1]);
    tenant[fl[1]] = 0;
    if (tier_key_tenant_name_check(tenant, why, sizeof why) != 0) {
        snprintf(err, errlen, "line %d: tenant: %s", lineno, why);
        return -1;
    }
    svc_role role;
    if (fl[2] == 6 && memcmp(f[2], "tenant", 6) == 0)
        role = SVC_ROLE_TENANT;
    else if (fl[2] == 8 && memcmp(f[2], "operator", 8) == 0)
        role = SVC_ROLE_OPERATOR;
    else {
        snprintf(err, errlen, "line %d: role \"%.*s\" is not tenant or operator", lineno,
                 (int)(fl[2] > 32 ? 32 : fl[2]), f[2]);
        return -1;
    }
    for (size_t i = 0; i < t->n; i++)
        if (t->e[i].len == fl[0] && memcmp(t->e[i].token, f[0], fl[0]) == 0) {
            snprintf(err, errlen,
                     "line %d: the token is already in the table (an earlier line); every "
                     "token must be different",
                     lineno);
            return -1;
        }
    if (tokens_add(t, f[0], fl[0], tenant, role) != 0) {
        snprintf(err, errlen, "line %d: out of memory", lineno);
        return -1;
    }
    return 0;
}

svc_tokens *svc_tokens_parse(const char *text, char *err, size_t errlen) {
    svc_tokens *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int lineno = 0;
    const char *p = text;
    while (*p) {
        lineno++;
        size_t len = strcspn(p, "\n");
        const char *next = p[len] ? p + len + 1 : p + len;
        size_t use = 0; /* a `#` opening a field starts a comment (tokens may hold `#`) */
        while (use < len &&
               !(p[use] == '#' && (use == 0 || p[use - 1] == ' ' || p[use - 1] == '\t')))
            use++;
        const char *f[4];
        size_t fl[4];
        int nf = split_fields(p, use, f, fl);
        if (nf != 0 && nf != 3) {
            snprintf(err, errlen,
                     "line %d: expected TOKEN TENANT ROLE (3 fields), found %s%d field%s", lineno,
                     nf == 4 ? "more than " : "", nf == 4 ? 3 : nf, nf == 1 ? "" : "s");
            svc_tokens_free(t);
            return NULL;
        }
        if (nf == 3 && parse_line(t, lineno, f, fl, err, errlen) != 0) {
            svc_tokens_free(t);
            return NULL;
        }
        p = next;
    }
    return t;
}
