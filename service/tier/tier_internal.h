/* tier_internal.h — state shared by the facade files (tier.c, tier_put.c,
 * tier_move.c, tier_admin.c). Not part of the public API. Every function here expects
 * t->mu held. */
#ifndef KVTIER_TIER_INTERNAL_H
#define KVTIER_TIER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "tier.h"
#include "tier_host.h"
#include "tier_index.h"
#include "tier_ssd.h"

/* A write-back RAM block whose SSD copy sits in a deferred batch: its RAM
 * copy stays readable (unlinked from the LRU) until the batch landed. */
typedef struct tier_defer_keep {
    tier_host_entry *e;
    tier_seqent *se;
    uint32_t l, b;
} tier_defer_keep;

/* A prefetch whose read happens outside the lock. */
typedef struct tier_defer_read {
    tier_seqent *se;
    uint32_t l, b;
    uint32_t crc; /* the index's crc32c of the payload */
    void *data;   /* read result (phase 2) */
    uint32_t len;
    uint32_t read_crc; /* the crc32c stored beside the payload */
    int got;           /* tier_ssd_get_block's result (0 found, 1 absent, -1 error, -2 corrupt) */
    size_t decision;   /* index of its decision (summary prefetches) */
    uint8_t keep_corrupt; /* evict to HOST: a corrupt copy stays on SSD (not dropped) and no
                             later read of the round is published */
    int8_t outcome;       /* after publishing: 1 entered RAM, 0 did not (gone meanwhile, RAM
                             full, after a stop); keep_corrupt only: -1 read error, -2 corrupt,
                             -3 absent from RocksDB although its record says durable */
} tier_defer_read;

/* One admin round (tier_mv_round_begin/end) moves at most this much: its
 * deferred WriteBatch holds copies of the payloads it writes. */
#define TIER_ROUND_BYTES (8u << 20)
#define TIER_ROUND_BLOCKS 1024u

struct tier {
    pthread_mutex_t mu;
    /* A summary decides under mu and does its RocksDB work after releasing it
     * (tier_summarize): while io_busy, writers wait on io_cv (tier_io_wait);
     * readers (fetch, stat, map, stats, list) go on. While `defer` is set, the
     * tier_mv_* writes append to it instead of writing. */
    pthread_cond_t io_cv;
    int io_busy;
    rocksdb_writebatch_t *defer;
    tier_defer_keep *keep;
    size_t n_keep, cap_keep;
    tier_defer_read *reads;
    size_t n_reads, cap_reads;
    tier_options opt; /* opt.data_dir points to data_dir */
    char *data_dir;   /* owned copy */
    tier_ssd *ssd;
    tier_index ix;
    tier_host host;
    tier_stats st;         /* counters; level[].blocks/bytes kept current */
    uint64_t ssd_used;     /* payload bytes durable in RocksDB (any tier) */
    atomic_int disk_full;  /* 1 while free space is under opt.disk_reserve (tier_disk.c) */
    atomic_int disk_stuck; /* 1 after RocksDB failed a write with "No space left" */
};

#define TIER_ERR(err, errlen, ...)                                                                 \
    do {                                                                                           \
        if ((err) && (errlen))                                                                     \
            snprintf((err), (errlen), __VA_ARGS__);                                                \
    } while (0)

/* Waits until no summary's deferred RocksDB work is in flight (mu is
 * released while waiting). Every call that changes stored state calls it
 * right after taking mu. */
void tier_io_wait(tier_t *t);

/* Runs the work deferred into t->defer (which it takes and clears), t->keep
 * and t->reads: writes the batch and reads the queued blocks with mu
 * released (writers wait meanwhile: io_busy), then publishes under mu:
 * kept RAM copies go (or come back when the write failed), prefetches enter
 * RAM (a corrupt one is dropped and its decision in d, when d is not NULL,
 * becomes DROP). Returns 0, or -1 when a write failed (message in we).
 * Caller holds mu (and does again on return); nothing deferred: no unlock. */
int tier_mv_defer_commit(tier_t *t, policy_decision *d, char *we, size_t welen);

/* Starts a round of deferred RocksDB work (t->defer = a new batch): the
 * tier_mv_* calls that follow append to it. TIER_OK, or EIO (out of memory,
 * message in err, nothing started). */
tier_status tier_mv_round_begin(tier_t *t, char *err, size_t errlen);

/* Ends a round: tier_mv_defer_commit (the RocksDB work with mu released,
 * then published; nothing started: returns rc). rc is the round's status so
 * far: returned unchanged unless it is TIER_OK and the write failed, then
 * EFULL ("<what>: disk full: ...") or EIO ("RocksDB write of <what> failed:
 * ...") in err. Queued reads keep their outcome in t->reads[0..n) (n as
 * before the call) until the next round. */
tier_status tier_mv_round_end(tier_t *t, tier_status rc, const char *what, char *err,
                              size_t errlen);

/* Change a block's tier, keeping level counters right. */
void tier_mv_set_tier(tier_t *t, tier_seqent *se, uint32_t l, uint32_t b, uint8_t to);

/* Change a block's payload size, keeping level counters right. */
void tier_mv_set_bytes(tier_t *t, tier_seqent *se, uint32_t l, uint32_t b, uint32_t bytes);

/* Make room for `need` more payload bytes in RocksDB by dropping the least
 * valuable SSD blocks (closed sequences, fewest revivals, oldest; never a
 * pinned slot). When the room cannot be made nothing is dropped. Returns
 * TIER_OK or TIER_EFULL. */
tier_status tier_mv_ssd_room(tier_t *t, uint64_t need, char *err, size_t errlen);

/* Write payload + block record (tier `final_tier`, durable) in one batch,
 * after making room in the SSD budget (into t->defer when set). Returns
 * TIER_OK, TIER_EFULL, TIER_EIO. */
tier_status tier_mv_write_ssd(tier_t *t, tier_seqent *se, uint32_t l, uint32_t b, const void *data,
                              uint32_t len, uint32_t crc, uint8_t final_tier, char *err,
                              size_t errlen);

/* Remove a block's stored payload (RAM copy and RocksDB copy) and set its
 * tier to `to` (TIER_DROPPED: a DROPPED record is written; TIER_HOT or
 * TIER_NONE: the record is deleted). notify: report the drop in the next
 * summary. Returns TIER_OK or TIER_EIO (memory state changed anyway). */
tier_status tier_mv_forget(tier_t *t, tier_seqent *se, uint32_t l, uint32_t b, uint8_t to,
                           int notify, char *err, size_t errlen);

/* Move a RAM block out of RAM: write it to RocksDB if not durable there
 * (when that fails for lack of room the block is dropped and notified),
 * then tier SSD. Returns TIER_OK, or TIER_EIO. */
tier_status tier_mv_host_leave(tier_t *t, tier_host_entry *e, char *err, size_t errlen);

/* Evict coldest RAM blocks (never `keep`) until RAM fits its budget. */
tier_status tier_mv_host_enforce(tier_t *t, tier_host_entry *keep, char *err, size_t errlen);

/* Queue the read of an SSD block into RAM (t->defer must be set: the read
 * runs in tier_mv_defer_commit, which verifies and publishes it). keep_corrupt:
 * see tier_defer_read. TIER_OK, TIER_ENOTFOUND (not a durable SSD block
 * without a RAM copy), TIER_EIO (out of memory). */
tier_status tier_mv_prefetch(tier_t *t, tier_seqent *se, uint32_t l, uint32_t b, int keep_corrupt,
                             char *err, size_t errlen);

/* Move every RAM block to RocksDB and empty RAM, writing under mu: for
 * tier_close only (no other caller left). *moved (may be NULL) = blocks that
 * left RAM. Returns the first error met. */
tier_status tier_mv_flush_all(tier_t *t, uint64_t *moved, char *err, size_t errlen);

/* ---- tier_evict.c: admin moves in rounds (decide under mu, RocksDB outside) */

/* The stored part of closing se with retain (mu held, tier_io_wait done):
 * se is marked closed and its HOT blocks DROPPED at once; its RAM blocks
 * leave RAM in rounds (write-back copies written outside mu, readable from
 * RAM until they landed; a round that fails leaves its blocks in RAM), then
 * the sequence record is written. mu is released between rounds: a sequence
 * closed for good meanwhile ends it (TIER_OK). Returns the first error. */
tier_status tier_mv_close_retain(tier_t *t, tier_seqent *se, char *err, size_t errlen);

/* Persist the sequence record. */
tier_status tier_mv_persist_seq(tier_t *t, tier_seqent *se, char *err, size_t errlen);

/* Look up the sequence of block key k (open when need_open) and check that
 * (layer, block) lies inside its shape. TIER_OK with *out, or ENOTFOUND /
 * EINVAL with a message. */
tier_status tier_check_key(tier_t *t, const tier_block_key *k, int need_open, tier_seqent **out,
                           char *err, size_t errlen);

/* Raise se to n_blocks blocks per layer (new ones: `tier`, last_active =
 * step; counters follow). Costs one index entry at most (a growth record),
 * whatever n_blocks is. TIER_OK, or TIER_EFULL with a message (over
 * opt.max_seq_blocks, or out of memory): nothing changed. */
tier_status tier_mv_grow(tier_t *t, tier_seqent *se, uint32_t n_blocks, uint8_t tier, uint64_t step,
                         char *err, size_t errlen);

/* Store block (l, b) of se (b < n_blocks) so that it can be changed: its
 * chunk of POLICY_CHUNK_BLOCKS index entries is allocated on first use.
 * TIER_OK, or TIER_EFULL with a message (the chunk would take se over
 * opt.max_seq_blocks entries, or out of memory): nothing changed. */
tier_status tier_mv_touch(tier_t *t, tier_seqent *se, uint32_t l, uint32_t b, char *err,
                          size_t errlen);

/* Sequences and stored payload bytes (HOST + SSD) of one tenant: a walk of
 * the index (sequences, not blocks). */
void tier_mv_tenant_usage(tier_t *t, const char *tenant, uint64_t *seqs, uint64_t *bytes);

/* ---- tier_disk.c: the free-space reserve of the data directory */

/* Free bytes of the filesystem holding dir (for this user). Returns 0 / -1. */
int tier_disk_free(const char *dir, uint64_t *out);

/* TIER_OK when `need` more bytes leave opt.disk_reserve free (or no reserve
 * is set); EFULL "disk full: ..." otherwise (sets disk_full), also while
 * disk_stuck. Clears disk_full when there is room. */
tier_status tier_mv_disk_room(tier_t *t, uint64_t need, char *err, size_t errlen);

/* After a failed RocksDB write: EFULL (disk_full and disk_stuck set, message
 * in err) when rocksdb_err says "No space left", TIER_EIO otherwise (err
 * untouched). */
tier_status tier_mv_disk_failed(tier_t *t, const char *rocksdb_err, char *err, size_t errlen);

/* While the disk is full or nearly (free under 1.5 x the reserve): frees the
 * space of the sequence's deleted keys now (flush + compaction of its
 * ranges). Otherwise nothing. */
void tier_mv_disk_reclaim(tier_t *t, const char *tenant, uint64_t seq);

/* Re-evaluates disk_full from the free space (no lock needed): TIER_OK, or
 * EFULL with the "disk full" message. */
tier_status tier_disk_check(tier_t *t, char *err, size_t errlen);

/* Find an open-or-closed sequence, validating the tenant; fills err. */
tier_status tier_mv_lookup(tier_t *t, const char *tenant, uint64_t seq, int need_open,
                           tier_seqent **out, char *err, size_t errlen);

#endif
