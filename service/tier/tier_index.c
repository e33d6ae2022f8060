/* tier_index.c — in-memory block index (sequences; per sequence, stored
 * chunks in a hash table and growth records) and its record codecs. */
#include "tier_index.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEQREC_VERSION 1
#define BLOCKREC_VERSION 1

static uint64_t hash_key(const char *tenant, uint64_t seq) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)tenant; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    for (int i = 0; i < 8; i++)
        h = (h ^ ((seq >> (8 * i)) & 0xFF)) * 1099511628211ULL;
    return h;
}

/* ---------------------------------------------------------------- fault seam */

static atomic_long fault_countdown; /* > 0: the allocation that brings it to 0 fails */
static atomic_long fault_hits;
static atomic_int fault_env_read;

long tier_index_fault_set(long nth) {
    atomic_store(&fault_env_read, 1); /* an explicit setting wins over the environment */
    atomic_store(&fault_countdown, nth > 0 ? nth : 0);
    return atomic_load(&fault_hits);
}

static void fault_env(void) {
    if (atomic_exchange(&fault_env_read, 1))
        return;
    const char *e = getenv("KVTIER_TEST_INDEX_ALLOC_FAIL");
    if (e && *e)
        atomic_store(&fault_countdown, strtol(e, NULL, 10));
}

/* 1 when the fault seam makes this allocation fail (counts it). */
static int fault_due(void) {
    long c = atomic_load(&fault_countdown);
    while (c > 0 && !atomic_compare_exchange_weak(&fault_countdown, &c, c - 1))
        ;
    if (c != 1)
        return 0;
    atomic_fetch_add(&fault_hits, 1);
    return 1;
}

/* calloc / realloc of the index: NULL (p untouched) when out of memory, or
 * when the fault seam says so. */
static void *ix_calloc(size_t n, size_t size) {
    return fault_due() ? NULL : calloc(n, size);
}
static void *ix_realloc(void *p, size_t size) {
    return fault_due() ? NULL : realloc(p, size);
}

/* ---------------------------------------------------------------- index */

int tier_index_init(tier_index *ix) {
    fault_env();
    ix->nbuckets = 256;
    ix->count = 0;
    ix->buckets = ix_calloc(ix->nbuckets, sizeof *ix->buckets);
    return ix->buckets ? 0 : -1;
}

static void seqent_free(tier_seqent *se) {
    for (size_t i = 0; i < se->st.table_size; i++)
        free(se->st.chunks[i]);
    free(se->st.chunks);
    free(se->grows);
    free(se);
}

void tier_index_free(tier_index *ix) {
    for (size_t i = 0; i < ix->nbuckets; i++) {
        tier_seqent *se = ix->buckets[i];
        while (se) {
            tier_seqent *n = se->next;
            seqent_free(se);
            se = n;
        }
    }
    free(ix->buckets);
    ix->buckets = NULL;
    ix->count = 0;
}

tier_seqent *tier_index_find(tier_index *ix, const char *tenant, uint64_t seq) {
    for (tier_seqent *se = ix->buckets[hash_key(tenant, seq) % ix->nbuckets]; se; se = se->next)
        if (se->seq == seq && strcmp(se->tenant, tenant) == 0)
            return se;
    return NULL;
}

static void rehash(tier_index *ix) {
    size_t nb = ix->nbuckets * 4;
    tier_seqent **b = ix_calloc(nb, sizeof *b);
    if (!b)
        return; /* keep the old table: longer chains, still correct */
    for (size_t i = 0; i < ix->nbuckets; i++)
        for (tier_seqent *se = ix->buckets[i], *n; se; se = n) {
            n = se->next;
            size_t j = hash_key(se->tenant, se->seq) % nb;
            se->next = b[j];
            b[j] = se;
        }
    free(ix->buckets);
    ix->buckets = b;
    ix->nbuckets = nb;
}

tier_seqent *tier_index_add(tier_index *ix, const char *tenant, uint64_t seq,
                            const tier_seq_info *info, const policy_params *params) {
    tier_seqent *se = ix_calloc(1, sizeof *se);
    if (!se)
        return NULL;
    snprintf(se->tenant, sizeof se->tenant, "%s", tenant);
    se->seq = seq;
    se->info = *info;
    se->info.params = NULL;
    se->params = *params;
    se->open = 1;
    se->st.n_layers = info->n_layers;
    if (ix->count + 1 > ix->nbuckets * 2)
        rehash(ix);
    size_t j = hash_key(tenant, seq) % ix->nbuckets;
    se->next = ix->buckets[j];
    ix->buckets[j] = se;
    ix->count++;
    return se;
}

void tier_index_remove(tier_index *ix, tier_seqent *se) {
    tier_seqent **pp = &ix->buckets[hash_key(se->tenant, se->seq) % ix->nbuckets];
    while (*pp && *pp != se)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = se->next;
        ix->count--;
    }
    seqent_free(se);
}

/* ---------------------------------------------------------------- blocks */

/* The growth record that covers block b (< n_blocks; there is one). */
static const tier_grow_rec *grow_of(const tier_seqent *se, uint32_t b) {
    uint32_t lo = 0, hi = se->n_grows; /* last record with first <= b */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (se->grows[mid].first <= b)
            lo = mid;
        else
            hi = mid;
    }
    return &se->grows[lo];
}

/* Blocks [from, to) of a stored chunk get the values of a new block. */
static void chunk_init(tier_chunk *c, uint32_t from, uint32_t to, uint8_t tier, uint64_t step) {
    for (uint32_t b = from; b < to; b++) {
        policy_block *x = &c->pc.blocks[b - c->pc.first];
        memset(x, 0, sizeof *x);
        x->tier = tier;
        x->last_active = step;
        memset(&c->slots[b - c->pc.first], 0, sizeof(tier_slot));
    }
}

int tier_index_grow(tier_seqent *se, uint32_t n_blocks, uint8_t tier, uint64_t step) {
    policy_state *st = &se->st;
    uint32_t old = st->n_blocks;
    if (n_blocks <= old)
        return 0;
    const tier_grow_rec *last = se->n_grows ? &se->grows[se->n_grows - 1] : NULL;
    if (!last || last->tier != tier || last->step != step) {
        if (se->n_grows == se->cap_grows) {
            uint32_t nc = se->cap_grows ? se->cap_grows * 2 : 4;
            tier_grow_rec *g = ix_realloc(se->grows, (size_t)nc * sizeof *g);
            if (!g)
                return -1;
            se->grows = g;
            se->cap_grows = nc;
        }
        se->grows[se->n_grows++] = (tier_grow_rec){old, tier, step};
    }
    /* a stored chunk across the old end: its new blocks get the new values */
    if (old % POLICY_CHUNK_BLOCKS)
        for (uint32_t l = 0; l < st->n_layers; l++) {
            tier_chunk *c = (tier_chunk *)policy_chunk_find(st, l, old);
            if (c) {
                uint32_t end = c->pc.first + POLICY_CHUNK_BLOCKS;
                chunk_init(c, old, n_blocks < end ? n_blocks : end, tier, step);
            }
        }
    st->n_blocks = n_blocks;
    return 0;
}

/* Room for one more chunk in the table (load <= 1/2). 0 or -1. */
static int table_room(policy_state *st) {
    if (st->n_chunks + 1 <= st->table_size / 2)
        return 0;
    size_t ns = st->table_size ? st->table_size * 2 : 16;
    policy_chunk **nt = ix_calloc(ns, sizeof *nt);
    if (!nt)
        return -1;
    policy_state n = *st;
    n.chunks = nt;
    n.table_size = ns;
    n.n_chunks = 0;
    for (size_t i = 0; i < st->table_size; i++)
        if (st->chunks[i])
            policy_chunk_insert(&n, st->chunks[i]); /* room: ns / 2 >= old size */
    free(st->chunks);
    *st = n;
    return 0;
}

policy_block *tier_index_touch(tier_seqent *se, uint32_t layer, uint32_t block) {
    policy_state *st = &se->st;
    policy_block *x = policy_block_at(st, layer, block);
    if (x)
        return x;
    if (table_room(st) != 0)
        return NULL;
    tier_chunk *c = ix_calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->pc.layer = layer;
    c->pc.first = block - block % POLICY_CHUNK_BLOCKS;
    uint32_t end = c->pc.first + POLICY_CHUNK_BLOCKS;
    if (end > st->n_blocks)
        end = st->n_blocks;
    for (uint32_t b = c->pc.first; b < end;) { /* one growth record at a time */
        const tier_grow_rec *g = grow_of(se, b);
        uint32_t gend = g + 1 < se->grows + se->n_grows ? g[1].first : st->n_blocks;
        uint32_t to = gend < end ? gend : end;
        chunk_init(c, b, to, g->tier, g->step);
        b = to;
    }
    policy_chunk_insert(st, &c->pc);
    return &c->pc.blocks[block % POLICY_CHUNK_BLOCKS];
}

uint64_t tier_index_entries(const tier_seqent *se) {
    return (uint64_t)se->st.n_chunks * POLICY_CHUNK_BLOCKS + se->n_grows;
}

void tier_index_peek(const tier_seqent *se, uint32_t layer, uint32_t block, policy_block *b,
                     tier_slot *s) {
    tier_chunk *c =
        block < se->st.n_blocks ? (tier_chunk *)policy_chunk_find(&se->st, layer, block) : NULL;
    if (c) {
        if (b)
            *b = c->pc.blocks[block % POLICY_CHUNK_BLOCKS];
        if (s)
            *s = c->slots[block % POLICY_CHUNK_BLOCKS];
        return;
    }
    if (b) {
        memset(b, 0, sizeof *b);
        b->tier = TIER_NONE;
        if (block < se->st.n_blocks) {
            const tier_grow_rec *g = grow_of(se, block);
            b->tier = g->tier;
            b->last_active = g->step;
        }
    }
    if (s)
        memset(s, 0, sizeof *s);
}

tier_chunk *tier_index_next_chunk(const tier_seqent *se, size_t *pos) {
    while (*pos < se->st.table_size) {
        policy_chunk *c = se->st.chunks[(*pos)++];
        if (c)
            return (tier_chunk *)c;
    }
    return NULL;
}

/* End of growth record i (exclusive). */
static uint32_t grow_end(const tier_seqent *se, uint32_t i) {
    return i + 1 < se->n_grows ? se->grows[i + 1].first : se->st.n_blocks;
}

void tier_index_unstored(const tier_seqent *se, uint64_t count[TIER_NLEVELS]) {
    memset(count, 0, TIER_NLEVELS * sizeof *count);
    for (uint32_t i = 0; i < se->n_grows; i++)
        count[se->grows[i].tier] +=
            (uint64_t)(grow_end(se, i) - se->grows[i].first) * se->st.n_layers;
    size_t pos = 0;
    for (tier_chunk *c; (c = tier_index_next_chunk(se, &pos));) {
        uint32_t end = c->pc.first + POLICY_CHUNK_BLOCKS;
        if (end > se->st.n_blocks)
            end = se->st.n_blocks;
        for (uint32_t b = c->pc.first; b < end; b++)
            count[grow_of(se, b)->tier]--;
    }
}

void tier_index_retier_unstored(tier_seqent *se, uint8_t from, uint8_t to) {
    for (uint32_t i = 0; i < se->n_grows; i++)
        if (se->grows[i].tier == from)
            se->grows[i].tier = to;
}

void tier_index_fill_tiers(const tier_seqent *se, uint8_t *m) {
    uint32_t nb = se->st.n_blocks;
    for (uint32_t l = 0; l < se->st.n_layers; l++)
        for (uint32_t i = 0; i < se->n_grows; i++)
            memset(m + (size_t)l * nb + se->grows[i].first, se->grows[i].tier,
                   grow_end(se, i) - se->grows[i].first);
    size_t pos = 0;
    for (tier_chunk *c; (c = tier_index_next_chunk(se, &pos));)
        for (uint32_t j = 0; j < POLICY_CHUNK_BLOCKS && c->pc.first + j < nb; j++)
            m[(size_t)c->pc.layer * nb + c->pc.first + j] = c->pc.blocks[j].tier;
}

void tier_index_each(tier_index *ix, int (*fn)(void *ctx, tier_seqent *se), void *ctx) {
    for (size_t i = 0; i < ix->nbuckets; i++)
        for (tier_seqent *se = ix->buckets[i], *n; se; se = n) {
            n = se->next; /* fn may remove se */
            if (fn(ctx, se))
                return;
        }
}

/* ---------------------------------------------------------------- records */

size_t tier_meta_key_seq(const char *tenant, uint64_t seq, uint8_t *buf) {
    buf[0] = 'S';
    size_t n = tier_key_prefix_seq(tenant, seq, buf + 1);
    return n ? n + 1 : 0;
}

size_t tier_meta_prefix_blocks(const char *tenant, uint64_t seq, uint8_t *buf) {
    buf[0] = 'B';
    size_t n = tier_key_prefix_seq(tenant, seq, buf + 1);
    return n ? n + 1 : 0;
}

size_t tier_meta_key_block(const char *tenant, uint64_t seq, uint32_t layer, uint32_t block,
                           uint8_t *buf) {
    buf[0] = 'B';
    size_t n = tier_key_encode(tenant, seq, layer, block, buf + 1);
    return n ? n + 1 : 0;
}

static uint8_t *put32(uint8_t *p, uint32_t v) {
    tier_be32_put(p, v);
    return p + 4;
}
static uint8_t *put64(uint8_t *p, uint64_t v) {
    tier_be64_put(p, v);
    return p + 8;
}

size_t tier_seqrec_encode(const tier_seqent *se, uint8_t *buf) {
    uint8_t *p = buf;
    const tier_seq_info *i = &se->info;
    const policy_params *pp = &se->params;
    *p++ = SEQREC_VERSION;
    *p++ = (uint8_t)(se->open != 0);
    p = put32(p, i->n_layers);
    p = put32(p, i->n_kv_heads);
    p = put32(p, i->head_dim);
    p = put32(p, i->block_tokens);
    p = put32(p, i->max_blocks);
    p = put32(p, i->block_bytes);
    p = put64(p, se->created_ms);
    p = put64(p, se->st.step);
    p = put32(p, se->st.n_blocks);
    uint64_t tp;
    memcpy(&tp, &pp->top_p, 8);
    p = put64(p, tp);
    p = put32(p, pp->window_steps);
    p = put32(p, pp->hot_inactive_steps);
    p = put32(p, pp->recent_blocks);
    p = put32(p, pp->sink_blocks);
    p = put32(p, pp->prefetch_min_revivals);
    p = put64(p, pp->host_budget_bytes);
    p = put64(p, pp->ssd_budget_bytes);
    p = put32(p, (uint32_t)(pp->retain_on_close != 0));
    uint32_t nl = pp->n_layer_budgets > POLICY_MAX_LAYERS ? POLICY_MAX_LAYERS : pp->n_layer_budgets;
    p = put32(p, nl);
    for (uint32_t l = 0; l < nl; l++)
        p = put32(p, pp->layer_hot_budget[l]);
    return (size_t)(p - buf);
}

#define SEQREC_FIXED (2 + 6 * 4 + 8 + 8 + 4 + 8 + 5 * 4 + 8 + 8 + 4 + 4)

int tier_seqrec_decode(const uint8_t *v, size_t vl, tier_seq_info *info, policy_params *params,
                       int *open, uint64_t *created_ms, uint64_t *step, uint32_t *n_blocks) {
    if (vl < SEQREC_FIXED || v[0] != SEQREC_VERSION)
        return -1;
    const uint8_t *p = v + 2;
    memset(info, 0, sizeof *info);
    memset(params, 0, sizeof *params);
    *open = v[1];
    info->n_layers = tier_be32_get(p), p += 4;
    info->n_kv_heads = tier_be32_get(p), p += 4;
    info->head_dim = tier_be32_get(p), p += 4;
    info->block_tokens = tier_be32_get(p), p += 4;
    info->max_blocks = tier_be32_get(p), p += 4;
    info->block_bytes = tier_be32_get(p), p += 4;
    *created_ms = tier_be64_get(p), p += 8;
    *step = tier_be64_get(p), p += 8;
    *n_blocks = tier_be32_get(p), p += 4;
    uint64_t tp = tier_be64_get(p);
    p += 8;
    memcpy(&params->top_p, &tp, 8);
    params->window_steps = tier_be32_get(p), p += 4;
    params->hot_inactive_steps = tier_be32_get(p), p += 4;
    params->recent_blocks = tier_be32_get(p), p += 4;
    params->sink_blocks = tier_be32_get(p), p += 4;
    params->prefetch_min_revivals = tier_be32_get(p), p += 4;
    params->host_budget_bytes = tier_be64_get(p), p += 8;
    params->ssd_budget_bytes = tier_be64_get(p), p += 8;
    params->retain_on_close = (int)tier_be32_get(p), p += 4;
    uint32_t nl = tier_be32_get(p);
    p += 4;
    if (nl > POLICY_MAX_LAYERS || vl != SEQREC_FIXED + 4 * (size_t)nl)
        return -1;
    params->n_layer_budgets = nl;
    for (uint32_t l = 0; l < nl; l++, p += 4)
        params->layer_hot_budget[l] = tier_be32_get(p);
    if (info->n_layers == 0 || info->n_layers > POLICY_MAX_LAYERS)
        return -1;
    return 0;
}

void tier_blockrec_encode(const policy_block *b, const tier_slot *s, uint8_t *buf) {
    memset(buf, 0, TIER_BLOCKREC_LEN);
    buf[0] = BLOCKREC_VERSION;
    buf[1] = b->tier;
    buf[2] = s->durable;
    tier_be32_put(buf + 4, s->ntokens);
    tier_be32_put(buf + 8, b->bytes);
    tier_be32_put(buf + 12, s->crc);
    tier_be64_put(buf + 16, b->last_active);
    tier_be32_put(buf + 24, b->hits);
    tier_be32_put(buf + 28, b->revivals);
}

int tier_blockrec_decode(const uint8_t *v, size_t vl, policy_block *b, tier_slot *s) {
    if (vl != TIER_BLOCKREC_LEN || v[0] != BLOCKREC_VERSION || v[1] >= TIER_NLEVELS)
        return -1;
    b->tier = v[1];
    s->durable = v[2];
    s->ntokens = tier_be32_get(v + 4);
    b->bytes = tier_be32_get(v + 8);
    s->crc = tier_be32_get(v + 12);
    b->last_active = tier_be64_get(v + 16);
    b->hits = tier_be32_get(v + 24);
    b->revivals = tier_be32_get(v + 28);
    return 0;
}
