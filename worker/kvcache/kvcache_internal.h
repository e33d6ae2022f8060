/* kvcache_internal.h - the KV cache's state, shared by its files (kvcache.c:
 * pools, sequences, append, blocks; kvcache_attend.c: attention, bounds and
 * revival checks). Not part of the API (kvcache.h). */
#ifndef KVTIER_KVCACHE_INTERNAL_H
#define KVTIER_KVCACHE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "attention.h"
#include "kvcache.h"

#define KV_CHUNK_SLOTS 16 /* slots per pool allocation */
#define KV_DEFAULT_MAX_SEQS 64

/* ================================================================ types */

typedef struct {
    int cap;       /* pool_blocks, or INT32_MAX when unlimited */
    int n_alloc;   /* slots ever allocated (chunks * KV_CHUNK_SLOTS >= n_alloc) */
    int n_used;    /* slots holding a HOT block */
    char **chunks; /* [n_chunks], each KV_CHUNK_SLOTS * block_bytes */
    int n_chunks, chunks_cap;
    int *free_ids; /* allocated, unused slots */
    int n_free, free_cap;
} kv_pool;

typedef struct {
    int len; /* positions appended */
    int n_blocks, cap;
    int32_t *slot;    /* [cap] physical slot or -1 */
    uint8_t *state;   /* [cap] kv_block_state_t */
    float *digest;    /* [cap][n_kv][2][hd]: min row then max row */
    uint8_t *sketch;  /* [cap][sketch_bytes]: 4-bit keys of OUT blocks (ksketch.h); NULL
                         until the first block of this layer is taken out */
    uint8_t *sk_ok;   /* [cap] 1: sketch[b] matches the block's keys (kept through a
                         put-back; cleared by an append into the block or a drop) */
    const void **ext; /* [cap] lent payload of an OUT block (borrowed) or NULL */
    int lent;         /* OUT blocks with a lent payload */
    int hot;          /* HOT blocks */
    int *rev;         /* revival candidates of the last attend (prefetch mode) */
    int n_rev, rev_cap;
    float *dbg; /* [n_heads][dbg_cap] probabilities of the last row */
    size_t dbg_cap;
    int dbg_n; /* captured positions, 0 = none */
} kv_lseq;

typedef struct {
    int used;
    kv_lseq *L;     /* [n_layers] */
    summary_t *sum; /* NULL: stats off */
    int has_policy;
    local_policy_params pol;
    float rev_tau; /* > 0: prefetch-mode revival tracking */
    int debug;
    kv_pending_fn pend_fn; /* kvcache_seq_set_pending */
    void *pend_ud;
} kv_seq;

/* The mark of a pending loan (kvcache_block_lend_pending) in kv_lseq.ext. */
extern const char kvc_pending_mark[1];
#define KVC_PENDING ((const void *)kvc_pending_mark)

struct kvcache {
    kvcache_opts o;
    size_t es;            /* bytes per stored element */
    size_t block_bytes;   /* one slot */
    size_t digest_floats; /* per block: n_kv * 2 * hd */
    size_t sketch_bytes;  /* per block, ksketch_bytes() */
    float scale;
    kv_pool *pools; /* [n_layers] */
    kv_seq *seqs;   /* [max_seqs] */
    attn_ws_t *ws;
    size_t bytes_hot, bytes_peak;
    /* attend scratch */
    attn_block_t *blk;
    int blk_cap;
    float *fbuf; /* mass, cum, peak, row_lse */
    size_t fbuf_cap;
    uint8_t *ubuf; /* active flags */
    size_t ubuf_cap;
    int *ibuf; /* top-p scratch, victims */
    size_t ibuf_cap;
    struct kv_rv *rv; /* revival check: (log mass bound, block) of one head */
    size_t rv_cap;
    uint8_t *rflag; /* revival check: candidate flags per block */
    size_t rflag_cap;
    kvcache_attn_provider_t prov; /* prov.attend NULL: none */
    char err[256];
};

/* Records a failure message in kv->err and returns code. */
int kvc_fail(kvcache_t *kv, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Grows *p (capacity *cap elements of elem bytes) to hold need; 0 or -1. */
int kvc_grow(void **p, size_t *cap, size_t need, size_t elem);

static inline char *slot_ptr(const kvcache_t *kv, int layer, int slot) {
    const kv_pool *P = &kv->pools[layer];
    return P->chunks[slot / KV_CHUNK_SLOTS] + (size_t)(slot % KV_CHUNK_SLOTS) * kv->block_bytes;
}

static inline kv_seq *get_seq(const kvcache_t *kv, int seq) {
    if (!kv || seq < 0 || seq >= kv->o.max_seqs || !kv->seqs[seq].used)
        return NULL;
    return &kv->seqs[seq];
}

static inline kv_lseq *get_ls(const kvcache_t *kv, int seq, int layer) {
    kv_seq *S = get_seq(kv, seq);
    if (!S || layer < 0 || layer >= kv->o.n_layers)
        return NULL;
    return &S->L[layer];
}

#endif
