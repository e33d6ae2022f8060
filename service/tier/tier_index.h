/* tier_index.h — the block index: sequences and, per layer and block, where
 * each block lives. In memory a hash of sequences; persisted as records in
 * the RocksDB "meta" family:
 *   'S' | tier_key_prefix_seq(tenant, seq)        -> sequence record
 *   'B' | tier_key_encode(tenant, seq, layer, blk) -> block record
 * A block record exists only while the block's payload is durable in the
 * blocks family (tier HOST written through, or SSD) or the block is DROPPED;
 * HOT blocks and write-back RAM-only blocks have none, so a restart brings
 * them back as TIER_NONE (fetch: NOT_FOUND), never as garbage. In memory a
 * sequence costs what it stores (chunks of its used blocks), not its largest
 * block id.
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

/* A stored chunk: the policy's part first (a policy_chunk * from the
 * policy's table is a tier_chunk *), the slots parallel to its blocks. */
typedef struct tier_chunk {
    policy_chunk pc;
    tier_slot slots[POLICY_CHUNK_BLOCKS];
} tier_chunk;

/* Growth record: blocks [first, next record's first or n_blocks) of every
 * layer were created by one growth with tier `tier` and last_active `step`;
 * a block of the range that is not stored still has these values. */
typedef struct tier_grow_rec {
    uint32_t first;
    uint8_t tier;
    uint64_t step;
} tier_grow_rec;

/* One sequence. Memory follows what is used: a block is stored (in a chunk
 * of POLICY_CHUNK_BLOCKS blocks of its layer, allocated on first use) once
 * it has a payload, a record, a RAM copy, or a summary names it; the other
 * blocks below n_blocks are described by the growth records. */
typedef struct tier_seqent {
    char tenant[TIER_TENANT_MAX + 1];
    uint64_t seq;
    tier_seq_info info;   /* info.params == NULL */
    policy_params params; /* effective */
    int open;
    uint64_t created_ms;
    uint64_t stored_bytes; /* payload bytes of its HOST and SSD blocks (tenant quota) */
    policy_state st;       /* stored chunks (tier_chunk) in st.chunks */
    tier_grow_rec *grows;  /* [n_grows], by first ascending */
    uint32_t n_grows, cap_grows;
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

/* Raise st.n_blocks to n_blocks (callers check it against max_blocks): the
 * new blocks of every layer get tier `tier` and last_active = step. Costs one
 * growth record (none when the last one has the same tier and step), never
 * memory per block. Returns 0 or -1 (out of memory: nothing changed). */
int tier_index_grow(tier_seqent *se, uint32_t n_blocks, uint8_t tier, uint64_t step);

/* Store block (layer, block) (layer < n_layers, block < n_blocks): its chunk
 * is allocated on first use, its blocks keep the values they had. Returns the
 * block, or NULL (out of memory: nothing changed). */
policy_block *tier_index_touch(tier_seqent *se, uint32_t layer, uint32_t block);

/* Index entries the sequence holds: stored chunks x POLICY_CHUNK_BLOCKS
 * plus growth records (what kvtierd --max-seq-blocks bounds). */
uint64_t tier_index_entries(const tier_seqent *se);

/* Values of any block < n_blocks, stored or not (NULL outputs skipped); a
 * block at or past n_blocks reads as TIER_NONE, all zero. */
void tier_index_peek(const tier_seqent *se, uint32_t layer, uint32_t block, policy_block *b,
                     tier_slot *s);

/* Blocks < n_blocks that are not stored, per tier (count[TIER_NLEVELS]). */
void tier_index_unstored(const tier_seqent *se, uint64_t count[TIER_NLEVELS]);

/* Blocks that are not stored and have tier `from` get tier `to`. */
void tier_index_retier_unstored(tier_seqent *se, uint8_t from, uint8_t to);

/* Tier of every block: m[layer * n_blocks + block], m of n_layers x
 * n_blocks bytes (caller's). */
void tier_index_fill_tiers(const tier_seqent *se, uint8_t *m);

/* Iterate the stored chunks: *pos = 0 first; returns the next one, NULL at
 * the end. The table must not change meanwhile (no touch). */
tier_chunk *tier_index_next_chunk(const tier_seqent *se, size_t *pos);

/* Test seam (fault injection): make the nth index allocation from now fail
 * (1 = the next one), as if out of memory; 0 = off. Every allocation of the
 * index (buckets, sequences, chunks, chunk tables, growth records) counts.
 * Process-wide; the counter is atomic. Also set by the environment variable
 * KVTIER_TEST_INDEX_ALLOC_FAIL (read once, at the first tier_index_init) so
 * that a test can inject it into a kvtierd process. Returns the number of
 * index allocations that failed this way so far. */
long tier_index_fault_set(long nth);

/* Visit all sequences: fn returns nonzero to stop. */
void tier_index_each(tier_index *ix, int (*fn)(void *ctx, tier_seqent *se), void *ctx);

/* The stored block (layer, block) and its slot, or NULL when not stored. A
 * block with a payload, a record, a RAM copy, a pin, or named by a summary
 * is stored (the facade touched it first). O(1) expected. */
static inline policy_block *tier_seq_block(tier_seqent *se, uint32_t layer, uint32_t block) {
    return policy_block_at(&se->st, layer, block);
}
static inline tier_slot *tier_seq_slot(tier_seqent *se, uint32_t layer, uint32_t block) {
    tier_chunk *c = (tier_chunk *)policy_chunk_find(&se->st, layer, block);
    return c ? &c->slots[block % POLICY_CHUNK_BLOCKS] : NULL;
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
