/* tierlink_fetch.c - started fetches of a tier session (tierlink.h
 * tiersess_fetch_start / tiersess_fetch_collect): each start is one fetch
 * call, run in order on the session's fetch thread (remote) or at once
 * (embedded); blocks land in an arrival list the generating thread collects
 * from, per layer, so it waits only for what it is about to read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tierlink_internal.h"

struct tiersess_fjob {
    tiersess_fjob *next;
    tiersess_ref *refs; /* [n] */
    size_t n;
};

void tiersess_fx_init(tiersess_t *s) {
    memset(&s->fx, 0, sizeof s->fx);
    pthread_cond_init(&s->fx.cv, NULL);
}

/* Records one delivered block (any thread). A block that cannot be
 * recorded (memory short) is freed and reported not found: the caller
 * fetches it again when it needs it. */
static void fx_arrive(void *ud, uint32_t layer, uint32_t block, tier_status st, void *data,
                      size_t len) {
    tiersess_t *s = ud;
    tiersess_fx *f = &s->fx;
    pthread_mutex_lock(&s->mu);
    if (f->n_arr == f->cap_arr) {
        size_t nc = f->cap_arr ? f->cap_arr * 2 : 64;
        tiersess_arrival *p = realloc(f->arr, nc * sizeof *p);
        if (p) {
            f->arr = p;
            f->cap_arr = nc;
        }
    }
    if (f->n_arr < f->cap_arr) {
        f->arr[f->n_arr++] = (tiersess_arrival){layer, block, st, data, len};
    } else {
        free(data); /* not recorded: the layer fetches it again when it reads it */
    }
    if (layer < f->n_left && f->left[layer])
        f->left[layer]--;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Runs one job's call (s->mu not held) and frees the job. */
static void fx_run(tiersess_t *s, tiersess_fjob *j) {
    tiersess_fx *f = &s->fx;
    char err[256] = "";
    tier_status st = s->l->ops->fetch(s, j->refs, j->n, fx_arrive, s, err, sizeof err);
    pthread_mutex_lock(&s->mu);
    if (st != TIER_OK) {
        /* what never arrived will not: its layers need not be waited for */
        for (size_t i = 0; i < j->n; i++)
            if (j->refs[i].layer < f->n_left)
                f->left[j->refs[i].layer] = 0;
        if (f->st == TIER_OK) {
            f->st = st;
            snprintf(f->err, sizeof f->err, "%s", err);
        }
    }
    f->running--;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&s->mu);
    free(j->refs);
    free(j);
}

static void *fx_thread(void *arg) {
    tiersess_t *s = arg;
    tiersess_fx *f = &s->fx;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!f->head && !f->stop)
            pthread_cond_wait(&f->cv, &s->mu);
        if (!f->head)
            break;
        tiersess_fjob *j = f->head;
        f->head = j->next;
        if (!f->head)
            f->tail = NULL;
        pthread_mutex_unlock(&s->mu);
        fx_run(s, j);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

tier_status tiersess_fetch_start(tiersess_t *s, const tiersess_ref *refs, size_t n, char *err,
                                 size_t errlen) {
    tiersess_fx *f = &s->fx;
    if (!refs || n == 0) {
        snprintf(err, errlen, "tiersess_fetch_start: nothing to fetch");
        return TIER_EINVAL;
    }
    uint32_t nl = 0;
    for (size_t i = 0; i < n; i++)
        if (refs[i].layer + 1 > nl)
            nl = refs[i].layer + 1;
    tiersess_fjob *j = calloc(1, sizeof *j);
    tiersess_ref *r = malloc(n * sizeof *r);
    if (!j || !r) {
        free(j), free(r);
        snprintf(err, errlen, "tiersess_fetch_start: out of memory for %zu blocks", n);
        return TIER_EIO;
    }
    if (s->l->ops->async && !f->has_thread) {
        if (pthread_create(&f->th, NULL, fx_thread, s) != 0) {
            free(j), free(r);
            snprintf(err, errlen, "tiersess_fetch_start: cannot start the fetch thread");
            return TIER_EIO;
        }
        f->has_thread = 1;
    }
    memcpy(r, refs, n * sizeof *r);
    j->refs = r;
    j->n = n;
    pthread_mutex_lock(&s->mu);
    if (nl > f->n_left) {
        uint32_t *p = realloc(f->left, nl * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&s->mu);
            free(j), free(r);
            snprintf(err, errlen, "tiersess_fetch_start: out of memory for %u layers", nl);
            return TIER_EIO;
        }
        memset(p + f->n_left, 0, (nl - f->n_left) * sizeof *p);
        f->left = p;
        f->n_left = nl;
    }
    if (!f->active) {
        f->active = 1;
        f->st = TIER_OK;
        f->err[0] = 0;
    }
    for (size_t i = 0; i < n; i++)
        f->left[refs[i].layer]++;
    f->running++;
    if (f->has_thread) {
        if (f->tail)
            f->tail->next = j;
        else
            f->head = j;
        f->tail = j;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&s->mu);
    } else {
        pthread_mutex_unlock(&s->mu);
        fx_run(s, j); /* embedded: in-process, now */
    }
    return TIER_OK;
}

tier_status tiersess_fetch_collect(tiersess_t *s, int layer, int wait, tiersess_fetch_cb cb,
                                   void *ud, char *err, size_t errlen) {
    tiersess_fx *f = &s->fx;
    pthread_mutex_lock(&s->mu);
    if (!f->active) {
        pthread_mutex_unlock(&s->mu);
        return TIER_OK;
    }
    if (wait)
        while (f->running && (layer < 0 || ((uint32_t)layer < f->n_left && f->left[layer])))
            pthread_cond_wait(&f->cv, &s->mu);
    while (f->n_arr) { /* hand over outside the lock, in arrival order */
        size_t k = f->n_arr;
        tiersess_arrival stack[64], *a = k <= 64 ? stack : malloc(k * sizeof *a);
        if (!a) {
            a = stack;
            k = 64;
        }
        memcpy(a, f->arr, k * sizeof *a);
        memmove(f->arr, f->arr + k, (f->n_arr - k) * sizeof *f->arr);
        f->n_arr -= k;
        pthread_mutex_unlock(&s->mu);
        for (size_t i = 0; i < k; i++)
            cb(ud, a[i].layer, a[i].block, a[i].st, a[i].data, a[i].len);
        if (a != stack)
            free(a);
        pthread_mutex_lock(&s->mu);
    }
    tier_status st = TIER_OK;
    if (!f->running && !f->n_arr) { /* every call ended and was handed over */
        st = f->st;
        if (st != TIER_OK)
            snprintf(err, errlen, "%s", f->err);
        f->active = 0;
        memset(f->left, 0, f->n_left * sizeof *f->left);
    }
    pthread_mutex_unlock(&s->mu);
    return st;
}

int tiersess_fetch_ready(tiersess_t *s, int layer) {
    tiersess_fx *f = &s->fx;
    pthread_mutex_lock(&s->mu);
    int ready = !f->running || (layer >= 0 && ((uint32_t)layer >= f->n_left || !f->left[layer]));
    pthread_mutex_unlock(&s->mu);
    return ready;
}

int tiersess_fetch_active(tiersess_t *s) {
    pthread_mutex_lock(&s->mu);
    int a = s->fx.active;
    pthread_mutex_unlock(&s->mu);
    return a;
}

void tiersess_fx_free(tiersess_t *s) {
    tiersess_fx *f = &s->fx;
    if (f->has_thread) { /* the calls in flight end first (bounded by their deadline) */
        pthread_mutex_lock(&s->mu);
        while (f->running)
            pthread_cond_wait(&f->cv, &s->mu);
        f->stop = 1;
        pthread_cond_broadcast(&f->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(f->th, NULL);
        f->has_thread = 0;
    }
    for (size_t i = 0; i < f->n_arr; i++)
        free(f->arr[i].data);
    free(f->arr);
    free(f->left);
    pthread_cond_destroy(&f->cv);
    memset(f, 0, sizeof *f);
}
