/* tier_index.c — in-memory block index and its record codecs. */
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

/* calloc of the index: NULL when out of memory, or when the fault seam says so. */
static void *ix_calloc(size_t n, size_t size) {
    long c = atomic_load(&fault_countdown);
    while (c > 0 && !atomic_compare_exchange_weak(&fault_countdown, &c, c - 1))
        ;
    if (c == 1) {
        atomic_fetch_add(&fault_hits, 1);
        return NULL;
    }
    return calloc(n, size);
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
    free(se->st.blocks);
    free(se->slots);
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

int tier_index_grow(tier_seqent *se, uint32_t n_blocks, uint8_t tier, uint64_t step) {
    policy_state *st = &se->st;
    if (n_blocks <= st->n_blocks)
        return 0;
    if (n_blocks > st->stride) {
        uint32_t ns = st->stride ? st->stride : 16;
        while (ns < n_blocks)
            ns = ns > 0x7FFFFFFFu ? n_blocks : ns * 2;
        uint32_t maxb = se->info.max_blocks ? se->info.max_blocks : TIER_MAX_BLOCKS_DEFAULT;
        if (ns > maxb && n_blocks <= maxb)
            ns = maxb;
        size_t total = (size_t)st->n_layers * ns;
        policy_block *nbk = ix_calloc(total, sizeof *nbk);
        tier_slot *nsl = ix_calloc(total, sizeof *nsl);
        if (!nbk || !nsl) {
            free(nbk);
            free(nsl);
            return -1;
        }
        for (uint32_t l = 0; l < st->n_layers && st->n_blocks; l++) {
            memcpy(nbk + (size_t)l * ns, st->blocks + (size_t)l * st->stride,
                   st->n_blocks * sizeof *nbk);
            memcpy(nsl + (size_t)l * ns, se->slots + (size_t)l * st->stride,
                   st->n_blocks * sizeof *nsl);
        }
        free(st->blocks);
        free(se->slots);
        st->blocks = nbk;
        se->slots = nsl;
        st->stride = ns;
    }
    for (uint32_t l = 0; l < st->n_layers; l++)
        for (uint32_t b = st->n_blocks; b < n_blocks; b++) {
            policy_block *x = tier_seq_block(se, l, b);
            memset(x, 0, sizeof *x);
            x->tier = tier;
            x->last_active = step;
            memset(tier_seq_slot(se, l, b), 0, sizeof(tier_slot));
        }
    st->n_blocks = n_blocks;
    return 0;
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
