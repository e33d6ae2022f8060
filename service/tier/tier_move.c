/* tier_move.c — moving payloads between RAM, RocksDB and nowhere, with the
 * index and counters kept in step. Callers hold t->mu. Inside a round
 * (t->defer set: every caller but tier_close) the RocksDB writes go into the
 * round's batch, written with the lock released (tier_defer.c). */
#include <stdlib.h>
#include <string.h>

#include "tier_internal.h"

/* The batch a move writes into: the summary's deferred one, or a new one. */
static rocksdb_writebatch_t *batch_begin(tier_t *t) {
    return t->defer ? t->defer : rocksdb_writebatch_create();
}

/* Writes a batch of its own (0 / -1); a deferred one is written later. */
static int batch_end(tier_t *t, rocksdb_writebatch_t *wb, int ops, char *err, size_t errlen) {
    if (wb == t->defer)
        return 0;
    int w = ops > 0 ? tier_ssd_write(t->ssd, wb, err, errlen) : 0;
    rocksdb_writebatch_destroy(wb);
    return w;
}

static int is_stored(uint8_t tier) {
    return tier == TIER_HOST || tier == TIER_SSD;
}

void tier_mv_set_tier(tier_t *t, tier_seqent *se, uint32_t l, uint32_t b, uint8_t to) {
    policy_block *x = tier_seq_block(se, l, b);
    if (is_stored(x->tier))
        se->stored_bytes -= x->bytes;
    if (is_stored(to))
        se->stored_bytes += x->bytes;
    tier_level_stats *from = &t->st.level[x->tier], *dst = &t->st.level[to];
    from->blocks--;
    from->bytes -= x->bytes;
    dst->blocks++;
    dst->bytes += x->bytes;
    x->tier = to;
}

void tier_mv_set_bytes(tier_t *t, tier_seqent *se, uint32_t l, uint32_t b, uint32_t bytes) {
    policy_block *x = tier_seq_block(se, l, b);
    if (is_stored(x->tier))
        se->stored_bytes = se->stored_bytes - x->bytes + bytes;
    t->st.level[x->tier].bytes -= x->bytes;
    t->st.level[x->tier].bytes += bytes;
    x->bytes = bytes;
}

/* ---------------------------------------------------------------- SSD room */

typedef struct victim {
    uint64_t rank;
    tier_seqent *se;
    uint32_t l, b;
} victim;

typedef struct room_ctx {
    victim *v;
    size_t n, cap;
    uint64_t bytes; /* payload bytes of all victims */
    int oom;
} room_ctx;

static int cmp_victim(const void *a, const void *b) {
    const victim *x = a, *y = b;
    return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* least valuable first: closed (retained) sequences, never revived, oldest */
static int collect_victims(void *ctx, tier_seqent *se) {
    room_ctx *c = ctx;
    size_t pos = 0;
    for (tier_chunk *ch; (ch = tier_index_next_chunk(se, &pos));)
        for (uint32_t j = 0; j < POLICY_CHUNK_BLOCKS; j++) {
            uint32_t l = ch->pc.layer, b = ch->pc.first + j;
            const policy_block *x = &ch->pc.blocks[j];
            const tier_slot *s = &ch->slots[j];
            if (b >= se->st.n_blocks || x->tier != TIER_SSD || !s->durable || s->pinned)
                continue;
            if (c->n == c->cap) {
                size_t nc = c->cap ? c->cap * 2 : 1024;
                victim *nv = realloc(c->v, nc * sizeof *nv);
                if (!nv) {
                    c->oom = 1;
                    return 1;
                }
                c->v = nv;
                c->cap = nc;
            }
            uint64_t rev = x->revivals > 0x7FFF ? 0x7FFF : x->revivals;
            uint64_t act = x->last_active > 0xFFFFFFFFFFFull ? 0xFFFFFFFFFFFull : x->last_active;
            c->v[c->n++] =
                (victim){((uint64_t)(se->open != 0) << 63) | (rev << 48) | act, se, l, b};
            c->bytes += x->bytes;
        }
    return 0;
}

tier_status tier_mv_ssd_room(tier_t *t, uint64_t need, char *err, size_t errlen) {
    uint64_t budget = t->opt.ssd_budget;
    if (t->ssd_used + need <= budget)
        return TIER_OK;
    if (need > budget) {
        TIER_ERR(err, errlen, "%llu bytes to write exceed the SSD budget of %llu bytes",
                 (unsigned long long)need, (unsigned long long)budget);
        return TIER_EFULL;
    }
    room_ctx c = {0};
    tier_index_each(&t->ix, collect_victims, &c);
    if (c.oom) {
        free(c.v);
        TIER_ERR(err, errlen, "out of memory choosing SSD victims");
        return TIER_EFULL;
    }
    if (t->ssd_used - c.bytes + need > budget) { /* cannot be made to fit: drop nothing */
        free(c.v);
        TIER_ERR(err, errlen,
                 "SSD budget full: %llu of %llu bytes used, %llu droppable, %llu more needed",
                 (unsigned long long)t->ssd_used, (unsigned long long)budget,
                 (unsigned long long)c.bytes, (unsigned long long)need);
        return TIER_EFULL;
    }
    qsort(c.v, c.n, sizeof *c.v, cmp_victim);
    /* free a little more than needed (1/64 of the budget) so that a full SSD
     * does not rescan the index on every put */
    uint64_t slack = budget / 64;
    uint64_t target = budget - need > slack ? budget - need - slack : 0;
    for (size_t i = 0; i < c.n && t->ssd_used > target; i++)
        tier_mv_forget(t, c.v[i].se, c.v[i].l, c.v[i].b, TIER_DROPPED, 1, NULL, 0);
    free(c.v);
    if (t->ssd_used + need <= budget)
        return TIER_OK;
    TIER_ERR(err, errlen,
             "SSD budget full: %llu of %llu bytes used and nothing left to drop for %llu more",
             (unsigned long long)t->ssd_used, (unsigned long long)budget, (unsigned long long)need);
    return TIER_EFULL;
}

/* ---------------------------------------------------------------- writes */

tier_status tier_mv_write_ssd(tier_t *t, tier_seqent *se, uint32_t l, uint32_t b, const void *data,
                              uint32_t len, uint32_t crc, uint8_t final_tier, char *err,
                              size_t errlen) {
    tier_slot *s = tier_seq_slot(se, l, b);
    uint64_t old = s->durable ? tier_seq_block(se, l, b)->bytes : 0;
    uint64_t need = len > old ? len - old : 0;
    uint8_t was_pinned = s->pinned;
    s->pinned = 1; /* never drop the block being written to make room for it */
    tier_status rc = tier_mv_ssd_room(t, need, err, errlen);
    s->pinned = was_pinned;
    if (rc == TIER_OK) /* payload + header + key + record */
        rc = tier_mv_disk_room(t, (uint64_t)len + 256, err, errlen);
    if (rc != TIER_OK)
        return rc;
    uint8_t key[TIER_KEY_MAX], mkey[TIER_META_KEY_MAX], hdr[TIER_SSD_HDR], rec[TIER_BLOCKREC_LEN];
    size_t kl = tier_key_encode(se->tenant, se->seq, l, b, key);
    size_t ml = tier_meta_key_block(se->tenant, se->seq, l, b, mkey);
    policy_block nb = *tier_seq_block(se, l, b);
    tier_slot ns = *s;
    nb.tier = final_tier;
    nb.bytes = len;
    ns.crc = crc;
    ns.durable = 1;
    tier_blockrec_encode(&nb, &ns, rec);
    rocksdb_writebatch_t *wb = batch_begin(t);
    tier_ssd_batch_put_block(t->ssd, wb, key, kl, data, len, crc, hdr);
    rocksdb_writebatch_put_cf(wb, t->ssd->cf_meta, (const char *)mkey, ml, (const char *)rec,
                              sizeof rec);
    char we[300] = "";
    if (batch_end(t, wb, 2, we, sizeof we) != 0) {
        if (tier_mv_disk_failed(t, we, err, errlen) == TIER_EFULL)
            return TIER_EFULL;
        TIER_ERR(err, errlen, "%s", we);
        return TIER_EIO;
    }
    t->ssd_used = t->ssd_used - old + len;
    s->durable = 1;
    s->crc = crc;
    t->st.level[TIER_SSD].puts++;
    return TIER_OK;
}

tier_status tier_mv_forget(tier_t *t, tier_seqent *se, uint32_t l, uint32_t b, uint8_t to,
                           int notify, char *err, size_t errlen) {
    tier_slot *s = tier_seq_slot(se, l, b);
    policy_block *x = tier_seq_block(se, l, b);
    if (s->host) {
        tier_host_unlink(&t->host, s->host);
        tier_host_entry_free(s->host);
        s->host = NULL;
    }
    int was_durable = s->durable;
    if (s->durable)
        t->ssd_used -= x->bytes;
    s->durable = 0;
    tier_mv_set_tier(t, se, l, b, to);
    tier_mv_set_bytes(t, se, l, b, 0);
    if (to == TIER_DROPPED && notify)
        s->notify_drop = 1;
    uint8_t key[TIER_KEY_MAX], mkey[TIER_META_KEY_MAX], rec[TIER_BLOCKREC_LEN];
    size_t kl = tier_key_encode(se->tenant, se->seq, l, b, key);
    size_t ml = tier_meta_key_block(se->tenant, se->seq, l, b, mkey);
    rocksdb_writebatch_t *wb = batch_begin(t);
    int ops = 0;
    if (was_durable)
        rocksdb_writebatch_delete_cf(wb, t->ssd->cf_blocks, (const char *)key, kl), ops++;
    if (to == TIER_DROPPED) {
        tier_blockrec_encode(x, s, rec);
        rocksdb_writebatch_put_cf(wb, t->ssd->cf_meta, (const char *)mkey, ml, (const char *)rec,
                                  sizeof rec);
        ops++;
    } else if (was_durable) {
        rocksdb_writebatch_delete_cf(wb, t->ssd->cf_meta, (const char *)mkey, ml);
        ops++;
    }
    return batch_end(t, wb, ops, err, errlen) != 0 ? TIER_EIO : TIER_OK;
}

tier_status tier_mv_host_leave(tier_t *t, tier_host_entry *e, char *err, size_t errlen) {
    tier_seqent *se = e->owner;
    uint32_t l = e->layer, b = e->block;
    tier_slot *s = tier_seq_slot(se, l, b);
    tier_status rc = TIER_OK;
    if (!s->durable) {
        rc = tier_mv_write_ssd(t, se, l, b, e->data, e->len, e->crc, TIER_SSD, err, errlen);
        if (rc == TIER_EFULL) /* nowhere to go: the coldest RAM block is lost */
            return tier_mv_forget(t, se, l, b, TIER_DROPPED, 1, err, errlen);
        if (rc != TIER_OK)
            return rc;
        if (t->defer) { /* the SSD copy is not written yet: RAM keeps serving it */
            if (t->n_keep == t->cap_keep) {
                size_t nc = t->cap_keep ? t->cap_keep * 2 : 16;
                tier_defer_keep *k = realloc(t->keep, nc * sizeof *k);
                if (!k) {
                    TIER_ERR(err, errlen, "out of memory");
                    return TIER_EIO;
                }
                t->keep = k;
                t->cap_keep = nc;
            }
            t->keep[t->n_keep++] = (tier_defer_keep){e, se, l, b};
            s->pinned = 1; /* never an SSD victim before its copy landed */
            tier_host_unlink(&t->host, e);
            if (tier_seq_block(se, l, b)->tier == TIER_HOST)
                tier_mv_set_tier(t, se, l, b, TIER_SSD);
            return TIER_OK;
        }
    }
    tier_host_unlink(&t->host, e);
    tier_host_entry_free(e);
    s->host = NULL;
    if (tier_seq_block(se, l, b)->tier == TIER_HOST)
        tier_mv_set_tier(t, se, l, b, TIER_SSD);
    return TIER_OK;
}

tier_status tier_mv_host_enforce(tier_t *t, tier_host_entry *keep, char *err, size_t errlen) {
    while (tier_host_over(&t->host)) {
        tier_host_entry *e = t->host.head;
        if (e == keep)
            e = e->next;
        if (!e)
            break;
        tier_status rc = tier_mv_host_leave(t, e, err, errlen);
        if (rc != TIER_OK)
            return rc;
    }
    return TIER_OK;
}

tier_status tier_mv_prefetch(tier_t *t, tier_seqent *se, uint32_t l, uint32_t b, int keep_corrupt,
                             char *err, size_t errlen) {
    tier_slot *s = tier_seq_slot(se, l, b);
    if (tier_seq_block(se, l, b)->tier != TIER_SSD || !s->durable || s->host)
        return TIER_ENOTFOUND;
    if (!t->defer) { /* reads run outside the lock only */
        TIER_ERR(err, errlen, "internal: prefetch outside a deferred round");
        return TIER_EIO;
    }
    if (t->n_reads == t->cap_reads) {
        size_t nc = t->cap_reads ? t->cap_reads * 2 : 16;
        tier_defer_read *r = realloc(t->reads, nc * sizeof *r);
        if (!r) {
            TIER_ERR(err, errlen, "out of memory");
            return TIER_EIO;
        }
        t->reads = r;
        t->cap_reads = nc;
    }
    t->reads[t->n_reads++] = (tier_defer_read){
        .se = se, .l = l, .b = b, .crc = s->crc, .keep_corrupt = (uint8_t)(keep_corrupt != 0)};
    return TIER_OK;
}

tier_status tier_mv_persist_seq(tier_t *t, tier_seqent *se, char *err, size_t errlen) {
    uint8_t k[TIER_META_KEY_MAX], v[TIER_SEQREC_MAX];
    size_t kl = tier_meta_key_seq(se->tenant, se->seq, k);
    size_t vl = tier_seqrec_encode(se, v);
    rocksdb_writebatch_t *wb = batch_begin(t);
    rocksdb_writebatch_put_cf(wb, t->ssd->cf_meta, (const char *)k, kl, (const char *)v, vl);
    return batch_end(t, wb, 1, err, errlen) ? TIER_EIO : TIER_OK;
}

/* TIER_OK when se may hold `more` index entries more (opt.max_seq_blocks). */
static tier_status index_room(tier_t *t, const tier_seqent *se, uint64_t more, char *err,
                              size_t errlen) {
    uint64_t want = tier_index_entries(se) + more;
    if (!t->opt.max_seq_blocks || want <= t->opt.max_seq_blocks)
        return TIER_OK;
    TIER_ERR(err, errlen,
             "%s/%llu would hold %llu index entries (stored blocks, in chunks of %u blocks of a "
             "layer, plus growth records), over the limit of %llu per sequence (kvtierd "
             "--max-seq-blocks)",
             se->tenant, (unsigned long long)se->seq, (unsigned long long)want, POLICY_CHUNK_BLOCKS,
             (unsigned long long)t->opt.max_seq_blocks);
    return TIER_EFULL;
}

tier_status tier_mv_grow(tier_t *t, tier_seqent *se, uint32_t n_blocks, uint8_t tier, uint64_t step,
                         char *err, size_t errlen) {
    uint32_t old = se->st.n_blocks;
    if (n_blocks <= old)
        return TIER_OK;
    tier_status rc = index_room(t, se, 1, err, errlen);
    if (rc != TIER_OK)
        return rc;
    if (tier_index_grow(se, n_blocks, tier, step) != 0) {
        TIER_ERR(err, errlen, "out of memory growing the index of %s/%llu to %u blocks per layer",
                 se->tenant, (unsigned long long)se->seq, n_blocks);
        return TIER_EFULL;
    }
    t->st.level[tier].blocks += (uint64_t)(n_blocks - old) * se->st.n_layers;
    return TIER_OK;
}

tier_status tier_mv_touch(tier_t *t, tier_seqent *se, uint32_t l, uint32_t b, char *err,
                          size_t errlen) {
    if (tier_seq_block(se, l, b))
        return TIER_OK;
    tier_status rc = index_room(t, se, POLICY_CHUNK_BLOCKS, err, errlen);
    if (rc != TIER_OK)
        return rc;
    if (!tier_index_touch(se, l, b)) {
        TIER_ERR(err, errlen, "out of memory growing the index of %s/%llu for (layer %u, block %u)",
                 se->tenant, (unsigned long long)se->seq, l, b);
        return TIER_EFULL;
    }
    return TIER_OK;
}

typedef struct tenant_sum {
    const char *tenant;
    uint64_t seqs, bytes;
} tenant_sum;

static int sum_tenant(void *ctx, tier_seqent *se) {
    tenant_sum *c = ctx;
    if (strcmp(se->tenant, c->tenant) == 0) {
        c->seqs++;
        c->bytes += se->stored_bytes;
    }
    return 0;
}

void tier_mv_tenant_usage(tier_t *t, const char *tenant, uint64_t *seqs, uint64_t *bytes) {
    tenant_sum c = {tenant, 0, 0};
    tier_index_each(&t->ix, sum_tenant, &c);
    *seqs = c.seqs;
    *bytes = c.bytes;
}

tier_status tier_mv_lookup(tier_t *t, const char *tenant, uint64_t seq, int need_open,
                           tier_seqent **out, char *err, size_t errlen) {
    char e[128];
    if (tier_key_check_tenant(tenant, e, sizeof e) != 0) {
        TIER_ERR(err, errlen, "%s", e);
        return TIER_EINVAL;
    }
    tier_seqent *se = tier_index_find(&t->ix, tenant, seq);
    if (!se) {
        TIER_ERR(err, errlen, "sequence %s/%llu not found", tenant, (unsigned long long)seq);
        return TIER_ENOTFOUND;
    }
    if (need_open && !se->open) {
        TIER_ERR(err, errlen, "sequence %s/%llu is closed", tenant, (unsigned long long)seq);
        return TIER_ENOTFOUND;
    }
    *out = se;
    return TIER_OK;
}
