/* rpc.h - the one thin RPC layer of kvtier over the gRPC C core.
 *
 * Everything in kvtier that speaks gRPC goes through this header; nobody else calls
 * grpc_call_start_batch. Messages are protobuf-c messages (ProtobufCMessage*), packed
 * into / unpacked from grpc_byte_buffers here. Status codes are grpc_status_code
 * (GRPC_STATUS_OK, GRPC_STATUS_NOT_FOUND, ...) from <grpc/status.h>.
 *
 * ---------------------------------------------------------------- server model
 * Synchronous per call. One dispatcher thread drives a completion queue; each
 * arrived call runs its handler on a pool thread, and the handler is plain
 * sequential C using blocking helpers:
 *
 *   static void put_blocks(rpc_call *c, const ProtobufCMessage *req, void *user) {
 *     Kvtier__V1__Block *b; int r;
 *     while ((r = rpc_call_read(c, &kvtier__v1__block__descriptor,
 *                               (ProtobufCMessage **)&b)) == 1) {
 *       ... ; protobuf_c_message_free_unpacked(&b->base, NULL);
 *     }
 *     if (r < 0) return;               // call broken or already answered
 *     rpc_call_reply(c, &resp.base);    // message + OK status
 *   }
 *
 * Kinds: for RPC_UNARY and RPC_SERVER_STREAM the framework reads and unpacks the
 * single request before the handler runs and passes it as `req` (borrowed, freed
 * after the handler returns); a missing or undecodable request is answered
 * INVALID_ARGUMENT without calling the handler. For RPC_CLIENT_STREAM and RPC_BIDI
 * `req` is NULL and the handler reads with rpc_call_read.
 * A handler ends the call with rpc_call_reply (unary / client stream) or
 * rpc_call_finish (any kind, any code); one that returns without doing so is
 * answered INTERNAL. Handlers may block; the pool grows when all threads are busy
 * (long-lived streams hold a thread each), up to RPC_MAX_THREADS.
 *
 * Bounds (rpc_server_set_limits): streams (calls of the three streaming kinds,
 * each holding a pool thread while it lives) are admitted up to a cap in total
 * and per client connection; beyond it a new stream is answered
 * RESOURCE_EXHAUSTED at once by the dispatcher, without a thread. A handler
 * whose read or write waits longer than the idle timeout (a client that sends
 * nothing, or reads nothing) has its call cancelled with status CANCELLED and
 * a message saying so; the handler's read/write fails. Methods marked
 * reserved (rpc_server_set_reserved: health checks) run on RPC_RESERVED_THREADS
 * threads of their own, their request read before the call is handed over, so
 * they answer while every pool thread is taken.
 *
 * The server also answers by itself: UNIMPLEMENTED for unknown methods,
 * UNAUTHENTICATED when an auth token is set and `authorization` metadata is neither
 * "Bearer <token>" nor "<token>" (methods made public with rpc_server_set_public
 * excepted), whatever an installed authorizer (rpc_server_set_authorizer)
 * answers for a call it refuses, RESOURCE_EXHAUSTED for messages beyond
 * max_msg_bytes (gRPC transport), UNAVAILABLE for calls during shutdown.
 *
 * The standard health service (grpc.health.v1.Health) is one module on top of
 * this layer: rpc_health.h.
 *
 * ---------------------------------------------------------------- client model
 * Blocking calls on an rpc_channel (thread safe; many calls may share one). A
 * stream (rpc_stream) is used by one thread at a time. Every call returns an
 * rpc_status with the gRPC code and a message; failures to decode a response give
 * GRPC_STATUS_INTERNAL with a message naming the message type.
 *
 * Metadata keys: RPC_MD_TENANT, RPC_MD_SEQUENCE, RPC_MD_AUTH.
 */
#ifndef KVTIER_RPC_H
#define KVTIER_RPC_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>

#define RPC_MD_TENANT "x-kvtier-tenant"
#define RPC_MD_SEQUENCE "x-kvtier-sequence"
#define RPC_MD_AUTH "authorization"

#define RPC_DEFAULT_MAX_MSG (16u << 20) /* 16 MiB when max_msg_bytes is 0 */
#define RPC_MAX_THREADS 256             /* pool cap of one server */
#define RPC_MAX_SHUTDOWN_HOOKS 4        /* rpc_server_on_shutdown per server */
#define RPC_RESERVED_THREADS 2          /* threads of the reserved methods (health) */
#define RPC_STATUS_MSG_MAX 512

typedef enum {
    RPC_UNARY = 0,         /* one request, one response */
    RPC_CLIENT_STREAM = 1, /* many requests, one response */
    RPC_SERVER_STREAM = 2, /* one request, many responses */
    RPC_BIDI = 3           /* many both ways */
} rpc_kind;

/* Outcome of a call: gRPC code plus a message a person can act on. */
typedef struct {
    grpc_status_code code;
    char message[RPC_STATUS_MSG_MAX];
} rpc_status;

/* rpc_status_name: "OK", "NOT_FOUND", ... for a code (static string). */
const char *rpc_status_name(grpc_status_code code);

/* rpc_method_kind: streaming kind of a method of kvtier.proto or health.proto by
 * full name ("/kvtier.v1.Tier/PutBlocks", "/grpc.health.v1.Health/Watch"), from
 * the table generated out of the .proto files. Returns the kind, or -1 when the
 * method is in neither. */
int rpc_method_kind(const char *full_name);

/* ================================================================ server */

typedef struct rpc_server rpc_server;
typedef struct rpc_call rpc_call;

/* Handler of one method. `req` is the unpacked request for UNARY and SERVER_STREAM
 * methods (borrowed: valid until the handler returns), NULL otherwise. `user` is
 * the pointer given at registration. */
typedef void (*rpc_handler)(rpc_call *call, const ProtobufCMessage *req, void *user);

/* rpc_server_new: creates a server bound to `addr` ("127.0.0.1:0" picks a free
 * port; see rpc_server_port) with `nthreads` pre-started handler threads (>=1) and
 * a max message size of `max_msg_bytes` each way (0 = RPC_DEFAULT_MAX_MSG).
 * Initialises gRPC. Returns NULL on failure with a reason in err (errlen bytes). */
rpc_server *rpc_server_new(const char *addr, int nthreads, size_t max_msg_bytes, char *err,
                           size_t errlen);

/* TLS settings (PEM file paths, read when the server or channel is made).
 * Server: cert_file + key_file turn TLS on; ca_file verifies client
 * certificates (mutual TLS), required when require_client_cert. Client:
 * ca_file verifies the server (its certificate must name the target host:
 * SAN IP or DNS); cert_file + key_file present a client certificate. */
typedef struct {
    const char *ca_file, *cert_file, *key_file;
    int require_client_cert;
} rpc_tls;

/* rpc_server_new_tls: rpc_server_new with TLS (tls NULL or without cert_file
 * = plaintext). Unreadable or mismatched files fail with the file named. */
rpc_server *rpc_server_new_tls(const char *addr, int nthreads, size_t max_msg_bytes,
                               const rpc_tls *tls, char *err, size_t errlen);

/* rpc_tls_from_env: fills *tls from PREFIX_TLS_CA, PREFIX_TLS_CERT and
 * PREFIX_TLS_KEY (borrowed getenv strings). Returns 1 when any is set. */
int rpc_tls_from_env(rpc_tls *tls, const char *prefix);

/* rpc_server_port: the bound TCP port. */
int rpc_server_port(const rpc_server *srv);

/* rpc_server_set_auth_token: require `authorization` metadata equal to
 * "Bearer <token>" (or the bare token) on every call; NULL/"" disables. Before start.
 * The token is copied. Returns 0, -1 when already started. */
int rpc_server_set_auth_token(rpc_server *srv, const char *token);

/* Identity of an authenticated caller, as an authorizer resolved it. The RPC
 * layer only carries it to the handler: what a tenant or a role means is the
 * authorizer's business (kvtierd: service/front/svc_authz.h). */
#define RPC_IDENTITY_NAME_MAX 64
typedef struct {
    char tenant[RPC_IDENTITY_NAME_MAX + 1]; /* "" = not bound to one tenant */
    int role;                               /* the authorizer's role value */
} rpc_identity;

/* Authorizer of a call: `method` the full method name, token[len] the
 * `authorization` value without a "Bearer " prefix (not NUL-terminated; NULL
 * when the metadata is absent). Returns GRPC_STATUS_OK with *id filled, or
 * the code the call is answered with (UNAUTHENTICATED, PERMISSION_DENIED)
 * and a message in msg[msglen] (never the token). Runs on handler threads,
 * concurrently: thread safe. Public methods (rpc_server_set_public) skip it. */
typedef grpc_status_code (*rpc_authorizer)(const char *method, const char *token, size_t len,
                                           rpc_identity *id, char *msg, size_t msglen, void *user);

/* rpc_server_set_authorizer: every non-public call goes through fn before its
 * handler runs (instead of the single token of rpc_server_set_auth_token,
 * which must not be set too). `user` must outlive the server. Before start.
 * Returns 0, -1 when already started or a token is set. */
int rpc_server_set_authorizer(rpc_server *srv, rpc_authorizer fn, void *user);

/* rpc_server_register: routes `full_name` ("/pkg.Service/Method") to `fn`.
 * req_desc: request message type (required); kind: streaming kind. Before start.
 * Returns 0, or -1 (duplicate name, already started, bad arguments). */
int rpc_server_register(rpc_server *srv, const char *full_name, rpc_kind kind,
                        const ProtobufCMessageDescriptor *req_desc, rpc_handler fn, void *user);

/* rpc_server_register_service: registers `method` (short name, e.g. "PutBlocks")
 * of a protoc-c service descriptor (kvtier__v1__tier__descriptor); the kind comes
 * from the generated table. Returns 0, -1 when unknown method or as above. */
int rpc_server_register_service(rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                                const char *method, rpc_handler fn, void *user);

/* Observer of finished calls: full method name, the status code the call ended
 * with (CANCELLED when the client cancelled or the deadline passed), and its
 * duration in nanoseconds. Runs on the handler thread: thread-safe and quick. */
typedef void (*rpc_observer)(const char *method, grpc_status_code code, uint64_t duration_ns,
                             void *user);

/* rpc_server_set_observer: installs fn (NULL removes). Before start. Returns 0/-1. */
int rpc_server_set_observer(rpc_server *srv, rpc_observer fn, void *user);

/* rpc_server_set_public: lets the registered method `full_name` be called
 * without the auth token (health checks: kubelets and load balancers send no
 * metadata). Before start. Returns 0, -1 when the method is not registered or
 * the server already started. */
int rpc_server_set_public(rpc_server *srv, const char *full_name);

/* Bounds on what clients may hold open. 0 in a field = no bound. */
typedef struct {
    int max_streams;          /* streaming calls in flight, all clients together */
    int max_streams_per_peer; /* ... from one peer (grpc_call_get_peer, e.g.
                                 "ipv4:10.0.0.7:51234": one client connection) */
    int idle_ms;              /* a handler's read or write of a call waiting longer is
                                 ended: the call is cancelled with CANCELLED */
} rpc_limits;

/* rpc_server_set_limits: installs *lim (copied). Before start. Streams over a
 * cap are answered RESOURCE_EXHAUSTED at arrival with a message naming the
 * cap; unary calls are never counted. Returns 0, -1 when already started or
 * a field is negative. */
int rpc_server_set_limits(rpc_server *srv, const rpc_limits *lim);

/* rpc_server_set_reserved: serves the registered UNARY method `full_name` on
 * the server's reserved threads (RPC_RESERVED_THREADS, started with the
 * server), never behind other calls: for health checks that must answer
 * while the pool is saturated. Its request is read by gRPC before the call is
 * handed over (a client that never sends it holds no thread). The handler
 * must be quick and must not wait on other calls. Before start. Returns 0, -1
 * when not registered, not unary, or already started. */
int rpc_server_set_reserved(rpc_server *srv, const char *full_name);

/* Shutdown hook: runs on the thread that calls rpc_server_shutdown, once, at its
 * start (before the server stops accepting calls and waits for in-flight ones).
 * For modules that hold long-lived streams open (a health Watch): they end them
 * here so that those do not hold the whole grace period. Must not block. */
typedef void (*rpc_shutdown_hook)(void *user);

/* rpc_server_on_shutdown: adds fn (hooks run in the order added; `user` must
 * live until rpc_server_shutdown returned). Before start. Returns 0, -1 when
 * already started or RPC_MAX_SHUTDOWN_HOOKS are set. */
int rpc_server_on_shutdown(rpc_server *srv, rpc_shutdown_hook fn, void *user);

/* rpc_server_start: starts serving. Returns 0, -1 on failure. */
int rpc_server_start(rpc_server *srv);

/* rpc_server_shutdown: graceful stop. Runs the shutdown hooks, stops accepting
 * calls, lets in-flight calls finish for up to `grace_ms`, then cancels the rest
 * (their reads/writes fail), waits for all handlers to return and releases gRPC
 * resources. Blocking; idempotent; safe from any thread except a handler. */
void rpc_server_shutdown(rpc_server *srv, int grace_ms);

/* rpc_server_inflight: number of calls whose handler is running now. */
int rpc_server_inflight(rpc_server *srv);

/* rpc_server_free: shuts down (grace 0) if still running, frees everything. */
void rpc_server_free(rpc_server *srv);

/* ---------------------------------------------------------------- server call */

/* rpc_call_read: blocks for the next request message of a streaming call and
 * unpacks it as `desc` into *out (caller frees with
 * protobuf_c_message_free_unpacked(*out, NULL)).
 * Returns 1 message, 0 the client half-closed (no more messages), -1 the call
 * failed (cancelled, deadline, shutdown) or the message was malformed; in the
 * malformed case the call has been answered INVALID_ARGUMENT already. */
int rpc_call_read(rpc_call *call, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out);

/* rpc_call_write: sends one response message (and initial metadata first time).
 * Blocks until gRPC took it (flow control). Returns 0, -1 when the call failed or
 * the message exceeds the max size (then answered RESOURCE_EXHAUSTED). */
int rpc_call_write(rpc_call *call, const ProtobufCMessage *msg);

/* rpc_call_reply: sends `msg` and status OK in one batch. Returns 0 or -1. */
int rpc_call_reply(rpc_call *call, const ProtobufCMessage *msg);

/* rpc_call_finish: ends the call with `code` and a printf-style message (NULL
 * fmt = no message). Ignored (returns 0) when the call is already finished.
 * Returns 0, -1 when the call had failed. */
int rpc_call_finish(rpc_call *call, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* rpc_call_finished: 1 once the handler sent a status. */
int rpc_call_finished(const rpc_call *call);

/* rpc_call_cancelled: 1 when the client cancelled, the deadline passed or the
 * server cancelled the call (shutdown); never blocks. */
int rpc_call_cancelled(rpc_call *call);

/* rpc_call_method: full method name of the call (borrowed). */
const char *rpc_call_method(const rpc_call *call);

/* rpc_call_tenant / rpc_call_sequence: the x-kvtier-tenant / x-kvtier-sequence
 * metadata values, or NULL when absent (borrowed, live as long as the call). */
const char *rpc_call_tenant(const rpc_call *call);
const char *rpc_call_sequence(const rpc_call *call);

/* rpc_call_identity: the identity the authorizer resolved for this call
 * (borrowed, lives as long as the call), NULL when no authorizer ran (none
 * installed, or a public method). */
const rpc_identity *rpc_call_identity(const rpc_call *call);

/* rpc_call_metadata: copies the value of metadata `key` (lowercase) into buf
 * (NUL-terminated, truncated to len-1). Returns the value length, -1 when absent. */
int rpc_call_metadata(const rpc_call *call, const char *key, char *buf, size_t len);

/* rpc_secret_equal: 1 when a[an] equals b[bn]; the time taken depends on an
 * only, never on where the bytes differ (tokens and keys are compared with it:
 * pass the presented secret as a). */
int rpc_secret_equal(const char *a, size_t an, const char *b, size_t bn);

/* rpc_tls_read_pem: a whole PEM file (at most 1 MiB) as malloc'd text, or NULL
 * with a message naming `what` and the path (unreadable, too large, no
 * -----BEGIN line). */
char *rpc_tls_read_pem(const char *path, const char *what, char *err, size_t errlen);

/* rpc_call_deadline_ms: milliseconds left before the call's deadline, INT64_MAX
 * when it has none. */
int64_t rpc_call_deadline_ms(const rpc_call *call);

/* rpc_call_max_msg: the server's max message size in bytes. */
size_t rpc_call_max_msg(const rpc_call *call);

/* ================================================================ client */

typedef struct rpc_channel rpc_channel;
typedef struct rpc_stream rpc_stream;

/* Per-call options; every field optional (NULL / 0). */
typedef struct {
    const char *tenant;   /* x-kvtier-tenant */
    const char *sequence; /* x-kvtier-sequence (decimal id) */
    const char *auth;     /* authorization value, e.g. "Bearer s3cret" */
    int64_t timeout_ms;   /* deadline from now; 0 = none */
} rpc_opts;

/* rpc_channel_new: insecure channel to `target` ("127.0.0.1:7070", "dns:host:port")
 * with max message size max_msg_bytes each way (0 = RPC_DEFAULT_MAX_MSG).
 * Connects lazily. Initialises gRPC. Returns NULL only on allocation failure. */
rpc_channel *rpc_channel_new(const char *target, size_t max_msg_bytes);

/* rpc_channel_new_tls: a channel with TLS (tls NULL or without ca_file and
 * cert_file = insecure, as rpc_channel_new). Returns NULL with a message in
 * err when a file cannot be read or is not PEM. */
rpc_channel *rpc_channel_new_tls(const char *target, size_t max_msg_bytes, const rpc_tls *tls,
                                 char *err, size_t errlen);

/* rpc_channel_free: destroys the channel (calls on it must be over). */
void rpc_channel_free(rpc_channel *ch);

/* rpc_unary: one request, one response. On OK, *resp is the unpacked response
 * (caller frees with protobuf_c_message_free_unpacked); otherwise *resp is NULL.
 * Returns the status code (also in *st when st != NULL). */
grpc_status_code rpc_unary(rpc_channel *ch, const char *method, const rpc_opts *opts,
                           const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                           ProtobufCMessage **resp, rpc_status *st);

/* rpc_unary_raw: as rpc_unary but sends `len` raw bytes as the request (tests,
 * fuzzing); the response is not decoded: *resp_bytes and *resp_len get a malloc'd
 * copy (caller frees) when OK and non-NULL. */
grpc_status_code rpc_unary_raw(rpc_channel *ch, const char *method, const rpc_opts *opts,
                               const void *bytes, size_t len, void **resp_bytes, size_t *resp_len,
                               rpc_status *st);

/* rpc_stream_open: starts a call of any streaming kind and sends metadata.
 * Returns the stream (free with rpc_stream_free), NULL when the call could not be
 * created (st says why). */
rpc_stream *rpc_stream_open(rpc_channel *ch, const char *method, const rpc_opts *opts,
                            rpc_status *st);

/* rpc_stream_start: sends the call's metadata now, so that the server sees
 * the call before the first message (e.g. to hold a stream open). Optional:
 * the first write or read does it otherwise. Returns 0, -1 when the call has
 * ended. */
int rpc_stream_start(rpc_stream *s);

/* rpc_stream_set_op_timeout: from now on each write or read of s waits at
 * most ms milliseconds (0 = no limit, the default); past it the call is
 * cancelled with DEADLINE_EXCEEDED and the operation fails. For long-lived
 * streams, where a whole-call deadline does not fit. */
void rpc_stream_set_op_timeout(rpc_stream *s, int64_t ms);

/* rpc_stream_write: sends one message. Returns 0, -1 when the call has ended
 * (read the reason with rpc_stream_finish). */
int rpc_stream_write(rpc_stream *s, const ProtobufCMessage *msg);

/* rpc_stream_write_raw: sends raw bytes as one message. Returns 0 or -1. */
int rpc_stream_write_raw(rpc_stream *s, const void *bytes, size_t len);

/* rpc_stream_close_send: half-closes (no more writes). Returns 0 or -1. */
int rpc_stream_close_send(rpc_stream *s);

/* rpc_stream_read: blocks for the next response, unpacked as `desc` into *out
 * (caller frees). Returns 1 message, 0 clean end of stream (status OK), -1
 * the call ended with an error status, failed, or sent a response that cannot
 * be decoded; rpc_stream_finish then gives the status (INTERNAL for a decode
 * failure). */
int rpc_stream_read(rpc_stream *s, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out);

/* rpc_stream_finish: half-closes if needed, waits for the final status and
 * returns its code (also in *st). Unread responses are discarded. */
grpc_status_code rpc_stream_finish(rpc_stream *s, rpc_status *st);

/* rpc_stream_cancel: cancels the call (the server sees it as cancelled). */
void rpc_stream_cancel(rpc_stream *s);

/* rpc_stream_free: cancels if not finished, releases everything. */
void rpc_stream_free(rpc_stream *s);

/* rpc_stream_close_and_recv: helper for client-streaming methods: after the caller
 * wrote its messages, half-closes, reads the single response (unpacked into *resp
 * on OK) and the status. Returns the code (also in *st). */
grpc_status_code rpc_stream_close_and_recv(rpc_stream *s,
                                           const ProtobufCMessageDescriptor *resp_desc,
                                           ProtobufCMessage **resp, rpc_status *st);

#endif /* KVTIER_RPC_H */
