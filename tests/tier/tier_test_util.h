/* Helpers for the tier library tests: temp dirs and payload patterns. */
#ifndef KVTIER_TIER_TEST_UTIL_H
#define KVTIER_TIER_TEST_UTIL_H

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int tt_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f) {
    (void)sb, (void)flag, (void)f;
    return remove(p);
}

/* Remove a directory tree. */
static inline void tt_rmrf(const char *dir) {
    nftw(dir, tt_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* New temp dir; returns a malloc'd path (caller: tt_rmrf + free). */
static inline char *tt_tmpdir(void) {
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/kvtier-tier-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

/* Fill buf[len] with a pattern unique to (layer, block, salt). */
static inline void tt_pattern(uint8_t *buf, size_t len, uint32_t layer, uint32_t block,
                              uint32_t salt) {
    uint64_t x = ((uint64_t)layer << 40) ^ ((uint64_t)block << 8) ^ salt ^ 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < len; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t n = len - i < 8 ? len - i : 8;
        memcpy(buf + i, &x, n);
    }
}

#endif
