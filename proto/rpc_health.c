/* rpc_health.c - grpc.health.v1.Health over the RPC layer: a name -> status
 * table under one mutex, Check (unary), Watch (server stream, one handler thread
 * per watcher waiting on the table's condition variable). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pthread.h>

#include "health.pb-c.h"
#include "rpc_health.h"

/* A Watch handler wakes this often to notice a client that went away (the
 * RPC layer reports cancellation by polling, not by a wake-up). */
#define HEALTH_POLL_MS 200

typedef struct {
    char *name; /* owned */
    rpc_health_status st;
} health_entry;

struct rpc_health {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC; broadcast on every change and at shutdown */
    health_entry *e;   /* [n], grown by doubling */
    size_t n, cap;
    int shut; /* 1 after rpc_health_shutdown: all NOT_SERVING, no more changes */
};

static void set_err(char *err, size_t len, const char *msg) {
    if (err && len)
        snprintf(err, len, "%s", msg);
}

const char *rpc_health_name(rpc_health_status st) {
    switch (st) {
    case RPC_HEALTH_UNKNOWN:
        return "UNKNOWN";
    case RPC_HEALTH_SERVING:
        return "SERVING";
    case RPC_HEALTH_NOT_SERVING:
        return "NOT_SERVING";
    case RPC_HEALTH_SERVICE_UNKNOWN:
        return "SERVICE_UNKNOWN";
    }
    return "?";
}

/* The entry of `name` or NULL. Caller holds h->mu. */
static health_entry *find_locked(rpc_health *h, const char *name) {
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->e[i].name, name) == 0)
            return &h->e[i];
    return NULL;
}

static rpc_health_status get_locked(rpc_health *h, const char *name) {
    health_entry *e = find_locked(h, name);
    return e ? e->st : RPC_HEALTH_SERVICE_UNKNOWN;
}

rpc_health_status rpc_health_get(rpc_health *h, const char *service) {
    if (!service)
        return RPC_HEALTH_SERVICE_UNKNOWN;
    pthread_mutex_lock(&h->mu);
    rpc_health_status st = get_locked(h, service);
    pthread_mutex_unlock(&h->mu);
    return st;
}

int rpc_health_set(rpc_health *h, const char *service, rpc_health_status st) {
    if (!service || strlen(service) > RPC_HEALTH_NAME_MAX ||
        (st != RPC_HEALTH_SERVING && st != RPC_HEALTH_NOT_SERVING && st != RPC_HEALTH_UNKNOWN))
        return -1;
    int rc = 0;
    pthread_mutex_lock(&h->mu);
    health_entry *e = find_locked(h, service);
    if (h->shut) {
        rc = -1;
    } else if (e) {
        if (e->st != st) {
            e->st = st;
            pthread_cond_broadcast(&h->cv);
        }
    } else {
        if (h->n == h->cap) {
            size_t cap = h->cap ? h->cap * 2 : 8;
            health_entry *ne = realloc(h->e, cap * sizeof *ne);
            if (ne) {
                h->e = ne;
                h->cap = cap;
            }
        }
        char *name = h->n < h->cap ? strdup(service) : NULL;
        if (name) {
            h->e[h->n].name = name;
            h->e[h->n].st = st;
            h->n++;
            pthread_cond_broadcast(&h->cv);
        } else {
            rc = -1;
        }
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

void rpc_health_shutdown(rpc_health *h) {
    pthread_mutex_lock(&h->mu);
    h->shut = 1;
    for (size_t i = 0; i < h->n; i++)
        h->e[i].st = RPC_HEALTH_NOT_SERVING;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

static void on_server_shutdown(void *user) {
    rpc_health_shutdown(user);
}

/* ---------------------------------------------------------------- handlers */

static const char *req_service(const ProtobufCMessage *msg) {
    const Grpc__Health__V1__HealthCheckRequest *r =
        (const Grpc__Health__V1__HealthCheckRequest *)msg;
    return r->service ? r->service : "";
}

static void h_check(rpc_call *c, const ProtobufCMessage *msg, void *user) {
    const char *svc = req_service(msg);
    rpc_health_status st = rpc_health_get(user, svc);
    if (st == RPC_HEALTH_SERVICE_UNKNOWN) {
        rpc_call_finish(c, GRPC_STATUS_NOT_FOUND, "health: unknown service '%.*s'",
                        RPC_HEALTH_NAME_MAX, svc);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
    rpc_call_reply(c, &resp.base);
}

/* Deadline HEALTH_POLL_MS from now on CLOCK_MONOTONIC. */
static struct timespec poll_deadline(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long ns = ts.tv_nsec + HEALTH_POLL_MS * 1000000L;
    ts.tv_sec += ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    return ts;
}

/* Sends the current status at once and again on every change, until the
 * client goes away (CANCELLED) or the registry shuts down (UNAVAILABLE after the
 * last status). Holds no lock while writing: a slow client blocks only itself. */
static void h_watch(rpc_call *c, const ProtobufCMessage *msg, void *user) {
    rpc_health *h = user;
    const char *svc = req_service(msg);
    int sent = -1;
    pthread_mutex_lock(&h->mu);
    for (;;) {
        rpc_health_status st = get_locked(h, svc);
        if ((int)st != sent) {
            pthread_mutex_unlock(&h->mu);
            Grpc__Health__V1__HealthCheckResponse resp =
                GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
            resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
            if (rpc_call_write(c, &resp.base) != 0)
                return; /* call broken or answered; nothing more to send */
            sent = (int)st;
            pthread_mutex_lock(&h->mu);
            continue;
        }
        if (h->shut)
            break;
        struct timespec ts = poll_deadline();
        int r = pthread_cond_timedwait(&h->cv, &h->mu, &ts);
        if (r == ETIMEDOUT) {
            pthread_mutex_unlock(&h->mu);
            int gone = rpc_call_cancelled(c);
            pthread_mutex_lock(&h->mu);
            if (gone) {
                pthread_mutex_unlock(&h->mu);
                rpc_call_finish(c, GRPC_STATUS_CANCELLED, "health: watch cancelled");
                return;
            }
        }
    }
    pthread_mutex_unlock(&h->mu);
    rpc_call_finish(c, GRPC_STATUS_UNAVAILABLE, "health: server shutting down");
}

/* ---------------------------------------------------------------- lifetime */

rpc_health *rpc_health_new(rpc_server *srv, const char *const *names, char *err, size_t errlen) {
    rpc_health *h = calloc(1, sizeof *h);
    if (!h) {
        set_err(err, errlen, "health: out of memory");
        return NULL;
    }
    pthread_mutex_init(&h->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    int bad = rpc_health_set(h, "", RPC_HEALTH_SERVING) != 0;
    for (size_t i = 0; !bad && names && names[i]; i++)
        bad = rpc_health_set(h, names[i], RPC_HEALTH_SERVING) != 0;
    if (bad) {
        set_err(err, errlen, "health: a service name is too long, or out of memory");
        rpc_health_free(h);
        return NULL;
    }
    /* The hook goes last: a failure before it leaves no pointer to h in srv
     * that could run (handlers run only once srv starts, and the caller does not
     * start a server whose setup failed). */
    const ProtobufCServiceDescriptor *d = &grpc__health__v1__health__descriptor;
    if (rpc_server_register_service(srv, d, "Check", h_check, h) != 0 ||
        rpc_server_register_service(srv, d, "Watch", h_watch, h) != 0 ||
        rpc_server_set_public(srv, "/grpc.health.v1.Health/Check") != 0 ||
        rpc_server_set_public(srv, "/grpc.health.v1.Health/Watch") != 0 ||
        rpc_server_set_reserved(srv, "/grpc.health.v1.Health/Check") != 0 ||
        rpc_server_on_shutdown(srv, on_server_shutdown, h) != 0) {
        set_err(err, errlen,
                "health: cannot register grpc.health.v1.Health (server already started, "
                "or registered twice)");
        rpc_health_free(h);
        return NULL;
    }
    return h;
}

void rpc_health_free(rpc_health *h) {
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++)
        free(h->e[i].name);
    free(h->e);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
}
