/* svc_health.c - kvtierd's health registry and its store-check thread. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kvtier.pb-c.h"
#include "svc_health.h"

struct svc_health {
    rpc_health *h; /* owned */
    svc_ctx *ctx;  /* borrowed */
    int period_ms;
    pthread_t thread;
    pthread_mutex_t mu; /* guards stop */
    pthread_cond_t cv;  /* CLOCK_MONOTONIC; signalled by svc_health_free */
    int stop;
};

static const char *tier_name(void) {
    return kvtier__v1__tier__descriptor.name; /* "kvtier.v1.Tier" */
}

/* One check of the store; sets "" and Tier, logs a change. `*degraded` is the
 * previous state (-1 at first; 0 fine, 1 the store does not answer, 2 disk
 * full: Tier NOT_SERVING, "" SERVING since reads work), updated. */
static void check_store(svc_health *sh, int *degraded) {
    char err[512] = "";
    tier_status s = tier_health(sh->ctx->tier, err, sizeof err);
    int d = s == TIER_OK ? 0 : s == TIER_EFULL ? 2 : 1;
    if (d == *degraded)
        return;
    rpc_health_status all = d == 1 ? RPC_HEALTH_NOT_SERVING : RPC_HEALTH_SERVING;
    rpc_health_status tier = d ? RPC_HEALTH_NOT_SERVING : RPC_HEALTH_SERVING;
    if (rpc_health_set(sh->h, "", all) != 0 || rpc_health_set(sh->h, tier_name(), tier) != 0)
        return; /* shutting down: the registry says NOT_SERVING for good */
    if (d == 1)
        fprintf(stderr, "kvtierd: health: the store does not answer (%s): NOT_SERVING\n", err);
    else if (d == 2)
        fprintf(stderr, "kvtierd: health: %s: kvtier.v1.Tier NOT_SERVING (reads still served)\n",
                err);
    else if (*degraded > 0)
        fprintf(stderr, "kvtierd: health: the store answers and has room again: SERVING\n");
    *degraded = d;
}

static void *monitor_main(void *arg) {
    svc_health *sh = arg;
    int degraded = -1;
    pthread_mutex_lock(&sh->mu);
    while (!sh->stop) {
        pthread_mutex_unlock(&sh->mu);
        if (!atomic_load(&sh->ctx->draining))
            check_store(sh, &degraded);
        pthread_mutex_lock(&sh->mu);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        long ns = ts.tv_nsec + (long)(sh->period_ms % 1000) * 1000000L;
        ts.tv_sec += sh->period_ms / 1000 + ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
        while (!sh->stop && pthread_cond_timedwait(&sh->cv, &sh->mu, &ts) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return NULL;
}

svc_health *svc_health_new(rpc_server *srv, svc_ctx *ctx, int period_ms, char *err, size_t errlen) {
    svc_health *sh = calloc(1, sizeof *sh);
    if (!sh) {
        snprintf(err, errlen, "health: out of memory");
        return NULL;
    }
    sh->ctx = ctx;
    sh->period_ms = period_ms > 0 ? period_ms : SVC_HEALTH_PERIOD_MS;
    pthread_mutex_init(&sh->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sh->cv, &ca);
    pthread_condattr_destroy(&ca);
    const char *names[] = {tier_name(), kvtier__v1__admin__descriptor.name, NULL};
    sh->h = rpc_health_new(srv, names, err, errlen);
    if (!sh->h) {
        svc_health_free(sh);
        return NULL;
    }
    if (pthread_create(&sh->thread, NULL, monitor_main, sh) != 0) {
        /* srv's shutdown hook points to the registry now: it stays allocated
         * (kvtierd exits on this error anyway). */
        snprintf(err, errlen, "health: cannot start the store-check thread");
        return NULL;
    }
    return sh;
}

rpc_health *svc_health_registry(svc_health *sh) {
    return sh->h;
}

void svc_health_free(svc_health *sh) {
    if (!sh)
        return;
    if (sh->h) { /* the thread runs exactly when the registry exists */
        pthread_mutex_lock(&sh->mu);
        sh->stop = 1;
        pthread_cond_broadcast(&sh->cv);
        pthread_mutex_unlock(&sh->mu);
        pthread_join(sh->thread, NULL);
        rpc_health_free(sh->h);
    }
    pthread_mutex_destroy(&sh->mu);
    pthread_cond_destroy(&sh->cv);
    free(sh);
}
