/* tier_size.h — human-readable byte sizes. Pure, no I/O. */
#ifndef KVTIER_TIER_SIZE_H
#define KVTIER_TIER_SIZE_H

#include <stddef.h>
#include <stdint.h>

/* Parse a size: a number (integer or decimal) with an optional unit.
 * Binary units (powers of 1024): K, M, G, T, P, KiB, MiB, GiB, TiB, PiB,
 * also "KB"... are NOT binary: KB/MB/GB/TB/PB are decimal (1000^n), as SI.
 * Bare "B" or no unit = bytes. Case-insensitive, no spaces inside except one
 * optional space between number and unit. Examples: "4096", "64KiB"=65536,
 * "1.5G"=1610612736, "1KB"=1000, "20GiB", "512 MiB".
 * Returns 0 and *out, or -1 with a message in err (empty, negative, unknown
 * unit, fractional bytes, overflow beyond 2^64-1). */
int tier_size_parse(const char *s, uint64_t *out, char *err, size_t errlen);

/* Format bytes for people: "512 B", "64.0 KiB", "1.50 GiB" (3 significant
 * digits, binary units). Writes at most buflen bytes, always NUL-ended;
 * returns buf. */
char *tier_size_format(uint64_t bytes, char *buf, size_t buflen);

#endif
