/* svc_authz.c - the tenancy policy (see svc_authz.h). Pure. */
#include <stdio.h>
#include <string.h>

#include "svc_authz.h"
#include "svc_map.h"

_Static_assert(RPC_IDENTITY_NAME_MAX >= TIER_TENANT_MAX, "identity must hold a tenant name");

int svc_authz_needs_operator(const char *method) {
    static const char *const operator_only[] = {"/kvtier.v1.Admin/Drain"};
    for (size_t i = 0; i < sizeof operator_only / sizeof operator_only[0]; i++)
        if (method && strcmp(method, operator_only[i]) == 0)
            return 1;
    return 0;
}

grpc_status_code svc_authz_call(const svc_tokens *t, const char *method, const char *tok,
                                size_t len, rpc_identity *id, char *msg, size_t msglen) {
    if (!tok || len == 0) {
        snprintf(msg, msglen,
                 "%s: no authorization token (send 'authorization: Bearer TOKEN'; kvtierctl "
                 "--token-file, $KVTIER_TOKEN)",
                 method);
        return GRPC_STATUS_UNAUTHENTICATED;
    }
    const svc_token_entry *e = svc_tokens_find(t, tok, len);
    if (!e) {
        snprintf(msg, msglen, "%s: the authorization token is not known to this kvtierd", method);
        return GRPC_STATUS_UNAUTHENTICATED;
    }
    if (e->role != SVC_ROLE_OPERATOR && svc_authz_needs_operator(method)) {
        snprintf(msg, msglen,
                 "%s: acts on every tenant and needs an operator token (tenant \"%s\")", method,
                 e->tenant);
        return GRPC_STATUS_PERMISSION_DENIED;
    }
    snprintf(id->tenant, sizeof id->tenant, "%s", e->tenant);
    id->role = (int)e->role;
    return GRPC_STATUS_OK;
}

/* 1 when id is bound to one tenant (a tenant token). */
static int bound(const rpc_identity *id) {
    return id && id->role != SVC_ROLE_OPERATOR;
}

/* A tenant token: PERMISSION_DENIED when s (field or metadata) names
 * another tenant than its own; OK otherwise. */
static grpc_status_code own_only(const rpc_identity *id, const char *s, const char *where,
                                 char *err, size_t errlen) {
    if (s && *s && strcmp(s, id->tenant) != 0) {
        snprintf(err, errlen,
                 "%s names tenant \"%.64s\", but the token belongs to tenant \"%s\": a tenant "
                 "acts on its own sequences only",
                 where, s, id->tenant);
        return GRPC_STATUS_PERMISSION_DENIED;
    }
    return GRPC_STATUS_OK;
}

grpc_status_code svc_authz_tenant(const rpc_identity *id, const char *field, const char *md,
                                  char *out, char *err, size_t errlen) {
    if (!bound(id))
        return svc_tenant(field, md, out, err, errlen) == 0 ? GRPC_STATUS_OK
                                                            : GRPC_STATUS_INVALID_ARGUMENT;
    grpc_status_code c = own_only(id, field, "the request", err, errlen);
    if (c == GRPC_STATUS_OK)
        c = own_only(id, md, "x-kvtier-tenant", err, errlen);
    if (c == GRPC_STATUS_OK)
        snprintf(out, TIER_TENANT_MAX + 1, "%s", id->tenant);
    return c;
}

grpc_status_code svc_authz_scope(const rpc_identity *id, const char *field, const char *md,
                                 char *out, char *err, size_t errlen) {
    int named = (field && *field) || (md && *md);
    if (!named && !bound(id)) {
        out[0] = 0;
        return GRPC_STATUS_OK;
    }
    return svc_authz_tenant(id, field, md, out, err, errlen);
}
