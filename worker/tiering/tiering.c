/* tiering.c - worker side of the tiering loop (see tiering.h). */
#include "tiering.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tiering_internal.h"

double tl_now_s(void) {
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
    o->speculate = 0; /* both off: on a 2-core VM they cost more than they hide */
    o->overlap = 0;
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
    t->cand_cap = t->o.max_recall;
    t->cand = malloc((size_t)t->cand_cap * sizeof *t->cand);
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

static void count_session(tiering_t *t, const tiersess_counts *c) {
    t->done_counts.fetch_calls += c->fetch_calls;
    t->done_counts.put_calls += c->put_calls;
    t->done_counts.summary_msgs += c->summary_msgs;
    t->done_counts.summarize_streams += c->summarize_streams;
    t->done_counts.other_calls += c->other_calls;
}

/* The service failed in a way that says nothing about the data: run on with
 * what is hot, remember why, and wait before the next call. */
void tl_svc_failed(tiering_t *t, const char *what, const char *msg) {
    t->st.degraded = 1;
    /* bounded pieces: gcc -O3 proves nothing about the lengths otherwise */
    snprintf(t->st.degraded_reason, sizeof t->st.degraded_reason, "%.40s: %.200s", what, msg);
    t->backoff = t->backoff <= 0 ? 0.05 : t->backoff * 2;
    if (t->backoff > 2.0)
        t->backoff = 2.0;
    t->next_try = tl_now_s() + t->backoff;
    t->need_reopen = 1;
}

/* ---------------------------------------------------------------- session */

static void close_session(tiering_t *t) {
    if (!t->sess)
        return;
    tl_take_summaries(t, 1); /* never re-opens: decisions only hint or drop */
    tl_take_acks(t, 1);
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
        tl_svc_failed(t, "OpenSequence", err);
        return -1;
    }
    t->need_reopen = 0;
    t->backoff = 0;
    return 0;
}

/* 1 when the service may be called now (re-opening the sequence first after
 * a failure), 0 while backing off or when it is still down. */
int tl_svc_ready(tiering_t *t) {
    if (t->need_reopen || !t->sess) {
        if (tl_now_s() < t->next_try)
            return 0;
        return open_seq(t) == 0;
    }
    return 1;
}

int tl_is_protected(const tiering_t *t, int n_blocks, int block) {
    return policy_is_protected(&t->prot, (uint32_t)n_blocks, (uint32_t)block);
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
    for (int l = 0; l < t->n_layers; l++)
        t->L[l].budget = t->o.hot_blocks;
    if (t->o.mode == TIERING_PREFETCH)
        kvcache_seq_set_revival(t->kv, seq, t->o.tau);
    kvcache_seq_set_pending(t->kv, seq, tl_on_pending, t);
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
    if (layer == 0) {
        tl_take_acks(t, 0);
        tl_take_summaries(t, 0);
        if (n == 1 && t->o.mode == TIERING_EXACT && t->o.speculate)
            tl_spec_start(t);
    }
    if (n > 1) /* prefill chunk: make room among the blocks before it */
        tl_enforce_budget(t, layer, pos0 / KV_BLOCK_TOKENS);
    /* The layer below has attended: hold it to its budget now, so at most
     * one layer at a time reads blocks beyond its budget. */
    if (layer > 0)
        tl_enforce_budget(t, layer - 1, n > 1 ? pos0 / KV_BLOCK_TOKENS : INT32_MAX);
    tl_flush_puts(t);
    /* Prefill is not on the per-token hot path: both modes check every row
     * exactly. In decode, prefetch mode uses what the last attention found. */
    if (t->o.mode == TIERING_EXACT || n > 1) {
        /* Exact: every candidate is read, however many (a cap here would leave
         * out blocks the bound could not exclude: not exact any more). */
        int nbl = kvcache_seq_blocks(t->kv, seq, layer);
        if (nbl > t->cand_cap) {
            int *p = realloc(t->cand, (size_t)nbl * sizeof *p);
            if (!p)
                return -1;
            t->cand = p;
            t->cand_cap = nbl;
        }
        for (int r = 0; r < n; r++) {
            int c =
                kvcache_revival_candidates(t->kv, seq, layer, q + (size_t)r * width, pos0 + r,
                                           t->o.tau, t->cand, t->cand_cap, NULL, engine_pool(e));
            if (c > 0)
                tl_mark_cand(t, layer, t->cand, c < t->cand_cap ? c : t->cand_cap);
        }
    } else {
        int c = kvcache_revival_last(t->kv, seq, layer, t->cand, t->o.max_recall);
        if (c > 0)
            tl_mark_cand(t, layer, t->cand, c < t->o.max_recall ? c : t->o.max_recall);
    }
    if (t->fx_on) /* this layer's speculative blocks, before its misses are fetched */
        tl_collect(t, layer, 1);
    tl_reconcile(t, layer, n == 1 && t->o.overlap);
    return t->inner.before_attention
               ? t->inner.before_attention(t->inner.ud, e, seq, layer, pos0, n, q)
               : 0;
}

static int hook_after_prefill(void *ud, engine_t *e, int seq, int n_prompt) {
    tiering_t *t = ud;
    if (start(t, e, seq) != 0)
        return -1;
    for (int l = 0; l < t->n_layers; l++)
        tl_enforce_budget(t, l, INT32_MAX);
    tl_flush_puts(t);
    tl_send_summary(t, n_prompt - 1);
    return t->inner.after_prefill ? t->inner.after_prefill(t->inner.ud, e, seq, n_prompt) : 0;
}

static int hook_after_step(void *ud, engine_t *e, int seq, int step, int pos, int token) {
    tiering_t *t = ud;
    (void)token;
    if (start(t, e, seq) != 0)
        return -1;
    if (t->fx_on)
        tl_collect(t, -1, 1);
    for (int l = 0; l < t->n_layers; l++)
        tl_enforce_budget(t, l, INT32_MAX);
    tl_flush_puts(t);
    if ((step + 1) % t->o.window == 0)
        tl_send_summary(t, pos);
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

static int hook_poll(void *ud) {
    tiering_t *t = ud;
    return t->inner.poll(t->inner.ud);
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
    g->hooks.poll = t->inner.poll ? hook_poll : NULL;
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
        if (t->fx_on)
            tl_collect(t, -1, 1);
        tl_flush_puts(t);
        tl_take_summaries(t, 1);
        tl_flush_puts(t); /* what its decisions demoted */
        tl_take_acks(t, 1);
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
                tl_svc_failed(t, "CloseSequence", err);
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

void tiering_peek(const tiering_t *t, tiering_stats_t *st) {
    if (t && st)
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
        free(t->L[l].last);
    }
    free(t->spec);
    free(t->L);
    free(t->cand);
    free(t->miss);
    free(t->puts);
    free(t->lat);
    free(t);
}
