/* svc_tokens.h - kvtierd's token table: the `--auth-tokens FILE` format
 * parsed and looked up. Pure: the text comes in as a string, no I/O (the
 * file, its mode and SIGHUP are svc_auth.c's).
 *
 * Format, one entry a line:   TOKEN TENANT ROLE
 *   TOKEN   16..256 printable ASCII characters, no spaces (the bearer secret)
 *   TENANT  a tenant name ([A-Za-z0-9._-]{1,64}, tier_key_tenant_name_check)
 *   ROLE    `tenant` (acts on TENANT only) or `operator` (any tenant, Drain)
 * Fields are separated by spaces or tabs; a `#` at the start of a field starts
 * a comment (to the end of the line); blank lines are skipped. A token may appear once. */
#ifndef KVTIER_SVC_TOKENS_H
#define KVTIER_SVC_TOKENS_H

#include <stddef.h>

#include "tier.h"

#define SVC_TOKEN_MIN 16  /* bytes: shorter tokens are refused (guessable) */
#define SVC_TOKEN_MAX 256 /* bytes */

typedef enum {
    SVC_ROLE_TENANT = 1,  /* its own tenant's sequences and blocks */
    SVC_ROLE_OPERATOR = 2 /* any tenant, calls across tenants (Drain, listing all) */
} svc_role;

typedef struct svc_token_entry {
    char *token;                      /* owned */
    size_t len;                       /* strlen(token) */
    char tenant[TIER_TENANT_MAX + 1]; /* "" for the legacy all-tenants operator token */
    svc_role role;
} svc_token_entry;

typedef struct svc_tokens {
    svc_token_entry *e; /* [n] in file order */
    size_t n;
} svc_tokens;

/* svc_tokens_parse: parses the text of a tokens file (NUL-terminated).
 * Returns a new table (free with svc_tokens_free; it may hold no entry), or
 * NULL with a message in err naming the line ("line 3: role \"admin\" is not
 * tenant or operator"); messages never contain a token. */
svc_tokens *svc_tokens_parse(const char *text, char *err, size_t errlen);

/* svc_tokens_single: a table of one operator token bound to no tenant (the
 * legacy --auth-token). NULL when out of memory or token is empty. */
svc_tokens *svc_tokens_single(const char *token);

/* svc_tokens_find: the entry whose token is tok[len] (not NUL-terminated),
 * NULL when none. Every entry is compared, each in time that depends on len
 * only: how long it takes says nothing about the stored tokens. Borrowed. */
const svc_token_entry *svc_tokens_find(const svc_tokens *t, const char *tok, size_t len);

/* svc_tokens_free: frees t and its tokens (wiped first). NULL is fine. */
void svc_tokens_free(svc_tokens *t);

#endif
