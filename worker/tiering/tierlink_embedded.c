/* tierlink_embedded.c - tier sessions over the tier library in-process.
 *
 * Synchronous: every call runs on the caller's thread. A fetched block is
 * the buffer tier_fetch made (tier_buf_free is free(3)), handed over as is:
 * one copy out of the store, none more. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tierlink_internal.h"

static tier_status emb_open(tiersess_t *s, const tier_seq_info *info, char *err, size_t errlen) {
    tiersess_count(s, &s->cnt.other_calls, 1);
    return tier_seq_open(s->l->tier, s->l->tenant, s->seq, info, err, errlen);
}

static tier_status emb_fetch(tiersess_t *s, const tiersess_ref *refs, size_t n,
                             tiersess_fetch_cb cb, void *ud, char *err, size_t errlen) {
    uint64_t bytes = 0, got = 0;
    for (size_t i = 0; i < n; i++) {
        tier_block_key k = {s->l->tenant, s->seq, refs[i].layer, refs[i].block};
        void *buf = NULL;
        size_t len = 0;
        uint32_t crc = 0;
        tier_status st = tier_fetch(s->l->tier, &k, &buf, &len, &crc, NULL, err, errlen);
        if (st == TIER_OK) {
            bytes += len;
            got++;
            cb(ud, k.layer, k.block, TIER_OK, buf, len); /* tier_fetch verified the crc */
        } else if (st == TIER_ENOTFOUND || st == TIER_EDATALOSS) {
            cb(ud, k.layer, k.block, st, NULL, 0);
        } else {
            pthread_mutex_lock(&s->mu);
            s->cnt.fetch_calls++, s->cnt.fetch_blocks += got, s->cnt.fetch_bytes += bytes;
            pthread_mutex_unlock(&s->mu);
            return st == TIER_EINVAL ? TIER_EINVAL : TIER_EIO;
        }
    }
    pthread_mutex_lock(&s->mu);
    s->cnt.fetch_calls++, s->cnt.fetch_blocks += got, s->cnt.fetch_bytes += bytes;
    pthread_mutex_unlock(&s->mu);
    return TIER_OK;
}

static tier_status emb_put(tiersess_t *s, const tiersess_block *b, size_t n, char *err,
                           size_t errlen) {
    tier_put_item *items = malloc(n * sizeof *items);
    if (!items) {
        snprintf(err, errlen, "out of memory putting %zu blocks", n);
        return TIER_EIO;
    }
    for (size_t i = 0; i < n; i++) {
        items[i].key = (tier_block_key){s->l->tenant, s->seq, b[i].layer, b[i].block};
        items[i].data = b[i].data;
        items[i].len = b[i].len;
        items[i].crc32c = tier_crc32c(0, b[i].data, b[i].len);
        items[i].ntokens = b[i].ntokens;
        items[i].target = 0; /* the service picks */
    }
    tier_status st = tier_put_batch(s->l->tier, items, n, NULL, NULL, err, errlen);
    free(items);
    pthread_mutex_lock(&s->mu);
    s->cnt.put_calls++;
    s->cnt.put_blocks += n;
    pthread_mutex_unlock(&s->mu);
    return st;
}

static tier_status emb_summarize(tiersess_t *s, const tier_summary *sum, tier_decision **out,
                                 size_t *n, char *err, size_t errlen) {
    tiersess_count(s, &s->cnt.summary_msgs, 1);
    /* tier_summarize's array is malloc'd (tier_buf_free is free): handed over */
    return tier_summarize(s->l->tier, s->l->tenant, s->seq, sum, out, n, err, errlen);
}

static tier_status emb_close(tiersess_t *s, int retain, char *err, size_t errlen) {
    tiersess_count(s, &s->cnt.other_calls, 1);
    return tier_seq_close(s->l->tier, s->l->tenant, s->seq, retain, err, errlen);
}

static void emb_free(tierlink_t *l) {
    (void)l;
}

static const tierlink_ops emb_ops = {
    .open = emb_open,
    .fetch = emb_fetch,
    .put = emb_put,
    .summarize = emb_summarize,
    .close = emb_close,
    .sess_free = NULL,
    .free = emb_free,
    .async = 0,
};

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
