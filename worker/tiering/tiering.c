/* tiering.c - worker side of the tiering loop (see tiering.h). */
#include "tiering.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define F_SVC_COPY 1u   /* the service holds these exact bytes */
#define F_RECALLED 2u   /* read back during the current window (HOT: promoted) */
#define F_LOST 4u       /* the service no longer had it: dropped here */
#define F_REVIVED 8u    /* read back and out again within the current window */
#define F_PUTTING 16u   /* put in flight: stage[] points at the session's copy */
#define F_CAND 32u      /* candidate of the current layer pass (scratch) */
#define F_OUTRANKED 64u /* lent, ranked out of the budget pass (scratch) */

/* Per layer: block flags and the staging area (indexed by block). */
typedef struct {
    uint8_t *flags; /* [cap] F_* */
    void **stage;   /* [cap] bytes of an OUT block held by the worker, or NULL */
    int32_t *seen;  /* [cap] last step the staged block was a candidate */
    int cap;
    int n_staged;
} tl_layer;

struct tiering {
    tiering_opts_t o;
    policy_params prot; /* sink / recent protection, for policy_is_protected */
    engine_t *e;
    kvcache_t *kv;
    int seq;
    int n_layers;
    int started;
    tiersess_t *sess; /* NULL until opened, and after a failure until re-opened */
    int need_reopen;
    double next_try; /* monotonic seconds; no service call before */
    double backoff;
    tl_layer *L;    /* [n_layers] */
    int *cand;      /* [max_recall] candidate scratch */
    uint32_t *miss; /* [miss_cap] */
    int miss_cap;
    tiersess_block *puts; /* one budget pass's demotions */
    size_t n_puts, cap_puts;
    int cur_step; /* position of the current decode row (staging clock) */
    size_t block_bytes, staged_bytes;
    tiering_stats_t st;
    tiersess_counts done_counts; /* of sessions already closed */
    double *lat;
    size_t nlat, caplat;
    int finished;
    engine_hooks_t inner; /* the caller's hooks, chained after ours */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void tiering_opts_defaults(tiering_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->mode = TIERING_EXACT;
    o->tau = KV_REVIVAL_TAU;
    o->hot_blocks = 0;
    o->sink_blocks = 1;
    o->recent_blocks = 4;
    o->window = SUMMARY_DEFAULT_WINDOW;
    o->max_recall = 64;
    o->stage_blocks = -1;
    o->linger = 8;
    policy_params_init(&o->params);
}

tiering_t *tiering_new(const tiering_opts_t *o, char *err, size_t errlen) {
    if (!o->link || o->seq_id == 0) {
        snprintf(err, errlen, "tiering: a tier link and a sequence id != 0 are required");
        return NULL;
    }
    if (o->hot_blocks < o->sink_blocks + o->recent_blocks + 1) {
        snprintf(err, errlen,
                 "tiering: hot budget of %d blocks per layer is below sink %d + recent %d + 1",
                 o->hot_blocks, o->sink_blocks, o->recent_blocks);
        return NULL;
    }
    if (o->mode != TIERING_EXACT && o->mode != TIERING_PREFETCH) {
        snprintf(err, errlen, "tiering: unknown recall mode %d", (int)o->mode);
        return NULL;
    }
    tiering_t *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "tiering: out of memory");
        return NULL;
    }
    t->o = *o;
    if (t->o.tau <= 0)
        t->o.tau = KV_REVIVAL_TAU;
    if (t->o.window <= 0)
        t->o.window = SUMMARY_DEFAULT_WINDOW;
    if (t->o.max_recall <= 0)
        t->o.max_recall = 64;
    if (t->o.stage_blocks < 0)
        t->o.stage_blocks = t->o.hot_blocks;
    if (t->o.linger < 0)
        t->o.linger = 0;
    t->cand = malloc((size_t)t->o.max_recall * sizeof *t->cand);
    if (!t->cand) {
        free(t);
        snprintf(err, errlen, "tiering: out of memory");
        return NULL;
    }
    t->prot.sink_blocks = (uint32_t)t->o.sink_blocks;
    t->prot.recent_blocks = (uint32_t)t->o.recent_blocks;
    t->seq = -1;
    return t;
}

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

static uint8_t *flag_at(tiering_t *t, int layer, int block) {
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
static void stage_free(tiering_t *t, int layer, int block) {
    tl_layer *y = &t->L[layer];
    if (block >= y->cap || !y->stage[block] || (y->flags[block] & F_PUTTING))
        return;
    kvcache_block_unlend(t->kv, t->seq, layer, block);
    free(y->stage[block]);
    stage_set(t, layer, block, NULL);
}

static void count_session(tiering_t *t, const tiersess_counts *c) {
    t->done_counts.fetch_calls += c->fetch_calls;
    t->done_counts.put_calls += c->put_calls;
    t->done_counts.summary_msgs += c->summary_msgs;
    t->done_counts.summarize_streams += c->summarize_streams;
    t->done_counts.other_calls += c->other_calls;
}

/* The service failed in a way that says nothing about the data: run on with
 * what is hot, remember why, and wait before the next call. */
static void svc_failed(tiering_t *t, const char *what, const char *msg) {
    t->st.degraded = 1;
    snprintf(t->st.degraded_reason, sizeof t->st.degraded_reason, "%s: %s", what, msg);
    t->backoff = t->backoff <= 0 ? 0.05 : t->backoff * 2;
    if (t->backoff > 2.0)
        t->backoff = 2.0;
    t->next_try = now_s() + t->backoff;
    t->need_reopen = 1;
}

static void drop_local(tiering_t *t, int layer, int block, int lost) {
    uint8_t *f = flag_at(t, layer, block);
    if (kvcache_block_state(t->kv, t->seq, layer, block) == KV_BLOCK_DROPPED)
        return;
    stage_free(t, layer, block);
    kvcache_block_drop(t->kv, t->seq, layer, block);
    t->st.dropped++;
    if (f)
        *f = (uint8_t)((*f & F_PUTTING) | (lost ? F_LOST : 0));
    if (lost)
        t->st.lost++;
}

/* ---------------------------------------------------------------- acks */

/* Applies the outcome of finished puts (wait: of every queued put). */
static void take_acks(tiering_t *t, int wait) {
    if (!t->sess)
        return;
    tiersess_ack a[64];
    size_t n;
    int w = wait;
    while ((n = tiersess_acks(t->sess, a, 64, w)) > 0) {
        w = 0;
        for (size_t i = 0; i < n; i++) {
            int l = (int)a[i].layer, b = (int)a[i].block;
            uint8_t *f = flag_at(t, l, b);
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
                svc_failed(t, "PutBlocks", a[i].err); /* back off: no retry every step */
            }
            free(a[i].data);
        }
    }
}

/* ---------------------------------------------------------------- session */

static void close_session(tiering_t *t) {
    if (!t->sess)
        return;
    take_acks(t, 1);
    tiersess_counts c;
    tiersess_counts_get(t->sess, &c);
    count_session(t, &c);
    tiersess_free(t->sess);
    t->sess = NULL;
}

static int open_seq(tiering_t *t) {
    const qwen3_model_t *m = engine_model(t->e);
    tier_seq_info info;
    policy_params p = t->o.params;
    memset(&info, 0, sizeof info);
    info.n_layers = (uint32_t)m->cfg.n_layers;
    info.n_kv_heads = (uint32_t)m->cfg.n_kv_heads;
    info.head_dim = (uint32_t)m->cfg.head_dim;
    info.block_tokens = KV_BLOCK_TOKENS;
    info.block_bytes = (uint32_t)kvcache_block_bytes(t->kv);
    p.sink_blocks = (uint32_t)t->o.sink_blocks;
    p.recent_blocks = (uint32_t)t->o.recent_blocks;
    p.window_steps = (uint32_t)t->o.window;
    p.n_layer_budgets =
        (uint32_t)(m->cfg.n_layers < POLICY_MAX_LAYERS ? m->cfg.n_layers : POLICY_MAX_LAYERS);
    for (uint32_t l = 0; l < p.n_layer_budgets; l++)
        p.layer_hot_budget[l] = (uint32_t)t->o.hot_blocks;
    info.params = &p;
    char err[256];
    close_session(t);
    tier_status s = tiersess_open(t->o.link, t->o.seq_id, &info, &t->sess, err, sizeof err);
    if (s != TIER_OK) {
        t->done_counts.other_calls++;
        svc_failed(t, "OpenSequence", err);
        return -1;
    }
    t->need_reopen = 0;
    t->backoff = 0;
    return 0;
}

/* 1 when the service may be called now (re-opening the sequence first after
 * a failure), 0 while backing off or when it is still down. */
static int svc_ready(tiering_t *t) {
    if (t->need_reopen || !t->sess) {
        if (now_s() < t->next_try)
            return 0;
        return open_seq(t) == 0;
    }
    return 1;
}

static int is_protected(const tiering_t *t, int n_blocks, int block) {
    return policy_is_protected(&t->prot, (uint32_t)n_blocks, (uint32_t)block);
}

/* ---------------------------------------------------------------- demotion */

/* Takes a hot block out. Its bytes: dropped when the service has them (kept
 * staged), else queued for the budget pass's put batch (flush_puts). Returns
 * 0 when it left the hot pool, -1 when it stays hot. */
static int demote(tiering_t *t, int layer, int block) {
    uint8_t *f = flag_at(t, layer, block);
    if (!f || kvcache_block_state(t->kv, t->seq, layer, block) != KV_BLOCK_HOT)
        return -1;
    int have = (*f & (F_SVC_COPY | F_PUTTING)) != 0;
    if (!have && !svc_ready(t))
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
static void flush_puts(tiering_t *t) {
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
        svc_failed(t, "PutBlocks", t->sess ? err : "no session");
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
    stage_free(t, layer, block); /* no-op while its put is in flight */
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
                stage_free(t, layer, b);
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
        stage_free(t, layer, old);
        idle--;
    }
}

/* Holds `layer` to the hot budget over blocks [0, limit): one ranking over
 * the HOT blocks and the lent ones (read by this step's attention): the
 * coldest leave until at most hot_blocks remain; lent blocks that stay are
 * promoted into the pool, hot ones that leave are demoted. */
static void enforce_budget(tiering_t *t, int layer, int limit) {
    int nb = kvcache_seq_blocks(t->kv, t->seq, layer);
    summary_t *sm = kvcache_summary(t->kv, t->seq);
    int nsb = 0;
    const summary_block_t *sb = sm ? summary_layer_blocks(sm, layer, &nsb) : NULL;
    if (limit > nb)
        limit = nb;
    if (nb > 0 && layer_grow(&t->L[layer], nb) != 0)
        return;
    int lent = kvcache_lent_blocks(t->kv, t->seq, layer);
    int over = kvcache_hot_blocks(t->kv, t->seq, layer) + lent - t->o.hot_blocks;
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
            if (is_protected(t, nb, b) || (out[b] & F_OUTRANKED) ||
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

typedef struct {
    tiering_t *t;
    int lend; /* 1: the blocks are this pass's candidates; 0: prefetch into the pool */
} fetch_ud;

static void on_fetched(void *ud, uint32_t layer, uint32_t block, tier_status st, void *data,
                       size_t len) {
    fetch_ud *u = ud;
    tiering_t *t = u->t;
    int l = (int)layer, b = (int)block;
    if (st != TIER_OK) { /* gone (or corrupt): never attend garbage */
        drop_local(t, l, b, 1);
        return;
    }
    if (len != t->block_bytes || kvcache_block_state(t->kv, t->seq, l, b) != KV_BLOCK_OUT ||
        !flag_at(t, l, b) || t->L[l].stage[b]) {
        free(data);
        return;
    }
    t->st.fetched++;
    t->st.recall_bytes += len;
    stage_set(t, l, b, data);
    if (u->lend) {
        kvcache_block_lend(t->kv, t->seq, l, b, data, len);
        t->L[l].flags[b] |= F_RECALLED;
        t->st.recalled++;
    } else {
        promote(t, l, b);
    }
}

/* Makes exactly the blocks marked F_CAND in `layer` readable: lends staged
 * ones, fetches the rest in one batch, ends the loans of the others, trims
 * the staging area. Clears the marks. */
static void reconcile(tiering_t *t, int layer) {
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
    for (int b = 0; b < nb && b < y->cap; b++) {
        if (!(y->flags[b] & F_CAND)) {
            if (kvcache_block_lent(t->kv, t->seq, layer, b))
                kvcache_block_unlend(t->kv, t->seq, layer, b);
            continue;
        }
        y->flags[b] &= (uint8_t)~F_CAND;
        if (kvcache_block_state(t->kv, t->seq, layer, b) != KV_BLOCK_OUT)
            continue;
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
    if (nmiss && svc_ready(t)) {
        char err[256];
        fetch_ud u = {t, 1};
        double t0 = now_s();
        tier_status s = tiersess_fetch(t->sess, (uint32_t)layer, t->miss, (size_t)nmiss, on_fetched,
                                       &u, err, sizeof err);
        lat_add(t, (now_s() - t0) * 1e3);
        if (s != TIER_OK)
            svc_failed(t, "FetchBlocks", err);
    }
    size_t res = kvcache_bytes_hot(t->kv) + t->staged_bytes;
    if (res > t->st.resident_peak_bytes)
        t->st.resident_peak_bytes = res;
}

static void mark_cand(tiering_t *t, int layer, const int *blocks, int n) {
    for (int i = 0; i < n && i < t->o.max_recall; i++) {
        uint8_t *f = flag_at(t, layer, blocks[i]);
        if (f)
            *f |= F_CAND;
    }
}

/* ---------------------------------------------------------------- summary */

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
            if (kvcache_hot_blocks(t->kv, t->seq, l) < t->o.hot_blocks &&
                kvcache_block_state(t->kv, t->seq, l, b) == KV_BLOCK_OUT && svc_ready(t)) {
                tl_layer *y = &t->L[l];
                if (b < y->cap && y->stage[b]) {
                    promote(t, l, b);
                } else {
                    char err[256];
                    uint32_t blk = (uint32_t)b;
                    fetch_ud u = {t, 0};
                    if (tiersess_fetch(t->sess, (uint32_t)l, &blk, 1, on_fetched, &u, err,
                                       sizeof err) != TIER_OK)
                        svc_failed(t, "FetchBlocks", err);
                }
            }
            break;
        default:
            break;
        }
    }
    flush_puts(t);
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
            if (!is_protected(t, nb, b) &&
                kvcache_block_state(t->kv, t->seq, l, b) == KV_BLOCK_HOT &&
                policy_hot_expired(&t->o.params, step, &k))
                demote(t, l, b);
        }
    }
    flush_puts(t);
}

static void send_summary(tiering_t *t, int step) {
    summary_t *sm = kvcache_summary(t->kv, t->seq);
    if (!sm || !svc_ready(t))
        return;
    take_acks(t, 0);
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
            uint8_t *f = flag_at(t, l, b);
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
    tier_decision *d = NULL;
    size_t n = 0;
    char err[200];
    tier_status st = tiersess_summarize(t->sess, &s, &d, &n, err, sizeof err);
    if (st == TIER_OK) {
        t->st.summaries++;
        /* The service now counts recalled blocks as HOT: it may free its copy. */
        for (int l = 0; l < L; l++) {
            uint8_t *fl = t->L[l].flags;
            for (uint32_t j = 0; j < ls[l].n_recalled; j++)
                fl[ls[l].recalled[j]] &= (uint8_t) ~(F_RECALLED | F_SVC_COPY | F_REVIVED);
            for (uint32_t j = 0; j < ls[l].n_dropped; j++)
                fl[ls[l].dropped[j]] &= (uint8_t)~F_LOST;
            for (uint32_t j = 0; j < ls[l].n_revived; j++)
                fl[ls[l].revived[j]] &= (uint8_t) ~(F_REVIVED | F_RECALLED);
        }
        summary_reset_window(sm);
    } else if (st == TIER_EIO) {
        svc_failed(t, "Summarize", err);
    } else {
        snprintf(t->st.degraded_reason, sizeof t->st.degraded_reason, "Summarize: %s", err);
    }
    free(ls), free(idx), free(mass);
    apply_decisions(t, d, n, nb);
    free(d);
    demote_expired(t, step);
}

/* ---------------------------------------------------------------- hooks */

static int start(tiering_t *t, engine_t *e, int seq) {
    if (t->started)
        return 0;
    t->e = e;
    t->kv = engine_kvcache(e);
    t->seq = seq;
    t->n_layers = engine_model(e)->cfg.n_layers;
    t->block_bytes = kvcache_block_bytes(t->kv);
    t->L = calloc((size_t)t->n_layers, sizeof *t->L);
    if (!t->L)
        return -1;
    if (t->o.mode == TIERING_PREFETCH)
        kvcache_seq_set_revival(t->kv, seq, t->o.tau);
    t->started = 1;
    open_seq(t); /* a failure is degraded mode, not an error */
    return 0;
}

static int hook_before_attention(void *ud, engine_t *e, int seq, int layer, int pos0, int n,
                                 const float *q) {
    tiering_t *t = ud;
    if (start(t, e, seq) != 0)
        return -1;
    const qwen3_model_t *m = engine_model(e);
    int width = m->cfg.n_heads * m->cfg.head_dim;
    t->cur_step = pos0 + n - 1;
    if (layer == 0)
        take_acks(t, 0);
    if (n > 1) /* prefill chunk: make room among the blocks before it */
        enforce_budget(t, layer, pos0 / KV_BLOCK_TOKENS);
    /* The layer below has attended: hold it to its budget now, so at most
     * one layer at a time reads blocks beyond its budget. */
    if (layer > 0)
        enforce_budget(t, layer - 1, n > 1 ? pos0 / KV_BLOCK_TOKENS : INT32_MAX);
    flush_puts(t);
    /* Prefill is not on the per-token hot path: both modes check every row
     * exactly. In decode, prefetch mode uses what the last attention found. */
    if (t->o.mode == TIERING_EXACT || n > 1) {
        for (int r = 0; r < n; r++) {
            int c = kvcache_revival_candidates(t->kv, seq, layer, q + (size_t)r * width, pos0 + r,
                                               t->o.tau, t->cand, t->o.max_recall, NULL,
                                               engine_pool(e));
            if (c > 0)
                mark_cand(t, layer, t->cand, c);
        }
    } else {
        int c = kvcache_revival_last(t->kv, seq, layer, t->cand, t->o.max_recall);
        if (c > 0)
            mark_cand(t, layer, t->cand, c);
    }
    reconcile(t, layer);
    return t->inner.before_attention
               ? t->inner.before_attention(t->inner.ud, e, seq, layer, pos0, n, q)
               : 0;
}

static int hook_after_prefill(void *ud, engine_t *e, int seq, int n_prompt) {
    tiering_t *t = ud;
    if (start(t, e, seq) != 0)
        return -1;
    for (int l = 0; l < t->n_layers; l++)
        enforce_budget(t, l, INT32_MAX);
    flush_puts(t);
    send_summary(t, n_prompt - 1);
    return t->inner.after_prefill ? t->inner.after_prefill(t->inner.ud, e, seq, n_prompt) : 0;
}

static int hook_after_step(void *ud, engine_t *e, int seq, int step, int pos, int token) {
    tiering_t *t = ud;
    (void)token;
    if (start(t, e, seq) != 0)
        return -1;
    for (int l = 0; l < t->n_layers; l++)
        enforce_budget(t, l, INT32_MAX);
    flush_puts(t);
    if ((step + 1) % t->o.window == 0)
        send_summary(t, pos);
    return t->inner.after_step ? t->inner.after_step(t->inner.ud, e, seq, step, pos, token) : 0;
}

/* Pass-throughs to the caller's own hooks (one ud per engine_hooks_t). */
static int hook_on_token(void *ud, int token) {
    tiering_t *t = ud;
    return t->inner.on_token ? t->inner.on_token(t->inner.ud, token) : 0;
}

static int hook_on_logits(void *ud, const float *logits, int n_vocab, int sampled) {
    tiering_t *t = ud;
    return t->inner.on_logits(t->inner.ud, logits, n_vocab, sampled);
}

static const char *hook_token_piece(void *ud, int token, size_t *len) {
    tiering_t *t = ud;
    return t->inner.token_piece(t->inner.ud, token, len);
}

static const char *hook_piece_flush(void *ud, size_t *len) {
    tiering_t *t = ud;
    return t->inner.piece_flush(t->inner.ud, len);
}

static void hook_on_text(void *ud, const char *text, size_t len) {
    tiering_t *t = ud;
    t->inner.on_text(t->inner.ud, text, len);
}

static void hook_before_end(void *ud, engine_t *e, int seq);

void tiering_install(tiering_t *t, engine_gen_opts_t *g) {
    t->inner = g->hooks;
    g->hooks.ud = t;
    g->hooks.before_attention = hook_before_attention;
    g->hooks.after_prefill = hook_after_prefill;
    g->hooks.after_step = hook_after_step;
    g->hooks.before_end = hook_before_end;
    g->hooks.on_token = hook_on_token;
    g->hooks.on_logits = t->inner.on_logits ? hook_on_logits : NULL;
    g->hooks.token_piece = t->inner.token_piece ? hook_token_piece : NULL;
    g->hooks.piece_flush = t->inner.piece_flush ? hook_piece_flush : NULL;
    g->hooks.on_text = t->inner.on_text ? hook_on_text : NULL;
    g->policy.kind = LP_FULL; /* the pool is unbounded: this driver holds the budget */
    g->stats = 1;
    g->window = t->o.window;
    g->active_top_p = (float)t->o.params.top_p;
    g->no_window_reset = 1;
}

/* ---------------------------------------------------------------- finish */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Ends every loan and frees the staging area (the cache may outlive us). */
static void release_all(tiering_t *t) {
    for (int l = 0; l < t->n_layers; l++) {
        tl_layer *y = &t->L[l];
        for (int b = 0; b < y->cap; b++) {
            if (!y->stage[b])
                continue;
            kvcache_block_unlend(t->kv, t->seq, l, b);
            if (!(y->flags[b] & F_PUTTING))
                free(y->stage[b]);
            y->stage[b] = NULL;
        }
        y->n_staged = 0;
    }
    t->staged_bytes = 0;
}

/* The sequence is still in the cache: settle every put (a refused block
 * goes back into the pool as anywhere else), end the loans, free staging. */
static void hook_before_end(void *ud, engine_t *e, int seq) {
    tiering_t *t = ud;
    if (t->started) {
        flush_puts(t);
        take_acks(t, 1);
        release_all(t);
    }
    if (t->inner.before_end)
        t->inner.before_end(t->inner.ud, e, seq);
}

void tiering_finish(tiering_t *t, int retain, tiering_stats_t *st) {
    /* engine_generate ran hook_before_end: no put is pending, nothing staged */
    if (!t->finished && t->sess) {
        if (!t->need_reopen) {
            char err[256];
            tier_status s = tiersess_close(t->sess, retain, err, sizeof err);
            if (s == TIER_EIO)
                svc_failed(t, "CloseSequence", err);
        }
        close_session(t);
    }
    t->finished = 1;
    if (t->nlat) {
        qsort(t->lat, t->nlat, sizeof *t->lat, cmp_double);
        t->st.recall_ms_p50 = t->lat[(t->nlat - 1) / 2];
        t->st.recall_ms_p99 = t->lat[(size_t)((double)(t->nlat - 1) * 0.99)];
    }
    t->st.fetch_calls = t->done_counts.fetch_calls;
    t->st.put_calls = t->done_counts.put_calls;
    t->st.summary_msgs = t->done_counts.summary_msgs;
    t->st.summarize_streams = t->done_counts.summarize_streams;
    t->st.other_calls = t->done_counts.other_calls;
    if (st)
        *st = t->st;
}

void tiering_free(tiering_t *t) {
    if (!t)
        return;
    if (!t->finished)
        tiering_finish(t, 0, NULL);
    for (int l = 0; t->L && l < t->n_layers; l++) {
        free(t->L[l].flags);
        free(t->L[l].stage);
        free(t->L[l].seen);
    }
    free(t->L);
    free(t->cand);
    free(t->miss);
    free(t->puts);
    free(t->lat);
    free(t);
}
