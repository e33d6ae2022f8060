/* tiering_blocks.c - the tiering driver's block work (see tiering.h): the
 * staging area, put acknowledgements, demotion and promotion under the hot
 * budget, the recall of revival candidates, summaries and decisions. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tiering_internal.h"

/* ---------------------------------------------------------------- helpers */

static int layer_grow(tl_layer *y, int block) {
    if (block < y->cap)
        return 0;
    int nc = y->cap ? y->cap : 64;
    while (nc <= block)
        nc *= 2;
    uint8_t *f = realloc(y->flags, (size_t)nc);
    if (!f)
        return -1;
    y->flags = f;
    void **s = realloc(y->stage, (size_t)nc * sizeof *s);
    if (!s)
        return -1;
    y->stage = s;
    int32_t *w = realloc(y->seen, (size_t)nc * sizeof *w);
    if (!w)
        return -1;
    y->seen = w;
    memset(y->flags + y->cap, 0, (size_t)(nc - y->cap));
    memset(y->stage + y->cap, 0, (size_t)(nc - y->cap) * sizeof *s);
    memset(y->seen + y->cap, 0, (size_t)(nc - y->cap) * sizeof *w);
    y->cap = nc;
    return 0;
}

uint8_t *tl_flag_at(tiering_t *t, int layer, int block) {
    tl_layer *y = &t->L[layer];
    if (block >= y->cap && layer_grow(y, block) != 0)
        return NULL;
    return &y->flags[block];
}

static void stage_set(tiering_t *t, int layer, int block, void *bytes) {
    tl_layer *y = &t->L[layer];
    if (y->stage[block] && !bytes) {
        y->n_staged--;
        t->staged_bytes -= t->block_bytes;
    } else if (!y->stage[block] && bytes) {
        y->n_staged++;
        t->staged_bytes += t->block_bytes;
        if (t->staged_bytes > t->st.stage_peak_bytes)
            t->st.stage_peak_bytes = t->staged_bytes;
    }
    y->stage[block] = bytes;
    y->seen[block] = t->cur_step;
}

/* Frees the staged copy of a block (not one whose put is in flight: the
 * session owns that one until its ack). */
void tl_stage_free(tiering_t *t, int layer, int block) {
    tl_layer *y = &t->L[layer];
    if (block >= y->cap || !y->stage[block] || (y->flags[block] & F_PUTTING))
        return;
    kvcache_block_unlend(t->kv, t->seq, layer, block);
    free(y->stage[block]);
    stage_set(t, layer, block, NULL);
}

static void drop_local(tiering_t *t, int layer, int block, int lost) {
    uint8_t *f = tl_flag_at(t, layer, block);
    if (kvcache_block_state(t->kv, t->seq, layer, block) == KV_BLOCK_DROPPED)
        return;
    tl_stage_free(t, layer, block);
    kvcache_block_drop(t->kv, t->seq, layer, block);
    t->st.dropped++;
    if (f)
        *f = (uint8_t)((*f & F_PUTTING) | (lost ? F_LOST : 0));
    if (lost)
        t->st.lost++;
}

/* ---------------------------------------------------------------- acks */

/* Applies the outcome of finished puts (wait: of every queued put). */
void tl_take_acks(tiering_t *t, int wait) {
    if (!t->sess)
        return;
    tiersess_ack a[64];
    size_t n;
    int w = wait;
    while ((n = tiersess_acks(t->sess, a, 64, w)) > 0) {
        w = 0;
        for (size_t i = 0; i < n; i++) {
            int l = (int)a[i].layer, b = (int)a[i].block;
            uint8_t *f = tl_flag_at(t, l, b);
            kv_block_state_t s = kvcache_block_state(t->kv, t->seq, l, b);
            if (f)
                *f &= (uint8_t)~F_PUTTING;
            if (f && t->L[l].stage[b] == a[i].data)
                stage_set(t, l, b, NULL); /* re-staged below when kept */
            if (a[i].status == TIER_OK) {
                t->st.demoted++;
                t->st.demoted_host++;
                t->st.put_bytes += a[i].len;
                if (f)
                    *f |= F_SVC_COPY;
                if (f && s == KV_BLOCK_OUT) {
                    stage_set(t, l, b, a[i].data); /* the same bytes: keep them staged */
                    t->L[l].seen[b] = t->cur_step;
                    continue;
                }
                if (f && s == KV_BLOCK_HOT)
                    *f |= F_RECALLED; /* promoted before the ack: the service hears it */
            } else {
                if (s == KV_BLOCK_OUT) /* never drop what could not be placed */
                    kvcache_block_put(t->kv, t->seq, l, b, a[i].data, a[i].len);
                tl_svc_failed(t, "PutBlocks", a[i].err); /* back off: no retry every step */
            }
            free(a[i].data);
        }
    }
}

/* ---------------------------------------------------------------- demotion */

/* Takes a hot block out. Its bytes: dropped when the service has them (kept
 * staged), else queued for the budget pass's put batch (flush_puts). Returns
 * 0 when it left the hot pool, -1 when it stays hot. */
static int demote(tiering_t *t, int layer, int block) {
    uint8_t *f = tl_flag_at(t, layer, block);
    if (!f || kvcache_block_state(t->kv, t->seq, layer, block) != KV_BLOCK_HOT)
        return -1;
    int have = (*f & (F_SVC_COPY | F_PUTTING)) != 0;
    if (!have && !tl_svc_ready(t))
        return -1;
    if (!have && t->n_puts == t->cap_puts) {
        size_t nc = t->cap_puts ? t->cap_puts * 2 : 32;
        tiersess_block *p = realloc(t->puts, nc * sizeof *p);
        if (!p)
            return -1;
        t->puts = p;
        t->cap_puts = nc;
    }
    void *bytes = NULL;
    size_t len = 0;
    if (kvcache_block_take(t->kv, t->seq, layer, block, &bytes, &len) != KV_OK)
        return -1;
    if (*f & F_RECALLED) /* a revival the service has not heard of yet */
        *f = (uint8_t)((*f & ~F_RECALLED) | F_REVIVED);
    if (have) { /* the service has (or is being sent) these exact bytes */
        if (*f & F_PUTTING)
            free(bytes); /* the in-flight copy stays staged */
        else
            stage_set(t, layer, block, bytes);
        return 0;
    }
    t->puts[t->n_puts++] =
        (tiersess_block){(uint32_t)layer, (uint32_t)block, bytes, len,
                         (uint32_t)kvcache_block_tokens(t->kv, t->seq, layer, block)};
    *f |= F_PUTTING;
    stage_set(t, layer, block, bytes); /* readable from here until acknowledged */
    return 0;
}

/* Sends the demotions of one budget pass as one put batch. */
void tl_flush_puts(tiering_t *t) {
    if (!t->n_puts)
        return;
    char err[256];
    if (!t->sess || tiersess_put(t->sess, t->puts, t->n_puts, err, sizeof err) != TIER_OK) {
        for (size_t i = 0; i < t->n_puts; i++) { /* back into the pool, never lost */
            int l = (int)t->puts[i].layer, b = (int)t->puts[i].block;
            t->L[l].flags[b] &= (uint8_t)~F_PUTTING;
            stage_set(t, l, b, NULL);
            kvcache_block_put(t->kv, t->seq, l, b, t->puts[i].data, t->puts[i].len);
            free(t->puts[i].data);
        }
        tl_svc_failed(t, "PutBlocks", t->sess ? err : "no session");
    }
    t->n_puts = 0;
}

/* Copies a lent block into the pool (it ranked into the hot budget). */
static void promote(tiering_t *t, int layer, int block) {
    tl_layer *y = &t->L[layer];
    if (kvcache_block_put(t->kv, t->seq, layer, block, y->stage[block], t->block_bytes) != KV_OK)
        return;
    y->flags[block] |= F_RECALLED;
    y->flags[block] &= (uint8_t)~F_REVIVED;
    t->st.promoted++;
    tl_stage_free(t, layer, block); /* no-op while its put is in flight */
}

/* Staged blocks not read now leave staging past `linger` steps since their
 * last candidacy, and oldest first beyond stage_blocks per layer (never a
 * block whose put is in flight: its bytes are the session's). */
static void stage_trim(tiering_t *t, int layer) {
    tl_layer *y = &t->L[layer];
    int nb = kvcache_seq_blocks(t->kv, t->seq, layer);
    int idle = 0;
    for (int b = 0; b < nb && b < y->cap; b++)
        if (y->stage[b] && !(y->flags[b] & F_PUTTING) &&
            !kvcache_block_lent(t->kv, t->seq, layer, b)) {
            if (t->cur_step - y->seen[b] > t->o.linger)
                tl_stage_free(t, layer, b);
            else
                idle++;
        }
    while (idle > t->o.stage_blocks) {
        int old = -1;
        for (int b = 0; b < nb && b < y->cap; b++)
            if (y->stage[b] && !(y->flags[b] & F_PUTTING) &&
                !kvcache_block_lent(t->kv, t->seq, layer, b) &&
                (old < 0 || y->seen[b] < y->seen[old]))
                old = b;
        if (old < 0)
            break;
        tl_stage_free(t, layer, old);
        idle--;
    }
}

/* Holds `layer` to the hot budget over blocks [0, limit): one ranking over
 * the HOT blocks and the lent ones (read by this step's attention): the
 * coldest leave until at most hot_blocks remain; lent blocks that stay are
 * promoted into the pool, hot ones that leave are demoted. */
void tl_enforce_budget(tiering_t *t, int layer, int limit) {
    int nb = kvcache_seq_blocks(t->kv, t->seq, layer);
    summary_t *sm = kvcache_summary(t->kv, t->seq);
    int nsb = 0;
    const summary_block_t *sb = sm ? summary_layer_blocks(sm, layer, &nsb) : NULL;
    if (limit > nb)
        limit = nb;
    if (nb > 0 && layer_grow(&t->L[layer], nb) != 0)
        return;
    int lent = kvcache_lent_blocks(t->kv, t->seq, layer);
    int over = kvcache_hot_blocks(t->kv, t->seq, layer) + lent - t->L[layer].budget;
    if (over <= 0 && lent == 0) { /* within budget, nothing read from outside */
        if (t->L[layer].n_staged)
            stage_trim(t, layer);
        return;
    }
    int in_hot = 1; /* a block ranked in stays: sentinel to stop the scan early */
    uint8_t *out = t->L[layer].flags;
    while (over > 0 && in_hot) {
        int victim = -1;
        policy_hot_key best = {0, 0};
        for (int b = 0; b < limit; b++) {
            if (tl_is_protected(t, nb, b) || (out[b] & F_OUTRANKED) ||
                !kvcache_block_readable(t->kv, t->seq, layer, b))
                continue;
            policy_hot_key k = {(sb && b < nsb) ? sb[b].last_active : b * KV_BLOCK_TOKENS,
                                (sb && b < nsb) ? sb[b].cum_mass : 0.0f};
            if (victim < 0 || policy_hot_colder(&k, &best)) {
                victim = b;
                best = k;
            }
        }
        if (victim < 0)
            break;
        if (kvcache_block_state(t->kv, t->seq, layer, victim) == KV_BLOCK_HOT) {
            if (demote(t, layer, victim) != 0)
                in_hot = 0; /* the service is down: stay over budget */
        } else {
            out[victim] |= F_OUTRANKED; /* lent: it simply stays out */
            if (out[victim] & F_RECALLED)
                out[victim] = (uint8_t)((out[victim] & ~F_RECALLED) | F_REVIVED);
        }
        over--;
    }
    /* lent blocks that ranked in come back into the pool; the others stop
     * being read (this layer has attended) and leave staging beyond its
     * budget */
    tl_layer *y = &t->L[layer];
    for (int b = 0; b < nb && b < y->cap; b++) {
        if (out[b] & F_OUTRANKED) {
            out[b] &= (uint8_t)~F_OUTRANKED;
            kvcache_block_unlend(t->kv, t->seq, layer, b);
            continue;
        }
        if (b < limit && kvcache_block_state(t->kv, t->seq, layer, b) == KV_BLOCK_OUT &&
            kvcache_block_lent(t->kv, t->seq, layer, b) && y->stage[b])
            promote(t, layer, b);
    }
    stage_trim(t, layer);
}

static void lat_add(tiering_t *t, double ms) {
    if (t->nlat == t->caplat) {
        size_t nc = t->caplat ? t->caplat * 2 : 256;
        double *p = realloc(t->lat, nc * sizeof *p);
        if (!p)
            return;
        t->lat = p;
        t->caplat = nc;
    }
    t->lat[t->nlat++] = ms;
}

/* ---------------------------------------------------------------- recall */

typedef enum {
    FETCH_PROMOTE = 0, /* a prefetch decision: into the pool */
    FETCH_LEND = 1,    /* this pass's candidates: staged and lent */
    FETCH_STAGE = 2,   /* speculative: staged for the layer's next attention */
} fetch_kind;

typedef struct {
    tiering_t *t;
    fetch_kind kind;
} fetch_ud;

static void on_fetched(void *ud, uint32_t layer, uint32_t block, tier_status st, void *data,
                       size_t len) {
    fetch_ud *u = ud;
    tiering_t *t = u->t;
    int l = (int)layer, b = (int)block;
    uint8_t *f = tl_flag_at(t, l, b);
    int pend = f && (*f & F_PENDING); /* its attention waits for it */
    if (pend)
        *f &= (uint8_t)~F_PENDING;
    if (st != TIER_OK) { /* gone (or corrupt): never attend garbage */
        drop_local(t, l, b, 1);
        return;
    }
    if (len != t->block_bytes || kvcache_block_state(t->kv, t->seq, l, b) != KV_BLOCK_OUT || !f ||
        t->L[l].stage[b]) {
        free(data);
        if (pend && f && t->L[l].stage[b]) { /* its bytes are here already */
            kvcache_block_lend(t->kv, t->seq, l, b, t->L[l].stage[b], t->block_bytes);
            *f |= F_RECALLED;
            t->st.recalled++;
        }
        return;
    }
    t->st.fetched++;
    t->st.recall_bytes += len;
    stage_set(t, l, b, data);
    if (u->kind == FETCH_LEND || pend) {
        kvcache_block_lend(t->kv, t->seq, l, b, data, len);
        t->L[l].flags[b] |= F_RECALLED;
        t->st.recalled++;
    } else if (u->kind == FETCH_PROMOTE) {
        promote(t, l, b);
    }
}

/* Makes exactly the blocks marked F_CAND in `layer` readable: lends staged
 * ones, fetches the rest in one batch, ends the loans of the others, trims
 * the staging area. Clears the marks. */
/* Starts the background fetch of t->miss[0..n) of layer and lends them
 * pending. 0, or -1 when it could not start (nothing changed). */
static int fetch_behind(tiering_t *t, int layer, int n) {
    if ((size_t)n > t->cap_spec) {
        tiersess_ref *p = realloc(t->spec, (size_t)n * sizeof *p);
        if (!p)
            return -1;
        t->spec = p;
        t->cap_spec = (size_t)n;
    }
    for (int i = 0; i < n; i++)
        t->spec[i] = (tiersess_ref){(uint32_t)layer, t->miss[i]};
    char err[256];
    if (tiersess_fetch_start(t->sess, t->spec, (size_t)n, err, sizeof err) != TIER_OK)
        return -1;
    for (int i = 0; i < n; i++) {
        kvcache_block_lend_pending(t->kv, t->seq, layer, (int)t->miss[i]);
        t->L[layer].flags[t->miss[i]] |= F_PENDING;
    }
    t->pend_t0 = tl_now_s();
    t->n_pend = n;
    t->fx_on = 1;
    return 0;
}

void tl_on_pending(void *ud, int seq, int layer) {
    tiering_t *t = ud;
    (void)seq;
    tl_collect(t, layer, 1);
    lat_add(t, (tl_now_s() - t->pend_t0) * 1e3);
    tl_layer *y = &t->L[layer];
    for (int i = 0; i < t->n_pend; i++) /* not arrived: kvcache ends the loan */
        if ((int)t->miss[i] < y->cap)
            y->flags[t->miss[i]] &= (uint8_t)~F_PENDING;
    t->n_pend = 0;
}

void tl_reconcile(tiering_t *t, int layer, int overlap) {
    tl_layer *y = &t->L[layer];
    int nb = kvcache_seq_blocks(t->kv, t->seq, layer);
    int nmiss = 0;
    if (t->miss_cap < nb) {
        uint32_t *p = realloc(t->miss, (size_t)nb * sizeof *p);
        if (!p)
            return;
        t->miss = p;
        t->miss_cap = nb;
    }
    if (y->cap_last < nb) {
        int *p = realloc(y->last, (size_t)nb * sizeof *p);
        if (!p)
            return;
        y->last = p;
        y->cap_last = nb;
    }
    y->n_last = 0;
    for (int b = 0; b < nb && b < y->cap; b++) {
        if (!(y->flags[b] & F_CAND)) {
            if (kvcache_block_lent(t->kv, t->seq, layer, b))
                kvcache_block_unlend(t->kv, t->seq, layer, b);
            continue;
        }
        y->flags[b] &= (uint8_t)~F_CAND;
        if (kvcache_block_state(t->kv, t->seq, layer, b) != KV_BLOCK_OUT)
            continue;
        y->last[y->n_last++] = b;
        if (y->stage[b]) {
            y->seen[b] = t->cur_step;
            if (!kvcache_block_lent(t->kv, t->seq, layer, b))
                kvcache_block_lend(t->kv, t->seq, layer, b, y->stage[b], t->block_bytes);
            y->flags[b] |= F_RECALLED;
            t->st.recalled++;
        } else if (y->flags[b] & F_SVC_COPY) {
            t->miss[nmiss++] = (uint32_t)b;
        }
    }
    if (nmiss && tl_svc_ready(t) && !(overlap && fetch_behind(t, layer, nmiss) == 0)) {
        char err[256];
        fetch_ud u = {t, FETCH_LEND};
        double t0 = tl_now_s();
        if (tierlink_is_remote(t->o.link))
            tp_nap(engine_pool(t->e)); /* the wait is I/O: no spinning meanwhile */
        tier_status s = tiersess_fetch(t->sess, (uint32_t)layer, t->miss, (size_t)nmiss, on_fetched,
                                       &u, err, sizeof err);
        lat_add(t, (tl_now_s() - t0) * 1e3);
        if (s != TIER_OK)
            tl_svc_failed(t, "FetchBlocks", err);
    }
    size_t res = kvcache_bytes_hot(t->kv) + t->staged_bytes;
    if (res > t->st.resident_peak_bytes)
        t->st.resident_peak_bytes = res;
}

void tl_spec_start(tiering_t *t) {
    if (t->fx_on || !t->sess || t->need_reopen)
        return;
    size_t n = 0;
    for (int l = 0; l < t->n_layers; l++) {
        tl_layer *y = &t->L[l];
        for (int i = 0; i < y->n_last; i++) {
            int b = y->last[i];
            if (b >= y->cap || y->stage[b] || !(y->flags[b] & F_SVC_COPY) ||
                (y->flags[b] & F_PUTTING) ||
                kvcache_block_state(t->kv, t->seq, l, b) != KV_BLOCK_OUT)
                continue;
            if (n == t->cap_spec) {
                size_t nc = t->cap_spec ? t->cap_spec * 2 : 256;
                tiersess_ref *p = realloc(t->spec, nc * sizeof *p);
                if (!p)
                    return; /* no speculation this step: each layer fetches its own */
                t->spec = p;
                t->cap_spec = nc;
            }
            t->spec[n++] = (tiersess_ref){(uint32_t)l, (uint32_t)b};
        }
    }
    if (!n)
        return;
    char err[256];
    if (tiersess_fetch_start(t->sess, t->spec, n, err, sizeof err) != TIER_OK)
        return; /* not started: the layers fetch their misses themselves */
    t->fx_on = t->spec_on = 1;
    t->spec_t0 = tl_now_s();
}

void tl_collect(tiering_t *t, int layer, int wait) {
    if (!t->fx_on || !t->sess)
        return;
    char err[256];
    fetch_ud u = {t, FETCH_STAGE};
    if (wait && !tiersess_fetch_ready(t->sess, layer))
        tp_nap(engine_pool(t->e)); /* the wait is I/O: no spinning meanwhile */
    tier_status s = tiersess_fetch_collect(t->sess, layer, wait, on_fetched, &u, err, sizeof err);
    if (tiersess_fetch_active(t->sess))
        return;
    /* over: what never arrived is asked for again when a layer needs it */
    t->fx_on = 0;
    if (t->spec_on)
        lat_add(t, (tl_now_s() - t->spec_t0) * 1e3);
    t->spec_on = 0;
    if (s != TIER_OK)
        tl_svc_failed(t, "FetchBlocks", err);
}

void tl_mark_cand(tiering_t *t, int layer, const int *blocks, int n) {
    for (int i = 0; i < n; i++) {
        uint8_t *f = tl_flag_at(t, layer, blocks[i]);
        if (f)
            *f |= F_CAND;
    }
}

/* ---------------------------------------------------------------- summary */

/* Adaptive budgets: the same total (hot_blocks x layers) split over the layers
 * by the mean size of their active sets (union over heads) in the window that
 * just ended; the layers beyond their share shrink at their next budget pass.
 * Exactness does not depend on it (the revival check reads what the hot keys
 * cannot exclude), only what stays hot and what is fetched. */
static void adapt_budgets(tiering_t *t, const summary_t *sm) {
    int L = t->n_layers;
    double *need = malloc(sizeof(double) * (size_t)L);
    int *cap = malloc(sizeof(int) * (size_t)L), *out = malloc(sizeof(int) * (size_t)L);
    if (need && cap && out) {
        for (int l = 0; l < L; l++) {
            const summary_layer_t *y = &sm->layers[l];
            need[l] = y->win_steps > 0 ? (double)y->win_active_sum / y->win_steps : 0.0;
            cap[l] = kvcache_seq_blocks(t->kv, t->seq, l) + 1;
        }
        int floor = t->o.sink_blocks + t->o.recent_blocks + 1;
        if (policy_layer_budgets(need, cap, L, t->o.hot_blocks * L, floor, out) == 0)
            for (int l = 0; l < L; l++)
                t->L[l].budget = out[l];
    }
    free(need), free(cap), free(out);
}

static void apply_decisions(tiering_t *t, const tier_decision *d, size_t n, int nb) {
    int L = t->n_layers;
    for (size_t i = 0; i < n; i++) {
        int l = (int)d[i].layer, b = (int)d[i].block;
        if (l < 0 || l >= L || b < 0 || b >= nb)
            continue;
        switch (d[i].kind) {
        case POLICY_DEMOTE_SSD:
            t->st.demoted_ssd++;
            break;
        case POLICY_DROP:
            drop_local(t, l, b, 0);
            break;
        case POLICY_PREFETCH:
            if (kvcache_hot_blocks(t->kv, t->seq, l) < t->L[l].budget &&
                kvcache_block_state(t->kv, t->seq, l, b) == KV_BLOCK_OUT && t->sess &&
                !t->need_reopen) { /* a hint: never worth re-opening a session for */
                tl_layer *y = &t->L[l];
                if (b < y->cap && y->stage[b]) {
                    promote(t, l, b);
                } else {
                    char err[256];
                    uint32_t blk = (uint32_t)b;
                    fetch_ud u = {t, FETCH_PROMOTE};
                    if (tiersess_fetch(t->sess, (uint32_t)l, &blk, 1, on_fetched, &u, err,
                                       sizeof err) != TIER_OK)
                        tl_svc_failed(t, "FetchBlocks", err);
                }
            }
            break;
        default:
            break;
        }
    }
    tl_flush_puts(t);
}

/* Hot blocks inactive for more than hot_inactive_steps leave the pool
 * whatever the budget (policy_hot_expired), every window. */
static void demote_expired(tiering_t *t, int step) {
    summary_t *sm = kvcache_summary(t->kv, t->seq);
    if (!sm)
        return;
    for (int l = 0; l < t->n_layers; l++) {
        int nb = kvcache_seq_blocks(t->kv, t->seq, l), nsb = 0;
        const summary_block_t *sb = summary_layer_blocks(sm, l, &nsb);
        for (int b = 0; b < nb && b < nsb; b++) {
            policy_hot_key k = {sb[b].last_active, sb[b].cum_mass};
            if (!tl_is_protected(t, nb, b) &&
                kvcache_block_state(t->kv, t->seq, l, b) == KV_BLOCK_HOT &&
                policy_hot_expired(&t->o.params, step, &k))
                demote(t, l, b);
        }
    }
    tl_flush_puts(t);
}

void tl_take_summaries(tiering_t *t, int wait) {
    if (!t->sess)
        return;
    tiersess_summary_result r[4];
    size_t n;
    int w = wait;
    while ((n = tiersess_summary_results(t->sess, r, 4, w)) > 0) {
        w = 0;
        for (size_t i = 0; i < n; i++) {
            if (r[i].status == TIER_OK) {
                t->st.summaries++;
                apply_decisions(t, r[i].d, r[i].n, kvcache_seq_blocks(t->kv, t->seq, 0));
            } else if (r[i].status == TIER_EIO) {
                tl_svc_failed(t, "Summarize", r[i].err);
            } else {
                snprintf(t->st.degraded_reason, sizeof t->st.degraded_reason, "Summarize: %.200s",
                         r[i].err);
            }
            free(r[i].d);
        }
    }
}

void tl_send_summary(tiering_t *t, int step) {
    summary_t *sm = kvcache_summary(t->kv, t->seq);
    if (!sm || !tl_svc_ready(t))
        return;
    tl_take_acks(t, 0);
    int L = t->n_layers;
    int nb = kvcache_seq_blocks(t->kv, t->seq, 0);
    size_t w = (size_t)(nb > 0 ? nb : 1);
    tier_layer_summary *ls = calloc((size_t)L, sizeof *ls);
    uint32_t *idx = malloc(sizeof(uint32_t) * 4 * w * (size_t)L);
    float *mass = malloc(sizeof(float) * w * (size_t)L);
    if (!ls || !idx || !mass) {
        free(ls), free(idx), free(mass);
        return;
    }
    for (int l = 0; l < L; l++) {
        int n = 0;
        const summary_block_t *sb = summary_layer_blocks(sm, l, &n);
        uint32_t *act = idx + (size_t)l * 4 * w, *rec = act + w, *drp = rec + w, *rev = drp + w;
        float *pm = mass + (size_t)l * w;
        uint32_t na = 0, nr = 0, nd = 0, nv = 0;
        for (int b = 0; b < nb; b++) {
            uint8_t *f = tl_flag_at(t, l, b);
            kv_block_state_t s = kvcache_block_state(t->kv, t->seq, l, b);
            if (b < n && sb[b].win_count > 0) {
                act[na] = (uint32_t)b;
                pm[na++] = sb[b].peak_mass;
            }
            if (!f || (*f & F_PUTTING))
                continue; /* the service has not heard of it yet */
            if ((*f & F_RECALLED) && s == KV_BLOCK_HOT && (*f & F_SVC_COPY))
                rec[nr++] = (uint32_t)b;
            if (*f & F_LOST)
                drp[nd++] = (uint32_t)b;
            if ((*f & (F_REVIVED | F_RECALLED)) && s == KV_BLOCK_OUT)
                rev[nv++] = (uint32_t)b;
        }
        ls[l] = (tier_layer_summary){.layer = (uint32_t)l,
                                     .active = act,
                                     .peak_mass = pm,
                                     .n_active = na,
                                     .recalled = rec,
                                     .n_recalled = nr,
                                     .dropped = drp,
                                     .n_dropped = nd,
                                     .revived = rev,
                                     .n_revived = nv};
    }
    tier_summary s = {(uint64_t)(step < 0 ? 0 : step), (uint32_t)nb, ls, (uint32_t)L};
    char err[200];
    if (tiersess_summary_send(t->sess, &s, err, sizeof err) == TIER_OK) {
        /* Sent (the result comes back later, tl_take_summaries): what it
         * reports is the service's now. Recalled blocks count as HOT there,
         * so the service may free its copy; should the summary fail, the
         * next demotion puts them again (same bytes). */
        for (int l = 0; l < L; l++) {
            uint8_t *fl = t->L[l].flags;
            for (uint32_t j = 0; j < ls[l].n_recalled; j++)
                fl[ls[l].recalled[j]] &= (uint8_t) ~(F_RECALLED | F_SVC_COPY | F_REVIVED);
            for (uint32_t j = 0; j < ls[l].n_dropped; j++)
                fl[ls[l].dropped[j]] &= (uint8_t)~F_LOST;
            for (uint32_t j = 0; j < ls[l].n_revived; j++)
                fl[ls[l].revived[j]] &= (uint8_t) ~(F_REVIVED | F_RECALLED);
        }
        if (t->o.adaptive_budget)
            adapt_budgets(t, sm);
        summary_reset_window(sm);
    } else {
        tl_svc_failed(t, "Summarize", err);
    }
    free(ls), free(idx), free(mass);
    demote_expired(t, step);
}
