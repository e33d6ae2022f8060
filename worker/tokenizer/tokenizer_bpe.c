/* tokenizer_bpe.c — hash maps (vocab, merges), the BPE merge core and the
 * pre-token cache. Pure logic, no I/O. */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- hashing */

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull ^ (n * 0x9E3779B97F4A7C15ull); /* FNV-1a, 8 bytes a step */
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        p += 8, n -= 8;
    }
    while (n--)
        h = (h ^ *p++) * 0x100000001b3ull;
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    return h ^ (h >> 32);
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static size_t pow2_for(size_t expected) {
    size_t cap = 16;
    while (cap < expected * 2)
        cap <<= 1; /* load factor <= 0.5 */
    return cap;
}

/* ---------------------------------------------------------------- strmap */

int tok_strmap_init(tok_strmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_for(expected);
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->lens = calloc(m->cap, sizeof *m->lens);
    m->vals = calloc(m->cap, sizeof *m->vals);
    if (!m->keys || !m->lens || !m->vals) {
        tok_strmap_free(m);
        return -1;
    }
    return 0;
}

void tok_strmap_free(tok_strmap *m) {
    free(m->keys);
    free(m->lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static int strmap_grow(tok_strmap *m) {
    tok_strmap n;
    if (tok_strmap_init(&n, m->cap) != 0)
        return -1; /* doubles the capacity */
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i])
            tok_strmap_put(&n, m->keys[i], m->lens[i], m->vals[i]);
    tok_strmap_free(m);
    *m = n;
    return 0;
}

int tok_strmap_put(tok_strmap *m, const uint8_t *key, size_t len, int32_t val) {
    if ((m->count + 1) * 2 > m->cap && strmap_grow(m) != 0)
        return -1;
    size_t mask = m->cap - 1, i = hash_bytes(key, len) & mask;
    while (m->keys[i]) {
        if (m->lens[i] == len && memcmp(m->keys[i], key, len) == 0) {
            m->vals[i] = val;
            return 0;
        }
        i = (i + 1) & mask;
    }
    m->keys[i] = key ? key : (const uint8_t *)""; /* empty key must not look empty */
    m->lens[i] = (uint32_t)len;
    m->vals[i] = val;
    m->count++;
    return 0;
}

int32_t tok_strmap_get(const tok_strmap *m, const uint8_t *key, size_t len) {
    if (!m->cap)
        return -1;
    size_t mask = m->cap - 1, i = hash_bytes(key, len) & mask;
    while (m->keys[i]) {
        if (m->lens[i] == len && memcmp(m->keys[i], key, len) == 0)
            return m->vals[i];
        i = (i + 1) & mask;
    }
    return -1;
}

/* ---------------------------------------------------------------- pairmap */

#define PAIR_EMPTY UINT64_MAX

int tok_pairmap_init(tok_pairmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = pow2_for(expected);
    m->keys = malloc(m->cap * sizeof *m->keys);
    m->rank = malloc(m->cap * sizeof *m->rank);
    m->merged = malloc(m->cap * sizeof *m->merged);
    if (!m->keys || !m->rank || !m->merged) {
        tok_pairmap_free(m);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++)
        m->keys[i] = PAIR_EMPTY;
    return 0;
}

void tok_pairmap_free(tok_pairmap *m) {
    free(m->keys);
    free(m->rank);
    free(m->merged);
    memset(m, 0, sizeof *m);
}

static int pairmap_grow(tok_pairmap *m) {
    tok_pairmap n;
    if (tok_pairmap_init(&n, m->cap) != 0)
        return -1;
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i] != PAIR_EMPTY)
            tok_pairmap_put(&n, (int32_t)(m->keys[i] >> 32), (int32_t)(uint32_t)m->keys[i],
                            m->rank[i], m->merged[i]);
    tok_pairmap_free(m);
    *m = n;
    return 0;
}

static uint64_t pair_key(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

int tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    if ((m->count + 1) * 2 > m->cap && pairmap_grow(m) != 0)
        return -1;
    uint64_t k = pair_key(a, b);
    size_t mask = m->cap - 1, i = hash_u64(k) & mask;
    while (m->keys[i] != PAIR_EMPTY) {
        if (m->keys[i] == k)
            return 0; /* first rank wins */
        i = (i + 1) & mask;
    }
    m->keys[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
    m->count++;
    return 0;
}

int32_t tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b, int32_t *merged) {
    if (!m->cap)
        return -1;
    uint64_t k = pair_key(a, b);
    size_t mask = m->cap - 1, i = hash_u64(k) & mask;
    while (m->keys[i] != PAIR_EMPTY) {
        if (m->keys[i] == k) {
            if (merged)
                *merged = m->merged[i];
            return m->rank[i];
        }
        i = (i + 1) & mask;
    }
    return -1;
}

/* ---------------------------------------------------------------- BPE */

void tok_bpe_scratch_free(tok_bpe_scratch *s) {
    free(s->id);
    free(s->prev);
    free(s->next);
    free(s->rank);
    free(s->heap);
    memset(s, 0, sizeof *s);
}

static int scratch_reserve(tok_bpe_scratch *s, size_t n) {
    if (n <= s->cap)
        return 0;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < n)
        cap *= 2;
    tok_bpe_scratch t = {0};
    t.id = malloc(cap * sizeof *t.id);
    t.prev = malloc(cap * sizeof *t.prev);
    t.next = malloc(cap * sizeof *t.next);
    t.rank = malloc(cap * sizeof *t.rank);
    t.heap = malloc(cap * 2 * sizeof *t.heap);
    t.cap = cap;
    if (!t.id || !t.prev || !t.next || !t.rank || !t.heap) {
        tok_bpe_scratch_free(&t);
        return -1;
    }
    tok_bpe_scratch_free(s);
    *s = t;
    return 0;
}

/* rank of the pair starting at symbol i, or INT32_MAX */
static int32_t pair_rank(const tok_pairmap *mg, const tok_bpe_scratch *s, int32_t i) {
    int32_t j = s->next[i];
    if (j < 0)
        return INT32_MAX;
    int32_t r = tok_pairmap_get(mg, s->id[i], s->id[j], NULL);
    return r < 0 ? INT32_MAX : r;
}

/* Merges the pair at symbol i (its right neighbour disappears). */
static void merge_at(const tok_pairmap *mg, tok_bpe_scratch *s, int32_t i) {
    int32_t j = s->next[i], merged = -1;
    tok_pairmap_get(mg, s->id[i], s->id[j], &merged);
    s->id[i] = merged;
    s->next[i] = s->next[j];
    if (s->next[j] >= 0)
        s->prev[s->next[j]] = i;
    s->id[j] = -1; /* dead */
}

/* Small words: scan for the lowest (rank, position) each round. O(n^2), no heap. */
static void bpe_scan(const tok_pairmap *mg, tok_bpe_scratch *s, int32_t n) {
    for (int32_t i = 0; i < n; i++)
        s->rank[i] = pair_rank(mg, s, i);
    for (;;) {
        int32_t best = -1, best_rank = INT32_MAX;
        for (int32_t i = 0; i >= 0; i = s->next[i])
            if (s->rank[i] < best_rank)
                best_rank = s->rank[i], best = i;
        if (best < 0)
            break;
        merge_at(mg, s, best);
        s->rank[best] = pair_rank(mg, s, best);
        if (s->prev[best] >= 0)
            s->rank[s->prev[best]] = pair_rank(mg, s, s->prev[best]);
    }
}

/* heap of (rank << 32 | pos): the minimum is the lowest rank, leftmost */
static void heap_push(uint64_t *h, size_t *n, uint64_t v) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p] <= v)
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *n) {
    uint64_t top = h[0], v = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && h[c + 1] < h[c])
            c++;
        if (v <= h[c])
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
    return top;
}

/* Long words: lazy-deletion heap. Every merge pushes at most 2 entries, so the
 * heap never exceeds 2n entries. O(n log n). */
static void bpe_heap(const tok_pairmap *mg, tok_bpe_scratch *s, int32_t n) {
    size_t hn = 0;
    for (int32_t i = 0; i < n; i++) {
        s->rank[i] = pair_rank(mg, s, i);
        if (s->rank[i] != INT32_MAX)
            heap_push(s->heap, &hn, ((uint64_t)s->rank[i] << 32) | (uint32_t)i);
    }
    while (hn > 0) {
        uint64_t top = heap_pop(s->heap, &hn);
        int32_t r = (int32_t)(top >> 32), i = (int32_t)(uint32_t)top;
        if (s->id[i] < 0 || s->rank[i] != r)
            continue; /* stale entry */
        merge_at(mg, s, i);
        s->rank[i] = pair_rank(mg, s, i);
        if (s->rank[i] != INT32_MAX)
            heap_push(s->heap, &hn, ((uint64_t)s->rank[i] << 32) | (uint32_t)i);
        int32_t p = s->prev[i];
        if (p >= 0) {
            s->rank[p] = pair_rank(mg, s, p);
            if (s->rank[p] != INT32_MAX)
                heap_push(s->heap, &hn, ((uint64_t)s->rank[p] << 32) | (uint32_t)p);
        }
    }
}

long tok_bpe(const tok_pairmap *merges, const int32_t byte_ids[256], const uint8_t *s, size_t n,
             tok_bpe_scratch *scratch, int32_t *out, int force) {
    if (n == 0)
        return 0;
    if (n > INT32_MAX / 2)
        return -1;
    if (scratch_reserve(scratch, n) != 0)
        return -1;
    int32_t m = (int32_t)n;
    for (int32_t i = 0; i < m; i++) {
        scratch->id[i] = byte_ids[s[i]];
        scratch->prev[i] = i - 1;
        scratch->next[i] = i + 1 < m ? i + 1 : -1;
    }
    int use_heap = force == 2 || (force == 0 && n > 48);
    if (use_heap)
        bpe_heap(merges, scratch, m);
    else
        bpe_scan(merges, scratch, m);
    long k = 0;
    for (int32_t i = 0; i >= 0; i = scratch->next[i])
        out[k++] = scratch->id[i];
    return k;
}

/* ---------------------------------------------------------------- cache */

typedef struct {
    uint8_t *key;   /* malloc'd: key bytes then ids */
    uint32_t len;   /* key length */
    uint32_t n_ids; /* ids stored after the key (aligned copy via memcpy) */
    uint64_t hash;
} cache_slot;

struct tok_cache {
    pthread_mutex_t mu;
    cache_slot *slots; /* (cap) */
    size_t cap, count, max_entries;
};

tok_cache *tok_cache_new(size_t max_entries) {
    tok_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->max_entries = max_entries;
    c->cap = pow2_for(max_entries);
    c->slots = calloc(c->cap, sizeof *c->slots);
    if (!c->slots || pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c->slots);
        free(c);
        return NULL;
    }
    return c;
}

static void cache_clear(tok_cache *c) {
    for (size_t i = 0; i < c->cap; i++)
        free(c->slots[i].key);
    memset(c->slots, 0, c->cap * sizeof *c->slots);
    c->count = 0;
}

void tok_cache_free(tok_cache *c) {
    if (!c)
        return;
    cache_clear(c);
    free(c->slots);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

long tok_cache_get(tok_cache *c, const uint8_t *key, size_t len, int32_t *out, size_t cap) {
    uint64_t h = hash_bytes(key, len);
    long res = -1;
    pthread_mutex_lock(&c->mu);
    size_t mask = c->cap - 1;
    for (size_t i = h & mask; c->slots[i].key; i = (i + 1) & mask) {
        cache_slot *sl = &c->slots[i];
        if (sl->hash == h && sl->len == len && memcmp(sl->key, key, len) == 0) {
            if (sl->n_ids <= cap) {
                memcpy(out, sl->key + len, sl->n_ids * sizeof(int32_t));
                res = sl->n_ids;
            }
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return res;
}

void tok_cache_put(tok_cache *c, const uint8_t *key, size_t len, const int32_t *ids, size_t n) {
    uint8_t *blob = malloc(len + n * sizeof(int32_t) + 1);
    if (!blob)
        return;
    memcpy(blob, key, len);
    memcpy(blob + len, ids, n * sizeof(int32_t));
    uint64_t h = hash_bytes(key, len);
    pthread_mutex_lock(&c->mu);
    if (c->count >= c->max_entries)
        cache_clear(c); /* bounded: start over */
    size_t mask = c->cap - 1, i = h & mask;
    for (; c->slots[i].key; i = (i + 1) & mask) {
        cache_slot *sl = &c->slots[i];
        if (sl->hash == h && sl->len == len && memcmp(sl->key, key, len) == 0)
            break;
    }
    if (c->slots[i].key) {
        free(blob); /* another thread stored it first */
    } else {
        c->slots[i] = (cache_slot){blob, (uint32_t)len, (uint32_t)n, h};
        c->count++;
    }
    pthread_mutex_unlock(&c->mu);
}
