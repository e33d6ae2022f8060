/* rpc_client.c - blocking client calls over the gRPC C core.
 *
 * Each call owns a pluck completion queue; every batch is waited for by its tag,
 * and the RECV_STATUS_ON_CLIENT batch of a stream (started at open) is plucked in
 * rpc_stream_finish / rpc_stream_free, so no event is ever left in a queue.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "rpc_internal.h"

struct rpc_channel {
    grpc_channel *ch;
    size_t max_msg;
};

struct rpc_stream {
    grpc_call *call;
    grpc_completion_queue *cq;
    size_t max_msg;
    char *method;
    grpc_metadata md[3];
    size_t nmd;
    grpc_metadata_array init_md, trailing_md;
    grpc_status_code status;
    grpc_slice details;
    int tag_op, tag_status; /* their addresses are the tags */
    int md_sent, init_md_recv, half_closed, ended, finished, failed;
    int64_t op_timeout_ms; /* > 0: each batch waits at most this long, then the call is cancelled */
    char decode_err[RPC_STATUS_MSG_MAX]; /* set when a response did not decode */
};

rpc_channel *rpc_channel_new_tls(const char *target, size_t max_msg_bytes, const rpc_tls *tls,
                                 char *err, size_t errlen) {
    rpc_channel *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    grpc_init();
    grpc_channel_credentials *creds = NULL;
    if (rpcb_channel_creds(tls, &creds, err, errlen) != 0) {
        free(c);
        grpc_shutdown();
        return NULL;
    }
    c->max_msg = max_msg_bytes ? max_msg_bytes : RPC_DEFAULT_MAX_MSG;
    grpc_arg args[2];
    grpc_channel_args ca;
    rpcb_channel_args(args, &ca, c->max_msg);
    c->ch = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    return c;
}

rpc_channel *rpc_channel_new(const char *target, size_t max_msg_bytes) {
    char err[256];
    return rpc_channel_new_tls(target, max_msg_bytes, NULL, err, sizeof err);
}

void rpc_channel_free(rpc_channel *c) {
    if (!c)
        return;
    grpc_channel_destroy(c->ch);
    free(c);
    grpc_shutdown();
}

/* ---------------------------------------------------------------- call setup */

static void md_add(rpc_stream *s, const char *key, const char *val) {
    if (!val || !*val)
        return;
    s->md[s->nmd].key = grpc_slice_from_static_string(key);
    s->md[s->nmd].value = grpc_slice_from_copied_string(val);
    s->nmd++;
}

static rpc_stream *stream_new(rpc_channel *ch, const char *method, const rpc_opts *o) {
    rpc_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->max_msg = ch->max_msg;
    s->method = strdup(method ? method : "");
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_metadata_array_init(&s->init_md);
    grpc_metadata_array_init(&s->trailing_md);
    s->details = grpc_empty_slice();
    if (o) {
        md_add(s, RPC_MD_TENANT, o->tenant);
        md_add(s, RPC_MD_SEQUENCE, o->sequence);
        md_add(s, RPC_MD_AUTH, o->auth);
    }
    grpc_slice m = grpc_slice_from_copied_string(s->method);
    s->call = grpc_channel_create_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq, m, NULL,
                                       rpcb_deadline(o ? o->timeout_ms : 0), NULL);
    grpc_slice_unref(m);
    return s;
}

static void stream_release(rpc_stream *s) {
    if (s->call)
        grpc_call_unref(s->call);
    grpc_completion_queue_shutdown(s->cq);
    grpc_completion_queue_destroy(s->cq);
    for (size_t i = 0; i < s->nmd; i++) {
        grpc_slice_unref(s->md[i].key);
        grpc_slice_unref(s->md[i].value);
    }
    grpc_metadata_array_destroy(&s->init_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    grpc_slice_unref(s->details);
    free(s->method);
    free(s);
}

/* Waits for the call's status, within the per-message timeout when one is
 * set: a proxy whose upstream died may never send it (nginx, a killed shard);
 * then the call is cancelled DEADLINE_EXCEEDED, which completes the status. */
static void wait_status(rpc_stream *s) {
    gpr_timespec until =
        s->op_timeout_ms > 0 ? rpcb_deadline(s->op_timeout_ms) : gpr_inf_future(GPR_CLOCK_REALTIME);
    grpc_event ev = grpc_completion_queue_pluck(s->cq, &s->tag_status, until, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        grpc_call_cancel_with_status(s->call, GRPC_STATUS_DEADLINE_EXCEEDED,
                                     "no status within the per-message timeout", NULL);
        grpc_completion_queue_pluck(s->cq, &s->tag_status, gpr_inf_future(GPR_CLOCK_REALTIME),
                                    NULL);
    }
    s->finished = 1;
}

/* Runs one batch and plucks its tag. Returns 0 on success, -1 otherwise. */
static int batch(rpc_stream *s, grpc_op *ops, size_t n) {
    if (grpc_call_start_batch(s->call, ops, n, &s->tag_op, NULL) != GRPC_CALL_OK) {
        s->failed = 1;
        return -1;
    }
    gpr_timespec until =
        s->op_timeout_ms > 0 ? rpcb_deadline(s->op_timeout_ms) : gpr_inf_future(GPR_CLOCK_REALTIME);
    grpc_event ev = grpc_completion_queue_pluck(s->cq, &s->tag_op, until, NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        /* the peer is silent: end the call; the batch then completes, failed */
        grpc_call_cancel_with_status(s->call, GRPC_STATUS_DEADLINE_EXCEEDED,
                                     "no answer within the per-message timeout", NULL);
        ev = grpc_completion_queue_pluck(s->cq, &s->tag_op, gpr_inf_future(GPR_CLOCK_REALTIME),
                                         NULL);
        ev.success = 0;
    }
    if (!ev.success)
        s->failed = 1;
    return ev.success ? 0 : -1;
}

void rpc_stream_set_op_timeout(rpc_stream *s, int64_t ms) {
    if (s)
        s->op_timeout_ms = ms;
}

static size_t op_send_md(rpc_stream *s, grpc_op *op) {
    if (s->md_sent)
        return 0;
    memset(op, 0, sizeof *op);
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op->data.send_initial_metadata.count = s->nmd;
    op->data.send_initial_metadata.metadata = s->nmd ? s->md : NULL;
    s->md_sent = 1;
    return 1;
}

static size_t op_recv_md(rpc_stream *s, grpc_op *op) {
    if (s->init_md_recv)
        return 0;
    memset(op, 0, sizeof *op);
    op->op = GRPC_OP_RECV_INITIAL_METADATA;
    op->data.recv_initial_metadata.recv_initial_metadata = &s->init_md;
    s->init_md_recv = 1;
    return 1;
}

static void op_recv_status(rpc_stream *s, grpc_op *op) {
    memset(op, 0, sizeof *op);
    op->op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op->data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    op->data.recv_status_on_client.status = &s->status;
    op->data.recv_status_on_client.status_details = &s->details;
}

/* Copies the received status (or the local decode error) into st. */
static grpc_status_code status_out(rpc_stream *s, rpc_status *st) {
    if (s->decode_err[0]) {
        rpcb_status_set(st, GRPC_STATUS_INTERNAL, "%s", s->decode_err);
        return GRPC_STATUS_INTERNAL;
    }
    if (st) {
        st->code = s->status;
        size_t n = GRPC_SLICE_LENGTH(s->details);
        if (n >= sizeof st->message)
            n = sizeof st->message - 1;
        memcpy(st->message, GRPC_SLICE_START_PTR(s->details), n);
        st->message[n] = 0;
    }
    return s->status;
}

/* ---------------------------------------------------------------- unary */

static grpc_status_code unary_bb(rpc_channel *ch, const char *method, const rpc_opts *o,
                                 grpc_byte_buffer *req, grpc_byte_buffer **resp, rpc_status *st) {
    *resp = NULL;
    rpc_stream *s = stream_new(ch, method, o);
    if (!s) {
        rpcb_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s: out of memory", method);
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    grpc_op ops[6];
    size_t n = op_send_md(s, &ops[0]);
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = req;
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    n += op_recv_md(s, &ops[n]);
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = resp;
    op_recv_status(s, &ops[n++]);
    grpc_status_code code;
    if (grpc_call_start_batch(s->call, ops, n, &s->tag_op, NULL) != GRPC_CALL_OK) {
        rpcb_status_set(st, GRPC_STATUS_INTERNAL, "%s: cannot start call", method);
        code = GRPC_STATUS_INTERNAL;
    } else {
        /* Succeeds even when the RPC failed: the status says how it went. */
        grpc_completion_queue_pluck(s->cq, &s->tag_op, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        code = status_out(s, st);
    }
    if (code != GRPC_STATUS_OK && *resp) {
        grpc_byte_buffer_destroy(*resp);
        *resp = NULL;
    }
    if (code == GRPC_STATUS_OK && !*resp) {
        rpcb_status_set(st, GRPC_STATUS_INTERNAL, "%s: server sent OK without a response message",
                        method);
        code = GRPC_STATUS_INTERNAL;
    }
    stream_release(s);
    return code;
}

grpc_status_code rpc_unary(rpc_channel *ch, const char *method, const rpc_opts *opts,
                           const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                           ProtobufCMessage **resp, rpc_status *st) {
    *resp = NULL;
    size_t size = 0;
    grpc_byte_buffer *bb = rpcb_pack(req, ch->max_msg, &size);
    if (!bb) {
        rpcb_status_set(st, GRPC_STATUS_RESOURCE_EXHAUSTED,
                        "%s: request of %zu bytes exceeds the max message size of %zu bytes",
                        method, size, ch->max_msg);
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    grpc_byte_buffer *rb = NULL;
    grpc_status_code code = unary_bb(ch, method, opts, bb, &rb, st);
    grpc_byte_buffer_destroy(bb);
    if (code != GRPC_STATUS_OK)
        return code;
    char why[200];
    *resp = rpcb_unpack(rb, resp_desc, &size, why, sizeof why);
    grpc_byte_buffer_destroy(rb);
    if (!*resp) {
        rpcb_status_set(st, GRPC_STATUS_INTERNAL, "%s: malformed response: %zu bytes: %s", method,
                        size, why);
        return GRPC_STATUS_INTERNAL;
    }
    return GRPC_STATUS_OK;
}

grpc_status_code rpc_unary_raw(rpc_channel *ch, const char *method, const rpc_opts *opts,
                               const void *bytes, size_t len, void **resp_bytes, size_t *resp_len,
                               rpc_status *st) {
    grpc_byte_buffer *bb = rpcb_raw(bytes, len);
    grpc_byte_buffer *rb = NULL;
    grpc_status_code code = unary_bb(ch, method, opts, bb, &rb, st);
    grpc_byte_buffer_destroy(bb);
    if (resp_bytes)
        *resp_bytes = NULL;
    if (resp_len)
        *resp_len = 0;
    if (rb) {
        if (resp_bytes && resp_len)
            *resp_bytes = rpcb_copy(rb, resp_len);
        grpc_byte_buffer_destroy(rb);
    }
    return code;
}

/* ---------------------------------------------------------------- streams */

rpc_stream *rpc_stream_open(rpc_channel *ch, const char *method, const rpc_opts *opts,
                            rpc_status *st) {
    rpc_stream *s = stream_new(ch, method, opts);
    if (!s || !s->call) {
        rpcb_status_set(st, GRPC_STATUS_INTERNAL, "%s: cannot create call", method);
        if (s)
            stream_release(s);
        return NULL;
    }
    grpc_op op;
    op_recv_status(s, &op);
    if (grpc_call_start_batch(s->call, &op, 1, &s->tag_status, NULL) != GRPC_CALL_OK) {
        rpcb_status_set(st, GRPC_STATUS_INTERNAL, "%s: cannot start call", method);
        stream_release(s);
        return NULL;
    }
    rpcb_status_set(st, GRPC_STATUS_OK, NULL);
    return s;
}

int rpc_stream_start(rpc_stream *s) {
    if (s->md_sent)
        return 0;
    if (s->failed || s->ended)
        return -1;
    grpc_op op;
    op_send_md(s, &op);
    return batch(s, &op, 1);
}

static int write_bb(rpc_stream *s, grpc_byte_buffer *bb) {
    if (s->failed || s->half_closed || s->ended)
        return -1;
    grpc_op ops[2];
    size_t n = op_send_md(s, &ops[0]);
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = bb;
    return batch(s, ops, n);
}

int rpc_stream_write(rpc_stream *s, const ProtobufCMessage *msg) {
    size_t size = 0;
    grpc_byte_buffer *bb = rpcb_pack(msg, s->max_msg, &size);
    if (!bb) {
        snprintf(s->decode_err, sizeof s->decode_err,
                 "%s: request of %zu bytes exceeds the max message size of %zu bytes", s->method,
                 size, s->max_msg);
        rpc_stream_cancel(s);
        return -1;
    }
    int r = write_bb(s, bb);
    grpc_byte_buffer_destroy(bb);
    return r;
}

int rpc_stream_write_raw(rpc_stream *s, const void *bytes, size_t len) {
    grpc_byte_buffer *bb = rpcb_raw(bytes, len);
    int r = write_bb(s, bb);
    grpc_byte_buffer_destroy(bb);
    return r;
}

int rpc_stream_close_send(rpc_stream *s) {
    if (s->half_closed)
        return 0;
    if (s->failed)
        return -1;
    grpc_op ops[2];
    size_t n = op_send_md(s, &ops[0]);
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    s->half_closed = 1;
    return batch(s, ops, n);
}

/* Receives one message buffer. Returns 1 (bb set), 0 end, -1 failure. */
static int read_bb(rpc_stream *s, grpc_byte_buffer **bb) {
    *bb = NULL;
    if (s->ended)
        return s->status == GRPC_STATUS_OK ? 0 : -1;
    if (s->failed)
        return -1;
    grpc_op ops[3];
    size_t n = op_send_md(s, &ops[0]);
    n += op_recv_md(s, &ops[n]);
    memset(&ops[n], 0, sizeof ops[n]);
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = bb;
    if (batch(s, ops, n) != 0) {
        if (*bb)
            grpc_byte_buffer_destroy(*bb);
        *bb = NULL;
        return -1;
    }
    if (!*bb) {
        /* End of the response stream: the status follows at once. Take it now so
         * that a stream ended by an error reads as -1, not as a clean end. */
        s->ended = 1;
        if (!s->finished) {
            wait_status(s);
        }
        return s->status == GRPC_STATUS_OK ? 0 : -1;
    }
    return 1;
}

int rpc_stream_read(rpc_stream *s, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out) {
    *out = NULL;
    grpc_byte_buffer *bb;
    int r = read_bb(s, &bb);
    if (r != 1)
        return r;
    size_t size = 0;
    char why[200];
    *out = rpcb_unpack(bb, desc, &size, why, sizeof why);
    grpc_byte_buffer_destroy(bb);
    if (!*out) {
        snprintf(s->decode_err, sizeof s->decode_err, "%s: malformed response: %zu bytes: %s",
                 s->method, size, why);
        rpc_stream_cancel(s);
        return -1;
    }
    return 1;
}

grpc_status_code rpc_stream_finish(rpc_stream *s, rpc_status *st) {
    if (!s->finished) {
        if (!s->failed)
            rpc_stream_close_send(s);
        /* Discard unread responses so the server can complete. */
        grpc_byte_buffer *bb;
        while (!s->failed && !s->ended && read_bb(s, &bb) == 1)
            grpc_byte_buffer_destroy(bb);
        if (!s->finished) {
            wait_status(s);
        }
    }
    return status_out(s, st);
}

grpc_status_code rpc_stream_close_and_recv(rpc_stream *s,
                                           const ProtobufCMessageDescriptor *resp_desc,
                                           ProtobufCMessage **resp, rpc_status *st) {
    *resp = NULL;
    if (!s->failed)
        rpc_stream_close_send(s);
    ProtobufCMessage *m = NULL;
    int r = s->failed ? -1 : rpc_stream_read(s, resp_desc, &m);
    grpc_status_code code = rpc_stream_finish(s, st);
    if (code == GRPC_STATUS_OK && r != 1) {
        rpcb_status_set(st, GRPC_STATUS_INTERNAL, "%s: server sent OK without a response message",
                        s->method);
        code = GRPC_STATUS_INTERNAL;
    }
    if (code == GRPC_STATUS_OK)
        *resp = m;
    else if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    return code;
}

void rpc_stream_cancel(rpc_stream *s) {
    if (s->call)
        grpc_call_cancel(s->call, NULL);
    s->failed = 1;
}

void rpc_stream_free(rpc_stream *s) {
    if (!s)
        return;
    if (!s->finished) {
        rpc_stream_cancel(s);
        grpc_completion_queue_pluck(s->cq, &s->tag_status, gpr_inf_future(GPR_CLOCK_REALTIME),
                                    NULL);
    }
    stream_release(s);
}
