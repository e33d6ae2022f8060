/* tierlink_internal.h - the transport table behind tierlink.h (private).
 *
 * A transport implements synchronous calls; tierlink.c adds what is common:
 * counting, the ack queue and, for transports that ask for it (async), the
 * session thread that runs puts and summaries in order off the caller's
 * thread. */
#ifndef KVTIER_TIERLINK_INTERNAL_H
#define KVTIER_TIERLINK_INTERNAL_H

#include <pthread.h>

#include "tierlink.h"

typedef struct tierlink_ops {
    /* Opens the sequence and sets up s->tx. */
    tier_status (*open)(tiersess_t *s, const tier_seq_info *info, char *err, size_t errlen);
    /* Fetches refs[0..n) (any layers) in one call, without the argument
     * checks; counts its calls itself. */
    tier_status (*fetch)(tiersess_t *s, const tiersess_ref *refs, size_t n, tiersess_fetch_cb cb,
                         void *ud, char *err, size_t errlen);
    /* Stores blocks[0..n) as one batch (all or nothing); returns the status
     * for all of them. */
    tier_status (*put)(tiersess_t *s, const tiersess_block *blocks, size_t n, char *err,
                       size_t errlen);
    tier_status (*summarize)(tiersess_t *s, const tier_summary *sum, tier_decision **out, size_t *n,
                             char *err, size_t errlen);
    tier_status (*close)(tiersess_t *s, int retain, char *err, size_t errlen);
    void (*sess_free)(tiersess_t *s); /* releases s->tx */
    void (*free)(tierlink_t *l);      /* releases l->remote */
    /* breaker counters (NULL: the transport has no breaker) */
    void (*breaker)(tierlink_t *l, uint64_t *skipped, uint64_t *timeouts);
    int async; /* puts and summaries on the session thread */
} tierlink_ops;

struct tierlink {
    const tierlink_ops *ops;
    char tenant[TIER_TENANT_MAX + 1];
    char name[128];
    tier_t *tier; /* embedded: borrowed store */
    void *remote; /* remote: transport state */
};

typedef struct tiersess_job tiersess_job;

/* One block delivered by a started fetch, not yet collected. */
typedef struct {
    uint32_t layer, block;
    tier_status st;
    void *data;
    size_t len;
} tiersess_arrival;

typedef struct tiersess_fjob tiersess_fjob;

/* Started fetches (tiersess_fetch_start), guarded by the session's mu. */
typedef struct {
    tiersess_fjob *head, *tail; /* waiting for the fetch thread, in order */
    int running;                /* calls queued or running */
    uint32_t *left;             /* [n_left] blocks of each layer not arrived yet */
    uint32_t n_left;
    tiersess_arrival *arr; /* [n_arr] arrived, not collected */
    size_t n_arr, cap_arr;
    int active;     /* started, not collected to its end */
    tier_status st; /* the first failed call's, since active */
    char err[256];
    int has_thread, stop;
    pthread_t th;
    pthread_cond_t cv; /* arrivals, calls ended, jobs queued */
} tiersess_fx;

/* Sets up / releases s->fx (tierlink_fetch.c); free waits for the calls in
 * flight (each bounded by its deadline) and frees what was not collected. */
void tiersess_fx_init(tiersess_t *s);
void tiersess_fx_free(tiersess_t *s);

struct tiersess {
    tierlink_t *l;
    uint64_t seq;
    void *tx;            /* transport state of the session */
    tiersess_counts cnt; /* updated by the transport (under mu when async) */
    /* ack queue and session thread */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tiersess_job *head, *tail; /* queued jobs, run in order */
    tiersess_ack *acks;        /* finished puts not yet taken */
    size_t n_acks, cap_acks;
    size_t reserved;               /* ack room held for puts queued or running */
    tiersess_summary_result *sres; /* finished summaries not yet taken */
    size_t n_sres, cap_sres;
    size_t pending_sum; /* summaries queued or running */
    int busy;           /* the thread runs a job */
    int stop;
    int has_thread;
    pthread_t th;
    tiersess_fx fx; /* started fetches and their thread */
};

/* Adds d to the counter `field` of s->cnt (any thread). */
static inline void tiersess_count(tiersess_t *s, uint64_t *field, uint64_t d) {
    pthread_mutex_lock(&s->mu);
    *field += d;
    pthread_mutex_unlock(&s->mu);
}

/* Maps a transport failure's code to tier_status (shared by transports). */
tier_status tierlink_status_from_code(int grpc_code);

#endif
