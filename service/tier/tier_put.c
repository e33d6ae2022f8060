/* tier_put.c — storing payloads: tier_put_check (validate one item),
 * tier_put_batch (all-or-nothing: validate all, one RocksDB WriteBatch,
 * publish after it succeeded) and tier_put (a batch of one).
 *
 * Order of a batch, all under t->mu except the crc32c computations:
 *   precheck (sizes) + crc32c  ->  validate (keys, shapes, crc)  ->  last copy
 *   wins  ->  grow index  ->  plan (RAM / RocksDB / delete old copy), pin
 *   slots, allocate RAM copies  ->  SSD room  ->  ONE WriteBatch  ->  publish
 *   (index, RAM copies, counters)  ->  RAM budget (may move older blocks out).
 * Nothing before the WriteBatch changes what a fetch would return. */
#include <stdlib.h>
#include <string.h>

#include "tier_internal.h"

/* ---------------------------------------------------------------- validation */

/* Checks that need no lock: a payload within the service limit. */
static tier_status item_precheck(const tier_t *t, const tier_put_item *it, char *err,
                                 size_t errlen) {
    if (it->len == 0 || !it->data) {
        TIER_ERR(err, errlen, "empty payload");
        return TIER_EINVAL;
    }
    if (it->len > t->opt.max_block_bytes) {
        TIER_ERR(err, errlen, "payload of %zu bytes exceeds max_block_bytes %u", it->len,
                 t->opt.max_block_bytes);
        return TIER_ETOOBIG;
    }
    return TIER_OK;
}

/* Checks against the index (t->mu held). crc: the payload's computed crc32c.
 * On OK *se_out is the item's (open) sequence. */
static tier_status item_check(tier_t *t, const tier_put_item *it, uint32_t crc,
                              tier_seqent **se_out, char *err, size_t errlen) {
    tier_status rc = tier_check_key(t, &it->key, 1, se_out, err, errlen);
    if (rc != TIER_OK)
        return rc;
    const tier_seqent *se = *se_out;
    if (se->info.block_bytes && it->len > se->info.block_bytes) {
        TIER_ERR(err, errlen, "payload of %zu bytes exceeds the sequence's block_bytes %u", it->len,
                 se->info.block_bytes);
        return TIER_ETOOBIG;
    }
    if (!tier_seq_size_fits(&se->info, it->len)) {
        uint64_t g = tier_seq_geometry(&se->info);
        if (se->info.block_bytes)
            TIER_ERR(err, errlen,
                     "payload of (layer %u, block %u) is %zu bytes; blocks of %s/%llu are %u "
                     "bytes (block_tokens %u x kv_heads %u x head_dim %u x 2 (K,V) x dtype "
                     "size; a partial tail block is sent whole, with ntokens < block_tokens)",
                     it->key.layer, it->key.block, it->len, se->tenant, (unsigned long long)se->seq,
                     se->info.block_bytes, se->info.block_tokens, se->info.n_kv_heads,
                     se->info.head_dim);
        else
            TIER_ERR(err, errlen,
                     "payload of (layer %u, block %u) is %zu bytes; blocks of %s/%llu are "
                     "block_tokens %u x kv_heads %u x head_dim %u x 2 (K,V) x dtype size = %llu, "
                     "%llu or %llu bytes",
                     it->key.layer, it->key.block, it->len, se->tenant, (unsigned long long)se->seq,
                     se->info.block_tokens, se->info.n_kv_heads, se->info.head_dim,
                     (unsigned long long)g, (unsigned long long)(2 * g),
                     (unsigned long long)(4 * g));
        return TIER_EINVAL;
    }
    if (it->target != 0 && it->target != TIER_HOST && it->target != TIER_SSD) {
        TIER_ERR(err, errlen,
                 "target tier %s of (layer %u, block %u) is not a placement: HOST, SSD or none "
                 "(the service picks)",
                 policy_tier_name(it->target), it->key.layer, it->key.block);
        return TIER_EINVAL;
    }
    if (it->target == TIER_HOST && it->len > t->opt.host_budget) {
        TIER_ERR(err, errlen,
                 "target HOST for (layer %u, block %u): %zu bytes do not fit the RAM budget of "
                 "%llu bytes",
                 it->key.layer, it->key.block, it->len, (unsigned long long)t->opt.host_budget);
        return TIER_EFULL;
    }
    if (it->ntokens > se->info.block_tokens) {
        TIER_ERR(err, errlen, "ntokens %u exceeds block_tokens %u", it->ntokens,
                 se->info.block_tokens);
        return TIER_EINVAL;
    }
    if (crc != it->crc32c) {
        t->st.dataloss++;
        TIER_ERR(err, errlen,
                 "payload of (layer %u, block %u) fails its crc32c: sent %08x, computed %08x; not "
                 "stored",
                 it->key.layer, it->key.block, it->crc32c, crc);
        return TIER_EDATALOSS;
    }
    return TIER_OK;
}

tier_status tier_put_check(tier_t *t, const tier_put_item *item, char *err, size_t errlen) {
    if (err && errlen)
        err[0] = 0;
    if (!item) {
        TIER_ERR(err, errlen, "put item is required");
        return TIER_EINVAL;
    }
    tier_status rc = item_precheck(t, item, err, errlen);
    if (rc != TIER_OK)
        return rc;
    uint32_t crc = tier_crc32c(0, item->data, item->len); /* outside the lock */
    tier_seqent *se = NULL;
    pthread_mutex_lock(&t->mu);
    rc = item_check(t, item, crc, &se, err, errlen);
    pthread_mutex_unlock(&t->mu);
    return rc;
}

/* ---------------------------------------------------------------- batch */

/* What happens to one item of a batch. */
typedef struct put_plan {
    tier_seqent *se;    /* its sequence (valid under t->mu) */
    uint32_t l, b;      /* layer, block */
    uint32_t crc;       /* computed crc32c of the payload */
    uint8_t final;      /* last copy of its block in the batch: the one stored */
    uint8_t to_ram;     /* a RAM copy is kept (payload fits the RAM budget) */
    uint8_t to_ssd;     /* payload + record written to RocksDB */
    uint8_t del_old;    /* write-back RAM block: delete the older durable copy / record */
    uint8_t pinned;     /* its slot was pinned by plan_all (the cleanup unpins only these:
                           a slot the index could not grow to does not exist) */
    tier_host_entry *e; /* new RAM copy (to_ram) until published */
} put_plan;

typedef struct dup_key {
    uintptr_t se;
    uint32_t l, b;
    size_t i;
} dup_key;

static int cmp_dup(const void *x, const void *y) {
    const dup_key *a = x, *b = y;
    if (a->se != b->se)
        return a->se < b->se ? -1 : 1;
    if (a->l != b->l)
        return a->l < b->l ? -1 : 1;
    if (a->b != b->b)
        return a->b < b->b ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

/* Mark the last copy of every block final (a block put twice: last wins). */
static void mark_finals(put_plan *p, dup_key *d, size_t n) {
    for (size_t i = 0; i < n; i++)
        d[i] = (dup_key){(uintptr_t)p[i].se, p[i].l, p[i].b, i};
    qsort(d, n, sizeof *d, cmp_dup);
    for (size_t j = 0; j < n; j++) {
        int last =
            j + 1 == n || d[j + 1].se != d[j].se || d[j + 1].l != d[j].l || d[j + 1].b != d[j].b;
        p[d[j].i].final = (uint8_t)last;
    }
}

/* Grow the index to hold every final block (new blocks are HOT: the
 * worker's) and store each final block's chunk. TIER_OK or TIER_EFULL (over
 * --max-seq-blocks, or out of memory: RESOURCE_EXHAUSTED; what grew before
 * the failure stays, holding the values it had: nothing is stored). */
static tier_status grow_all(tier_t *t, put_plan *p, size_t n, char *err, size_t errlen) {
    for (size_t i = 0; i < n; i++) {
        tier_seqent *se = p[i].se;
        if (!p[i].final)
            continue;
        tier_status r = tier_mv_grow(t, se, p[i].b + 1, TIER_HOT, se->st.step, err, errlen);
        if (r == TIER_OK)
            r = tier_mv_touch(t, se, p[i].l, p[i].b, err, errlen);
        if (r != TIER_OK) {
            size_t used = strlen(err ? err : "");
            if (err && used + 1 < errlen)
                snprintf(err + used, errlen - used, "; nothing of the batch was stored");
            return r;
        }
    }
    return TIER_OK;
}

/* The tenant quota (opt.tenant_max_bytes) for every tenant of the batch:
 * what it stores now plus what the batch adds (replaced copies counted
 * once). TIER_OK or TIER_EFULL. */
static tier_status quota_all(tier_t *t, const tier_put_item *items, const put_plan *p, size_t n,
                             char *err, size_t errlen) {
    if (!t->opt.tenant_max_bytes)
        return TIER_OK;
    for (size_t i = 0; i < n; i++) {
        const char *tenant = p[i].se->tenant;
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(p[j].se->tenant, tenant) == 0;
        if (seen)
            continue;
        uint64_t add = 0, freed = 0, seqs = 0, bytes = 0;
        for (size_t j = i; j < n; j++) {
            if (!p[j].final || strcmp(p[j].se->tenant, tenant) != 0)
                continue;
            add += items[j].len;
            policy_block x;
            tier_index_peek(p[j].se, p[j].l, p[j].b, &x, NULL);
            if (x.tier == TIER_HOST || x.tier == TIER_SSD)
                freed += x.bytes;
        }
        tier_mv_tenant_usage(t, tenant, &seqs, &bytes);
        if (bytes - freed + add > t->opt.tenant_max_bytes) {
            TIER_ERR(err, errlen,
                     "tenant %s stores %llu bytes; this put adds %llu more, over its quota of "
                     "%llu bytes (kvtierd --tenant-max-bytes); nothing was stored",
                     tenant, (unsigned long long)bytes, (unsigned long long)(add - freed),
                     (unsigned long long)t->opt.tenant_max_bytes);
            return TIER_EFULL;
        }
    }
    return TIER_OK;
}

/* Decide RAM / RocksDB per final item, pin its slot, allocate its RAM copy.
 * *need = net payload bytes the batch adds to RocksDB. TIER_OK or TIER_EIO. */
static tier_status plan_all(tier_t *t, const tier_put_item *items, put_plan *p, size_t n,
                            uint64_t *need, char *err, size_t errlen) {
    int back = t->opt.write_policy == TIER_WRITE_BACK;
    uint64_t add = 0, freed = 0;
    for (size_t i = 0; i < n; i++) {
        if (!p[i].final)
            continue;
        tier_slot *s = tier_seq_slot(p[i].se, p[i].l, p[i].b);
        const policy_block *x = tier_seq_block(p[i].se, p[i].l, p[i].b);
        p[i].to_ram = items[i].len <= t->opt.host_budget && items[i].target != TIER_SSD;
        p[i].to_ssd = !back || !p[i].to_ram;
        /* a write-back RAM block must not leave an older copy for a crash to revive */
        p[i].del_old = back && p[i].to_ram && (s->durable || x->tier == TIER_DROPPED);
        if (p[i].to_ssd)
            add += items[i].len;
        if (s->durable)
            freed += x->bytes; /* replaced or deleted */
        s->pinned = 1;
        p[i].pinned = 1;
        if (p[i].to_ram) {
            p[i].e = tier_host_entry_new(p[i].se, p[i].l, p[i].b, items[i].data,
                                         (uint32_t)items[i].len, p[i].crc, back);
            if (!p[i].e) {
                TIER_ERR(err, errlen, "out of memory for a RAM copy of %zu bytes", items[i].len);
                return TIER_EIO;
            }
        }
    }
    *need = add > freed ? add - freed : 0;
    return TIER_OK;
}

/* Appends the batch's payloads and records to the one WriteBatch (wb),
 * written by tier_mv_defer_commit after the lock is released. */
static void batch_all(tier_t *t, rocksdb_writebatch_t *wb, const tier_put_item *items,
                      const put_plan *p, size_t n, uint8_t *hdrs) {
    for (size_t i = 0; i < n; i++) {
        if (!p[i].final || (!p[i].to_ssd && !p[i].del_old))
            continue;
        tier_seqent *se = p[i].se;
        const tier_slot *s = tier_seq_slot(se, p[i].l, p[i].b);
        uint8_t key[TIER_KEY_MAX], mkey[TIER_META_KEY_MAX], rec[TIER_BLOCKREC_LEN];
        size_t kl = tier_key_encode(se->tenant, se->seq, p[i].l, p[i].b, key);
        size_t ml = tier_meta_key_block(se->tenant, se->seq, p[i].l, p[i].b, mkey);
        if (p[i].to_ssd) {
            policy_block nb = *tier_seq_block(se, p[i].l, p[i].b);
            tier_slot ns = *s;
            nb.tier = p[i].to_ram ? TIER_HOST : TIER_SSD;
            nb.bytes = (uint32_t)items[i].len;
            ns.crc = p[i].crc;
            ns.ntokens = items[i].ntokens;
            ns.durable = 1;
            tier_blockrec_encode(&nb, &ns, rec);
            tier_ssd_batch_put_block(t->ssd, wb, key, kl, items[i].data, (uint32_t)items[i].len,
                                     p[i].crc, hdrs + i * TIER_SSD_HDR);
            rocksdb_writebatch_put_cf(wb, t->ssd->cf_meta, (const char *)mkey, ml,
                                      (const char *)rec, sizeof rec);
        } else {
            if (s->durable)
                rocksdb_writebatch_delete_cf(wb, t->ssd->cf_blocks, (const char *)key, kl);
            rocksdb_writebatch_delete_cf(wb, t->ssd->cf_meta, (const char *)mkey, ml);
        }
    }
}

/* Make the written batch visible: index, RAM copies, counters. Cannot fail.
 * Returns the last RAM copy inserted (NULL when none). */
static tier_host_entry *publish_all(tier_t *t, const tier_put_item *items, put_plan *p, size_t n) {
    tier_host_entry *last = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!p[i].final)
            continue;
        tier_seqent *se = p[i].se;
        uint32_t l = p[i].l, b = p[i].b;
        tier_slot *s = tier_seq_slot(se, l, b);
        if (s->host) { /* replace any earlier RAM copy */
            tier_host_unlink(&t->host, s->host);
            tier_host_entry_free(s->host);
            s->host = NULL;
        }
        if (s->durable)
            t->ssd_used -= tier_seq_block(se, l, b)->bytes;
        s->durable = 0;
        uint8_t landed = TIER_SSD;
        if (p[i].to_ssd) {
            s->durable = 1;
            t->ssd_used += items[i].len;
            t->st.level[TIER_SSD].puts++;
        }
        if (p[i].to_ram) {
            tier_host_insert(&t->host, p[i].e);
            s->host = last = p[i].e;
            p[i].e = NULL;
            landed = TIER_HOST;
            t->st.level[TIER_HOST].puts++;
        }
        s->crc = p[i].crc;
        s->ntokens = items[i].ntokens;
        s->notify_drop = 0;
        s->pinned = 0;
        tier_mv_set_tier(t, se, l, b, landed);
        tier_mv_set_bytes(t, se, l, b, (uint32_t)items[i].len);
    }
    return last;
}

tier_status tier_put_batch(tier_t *t, const tier_put_item *items, size_t n, int *tiers_out,
                           size_t *failed_index, char *err, size_t errlen) {
    if (err && errlen)
        err[0] = 0;
    if (failed_index)
        *failed_index = n;
    if (n == 0)
        return TIER_OK;
    if (!items) {
        TIER_ERR(err, errlen, "put items are required");
        return TIER_EINVAL;
    }
    put_plan *p = calloc(n, sizeof *p);
    dup_key *d = malloc(n * sizeof *d);
    uint8_t *hdrs = malloc(n * TIER_SSD_HDR);
    tier_status rc = TIER_OK;
    size_t bad = n;
    if (!p || !d || !hdrs) {
        TIER_ERR(err, errlen, "out of memory for a batch of %zu blocks", n);
        rc = TIER_EIO;
        goto done;
    }
    for (size_t i = 0; i < n; i++) { /* sizes + crc32c, outside the lock */
        rc = item_precheck(t, &items[i], err, errlen);
        if (rc != TIER_OK) {
            bad = i;
            goto done;
        }
        p[i].crc = tier_crc32c(0, items[i].data, items[i].len);
    }
    pthread_mutex_lock(&t->mu);
    tier_io_wait(t);
    for (size_t i = 0; i < n && rc == TIER_OK; i++) {
        rc = item_check(t, &items[i], p[i].crc, &p[i].se, err, errlen);
        if (rc != TIER_OK) {
            bad = i;
            p[i].se = NULL;
        }
        p[i].l = items[i].key.layer;
        p[i].b = items[i].key.block;
    }
    if (rc != TIER_OK)
        goto unlock;
    mark_finals(p, d, n);
    uint64_t need = 0;
    rc = quota_all(t, items, p, n, err, errlen);
    if (rc == TIER_OK)
        rc = grow_all(t, p, n, err, errlen);
    if (rc == TIER_OK)
        rc = plan_all(t, items, p, n, &need, err, errlen);
    /* From here the RocksDB writes (room made on SSD, the batch itself) go
     * into one deferred batch, written after the lock is released; the batch
     * is published only once it landed. */
    if (rc == TIER_OK && !(t->defer = rocksdb_writebatch_create())) {
        TIER_ERR(err, errlen, "out of memory for a write batch");
        rc = TIER_EIO;
    }
    if (rc == TIER_OK && need)
        rc = tier_mv_ssd_room(t, need, err, errlen);
    if (rc == TIER_OK && need) /* payloads + per block header, key and record */
        rc = tier_mv_disk_room(t, need + (uint64_t)n * 256, err, errlen);
    if (t->defer) {
        char we[200] = "";
        if (rc == TIER_OK)
            batch_all(t, t->defer, items, p, n, hdrs);
        if (tier_mv_defer_commit(t, NULL, we, sizeof we) != 0 && rc == TIER_OK) {
            rc = tier_mv_disk_failed(t, we, err, errlen);
            if (rc == TIER_EIO)
                TIER_ERR(err, errlen, "RocksDB write failed: %s", we);
        }
    }
    if (rc == TIER_OK) {
        tier_host_entry *last = publish_all(t, items, p, n);
        char w[200];
        w[0] = 0;
        /* stored: RAM pressure moving older blocks out is not the batch's
         * failure; their write-back copies are written without the lock too */
        t->defer = rocksdb_writebatch_create();
        tier_status he = last ? tier_mv_host_enforce(t, last, w, sizeof w) : TIER_OK;
        if (t->defer && tier_mv_defer_commit(t, NULL, w, sizeof w) != 0)
            he = TIER_EIO;
        if (he != TIER_OK)
            TIER_ERR(err, errlen, "stored; moving older blocks out of RAM failed: %s", w);
        if (tiers_out)
            for (size_t i = 0; i < n; i++)
                tiers_out[i] = tier_seq_block(p[i].se, p[i].l, p[i].b)->tier;
    }
unlock:
    for (size_t i = 0; i < n; i++) { /* on failure: unpin, drop unused RAM copies */
        if (p[i].pinned)
            tier_seq_slot(p[i].se, p[i].l, p[i].b)->pinned = 0;
        if (p[i].e)
            tier_host_entry_free(p[i].e);
    }
    pthread_mutex_unlock(&t->mu);
done:
    if (failed_index && rc != TIER_OK)
        *failed_index = bad;
    free(p);
    free(d);
    free(hdrs);
    return rc;
}

tier_status tier_put(tier_t *t, const tier_block_key *k, const void *data, size_t len,
                     uint32_t crc32c, uint32_t ntokens, int *tier_out, char *err, size_t errlen) {
    if (!k) {
        TIER_ERR(err, errlen, "block key is required");
        return TIER_EINVAL;
    }
    tier_put_item it = {*k, data, len, crc32c, ntokens, 0};
    int tier = TIER_NONE;
    tier_status rc = tier_put_batch(t, &it, 1, &tier, NULL, err, errlen);
    if (rc == TIER_OK && tier_out)
        *tier_out = tier;
    return rc;
}
