/* tier.c — the tier facade: lifecycle, sequences, fetch (puts: tier_put.c).
 * One mutex (t->mu) guards the index, RAM tier and counters; RocksDB reads
 * for fetches run outside it. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tier_internal.h"
#include "tier_size.h"

const char *tier_status_name(tier_status s) {
    static const char *n[] = {"OK",      "EINVAL", "ENOTFOUND", "EDATALOSS",
                              "ETOOBIG", "EFULL",  "EIO",       "EEXIST"};
    return (unsigned)s < sizeof n / sizeof n[0] ? n[s] : "?";
}

void tier_buf_free(void *p) {
    free(p);
}

void tier_options_init(tier_options *o) {
    memset(o, 0, sizeof *o);
    o->host_budget = 512ULL << 20;
    o->ssd_budget = 20ULL << 30;
    o->write_policy = TIER_WRITE_THROUGH;
    o->max_block_bytes = 1u << 20;
    policy_params_init(&o->params);
}

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- recovery */

typedef struct recover_ctx {
    tier_t *t;
    int bad;
    int oom; /* the index could not hold a record: the open fails (nothing is lost) */
    char *err;
    size_t errlen;
} recover_ctx;

static int recover_seq(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl) {
    recover_ctx *c = ctx;
    char tenant[TIER_TENANT_MAX + 1];
    /* key: 'S' tenant \0 seq — decode by appending a fake (layer, block) */
    uint8_t full[TIER_KEY_MAX];
    if (kl < 2 || kl - 1 + 8 > sizeof full)
        return 0;
    memcpy(full, k + 1, kl - 1);
    memset(full + kl - 1, 0, 8);
    uint64_t seq;
    uint32_t l, b, nblocks;
    tier_seq_info info;
    policy_params pp;
    int open;
    uint64_t created, step;
    if (tier_key_decode(full, kl - 1 + 8, tenant, &seq, &l, &b) != 0 ||
        tier_seqrec_decode(v, vl, &info, &pp, &open, &created, &step, &nblocks) != 0) {
        c->bad++;
        return 0;
    }
    tier_seqent *se = tier_index_add(&c->t->ix, tenant, seq, &info, &pp);
    if (!se) {
        c->oom = 1;
        return 1;
    }
    se->open = open;
    se->created_ms = created;
    se->st.step = step;
    if (tier_index_grow(se, nblocks, TIER_NONE, step) != 0) {
        c->oom = 1;
        return 1;
    }
    c->t->st.level[TIER_NONE].blocks += (uint64_t)nblocks * info.n_layers;
    return 0;
}

static int recover_block(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v, size_t vl) {
    recover_ctx *c = ctx;
    tier_t *t = c->t;
    char tenant[TIER_TENANT_MAX + 1];
    uint64_t seq;
    uint32_t l, b;
    policy_block pb;
    tier_slot sl;
    memset(&sl, 0, sizeof sl);
    if (kl < 2 || tier_key_decode(k + 1, kl - 1, tenant, &seq, &l, &b) != 0 ||
        tier_blockrec_decode(v, vl, &pb, &sl) != 0) {
        c->bad++;
        return 0;
    }
    tier_seqent *se = tier_index_find(&t->ix, tenant, seq);
    uint32_t maxb = se && se->info.max_blocks ? se->info.max_blocks : TIER_MAX_BLOCKS_DEFAULT;
    if (!se || l >= se->st.n_layers || b >= maxb) {
        c->bad++;
        return 0;
    }
    if (b >= se->st.n_blocks) {
        uint32_t old = se->st.n_blocks;
        if (tier_index_grow(se, b + 1, TIER_NONE, se->st.step) != 0) {
            c->oom = 1;
            return 1;
        }
        t->st.level[TIER_NONE].blocks += (uint64_t)(b + 1 - old) * se->st.n_layers;
    }
    if (!tier_index_touch(se, l, b)) { /* only its chunk: never the whole sequence */
        c->oom = 1;
        return 1;
    }
    /* RAM is gone: a durable HOST block is now an SSD block */
    uint8_t tier = pb.tier;
    if (tier == TIER_HOST || tier == TIER_SSD)
        tier = sl.durable ? TIER_SSD : TIER_NONE;
    if (tier != TIER_SSD && tier != TIER_DROPPED)
        tier = TIER_NONE;
    uint32_t bytes = tier == TIER_SSD ? pb.bytes : 0;
    tier_mv_set_tier(t, se, l, b, tier);
    tier_mv_set_bytes(t, se, l, b, bytes);
    policy_block *x = tier_seq_block(se, l, b);
    x->last_active = pb.last_active;
    x->hits = pb.hits;
    x->revivals = pb.revivals;
    tier_slot *s = tier_seq_slot(se, l, b);
    s->crc = sl.crc;
    s->ntokens = sl.ntokens;
    s->durable = tier == TIER_SSD;
    if (s->durable)
        t->ssd_used += bytes;
    return 0;
}

static int count_seqs(void *ctx, tier_seqent *se) {
    tier_t *t = ctx;
    if (se->open)
        t->st.sequences_open++;
    else
        t->st.sequences_retained++;
    return 0;
}

/* Frees a store whose open failed, writing nothing back (a half-recovered
 * index must not overwrite the records it could not read). */
static void tier_abandon(tier_t *t) {
    tier_ssd *ssd = t->ssd;
    t->ssd = NULL; /* tier_close then persists nothing */
    tier_close(t);
    tier_ssd_close(ssd);
}

tier_status tier_open(const tier_options *o, tier_t **out, char *err, size_t errlen) {
    char e[256];
    *out = NULL;
    if (err && errlen)
        err[0] = 0;
    if (!o || !o->data_dir || !*o->data_dir) {
        TIER_ERR(err, errlen, "data_dir is required");
        return TIER_EINVAL;
    }
    if (o->max_block_bytes == 0 || o->max_block_bytes > (1u << 30)) {
        TIER_ERR(err, errlen, "max_block_bytes %u must be in 1..1073741824", o->max_block_bytes);
        return TIER_EINVAL;
    }
    if (o->write_policy != TIER_WRITE_THROUGH && o->write_policy != TIER_WRITE_BACK) {
        TIER_ERR(err, errlen, "unknown write policy %d", (int)o->write_policy);
        return TIER_EINVAL;
    }
    if (policy_params_check(&o->params, e, sizeof e) != 0) {
        TIER_ERR(err, errlen, "default policy: %s", e);
        return TIER_EINVAL;
    }
    tier_t *t = calloc(1, sizeof *t);
    if (!t || !(t->data_dir = strdup(o->data_dir)) || tier_index_init(&t->ix) != 0) {
        if (t)
            free(t->data_dir);
        free(t);
        TIER_ERR(err, errlen, "out of memory");
        return TIER_EIO;
    }
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->io_cv, NULL);
    t->opt = *o;
    t->opt.data_dir = t->data_dir;
    tier_host_init(&t->host, o->host_budget);
    t->st.host_budget = o->host_budget;
    t->st.ssd_budget = o->ssd_budget;
    t->st.write_policy = o->write_policy;
    if (tier_ssd_open_ex(t->data_dir, o->fsync, o->blob_files, o->disk_reserve, &t->ssd, e,
                         sizeof e) != 0) {
        TIER_ERR(err, errlen, "%s", e);
        tier_index_free(&t->ix);
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->io_cv);
        free(t->data_dir);
        free(t);
        return TIER_EIO;
    }
    recover_ctx rc = {t, 0, 0, err, errlen};
    uint8_t s = 'S', b = 'B';
    e[0] = 0;
    if (tier_ssd_scan_meta(t->ssd, &s, 1, recover_seq, &rc, e, sizeof e) != 0 || rc.oom ||
        tier_ssd_scan_meta(t->ssd, &b, 1, recover_block, &rc, e, sizeof e) != 0 || rc.oom) {
        if (rc.oom)
            snprintf(e, sizeof e, "out of memory building the index (nothing was changed on disk)");
        TIER_ERR(err, errlen, "recovering the index: %s", e);
        tier_abandon(t);
        return TIER_EIO;
    }
    if (rc.bad && err && errlen) /* not fatal: report through err with TIER_OK */
        snprintf(err, errlen, "recovery skipped %d malformed index records", rc.bad);
    tier_index_each(&t->ix, count_seqs, t);
    *out = t;
    return TIER_OK;
}

static int flush_seq(void *ctx, tier_seqent *se) {
    tier_t *t = ctx;
    tier_mv_persist_seq(t, se, NULL, 0);
    return 0;
}

tier_status tier_mv_flush_all(tier_t *t, uint64_t *moved, char *err, size_t errlen) {
    tier_status first = TIER_OK;
    uint64_t n = 0;
    while (t->host.head) {
        tier_status rc = tier_mv_host_leave(t, t->host.head, err, errlen);
        if (rc != TIER_OK) {
            if (first == TIER_OK)
                first = rc;
            /* cannot write it: let it go from RAM so the loop ends */
            tier_host_entry *e = t->host.head;
            tier_mv_forget(t, e->owner, e->layer, e->block, TIER_NONE, 0, NULL, 0);
        }
        n++;
    }
    if (moved)
        *moved = n;
    return first;
}

tier_status tier_close(tier_t *t) {
    if (!t)
        return TIER_OK;
    tier_status rc = TIER_OK;
    pthread_mutex_lock(&t->mu);
    tier_io_wait(t);
    if (t->ssd) {
        rc = tier_mv_flush_all(t, NULL, NULL, 0);
        tier_index_each(&t->ix, flush_seq, t);
    }
    while (t->host.head) { /* only when the store never opened */
        tier_host_entry *e = t->host.head;
        tier_host_unlink(&t->host, e);
        tier_host_entry_free(e);
    }
    tier_index_free(&t->ix);
    tier_ssd_close(t->ssd);
    pthread_mutex_unlock(&t->mu);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->io_cv);
    free(t->keep);
    free(t->reads);
    free(t->data_dir);
    free(t);
    return rc;
}

/* ---------------------------------------------------------------- sequences */

static int same_shape(const tier_seq_info *a, const tier_seq_info *b) {
    return a->n_layers == b->n_layers && a->n_kv_heads == b->n_kv_heads &&
           a->head_dim == b->head_dim && a->block_tokens == b->block_tokens &&
           a->max_blocks == b->max_blocks && a->block_bytes == b->block_bytes;
}

uint64_t tier_seq_geometry(const tier_seq_info *in) {
    return (uint64_t)in->block_tokens * in->n_kv_heads * in->head_dim * 2;
}

int tier_seq_size_fits(const tier_seq_info *in, uint64_t len) {
    uint64_t g = tier_seq_geometry(in);
    if (in->block_bytes)
        return len == in->block_bytes;
    return g && (len == g || len == 2 * g || len == 4 * g);
}

static tier_status check_info(const tier_t *t, const tier_seq_info *in, char *err, size_t errlen) {
    if (!in) {
        TIER_ERR(err, errlen, "sequence info is required");
        return TIER_EINVAL;
    }
    if (in->n_layers == 0 || in->n_layers > TIER_MAX_LAYERS || in->n_kv_heads == 0 ||
        in->n_kv_heads > TIER_MAX_KV_HEADS || in->head_dim == 0 ||
        in->head_dim > TIER_MAX_HEAD_DIM || in->block_tokens == 0 ||
        in->block_tokens > TIER_MAX_BLOCK_TOKENS) {
        TIER_ERR(err, errlen,
                 "bad sequence shape: n_layers %u (1..%d), n_kv_heads %u (1..%d), head_dim %u "
                 "(1..%d), block_tokens %u (1..%d)",
                 in->n_layers, TIER_MAX_LAYERS, in->n_kv_heads, TIER_MAX_KV_HEADS, in->head_dim,
                 TIER_MAX_HEAD_DIM, in->block_tokens, TIER_MAX_BLOCK_TOKENS);
        return TIER_EINVAL;
    }
    uint64_t geo = tier_seq_geometry(in);
    if (in->block_bytes > t->opt.max_block_bytes) {
        TIER_ERR(err, errlen, "block_bytes %u exceeds the service limit max_block_bytes %u",
                 in->block_bytes, t->opt.max_block_bytes);
        return TIER_ETOOBIG;
    }
    if (in->block_bytes && in->block_bytes != geo && in->block_bytes != 2 * geo &&
        in->block_bytes != 4 * geo) {
        TIER_ERR(err, errlen,
                 "block_bytes %u does not match the shape: block_tokens %u x kv_heads %u x "
                 "head_dim %u x 2 (K,V) = %llu elements, x 1, 2 or 4 bytes = %llu, %llu or %llu",
                 in->block_bytes, in->block_tokens, in->n_kv_heads, in->head_dim,
                 (unsigned long long)geo, (unsigned long long)geo, (unsigned long long)(2 * geo),
                 (unsigned long long)(4 * geo));
        return TIER_EINVAL;
    }
    if (geo > t->opt.max_block_bytes) {
        TIER_ERR(err, errlen,
                 "a block of this shape (block_tokens %u x kv_heads %u x head_dim %u x 2) needs at "
                 "least %llu bytes, over the service limit max_block_bytes %u",
                 in->block_tokens, in->n_kv_heads, in->head_dim, (unsigned long long)geo,
                 t->opt.max_block_bytes);
        return TIER_ETOOBIG;
    }
    if (in->max_blocks > 16u * TIER_MAX_BLOCKS_DEFAULT) {
        TIER_ERR(err, errlen, "max_blocks %u exceeds %u", in->max_blocks,
                 16u * TIER_MAX_BLOCKS_DEFAULT);
        return TIER_EINVAL;
    }
    if (in->params) {
        char e[200];
        if (policy_params_check(in->params, e, sizeof e) != 0) {
            TIER_ERR(err, errlen, "policy: %s", e);
            return TIER_EINVAL;
        }
    }
    return TIER_OK;
}

/* Writes se's sequence record with mu released (a round of one record):
 * TIER_OK, EFULL (disk full) or EIO with a message. mu held on return. */
static tier_status persist_seq_unlocked(tier_t *t, tier_seqent *se, char *err, size_t errlen) {
    tier_status rc = tier_mv_round_begin(t, err, errlen);
    if (rc == TIER_OK)
        rc = tier_mv_persist_seq(t, se, err, errlen); /* into the round's batch */
    return tier_mv_round_end(t, rc, "the sequence record", err, errlen);
}

static uint64_t tenant_seqs(tier_t *t, const char *tenant) {
    uint64_t seqs, bytes;
    tier_mv_tenant_usage(t, tenant, &seqs, &bytes);
    return seqs;
}

tier_status tier_seq_open(tier_t *t, const char *tenant, uint64_t seq, const tier_seq_info *info,
                          char *err, size_t errlen) {
    char e[160];
    if (tier_key_tenant_name_check(tenant, e, sizeof e) != 0) {
        TIER_ERR(err, errlen, "%s", e);
        return TIER_EINVAL;
    }
    tier_status rc = check_info(t, info, err, errlen);
    if (rc != TIER_OK)
        return rc;
    pthread_mutex_lock(&t->mu);
    tier_io_wait(t);
    tier_seqent *se = tier_index_find(&t->ix, tenant, seq);
    if (se) {
        if (!same_shape(&se->info, info)) {
            TIER_ERR(
                err, errlen,
                "sequence %s/%llu exists with another shape (%u layers, %u kv heads, head_dim %u, "
                "block_tokens %u)",
                tenant, (unsigned long long)seq, se->info.n_layers, se->info.n_kv_heads,
                se->info.head_dim, se->info.block_tokens);
            rc = TIER_EEXIST;
        } else {
            if (info->params)
                se->params = *info->params;
            if (!se->open) {
                se->open = 1;
                t->st.sequences_retained--;
                t->st.sequences_open++;
            }
            rc = persist_seq_unlocked(t, se, err, errlen);
        }
    } else if (t->opt.tenant_max_seqs && tenant_seqs(t, tenant) >= t->opt.tenant_max_seqs) {
        TIER_ERR(err, errlen,
                 "tenant %s has %u sequences (open or retained), its quota (kvtierd "
                 "--tenant-max-sequences); close some first",
                 tenant, t->opt.tenant_max_seqs);
        rc = TIER_EFULL;
    } else {
        se =
            tier_index_add(&t->ix, tenant, seq, info, info->params ? info->params : &t->opt.params);
        if (!se) {
            TIER_ERR(err, errlen, "out of memory");
            rc = TIER_EIO;
        } else {
            se->created_ms = now_ms();
            t->st.sequences_open++;
            rc = persist_seq_unlocked(t, se, err, errlen);
            if (rc != TIER_OK) { /* writers waited: se is still the one added */
                t->st.sequences_open--;
                tier_index_remove(&t->ix, se);
            }
        }
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

/* Forget a sequence entirely: RAM, RocksDB payloads and records. The index
 * forgets it at once (fetches: NOT_FOUND); the range deletes are written with
 * mu released (writers, e.g. a reopen of the same id, wait for them).
 * *reclaim = 1 when the deletes landed (the caller may reclaim the disk
 * space, without the lock). */
static tier_status seq_delete(tier_t *t, tier_seqent *se, int *reclaim, char *err, size_t errlen) {
    uint64_t unstored[TIER_NLEVELS];
    tier_index_unstored(se, unstored);
    for (int i = 0; i < TIER_NLEVELS; i++) /* counted as NONE below */
        if (i != TIER_NONE) {
            t->st.level[i].blocks -= unstored[i];
            t->st.level[TIER_NONE].blocks += unstored[i];
        }
    size_t pos = 0;
    for (tier_chunk *c; (c = tier_index_next_chunk(se, &pos));)
        for (uint32_t j = 0; j < POLICY_CHUNK_BLOCKS && c->pc.first + j < se->st.n_blocks; j++) {
            uint32_t l = c->pc.layer, b = c->pc.first + j;
            tier_slot *s = &c->slots[j];
            if (s->host) {
                tier_host_unlink(&t->host, s->host);
                tier_host_entry_free(s->host);
                s->host = NULL;
            }
            if (s->durable)
                t->ssd_used -= tier_seq_block(se, l, b)->bytes;
            s->durable = 0;
            tier_mv_set_bytes(t, se, l, b, 0);
            tier_mv_set_tier(t, se, l, b, TIER_NONE);
        }
    t->st.level[TIER_NONE].blocks -= (uint64_t)se->st.n_layers * se->st.n_blocks;
    if (se->open)
        t->st.sequences_open--;
    else
        t->st.sequences_retained--;
    tier_status rc = tier_mv_round_begin(t, err, errlen);
    if (rc != TIER_OK) { /* out of memory: forgotten here, the records stay on disk */
        tier_index_remove(&t->ix, se);
        return rc;
    }
    uint8_t lo[TIER_META_KEY_MAX], hi[TIER_META_KEY_MAX], sk[TIER_META_KEY_MAX];
    rocksdb_writebatch_t *wb = t->defer;
    size_t n = tier_key_prefix_seq(se->tenant, se->seq, lo);
    size_t m = tier_key_upper_bound(lo, n, hi);
    if (m)
        rocksdb_writebatch_delete_range_cf(wb, t->ssd->cf_blocks, (const char *)lo, n,
                                           (const char *)hi, m);
    n = tier_meta_prefix_blocks(se->tenant, se->seq, lo);
    m = tier_key_upper_bound(lo, n, hi);
    if (m)
        rocksdb_writebatch_delete_range_cf(wb, t->ssd->cf_meta, (const char *)lo, n,
                                           (const char *)hi, m);
    n = tier_meta_key_seq(se->tenant, se->seq, sk);
    rocksdb_writebatch_delete_cf(wb, t->ssd->cf_meta, (const char *)sk, n);
    tier_index_remove(&t->ix, se);
    rc = tier_mv_round_end(t, TIER_OK, "the closed sequence's deletes", err, errlen);
    *reclaim = rc == TIER_OK;
    return rc;
}

tier_status tier_seq_close(tier_t *t, const char *tenant, uint64_t seq, int retain, char *err,
                           size_t errlen) {
    int reclaim = 0;
    pthread_mutex_lock(&t->mu);
    tier_io_wait(t);
    tier_seqent *se = NULL;
    tier_status rc = tier_mv_lookup(t, tenant, seq, 0, &se, err, errlen);
    if (rc == TIER_OK) {
        if (retain < 0)
            retain = se->params.retain_on_close;
        /* both release mu while RocksDB works: se is not used after them */
        if (!retain)
            rc = seq_delete(t, se, &reclaim, err, errlen);
        else
            rc = tier_mv_close_retain(t, se, err, errlen);
    }
    pthread_mutex_unlock(&t->mu);
    if (reclaim)
        tier_mv_disk_reclaim(t, tenant, seq); /* disk full: free it now (no lock) */
    return rc;
}

/* ---------------------------------------------------------------- blocks */

tier_status tier_check_key(tier_t *t, const tier_block_key *k, int need_open, tier_seqent **out,
                           char *err, size_t errlen) {
    if (!k) {
        TIER_ERR(err, errlen, "block key is required");
        return TIER_EINVAL;
    }
    tier_status rc = tier_mv_lookup(t, k->tenant, k->seq, need_open, out, err, errlen);
    if (rc != TIER_OK)
        return rc;
    const tier_seqent *se = *out;
    uint32_t maxb = se->info.max_blocks ? se->info.max_blocks : TIER_MAX_BLOCKS_DEFAULT;
    if (k->layer >= se->info.n_layers || k->block >= maxb) {
        TIER_ERR(
            err, errlen,
            "block (layer %u, block %u) of %s/%llu is outside the sequence shape (%u layers x %u "
            "blocks)",
            k->layer, k->block, k->tenant, (unsigned long long)k->seq, se->info.n_layers, maxb);
        return TIER_EINVAL;
    }
    return TIER_OK;
}

tier_status tier_fetch(tier_t *t, const tier_block_key *k, void **data_out, size_t *len_out,
                       uint32_t *crc_out, int *tier_out, char *err, size_t errlen) {
    uint64_t t0 = now_ns();
    *data_out = NULL;
    *len_out = 0;
    pthread_mutex_lock(&t->mu);
    tier_seqent *se = NULL;
    tier_status rc = tier_check_key(t, k, 0, &se, err, errlen);
    if (rc != TIER_OK) {
        if (rc == TIER_ENOTFOUND)
            t->st.not_found++;
        pthread_mutex_unlock(&t->mu);
        return rc;
    }
    policy_block pb;
    tier_index_peek(se, k->layer, k->block, &pb, NULL);
    uint8_t tier = pb.tier;
    if (tier != TIER_HOST && tier != TIER_SSD) {
        t->st.not_found++;
        TIER_ERR(err, errlen, "block (layer %u, block %u) of %s/%llu is not stored (tier %s)",
                 k->layer, k->block, k->tenant, (unsigned long long)k->seq, policy_tier_name(tier));
        pthread_mutex_unlock(&t->mu);
        return TIER_ENOTFOUND;
    }
    tier_slot *s = tier_seq_slot(se, k->layer, k->block);
    t->st.level[tier].fetches++;
    if (s->host) {
        tier_host_entry *e = s->host;
        void *d = malloc(e->len);
        if (!d) {
            pthread_mutex_unlock(&t->mu);
            TIER_ERR(err, errlen, "out of memory");
            return TIER_EIO;
        }
        memcpy(d, e->data, e->len);
        uint32_t crc = e->crc;
        size_t len = e->len;
        if (!s->pinned)
            tier_host_touch(&t->host, e); /* pinned: held out of the LRU by a summary */
        t->st.level[TIER_HOST].hits++;
        pthread_mutex_unlock(&t->mu);
        if (tier_crc32c(0, d, len) != crc) { /* RAM corruption: never serve it */
            free(d);
            TIER_ERR(err, errlen, "RAM copy of (layer %u, block %u) fails its crc32c", k->layer,
                     k->block);
            pthread_mutex_lock(&t->mu);
            t->st.dataloss++;
            pthread_mutex_unlock(&t->mu);
            return TIER_EDATALOSS;
        }
        *data_out = d;
        *len_out = len;
        if (crc_out)
            *crc_out = crc;
        if (tier_out)
            *tier_out = TIER_HOST;
        pthread_mutex_lock(&t->mu);
        t->st.level[TIER_HOST].fetch_ns += now_ns() - t0;
        pthread_mutex_unlock(&t->mu);
        return TIER_OK;
    }
    uint32_t want_crc = s->crc;
    t->st.level[TIER_HOST].misses++;
    pthread_mutex_unlock(&t->mu);

    uint8_t key[TIER_KEY_MAX];
    size_t kl = tier_key_encode(k->tenant, k->seq, k->layer, k->block, key);
    void *d = NULL;
    uint32_t len = 0, crc = 0;
    char e[200];
    int g = tier_ssd_get_block(t->ssd, key, kl, &d, &len, &crc, e, sizeof e);
    pthread_mutex_lock(&t->mu);
    if (g == 0 && crc != want_crc) {
        /* a put may have replaced the block while we read: trust the index now */
        tier_seqent *now = tier_index_find(&t->ix, k->tenant, k->seq);
        uint32_t cur = want_crc;
        if (now && k->block < now->st.n_blocks) {
            tier_slot cs;
            tier_index_peek(now, k->layer, k->block, NULL, &cs);
            cur = cs.crc;
        }
        if (cur != crc) {
            snprintf(e, sizeof e, "stored payload's crc32c %08x differs from the index's %08x", crc,
                     cur);
            free(d);
            d = NULL;
            g = -2;
        }
    }
    if (g == 0) {
        t->st.level[TIER_SSD].hits++;
        t->st.level[TIER_SSD].fetch_ns += now_ns() - t0;
    } else if (g == 1) {
        t->st.not_found++;
        rc = TIER_ENOTFOUND;
        TIER_ERR(err, errlen, "block (layer %u, block %u) of %s/%llu is no longer stored", k->layer,
                 k->block, k->tenant, (unsigned long long)k->seq);
    } else if (g == -2) {
        t->st.dataloss++;
        rc = TIER_EDATALOSS;
        TIER_ERR(err, errlen, "block (layer %u, block %u) of %s/%llu: %s", k->layer, k->block,
                 k->tenant, (unsigned long long)k->seq, e);
    } else {
        rc = TIER_EIO;
        TIER_ERR(err, errlen, "%s", e);
    }
    pthread_mutex_unlock(&t->mu);
    if (rc != TIER_OK)
        return rc;
    *data_out = d;
    *len_out = len;
    if (crc_out)
        *crc_out = crc;
    if (tier_out)
        *tier_out = TIER_SSD;
    return TIER_OK;
}

tier_status tier_block_stat(tier_t *t, const tier_block_key *k, tier_block_meta *out, char *err,
                            size_t errlen) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&t->mu);
    tier_seqent *se = NULL;
    tier_status rc = tier_check_key(t, k, 0, &se, err, errlen);
    if (rc == TIER_OK) {
        policy_block x; /* NONE past n_blocks */
        tier_slot s;
        tier_index_peek(se, k->layer, k->block, &x, &s);
        out->tier = x.tier;
        out->bytes = x.bytes;
        out->crc32c = s.crc;
        out->ntokens = s.ntokens;
        out->last_active = x.last_active;
        out->hits = x.hits;
        out->revivals = x.revivals;
        out->durable = s.durable;
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}
