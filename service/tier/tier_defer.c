/* tier_defer.c — RocksDB work outside the store's lock.
 *
 * Every call that changes stored state runs in three phases:
 *   1. under t->mu: decide, change the index in memory, append every RocksDB
 *      write to one deferred batch (t->defer) and queue every read (t->reads);
 *      a write-back RAM block on its way to SSD stays readable from RAM
 *      (t->keep) until its copy landed;
 *   2. t->mu released, io_busy set: write the batch, read the queued blocks;
 *      readers (fetch, stat, map, stats, list) go on, writers wait on io_cv
 *      (tier_io_wait) so that nothing they decide rests on an unwritten batch;
 *   3. under t->mu again: publish (kept RAM copies go, or come back when the
 *      write failed; reads enter RAM), io_busy cleared, writers woken.
 * Long admin moves (evict, drain, close with retain) run as rounds of this,
 * each of at most TIER_ROUND_BYTES / TIER_ROUND_BLOCKS. */
#include <stdlib.h>

#include "tier_internal.h"

void tier_io_wait(tier_t *t) {
    while (t->io_busy)
        pthread_cond_wait(&t->io_cv, &t->mu);
}

/* Phase 3, under mu again: the deferred batch landed (w == 0) or not;
 * settle the RAM copies kept for it and publish the reads. A corrupt
 * prefetch is dropped (its decision in d, when d is not NULL, becomes DROP)
 * with its writes into t->defer (a follow-up batch); a corrupt evict read
 * (keep_corrupt) stays on SSD and stops the rest of its round. */
static void publish_deferred(tier_t *t, int w, policy_decision *d) {
    for (size_t i = 0; i < t->n_keep; i++) {
        tier_defer_keep *k = &t->keep[i];
        tier_slot *s = tier_seq_slot(k->se, k->l, k->b);
        s->pinned = 0;
        if (s->host != k->e)
            continue; /* not ours any more (cannot happen: writers waited) */
        if (w == 0) { /* the SSD copy is there: the RAM copy may go */
            s->host = NULL;
            tier_host_entry_free(k->e);
        } else { /* not written: the block stays in RAM, not durable */
            policy_block *x = tier_seq_block(k->se, k->l, k->b);
            t->ssd_used -= x->bytes;
            s->durable = 0;
            tier_mv_set_tier(t, k->se, k->l, k->b, TIER_HOST);
            tier_host_insert(&t->host, k->e);
        }
    }
    t->n_keep = 0;
    int stopped = 0;
    for (size_t i = 0; i < t->n_reads; i++) {
        tier_defer_read *r = &t->reads[i];
        tier_slot *s = tier_seq_slot(r->se, r->l, r->b);
        int still = tier_seq_block(r->se, r->l, r->b)->tier == TIER_SSD && s->durable && !s->host &&
                    s->crc == r->crc;
        int corrupt = r->got == -2 || (r->got == 0 && r->crc != r->read_crc);
        r->outcome = 0;
        if (stopped) {
            /* an evict round stops at its first bad block */
        } else if (still && corrupt && r->keep_corrupt) {
            t->st.dataloss++; /* evict: left as it is, reported */
            r->outcome = -2;
            stopped = 1;
        } else if (still && corrupt) {
            t->st.dataloss++; /* corrupt on SSD: drop it, tell the worker */
            tier_mv_forget(t, r->se, r->l, r->b, TIER_DROPPED, 0, NULL, 0);
            if (d) {
                d[r->decision].kind = POLICY_DROP;
                d[r->decision].to = TIER_DROPPED;
            }
        } else if (still && (r->got == -1 || r->got == 1) && r->keep_corrupt) {
            r->outcome = r->got == 1 ? -3 : -1; /* unreadable, or missing under its record */
            stopped = 1;
        } else if (still && r->got == 0 && t->host.bytes + r->len <= t->host.budget) {
            tier_host_entry *e = tier_host_entry_new(r->se, r->l, r->b, r->data, r->len, r->crc, 0);
            if (e) {
                tier_host_insert(&t->host, e);
                s->host = e;
                tier_mv_set_tier(t, r->se, r->l, r->b, TIER_HOST);
                t->st.level[TIER_HOST].puts++;
                r->outcome = 1;
            }
        } /* else: gone meanwhile, unreadable, or RAM is full: it stays on SSD */
        free(r->data);
        r->data = NULL;
    }
    t->n_reads = 0;
}

int tier_mv_defer_commit(tier_t *t, policy_decision *d, char *we, size_t welen) {
    rocksdb_writebatch_t *wb = t->defer;
    t->defer = NULL;
    if (wb && rocksdb_writebatch_count(wb) == 0 && !t->n_keep && !t->n_reads) {
        rocksdb_writebatch_destroy(wb); /* nothing to do: keep the lock */
        return 0;
    }
    /* Phase 2 (no lock): the batch, then the reads; writers wait (io_busy).
     * Phase 3: publish. A corrupt prefetch makes a follow-up batch (its
     * drop), written the same way before the writers may go on. */
    t->io_busy = 1;
    tier_defer_read *reads = t->reads;
    size_t n_reads = t->n_reads;
    int w = 0;
    while (wb) {
        pthread_mutex_unlock(&t->mu);
        if (rocksdb_writebatch_count(wb) > 0)
            w |= tier_ssd_write(t->ssd, wb, we, welen);
        rocksdb_writebatch_destroy(wb);
        wb = NULL;
        for (size_t i = 0; i < n_reads; i++) {
            uint8_t key[TIER_KEY_MAX];
            tier_defer_read *r = &reads[i];
            size_t kl = tier_key_encode(r->se->tenant, r->se->seq, r->l, r->b, key);
            uint32_t crc = 0;
            r->got = tier_ssd_get_block(t->ssd, key, kl, &r->data, &r->len, &crc, NULL, 0);
            r->read_crc = crc;
        }
        n_reads = 0;
        pthread_mutex_lock(&t->mu);
        if (t->n_keep || t->n_reads) {
            t->defer = rocksdb_writebatch_create();
            publish_deferred(t, w, d);
            wb = t->defer;
            t->defer = NULL;
            if (wb && rocksdb_writebatch_count(wb) == 0) {
                rocksdb_writebatch_destroy(wb);
                wb = NULL;
            }
        }
    }
    t->io_busy = 0;
    pthread_cond_broadcast(&t->io_cv);
    return w ? -1 : 0;
}

tier_status tier_mv_round_begin(tier_t *t, char *err, size_t errlen) {
    t->defer = rocksdb_writebatch_create();
    if (t->defer)
        return TIER_OK;
    TIER_ERR(err, errlen, "out of memory for a write batch");
    return TIER_EIO;
}

tier_status tier_mv_round_end(tier_t *t, tier_status rc, const char *what, char *err,
                              size_t errlen) {
    if (!t->defer)
        return rc;
    char we[300] = "";
    if (tier_mv_defer_commit(t, NULL, we, sizeof we) == 0 || rc != TIER_OK)
        return rc;
    char e[400];
    tier_status w = tier_mv_disk_failed(t, we, e, sizeof e);
    if (w == TIER_EIO)
        TIER_ERR(err, errlen, "RocksDB write of %s failed: %s", what, we);
    else
        TIER_ERR(err, errlen, "%s: %s", what, e);
    return w;
}
