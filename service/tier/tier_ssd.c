/* tier_ssd.c — RocksDB storage for payloads and index records. */
#include "tier_ssd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tier.h"
#include "tier_key.h"

static int take_err(char *rerr, const char *what, char *err, size_t errlen) {
    if (!rerr)
        return 0;
    snprintf(err, errlen, "rocksdb %s: %s", what, rerr);
    free(rerr);
    return -1;
}

int tier_ssd_is_nospace(const char *rocksdb_err) {
    return rocksdb_err && strstr(rocksdb_err, "No space left") != NULL;
}

int tier_ssd_is_corruption(const char *rocksdb_err) {
    /* rocksdb::Status::ToString(): "Corruption: block checksum mismatch: ..." */
    return rocksdb_err && strstr(rocksdb_err, "Corruption") != NULL;
}

/* Memtable size under a disk reserve (0 = RocksDB's default). */
static size_t memtable_bytes(uint64_t reserve) {
    if (!reserve)
        return 0;
    uint64_t m = reserve / 4;
    return (size_t)(m < (64u << 10) ? (64u << 10) : m > (64u << 20) ? (64u << 20) : m);
}

static rocksdb_options_t *cf_options(int blob_files, uint64_t reserve) {
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_compression(o, rocksdb_no_compression);
    if (reserve)
        rocksdb_options_set_write_buffer_size(o, memtable_bytes(reserve));
    if (blob_files) {
        rocksdb_options_set_enable_blob_files(o, 1);
        rocksdb_options_set_min_blob_size(o, 4096);
        rocksdb_options_set_enable_blob_gc(o, 1);
    }
    return o;
}

int tier_ssd_open(const char *dir, int fsync, int blob_files, tier_ssd **out, char *err,
                  size_t errlen) {
    return tier_ssd_open_ex(dir, fsync, blob_files, 0, out, err, errlen);
}

int tier_ssd_open_ex(const char *dir, int fsync, int blob_files, uint64_t reserve, tier_ssd **out,
                     char *err, size_t errlen) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "data_dir %s: %s", dir, strerror(errno));
        return -1;
    }
    tier_ssd *s = calloc(1, sizeof *s);
    const char *gate = getenv("KVTIER_TEST_WRITE_GATE");
    if (!s || (gate && *gate && !(s->test_gate = strdup(gate)))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->opts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(s->opts, 1);
    rocksdb_options_set_create_missing_column_families(s->opts, 1);
    /* check every file RocksDB reads and stop writing on corruption found in
     * the background; reads verify block checksums (the default) */
    rocksdb_options_set_paranoid_checks(s->opts, 1);
    rocksdb_options_set_compression(s->opts, rocksdb_no_compression);
    rocksdb_options_increase_parallelism(s->opts, 2);
    /* a LOG write failing on a full disk must not abort the process */
    rocksdb_options_set_info_log_level(s->opts, 3 /* ERROR */);
    rocksdb_options_set_keep_log_file_num(s->opts, 4);
    rocksdb_options_set_max_log_file_size(s->opts, 8u << 20);
    if (reserve) {
        rocksdb_options_set_write_buffer_size(s->opts, memtable_bytes(reserve));
        rocksdb_options_set_max_total_wal_size(s->opts, reserve / 2);
        uint64_t pre = reserve / 8 < (4u << 20) ? reserve / 8 : (4u << 20);
        rocksdb_options_set_manifest_preallocation_size(s->opts, (size_t)pre);
    }
    s->wopts = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(s->wopts, fsync ? 1 : 0);
    s->ropts = rocksdb_readoptions_create();

    const char *names[3] = {"default", "meta", "blocks"};
    rocksdb_options_t *cfo[3] = {cf_options(0, reserve), cf_options(0, reserve),
                                 cf_options(blob_files, reserve)};
    rocksdb_column_family_handle_t *h[3] = {0};
    char *rerr = NULL;
    /* Families of an existing database must all be named at open. We always
     * name our three (create_missing creates absent ones); a database with any
     * other family is not ours. */
    size_t nexist = 0;
    char **exist = rocksdb_list_column_families(s->opts, dir, &nexist, &rerr);
    if (rerr) { /* no database yet: fine (the list is still malloc'd, empty) */
        free(rerr);
        rerr = NULL;
        if (exist)
            rocksdb_list_column_families_destroy(exist, nexist);
    } else {
        for (size_t i = 0; i < nexist; i++) {
            int known = 0;
            for (int j = 0; j < 3; j++)
                known |= strcmp(exist[i], names[j]) == 0;
            if (!known) {
                snprintf(err, errlen,
                         "data_dir %s: unexpected column family '%s' (not a kvtier store?)", dir,
                         exist[i]);
                rocksdb_list_column_families_destroy(exist, nexist);
                for (int j = 0; j < 3; j++)
                    rocksdb_options_destroy(cfo[j]);
                tier_ssd_close(s);
                return -1;
            }
        }
        rocksdb_list_column_families_destroy(exist, nexist);
    }
    s->db = rocksdb_open_column_families(s->opts, dir, 3, names,
                                         (const rocksdb_options_t *const *)cfo, h, &rerr);
    for (int j = 0; j < 3; j++)
        rocksdb_options_destroy(cfo[j]);
    if (take_err(rerr, "open", err, errlen)) {
        s->db = NULL;
        tier_ssd_close(s);
        return -1;
    }
    s->cf_default = h[0];
    s->cf_meta = h[1];
    s->cf_blocks = h[2];
    *out = s;
    return 0;
}

void tier_ssd_close(tier_ssd *s) {
    if (!s)
        return;
    if (s->db) {
        rocksdb_column_family_handle_t *h[3] = {s->cf_default, s->cf_meta, s->cf_blocks};
        for (int i = 0; i < 3; i++)
            if (h[i])
                rocksdb_column_family_handle_destroy(h[i]);
        rocksdb_close(s->db);
    }
    if (s->ropts)
        rocksdb_readoptions_destroy(s->ropts);
    if (s->wopts)
        rocksdb_writeoptions_destroy(s->wopts);
    if (s->opts)
        rocksdb_options_destroy(s->opts);
    free(s->test_gate);
    free(s);
}

void tier_ssd_batch_put_block(tier_ssd *s, rocksdb_writebatch_t *b, const uint8_t *key, size_t klen,
                              const void *data, uint32_t len, uint32_t crc, uint8_t *hdr) {
    tier_be32_put(hdr, TIER_SSD_MAGIC);
    tier_be32_put(hdr + 4, crc);
    tier_be32_put(hdr + 8, len);
    hdr[12] = (uint8_t)klen;
    hdr[13] = hdr[14] = hdr[15] = 0;
    const char *vals[3] = {(const char *)hdr, (const char *)key, (const char *)data};
    size_t vlens[3] = {TIER_SSD_HDR, klen, len};
    const char *keys[1] = {(const char *)key};
    size_t klens[1] = {klen};
    rocksdb_writebatch_putv_cf(b, s->cf_blocks, 1, keys, klens, 3, vals, vlens);
}

/* The test seam KVTIER_TEST_WRITE_GATE (see tier_ssd.h): 0 = go on, -1 =
 * fail this write. */
static int test_gate(const tier_ssd *s, char *err, size_t errlen) {
    char buf[8] = "", held[4200];
    FILE *f = s->test_gate ? fopen(s->test_gate, "r") : NULL;
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    if (strncmp(buf, "fail", 4) == 0) {
        snprintf(err, errlen, "rocksdb write: refused by the test gate %s (KVTIER_TEST_WRITE_GATE)",
                 s->test_gate);
        return -1;
    }
    snprintf(held, sizeof held, "%s.held", s->test_gate);
    FILE *h = fopen(held, "w");
    if (h)
        fclose(h);
    struct stat st;
    while (stat(s->test_gate, &st) == 0) {
        struct timespec ts = {0, 1000000}; /* 1 ms */
        nanosleep(&ts, NULL);
    }
    remove(held);
    return 0;
}

int tier_ssd_write(tier_ssd *s, rocksdb_writebatch_t *b, char *err, size_t errlen) {
    if (s->test_gate && test_gate(s, err, errlen) != 0)
        return -1;
    char *rerr = NULL;
    rocksdb_write(s->db, s->wopts, b, &rerr);
    return take_err(rerr, "write", err, errlen);
}

int tier_ssd_get_block(tier_ssd *s, const uint8_t *key, size_t klen, void **data_out,
                       uint32_t *len_out, uint32_t *crc_out, char *err, size_t errlen) {
    char *rerr = NULL;
    rocksdb_pinnableslice_t *ps =
        rocksdb_get_pinned_cf(s->db, s->ropts, s->cf_blocks, (const char *)key, klen, &rerr);
    if (rerr) {
        /* a block RocksDB finds corrupt (checksum mismatch of an SST block,
         * a torn file) is data loss, not a passing failure: never retried */
        int corrupt = tier_ssd_is_corruption(rerr);
        take_err(rerr, "get", err, errlen);
        return corrupt ? -2 : -1;
    }
    if (!ps)
        return 1;
    size_t vl = 0;
    const uint8_t *v = (const uint8_t *)rocksdb_pinnableslice_value(ps, &vl);
    int rc = -2;
    if (vl < TIER_SSD_HDR || tier_be32_get(v) != TIER_SSD_MAGIC) {
        snprintf(err, errlen, "stored value has a bad header (%zu bytes)", vl);
    } else if (v[12] != klen || vl < TIER_SSD_HDR + klen ||
               memcmp(v + TIER_SSD_HDR, key, klen) != 0) {
        snprintf(err, errlen, "stored value carries another block's key");
    } else {
        uint32_t crc = tier_be32_get(v + 4), len = tier_be32_get(v + 8);
        const uint8_t *payload = v + TIER_SSD_HDR + klen;
        if (vl != TIER_SSD_HDR + klen + (size_t)len) {
            snprintf(err, errlen, "stored value is %zu bytes, header says %zu", vl,
                     TIER_SSD_HDR + klen + (size_t)len);
        } else if (tier_crc32c(0, payload, len) != crc) {
            snprintf(err, errlen, "stored payload fails its crc32c (expected %08x, got %08x)", crc,
                     tier_crc32c(0, payload, len));
        } else {
            void *d = malloc(len ? len : 1);
            if (!d) {
                snprintf(err, errlen, "out of memory for %u bytes", len);
                rc = -1;
            } else {
                memcpy(d, payload, len);
                *data_out = d;
                *len_out = len;
                *crc_out = crc;
                rc = 0;
            }
        }
    }
    rocksdb_pinnableslice_destroy(ps);
    return rc;
}

int tier_ssd_scan_meta(tier_ssd *s, const uint8_t *prefix, size_t plen,
                       int (*fn)(void *ctx, const uint8_t *k, size_t kl, const uint8_t *v,
                                 size_t vl),
                       void *ctx, char *err, size_t errlen) {
    uint8_t upper[TIER_KEY_MAX + 8];
    size_t ulen = plen <= sizeof upper ? tier_key_upper_bound(prefix, plen, upper) : 0;
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    if (ulen)
        rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)upper, ulen);
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, ro, s->cf_meta);
    rocksdb_iter_seek(it, (const char *)prefix, plen);
    for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t kl, vl;
        const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &kl);
        const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vl);
        if (kl < plen || memcmp(k, prefix, plen) != 0)
            break;
        if (fn(ctx, k, kl, v, vl))
            break;
    }
    char *rerr = NULL;
    rocksdb_iter_get_error(it, &rerr);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    return take_err(rerr, "iterate", err, errlen);
}

int tier_ssd_reclaim(tier_ssd *s, const uint8_t *lo, size_t lol, const uint8_t *hi, size_t hil,
                     const uint8_t *mlo, size_t mlol, const uint8_t *mhi, size_t mhil, char *err,
                     size_t errlen) {
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    char *rerr = NULL;
    rocksdb_flush_cf(s->db, fo, s->cf_meta, &rerr);
    if (!rerr)
        rocksdb_flush_cf(s->db, fo, s->cf_blocks, &rerr);
    rocksdb_flushoptions_destroy(fo);
    if (take_err(rerr, "flush", err, errlen))
        return -1;
    rocksdb_compact_range_cf(s->db, s->cf_blocks, (const char *)lo, lol, (const char *)hi, hil);
    rocksdb_compact_range_cf(s->db, s->cf_meta, (const char *)mlo, mlol, (const char *)mhi, mhil);
    return 0;
}

uint64_t tier_ssd_property(tier_ssd *s, const char *name) {
    uint64_t v = 0;
    if (rocksdb_property_int_cf(s->db, s->cf_blocks, name, &v) != 0)
        return 0;
    return v;
}
