/* kvcache.c - paged KV cache: pools, block tables, digests, take/put/drop and
 * loans, accounting, local policies (see kvcache.h; attention and revival
 * checks in kvcache_attend.c). */
#include "kvcache.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ksketch.h"
#include "kvcache_internal.h"

int kvc_fail(kvcache_t *kv, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(kv->err, sizeof kv->err, fmt, ap);
    va_end(ap);
    return code;
}

int kvc_grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

/* ================================================================ lifetime */

const char *kvcache_strerror(int code) {
    switch (code) {
    case KV_OK:
        return "ok";
    case KV_EINVAL:
        return "invalid argument";
    case KV_EFULL:
        return "hot pool full";
    case KV_ENOMEM:
        return "out of memory";
    case KV_ESTATE:
        return "block in wrong state";
    default:
        return "unknown error";
    }
}

const char *kvcache_errmsg(const kvcache_t *kv) {
    return kv ? kv->err : "";
}

size_t kvcache_block_bytes(const kvcache_t *kv) {
    return kv ? kv->block_bytes : 0;
}

kvcache_t *kvcache_new(const kvcache_opts *o, char *err, size_t errlen) {
#define NEW_FAIL(...)                                                                              \
    do {                                                                                           \
        if (err && errlen)                                                                         \
            snprintf(err, errlen, __VA_ARGS__);                                                    \
        kvcache_free(kv);                                                                          \
        return NULL;                                                                               \
    } while (0)
    kvcache_t *kv = NULL;
    if (!o)
        NEW_FAIL("kvcache: no options");
    if (o->n_layers <= 0 || o->n_kv_heads <= 0 || o->head_dim <= 0 || o->n_heads <= 0)
        NEW_FAIL("kvcache: shapes must be positive (layers %d, heads %d, kv heads %d, head_dim %d)",
                 o->n_layers, o->n_heads, o->n_kv_heads, o->head_dim);
    if (o->n_heads % o->n_kv_heads != 0)
        NEW_FAIL("kvcache: n_heads %d is not a multiple of n_kv_heads %d", o->n_heads,
                 o->n_kv_heads);
    if (o->block_tokens != 0 && o->block_tokens != KV_BLOCK_TOKENS)
        NEW_FAIL("kvcache: block_tokens %d unsupported (only %d)", o->block_tokens,
                 KV_BLOCK_TOKENS);
    if (o->kv_dtype != DT_F32 && o->kv_dtype != DT_BF16)
        NEW_FAIL("kvcache: kv dtype %d unsupported (F32 or BF16)", (int)o->kv_dtype);
    if (o->pool_blocks < 0 || o->max_seqs < 0)
        NEW_FAIL("kvcache: pool_blocks and max_seqs must be >= 0");
    kv = calloc(1, sizeof *kv);
    if (!kv)
        NEW_FAIL("kvcache: out of memory");
    kv->o = *o;
    kv->o.block_tokens = KV_BLOCK_TOKENS;
    if (kv->o.max_seqs == 0)
        kv->o.max_seqs = KV_DEFAULT_MAX_SEQS;
    kv->es = o->kv_dtype == DT_BF16 ? 2 : 4;
    kv->block_bytes = 2 * (size_t)o->n_kv_heads * KV_BLOCK_TOKENS * o->head_dim * kv->es;
    kv->digest_floats = (size_t)o->n_kv_heads * 2 * o->head_dim;
    kv->sketch_bytes = ksketch_bytes(o->n_kv_heads, KV_BLOCK_TOKENS, o->head_dim);
    kv->scale = 1.0f / sqrtf((float)o->head_dim);
    kv->pools = calloc((size_t)o->n_layers, sizeof *kv->pools);
    kv->seqs = calloc((size_t)kv->o.max_seqs, sizeof *kv->seqs);
    kv->ws = attn_ws_new();
    if (!kv->pools || !kv->seqs || !kv->ws)
        NEW_FAIL("kvcache: out of memory");
    for (int l = 0; l < o->n_layers; l++)
        kv->pools[l].cap = o->pool_blocks > 0 ? o->pool_blocks : INT32_MAX;
    return kv;
#undef NEW_FAIL
}

void kvcache_set_attn_provider(kvcache_t *kv, const kvcache_attn_provider_t *p) {
    if (!kv)
        return;
    if (kv->prov.attend && kv->prov.detached)
        kv->prov.detached(kv->prov.ud);
    if (p)
        kv->prov = *p;
    else
        memset(&kv->prov, 0, sizeof kv->prov);
}

int kvcache_seq_plain(const kvcache_t *kv, int seq) {
    const kv_seq *S = get_seq(kv, seq);
    if (!S || S->sum || S->has_policy || S->rev_tau > 0.0f || S->debug)
        return 0;
    for (int l = 0; l < kv->o.n_layers; l++)
        if (S->L[l].hot != S->L[l].n_blocks)
            return 0;
    return 1;
}

void *kvcache_attn_provider_ud(const kvcache_t *kv) {
    return kv && kv->prov.attend ? kv->prov.ud : NULL;
}

void kvcache_free(kvcache_t *kv) {
    if (!kv)
        return;
    kvcache_set_attn_provider(kv, NULL);
    if (kv->seqs)
        for (int s = 0; s < kv->o.max_seqs; s++)
            kvcache_seq_free(kv, s);
    if (kv->pools)
        for (int l = 0; l < kv->o.n_layers; l++) {
            kv_pool *P = &kv->pools[l];
            for (int c = 0; c < P->n_chunks; c++)
                free(P->chunks[c]);
            free(P->chunks);
            free(P->free_ids);
        }
    free(kv->pools);
    free(kv->seqs);
    attn_ws_free(kv->ws);
    free(kv->blk);
    free(kv->fbuf);
    free(kv->ubuf);
    free(kv->ibuf);
    free(kv->rv);
    free(kv->rflag);
    free(kv);
}

/* ================================================================ pool */

/* Returns a zeroed slot id, KV_EFULL or KV_ENOMEM. */
static int slot_alloc(kvcache_t *kv, int layer) {
    kv_pool *P = &kv->pools[layer];
    int id;
    if (P->n_used >= P->cap)
        return KV_EFULL;
    if (P->n_free > 0) {
        id = P->free_ids[--P->n_free];
    } else {
        if (P->n_alloc % KV_CHUNK_SLOTS == 0) {
            size_t ccap = (size_t)P->chunks_cap;
            if (kvc_grow((void **)&P->chunks, &ccap, (size_t)P->n_chunks + 1, sizeof *P->chunks))
                return KV_ENOMEM;
            P->chunks_cap = (int)ccap;
            size_t n = KV_CHUNK_SLOTS;
            if (P->cap != INT32_MAX && (size_t)(P->cap - P->n_alloc) < n)
                n = (size_t)(P->cap - P->n_alloc);
            char *c = aligned_alloc(64, (n * kv->block_bytes + 63) / 64 * 64);
            if (!c)
                return KV_ENOMEM;
            P->chunks[P->n_chunks++] = c;
        }
        id = P->n_alloc++;
    }
    memset(slot_ptr(kv, layer, id), 0, kv->block_bytes);
    P->n_used++;
    kv->bytes_hot += kv->block_bytes;
    if (kv->bytes_hot > kv->bytes_peak)
        kv->bytes_peak = kv->bytes_hot;
    return id;
}

static int slot_release(kvcache_t *kv, int layer, int id) {
    kv_pool *P = &kv->pools[layer];
    size_t fcap = (size_t)P->free_cap;
    if (kvc_grow((void **)&P->free_ids, &fcap, (size_t)P->n_free + 1, sizeof(int)))
        return KV_ENOMEM;
    P->free_cap = (int)fcap;
    P->free_ids[P->n_free++] = id;
    P->n_used--;
    kv->bytes_hot -= kv->block_bytes;
    return KV_OK;
}

/* ================================================================ sequences */

int kvcache_seq_new(kvcache_t *kv) {
    if (!kv)
        return -1;
    for (int s = 0; s < kv->o.max_seqs; s++) {
        if (kv->seqs[s].used)
            continue;
        kv_seq *S = &kv->seqs[s];
        memset(S, 0, sizeof *S);
        S->L = calloc((size_t)kv->o.n_layers, sizeof *S->L);
        if (!S->L)
            return kvc_fail(kv, -1, "kvcache_seq_new: out of memory");
        S->used = 1;
        return s;
    }
    return kvc_fail(kv, -1, "kvcache_seq_new: all %d sequence slots in use", kv->o.max_seqs);
}

void kvcache_seq_free(kvcache_t *kv, int seq) {
    kv_seq *S = get_seq(kv, seq);
    if (!S)
        return;
    if (kv->prov.attend && kv->prov.seq_closed)
        kv->prov.seq_closed(kv->prov.ud, seq);
    for (int l = 0; l < kv->o.n_layers; l++) {
        kv_lseq *L = &S->L[l];
        for (int b = 0; b < L->n_blocks; b++)
            if (L->state[b] == KV_BLOCK_HOT)
                slot_release(kv, l, L->slot[b]);
        free(L->slot);
        free(L->state);
        free(L->digest);
        free(L->sketch);
        free(L->sk_ok);
        free(L->ext);
        free(L->rev);
        free(L->dbg);
    }
    free(S->L);
    summary_free(S->sum);
    memset(S, 0, sizeof *S);
}

int kvcache_seq_len(const kvcache_t *kv, int seq, int layer) {
    const kv_lseq *L = get_ls(kv, seq, layer);
    return L ? L->len : -1;
}

int kvcache_seq_blocks(const kvcache_t *kv, int seq, int layer) {
    const kv_lseq *L = get_ls(kv, seq, layer);
    return L ? L->n_blocks : -1;
}

int kvcache_seq_stats(kvcache_t *kv, int seq, int enable, float top_p, int window) {
    kv_seq *S = get_seq(kv, seq);
    if (!S)
        return kv ? kvc_fail(kv, KV_EINVAL, "kvcache_seq_stats: bad sequence %d", seq) : KV_EINVAL;
    summary_free(S->sum);
    S->sum = NULL;
    if (!enable)
        return KV_OK;
    S->sum = summary_new(kv->o.n_layers, top_p, window);
    if (!S->sum)
        return kvc_fail(kv, KV_ENOMEM, "kvcache_seq_stats: out of memory");
    for (int l = 0; l < kv->o.n_layers; l++)
        if (summary_ensure_blocks(S->sum, l, S->L[l].n_blocks, KV_BLOCK_TOKENS)) {
            summary_free(S->sum);
            S->sum = NULL;
            return kvc_fail(kv, KV_ENOMEM, "kvcache_seq_stats: out of memory");
        }
    return KV_OK;
}

summary_t *kvcache_summary(kvcache_t *kv, int seq) {
    kv_seq *S = get_seq(kv, seq);
    return S ? S->sum : NULL;
}

int kvcache_seq_set_policy(kvcache_t *kv, int seq, const local_policy_params *p) {
    kv_seq *S = get_seq(kv, seq);
    if (!S)
        return kv ? kvc_fail(kv, KV_EINVAL, "kvcache_seq_set_policy: bad sequence %d", seq)
                  : KV_EINVAL;
    S->has_policy = p != NULL;
    if (p)
        S->pol = *p;
    return KV_OK;
}

int kvcache_seq_set_revival(kvcache_t *kv, int seq, float tau) {
    kv_seq *S = get_seq(kv, seq);
    if (!S)
        return kv ? kvc_fail(kv, KV_EINVAL, "kvcache_seq_set_revival: bad sequence %d", seq)
                  : KV_EINVAL;
    S->rev_tau = tau > 0.0f ? tau : 0.0f;
    if (!S->rev_tau)
        for (int l = 0; l < kv->o.n_layers; l++)
            S->L[l].n_rev = 0;
    return KV_OK;
}

int kvcache_debug_enable(kvcache_t *kv, int seq, int enable) {
    kv_seq *S = get_seq(kv, seq);
    if (!S)
        return kv ? kvc_fail(kv, KV_EINVAL, "kvcache_debug_enable: bad sequence %d", seq)
                  : KV_EINVAL;
    S->debug = enable != 0;
    for (int l = 0; l < kv->o.n_layers; l++)
        S->L[l].dbg_n = 0;
    return KV_OK;
}

/* ================================================================ append */

/* Makes room in L's tables for block index b (== n_blocks). */
static int table_push(kvcache_t *kv, kv_seq *S, int layer, kv_lseq *L) {
    int b = L->n_blocks;
    if (b >= L->cap) {
        int cap = L->cap ? L->cap * 2 : 64;
        int32_t *slot = realloc(L->slot, (size_t)cap * sizeof *slot);
        if (!slot)
            return KV_ENOMEM;
        L->slot = slot;
        uint8_t *st = realloc(L->state, (size_t)cap);
        if (!st)
            return KV_ENOMEM;
        L->state = st;
        float *dg = realloc(L->digest, (size_t)cap * kv->digest_floats * sizeof(float));
        if (!dg)
            return KV_ENOMEM;
        L->digest = dg;
        uint8_t *ok = realloc(L->sk_ok, (size_t)cap);
        if (!ok)
            return KV_ENOMEM;
        L->sk_ok = ok;
        const void **ext = realloc(L->ext, (size_t)cap * sizeof *ext);
        if (!ext)
            return KV_ENOMEM;
        L->ext = ext;
        if (L->sketch) { /* allocated by the first take-out (kvcache_block_take) */
            uint8_t *sk = realloc(L->sketch, (size_t)cap * kv->sketch_bytes);
            if (!sk)
                return KV_ENOMEM;
            L->sketch = sk;
        }
        L->cap = cap;
    }
    if (S->sum && summary_ensure_blocks(S->sum, layer, b + 1, KV_BLOCK_TOKENS))
        return KV_ENOMEM;
    return KV_OK;
}

static void store_row(kvcache_t *kv, char *dst, const float *src, int n, float *mn, float *mx) {
    if (kv->o.kv_dtype == DT_BF16) {
        uint16_t *d = (uint16_t *)dst;
        for (int i = 0; i < n; i++) {
            d[i] = attn_f32_to_bf16(src[i]);
            if (mn) {
                float w = attn_bf16_to_f32(d[i]);
                if (w < mn[i])
                    mn[i] = w;
                if (w > mx[i])
                    mx[i] = w;
            }
        }
    } else {
        memcpy(dst, src, (size_t)n * sizeof(float));
        if (mn)
            for (int i = 0; i < n; i++) {
                if (src[i] < mn[i])
                    mn[i] = src[i];
                if (src[i] > mx[i])
                    mx[i] = src[i];
            }
    }
}

int kvcache_append(kvcache_t *kv, int seq, int layer, int pos, const float *k, const float *v) {
    if (!kv)
        return KV_EINVAL;
    kv_seq *S = get_seq(kv, seq);
    if (!S || layer < 0 || layer >= kv->o.n_layers || !k || !v)
        return kvc_fail(kv, KV_EINVAL, "kvcache_append: bad sequence %d / layer %d / null k,v", seq,
                        layer);
    kv_lseq *L = &S->L[layer];
    if (pos != L->len)
        return kvc_fail(kv, KV_EINVAL, "kvcache_append: layer %d expects position %d, got %d",
                        layer, L->len, pos);
    const int bt = KV_BLOCK_TOKENS, hd = kv->o.head_dim, nkv = kv->o.n_kv_heads;
    const int b = pos / bt, t = pos % bt;
    if (t == 0) {
        int rc = table_push(kv, S, layer, L);
        if (rc)
            return kvc_fail(kv, rc, "kvcache_append: out of memory growing block table");
        if (S->has_policy) {
            /* the new block will be the tail: let the policy see it counted */
            (void)kvcache_make_room(kv, seq, layer, &S->pol, 1);
        }
        int id = slot_alloc(kv, layer);
        if (id < 0)
            return kvc_fail(
                kv, id, "kvcache_append: layer %d: %s (pool of %d slots, %d in use) for block %d",
                layer, id == KV_EFULL ? "no free slot" : "out of memory", kv->pools[layer].cap,
                kv->pools[layer].n_used, b);
        L->slot[b] = id;
        L->state[b] = KV_BLOCK_HOT;
        L->sk_ok[b] = 0;
        L->ext[b] = NULL;
        float *dg = L->digest + (size_t)b * kv->digest_floats;
        for (size_t i = 0; i < kv->digest_floats; i += 2 * (size_t)hd)
            for (int d = 0; d < hd; d++)
                dg[i + d] = INFINITY, dg[i + hd + d] = -INFINITY;
        L->n_blocks = b + 1;
        L->hot++;
    } else if (L->state[b] != KV_BLOCK_HOT) {
        return kvc_fail(kv, KV_ESTATE,
                        "kvcache_append: layer %d tail block %d is not hot (state %d)", layer, b,
                        L->state[b]);
    }
    L->sk_ok[b] = 0; /* the keys change: a sketch taken before is stale */
    char *base = slot_ptr(kv, layer, L->slot[b]);
    const size_t head_bytes = (size_t)bt * hd * kv->es, half = (size_t)nkv * head_bytes;
    float *dg = L->digest + (size_t)b * kv->digest_floats;
    for (int g = 0; g < nkv; g++) {
        char *kd = base + (size_t)g * head_bytes + (size_t)t * hd * kv->es;
        store_row(kv, kd, k + (size_t)g * hd, hd, dg + (size_t)g * 2 * hd,
                  dg + (size_t)g * 2 * hd + hd);
        store_row(kv, kd + half, v + (size_t)g * hd, hd, NULL, NULL);
    }
    L->len = pos + 1;
    return KV_OK;
}

int kvcache_append_n(kvcache_t *kv, int seq, int layer, int pos0, int n, const float *k,
                     const float *v) {
    if (!kv)
        return KV_EINVAL;
    if (n < 0 || (n > 0 && (!k || !v)))
        return kvc_fail(kv, KV_EINVAL, "kvcache_append_n: bad count %d or null", n);
    const size_t w = (size_t)kv->o.n_kv_heads * kv->o.head_dim;
    for (int i = 0; i < n; i++) {
        int rc = kvcache_append(kv, seq, layer, pos0 + i, k + i * w, v + i * w);
        if (rc)
            return rc;
    }
    return KV_OK;
}

/* ================================================================ blocks */

kv_block_state_t kvcache_block_state(const kvcache_t *kv, int seq, int layer, int block) {
    const kv_lseq *L = get_ls(kv, seq, layer);
    if (!L || block < 0 || block >= L->n_blocks)
        return KV_BLOCK_NONE;
    return (kv_block_state_t)L->state[block];
}

int kvcache_block_tokens(const kvcache_t *kv, int seq, int layer, int block) {
    const kv_lseq *L = get_ls(kv, seq, layer);
    if (!L || block < 0 || block >= L->n_blocks)
        return -1;
    int n = L->len - block * KV_BLOCK_TOKENS;
    return n < KV_BLOCK_TOKENS ? n : KV_BLOCK_TOKENS;
}

#define BLOCK_ARGS(fn)                                                                             \
    if (!kv)                                                                                       \
        return KV_EINVAL;                                                                          \
    kv_seq *S = get_seq(kv, seq);                                                                  \
    kv_lseq *L = get_ls(kv, seq, layer);                                                           \
    if (!S || !L || block < 0 || block >= L->n_blocks)                                             \
        return kvc_fail(kv, KV_EINVAL, fn ": no block %d in sequence %d layer %d (%d blocks)",     \
                        block, seq, layer, L ? L->n_blocks : -1);

int kvcache_block_take(kvcache_t *kv, int seq, int layer, int block, void **bytes, size_t *len) {
    if (bytes)
        *bytes = NULL;
    if (len)
        *len = 0;
    BLOCK_ARGS("kvcache_block_take");
    if (!bytes || !len)
        return kvc_fail(kv, KV_EINVAL, "kvcache_block_take: null output");
    if (L->state[block] != KV_BLOCK_HOT)
        return kvc_fail(kv, KV_ESTATE,
                        "kvcache_block_take: block %d of layer %d is not hot (state %d)", block,
                        layer, L->state[block]);
    if (!L->sketch && !(L->sketch = malloc((size_t)L->cap * kv->sketch_bytes)))
        return kvc_fail(kv, KV_ENOMEM, "kvcache_block_take: out of memory (key sketches)");
    void *p = malloc(kv->block_bytes);
    if (!p)
        return kvc_fail(kv, KV_ENOMEM, "kvcache_block_take: out of memory");
    memcpy(p, slot_ptr(kv, layer, L->slot[block]), kv->block_bytes);
    if (slot_release(kv, layer, L->slot[block])) {
        free(p);
        return kvc_fail(kv, KV_ENOMEM, "kvcache_block_take: out of memory");
    }
    if (!L->sk_ok[block]) { /* a block recalled unchanged keeps the sketch it had */
        ksketch_encode(p, kv->o.kv_dtype, kv->o.n_kv_heads, KV_BLOCK_TOKENS, kv->o.head_dim,
                       kvcache_block_tokens(kv, seq, layer, block),
                       L->digest + (size_t)block * kv->digest_floats,
                       L->sketch + (size_t)block * kv->sketch_bytes);
        L->sk_ok[block] = 1;
    }
    L->slot[block] = -1;
    L->state[block] = KV_BLOCK_OUT;
    L->hot--;
    summary_mark_demoted(S->sum, layer, block);
    *bytes = p;
    *len = kv->block_bytes;
    return KV_OK;
}

int kvcache_block_put(kvcache_t *kv, int seq, int layer, int block, const void *bytes, size_t len) {
    BLOCK_ARGS("kvcache_block_put");
    if (!bytes || len != kv->block_bytes)
        return kvc_fail(kv, KV_EINVAL, "kvcache_block_put: payload of %zu bytes, a block is %zu",
                        len, kv->block_bytes);
    if (L->state[block] != KV_BLOCK_OUT)
        return kvc_fail(kv, KV_ESTATE,
                        "kvcache_block_put: block %d of layer %d is not out (state %d)", block,
                        layer, L->state[block]);
    int id = slot_alloc(kv, layer);
    if (id < 0)
        return kvc_fail(kv, id, "kvcache_block_put: layer %d: %s (pool of %d slots)", layer,
                        id == KV_EFULL ? "no free slot" : "out of memory", kv->pools[layer].cap);
    memcpy(slot_ptr(kv, layer, id), bytes, len);
    if (L->ext[block]) {
        L->ext[block] = NULL;
        L->lent--;
    }
    L->slot[block] = id;
    L->state[block] = KV_BLOCK_HOT;
    L->hot++;
    summary_mark_recalled(S->sum, layer, block);
    return KV_OK;
}

int kvcache_block_drop(kvcache_t *kv, int seq, int layer, int block) {
    BLOCK_ARGS("kvcache_block_drop");
    if (L->state[block] == KV_BLOCK_DROPPED)
        return KV_OK;
    if (L->state[block] == KV_BLOCK_HOT) {
        if (slot_release(kv, layer, L->slot[block]))
            return kvc_fail(kv, KV_ENOMEM, "kvcache_block_drop: out of memory");
        L->hot--;
    }
    if (L->ext[block]) {
        L->ext[block] = NULL;
        L->lent--;
    }
    L->sk_ok[block] = 0;
    L->slot[block] = -1;
    L->state[block] = KV_BLOCK_DROPPED;
    /* the digest is forgotten: a dropped block never comes back */
    float *dg = L->digest + (size_t)block * kv->digest_floats;
    for (size_t i = 0; i < kv->digest_floats; i++)
        dg[i] = NAN;
    summary_mark_demoted(S->sum, layer, block);
    return KV_OK;
}

int kvcache_block_lend(kvcache_t *kv, int seq, int layer, int block, const void *bytes,
                       size_t len) {
    BLOCK_ARGS("kvcache_block_lend");
    (void)S;
    if (!bytes || len != kv->block_bytes)
        return kvc_fail(kv, KV_EINVAL, "kvcache_block_lend: payload of %zu bytes, a block is %zu",
                        len, kv->block_bytes);
    if (L->state[block] != KV_BLOCK_OUT)
        return kvc_fail(kv, KV_ESTATE,
                        "kvcache_block_lend: block %d of layer %d is not out (state %d)", block,
                        layer, L->state[block]);
    if (!L->ext[block])
        L->lent++;
    L->ext[block] = bytes;
    return KV_OK;
}

const char kvc_pending_mark[1] = {0};

int kvcache_block_lend_pending(kvcache_t *kv, int seq, int layer, int block) {
    BLOCK_ARGS("kvcache_block_lend_pending");
    (void)S;
    if (L->state[block] != KV_BLOCK_OUT)
        return kvc_fail(kv, KV_ESTATE,
                        "kvcache_block_lend_pending: block %d of layer %d is not out (state %d)",
                        block, layer, L->state[block]);
    if (!L->ext[block])
        L->lent++;
    L->ext[block] = KVC_PENDING;
    return KV_OK;
}

int kvcache_block_pending(const kvcache_t *kv, int seq, int layer, int block) {
    const kv_lseq *L = get_ls(kv, seq, layer);
    if (!L || block < 0 || block >= L->n_blocks)
        return 0;
    return L->ext[block] == KVC_PENDING;
}

void kvcache_seq_set_pending(kvcache_t *kv, int seq, kv_pending_fn fn, void *ud) {
    kv_seq *S =
        kv && seq >= 0 && seq < kv->o.max_seqs && kv->seqs[seq].used ? &kv->seqs[seq] : NULL;
    if (S) {
        S->pend_fn = fn;
        S->pend_ud = ud;
    }
}

int kvcache_block_unlend(kvcache_t *kv, int seq, int layer, int block) {
    BLOCK_ARGS("kvcache_block_unlend");
    (void)S;
    if (L->ext[block]) {
        L->ext[block] = NULL;
        L->lent--;
    }
    return KV_OK;
}

const void *kvcache_block_lent(const kvcache_t *kv, int seq, int layer, int block) {
    const kv_lseq *L = get_ls(kv, seq, layer);
    if (!L || block < 0 || block >= L->n_blocks)
        return NULL;
    return L->ext[block];
}

int kvcache_block_readable(const kvcache_t *kv, int seq, int layer, int block) {
    const kv_lseq *L = get_ls(kv, seq, layer);
    if (!L || block < 0 || block >= L->n_blocks)
        return 0;
    return L->state[block] == KV_BLOCK_HOT || L->ext[block] != NULL;
}

int kvcache_lent_blocks(const kvcache_t *kv, int seq, int layer) {
    const kv_lseq *L = get_ls(kv, seq, layer);
    return L ? L->lent : -1;
}

int kvcache_block_digest(const kvcache_t *kv, int seq, int layer, int block, int g,
                         const float **mins, const float **maxs) {
    const kv_lseq *L = get_ls(kv, seq, layer);
    if (!L || block < 0 || block >= L->n_blocks || g < 0 || g >= kv->o.n_kv_heads || !mins || !maxs)
        return KV_EINVAL;
    if (L->state[block] == KV_BLOCK_DROPPED)
        return KV_ESTATE;
    const float *dg =
        L->digest + (size_t)block * kv->digest_floats + (size_t)g * 2 * kv->o.head_dim;
    *mins = dg;
    *maxs = dg + kv->o.head_dim;
    return KV_OK;
}

/* ================================================================ accounting */

int kvcache_hot_blocks(const kvcache_t *kv, int seq, int layer) {
    const kv_lseq *L = get_ls(kv, seq, layer);
    return L ? L->hot : -1;
}

int kvcache_free_slots(const kvcache_t *kv, int layer) {
    if (!kv || layer < 0 || layer >= kv->o.n_layers)
        return -1;
    const kv_pool *P = &kv->pools[layer];
    return P->cap == INT32_MAX ? INT32_MAX : P->cap - P->n_used;
}

size_t kvcache_bytes_hot(const kvcache_t *kv) {
    return kv ? kv->bytes_hot : 0;
}
size_t kvcache_bytes_hot_peak(const kvcache_t *kv) {
    return kv ? kv->bytes_peak : 0;
}

void kvcache_reset_peak(kvcache_t *kv) {
    if (kv)
        kv->bytes_peak = kv->bytes_hot;
}

/* ================================================================ policies */

int kvcache_make_room(kvcache_t *kv, int seq, int layer, const local_policy_params *p, int need) {
    if (!kv)
        return KV_EINVAL;
    kv_seq *S = get_seq(kv, seq);
    if (!S || !p || layer < 0 || layer >= kv->o.n_layers || need < 0)
        return kvc_fail(kv, KV_EINVAL, "kvcache_make_room: bad sequence %d / layer %d / need %d",
                        seq, layer, need);
    kv_lseq *L = &S->L[layer];
    int nstat = 0;
    const summary_block_t *st = S->sum ? summary_layer_blocks(S->sum, layer, &nstat) : NULL;
    local_policy_view v = {.n_blocks = L->n_blocks,
                           .state = L->state,
                           .stats = (st && nstat >= L->n_blocks) ? st : NULL,
                           .cur_step = L->len - 1};
    if (kvc_grow((void **)&kv->ibuf, &kv->ibuf_cap, (size_t)L->n_blocks + 1, sizeof(int)))
        return kvc_fail(kv, KV_ENOMEM, "kvcache_make_room: out of memory");
    int nv = local_policy_decide(p, &v, layer, need, kv->ibuf, L->n_blocks);
    if (nv < 0)
        return kvc_fail(kv, KV_EINVAL, "kvcache_make_room: bad policy parameters");
    for (int i = 0; i < nv; i++) {
        int rc = kvcache_block_drop(kv, seq, layer, kv->ibuf[i]);
        if (rc)
            return rc;
    }
    if (kvcache_free_slots(kv, layer) < need)
        return kvc_fail(kv, KV_EFULL,
                        "kvcache_make_room: layer %d: %d free slots after dropping %d, %d needed",
                        layer, kvcache_free_slots(kv, layer), nv, need);
    return nv;
}

/* ================================================================ debugging */

int kvcache_debug_capture(const kvcache_t *kv, int seq, int layer, int head, float *probs_out) {
    const kv_seq *S = get_seq(kv, seq);
    const kv_lseq *L = get_ls(kv, seq, layer);
    if (!S || !L || !S->debug || L->dbg_n <= 0 || head < 0 || head >= kv->o.n_heads || !probs_out)
        return -1;
    memcpy(probs_out, L->dbg + (size_t)head * L->dbg_n, (size_t)L->dbg_n * sizeof(float));
    return L->dbg_n;
}
