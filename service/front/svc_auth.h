/* svc_auth.h - kvtierd's authentication state: the token table read from
 * --auth-tokens FILE (or the one legacy --auth-token), swapped whole on
 * reload (SIGHUP), and the rpc_authorizer that resolves each call's token to
 * an identity (the decisions are svc_authz.c's). Thread safe: calls resolve
 * under a read lock, a reload swaps the table under the write lock. Tokens
 * never appear in a message. */
#ifndef KVTIER_SVC_AUTH_H
#define KVTIER_SVC_AUTH_H

#include <stddef.h>

#include <grpc/status.h>

#include "rpc.h"

#define SVC_TOKENS_FILE_MAX (1u << 20) /* bytes a tokens file may have */

typedef struct svc_auth svc_auth;

/* svc_auth_open_file: reads and parses the tokens file at path. Returns the
 * state (free with svc_auth_free), or NULL with a message in err naming the
 * file and, for a malformed line, its number. A file other users may read
 * or write loads, with a warning in warn[warnlen] ("" when none). */
svc_auth *svc_auth_open_file(const char *path, char *warn, size_t warnlen, char *err,
                             size_t errlen);

/* svc_auth_open_token: one operator token for every tenant (--auth-token,
 * KVTIERD_AUTH_TOKEN). NULL when out of memory or token is empty. */
svc_auth *svc_auth_open_token(const char *token);

/* svc_auth_reload: reads the file again; a good file replaces the table
 * (calls in flight finish with the identity they had), a bad one keeps the
 * old table. Returns 0 with "N tokens (T tenant, O operator)" in msg, -1 with
 * why in msg; warn as svc_auth_open_file. -1 for a legacy token state. */
int svc_auth_reload(svc_auth *a, char *warn, size_t warnlen, char *msg, size_t msglen);

/* svc_auth_describe: "N tokens (T tenant, O operator)" of the current table. */
void svc_auth_describe(svc_auth *a, char *out, size_t len);

/* svc_auth_authorize: the rpc_authorizer (user = the svc_auth). */
grpc_status_code svc_auth_authorize(const char *method, const char *token, size_t len,
                                    rpc_identity *id, char *msg, size_t msglen, void *user);

/* svc_auth_free: frees a (tokens wiped). NULL is fine. */
void svc_auth_free(svc_auth *a);

#endif
