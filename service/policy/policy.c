/* policy.c — placement decisions as pure functions (see policy.h). */
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void policy_params_init(policy_params *p) {
    memset(p, 0, sizeof *p);
    p->top_p = 0.95;
    p->window_steps = 16;
    p->hot_inactive_steps = 50;
    p->recent_blocks = 4;
    p->sink_blocks = 1;
    p->prefetch_min_revivals = 2;
}

int policy_params_check(const policy_params *p, char *err, size_t errlen) {
    if (!(p->top_p > 0.0 && p->top_p <= 1.0)) {
        snprintf(err, errlen, "top_p %g must be in (0, 1]", p->top_p);
        return -1;
    }
    if (p->window_steps == 0) {
        snprintf(err, errlen, "window_steps must be >= 1");
        return -1;
    }
    if (p->n_layer_budgets > POLICY_MAX_LAYERS) {
        snprintf(err, errlen, "n_layer_budgets %u exceeds %d layers", p->n_layer_budgets,
                 POLICY_MAX_LAYERS);
        return -1;
    }
    return 0;
}

int policy_hot_colder(const policy_hot_key *a, const policy_hot_key *b) {
    return a->last_active < b->last_active ||
           (a->last_active == b->last_active && a->cum_mass < b->cum_mass);
}

int policy_hot_expired(const policy_params *p, int64_t step, const policy_hot_key *k) {
    return step - (int64_t)k->last_active > (int64_t)p->hot_inactive_steps;
}

uint32_t policy_layer_budget(const policy_params *p, uint32_t layer) {
    return layer < p->n_layer_budgets ? p->layer_hot_budget[layer] : 0;
}

int policy_is_protected(const policy_params *p, uint32_t n_blocks, uint32_t block) {
    if (block < p->sink_blocks)
        return 1;
    if (block < n_blocks && n_blocks - block <= p->recent_blocks)
        return 1;
    return 0;
}

const char *policy_tier_name(int tier) {
    static const char *n[] = {"HOT", "HOST", "SSD", "DROPPED", "NONE"};
    return tier >= 0 && tier < TIER_NLEVELS ? n[tier] : "?";
}

const char *policy_kind_name(int kind) {
    static const char *n[] = {"KEEP_HOT", "DEMOTE_HOST", "DEMOTE_SSD", "DROP", "PREFETCH"};
    return kind >= 0 && kind < POLICY_NKINDS ? n[kind] : "?";
}

/* ---------------------------------------------------------------- chunks */

static size_t chunk_hash(uint32_t layer, uint32_t chunkno, size_t table_size) {
    uint64_t h = ((uint64_t)layer << 32) | chunkno; /* splitmix64's finalizer */
    h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL;
    h = (h ^ (h >> 27)) * 0x94D049BB133111EBULL;
    h ^= h >> 31;
    return (size_t)h & (table_size - 1);
}

policy_chunk *policy_chunk_find(const policy_state *st, uint32_t layer, uint32_t block) {
    if (!st->table_size)
        return NULL;
    uint32_t first = block - block % POLICY_CHUNK_BLOCKS;
    size_t mask = st->table_size - 1;
    for (size_t i = chunk_hash(layer, block / POLICY_CHUNK_BLOCKS, st->table_size);;
         i = (i + 1) & mask) {
        policy_chunk *c = st->chunks[i];
        if (!c)
            return NULL;
        if (c->layer == layer && c->first == first)
            return c;
    }
}

policy_block *policy_block_at(const policy_state *st, uint32_t layer, uint32_t block) {
    policy_chunk *c = policy_chunk_find(st, layer, block);
    return c ? &c->blocks[block % POLICY_CHUNK_BLOCKS] : NULL;
}

int policy_chunk_insert(policy_state *st, policy_chunk *c) {
    if (st->n_chunks + 1 > st->table_size / 2)
        return -1;
    size_t mask = st->table_size - 1;
    size_t i = chunk_hash(c->layer, c->first / POLICY_CHUNK_BLOCKS, st->table_size);
    while (st->chunks[i])
        i = (i + 1) & mask;
    st->chunks[i] = c;
    st->n_chunks++;
    return 0;
}

/* ---------------------------------------------------------------- summary */

static int check_list(const policy_state *st, uint32_t layer, const uint32_t *v, uint32_t n,
                      const char *what, int need_stored, char *err, size_t errlen) {
    if (n && !v) {
        snprintf(err, errlen, "layer %u: %u %s blocks but no array", layer, n, what);
        return -1;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (v[i] >= st->n_blocks) {
            snprintf(err, errlen,
                     "layer %u: %s block %u out of range (sequence has %u blocks per layer)", layer,
                     what, v[i], st->n_blocks);
            return -1;
        }
        if (need_stored && !policy_block_at(st, layer, v[i])) {
            snprintf(err, errlen, "layer %u: %s block %u is not stored in the state", layer, what,
                     v[i]);
            return -1;
        }
    }
    return 0;
}

static int check_summary(const policy_state *st, const policy_summary *s, int need_stored,
                         char *err, size_t errlen) {
    if (s->n_layers && !s->layers) {
        snprintf(err, errlen, "summary has %u layers but no array", s->n_layers);
        return -1;
    }
    for (uint32_t i = 0; i < s->n_layers; i++) {
        const policy_layer_summary *l = &s->layers[i];
        if (l->layer >= st->n_layers) {
            snprintf(err, errlen, "summary layer %u out of range (sequence has %u layers)",
                     l->layer, st->n_layers);
            return -1;
        }
        int ns = need_stored;
        if (check_list(st, l->layer, l->active, l->n_active, "active", ns, err, errlen) ||
            check_list(st, l->layer, l->recalled, l->n_recalled, "recalled", ns, err, errlen) ||
            check_list(st, l->layer, l->dropped, l->n_dropped, "dropped", ns, err, errlen) ||
            check_list(st, l->layer, l->revived, l->n_revived, "revived", ns, err, errlen))
            return -1;
    }
    return 0;
}

int policy_summary_check(const policy_state *st, const policy_summary *s, char *err,
                         size_t errlen) {
    return check_summary(st, s, 0, err, errlen);
}

int policy_apply_summary(policy_state *st, const policy_summary *s, char *err, size_t errlen) {
    if (check_summary(st, s, 1, err, errlen)) /* validate everything first */
        return -1;
    if (s->step > st->step)
        st->step = s->step;
    uint64_t now = st->step;
    int revivals = 0;
    for (uint32_t i = 0; i < s->n_layers; i++) {
        const policy_layer_summary *l = &s->layers[i];
        uint32_t ly = l->layer;
        for (uint32_t j = 0; j < l->n_recalled; j++) {
            policy_block *b = policy_block_at(st, ly, l->recalled[j]);
            if (b->tier != TIER_HOT) {
                b->revivals++;
                revivals++;
            }
            b->tier = TIER_HOT;
            b->last_active = now;
        }
        for (uint32_t j = 0; j < l->n_revived; j++) { /* back and out again: stays stored */
            policy_block *b = policy_block_at(st, ly, l->revived[j]);
            if (b->tier != TIER_HOST && b->tier != TIER_SSD)
                continue; /* nothing stored to learn about */
            b->revivals++;
            b->last_active = now;
            revivals++;
        }
        for (uint32_t j = 0; j < l->n_active; j++) {
            policy_block *b = policy_block_at(st, ly, l->active[j]);
            if (b->tier == TIER_NONE)
                b->tier = TIER_HOT; /* the worker attends it: it holds it */
            b->hits++;
            b->last_active = now;
        }
        for (uint32_t j = 0; j < l->n_dropped; j++)
            policy_block_at(st, ly, l->dropped[j])->tier = TIER_DROPPED;
    }
    return revivals;
}

/* ---------------------------------------------------------------- decide */

/* A stored block is addressed by its offset: table slot * POLICY_CHUNK_BLOCKS
 * + index in the chunk. */
typedef struct rank_key {
    uint64_t rank;
    uint64_t pos; /* layer << 32 | block: ties go in (layer, block) order */
    size_t off;
} rank_key;

static uint64_t age_of(const policy_state *st, const policy_block *b) {
    return st->step > b->last_active ? st->step - b->last_active : 0;
}

static int cmp_key(const void *a, const void *b) {
    const rank_key *x = a, *y = b;
    if (x->rank != y->rank)
        return x->rank < y->rank ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

typedef uint64_t (*rank_fn)(const policy_state *st, const policy_block *b);

/* coldest first: largest effective age (step - last_active) / (1 + revivals) */
static uint64_t rank_coldest(const policy_state *st, const policy_block *b) {
    return UINT64_MAX - age_of(st, b) / (1u + (uint64_t)b->revivals);
}
/* least valuable first: fewest revivals, then oldest activity */
static uint64_t rank_value(const policy_state *st, const policy_block *b) {
    (void)st;
    uint64_t rev = b->revivals > 0xFFFFFu ? 0xFFFFFu : b->revivals;
    uint64_t act = b->last_active > 0xFFFFFFFFFFFull ? 0xFFFFFFFFFFFull : b->last_active;
    return (rev << 44) | act;
}
/* (layer, block) order */
static uint64_t rank_position(const policy_state *st, const policy_block *b) {
    (void)st;
    (void)b;
    return 0;
}

/* offsets: one per entry of every table slot (empty slots included) */
static size_t n_offs(const policy_state *st) {
    return st->n_chunks ? st->table_size * POLICY_CHUNK_BLOCKS : 0;
}

size_t policy_scratch_size(const policy_state *st) {
    return n_offs(st) * (sizeof(rank_key) + 1);
}

/* Scratch layout: rank_key keys[offs] | uint8_t decided[offs]. */
typedef struct decide_ctx {
    const policy_params *p;
    const policy_state *st;
    policy_decision *out;
    size_t cap, nd;
    rank_key *keys;
    uint8_t *decided; /* [off] */
} decide_ctx;

/* The block at offset off, or NULL when it is no block of the state (empty
 * slot, or past n_blocks). */
static const policy_block *at_off(const policy_state *st, size_t off) {
    const policy_chunk *c = st->chunks[off / POLICY_CHUNK_BLOCKS];
    if (!c || c->first + off % POLICY_CHUNK_BLOCKS >= st->n_blocks)
        return NULL;
    return &c->blocks[off % POLICY_CHUNK_BLOCKS];
}

static void emit(decide_ctx *c, size_t off, uint8_t kind, uint8_t to) {
    if (c->nd >= c->cap || c->decided[off])
        return;
    const policy_chunk *ch = c->st->chunks[off / POLICY_CHUNK_BLOCKS];
    uint32_t i = (uint32_t)(off % POLICY_CHUNK_BLOCKS);
    c->out[c->nd++] = (policy_decision){kind, ch->blocks[i].tier, to, ch->layer, ch->first + i};
    c->decided[off] = 1;
}

/* Collect stored blocks of tier `tier` (all layers) into keys, sorted by rank,
 * ties in (layer, block) order (as if the blocks were scanned densely). */
static size_t collect(decide_ctx *c, uint8_t tier, rank_fn rank) {
    const policy_state *st = c->st;
    size_t n = 0, total = n_offs(st);
    for (size_t off = 0; off < total; off++) {
        const policy_block *x = at_off(st, off);
        if (!x || x->tier != tier || c->decided[off])
            continue;
        const policy_chunk *ch = st->chunks[off / POLICY_CHUNK_BLOCKS];
        uint64_t pos = ((uint64_t)ch->layer << 32) | (ch->first + off % POLICY_CHUNK_BLOCKS);
        c->keys[n++] = (rank_key){rank(st, x), pos, off};
    }
    qsort(c->keys, n, sizeof *c->keys, cmp_key);
    return n;
}

size_t policy_decide(const policy_params *p, const policy_state *st, policy_decision *out,
                     size_t cap, void *scratch) {
    size_t total = n_offs(st);
    if (total == 0 || cap == 0 || !scratch)
        return 0;
    decide_ctx c = {p, st, out, cap, 0, scratch, (uint8_t *)scratch + total * sizeof(rank_key)};
    memset(c.decided, 0, total);

    uint64_t host_bytes = 0, ssd_bytes = 0;
    for (size_t off = 0; off < total; off++) {
        const policy_block *x = at_off(st, off);
        if (x && x->tier == TIER_HOST)
            host_bytes += x->bytes;
        if (x && x->tier == TIER_SSD)
            ssd_bytes += x->bytes;
    }

    /* rule 1: HOST over budget -> SSD, coldest first */
    if (p->host_budget_bytes && host_bytes > p->host_budget_bytes) {
        size_t n = collect(&c, TIER_HOST, rank_coldest);
        for (size_t i = 0; i < n && host_bytes > p->host_budget_bytes; i++) {
            uint32_t bytes = at_off(st, c.keys[i].off)->bytes;
            emit(&c, c.keys[i].off, POLICY_DEMOTE_SSD, TIER_SSD);
            host_bytes -= bytes;
            ssd_bytes += bytes;
        }
    }

    /* rule 2: SSD over budget -> DROP, least valuable first (blocks already in SSD) */
    if (p->ssd_budget_bytes && ssd_bytes > p->ssd_budget_bytes) {
        size_t n = collect(&c, TIER_SSD, rank_value);
        for (size_t i = 0; i < n && ssd_bytes > p->ssd_budget_bytes; i++) {
            ssd_bytes -= at_off(st, c.keys[i].off)->bytes;
            emit(&c, c.keys[i].off, POLICY_DROP, TIER_DROPPED);
        }
    }

    /* rule 3: PREFETCH often-revived SSD blocks to HOST while the budget allows,
     * in (layer, block) order */
    if (p->prefetch_min_revivals) {
        size_t n = collect(&c, TIER_SSD, rank_position);
        for (size_t i = 0; i < n; i++) {
            const policy_block *x = at_off(st, c.keys[i].off);
            if (x->revivals < p->prefetch_min_revivals)
                continue;
            if (p->host_budget_bytes && host_bytes + x->bytes > p->host_budget_bytes)
                continue;
            emit(&c, c.keys[i].off, POLICY_PREFETCH, TIER_HOST);
            host_bytes += x->bytes;
        }
    }
    return c.nd;
}

int policy_apply_decision(policy_state *st, const policy_decision *d) {
    if (d->layer >= st->n_layers || d->block >= st->n_blocks || d->to >= TIER_NLEVELS)
        return -1;
    policy_block *b = policy_block_at(st, d->layer, d->block);
    if (!b)
        return -1;
    b->tier = d->to;
    return 0;
}

int policy_layer_budgets(const double *need, const int *cap, int n, int total, int floor,
                         int *out) {
    if (n <= 0 || floor < 0 || !need || !out)
        return -1;
    int left = total - n * floor;
    for (int l = 0; l < n; l++) {
        out[l] = floor;
        if (cap && cap[l] < out[l])
            out[l] = cap[l] > 0 ? cap[l] : 0;
    }
    /* rounds of proportional shares over the layers that can still take blocks */
    while (left > 0) {
        double sum = 0.0;
        int open = 0;
        for (int l = 0; l < n; l++)
            if (!cap || out[l] < cap[l]) {
                sum += need[l] > 0 ? need[l] : 0.0;
                open++;
            }
        if (open == 0)
            break;
        int given = 0;
        for (int l = 0; l < n && left - given > 0; l++) {
            if (cap && out[l] >= cap[l])
                continue;
            double w = sum > 0 ? (need[l] > 0 ? need[l] : 0.0) / sum : 1.0 / open;
            int g = (int)(w * left);
            if (cap && out[l] + g > cap[l])
                g = cap[l] - out[l];
            out[l] += g;
            given += g;
        }
        if (given == 0) { /* remainders: one block each to the neediest open layers */
            for (int k = 0; k < left; k++) {
                int bestl = -1;
                for (int l = 0; l < n; l++) {
                    if (cap && out[l] >= cap[l])
                        continue;
                    double s = (need[l] > 0 ? need[l] : 0.0) - (out[l] - floor);
                    if (bestl < 0 ||
                        s > (need[bestl] > 0 ? need[bestl] : 0.0) - (out[bestl] - floor))
                        bestl = l;
                }
                if (bestl < 0)
                    break;
                out[bestl]++;
                given++;
            }
            if (given == 0)
                break;
        }
        left -= given;
    }
    return 0;
}
