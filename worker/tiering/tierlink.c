/* tierlink.c - transport-independent part of tierlink.h: argument checks,
 * the ack queue, and the session thread of async transports. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tierlink_internal.h"

typedef enum { JOB_PUT, JOB_SUMMARIZE } job_kind;

struct tiersess_job {
    tiersess_job *next;
    job_kind kind;
    tiersess_block *blocks; /* JOB_PUT: [n], data owned until acked */
    size_t n;
    /* JOB_SUMMARIZE: the summary (one allocation with its arrays) */
    tier_summary *sum;
    tier_decision *dec;
    size_t n_dec;
    tier_status st;
    char err[256];
};

void tierlink_free(tierlink_t *l) {
    if (!l)
        return;
    l->ops->free(l);
    free(l);
}

int tierlink_is_remote(const tierlink_t *l) {
    return l && l->ops->async;
}

const char *tierlink_name(const tierlink_t *l) {
    return l->name;
}

void tierlink_breaker_counts(tierlink_t *l, uint64_t *skipped, uint64_t *timeouts) {
    *skipped = *timeouts = 0;
    if (l && l->ops->breaker)
        l->ops->breaker(l, skipped, timeouts);
}

tier_status tierlink_status_from_code(int code) {
    switch (code) {
    case 0:
        return TIER_OK;
    case 3:  /* INVALID_ARGUMENT */
    case 11: /* OUT_OF_RANGE */
        return TIER_EINVAL;
    case 5:
        return TIER_ENOTFOUND;
    case 15:
        return TIER_EDATALOSS;
    case 8:
        return TIER_EFULL;
    case 6:
        return TIER_EEXIST;
    default:
        return TIER_EIO; /* UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, ... */
    }
}

/* ---------------------------------------------------------------- acks */

/* Makes room for the acks of n more put blocks (caller holds mu), so that
 * recording an ack never fails: a put whose room cannot be made is refused
 * before anything is queued. 0 or -1. */
static int acks_reserve(tiersess_t *s, size_t n) {
    size_t need = s->n_acks + s->reserved + n;
    if (need > s->cap_acks) {
        size_t nc = s->cap_acks ? s->cap_acks : 64;
        while (nc < need)
            nc *= 2;
        tiersess_ack *p = realloc(s->acks, nc * sizeof *p);
        if (!p)
            return -1;
        s->acks = p;
        s->cap_acks = nc;
    }
    s->reserved += n;
    return 0;
}

/* Appends acks for one finished batch, into the room reserved for it
 * (caller holds mu). */
static void acks_add(tiersess_t *s, const tiersess_block *b, size_t n, tier_status st,
                     const char *err) {
    s->reserved -= n;
    for (size_t i = 0; i < n; i++) {
        tiersess_ack *a = &s->acks[s->n_acks++];
        a->layer = b[i].layer;
        a->block = b[i].block;
        a->status = st;
        a->data = b[i].data;
        a->len = b[i].len;
        snprintf(a->err, sizeof a->err, "%.*s", (int)sizeof a->err - 1, st == TIER_OK ? "" : err);
    }
}

/* Records a finished summary (caller holds mu). The decisions move into
 * the result; when even that cannot be recorded they are lost, which costs
 * only advice (the next summary brings the state again). */
static void sres_add(tiersess_t *s, tiersess_job *j) {
    s->pending_sum--;
    if (s->n_sres == s->cap_sres) {
        size_t nc = s->cap_sres ? s->cap_sres * 2 : 4;
        tiersess_summary_result *p = realloc(s->sres, nc * sizeof *p);
        if (!p) {
            free(j->dec);
            return;
        }
        s->sres = p;
        s->cap_sres = nc;
    }
    tiersess_summary_result *r = &s->sres[s->n_sres++];
    r->step = j->sum->step;
    r->status = j->st;
    snprintf(r->err, sizeof r->err, "%s", j->st == TIER_OK ? "" : j->err);
    r->d = j->dec;
    r->n = j->n_dec;
}

/* One allocation holding a copy of sum and all its arrays. */
static tier_summary *summary_copy(const tier_summary *sum) {
    size_t words = 0;
    for (uint32_t i = 0; i < sum->n_layers; i++) {
        const tier_layer_summary *l = &sum->layers[i];
        words += 2 * (size_t)l->n_active + l->n_recalled + l->n_dropped + l->n_revived;
    }
    size_t bytes = sizeof(tier_summary) + (size_t)sum->n_layers * sizeof(tier_layer_summary) +
                   words * sizeof(uint32_t);
    tier_summary *c = malloc(bytes);
    if (!c)
        return NULL;
    *c = *sum;
    tier_layer_summary *ls = (tier_layer_summary *)(c + 1);
    uint32_t *w = (uint32_t *)(ls + sum->n_layers);
    c->layers = ls;
    for (uint32_t i = 0; i < sum->n_layers; i++) {
        const tier_layer_summary *src = &sum->layers[i];
        ls[i] = *src;
#define COPY_ARR(field, n)                                                                         \
    do {                                                                                           \
        if (src->field && (n)) {                                                                   \
            memcpy(w, src->field, (size_t)(n) * sizeof *w);                                        \
            ls[i].field = (void *)w;                                                               \
            w += (n);                                                                              \
        }                                                                                          \
    } while (0)
        COPY_ARR(active, src->n_active);
        COPY_ARR(peak_mass, src->n_active); /* floats: same size as uint32_t */
        COPY_ARR(recalled, src->n_recalled);
        COPY_ARR(dropped, src->n_dropped);
        COPY_ARR(revived, src->n_revived);
#undef COPY_ARR
    }
    return c;
}

/* ---------------------------------------------------------------- thread */

static void job_run(tiersess_t *s, tiersess_job *j) {
    if (j->kind == JOB_PUT) {
        j->st = s->l->ops->put(s, j->blocks, j->n, j->err, sizeof j->err);
    } else {
        j->st = s->l->ops->summarize(s, j->sum, &j->dec, &j->n_dec, j->err, sizeof j->err);
    }
}

static void *sess_thread(void *arg) {
    tiersess_t *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->stop)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->head)
            break; /* stop, queue empty */
        tiersess_job *j = s->head;
        s->head = j->next;
        if (!s->head)
            s->tail = NULL;
        s->busy = 1;
        pthread_mutex_unlock(&s->mu);
        job_run(s, j);
        pthread_mutex_lock(&s->mu);
        s->busy = 0;
        if (j->kind == JOB_PUT) {
            acks_add(s, j->blocks, j->n, j->st, j->err);
            free(j->blocks);
        } else {
            sres_add(s, j);
            free(j->sum);
        }
        free(j);
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void enqueue(tiersess_t *s, tiersess_job *j) {
    j->next = NULL;
    if (s->tail)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    pthread_cond_broadcast(&s->cv);
}

/* Waits until no job is queued or running (caller holds mu). */
static void drain_locked(tiersess_t *s) {
    while (s->head || s->busy)
        pthread_cond_wait(&s->cv, &s->mu);
}

/* ---------------------------------------------------------------- session */

tier_status tiersess_open(tierlink_t *l, uint64_t seq, const tier_seq_info *info, tiersess_t **out,
                          char *err, size_t errlen) {
    *out = NULL;
    tiersess_t *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "tier session: out of memory");
        return TIER_EIO;
    }
    s->l = l;
    s->seq = seq;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    tiersess_fx_init(s);
    tier_status st = l->ops->open(s, info, err, errlen);
    if (st == TIER_OK && l->ops->async) {
        if (pthread_create(&s->th, NULL, sess_thread, s) != 0) {
            snprintf(err, errlen, "tier session: cannot start its thread");
            st = TIER_EIO;
        } else {
            s->has_thread = 1;
        }
    }
    if (st != TIER_OK) {
        if (l->ops->sess_free)
            l->ops->sess_free(s);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        tiersess_fx_free(s);
        free(s);
        return st;
    }
    *out = s;
    return TIER_OK;
}

tier_status tiersess_fetch(tiersess_t *s, uint32_t layer, const uint32_t *blocks, size_t n,
                           tiersess_fetch_cb cb, void *ud, char *err, size_t errlen) {
    if (n == 0)
        return TIER_OK;
    if (!blocks || !cb) {
        snprintf(err, errlen, "tiersess_fetch: NULL argument");
        return TIER_EINVAL;
    }
    tiersess_ref stack[128], *refs = n <= 128 ? stack : malloc(n * sizeof *refs);
    if (!refs) {
        snprintf(err, errlen, "out of memory fetching %zu blocks", n);
        return TIER_EIO;
    }
    for (size_t i = 0; i < n; i++)
        refs[i] = (tiersess_ref){layer, blocks[i]};
    tier_status st = s->l->ops->fetch(s, refs, n, cb, ud, err, errlen);
    if (refs != stack)
        free(refs);
    return st;
}

tier_status tiersess_put(tiersess_t *s, const tiersess_block *blocks, size_t n, char *err,
                         size_t errlen) {
    if (n == 0)
        return TIER_OK;
    pthread_mutex_lock(&s->mu);
    int room = acks_reserve(s, n);
    pthread_mutex_unlock(&s->mu);
    if (room != 0) {
        snprintf(err, errlen, "tiersess_put: out of memory");
        return TIER_EIO;
    }
    if (!s->has_thread) { /* synchronous transport: stored now, acked now */
        tier_status st = s->l->ops->put(s, blocks, n, err, errlen);
        pthread_mutex_lock(&s->mu);
        acks_add(s, blocks, n, st, err);
        pthread_mutex_unlock(&s->mu);
        return TIER_OK;
    }
    tiersess_job *j = calloc(1, sizeof *j);
    tiersess_block *copy = malloc(n * sizeof *copy);
    if (!j || !copy) {
        free(j);
        free(copy);
        pthread_mutex_lock(&s->mu);
        s->reserved -= n;
        pthread_mutex_unlock(&s->mu);
        snprintf(err, errlen, "tiersess_put: out of memory");
        return TIER_EIO;
    }
    memcpy(copy, blocks, n * sizeof *copy);
    j->kind = JOB_PUT;
    j->blocks = copy;
    j->n = n;
    pthread_mutex_lock(&s->mu);
    enqueue(s, j);
    pthread_mutex_unlock(&s->mu);
    return TIER_OK;
}

size_t tiersess_acks(tiersess_t *s, tiersess_ack *out, size_t max, int wait) {
    pthread_mutex_lock(&s->mu);
    if (wait)
        drain_locked(s);
    size_t k = s->n_acks < max ? s->n_acks : max;
    if (k) {
        memcpy(out, s->acks, k * sizeof *out);
        memmove(s->acks, s->acks + k, (s->n_acks - k) * sizeof *s->acks);
        s->n_acks -= k;
    }
    pthread_mutex_unlock(&s->mu);
    return k;
}

tier_status tiersess_summary_send(tiersess_t *s, const tier_summary *sum, char *err,
                                  size_t errlen) {
    tiersess_job *j = calloc(1, sizeof *j);
    tier_summary *c = j ? summary_copy(sum) : NULL;
    if (!c) {
        free(j);
        snprintf(err, errlen, "tiersess_summary_send: out of memory");
        return TIER_EIO;
    }
    j->kind = JOB_SUMMARIZE;
    j->sum = c;
    pthread_mutex_lock(&s->mu);
    s->pending_sum++;
    if (!s->has_thread) { /* synchronous transport: applied now */
        pthread_mutex_unlock(&s->mu);
        job_run(s, j);
        pthread_mutex_lock(&s->mu);
        sres_add(s, j);
        free(j->sum);
        free(j);
    } else {
        enqueue(s, j);
    }
    pthread_mutex_unlock(&s->mu);
    return TIER_OK;
}

size_t tiersess_summary_results(tiersess_t *s, tiersess_summary_result *out, size_t max, int wait) {
    pthread_mutex_lock(&s->mu);
    if (wait)
        while (s->pending_sum)
            pthread_cond_wait(&s->cv, &s->mu);
    size_t k = s->n_sres < max ? s->n_sres : max;
    if (k) {
        memcpy(out, s->sres, k * sizeof *out);
        memmove(s->sres, s->sres + k, (s->n_sres - k) * sizeof *s->sres);
        s->n_sres -= k;
    }
    pthread_mutex_unlock(&s->mu);
    return k;
}

tier_status tiersess_close(tiersess_t *s, int retain, char *err, size_t errlen) {
    pthread_mutex_lock(&s->mu);
    drain_locked(s);
    pthread_mutex_unlock(&s->mu);
    return s->l->ops->close(s, retain, err, errlen);
}

void tiersess_counts_get(tiersess_t *s, tiersess_counts *c) {
    pthread_mutex_lock(&s->mu);
    *c = s->cnt;
    pthread_mutex_unlock(&s->mu);
}

void tiersess_free(tiersess_t *s) {
    if (!s)
        return;
    if (s->has_thread) {
        pthread_mutex_lock(&s->mu);
        drain_locked(s);
        s->stop = 1;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
    }
    tiersess_fx_free(s);
    for (size_t i = 0; i < s->n_acks; i++)
        free(s->acks[i].data);
    free(s->acks);
    for (size_t i = 0; i < s->n_sres; i++)
        free(s->sres[i].d);
    free(s->sres);
    if (s->l->ops->sess_free)
        s->l->ops->sess_free(s);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
