/* tier_admin.c — summaries (policy in action) and the admin views: map,
 * stats, sequence listing, health (evict and drain: tier_evict.c). */
#include <stdlib.h>
#include <string.h>

#include "tier_internal.h"

/* ---------------------------------------------------------------- summarize */

/* After policy_apply_summary changed tiers in place (old tiers in `before`,
 * one per entry of every table slot), carry the changes out: recalled blocks
 * lose their stored copy, worker drops delete theirs, counters follow. Only
 * stored blocks change (a summary names stored blocks only). */
static void settle_summary(tier_t *t, tier_seqent *se, const uint8_t *before) {
    for (size_t i = 0; i < se->st.table_size; i++) {
        policy_chunk *c = se->st.chunks[i];
        for (uint32_t j = 0; c && j < POLICY_CHUNK_BLOCKS; j++) {
            policy_block *x = &c->blocks[j];
            uint8_t old = before[i * POLICY_CHUNK_BLOCKS + j], now = x->tier;
            if (old == now || c->first + j >= se->st.n_blocks)
                continue;
            x->tier = old; /* counters still describe `old` */
            if (now == TIER_HOT && (old == TIER_HOST || old == TIER_SSD || old == TIER_DROPPED))
                t->st.level[old].revivals++;
            tier_mv_forget(t, se, c->layer, c->first + j, now, 0, NULL, 0);
        }
    }
}

/* Store every block the summary names (it was checked: all in range). */
static tier_status touch_named(tier_t *t, tier_seqent *se, const tier_summary *s, char *err,
                               size_t errlen) {
    tier_status rc = TIER_OK;
    for (uint32_t i = 0; i < s->n_layers && rc == TIER_OK; i++) {
        const policy_layer_summary *l = &s->layers[i];
        const uint32_t *lists[4] = {l->active, l->recalled, l->dropped, l->revived};
        uint32_t ns[4] = {l->n_active, l->n_recalled, l->n_dropped, l->n_revived};
        for (int k = 0; k < 4; k++)
            for (uint32_t j = 0; j < ns[k] && rc == TIER_OK; j++)
                rc = tier_mv_touch(t, se, l->layer, lists[k][j], err, errlen);
    }
    return rc;
}

/* Drops the service made on its own since the last summary (notify_drop),
 * appended to d[0..*nd) (grown); cleared once reported. */
static policy_decision *add_service_drops(tier_seqent *se, policy_decision *d, size_t *nd) {
    size_t extra = 0, pos = 0;
    for (tier_chunk *c; (c = tier_index_next_chunk(se, &pos));)
        for (uint32_t j = 0; j < POLICY_CHUNK_BLOCKS; j++)
            extra += c->slots[j].notify_drop;
    if (!extra)
        return d;
    policy_decision *nd2 = realloc(d, (*nd + extra) * sizeof *d);
    if (!nd2)
        return d; /* reported with the next summary */
    pos = 0;
    for (tier_chunk *c; (c = tier_index_next_chunk(se, &pos));)
        for (uint32_t j = 0; j < POLICY_CHUNK_BLOCKS; j++) {
            tier_slot *sl = &c->slots[j];
            if (!sl->notify_drop)
                continue;
            sl->notify_drop = 0;
            if (c->pc.blocks[j].tier == TIER_DROPPED)
                nd2[(*nd)++] = (policy_decision){POLICY_DROP, TIER_SSD, TIER_DROPPED, c->pc.layer,
                                                 c->pc.first + j};
        }
    return nd2;
}

/* Carry out the service-side part of the decisions; keep those that hold.
 * Returns the new count. */
static size_t apply_decisions(tier_t *t, tier_seqent *se, policy_decision *d, size_t n) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        policy_decision x = d[i];
        tier_status rc = TIER_OK;
        switch (x.kind) {
        case POLICY_DEMOTE_HOST: /* the worker puts it; the index moves on put */
            break;
        case POLICY_DEMOTE_SSD: {
            tier_slot *s = tier_seq_slot(se, x.layer, x.block);
            rc = s->host ? tier_mv_host_leave(t, s->host, NULL, 0) : TIER_ENOTFOUND;
            if (rc == TIER_OK && tier_seq_block(se, x.layer, x.block)->tier == TIER_DROPPED) {
                x.kind = POLICY_DROP; /* no room on SSD either */
                x.to = TIER_DROPPED;
                tier_seq_slot(se, x.layer, x.block)->notify_drop = 0;
            }
            break;
        }
        case POLICY_DROP:
            tier_mv_forget(t, se, x.layer, x.block, TIER_DROPPED, 0, NULL, 0);
            break;
        case POLICY_PREFETCH:
            /* read after the lock is released; a corrupt copy is dropped
             * then and the decision becomes DROP (publish_deferred) */
            rc = tier_mv_prefetch(t, se, x.layer, x.block, 0, NULL, 0);
            break;
        default:
            rc = TIER_EINVAL;
        }
        if (rc == TIER_OK)
            d[w++] = x;
    }
    return w;
}

tier_status tier_summarize(tier_t *t, const char *tenant, uint64_t seq, const tier_summary *s,
                           tier_decision **out, size_t *n, char *err, size_t errlen) {
    *out = NULL;
    *n = 0;
    if (!s) {
        TIER_ERR(err, errlen, "summary is required");
        return TIER_EINVAL;
    }
    /* Phase 1 (under mu): apply the summary, decide, carry out the decisions in
     * memory; every RocksDB write goes into one deferred batch, every read is
     * queued. Writers wait until phase 3 (tier_io_wait); readers do not. */
    pthread_mutex_lock(&t->mu);
    tier_io_wait(t);
    tier_seqent *se = NULL;
    uint8_t *before = NULL;
    void *scratch = NULL;
    policy_decision *d = NULL;
    size_t nd = 0;
    int deferred = 0;
    tier_status rc = tier_mv_lookup(t, tenant, seq, 1, &se, err, errlen);
    if (rc != TIER_OK)
        goto out;
    uint32_t maxb = se->info.max_blocks ? se->info.max_blocks : TIER_MAX_BLOCKS_DEFAULT;
    if (s->n_blocks > maxb) {
        TIER_ERR(err, errlen, "summary n_blocks %u exceeds the sequence's max_blocks %u",
                 s->n_blocks, maxb);
        rc = TIER_EINVAL;
        goto out;
    }
    if (s->step < se->st.step) {
        TIER_ERR(err, errlen,
                 "summary step %llu of %s/%llu goes back: the sequence is at step %llu (steps "
                 "never decrease)",
                 (unsigned long long)s->step, tenant, (unsigned long long)seq,
                 (unsigned long long)se->st.step);
        rc = TIER_EINVAL;
        goto out;
    }
    uint64_t step = s->step > se->st.step ? s->step : se->st.step;
    rc = tier_mv_grow(t, se, s->n_blocks, TIER_HOT, step, err, errlen);
    if (rc != TIER_OK)
        goto out;
    char e[256];
    if (policy_summary_check(&se->st, s, e, sizeof e) != 0) {
        TIER_ERR(err, errlen, "summary for %s/%llu: %s", tenant, (unsigned long long)seq, e);
        rc = TIER_EINVAL;
        goto out;
    }
    rc = touch_named(t, se, s, err, errlen);
    if (rc != TIER_OK)
        goto out;
    size_t offs = se->st.table_size * POLICY_CHUNK_BLOCKS;
    size_t total = se->st.n_chunks * POLICY_CHUNK_BLOCKS;
    before = malloc(offs ? offs : 1);
    scratch = malloc(policy_scratch_size(&se->st) + 8);
    d = malloc((total ? total : 1) * sizeof *d);
    t->defer = rocksdb_writebatch_create();
    if (!before || !scratch || !d || !t->defer) {
        if (t->defer)
            rocksdb_writebatch_destroy(t->defer);
        t->defer = NULL;
        TIER_ERR(err, errlen, "out of memory");
        rc = TIER_EIO;
        goto out;
    }
    deferred = 1;
    for (size_t i = 0; i < se->st.table_size; i++)
        for (uint32_t j = 0; se->st.chunks[i] && j < POLICY_CHUNK_BLOCKS; j++)
            before[i * POLICY_CHUNK_BLOCKS + j] = se->st.chunks[i]->blocks[j].tier;
    if (policy_apply_summary(&se->st, s, e, sizeof e) < 0) {
        TIER_ERR(err, errlen, "summary for %s/%llu: %s", tenant, (unsigned long long)seq, e);
        rc = TIER_EINVAL;
        goto out;
    }
    settle_summary(t, se, before);
    for (uint32_t i = 0; i < s->n_layers; i++) /* revived: back and out again, tier unchanged */
        for (uint32_t j = 0; j < s->layers[i].n_revived; j++) {
            uint8_t lv = tier_seq_block(se, s->layers[i].layer, s->layers[i].revived[j])->tier;
            if (lv == TIER_HOST || lv == TIER_SSD)
                t->st.level[lv].revivals++;
        }
    nd = policy_decide(&se->params, &se->st, d, total, scratch);
    nd = apply_decisions(t, se, d, nd);
    d = add_service_drops(se, d, &nd);
    for (size_t i = 0; i < t->n_reads; i++) /* which decision each queued read serves */
        for (size_t k = 0; k < nd; k++)
            if (d[k].kind == POLICY_PREFETCH && d[k].layer == t->reads[i].l &&
                d[k].block == t->reads[i].b)
                t->reads[i].decision = k;
    /* the sequence record (step, block count) goes with the summary's other
     * changes; a summary that changed nothing stored writes nothing (after a
     * restart the step and block count catch up with the next summary; block
     * records bring their own indices back) */
    if (rocksdb_writebatch_count(t->defer) > 0)
        rc = tier_mv_persist_seq(t, se, err, errlen); /* into the batch */
out:
    if (deferred) {
        /* Phases 2 and 3: the RocksDB work without the lock, then publish */
        char we[200] = "";
        if (tier_mv_defer_commit(t, d, we, sizeof we) != 0 && rc == TIER_OK) {
            TIER_ERR(err, errlen, "RocksDB write of the summary's changes failed: %s", we);
            rc = TIER_EIO;
        }
    }
    if (rc == TIER_OK && nd) {
        for (size_t i = 0; i < nd; i++)
            t->st.decisions[d[i].kind]++;
        *out = d;
        *n = nd;
        d = NULL;
    }
    pthread_mutex_unlock(&t->mu);
    free(before);
    free(scratch);
    free(d);
    return rc;
}

/* ---------------------------------------------------------------- admin */

tier_status tier_map(tier_t *t, const char *tenant, uint64_t seq, uint8_t **map_out,
                     uint32_t *n_layers, uint32_t *n_blocks, char *err, size_t errlen) {
    *map_out = NULL;
    *n_layers = *n_blocks = 0;
    pthread_mutex_lock(&t->mu);
    tier_seqent *se = NULL;
    tier_status rc = tier_mv_lookup(t, tenant, seq, 0, &se, err, errlen);
    if (rc == TIER_OK) {
        size_t total = (size_t)se->st.n_layers * se->st.n_blocks;
        uint8_t *m = total ? malloc(total) : NULL;
        if (total && !m) {
            TIER_ERR(err, errlen, "out of memory");
            rc = TIER_EIO;
        } else {
            if (m)
                tier_index_fill_tiers(se, m);
            *map_out = m;
            *n_layers = se->st.n_layers;
            *n_blocks = se->st.n_blocks;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

void tier_stats_get(tier_t *t, tier_stats *out) {
    pthread_mutex_lock(&t->mu);
    *out = t->st;
    pthread_mutex_unlock(&t->mu);
    out->rocksdb_live_bytes = tier_ssd_property(t->ssd, "rocksdb.estimate-live-data-size");
    out->rocksdb_memtable_bytes = tier_ssd_property(t->ssd, "rocksdb.cur-size-all-mem-tables");
    out->rocksdb_sst_bytes = tier_ssd_property(t->ssd, "rocksdb.total-sst-files-size");
}

static void describe(const tier_seqent *se, tier_seq_desc *d) {
    memset(d, 0, sizeof *d);
    snprintf(d->tenant, sizeof d->tenant, "%s", se->tenant);
    d->seq = se->seq;
    d->info = se->info;
    d->info.params = NULL;
    d->params = se->params;
    d->open = se->open;
    d->created_ms = se->created_ms;
    d->step = se->st.step;
    d->n_blocks = se->st.n_blocks;
    tier_index_unstored(se, d->blocks); /* no bytes */
    size_t pos = 0;
    for (tier_chunk *c; (c = tier_index_next_chunk(se, &pos));)
        for (uint32_t j = 0; j < POLICY_CHUNK_BLOCKS && c->pc.first + j < se->st.n_blocks; j++) {
            const policy_block *x = &c->pc.blocks[j];
            d->blocks[x->tier]++;
            d->bytes[x->tier] += x->bytes;
        }
}

tier_status tier_seq_get(tier_t *t, const char *tenant, uint64_t seq, tier_seq_desc *out, char *err,
                         size_t errlen) {
    pthread_mutex_lock(&t->mu);
    tier_seqent *se = NULL;
    tier_status rc = tier_mv_lookup(t, tenant, seq, 0, &se, err, errlen);
    if (rc == TIER_OK)
        describe(se, out);
    pthread_mutex_unlock(&t->mu);
    return rc;
}

typedef struct list_ctx {
    const char *tenant;
    tier_seq_desc *v;
    size_t n;
} list_ctx;

static int list_one(void *ctx, tier_seqent *se) {
    list_ctx *c = ctx;
    if (c->tenant && *c->tenant && strcmp(c->tenant, se->tenant) != 0)
        return 0;
    describe(se, &c->v[c->n++]);
    return 0;
}

static int cmp_desc(const void *a, const void *b) {
    const tier_seq_desc *x = a, *y = b;
    int c = strcmp(x->tenant, y->tenant);
    if (c)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

tier_status tier_seq_list(tier_t *t, const char *tenant, tier_seq_desc **out, size_t *n, char *err,
                          size_t errlen) {
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&t->mu);
    size_t cap = t->ix.count;
    list_ctx c = {tenant, cap ? malloc(cap * sizeof *c.v) : NULL, 0};
    if (cap && !c.v) {
        pthread_mutex_unlock(&t->mu);
        TIER_ERR(err, errlen, "out of memory");
        return TIER_EIO;
    }
    if (cap)
        tier_index_each(&t->ix, list_one, &c);
    pthread_mutex_unlock(&t->mu);
    if (c.n == 0) {
        free(c.v);
        return TIER_OK;
    }
    qsort(c.v, c.n, sizeof *c.v, cmp_desc);
    *out = c.v;
    *n = c.n;
    return TIER_OK;
}

static int stop_first(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl) {
    (void)ctx, (void)k, (void)kl, (void)v, (void)vl;
    return 1;
}

tier_status tier_health(tier_t *t, char *err, size_t errlen) {
    uint8_t s = 'S';
    char e[200];
    if (tier_ssd_scan_meta(t->ssd, &s, 1, stop_first, NULL, e, sizeof e) != 0) {
        TIER_ERR(err, errlen, "%s", e);
        return TIER_EIO;
    }
    return tier_disk_check(t, err, errlen);
}
