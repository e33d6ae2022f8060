/* kvtier_conn.c — libkvtier: client handle, errors, names, crc32c. */
#include <ctype.h>
#include <inttypes.h>
#include <isa-l/crc.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kvtier_internal.h"

/* ---------------------------------------------------------------- names */

const char *kvtier_code_name(int code) {
    return rpc_status_name((grpc_status_code)code); /* same numbers, one table */
}

const char *kvtier_tier_name(int tier) {
    static const char *names[] = {"ABSENT", "HOT", "HOST", "SSD", "DROPPED"};
    if (tier < 0 || tier >= KVTIER_NTIERS)
        return "INVALID";
    return names[tier];
}

int kvtier_tier_parse(const char *s) {
    if (!s)
        return -1;
    if (!strcasecmp(s, "hot"))
        return KVTIER_TIER_HOT;
    if (!strcasecmp(s, "host"))
        return KVTIER_TIER_HOST;
    if (!strcasecmp(s, "ssd"))
        return KVTIER_TIER_SSD;
    if (!strcasecmp(s, "drop") || !strcasecmp(s, "dropped"))
        return KVTIER_TIER_DROPPED;
    return -1;
}

const char *kvtier_decision_name(int kind) {
    static const char *names[] = {"UNSPECIFIED", "KEEP_HOT", "DEMOTE_HOST",
                                  "DEMOTE_SSD",  "DROP",     "PREFETCH"};
    if (kind < 0 || kind >= KVTIER_NDECISIONS)
        return "INVALID";
    return names[kind];
}

/* ISA-L's crc32_iscsi works on the raw register (no inversion in or out):
 * standard crc32c = ~crc32_iscsi(buf, len, ~crc). */
uint32_t kvtier_crc32c(uint32_t crc, const void *data, size_t len) {
    const unsigned char *p = data;
    uint32_t reg = ~crc;
    while (len > 0) {
        int n = len > (size_t)INT_MAX ? INT_MAX : (int)len;
        reg = crc32_iscsi((unsigned char *)p, n, reg);
        p += n;
        len -= (size_t)n;
    }
    return ~reg;
}

/* ---------------------------------------------------------------- errors */

void kvc_copy(char *dst, size_t cap, const char *src) {
    if (cap == 0)
        return;
    if (!src)
        src = "";
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

kvtier_code kvc_ok(kvtier_error *err) {
    if (err) {
        err->code = KVTIER_OK;
        err->message[0] = 0;
    }
    return KVTIER_OK;
}

kvtier_code kvc_errf(kvtier_error *err, kvtier_code code, const char *fmt, ...) {
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

kvtier_code kvc_err_from(kvtier_error *err, const rpc_status *st) {
    kvtier_code code = (kvtier_code)st->code;
    if (err) {
        err->code = code;
        if (code != KVTIER_OK && st->message[0] == 0)
            snprintf(err->message, sizeof err->message, "%s", kvtier_code_name(code));
        else
            kvc_copy(err->message, sizeof err->message, st->message);
    }
    return code;
}

/* ---------------------------------------------------------------- client */

static char *dupstr(const char *s) {
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

kvtier_client *kvtier_connect(const kvtier_connect_opts *opts, kvtier_error *err) {
    kvtier_connect_opts o = {0};
    if (opts)
        o = *opts;
    const char *addr = o.address;
    if (!addr || !*addr)
        addr = getenv("KVTIER_SERVER");
    if (!addr || !*addr)
        addr = KVTIER_DEFAULT_ADDRESS;
    for (const char *p = addr; *p; p++)
        if (isspace((unsigned char)*p)) {
            kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: server address '%s' contains spaces",
                     addr);
            return NULL;
        }
    if (o.tenant && strlen(o.tenant) > 64) {
        kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: tenant name longer than 64 bytes");
        return NULL;
    }
    kvtier_client *c = calloc(1, sizeof *c);
    if (!c)
        goto oom;
    c->address = dupstr(addr);
    c->tenant = dupstr(o.tenant ? o.tenant : "");
    if (o.token && *o.token) {
        size_t n = strlen(o.token) + 8;
        c->auth = malloc(n);
        if (c->auth)
            snprintf(c->auth, n, "Bearer %s", o.token);
    }
    if (!c->address || !c->tenant || (o.token && *o.token && !c->auth))
        goto oom;
    c->timeout_ms = o.timeout_ms == 0 ? 10000 : (o.timeout_ms < 0 ? 0 : o.timeout_ms);
    c->stream_timeout_ms = o.stream_timeout_ms > 0 ? o.stream_timeout_ms : 0;
    rpc_tls tls = {o.tls_ca ? o.tls_ca : getenv("KVTIER_TLS_CA"),
                   o.tls_cert ? o.tls_cert : getenv("KVTIER_TLS_CERT"),
                   o.tls_key ? o.tls_key : getenv("KVTIER_TLS_KEY"), 0};
    char terr[300];
    c->ch = rpc_channel_new_tls(c->address, o.max_msg_bytes, &tls, terr, sizeof terr);
    if (!c->ch) {
        kvtier_client_free(c);
        kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: %s", terr);
        return NULL;
    }
    kvc_ok(err);
    return c;
oom:
    kvtier_client_free(c);
    kvc_errf(err, KVTIER_RESOURCE_EXHAUSTED, "libkvtier: out of memory");
    return NULL;
}

void kvtier_client_free(kvtier_client *c) {
    if (!c)
        return;
    if (c->ch)
        rpc_channel_free(c->ch);
    free(c->address);
    free(c->tenant);
    free(c->auth);
    free(c);
}

const char *kvtier_client_address(const kvtier_client *c) {
    return c ? c->address : "";
}

void kvtier_free(void *p) {
    free(p);
}

rpc_opts kvc_opts(const kvtier_client *c, uint64_t seq, char seqbuf[24], int stream) {
    rpc_opts o = {0};
    o.tenant = c->tenant[0] ? c->tenant : NULL;
    o.auth = c->auth;
    o.timeout_ms = stream ? c->stream_timeout_ms : c->timeout_ms;
    if (seq && seqbuf) {
        snprintf(seqbuf, 24, "%" PRIu64, seq);
        o.sequence = seqbuf;
    }
    return o;
}

kvtier_code kvc_unary(kvtier_client *c, const char *method, uint64_t seq,
                      const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                      ProtobufCMessage **resp, kvtier_error *err) {
    char seqbuf[24];
    rpc_opts o = kvc_opts(c, seq, seqbuf, 0);
    rpc_status st;
    memset(&st, 0, sizeof st);
    *resp = NULL;
    rpc_unary(c->ch, method, &o, req, resp_desc, resp, &st);
    return kvc_err_from(err, &st);
}
