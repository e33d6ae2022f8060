/* tier.h — kvtier cache-tier library: the facade used by the kvtierd front
 * end (one call per RPC) and by the worker in embedded (single machine) mode.
 * No gRPC here. Thread-safe: every function may be called from any thread.
 *
 * Model: a sequence (tenant, seq) has n_layers x max_blocks blocks; each block
 * has exactly one tier (policy.h: TIER_HOT, TIER_HOST, TIER_SSD, TIER_DROPPED,
 * TIER_NONE). Payloads live in host RAM (byte budget) and/or RocksDB (byte
 * budget). A block is published as HOST/SSD only after its write completed;
 * a fetch verifies key and crc32c and never serves corrupt data.
 *
 * Errors: every fallible call returns a tier_status and, when err != NULL,
 * writes a message a person can act on into err[errlen] (always NUL-ended).
 * Front end mapping (1:1): EINVAL->INVALID_ARGUMENT, ENOTFOUND->NOT_FOUND,
 * EDATALOSS->DATA_LOSS, ETOOBIG->RESOURCE_EXHAUSTED, EFULL->RESOURCE_EXHAUSTED,
 * EIO->UNAVAILABLE (or INTERNAL), EEXIST->ALREADY_EXISTS.
 */
#ifndef KVTIER_TIER_H
#define KVTIER_TIER_H

#include <stddef.h>
#include <stdint.h>

#include "policy.h"

#define TIER_TENANT_MAX 64            /* bytes in a tenant name (1..64, no NUL) */
#define TIER_MAX_BLOCKS_DEFAULT 65536 /* max_blocks per layer when info says 0 */
#define TIER_MAX_LAYERS POLICY_MAX_LAYERS

typedef enum tier_status {
    TIER_OK = 0,
    TIER_EINVAL = 1,    /* bad argument: key outside the sequence shape, bad tenant, ... */
    TIER_ENOTFOUND = 2, /* unknown sequence, or block not stored (dropped, lost, never put) */
    TIER_EDATALOSS =
        3,            /* checksum or key mismatch (on put: nothing stored; on fetch: not served) */
    TIER_ETOOBIG = 4, /* payload larger than max_block_bytes or the sequence's block_bytes */
    TIER_EFULL = 5,   /* budgets full and nothing can be made room for, or out of memory */
    TIER_EIO = 6,     /* RocksDB / OS error */
    TIER_EEXIST = 7   /* sequence exists with a different shape */
} tier_status;

typedef enum tier_write_policy {
    TIER_WRITE_THROUGH = 0, /* put acked once in RocksDB (WAL on); RAM is a cache in front */
    TIER_WRITE_BACK = 1     /* put acked at RAM speed; to RocksDB on eviction/flush/close;
                               after a crash RAM-only blocks are NOT_FOUND */
} tier_write_policy;

typedef struct tier tier_t; /* opaque */

typedef struct tier_options {
    const char *data_dir;           /* RocksDB directory, created if missing (required) */
    uint64_t host_budget;           /* payload bytes in RAM, whole service (512 MiB) */
    uint64_t ssd_budget;            /* payload bytes in RocksDB, whole service (20 GiB) */
    tier_write_policy write_policy; /* (TIER_WRITE_THROUGH) */
    int fsync;                      /* fsync the WAL on every write: power-loss safe (0) */
    uint32_t max_block_bytes;       /* largest payload accepted (1 MiB) */
    int blob_files;                 /* store payloads in RocksDB blob files (0) */
    policy_params params;           /* defaults for sequences that bring none */
    /* Limits (0 = unlimited, the library's default; kvtierd sets its own):
     * a put or summary that would pass one is refused with EFULL
     * (RESOURCE_EXHAUSTED) and changes nothing. */
    uint64_t max_seq_blocks;   /* index entries of one sequence: stored chunks x
                                  POLICY_CHUNK_BLOCKS, plus growth records */
    uint32_t tenant_max_seqs;  /* sequences (open or retained) of one tenant */
    uint64_t tenant_max_bytes; /* payload bytes stored (HOST + SSD) by one tenant */
    /* Bytes of the data directory's filesystem kept free (0 = none): a
     * payload write that would leave less is refused with EFULL, message
     * "disk full: ..."; reads, closes and evictions to DROPPED go on and free
     * space at once; tier_health says EFULL while under it. RocksDB's
     * memtables and WAL are sized to fit in it (a restart replays the WAL). */
    uint64_t disk_reserve;
} tier_options;

#define TIER_MAX_KV_HEADS 1024     /* n_kv_heads accepted */
#define TIER_MAX_HEAD_DIM 4096     /* head_dim accepted */
#define TIER_MAX_BLOCK_TOKENS 4096 /* block_tokens accepted */

/* Shape of a sequence, given at open. A block payload holds K and V of every
 * KV head for block_tokens positions: block_tokens x n_kv_heads x head_dim x
 * 2 elements ("the geometry") of 1, 2 or 4 bytes each (fp8, bf16/f16, f32). */
typedef struct tier_seq_info {
    uint32_t n_layers;           /* 1..TIER_MAX_LAYERS */
    uint32_t n_kv_heads;         /* 1..TIER_MAX_KV_HEADS */
    uint32_t head_dim;           /* 1..TIER_MAX_HEAD_DIM */
    uint32_t block_tokens;       /* positions per block, 1..TIER_MAX_BLOCK_TOKENS (16) */
    uint32_t max_blocks;         /* blocks per layer allowed; 0 = TIER_MAX_BLOCKS_DEFAULT */
    uint32_t block_bytes;        /* exact payload size of every block (the worker sends a partial
                                    tail block at full size, ntokens < block_tokens): the geometry
                                    x 1, 2 or 4; 0 = any geometry x 1, 2 or 4 <= max_block_bytes */
    const policy_params *params; /* borrowed, copied; NULL = service defaults */
} tier_seq_info;

/* Key of one block. tenant borrowed. */
typedef struct tier_block_key {
    const char *tenant; /* NUL-terminated, 1..TIER_TENANT_MAX bytes */
    uint64_t seq;
    uint32_t layer;
    uint32_t block;
} tier_block_key;

typedef policy_summary tier_summary;
typedef policy_layer_summary tier_layer_summary;
typedef policy_decision tier_decision;

/* A sequence as listed (tier_seq_list / tier_seq_get). */
typedef struct tier_seq_desc {
    char tenant[TIER_TENANT_MAX + 1];
    uint64_t seq;
    tier_seq_info info;            /* info.params == NULL; see params */
    policy_params params;          /* effective parameters */
    int open;                      /* 1 open, 0 closed and retained */
    uint64_t created_ms;           /* unix time of first open, milliseconds */
    uint64_t step;                 /* last summary step */
    uint32_t n_blocks;             /* blocks per layer known */
    uint64_t blocks[TIER_NLEVELS]; /* blocks per tier */
    uint64_t bytes[TIER_NLEVELS]; /* payload bytes per tier (HOT: as put sizes are known, else 0) */
} tier_seq_desc;

/* Counters of one tier since open. */
typedef struct tier_level_stats {
    uint64_t blocks;   /* blocks now in this tier (all sequences) */
    uint64_t bytes;    /* payload bytes now in this tier */
    uint64_t hits;     /* fetches served from this tier */
    uint64_t misses;   /* fetches that found the block not here (HOST: went to SSD) */
    uint64_t puts;     /* payloads written into this tier */
    uint64_t fetches;  /* fetch calls that reached this tier */
    uint64_t revivals; /* recalls reported for blocks that were in this tier */
    uint64_t fetch_ns; /* total fetch latency served from this tier, ns */
} tier_level_stats;

typedef struct tier_stats {
    tier_level_stats level[TIER_NLEVELS];
    uint64_t decisions[POLICY_NKINDS]; /* decisions returned, by kind */
    uint64_t sequences_open;
    uint64_t sequences_retained;      /* closed but kept */
    uint64_t dataloss;                /* checksum/key mismatches seen (put + fetch) */
    uint64_t not_found;               /* fetches answered NOT_FOUND */
    uint64_t host_budget, ssd_budget; /* bytes */
    uint64_t rocksdb_live_bytes;      /* rocksdb.estimate-live-data-size */
    uint64_t rocksdb_memtable_bytes;  /* rocksdb.cur-size-all-mem-tables */
    uint64_t rocksdb_sst_bytes;       /* rocksdb.total-sst-files-size */
    int write_policy;                 /* tier_write_policy */
} tier_stats;

/* ---------------------------------------------------------------- lifecycle */

/* Fill *o with defaults (data_dir NULL: the caller must set it). */
void tier_options_init(tier_options *o);

/* Open (or create) the store in o->data_dir and recover the index of every
 * sequence persisted there. On success *out is a new handle the caller
 * releases with tier_close. Blocks that were only in RAM at a crash come back
 * as TIER_NONE (fetch: NOT_FOUND). Errors: EINVAL (options), EIO (RocksDB).
 * On TIER_OK err holds "" or a warning (malformed index records skipped). */
tier_status tier_open(const tier_options *o, tier_t **out, char *err, size_t errlen);

/* Flush write-back blocks to RocksDB, persist the index, close and free.
 * NULL is a no-op. Returns the first error met while flushing (the handle is
 * freed regardless). */
tier_status tier_close(tier_t *t);

/* Free a buffer returned by tier_fetch / tier_map / tier_summarize / tier_seq_list. */
void tier_buf_free(void *p);

/* ---------------------------------------------------------------- sequences */

/* Open sequence (tenant, seq) with shape *info. OK when it is new, when it
 * exists with the same shape (re-attach, e.g. after a restart; a retained
 * closed sequence is reopened). EEXIST when it exists with another shape,
 * EINVAL for a bad tenant/shape/params. */
tier_status tier_seq_open(tier_t *t, const char *tenant, uint64_t seq, const tier_seq_info *info,
                          char *err, size_t errlen);

/* Elements of one block payload of shape *in: block_tokens x n_kv_heads x
 * head_dim x 2 (K and V). Pure. */
uint64_t tier_seq_geometry(const tier_seq_info *in);

/* 1 when a payload of len bytes fits shape *in: exactly block_bytes when set,
 * else the geometry x 1, 2 or 4 bytes; 0 otherwise. Pure. */
int tier_seq_size_fits(const tier_seq_info *in, uint64_t len);

/* Close a sequence. retain: 1 keep stored blocks (RAM flushed to RocksDB,
 * HOT blocks become DROPPED), 0 delete everything, -1 use params.retain_on_close.
 * ENOTFOUND when unknown. */
tier_status tier_seq_close(tier_t *t, const char *tenant, uint64_t seq, int retain, char *err,
                           size_t errlen);

/* Describe one sequence into *out. ENOTFOUND when unknown. */
tier_status tier_seq_get(tier_t *t, const char *tenant, uint64_t seq, tier_seq_desc *out, char *err,
                         size_t errlen);

/* List sequences (tenant NULL or "" = all tenants). *out is a new array of *n
 * entries (NULL when 0), freed with tier_buf_free. */
tier_status tier_seq_list(tier_t *t, const char *tenant, tier_seq_desc **out, size_t *n, char *err,
                          size_t errlen);

/* ---------------------------------------------------------------- blocks */

/* One block of a put (tier_put_batch / tier_put_check). Everything borrowed
 * for the call. */
typedef struct tier_put_item {
    tier_block_key key; /* tenant borrowed */
    const void *data;   /* [len] payload, borrowed (copied when stored) */
    size_t len;         /* the sequence's block_bytes (or, when 0, its geometry x 1, 2
                           or 4), <= max_block_bytes */
    uint32_t crc32c;    /* the sender's tier_crc32c of data */
    uint32_t ntokens;   /* filled positions, <= block_tokens */
    uint8_t target;     /* placement asked for: 0 = the service picks (RAM when it fits the
                           RAM budget), TIER_HOST (RAM copy required: EFULL when larger than
                           the RAM budget), TIER_SSD (RocksDB only, no RAM copy); else EINVAL */
} tier_put_item;

/* Store a block payload (a demotion from the worker): tier_put_batch of one
 * item. data[len] borrowed, copied. crc32c is the sender's checksum of data
 * (tier_crc32c): mismatch -> EDATALOSS and nothing stored. ntokens: filled
 * positions (<= block_tokens). ENOTFOUND unknown or closed sequence; EINVAL
 * layer/block outside the shape or ntokens > block_tokens; ETOOBIG len >
 * limits; EFULL no room; EIO. On OK *tier_out (may be NULL) says where it
 * landed (TIER_HOST or TIER_SSD; TIER_DROPPED in the rare case that write-back
 * RAM pressure pushed it out and RocksDB had no room). */
tier_status tier_put(tier_t *t, const tier_block_key *k, const void *data, size_t len,
                     uint32_t crc32c, uint32_t ntokens, int *tier_out, char *err, size_t errlen);

/* Store items[0..n) all-or-nothing (n == 0: OK, nothing done).
 *
 * 1. Validate every item against the current state, in order, with the checks
 *    of tier_put (empty -> EINVAL, len -> ETOOBIG, key/sequence -> ENOTFOUND or
 *    EINVAL, ntokens -> EINVAL, crc32c -> EDATALOSS); then the SSD budget for
 *    the whole batch (EFULL; SSD blocks of other sequences may be dropped to
 *    make room, as for single puts, but only when the room can be made).
 * 2. Write-through: every payload and its block record go to RocksDB in ONE
 *    WriteBatch (WAL on; fsync when opened with fsync=1). Write-back: blocks
 *    that fit the RAM budget stay in RAM; that one WriteBatch holds the deletes
 *    of their older durable copies (and the payload + record of any block too
 *    big for RAM). A block put twice in one batch: the last copy wins.
 * 3. Only after that write succeeded are the blocks published (index, RAM
 *    copies, counters), so either every item is stored or none is. A crash
 *    before the write completed leaves none of them; after it, every one
 *    (write-through) — write-back RAM-only blocks come back NOT_FOUND, as for
 *    tier_put.
 *
 * On OK tiers_out[i] (tiers_out may be NULL, else n entries) is where item i
 * landed (as tier_put's *tier_out); RAM pressure may then move earlier blocks
 * to RocksDB as usual, and a failure doing so is not the batch's: it is only
 * reported as a warning in err. On error nothing of the batch is stored and
 * *failed_index (may be NULL) is the index of the first item that failed
 * validation, or n when the batch failed as a whole (EFULL, EIO, EINVAL for
 * items == NULL). */
tier_status tier_put_batch(tier_t *t, const tier_put_item *items, size_t n, int *tiers_out,
                           size_t *failed_index, char *err, size_t errlen);

/* Validate one item as tier_put_batch would, storing nothing (front ends
 * check each message of a stream as it arrives, then commit with one batch).
 * Same codes as tier_put; a crc32c mismatch counts in stats.dataloss. Budgets
 * are not checked (only the batch knows its total). OK here does not
 * guarantee the batch: the sequence may be closed in between. */
tier_status tier_put_check(tier_t *t, const tier_put_item *item, char *err, size_t errlen);

/* Read a stored block. On OK *data_out is a new buffer of *len_out bytes
 * (free with tier_buf_free), *crc_out its crc32c, *tier_out (may be NULL) the
 * tier it came from. ENOTFOUND: unknown sequence, block HOT/DROPPED/NONE;
 * EDATALOSS: stored copy failed its checksum or key check (not served);
 * EINVAL: key outside the shape. Counts a hit on the tier it came from. The
 * block stays where it is until a summary reports it recalled. */
tier_status tier_fetch(tier_t *t, const tier_block_key *k, void **data_out, size_t *len_out,
                       uint32_t *crc_out, int *tier_out, char *err, size_t errlen);

/* Index entry of one block (no payload). */
typedef struct tier_block_meta {
    int tier;             /* tier_level */
    uint32_t bytes;       /* stored payload size (0 when not stored) */
    uint32_t crc32c;      /* of the stored payload */
    uint32_t ntokens;     /* filled positions given at put */
    uint64_t last_active; /* decode step */
    uint32_t hits, revivals;
    int durable; /* 1 when the payload is in RocksDB */
} tier_block_meta;

/* Describe one block into *out. A block beyond the sequence's known blocks
 * (but inside its shape) is TIER_NONE. ENOTFOUND unknown sequence, EINVAL
 * key outside the shape. */
tier_status tier_block_stat(tier_t *t, const tier_block_key *k, tier_block_meta *out, char *err,
                            size_t errlen);

/* ---------------------------------------------------------------- policy */

/* Apply a worker summary to the index, run policy_decide, carry out the
 * service-side moves (DEMOTE_SSD, DROP, PREFETCH) and return every decision
 * (also those the worker must act on: DEMOTE_HOST = Put this block; DROP =
 * mask it). Drops the service made on its own since the last summary (SSD
 * budget pressure) are reported here too, as DROP. *out is a new array of *n
 * decisions (NULL when 0), freed with tier_buf_free. ENOTFOUND unknown or
 * closed sequence; EINVAL index out of range / n_blocks > max_blocks. */
tier_status tier_summarize(tier_t *t, const char *tenant, uint64_t seq, const tier_summary *s,
                           tier_decision **out, size_t *n, char *err, size_t errlen);

/* ---------------------------------------------------------------- admin */

/* Move stored blocks of a sequence (layer -1 = all layers) to `target`:
 * TIER_HOST (SSD blocks read back into RAM, verified, while they fit the RAM
 * budget: blocks that do not fit stay on SSD and are not counted; nothing
 * else is pushed out of RAM for them), TIER_SSD (HOST blocks written to
 * RocksDB and leave RAM) or TIER_DROPPED (HOST/SSD payloads deleted). HOT
 * blocks are the worker's and are left alone. *moved (may be NULL) = blocks
 * moved. EINVAL bad layer/target; EDATALOSS a block failed its checks on
 * SSD (it stays there; moving stopped at it, *moved counts those before). */
tier_status tier_evict(tier_t *t, const char *tenant, uint64_t seq, int layer, int target,
                       uint64_t *moved, char *err, size_t errlen);

/* Write every RAM block of every sequence to RocksDB and empty RAM. */
tier_status tier_drain(tier_t *t, uint64_t *moved, char *err, size_t errlen);

/* Tier matrix of a sequence: *map_out is a new array [*n_layers][*n_blocks]
 * of tier_level bytes (row-major), freed with tier_buf_free. */
tier_status tier_map(tier_t *t, const char *tenant, uint64_t seq, uint8_t **map_out,
                     uint32_t *n_layers, uint32_t *n_blocks, char *err, size_t errlen);

/* Snapshot of counters into *out. Never fails. */
void tier_stats_get(tier_t *t, tier_stats *out);

/* OK when RocksDB answers (a read of the metadata family works) and the
 * disk is not full; EIO when RocksDB does not answer; EFULL ("disk full:
 * ...") while the free space is under opt.disk_reserve or RocksDB stopped
 * writing for lack of space (reads still work then). */
tier_status tier_health(tier_t *t, char *err, size_t errlen);

/* ---------------------------------------------------------------- helpers */

/* "OK", "EINVAL", ... */
const char *tier_status_name(tier_status s);

/* crc32c (Castagnoli, as iSCSI/ext4/RocksDB) of data[len]; standard
 * convention: crc32c("123456789") == 0xE3069283. Chain by passing the
 * previous result as `crc` (start with 0). */
uint32_t tier_crc32c(uint32_t crc, const void *data, size_t len);

#endif
