/* rpc_server.c - gRPC server: method registry, dispatcher thread over one
 * completion queue, elastic handler pool, graceful shutdown.
 *
 * Threads: one dispatcher runs grpc_completion_queue_next on the server queue and
 * routes every completion by its tag (rpc_tag): a new call goes to the work
 * queue, a batch completion wakes the handler thread waiting on that call, the
 * shutdown tag wakes rpc_server_shutdown. Handler threads (pool) run
 * rpcs_call_serve; the pool grows when more calls wait than threads idle.
 * A stream over the caps (rpc_limits, counted by rpc_admit) is answered
 * RESOURCE_EXHAUSTED by the dispatcher itself (one batch, no thread); calls of
 * reserved methods go to their own queue and threads.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "rpc_internal.h"

#define RPC_SLOTS_PER_METHOD 2
#define RPC_IDLE_EXIT_S 30

static void set_err(char *err, size_t len, const char *msg, const char *arg) {
    if (err && len)
        snprintf(err, len, "%s%s", msg, arg ? arg : "");
}

rpc_server *rpc_server_new(const char *addr, int nthreads, size_t max_msg_bytes, char *err,
                           size_t errlen) {
    return rpc_server_new_tls(addr, nthreads, max_msg_bytes, NULL, err, errlen);
}

rpc_server *rpc_server_new_tls(const char *addr, int nthreads, size_t max_msg_bytes,
                               const rpc_tls *tls, char *err, size_t errlen) {
    if (!addr || !*addr) {
        set_err(err, errlen, "rpc_server_new: empty listen address", NULL);
        return NULL;
    }
    rpc_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        set_err(err, errlen, "rpc_server_new: out of memory", NULL);
        return NULL;
    }
    grpc_init();
    grpc_server_credentials *creds = NULL;
    if (rpcb_server_creds(tls, &creds, err, errlen) != 0) {
        free(srv);
        grpc_shutdown();
        return NULL;
    }
    srv->max_msg = max_msg_bytes ? max_msg_bytes : RPC_DEFAULT_MAX_MSG;
    srv->nthreads_min =
        nthreads < 1 ? 1 : (nthreads > RPC_MAX_THREADS ? RPC_MAX_THREADS : nthreads);
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    rpc_admit_init(&srv->admit, 0, 0);
    srv->shutdown_tag.type = RPC_TAG_SHUTDOWN;
    srv->shutdown_tag.obj = srv;

    grpc_arg args[2];
    grpc_channel_args ca;
    rpcb_channel_args(args, &ca, srv->max_msg);
    srv->server = grpc_server_create(&ca, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    srv->port = grpc_server_add_http2_port(srv->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (srv->port == 0) {
        set_err(err, errlen, "cannot listen on ", addr);
        grpc_server_destroy(srv->server);
        grpc_completion_queue_shutdown(srv->cq);
        while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
        grpc_completion_queue_destroy(srv->cq);
        srv->server = NULL;
        srv->cq = NULL;
        srv->destroyed = 1;
        rpc_server_free(srv);
        grpc_shutdown();
        return NULL;
    }
    return srv;
}

int rpc_server_port(const rpc_server *srv) {
    return srv->port;
}

int rpc_server_set_auth_token(rpc_server *srv, const char *token) {
    if (srv->started || (srv->authorizer && token && *token))
        return -1;
    free(srv->auth);
    srv->auth = (token && *token) ? strdup(token) : NULL;
    return 0;
}

int rpc_server_set_authorizer(rpc_server *srv, rpc_authorizer fn, void *user) {
    if (srv->started || srv->auth)
        return -1;
    srv->authorizer = fn;
    srv->authorizer_user = user;
    return 0;
}

int rpc_server_set_observer(rpc_server *srv, rpc_observer fn, void *user) {
    if (srv->started)
        return -1;
    srv->observer = fn;
    srv->observer_user = user;
    return 0;
}

int rpc_server_set_public(rpc_server *srv, const char *full_name) {
    if (srv->started || !full_name)
        return -1;
    for (size_t i = 0; i < srv->nmethods; i++)
        if (strcmp(srv->methods[i].name, full_name) == 0) {
            srv->methods[i].public_ok = 1;
            return 0;
        }
    return -1;
}

int rpc_server_set_limits(rpc_server *srv, const rpc_limits *lim) {
    if (srv->started || !lim || lim->max_streams < 0 || lim->max_streams_per_peer < 0 ||
        lim->idle_ms < 0)
        return -1;
    srv->limits = *lim;
    rpc_admit_init(&srv->admit, lim->max_streams, lim->max_streams_per_peer);
    return 0;
}

int rpc_server_set_reserved(rpc_server *srv, const char *full_name) {
    if (srv->started || !full_name)
        return -1;
    for (size_t i = 0; i < srv->nmethods; i++)
        if (strcmp(srv->methods[i].name, full_name) == 0) {
            if (srv->methods[i].kind != RPC_UNARY)
                return -1;
            if (!srv->methods[i].reserved)
                srv->nreserved++;
            srv->methods[i].reserved = 1;
            return 0;
        }
    return -1;
}

int rpc_server_on_shutdown(rpc_server *srv, rpc_shutdown_hook fn, void *user) {
    if (srv->started || !fn || srv->nhooks == RPC_MAX_SHUTDOWN_HOOKS)
        return -1;
    srv->hooks[srv->nhooks].fn = fn;
    srv->hooks[srv->nhooks].user = user;
    srv->nhooks++;
    return 0;
}

int rpc_server_register(rpc_server *srv, const char *full_name, rpc_kind kind,
                        const ProtobufCMessageDescriptor *req_desc, rpc_handler fn, void *user) {
    if (srv->started || !full_name || full_name[0] != '/' || !req_desc || !fn || (int)kind < 0 ||
        kind > RPC_BIDI)
        return -1;
    for (size_t i = 0; i < srv->nmethods; i++)
        if (strcmp(srv->methods[i].name, full_name) == 0)
            return -1;
    if (srv->nmethods == srv->cap) {
        size_t cap = srv->cap ? srv->cap * 2 : 16;
        rpc_method *m = realloc(srv->methods, cap * sizeof *m);
        if (!m)
            return -1;
        srv->methods = m;
        srv->cap = cap;
    }
    rpc_method *m = &srv->methods[srv->nmethods];
    memset(m, 0, sizeof *m);
    m->name = strdup(full_name);
    m->kind = kind;
    m->req_desc = req_desc;
    m->fn = fn;
    m->user = user;
    if (!m->name)
        return -1;
    srv->nmethods++; /* registered with gRPC by rpc_server_start */
    return 0;
}

int rpc_server_register_service(rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                                const char *method, rpc_handler fn, void *user) {
    const ProtobufCMethodDescriptor *md =
        protobuf_c_service_descriptor_get_method_by_name(svc, method);
    if (!md)
        return -1;
    char name[256];
    snprintf(name, sizeof name, "/%s/%s", svc->name, md->name);
    int kind = rpc_method_kind(name);
    if (kind < 0)
        return -1;
    return rpc_server_register(srv, name, (rpc_kind)kind, md->input, fn, user);
}

/* ---------------------------------------------------------------- request slots */

static rpc_call *call_new(rpc_server *srv, rpc_method *m) {
    rpc_call *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->srv = srv;
    c->m = m;
    c->generic = (m == NULL);
    grpc_metadata_array_init(&c->md);
    if (c->generic)
        grpc_call_details_init(&c->details);
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca; /* monotonic: the idle timeout waits on it */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    c->new_tag = (rpc_tag){RPC_TAG_NEW, c};
    c->op_tag = (rpc_tag){RPC_TAG_OP, c};
    c->close_tag = (rpc_tag){RPC_TAG_CLOSE, c};
    c->reject_tag = (rpc_tag){RPC_TAG_REJECT, c};
    return c;
}

void rpcs_call_free(rpc_call *c) {
    if (c->call)
        grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->md);
    if (c->generic)
        grpc_call_details_destroy(&c->details);
    if (c->payload)
        grpc_byte_buffer_destroy(c->payload);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->method_name);
    free(c->tenant);
    free(c->sequence);
    free(c->peer);
    free(c);
}

uint64_t rpcs_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void rpcs_call_release(rpc_call *c) {
    if (!c->admitted)
        return;
    pthread_mutex_lock(&c->srv->mu);
    rpc_admit_put(&c->srv->admit, c->peer);
    pthread_mutex_unlock(&c->srv->mu);
    c->admitted = 0;
}

/* Posts one request slot for method m (NULL = unknown methods). Caller holds
 * srv->mu; nothing is posted once shutdown began. */
static void request_slot(rpc_server *srv, rpc_method *m) {
    if (srv->shutting)
        return;
    rpc_call *c = call_new(srv, m);
    if (!c)
        return;
    grpc_call_error e;
    RPC_TSAN_RELEASE(&c->new_tag);
    if (m)
        e = grpc_server_request_registered_call(srv->server, m->reg, &c->call, &c->deadline, &c->md,
                                                m->reserved ? &c->payload : NULL, srv->cq, srv->cq,
                                                &c->new_tag);
    else
        e = grpc_server_request_call(srv->server, &c->call, &c->details, &c->md, srv->cq, srv->cq,
                                     &c->new_tag);
    if (e != GRPC_CALL_OK)
        rpcs_call_free(c);
}

/* ---------------------------------------------------------------- handler pool */

static void *worker_main(void *arg) {
    rpc_server *srv = arg;
    pthread_mutex_lock(&srv->mu);
    for (;;) {
        while (!srv->qhead && !srv->stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += RPC_IDLE_EXIT_S;
            srv->idle++;
            int r = pthread_cond_timedwait(&srv->cv, &srv->mu, &ts);
            srv->idle--;
            if (r == ETIMEDOUT && !srv->qhead && srv->threads > srv->nthreads_min)
                goto out;
        }
        if (!srv->qhead)
            break; /* stopping and nothing left */
        rpc_call *c = srv->qhead;
        srv->qhead = c->next;
        if (!srv->qhead)
            srv->qtail = NULL;
        srv->qlen--;
        srv->busy++;
        pthread_mutex_unlock(&srv->mu);
        rpcs_call_serve(c);
        pthread_mutex_lock(&srv->mu);
        srv->busy--;
    }
out:
    srv->threads--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

/* A reserved thread: serves the reserved queue only, until the pool stops. */
static void *reserved_main(void *arg) {
    rpc_server *srv = arg;
    pthread_mutex_lock(&srv->mu);
    for (;;) {
        while (!srv->rqhead && !srv->stopping)
            pthread_cond_wait(&srv->cv, &srv->mu);
        if (!srv->rqhead)
            break;
        rpc_call *c = srv->rqhead;
        srv->rqhead = c->next;
        if (!srv->rqhead)
            srv->rqtail = NULL;
        srv->rbusy++;
        pthread_mutex_unlock(&srv->mu);
        rpcs_call_serve(c);
        pthread_mutex_lock(&srv->mu);
        srv->rbusy--;
    }
    srv->rthreads--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

/* Starts one detached thread running fn. Returns 0 or -1. */
static int spawn_detached(void *(*fn)(void *), rpc_server *srv) {
    pthread_t t;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int r = pthread_create(&t, &at, fn, srv);
    pthread_attr_destroy(&at);
    return r == 0 ? 0 : -1;
}

/* Starts one detached pool thread. Caller holds srv->mu. */
static int spawn_worker(rpc_server *srv) {
    if (spawn_detached(worker_main, srv) != 0)
        return -1;
    srv->threads++;
    return 0;
}

/* Queues an arrived call of a reserved method. Caller holds srv->mu. */
static void enqueue_reserved(rpc_server *srv, rpc_call *c) {
    c->next = NULL;
    if (srv->rqtail)
        srv->rqtail->next = c;
    else
        srv->rqhead = c;
    srv->rqtail = c;
    pthread_cond_broadcast(&srv->cv);
}

/* Queues an arrived call for a handler thread. Caller holds srv->mu. */
static void enqueue_call(rpc_server *srv, rpc_call *c) {
    c->next = NULL;
    if (srv->qtail)
        srv->qtail->next = c;
    else
        srv->qhead = c;
    srv->qtail = c;
    srv->qlen++;
    if (srv->qlen > srv->idle && srv->threads < RPC_MAX_THREADS)
        spawn_worker(srv);
    pthread_cond_broadcast(&srv->cv);
}

/* ---------------------------------------------------------------- admission */

/* Answers a refused stream RESOURCE_EXHAUSTED with one batch; its completion
 * (RPC_TAG_REJECT, in the dispatcher) frees the call. No handler runs. */
static void reject_call(rpc_server *srv, rpc_call *c, rpc_admit_result why, int held) {
    char msg[RPC_STATUS_MSG_MAX];
    const char *name = c->m->name;
    if (why == RPC_ADMIT_PER_PEER)
        snprintf(msg, sizeof msg,
                 "%s: %d streams already open from this client (%s), the server's cap per "
                 "client connection; finish or cancel some before opening more",
                 name, held, c->peer ? c->peer : "?");
    else if (why == RPC_ADMIT_TOTAL)
        snprintf(msg, sizeof msg,
                 "%s: the server holds %d open streams, its cap for all clients together; "
                 "retry later",
                 name, held);
    else
        snprintf(msg, sizeof msg, "%s: out of memory admitting a stream", name);
    grpc_slice details = grpc_slice_from_copied_string(msg);
    grpc_op ops[3];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[1].data.send_status_from_server.status = GRPC_STATUS_RESOURCE_EXHAUSTED;
    ops[1].data.send_status_from_server.status_details = &details;
    ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[2].data.recv_close_on_server.cancelled = &c->close_cancelled;
    RPC_TSAN_RELEASE(&c->reject_tag);
    if (grpc_call_start_batch(c->call, ops, 3, &c->reject_tag, NULL) != GRPC_CALL_OK)
        rpcs_call_free(c);
    grpc_slice_unref(details);
    (void)srv;
}

/* A new call arrived (the NEW tag succeeded): posts the replacement slot,
 * admits it (streams: caps) and queues it, or refuses it at once. */
static void arrived(rpc_server *srv, rpc_call *c) {
    c->t0_ns = rpcs_now_ns();
    int counted = c->m && c->m->kind != RPC_UNARY &&
                  (srv->limits.max_streams > 0 || srv->limits.max_streams_per_peer > 0);
    if (counted) {
        char *p = grpc_call_get_peer(c->call);
        c->peer = p ? strdup(p) : NULL;
        gpr_free(p);
    }
    rpc_admit_result ar = RPC_ADMIT_OK;
    int held = 0;
    pthread_mutex_lock(&srv->mu);
    request_slot(srv, c->m); /* replace the slot before serving */
    if (counted) {
        ar = rpc_admit_take(&srv->admit, c->peer);
        c->admitted = ar == RPC_ADMIT_OK;
        held = ar == RPC_ADMIT_PER_PEER ? rpc_admit_count(&srv->admit, c->peer) : srv->admit.total;
    }
    if (ar == RPC_ADMIT_OK) {
        if (c->m && c->m->reserved)
            enqueue_reserved(srv, c);
        else
            enqueue_call(srv, c);
    }
    pthread_mutex_unlock(&srv->mu);
    if (ar != RPC_ADMIT_OK)
        reject_call(srv, c, ar, held);
}

/* ---------------------------------------------------------------- dispatcher */

static void *dispatcher_main(void *arg) {
    rpc_server *srv = arg;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        rpc_tag *tag = ev.tag;
        RPC_TSAN_ACQUIRE(tag);
        if (tag->type == RPC_TAG_SHUTDOWN) {
            pthread_mutex_lock(&srv->mu);
            srv->shutdown_notified = 1;
            pthread_cond_broadcast(&srv->cv);
            pthread_mutex_unlock(&srv->mu);
            continue;
        }
        rpc_call *c = tag->obj;
        if (tag->type == RPC_TAG_NEW) {
            if (ev.success)
                arrived(srv, c);
            else
                rpcs_call_free(c); /* slot cancelled by shutdown */
            continue;
        }
        if (tag->type == RPC_TAG_REJECT) {
            if (srv->observer)
                srv->observer(c->m->name, GRPC_STATUS_RESOURCE_EXHAUSTED, rpcs_now_ns() - c->t0_ns,
                              srv->observer_user);
            rpcs_call_free(c);
            continue;
        }
        pthread_mutex_lock(&c->mu);
        if (tag->type == RPC_TAG_OP) {
            c->op_done = 1;
            c->op_ok = ev.success;
        } else {
            c->close_done = 1;
        }
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    return NULL;
}

int rpc_server_start(rpc_server *srv) {
    if (srv->started || srv->destroyed)
        return -1;
    /* All kinds read their first message themselves (uniform path, and an
     * oversize first message is reported by the transport like any other),
     * except reserved methods: gRPC reads theirs before handing the call over,
     * so that a client which never sends it holds no reserved thread. */
    for (size_t i = 0; i < srv->nmethods; i++) {
        rpc_method *m = &srv->methods[i];
        m->reg = grpc_server_register_method(
            srv->server, m->name, NULL,
            m->reserved ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER : GRPC_SRM_PAYLOAD_NONE, 0);
        if (!m->reg)
            return -1;
    }
    grpc_server_start(srv->server);
    srv->started = 1;
    if (pthread_create(&srv->dispatcher, NULL, dispatcher_main, srv) != 0)
        return -1;
    pthread_mutex_lock(&srv->mu);
    for (int i = 0; i < srv->nthreads_min; i++)
        spawn_worker(srv);
    for (int i = 0; srv->nreserved && i < RPC_RESERVED_THREADS; i++)
        if (spawn_detached(reserved_main, srv) == 0)
            srv->rthreads++;
    for (size_t i = 0; i < srv->nmethods; i++)
        for (int k = 0; k < RPC_SLOTS_PER_METHOD; k++)
            request_slot(srv, &srv->methods[i]);
    for (int k = 0; k < RPC_SLOTS_PER_METHOD; k++)
        request_slot(srv, NULL);
    pthread_mutex_unlock(&srv->mu);
    return 0;
}

int rpc_server_inflight(rpc_server *srv) {
    pthread_mutex_lock(&srv->mu);
    int n = srv->busy + srv->qlen + srv->rbusy;
    for (rpc_call *c = srv->rqhead; c; c = c->next)
        n++;
    pthread_mutex_unlock(&srv->mu);
    return n;
}

/* ---------------------------------------------------------------- shutdown */

void rpc_server_shutdown(rpc_server *srv, int grace_ms) {
    pthread_mutex_lock(&srv->mu);
    if (srv->shutting || srv->destroyed) {
        pthread_mutex_unlock(&srv->mu);
        return;
    }
    srv->shutting = 1; /* no new request slots from here on */
    /* 0. hooks (health: NOT_SERVING, Watch streams ended), without the lock. */
    pthread_mutex_unlock(&srv->mu);
    for (int i = 0; i < srv->nhooks; i++)
        srv->hooks[i].fn(srv->hooks[i].user);
    pthread_mutex_lock(&srv->mu);
    if (srv->started) {
        /* 1. stop accepting; in-flight calls go on. */
        RPC_TSAN_RELEASE(&srv->shutdown_tag);
        grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
        /* 2. wait for them up to the grace period. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t ns = ts.tv_nsec + (int64_t)(grace_ms > 0 ? grace_ms : 0) * 1000000;
        ts.tv_sec += ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        while (!srv->shutdown_notified) {
            if (pthread_cond_timedwait(&srv->cv, &srv->mu, &ts) == ETIMEDOUT)
                break;
        }
        /* 3. cancel what is left; their handlers see failed reads/writes. */
        if (!srv->shutdown_notified) {
            pthread_mutex_unlock(&srv->mu);
            grpc_server_cancel_all_calls(srv->server);
            pthread_mutex_lock(&srv->mu);
            while (!srv->shutdown_notified)
                pthread_cond_wait(&srv->cv, &srv->mu);
        }
    } else {
        /* Never started: gRPC still wants a shutdown (its listeners exist); no
         * dispatcher runs, so wait for the tag here. */
        pthread_mutex_unlock(&srv->mu);
        RPC_TSAN_RELEASE(&srv->shutdown_tag);
        grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
        for (;;) {
            grpc_event ev =
                grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (ev.type == GRPC_OP_COMPLETE && ev.tag == &srv->shutdown_tag)
                break;
        }
        pthread_mutex_lock(&srv->mu);
    }
    /* 4. stop the pool once every handler returned. */
    srv->stopping = 1;
    pthread_cond_broadcast(&srv->cv);
    while (srv->threads > 0 || srv->rthreads > 0 || srv->qhead || srv->rqhead)
        pthread_cond_wait(&srv->cv, &srv->mu);
    pthread_mutex_unlock(&srv->mu);
    /* 5. release gRPC objects: server, then the drained queue. */
    grpc_server_destroy(srv->server);
    srv->server = NULL;
    grpc_completion_queue_shutdown(srv->cq);
    if (srv->started)
        pthread_join(srv->dispatcher, NULL);
    else
        while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
    grpc_completion_queue_destroy(srv->cq);
    srv->cq = NULL;
    srv->destroyed = 1;
    grpc_shutdown();
}

void rpc_server_free(rpc_server *srv) {
    if (!srv)
        return;
    if (!srv->destroyed)
        rpc_server_shutdown(srv, 0);
    for (size_t i = 0; i < srv->nmethods; i++)
        free(srv->methods[i].name);
    free(srv->methods);
    free(srv->auth);
    rpc_admit_free(&srv->admit);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->cv);
    free(srv);
}
