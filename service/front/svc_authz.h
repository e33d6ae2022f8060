/* svc_authz.h - kvtierd's tenancy policy: who may call what on which tenant.
 * Pure: decisions from an identity (rpc_identity, resolved from the caller's
 * token by svc_auth.c) and a request; no I/O, no locks.
 *
 * The rules:
 *   - no token table (auth off): the request names its tenant (the message
 *     field, else x-kvtier-tenant, else "default"), as before tenancy;
 *   - a call without a token, or with one not in the table: UNAUTHENTICATED;
 *   - role tenant: the call's tenant is the token's tenant; a field or
 *     x-kvtier-tenant naming another is PERMISSION_DENIED (the same or empty
 *     is fine); ListSequences and GetStats show only its own; Drain (all
 *     tenants' blocks) is PERMISSION_DENIED;
 *   - role operator: any tenant named in the request (that is how kvtierctl
 *     inspects), everything across tenants. */
#ifndef KVTIER_SVC_AUTHZ_H
#define KVTIER_SVC_AUTHZ_H

#include <stddef.h>

#include <grpc/status.h>

#include "rpc.h"
#include "svc_tokens.h"

/* svc_authz_call: authenticates a call of `method` (full name) presenting
 * tok[len] (NULL = no authorization metadata) against table t: OK with *id
 * filled (the entry's tenant and role), UNAUTHENTICATED (no token, unknown
 * token) or PERMISSION_DENIED (the method needs the operator role), each with
 * a message in msg (never the token). */
grpc_status_code svc_authz_call(const svc_tokens *t, const char *method, const char *tok,
                                size_t len, rpc_identity *id, char *msg, size_t msglen);

/* svc_authz_needs_operator: 1 when `method` acts across tenants and needs
 * the operator role (Admin/Drain), else 0. */
int svc_authz_needs_operator(const char *method);

/* svc_authz_tenant: the tenant a call acts on, into out[TIER_TENANT_MAX + 1]:
 * id NULL (auth off) or an operator: the message field, else md (the
 * x-kvtier-tenant metadata, may be NULL), else "default"; a tenant token:
 * its tenant. Returns OK, INVALID_ARGUMENT (field and md differ, bad name)
 * or PERMISSION_DENIED (a tenant token naming another tenant), with err. */
grpc_status_code svc_authz_tenant(const rpc_identity *id, const char *field, const char *md,
                                  char *out, char *err, size_t errlen);

/* svc_authz_scope: the tenant a listing (ListSequences, GetStats) covers, into
 * out[TIER_TENANT_MAX + 1]: "" = all tenants (auth off or operator, no tenant
 * named); the named one (field, else md) when it is allowed; a tenant
 * token's own tenant otherwise. Returns as svc_authz_tenant. */
grpc_status_code svc_authz_scope(const rpc_identity *id, const char *field, const char *md,
                                 char *out, char *err, size_t errlen);

#endif
