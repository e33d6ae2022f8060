/* tier_ssd.h — the SSD tier: RocksDB with column families
 *   default  (unused, RocksDB requires it)
 *   meta     index records (sequence and block records, see tier_index.h)
 *   blocks   payloads: key = tier_key_encode(...), value = tier_ssd_value
 * WAL always on; fsync per write optional. No compression (KV payloads are
 * bf16 noise to a compressor). Internal to the tier library. */
#ifndef KVTIER_TIER_SSD_H
#define KVTIER_TIER_SSD_H

#include <rocksdb/c.h>
#include <stddef.h>
#include <stdint.h>

/* Value header in the blocks family, followed by the key and the payload:
 *   magic "KVT1" | crc32c(payload) u32 | payload len u32 | key len u8 | 3 x 0
 *   | key bytes | payload                                   (big-endian) */
#define TIER_SSD_MAGIC 0x4B565431u /* "KVT1" */
#define TIER_SSD_HDR 16

typedef struct tier_ssd {
    rocksdb_t *db;
    rocksdb_options_t *opts;
    rocksdb_writeoptions_t *wopts;
    rocksdb_readoptions_t *ropts;
    rocksdb_column_family_handle_t *cf_default, *cf_meta, *cf_blocks;
    char *test_gate; /* KVTIER_TEST_WRITE_GATE (owned), or NULL */
} tier_ssd;

/* Open or create the database in dir. On success *out is new (tier_ssd_close).
 * Returns 0, or -1 with a message in err. tier_ssd_open_ex with disk_reserve
 * (bytes the tier keeps free on the filesystem, 0 = none) sizes what RocksDB
 * may need at once to fit in it: memtables (reserve / 4 each, 64 KiB..64 MiB),
 * the WAL before a flush (reserve / 2: a restart replays it into an SST) and
 * the MANIFEST preallocation. Always: RocksDB's info LOG at ERROR level only
 * (its writer asserts on the second append after a failed one: a LOG that
 * fills the disk would abort the process). */
int tier_ssd_open(const char *dir, int fsync, int blob_files, tier_ssd **out, char *err,
                  size_t errlen);
int tier_ssd_open_ex(const char *dir, int fsync, int blob_files, uint64_t disk_reserve,
                     tier_ssd **out, char *err, size_t errlen);

/* 1 when a RocksDB error string reports a full disk ("No space left"). */
int tier_ssd_is_nospace(const char *rocksdb_err);

/* Frees the space of deleted keys in [lo, hi) of the blocks family (and
 * [mlo, mhi) of the meta family): flushes the memtables (obsolete WAL files
 * go) and compacts those ranges (range tombstones drop what they cover).
 * Blocking; for a nearly full disk. Returns 0 or -1 with a message. */
int tier_ssd_reclaim(tier_ssd *s, const uint8_t *lo, size_t lol, const uint8_t *hi, size_t hil,
                     const uint8_t *mlo, size_t mlol, const uint8_t *mhi, size_t mhil, char *err,
                     size_t errlen);

/* Close and free; NULL is a no-op. */
void tier_ssd_close(tier_ssd *s);

/* Add a payload put to batch b (key/data borrowed until tier_ssd_write). The
 * header is written into hdr[TIER_SSD_HDR], which must also outlive the write. */
void tier_ssd_batch_put_block(tier_ssd *s, rocksdb_writebatch_t *b, const uint8_t *key, size_t klen,
                              const void *data, uint32_t len, uint32_t crc, uint8_t *hdr);

/* 1 when a RocksDB error string reports corruption ("Corruption: ..."). */
int tier_ssd_is_corruption(const char *rocksdb_err);

/* Commit a batch atomically (WAL). Returns 0 or -1 with a message.
 *
 * Test seam: when the environment variable KVTIER_TEST_WRITE_GATE names a
 * file (read at open) and that file exists, a write first waits until it is
 * removed, with PATH.held existing while it waits (tests see what runs
 * while a RocksDB write is in flight); when the file starts with "fail" the
 * write fails instead ("refused by the test gate"). No file: no effect. */
int tier_ssd_write(tier_ssd *s, rocksdb_writebatch_t *b, char *err, size_t errlen);

/* Read and verify a payload. Returns 0 with *data_out (malloc'd, caller
 * frees), *len_out, *crc_out; 1 when absent; -1 on a RocksDB error (EIO);
 * -2 when the stored value fails its checks (bad header, key mismatch,
 * length mismatch, crc mismatch) or RocksDB reports corruption (an SST
 * block failing its checksum): err says which. */
int tier_ssd_get_block(tier_ssd *s, const uint8_t *key, size_t klen, void **data_out,
                       uint32_t *len_out, uint32_t *crc_out, char *err, size_t errlen);

/* Call fn(ctx, key, klen, val, vlen) for every meta record whose key starts
 * with prefix[plen], in key order. fn returns 0 to go on, nonzero to stop.
 * Returns 0 or -1 on a RocksDB error. */
int tier_ssd_scan_meta(tier_ssd *s, const uint8_t *prefix, size_t plen,
                       int (*fn)(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v,
                                 size_t vl),
                       void *ctx, char *err, size_t errlen);

/* Integer property of the blocks family (e.g. "rocksdb.estimate-live-data-size");
 * 0 when unknown. */
uint64_t tier_ssd_property(tier_ssd *s, const char *name);

#endif
