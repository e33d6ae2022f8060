/* tier_index.h — the block index: sequences and, per layer and block, where
 * each block lives. In memory a hash of sequences; persisted as records in
 * the RocksDB "meta" family:
 *   'S' | tier_key_prefix_seq(tenant, seq)        -> sequence record
 *   'B' | tier_key_encode(tenant, seq, layer, blk) -> block record
 * A block record exists only while the block's payload is durable in the
 * blocks family (tier HOST written through, or SSD) or the block is DROPPED;
 * HOT blocks and write-back RAM-only blocks have none, so a restart brings
 * them back as TIER_NONE (fetch: NOT_FOUND), never as garbage.
 * Not thread-safe on its own (the facade locks). */
#ifndef KVTIER_TIER_INDEX_H
#define KVTIER_TIER_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "policy.h"
#include "tier.h"
#include "tier_host.h"
#include "tier_key.h"

#define TIER_META_KEY_MAX (1 + TIER_KEY_MAX)
#define TIER_SEQREC_MAX (64 + 8 * 16 + 4 * POLICY_MAX_LAYERS)
#define TIER_BLOCKREC_LEN 32

/* Per-block data the policy does not need. */
typedef struct tier_slot {
    uint32_t crc;          /* crc32c of the stored payload */
    uint32_t ntokens;      /* filled positions */
    uint8_t durable;       /* payload is in RocksDB */
    uint8_t notify_drop;   /* dropped by the service: report DROP in the next summary */
    uint8_t pinned;        /* being written (put batch, RAM -> SSD): never an SSD victim */
    tier_host_entry *host; /* RAM copy, or NULL */
} tier_slot;

typedef struct tier_seqent {
    char tenant[TIER_TENANT_MAX + 1];
    uint64_t seq;
    tier_seq_info info;   /* info.params == NULL */
    policy_params params; /* effective */
    int open;
    uint64_t created_ms;
    uint64_t stored_bytes;    /* payload bytes of its HOST and SSD blocks (tenant quota) */
    policy_state st;          /* blocks [n_layers][stride] */
    tier_slot *slots;         /* [n_layers][stride], parallel to st.blocks */
    struct tier_seqent *next; /* hash chain */
} tier_seqent;

typedef struct tier_index {
    tier_seqent **buckets;
    size_t nbuckets;
    size_t count;
} tier_index;

/* Empty index; 0 or -1 (out of memory). */
int tier_index_init(tier_index *ix);

/* Free every sequence (and their host entries' memory is NOT touched:
 * the facade frees RAM entries first). */
void tier_index_free(tier_index *ix);

/* Find a sequence; NULL when absent. */
tier_seqent *tier_index_find(tier_index *ix, const char *tenant, uint64_t seq);

/* Create and insert a sequence with n_blocks = 0. NULL when out of memory. */
tier_seqent *tier_index_add(tier_index *ix, const char *tenant, uint64_t seq,
                            const tier_seq_info *info, const policy_params *params);

/* Unlink and free a sequence (its host entries must be gone). */
void tier_index_remove(tier_index *ix, tier_seqent *se);

/* Make room for n_blocks blocks per layer (n_blocks <= max_blocks); new
 * blocks get tier `tier` with last_active = step. Raises st.n_blocks.
 * Returns 0 or -1 (out of memory: nothing changed). */
int tier_index_grow(tier_seqent *se, uint32_t n_blocks, uint8_t tier, uint64_t step);

/* Test seam (fault injection): make the nth index allocation from now fail
 * (1 = the next one), as if out of memory; 0 = off. Every allocation of the
 * index (buckets, sequences, block arrays) counts. Process-wide; the counter
 * is atomic. Also set by the environment variable KVTIER_TEST_INDEX_ALLOC_FAIL
 * (read once, at the first tier_index_init) so that a test can inject it into
 * a kvtierd process. Returns the number of index allocations that failed this
 * way so far. */
long tier_index_fault_set(long nth);

/* Visit all sequences: fn returns nonzero to stop. */
void tier_index_each(tier_index *ix, int (*fn)(void *ctx, tier_seqent *se), void *ctx);

static inline policy_block *tier_seq_block(tier_seqent *se, uint32_t layer, uint32_t block) {
    return &se->st.blocks[(size_t)layer * se->st.stride + block];
}
static inline tier_slot *tier_seq_slot(tier_seqent *se, uint32_t layer, uint32_t block) {
    return &se->slots[(size_t)layer * se->st.stride + block];
}

/* ---- records (pure codecs) ---- */

/* Meta key of a sequence record / all block records of a sequence / one block. */
size_t tier_meta_key_seq(const char *tenant, uint64_t seq, uint8_t *buf);
size_t tier_meta_prefix_blocks(const char *tenant, uint64_t seq, uint8_t *buf);
size_t tier_meta_key_block(const char *tenant, uint64_t seq, uint32_t layer, uint32_t block,
                           uint8_t *buf);

/* Sequence record: shape, params, open flag, created, step, n_blocks.
 * Encode returns the length written to buf[TIER_SEQREC_MAX]. */
size_t tier_seqrec_encode(const tier_seqent *se, uint8_t *buf);
/* Decode into *info (params NULL), *params, *open, *created_ms, *step,
 * *n_blocks. Returns 0 or -1 when malformed. */
int tier_seqrec_decode(const uint8_t *v, size_t vl, tier_seq_info *info, policy_params *params,
                       int *open, uint64_t *created_ms, uint64_t *step, uint32_t *n_blocks);

/* Block record (TIER_BLOCKREC_LEN bytes): tier, ntokens, bytes, crc,
 * last_active, hits, revivals. */
void tier_blockrec_encode(const policy_block *b, const tier_slot *s, uint8_t *buf);
int tier_blockrec_decode(const uint8_t *v, size_t vl, policy_block *b, tier_slot *s);

#endif
