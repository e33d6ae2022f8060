/* rpc_call.c - one server call on a handler thread: blocking read / write /
 * finish over batches whose completions the dispatcher routes back here. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/support/time.h>

#include "rpc_internal.h"

/* Ends a call whose batch waited the server's idle timeout: cancelled with
 * CANCELLED and a message; the batch then completes, failed. */
static void idle_end(rpc_call *c, int idle_ms) {
    char msg[RPC_STATUS_MSG_MAX];
    snprintf(msg, sizeof msg,
             "%s: idle for %d ms (no message from the client, or none read by it): the "
             "server's stream idle timeout ended the call",
             c->method_name ? c->method_name : "?", idle_ms);
    grpc_call_cancel_with_status(c->call, GRPC_STATUS_CANCELLED, msg, NULL);
    c->idle_ended = 1;
}

/* Starts one batch on the call and waits for its completion, at most the
 * server's idle timeout (then the call is ended: idle_end).
 * Returns 0 when the batch succeeded, -1 otherwise (call failed/cancelled). */
static int call_batch(rpc_call *c, const grpc_op *ops, size_t n) {
    pthread_mutex_lock(&c->mu);
    c->op_done = 0;
    pthread_mutex_unlock(&c->mu);
    RPC_TSAN_RELEASE(&c->op_tag);
    if (grpc_call_start_batch(c->call, ops, n, &c->op_tag, NULL) != GRPC_CALL_OK) {
        c->failed = 1;
        return -1;
    }
    int idle_ms = c->srv->limits.idle_ms;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    long ns = until.tv_nsec + (long)(idle_ms % 1000) * 1000000L;
    until.tv_sec += idle_ms / 1000 + ns / 1000000000L;
    until.tv_nsec = ns % 1000000000L;
    pthread_mutex_lock(&c->mu);
    while (!c->op_done) {
        if (idle_ms <= 0 || c->idle_ended) {
            pthread_cond_wait(&c->cv, &c->mu);
        } else if (pthread_cond_timedwait(&c->cv, &c->mu, &until) == ETIMEDOUT && !c->op_done) {
            pthread_mutex_unlock(&c->mu);
            idle_end(c, idle_ms);
            pthread_mutex_lock(&c->mu);
        }
    }
    int ok = c->op_ok;
    pthread_mutex_unlock(&c->mu);
    if (!ok)
        c->failed = 1;
    return ok ? 0 : -1;
}

/* Appends SEND_INITIAL_METADATA to ops when not sent yet. Returns ops used. */
static size_t add_initial_md(rpc_call *c, grpc_op *op) {
    if (c->md_sent)
        return 0;
    memset(op, 0, sizeof *op);
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op->data.send_initial_metadata.count = 0;
    c->md_sent = 1;
    return 1;
}

static int finish_v(rpc_call *c, grpc_status_code code, const char *fmt, va_list ap) {
    if (c->finished)
        return 0;
    c->finished = 1;
    char msg[RPC_STATUS_MSG_MAX];
    msg[0] = 0;
    if (fmt)
        vsnprintf(msg, sizeof msg, fmt, ap);
    grpc_slice details = grpc_slice_from_copied_string(msg);
    grpc_op ops[2];
    size_t n = add_initial_md(c, &ops[0]);
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n].data.send_status_from_server.status_details = msg[0] ? &details : NULL;
    ops[n].data.send_status_from_server.trailing_metadata_count = 0;
    n++;
    c->code = code;
    int r = call_batch(c, ops, n);
    if (r != 0)
        c->status_failed = 1;
    grpc_slice_unref(details);
    return r;
}

int rpc_call_finish(rpc_call *call, grpc_status_code code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = finish_v(call, code, fmt, ap);
    va_end(ap);
    return r;
}

/* finish without varargs at the call site of internal code */
static int finish(rpc_call *c, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int finish(rpc_call *c, grpc_status_code code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int r = finish_v(c, code, fmt, ap);
    va_end(ap);
    return r;
}

int rpc_call_read(rpc_call *c, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out) {
    *out = NULL;
    if (c->finished || c->failed)
        return -1;
    grpc_byte_buffer *bb = NULL;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &bb;
    if (call_batch(c, &op, 1) != 0) {
        if (bb)
            grpc_byte_buffer_destroy(bb);
        return -1;
    }
    if (!bb)
        return 0; /* client half-closed */
    size_t size = 0;
    char why[200];
    ProtobufCMessage *m = rpcb_unpack(bb, desc, &size, why, sizeof why);
    grpc_byte_buffer_destroy(bb);
    if (!m) {
        finish(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: malformed request: %zu bytes: %s",
               c->method_name, size, why);
        return -1;
    }
    *out = m;
    return 1;
}

/* Sends msg, with the OK status in the same batch when `last`. */
static int send_msg(rpc_call *c, const ProtobufCMessage *msg, int last) {
    if (c->finished || c->failed)
        return -1;
    size_t size = 0;
    grpc_byte_buffer *bb = rpcb_pack(msg, c->srv->max_msg, &size);
    if (!bb) {
        finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
               "%s: response of %zu bytes exceeds the max message size of %zu bytes",
               c->method_name, size, c->srv->max_msg);
        return -1;
    }
    grpc_op ops[3];
    size_t n = add_initial_md(c, &ops[0]);
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = bb;
    n++;
    if (last) {
        memset(&ops[n], 0, sizeof ops[n]);
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = GRPC_STATUS_OK;
        n++;
        c->finished = 1;
        c->code = GRPC_STATUS_OK;
    }
    int r = call_batch(c, ops, n);
    if (r != 0 && last)
        c->status_failed = 1;
    grpc_byte_buffer_destroy(bb);
    return r;
}

int rpc_call_write(rpc_call *c, const ProtobufCMessage *msg) {
    return send_msg(c, msg, 0);
}

int rpc_call_reply(rpc_call *c, const ProtobufCMessage *msg) {
    return send_msg(c, msg, 1);
}

int rpc_call_finished(const rpc_call *c) {
    return c->finished;
}

int rpc_call_cancelled(rpc_call *c) {
    pthread_mutex_lock(&c->mu);
    int r = c->close_done && c->close_cancelled;
    pthread_mutex_unlock(&c->mu);
    return r;
}

const char *rpc_call_method(const rpc_call *c) {
    return c->method_name;
}
const char *rpc_call_tenant(const rpc_call *c) {
    return c->tenant;
}
const char *rpc_call_sequence(const rpc_call *c) {
    return c->sequence;
}
size_t rpc_call_max_msg(const rpc_call *c) {
    return c->srv->max_msg;
}

/* Finds metadata `key`; returns its value slice or NULL. */
static const grpc_slice *md_find(const rpc_call *c, const char *key) {
    size_t klen = strlen(key);
    for (size_t i = 0; i < c->md.count; i++) {
        const grpc_slice *k = &c->md.metadata[i].key;
        if (GRPC_SLICE_LENGTH(*k) == klen && memcmp(GRPC_SLICE_START_PTR(*k), key, klen) == 0)
            return &c->md.metadata[i].value;
    }
    return NULL;
}

int rpc_call_metadata(const rpc_call *c, const char *key, char *buf, size_t len) {
    const grpc_slice *v = md_find(c, key);
    if (!v)
        return -1;
    size_t n = GRPC_SLICE_LENGTH(*v);
    if (buf && len) {
        size_t k = n < len - 1 ? n : len - 1;
        memcpy(buf, GRPC_SLICE_START_PTR(*v), k);
        buf[k] = 0;
    }
    return (int)n;
}

int64_t rpc_call_deadline_ms(const rpc_call *c) {
    gpr_timespec d = gpr_convert_clock_type(c->deadline, GPR_CLOCK_REALTIME);
    if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_REALTIME)) == 0)
        return INT64_MAX;
    gpr_timespec left = gpr_time_sub(d, gpr_now(GPR_CLOCK_REALTIME));
    return gpr_time_to_millis(left);
}

const rpc_identity *rpc_call_identity(const rpc_call *c) {
    return c->has_id ? &c->id : NULL;
}

/* The call's authorization value without a "Bearer " prefix in *p, *n;
 * 0, or -1 when the metadata is absent. */
static int auth_value(const rpc_call *c, const char **p, size_t *n) {
    const grpc_slice *v = md_find(c, RPC_MD_AUTH);
    if (!v)
        return -1;
    *p = (const char *)GRPC_SLICE_START_PTR(*v);
    *n = GRPC_SLICE_LENGTH(*v);
    if (*n >= 7 && strncasecmp(*p, "Bearer ", 7) == 0) {
        *p += 7;
        *n -= 7;
    }
    return 0;
}

int rpc_secret_equal(const char *a, size_t an, const char *b, size_t bn) {
    unsigned char d = an != bn;
    for (size_t i = 0; i < an; i++)
        d |= (unsigned char)(a[i] ^ (bn ? b[i % bn] : 0));
    return d == 0;
}

/* Authenticates the call: OK (identity filled when an authorizer resolved
 * one), or the code to answer with and a message in msg. */
static grpc_status_code auth_check(rpc_call *c, char *msg, size_t msglen) {
    const char *p = NULL;
    size_t n = 0;
    int present = auth_value(c, &p, &n) == 0;
    if (c->srv->authorizer) {
        grpc_status_code code = c->srv->authorizer(c->method_name, present ? p : NULL, n, &c->id,
                                                   msg, msglen, c->srv->authorizer_user);
        c->has_id = code == GRPC_STATUS_OK;
        return code;
    }
    const char *tok = c->srv->auth;
    if (!tok || (present && rpc_secret_equal(p, n, tok, strlen(tok))))
        return GRPC_STATUS_OK;
    snprintf(msg, msglen, "%s: missing or wrong authorization token", c->method_name);
    return GRPC_STATUS_UNAUTHENTICATED;
}

static char *md_dup(const rpc_call *c, const char *key) {
    const grpc_slice *v = md_find(c, key);
    return v ? rpcb_slice_str(*v) : NULL;
}

/* The request of a reserved method, read by gRPC with the call: 1 with
 * *req, 0 when missing, -1 malformed (answered INVALID_ARGUMENT). */
static int read_payload(rpc_call *c, ProtobufCMessage **req) {
    *req = NULL;
    if (!c->payload)
        return 0;
    size_t size = 0;
    char why[200];
    *req = rpcb_unpack(c->payload, c->m->req_desc, &size, why, sizeof why);
    if (!*req) {
        finish(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: malformed request: %zu bytes: %s",
               c->method_name, size, why);
        return -1;
    }
    return 1;
}

void rpcs_call_serve(rpc_call *c) {
    uint64_t t0 = c->t0_ns ? c->t0_ns : rpcs_now_ns();
    /* Cancel detection: RECV_CLOSE_ON_SERVER in its own batch, right away. */
    grpc_op close_op;
    memset(&close_op, 0, sizeof close_op);
    close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close_op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    RPC_TSAN_RELEASE(&c->close_tag);
    if (grpc_call_start_batch(c->call, &close_op, 1, &c->close_tag, NULL) != GRPC_CALL_OK)
        c->close_done = 1;

    c->method_name = c->generic ? rpcb_slice_str(c->details.method) : strdup(c->m->name);
    if (!c->method_name)
        c->method_name = strdup("?");
    c->tenant = md_dup(c, RPC_MD_TENANT);
    c->sequence = md_dup(c, RPC_MD_SEQUENCE);

    char why[RPC_STATUS_MSG_MAX] = "";
    grpc_status_code auth = GRPC_STATUS_OK;
    if (c->generic) {
        finish(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method %s", c->method_name);
    } else if (!c->m->public_ok && (auth = auth_check(c, why, sizeof why)) != GRPC_STATUS_OK) {
        finish(c, auth, "%s", why[0] ? why : "not authorized");
    } else {
        ProtobufCMessage *req = NULL;
        int ok = 1;
        if (c->m->kind == RPC_UNARY || c->m->kind == RPC_SERVER_STREAM) {
            int r = c->m->reserved ? read_payload(c, &req) : rpc_call_read(c, c->m->req_desc, &req);
            if (r == 0)
                finish(c, GRPC_STATUS_INVALID_ARGUMENT, "%s: request message missing",
                       c->method_name);
            ok = (r == 1);
        }
        if (ok)
            c->m->fn(c, req, c->m->user);
        if (req)
            protobuf_c_message_free_unpacked(req, NULL);
        if (!c->finished)
            finish(c, GRPC_STATUS_INTERNAL, "%s: handler returned without a status",
                   c->method_name);
    }
    /* The close op completes once the status went out or the call died. */
    pthread_mutex_lock(&c->mu);
    while (!c->close_done)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
    rpcs_call_release(c);
    if (c->srv->observer) {
        grpc_status_code code =
            c->status_failed || c->idle_ended || !c->finished ? GRPC_STATUS_CANCELLED : c->code;
        c->srv->observer(c->method_name, code, rpcs_now_ns() - t0, c->srv->observer_user);
    }
    rpcs_call_free(c);
}
