/* kvtier_internal.h — shared internals of libkvtier (not installed). */
#ifndef KVTIER_CLIENT_INTERNAL_H
#define KVTIER_CLIENT_INTERNAL_H

#include "kvtier.h"
#include "kvtier.pb-c.h"
#include "rpc.h"

struct kvtier_client {
    rpc_channel *ch;
    char *address;      /* owned */
    char *tenant;       /* owned, "" when none */
    char *auth;         /* owned "Bearer <token>" or NULL */
    int64_t timeout_ms; /* unary deadline, 0 = none */
    int64_t stream_timeout_ms;
};

/* kvc_opts: call options for c (sequence: decimal id buffer or NULL; stream:
 * 1 for the stream deadline). seqbuf must outlive the call. */
rpc_opts kvc_opts(const kvtier_client *c, uint64_t seq, char seqbuf[24], int stream);

/* kvc_err: fills err from an rpc_status and returns its code. */
kvtier_code kvc_err_from(kvtier_error *err, const rpc_status *st);

/* kvc_errf: fills err with code and a printf message; returns code. */
kvtier_code kvc_errf(kvtier_error *err, kvtier_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* kvc_ok: clears err (code OK, empty message); returns KVTIER_OK. */
kvtier_code kvc_ok(kvtier_error *err);

/* kvc_unary: rpc_unary with c's options; fills err. */
kvtier_code kvc_unary(kvtier_client *c, const char *method, uint64_t seq,
                      const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                      ProtobufCMessage **resp, kvtier_error *err);

/* kvc_tenant: the tenant string for request fields (never NULL). */
static inline char *kvc_tenant(const kvtier_client *c) {
    return c->tenant;
}

/* kvc_copy: bounded string copy (src may be NULL). */
void kvc_copy(char *dst, size_t cap, const char *src);

#define KVC_TIER "/kvtier.v1.Tier/"
#define KVC_ADMIN "/kvtier.v1.Admin/"
#define KVC_INFERENCE "/kvtier.v1.Inference/"

#endif
