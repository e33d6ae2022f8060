/* tier_host.c — LRU container of host-RAM payloads (see tier_host.h). */
#include "tier_host.h"

#include <stdlib.h>
#include <string.h>

void tier_host_init(tier_host *h, uint64_t budget) {
    memset(h, 0, sizeof *h);
    h->budget = budget;
}

tier_host_entry *tier_host_entry_new(struct tier_seqent *owner, uint32_t layer, uint32_t block,
                                     const void *data, uint32_t len, uint32_t crc, int dirty) {
    tier_host_entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->data = malloc(len ? len : 1);
    if (!e->data) {
        free(e);
        return NULL;
    }
    memcpy(e->data, data, len);
    e->owner = owner;
    e->layer = layer;
    e->block = block;
    e->len = len;
    e->crc = crc;
    e->dirty = (uint8_t)(dirty != 0);
    return e;
}

void tier_host_insert(tier_host *h, tier_host_entry *e) {
    e->next = NULL;
    e->prev = h->tail;
    if (h->tail)
        h->tail->next = e;
    else
        h->head = e;
    h->tail = e;
    h->bytes += e->len;
    h->count++;
}

void tier_host_unlink(tier_host *h, tier_host_entry *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        h->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        h->tail = e->prev;
    e->prev = e->next = NULL;
    h->bytes -= e->len;
    h->count--;
}

void tier_host_touch(tier_host *h, tier_host_entry *e) {
    if (h->tail == e)
        return;
    tier_host_unlink(h, e);
    tier_host_insert(h, e);
}

void tier_host_entry_free(tier_host_entry *e) {
    if (!e)
        return;
    free(e->data);
    free(e);
}

int tier_host_over(const tier_host *h) {
    return h->bytes > h->budget;
}
