/* tier_host.h — the host-RAM tier: payload copies under a byte budget, in
 * LRU order (least recently put/fetched first out). A container only: which
 * entry leaves RAM, and whether it is written to SSD first, is decided by
 * the facade (tier.c). Not thread-safe on its own (the facade locks). */
#ifndef KVTIER_TIER_HOST_H
#define KVTIER_TIER_HOST_H

#include <stddef.h>
#include <stdint.h>

struct tier_seqent;

typedef struct tier_host_entry {
    struct tier_host_entry *prev, *next; /* LRU list: head = coldest */
    struct tier_seqent *owner;           /* sequence this block belongs to (borrowed) */
    uint32_t layer, block;
    uint8_t *data; /* [len], owned */
    uint32_t len;
    uint32_t crc;  /* crc32c of data */
    uint8_t dirty; /* write-back: not yet in RocksDB */
} tier_host_entry;

typedef struct tier_host {
    tier_host_entry *head, *tail; /* head = coldest, tail = hottest */
    uint64_t bytes;               /* payload bytes held */
    uint64_t count;               /* entries held */
    uint64_t budget;              /* bytes allowed */
} tier_host;

/* Empty tier with a budget. */
void tier_host_init(tier_host *h, uint64_t budget);

/* New entry holding a copy of data[len]; NULL when out of memory. Not linked. */
tier_host_entry *tier_host_entry_new(struct tier_seqent *owner, uint32_t layer, uint32_t block,
                                     const void *data, uint32_t len, uint32_t crc, int dirty);

/* Link e as the hottest entry and count its bytes. */
void tier_host_insert(tier_host *h, tier_host_entry *e);

/* Mark e most recently used. */
void tier_host_touch(tier_host *h, tier_host_entry *e);

/* Unlink e and uncount its bytes (e stays allocated). */
void tier_host_unlink(tier_host *h, tier_host_entry *e);

/* Free an unlinked entry and its data. */
void tier_host_entry_free(tier_host_entry *e);

/* 1 when bytes > budget. */
int tier_host_over(const tier_host *h);

#endif
