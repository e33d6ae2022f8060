/* tierlink.c - transport-independent part of tierlink.h. */
#include <stdio.h>
#include <stdlib.h>

#include "tierlink_internal.h"

void tierlink_free(tierlink_t *l) {
    if (!l)
        return;
    l->ops->free(l);
    free(l);
}

const char *tierlink_name(const tierlink_t *l) {
    return l->name;
}

tier_status tierlink_open(tierlink_t *l, uint64_t seq, const tier_seq_info *info, char *err,
                          size_t errlen) {
    return l->ops->open(l, seq, info, err, errlen);
}

tier_status tierlink_put(tierlink_t *l, uint64_t seq, const tierlink_block *blocks, size_t n,
                         size_t *acked, char *err, size_t errlen) {
    if (acked)
        *acked = 0;
    if (n == 0)
        return TIER_OK;
    return l->ops->put(l, seq, blocks, n, acked, err, errlen);
}

tier_status tierlink_fetch(tierlink_t *l, uint64_t seq, uint32_t layer, uint32_t block,
                           void **data, size_t *len, char *err, size_t errlen) {
    *data = NULL;
    *len = 0;
    return l->ops->fetch(l, seq, layer, block, data, len, err, errlen);
}

tier_status tierlink_summarize(tierlink_t *l, uint64_t seq, const tier_summary *s,
                               tier_decision **out, size_t *n, char *err, size_t errlen) {
    *out = NULL;
    *n = 0;
    return l->ops->summarize(l, seq, s, out, n, err, errlen);
}

tier_status tierlink_close(tierlink_t *l, uint64_t seq, int retain, char *err, size_t errlen) {
    return l->ops->close(l, seq, retain, err, errlen);
}

tier_status tierlink_check_crc(const void *data, size_t len, uint32_t crc, uint32_t layer,
                               uint32_t block, char *err, size_t errlen) {
    uint32_t got = tier_crc32c(0, data, len);
    if (got == crc)
        return TIER_OK;
    snprintf(err, errlen,
             "layer %u block %u: payload crc32c %08x does not match the stored %08x; not used",
             layer, block, got, crc);
    return TIER_EDATALOSS;
}
