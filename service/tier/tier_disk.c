/* tier_disk.c — the data directory's filesystem: free space the tier keeps
 * for deletes, compaction and restarts (tier_options.disk_reserve).
 *
 * A payload write that would leave less than the reserve free is refused
 * with EFULL ("disk full") before RocksDB sees it, so RocksDB itself never
 * runs out of space: reads go on, deletes (close, evict to DROPPED) still
 * write their tombstones, and the space they free is reclaimed at once
 * (flush + compaction of the deleted range) while the disk is full. A restart
 * on such a disk has the reserve for its WAL replay (tier_ssd_open_ex sizes
 * the WAL to half of it). When another writer fills the disk anyway and
 * RocksDB fails a write with "No space left", RocksDB stops writing until it
 * is reopened (the C API has no DB::Resume): the state sticks, reported by
 * tier_disk_check, until a restart. */
#include <stdatomic.h>
#include <string.h>
#include <sys/statvfs.h>

#include "tier_internal.h"
#include "tier_key.h"
#include "tier_size.h"

int tier_disk_free(const char *dir, uint64_t *out) {
    struct statvfs v;
    if (statvfs(dir, &v) != 0)
        return -1;
    *out = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
    return 0;
}

/* The "disk full" message for free bytes left. */
static void full_msg(tier_t *t, uint64_t freeb, char *err, size_t errlen) {
    char f[32], r[32];
    TIER_ERR(err, errlen,
             "disk full: %s free on the filesystem of %s, under the %s kept free for deletes, "
             "compaction and restarts; writes are refused, reads still work; free space by "
             "closing sequences or evicting them to DROPPED",
             tier_size_format(freeb, f, sizeof f), t->data_dir,
             tier_size_format(t->opt.disk_reserve, r, sizeof r));
}

tier_status tier_mv_disk_room(tier_t *t, uint64_t need, char *err, size_t errlen) {
    if (atomic_load(&t->disk_stuck)) {
        TIER_ERR(err, errlen,
                 "disk full: RocksDB stopped writing after \"No space left on device\" and "
                 "writes again only once reopened: free space on %s and restart",
                 t->data_dir);
        return TIER_EFULL;
    }
    if (!t->opt.disk_reserve)
        return TIER_OK;
    uint64_t freeb = 0;
    if (tier_disk_free(t->data_dir, &freeb) != 0)
        return TIER_OK; /* cannot tell: let RocksDB try */
    if (freeb < need || freeb - need < t->opt.disk_reserve) {
        atomic_store(&t->disk_full, 1);
        full_msg(t, freeb, err, errlen);
        return TIER_EFULL;
    }
    atomic_store(&t->disk_full, 0);
    return TIER_OK;
}

tier_status tier_mv_disk_failed(tier_t *t, const char *rocksdb_err, char *err, size_t errlen) {
    if (!tier_ssd_is_nospace(rocksdb_err))
        return TIER_EIO;
    atomic_store(&t->disk_full, 1);
    atomic_store(&t->disk_stuck, 1);
    TIER_ERR(err, errlen,
             "disk full: %s; RocksDB writes again only once reopened: free space on %s and "
             "restart",
             rocksdb_err, t->data_dir);
    return TIER_EFULL;
}

void tier_mv_disk_reclaim(tier_t *t, const char *tenant, uint64_t seq) {
    uint64_t r = t->opt.disk_reserve, freeb = 0;
    if (!r || atomic_load(&t->disk_stuck))
        return;
    if (!atomic_load(&t->disk_full) &&
        (tier_disk_free(t->data_dir, &freeb) != 0 || freeb >= r + r / 2))
        return; /* not (nearly) full: compaction frees it in its own time */
    uint8_t lo[TIER_KEY_MAX], hi[TIER_KEY_MAX], mlo[TIER_META_KEY_MAX], mhi[TIER_META_KEY_MAX];
    size_t n = tier_key_prefix_seq(tenant, seq, lo);
    size_t m = tier_key_upper_bound(lo, n, hi);
    size_t mn = tier_meta_prefix_blocks(tenant, seq, mlo);
    size_t mm = tier_key_upper_bound(mlo, mn, mhi);
    if (n && m && mn && mm)
        tier_ssd_reclaim(t->ssd, lo, n, hi, m, mlo, mn, mhi, mm, NULL, 0);
}

tier_status tier_disk_check(tier_t *t, char *err, size_t errlen) {
    if (atomic_load(&t->disk_stuck))
        return tier_mv_disk_room(t, 0, err, errlen);
    if (!t->opt.disk_reserve)
        return TIER_OK;
    uint64_t freeb = 0;
    if (tier_disk_free(t->data_dir, &freeb) != 0)
        return TIER_OK;
    /* once full, it stays so until a put fits again or half the reserve more
     * is free (a flush swapping WAL for SST moves the free space around) */
    uint64_t r = t->opt.disk_reserve;
    if (freeb < r || (atomic_load(&t->disk_full) && freeb < r + r / 2)) {
        atomic_store(&t->disk_full, 1);
        full_msg(t, freeb, err, errlen);
        return TIER_EFULL;
    }
    atomic_store(&t->disk_full, 0);
    return TIER_OK;
}
