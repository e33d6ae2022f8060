/* tierlink_embedded.c - tierlink over the tier library in-process. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tierlink_internal.h"

static tier_status emb_open(tierlink_t *l, uint64_t seq, const tier_seq_info *info, char *err,
                            size_t errlen) {
    return tier_seq_open(l->tier, l->tenant, seq, info, err, errlen);
}

static tier_status emb_put(tierlink_t *l, uint64_t seq, const tierlink_block *b, size_t n,
                           size_t *acked, char *err, size_t errlen) {
    size_t i;
    for (i = 0; i < n; i++) {
        tier_block_key k = {l->tenant, seq, b[i].layer, b[i].block};
        uint32_t crc = tier_crc32c(0, b[i].data, b[i].len);
        tier_status st =
            tier_put(l->tier, &k, b[i].data, b[i].len, crc, b[i].ntokens, NULL, err, errlen);
        if (st != TIER_OK) {
            if (acked)
                *acked = i;
            return st;
        }
    }
    if (acked)
        *acked = n;
    return TIER_OK;
}

static tier_status emb_fetch(tierlink_t *l, uint64_t seq, uint32_t layer, uint32_t block,
                             void **data, size_t *len, char *err, size_t errlen) {
    tier_block_key k = {l->tenant, seq, layer, block};
    void *buf = NULL;
    size_t n = 0;
    uint32_t crc = 0;
    tier_status st = tier_fetch(l->tier, &k, &buf, &n, &crc, NULL, err, errlen);
    if (st != TIER_OK)
        return st;
    st = tierlink_check_crc(buf, n, crc, layer, block, err, errlen);
    if (st != TIER_OK) {
        tier_buf_free(buf);
        return st;
    }
    /* Hand out a malloc'd copy so callers free() both transports alike. */
    *data = malloc(n ? n : 1);
    if (!*data) {
        tier_buf_free(buf);
        snprintf(err, errlen, "out of memory fetching layer %u block %u", layer, block);
        return TIER_EIO;
    }
    memcpy(*data, buf, n);
    tier_buf_free(buf);
    *len = n;
    return TIER_OK;
}

static tier_status emb_summarize(tierlink_t *l, uint64_t seq, const tier_summary *s,
                                 tier_decision **out, size_t *n, char *err, size_t errlen) {
    tier_decision *d = NULL;
    size_t nd = 0;
    tier_status st = tier_summarize(l->tier, l->tenant, seq, s, &d, &nd, err, errlen);
    *out = NULL;
    *n = 0;
    if (st != TIER_OK)
        return st;
    if (nd) {
        *out = malloc(nd * sizeof **out);
        if (!*out) {
            tier_buf_free(d);
            snprintf(err, errlen, "out of memory copying %zu decisions", nd);
            return TIER_EIO;
        }
        memcpy(*out, d, nd * sizeof **out);
        *n = nd;
    }
    tier_buf_free(d);
    return TIER_OK;
}

static tier_status emb_close(tierlink_t *l, uint64_t seq, int retain, char *err, size_t errlen) {
    return tier_seq_close(l->tier, l->tenant, seq, retain, err, errlen);
}

static void emb_free(tierlink_t *l) {
    (void)l;
}

static const tierlink_ops emb_ops = {emb_open, emb_put, emb_fetch, emb_summarize, emb_close,
                                     emb_free};

tierlink_t *tierlink_embedded_new(tier_t *t, const char *tenant) {
    tierlink_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->ops = &emb_ops;
    l->tier = t;
    snprintf(l->tenant, sizeof l->tenant, "%s", tenant && *tenant ? tenant : "default");
    snprintf(l->name, sizeof l->name, "embedded");
    return l;
}
