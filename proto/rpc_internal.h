/* rpc_internal.h - shared internals of the RPC layer (not for other components). */
#ifndef KVTIER_RPC_INTERNAL_H
#define KVTIER_RPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <pthread.h>

#include "rpc.h"
#include "rpc_admit.h"

/* ThreadSanitizer cannot see the synchronization inside the gRPC libraries
 * (not built with it): a tag handed to gRPC on one thread and returned by a
 * completion queue on another looks like a race. The RPC layer marks those
 * hand-offs: RPC_TSAN_RELEASE(tag) before a call that carries the tag,
 * RPC_TSAN_ACQUIRE(tag) when a queue returns it. No-ops without TSan. */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define RPC_TSAN_RELEASE(p) __tsan_release((void *)(p))
#define RPC_TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#else
#define RPC_TSAN_RELEASE(p) ((void)(p))
#define RPC_TSAN_ACQUIRE(p) ((void)(p))
#endif

/* rpcb_pack: packs msg into a new byte buffer (caller destroys).
 * Returns NULL when the packed size exceeds max (sets *size anyway). */
grpc_byte_buffer *rpcb_pack(const ProtobufCMessage *msg, size_t max, size_t *size);

/* rpcb_raw: byte buffer holding a copy of len bytes (caller destroys). */
grpc_byte_buffer *rpcb_raw(const void *bytes, size_t len);

/* rpcb_unpack: unpacks a received buffer as desc. Returns NULL when malformed
 * (also when a string field holds a NUL byte: protobuf-c would cut the string
 * there, so "a\0b" would silently read as "a"); *size gets the byte length,
 * why[whylen] (may be NULL) what was wrong. */
ProtobufCMessage *rpcb_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                              size_t *size, char *why, size_t whylen);

/* rpcb_strings_check: 0 when no string field of the wire message data[len]
 * (of type desc, nested messages included) holds a NUL byte; -1 with the
 * field's full name in why[whylen] otherwise, or when data is malformed. */
int rpcb_strings_check(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                       char *why, size_t whylen);

/* rpcb_copy: malloc'd copy of the bytes of bb (caller frees); NULL on OOM. */
void *rpcb_copy(grpc_byte_buffer *bb, size_t *len);

/* rpcb_status_set: fills st (may be NULL) with code and message. */
void rpcb_status_set(rpc_status *st, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* rpcb_slice_str: NUL-terminated malloc'd copy of a slice. */
char *rpcb_slice_str(grpc_slice s);

/* rpcb_deadline: gRPC deadline timeout_ms from now (infinite when <= 0). */
gpr_timespec rpcb_deadline(int64_t timeout_ms);

/* rpcb_server_creds / rpcb_channel_creds: gRPC credentials for tls (insecure
 * when tls asks for none). Return 0, or -1 with a message. rpc_tls.c. */
int rpcb_server_creds(const rpc_tls *tls, grpc_server_credentials **out, char *err, size_t errlen);
int rpcb_channel_creds(const rpc_tls *tls, grpc_channel_credentials **out, char *err,
                       size_t errlen);

/* rpcb_channel_args: fills args (2 entries) with max message sizes. */
void rpcb_channel_args(grpc_arg args[2], grpc_channel_args *ca, size_t max);

#endif

/* ================================================================ server internals */

typedef enum {
    RPC_TAG_NEW,
    RPC_TAG_OP,
    RPC_TAG_CLOSE,
    RPC_TAG_REJECT, /* the batch answering a refused stream (no handler) */
    RPC_TAG_SHUTDOWN
} rpc_tag_type;

typedef struct {
    rpc_tag_type type;
    void *obj; /* rpc_call* (NEW/OP/CLOSE/REJECT) or rpc_server* (SHUTDOWN) */
} rpc_tag;

typedef struct {
    char *name; /* "/pkg.Service/Method" */
    rpc_kind kind;
    const ProtobufCMessageDescriptor *req_desc;
    rpc_handler fn;
    void *user;
    void *reg;     /* grpc_server_register_method handle */
    int public_ok; /* callable without the auth token (rpc_server_set_public) */
    int reserved;  /* served on the reserved threads, request read by gRPC */
} rpc_method;

struct rpc_call {
    rpc_server *srv;
    rpc_method *m;   /* NULL: unknown method (generic request) */
    grpc_call *call; /* owned: one ref, dropped in rpcs_call_free */
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details; /* generic requests only */
    grpc_byte_buffer *payload; /* reserved methods: the request, read by gRPC */
    char *peer;                /* grpc_call_get_peer copy (streams), or NULL */
    int admitted;              /* counted in srv->admit: given back when served */
    uint64_t t0_ns;            /* arrival (monotonic) */
    int generic;
    char *method_name;       /* owned copy */
    char *tenant, *sequence; /* owned copies of metadata or NULL */
    rpc_identity id;         /* filled by the authorizer */
    int has_id;              /* 1 when the authorizer resolved id */
    rpc_tag new_tag, op_tag, close_tag, reject_tag;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int op_done, op_ok;  /* main batch (one at a time, issued by the handler thread) */
    int close_done;      /* RECV_CLOSE_ON_SERVER completed */
    int close_cancelled; /* its `cancelled` out-parameter */
    int md_sent, finished, failed;
    int idle_ended;        /* cancelled by the idle timeout */
    grpc_status_code code; /* status sent by finish/reply */
    int status_failed;     /* the status batch did not go out */
    rpc_call *next;        /* work queue link */
};

struct rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    int port;
    size_t max_msg;
    char *auth;                /* required token or NULL */
    rpc_authorizer authorizer; /* or NULL (rpc_server_set_authorizer) */
    void *authorizer_user;
    rpc_method *methods;
    size_t nmethods, cap;
    pthread_t dispatcher;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rpc_call *qhead, *qtail; /* arrived calls waiting for a thread */
    int qlen;
    int nthreads_min, threads, idle, busy;
    rpc_call *rqhead, *rqtail; /* arrived calls of reserved methods */
    int rthreads, rbusy;       /* reserved threads running, serving */
    int nreserved;             /* reserved methods registered */
    rpc_limits limits;
    rpc_admit admit; /* streams in flight (under mu) */
    int started, shutting, stopping, shutdown_notified, destroyed;
    rpc_tag shutdown_tag;
    rpc_observer observer;
    void *observer_user;
    struct {
        rpc_shutdown_hook fn;
        void *user;
    } hooks[RPC_MAX_SHUTDOWN_HOOKS]; /* run at the start of rpc_server_shutdown */
    int nhooks;
};

/* rpcs_call_serve: runs one arrived call to completion on the calling thread
 * (metadata, auth, request decode, handler, default status) and frees it. */
void rpcs_call_serve(rpc_call *c);

/* rpcs_call_release: gives the call's admission back (when it was counted).
 * Takes srv->mu. */
void rpcs_call_release(rpc_call *c);

/* rpcs_now_ns: monotonic clock in ns. */
uint64_t rpcs_now_ns(void);

/* rpcs_call_free: releases a call context (grpc ref, metadata, copies). */
void rpcs_call_free(rpc_call *c);
