/* tiering.c - worker side of the tiering loop (see tiering.h). */
#include "tiering.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define F_SVC_COPY 1u /* the service holds these exact bytes */
#define F_RECALLED 2u /* fetched back during the current window */
#define F_LOST 4u     /* the service no longer had it: dropped here */
#define F_REVIVED 8u  /* recalled and demoted again within the current window */

struct tiering {
    tiering_opts_t o;
    engine_t *e;
    kvcache_t *kv;
    int seq;
    int n_layers;
    int started;
    int opened;      /* the service knows the sequence */
    int need_reopen; /* after a failure: re-open before the next call */
    double next_try; /* monotonic seconds; no service call before */
    double backoff;
    uint8_t **flags; /* [n_layers][cap] F_* bits */
    int *cap;
    int *cand;       /* [max_recall] candidate scratch */
    int last_step_pos;
    tiering_stats_t st;
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
    t->cand = malloc((size_t)t->o.max_recall * sizeof *t->cand);
    if (!t->cand) {
        free(t);
        snprintf(err, errlen, "tiering: out of memory");
        return NULL;
    }
    t->seq = -1;
    return t;
}

void tiering_free(tiering_t *t) {
    if (!t)
        return;
    for (int l = 0; l < t->n_layers; l++)
        free(t->flags[l]);
    free(t->flags);
    free(t->cap);
    free(t->cand);
    free(t->lat);
    free(t);
}

/* ---------------------------------------------------------------- helpers */

static uint8_t *flag_at(tiering_t *t, int layer, int block) {
    if (block >= t->cap[layer]) {
        int nc = t->cap[layer] ? t->cap[layer] : 64;
        while (nc <= block)
            nc *= 2;
        uint8_t *p = realloc(t->flags[layer], (size_t)nc);
        if (!p)
            return NULL;
        memset(p + t->cap[layer], 0, (size_t)(nc - t->cap[layer]));
        t->flags[layer] = p;
        t->cap[layer] = nc;
    }
    return &t->flags[layer][block];
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
    p.n_layer_budgets = (uint32_t)(m->cfg.n_layers < POLICY_MAX_LAYERS ? m->cfg.n_layers
                                                                       : POLICY_MAX_LAYERS);
    for (uint32_t l = 0; l < p.n_layer_budgets; l++)
        p.layer_hot_budget[l] = (uint32_t)t->o.hot_blocks;
    info.params = &p;
    char err[256];
    tier_status s = tierlink_open(t->o.link, t->o.seq_id, &info, err, sizeof err);
    if (s != TIER_OK) {
        svc_failed(t, "OpenSequence", err);
        return -1;
    }
    t->opened = 1;
    t->need_reopen = 0;
    t->backoff = 0;
    return 0;
}

/* 1 when the service may be called now (re-opening the sequence first after
 * a failure), 0 while backing off or when it is still down. */
static int svc_ready(tiering_t *t) {
    if (t->need_reopen || !t->opened) {
        if (now_s() < t->next_try)
            return 0;
        return open_seq(t) == 0;
    }
    return 1;
}

static int is_protected(const tiering_t *t, int n_blocks, int block) {
    return block < t->o.sink_blocks || block >= n_blocks - t->o.recent_blocks;
}

/* Takes a hot block out and places it on the service. Returns 0 when it
 * left the hot pool, -1 when it stays hot (service down or refusing). */
static int demote(tiering_t *t, int layer, int block) {
    uint8_t *f = flag_at(t, layer, block);
    if (!f || kvcache_block_state(t->kv, t->seq, layer, block) != KV_BLOCK_HOT)
        return -1;
    if (!(*f & F_SVC_COPY) && !svc_ready(t))
        return -1;
    void *bytes = NULL;
    size_t len = 0;
    if (kvcache_block_take(t->kv, t->seq, layer, block, &bytes, &len) != KV_OK)
        return -1;
    if (*f & F_SVC_COPY) { /* recalled, unchanged, the service still has it */
        free(bytes);
        if (*f & F_RECALLED) /* a revival the service has not heard of yet */
            *f = (uint8_t)((*f & ~F_RECALLED) | F_REVIVED);
        return 0;
    }
    tierlink_block b = {(uint32_t)layer, (uint32_t)block, bytes, len,
                        (uint32_t)kvcache_block_tokens(t->kv, t->seq, layer, block)};
    char err[256];
    tier_status s = tierlink_put(t->o.link, t->o.seq_id, &b, 1, NULL, err, sizeof err);
    if (s != TIER_OK) {
        /* Never drop what could not be placed: back into the slot just freed. */
        kvcache_block_put(t->kv, t->seq, layer, block, bytes, len);
        free(bytes);
        svc_failed(t, "PutBlocks", err);
        return -1;
    }
    free(bytes);
    *f |= F_SVC_COPY;
    t->st.demoted++;
    t->st.demoted_host++;
    t->st.put_bytes += len;
    return 0;
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

static void drop_local(tiering_t *t, int layer, int block, int lost) {
    uint8_t *f = flag_at(t, layer, block);
    if (kvcache_block_state(t->kv, t->seq, layer, block) == KV_BLOCK_DROPPED)
        return;
    kvcache_block_drop(t->kv, t->seq, layer, block);
    t->st.dropped++;
    if (f)
        *f = lost ? F_LOST : 0;
    if (lost)
        t->st.lost++;
}

/* Fetches an OUT block back into the hot pool. Returns 1 recalled, 0 not. */
static int recall(tiering_t *t, int layer, int block) {
    if (kvcache_block_state(t->kv, t->seq, layer, block) != KV_BLOCK_OUT || !svc_ready(t))
        return 0;
    uint8_t *f = flag_at(t, layer, block);
    if (!f)
        return 0;
    void *data = NULL;
    size_t len = 0;
    char err[256];
    double t0 = now_s();
    tier_status s =
        tierlink_fetch(t->o.link, t->o.seq_id, (uint32_t)layer, (uint32_t)block, &data, &len,
                       err, sizeof err);
    if (s == TIER_ENOTFOUND || s == TIER_EDATALOSS) {
        drop_local(t, layer, block, 1); /* gone (or corrupt): never attend garbage */
        return 0;
    }
    if (s != TIER_OK) {
        svc_failed(t, "FetchBlocks", err);
        return 0;
    }
    int r = kvcache_block_put(t->kv, t->seq, layer, block, data, len);
    free(data);
    if (r != KV_OK) {
        snprintf(t->st.degraded_reason, sizeof t->st.degraded_reason,
                 "put-back of layer %d block %d failed: %s", layer, block, kvcache_strerror(r));
        return 0;
    }
    lat_add(t, (now_s() - t0) * 1e3);
    *f |= F_RECALLED;
    t->st.recalled++;
    t->st.recall_bytes += len;
    return 1;
}

/* Holds `layer` to the hot budget, demoting the coldest unprotected blocks
 * among [0, limit) (blocks at or past `limit` are in use by this chunk). */
static void enforce_budget(tiering_t *t, int layer, int limit) {
    int nb = kvcache_seq_blocks(t->kv, t->seq, layer);
    summary_t *sm = kvcache_summary(t->kv, t->seq);
    int nsb = 0;
    const summary_block_t *sb = sm ? summary_layer_blocks(sm, layer, &nsb) : NULL;
    if (limit > nb)
        limit = nb;
    while (kvcache_hot_blocks(t->kv, t->seq, layer) > t->o.hot_blocks) {
        int victim = -1;
        int32_t best_la = 0;
        float best_cum = 0;
        for (int b = 0; b < limit; b++) {
            if (is_protected(t, nb, b) ||
                kvcache_block_state(t->kv, t->seq, layer, b) != KV_BLOCK_HOT)
                continue;
            int32_t la = (sb && b < nsb) ? sb[b].last_active : b * KV_BLOCK_TOKENS;
            float cum = (sb && b < nsb) ? sb[b].cum_mass : 0.0f;
            if (victim < 0 || la < best_la || (la == best_la && cum < best_cum)) {
                victim = b;
                best_la = la;
                best_cum = cum;
            }
        }
        if (victim < 0 || demote(t, layer, victim) != 0)
            return; /* nothing movable, or the service is down: stay over budget */
    }
}

/* ---------------------------------------------------------------- summary */

static void send_summary(tiering_t *t, int step) {
    summary_t *sm = kvcache_summary(t->kv, t->seq);
    if (!sm || !svc_ready(t))
        return;
    int L = t->n_layers;
    int nb = kvcache_seq_blocks(t->kv, t->seq, 0);
    tier_layer_summary *ls = calloc((size_t)L, sizeof *ls);
    uint32_t *idx = malloc(sizeof(uint32_t) * 4 * (size_t)(nb > 0 ? nb : 1) * (size_t)L);
    float *mass = malloc(sizeof(float) * (size_t)(nb > 0 ? nb : 1) * (size_t)L);
    if (!ls || !idx || !mass) {
        free(ls), free(idx), free(mass);
        return;
    }
    for (int l = 0; l < L; l++) {
        int n = 0;
        const summary_block_t *sb = summary_layer_blocks(sm, l, &n);
        uint32_t *act = idx + (size_t)l * 4 * (size_t)nb, *rec = act + nb, *drp = rec + nb, *rev = drp + nb;
        float *pm = mass + (size_t)l * (size_t)nb;
        uint32_t na = 0, nr = 0, nd = 0, nv = 0;
        for (int b = 0; b < nb; b++) {
            uint8_t *f = flag_at(t, l, b);
            if (b < n && sb[b].win_count > 0) {
                act[na] = (uint32_t)b;
                pm[na++] = sb[b].peak_mass;
            }
            if (f && (*f & F_RECALLED) &&
                kvcache_block_state(t->kv, t->seq, l, b) == KV_BLOCK_HOT)
                rec[nr++] = (uint32_t)b;
            if (f && (*f & F_LOST))
                drp[nd++] = (uint32_t)b;
            if (f && (*f & F_REVIVED) &&
                kvcache_block_state(t->kv, t->seq, l, b) == KV_BLOCK_OUT)
                rev[nv++] = (uint32_t)b;
        }
        ls[l].layer = (uint32_t)l;
        ls[l].active = act;
        ls[l].peak_mass = pm;
        ls[l].n_active = na;
        ls[l].recalled = rec;
        ls[l].n_recalled = nr;
        ls[l].dropped = drp;
        ls[l].n_dropped = nd;
        ls[l].revived = rev;
        ls[l].n_revived = nv;
    }
    tier_summary s = {(uint64_t)(step < 0 ? 0 : step), (uint32_t)nb, ls, (uint32_t)L};
    tier_decision *d = NULL;
    size_t n = 0;
    char err[200];
    tier_status st = tierlink_summarize(t->o.link, t->o.seq_id, &s, &d, &n, err, sizeof err);
    if (st == TIER_OK) {
        t->st.summaries++;
        /* The service now counts recalled blocks as HOT: it may free its copy. */
        for (int l = 0; l < L; l++) {
            for (uint32_t j = 0; j < ls[l].n_recalled; j++)
                *flag_at(t, l, (int)ls[l].recalled[j]) &= (uint8_t)~(F_RECALLED | F_SVC_COPY | F_REVIVED);
            for (uint32_t j = 0; j < ls[l].n_dropped; j++)
                *flag_at(t, l, (int)ls[l].dropped[j]) &= (uint8_t)~F_LOST;
            for (uint32_t j = 0; j < ls[l].n_revived; j++)
                *flag_at(t, l, (int)ls[l].revived[j]) &= (uint8_t)~F_REVIVED;
        }
        summary_reset_window(sm);
    } else if (st == TIER_EIO) {
        svc_failed(t, "Summarize", err);
    } else {
        snprintf(t->st.degraded_reason, sizeof t->st.degraded_reason, "Summarize: %s", err);
    }
    free(ls), free(idx), free(mass);
    for (size_t i = 0; i < n; i++) {
        int l = (int)d[i].layer, b = (int)d[i].block;
        if (l < 0 || l >= L || b < 0 || b >= nb)
            continue;
        switch (d[i].kind) {
        case POLICY_DEMOTE_HOST:
            if (!is_protected(t, nb, b))
                demote(t, l, b);
            break;
        case POLICY_DEMOTE_SSD:
            t->st.demoted_ssd++;
            break;
        case POLICY_DROP:
            drop_local(t, l, b, 0);
            break;
        case POLICY_PREFETCH:
            if (kvcache_hot_blocks(t->kv, t->seq, l) < t->o.hot_blocks)
                recall(t, l, b);
            break;
        default:
            break;
        }
    }
    free(d);
}

/* ---------------------------------------------------------------- hooks */

static int start(tiering_t *t, engine_t *e, int seq) {
    if (t->started)
        return 0;
    t->e = e;
    t->kv = engine_kvcache(e);
    t->seq = seq;
    t->n_layers = engine_model(e)->cfg.n_layers;
    t->flags = calloc((size_t)t->n_layers, sizeof *t->flags);
    t->cap = calloc((size_t)t->n_layers, sizeof *t->cap);
    if (!t->flags || !t->cap)
        return -1;
    if (t->o.mode == TIERING_PREFETCH)
        kvcache_seq_set_revival(t->kv, seq, t->o.tau);
    t->started = 1;
    open_seq(t); /* a failure is degraded mode, not an error */
    return 0;
}

static void recall_list(tiering_t *t, int layer, const int *blocks, int n) {
    for (int i = 0; i < n && i < t->o.max_recall; i++)
        recall(t, layer, blocks[i]);
}

static int hook_before_attention(void *ud, engine_t *e, int seq, int layer, int pos0, int n,
                                 const float *q) {
    tiering_t *t = ud;
    if (start(t, e, seq) != 0)
        return -1;
    const qwen3_model_t *m = engine_model(e);
    int width = m->cfg.n_heads * m->cfg.head_dim;
    if (n > 1) /* prefill chunk: make room among the blocks before it */
        enforce_budget(t, layer, pos0 / KV_BLOCK_TOKENS);
    /* The layer below has attended: what it recalled leaves again now, so at
     * most one layer at a time holds recalled blocks beyond its budget. */
    if (layer > 0)
        enforce_budget(t, layer - 1, n > 1 ? pos0 / KV_BLOCK_TOKENS : INT32_MAX);
    /* Prefill is not on the per-token hot path: both modes check every row
     * exactly. In decode, prefetch mode uses what the last attention found. */
    if (t->o.mode == TIERING_EXACT || n > 1) {
        for (int r = 0; r < n; r++) {
            int c = kvcache_revival_candidates(t->kv, seq, layer, q + (size_t)r * width, pos0 + r,
                                               t->o.tau, t->cand, t->o.max_recall, NULL,
                                               engine_pool(e));
            if (c > 0)
                recall_list(t, layer, t->cand, c);
        }
    } else if (n == 1) {
        int c = kvcache_revival_last(t->kv, seq, layer, t->cand, t->o.max_recall);
        if (c > 0)
            recall_list(t, layer, t->cand, c);
    }
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
    send_summary(t, n_prompt - 1);
    return t->inner.after_prefill ? t->inner.after_prefill(t->inner.ud, e, seq, n_prompt) : 0;
}

static int hook_after_step(void *ud, engine_t *e, int seq, int step, int pos, int token) {
    tiering_t *t = ud;
    (void)token;
    if (start(t, e, seq) != 0)
        return -1;
    t->last_step_pos = pos;
    for (int l = 0; l < t->n_layers; l++)
        enforce_budget(t, l, INT32_MAX);
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

void tiering_install(tiering_t *t, engine_gen_opts_t *g) {
    t->inner = g->hooks;
    g->hooks.ud = t;
    g->hooks.before_attention = hook_before_attention;
    g->hooks.after_prefill = hook_after_prefill;
    g->hooks.after_step = hook_after_step;
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

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void tiering_finish(tiering_t *t, int retain, tiering_stats_t *st) {
    if (!t->finished && t->opened && !t->need_reopen) {
        char err[256];
        tier_status s = tierlink_close(t->o.link, t->o.seq_id, retain, err, sizeof err);
        if (s == TIER_EIO)
            svc_failed(t, "CloseSequence", err);
    }
    t->finished = 1;
    if (t->nlat) {
        qsort(t->lat, t->nlat, sizeof *t->lat, cmp_double);
        t->st.recall_ms_p50 = t->lat[(t->nlat - 1) / 2];
        t->st.recall_ms_p99 = t->lat[(size_t)((double)(t->nlat - 1) * 0.99)];
    }
    if (st)
        *st = t->st;
}
