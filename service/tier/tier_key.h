/* tier_key.h — block keys for RocksDB. Pure, no I/O.
 *
 * Layout (big-endian integers so byte order == numeric order):
 *   tenant bytes (1..64, no NUL) | 0x00 | seq u64 | layer u32 | block u32
 * The NUL terminator makes encoded keys sort exactly like the tuples
 * (tenant as a byte string, seq, layer, block), and makes every prefix
 * unambiguous ("a" never prefixes "ab"'s range). One sequence and one layer
 * of it are contiguous key ranges: [prefix, upper_bound(prefix)).
 */
#ifndef KVTIER_TIER_KEY_H
#define KVTIER_TIER_KEY_H

#include <stddef.h>
#include <stdint.h>

#define TIER_KEY_TENANT_MAX 64
#define TIER_KEY_MAX (TIER_KEY_TENANT_MAX + 1 + 8 + 4 + 4) /* 81 bytes */

/* 0 when tenant can be encoded in a key (1..64 bytes); -1 with a message
 * otherwise. */
int tier_key_check_tenant(const char *tenant, char *err, size_t errlen);

/* 0 when tenant is a valid tenant name: 1..64 characters of [A-Za-z0-9._-]
 * (what tier_seq_open and the front end accept); -1 with a message naming
 * the first bad character otherwise. */
int tier_key_tenant_name_check(const char *tenant, char *err, size_t errlen);

/* Encode a full block key into buf[TIER_KEY_MAX]. Returns its length, or 0
 * when the tenant is invalid. */
size_t tier_key_encode(const char *tenant, uint64_t seq, uint32_t layer, uint32_t block,
                       uint8_t *buf);

/* Prefix of every key of (tenant, seq): buf[TIER_KEY_MAX]. Returns length or 0. */
size_t tier_key_prefix_seq(const char *tenant, uint64_t seq, uint8_t *buf);

/* Prefix of every key of (tenant, seq, layer). Returns length or 0. */
size_t tier_key_prefix_layer(const char *tenant, uint64_t seq, uint32_t layer, uint8_t *buf);

/* Prefix of every key of a tenant ("tenant\0"). Returns length or 0. */
size_t tier_key_prefix_tenant(const char *tenant, uint8_t *buf);

/* Smallest key greater than every key that starts with prefix[len]: the
 * exclusive upper bound of the prefix range, written to out[len] (may alias
 * prefix). Returns its length (<= len), or 0 when no bound exists (prefix is
 * all 0xFF: the range runs to the end). */
size_t tier_key_upper_bound(const uint8_t *prefix, size_t len, uint8_t *out);

/* Decode a full block key. tenant_out has room for TIER_KEY_TENANT_MAX + 1.
 * Returns 0, or -1 when buf[len] is not a well-formed block key. */
int tier_key_decode(const uint8_t *buf, size_t len, char *tenant_out, uint64_t *seq,
                    uint32_t *layer, uint32_t *block);

/* Big-endian helpers used by the record codecs too. */
void tier_be64_put(uint8_t *p, uint64_t v);
void tier_be32_put(uint8_t *p, uint32_t v);
uint64_t tier_be64_get(const uint8_t *p);
uint32_t tier_be32_get(const uint8_t *p);

#endif
