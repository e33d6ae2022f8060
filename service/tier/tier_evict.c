/* tier_evict.c — the admin moves: evict (a sequence's stored blocks to
 * HOST, SSD or DROPPED), drain (every RAM block to SSD) and the stored part
 * of a close with retain.
 *
 * Each runs in rounds (tier_defer.c): a round is decided under t->mu, its
 * RocksDB work (write-back copies, deletes, reads) runs with the lock
 * released, and it is published after; a block stays readable from where it
 * was until its new copy landed, and a round whose write fails leaves its
 * blocks where they were. The lock is also released between rounds, so the
 * blocks are picked once and checked again when their round comes. */
#include <stdlib.h>
#include <string.h>

#include "tier_internal.h"

#define MOVE_RAM_OUT (-1) /* a job target: every RAM copy leaves RAM (close with retain) */

typedef struct pick {
    uint32_t l, b;
} pick;

/* An admin move of one sequence's blocks. */
typedef struct move_job {
    char tenant[TIER_TENANT_MAX + 1];
    uint64_t seq;
    int target;    /* TIER_HOST, TIER_SSD, TIER_DROPPED or MOVE_RAM_OUT */
    pick *p;       /* [n] picked blocks, in index order; owned */
    size_t n;      /* picked */
    uint64_t done; /* blocks moved */
} move_job;

/* 1 when an evict to `target` moves this block. */
static int job_wants(int target, const policy_block *x, const tier_slot *s) {
    switch (target) {
    case TIER_HOST: /* back into RAM */
        return x->tier == TIER_SSD && s->durable && !s->host;
    case TIER_SSD:
        return x->tier == TIER_HOST && s->host;
    case TIER_DROPPED:
        return x->tier == TIER_HOST || x->tier == TIER_SSD;
    default: /* MOVE_RAM_OUT */
        return s->host != NULL;
    }
}

/* Picks the blocks of se in layers [l0, l1) that j->target moves now (only
 * stored blocks can be HOST or SSD or have a RAM copy) into j->p. TIER_OK,
 * or EIO (out of memory, nothing picked). */
static tier_status job_pick(tier_seqent *se, uint32_t l0, uint32_t l1, move_job *j, char *err,
                            size_t errlen) {
    size_t cap = 0, pos = 0;
    for (tier_chunk *c; (c = tier_index_next_chunk(se, &pos));)
        for (uint32_t k = 0; k < POLICY_CHUNK_BLOCKS; k++) {
            uint32_t l = c->pc.layer, b = c->pc.first + k;
            if (l < l0 || l >= l1 || b >= se->st.n_blocks ||
                !job_wants(j->target, &c->pc.blocks[k], &c->slots[k]))
                continue;
            if (j->n == cap) {
                size_t nc = cap ? cap * 2 : 256;
                pick *np = realloc(j->p, nc * sizeof *np);
                if (!np) {
                    free(j->p);
                    j->p = NULL;
                    j->n = 0;
                    TIER_ERR(err, errlen, "out of memory listing the blocks to move");
                    return TIER_EIO;
                }
                j->p = np;
                cap = nc;
            }
            j->p[j->n++] = (pick){l, b};
        }
    return TIER_OK;
}

/* Decides one round from j->p[*next] (mu held, round begun): the blocks
 * still wanted, up to TIER_ROUND_BYTES of payload to write or read and
 * TIER_ROUND_BLOCKS blocks. *nb = blocks moved in memory (HOST: reads
 * queued). Returns the first error (the round stops there). */
static tier_status round_fill(tier_t *t, tier_seqent *se, move_job *j, size_t *next, uint64_t *nb,
                              char *err, size_t errlen) {
    uint64_t bytes = 0, ram = 0;
    tier_status rc = TIER_OK;
    *nb = 0;
    while (rc == TIER_OK && *next < j->n && *nb < TIER_ROUND_BLOCKS && bytes < TIER_ROUND_BYTES) {
        pick pk = j->p[(*next)++];
        if (pk.l >= se->st.n_layers || pk.b >= se->st.n_blocks)
            continue; /* another sequence of that id meanwhile */
        policy_block *x = tier_seq_block(se, pk.l, pk.b);
        tier_slot *s = tier_seq_slot(se, pk.l, pk.b);
        if (!x || !job_wants(j->target, x, s))
            continue; /* changed meanwhile */
        uint32_t len = x->bytes;
        if (j->target == TIER_HOST) {
            /* only while it fits the RAM budget: never pushing others out */
            if (t->host.bytes + ram + len > t->host.budget)
                continue;
            rc = tier_mv_prefetch(t, se, pk.l, pk.b, 1, err, errlen);
            ram += len;
            bytes += len;
        } else if (j->target == TIER_DROPPED) {
            rc = tier_mv_forget(t, se, pk.l, pk.b, TIER_DROPPED, 1, err, errlen);
        } else {
            rc = tier_mv_host_leave(t, s->host, err, errlen);
            bytes += len;
        }
        *nb += rc == TIER_OK;
    }
    return rc;
}

/* After a HOST round: count the reads that entered RAM (t->reads[0..nq),
 * in order); the first corrupt or unreadable one is the error. */
static tier_status count_reads(tier_t *t, size_t nq, move_job *j, tier_status rc, char *err,
                               size_t errlen) {
    for (size_t i = 0; i < nq; i++) {
        const tier_defer_read *r = &t->reads[i];
        j->done += r->outcome == 1;
        if (rc == TIER_OK && r->outcome == -2) {
            TIER_ERR(err, errlen,
                     "block (layer %u, block %u) of %s/%llu fails its checks on SSD (left there; "
                     "%llu blocks moved before it)",
                     r->l, r->b, j->tenant, (unsigned long long)j->seq,
                     (unsigned long long)j->done);
            return TIER_EDATALOSS;
        }
        if (rc == TIER_OK && r->outcome == -1) {
            TIER_ERR(err, errlen, "RocksDB read of block (layer %u, block %u) of %s/%llu failed",
                     r->l, r->b, j->tenant, (unsigned long long)j->seq);
            return TIER_EIO;
        }
        if (rc == TIER_OK && r->outcome == -3) {
            TIER_ERR(err, errlen,
                     "block (layer %u, block %u) of %s/%llu is on SSD in the index but not in "
                     "RocksDB",
                     r->l, r->b, j->tenant, (unsigned long long)j->seq);
            return TIER_ENOTFOUND;
        }
    }
    return rc;
}

/* Runs j's rounds (mu held on entry and on return; released during each
 * round's RocksDB work and between rounds). Returns the first error; TIER_OK
 * also when the sequence went away meanwhile (nothing left to move). */
static tier_status job_run(tier_t *t, move_job *j, const char *what, char *err, size_t errlen) {
    size_t next = 0;
    tier_status rc = TIER_OK;
    while (rc == TIER_OK && next < j->n) {
        if (next > 0) { /* let the others in between rounds */
            pthread_mutex_unlock(&t->mu);
            pthread_mutex_lock(&t->mu);
            tier_io_wait(t);
        }
        tier_seqent *se = tier_index_find(&t->ix, j->tenant, j->seq);
        if (!se)
            break;
        rc = tier_mv_round_begin(t, err, errlen);
        if (rc != TIER_OK)
            break;
        uint64_t nb = 0;
        rc = round_fill(t, se, j, &next, &nb, err, errlen);
        size_t nq = t->n_reads;
        rc = tier_mv_round_end(t, rc, what, err, errlen);
        if (j->target == TIER_HOST)
            rc = count_reads(t, nq, j, rc, err, errlen);
        else if (rc == TIER_OK)
            j->done += nb;
    }
    return rc;
}

tier_status tier_evict(tier_t *t, const char *tenant, uint64_t seq, int layer, int target,
                       uint64_t *moved, char *err, size_t errlen) {
    if (moved)
        *moved = 0;
    if (target != TIER_HOST && target != TIER_SSD && target != TIER_DROPPED) {
        TIER_ERR(err, errlen, "evict target must be HOST, SSD or DROPPED, not %s",
                 policy_tier_name(target));
        return TIER_EINVAL;
    }
    move_job j = {.seq = seq, .target = target};
    pthread_mutex_lock(&t->mu);
    tier_io_wait(t);
    tier_seqent *se = NULL;
    tier_status rc = tier_mv_lookup(t, tenant, seq, 0, &se, err, errlen);
    if (rc == TIER_OK && (layer < -1 || layer >= (int)se->st.n_layers)) {
        TIER_ERR(err, errlen, "layer %d out of range (-1 or 0..%u)", layer, se->st.n_layers - 1);
        rc = TIER_EINVAL;
    }
    if (rc == TIER_OK) {
        snprintf(j.tenant, sizeof j.tenant, "%s", se->tenant);
        uint32_t l0 = layer < 0 ? 0 : (uint32_t)layer;
        uint32_t l1 = layer < 0 ? se->st.n_layers : (uint32_t)layer + 1;
        rc = job_pick(se, l0, l1, &j, err, errlen);
    }
    if (rc == TIER_OK)
        rc = job_run(t, &j,
                     target == TIER_DROPPED ? "the evicted blocks' deletes" : "the evicted blocks",
                     err, errlen);
    pthread_mutex_unlock(&t->mu);
    free(j.p);
    if (target == TIER_DROPPED && j.done)
        tier_mv_disk_reclaim(t, j.tenant, seq); /* disk full: free it now (no lock) */
    if (moved)
        *moved = j.done;
    return rc;
}

tier_status tier_drain(tier_t *t, uint64_t *moved, char *err, size_t errlen) {
    uint64_t n = 0;
    pthread_mutex_lock(&t->mu);
    tier_io_wait(t);
    /* the blocks in RAM now: puts meanwhile do not prolong it */
    uint64_t left = t->host.count;
    tier_status rc = TIER_OK;
    while (rc == TIER_OK && left && t->host.head) {
        if (n) { /* let the others in between rounds */
            pthread_mutex_unlock(&t->mu);
            pthread_mutex_lock(&t->mu);
            tier_io_wait(t);
        }
        rc = tier_mv_round_begin(t, err, errlen);
        if (rc != TIER_OK)
            break;
        uint64_t bytes = 0, nb = 0;
        while (rc == TIER_OK && left && t->host.head && nb < TIER_ROUND_BLOCKS &&
               bytes < TIER_ROUND_BYTES) {
            tier_host_entry *e = t->host.head; /* coldest first */
            bytes += e->len;
            left--;
            rc = tier_mv_host_leave(t, e, err, errlen);
            nb += rc == TIER_OK;
        }
        rc = tier_mv_round_end(t, rc, "the drained blocks", err, errlen);
        if (rc == TIER_OK)
            n += nb;
        if (!nb)
            break;
    }
    pthread_mutex_unlock(&t->mu);
    if (moved)
        *moved = n;
    return rc;
}

tier_status tier_mv_close_retain(tier_t *t, tier_seqent *se, char *err, size_t errlen) {
    /* in memory, at once: closed, HOT blocks DROPPED (not stored ones too) */
    uint64_t unstored[TIER_NLEVELS];
    tier_index_unstored(se, unstored);
    tier_index_retier_unstored(se, TIER_HOT, TIER_DROPPED);
    t->st.level[TIER_HOT].blocks -= unstored[TIER_HOT];
    t->st.level[TIER_DROPPED].blocks += unstored[TIER_HOT];
    size_t pos = 0;
    for (tier_chunk *c; (c = tier_index_next_chunk(se, &pos));)
        for (uint32_t k = 0; k < POLICY_CHUNK_BLOCKS; k++)
            if (c->pc.first + k < se->st.n_blocks && c->pc.blocks[k].tier == TIER_HOT)
                tier_mv_set_tier(t, se, c->pc.layer, c->pc.first + k, TIER_DROPPED);
    if (se->open) {
        se->open = 0;
        t->st.sequences_open--;
        t->st.sequences_retained++;
    }
    /* RAM copies leave RAM in rounds (write-back: written outside the lock) */
    move_job j = {.seq = se->seq, .target = MOVE_RAM_OUT};
    snprintf(j.tenant, sizeof j.tenant, "%s", se->tenant);
    tier_status rc = job_pick(se, 0, se->st.n_layers, &j, err, errlen);
    if (rc == TIER_OK)
        rc = job_run(t, &j, "the closed sequence's RAM blocks", err, errlen);
    free(j.p);
    /* then its record, also after a failed round (it is closed) */
    se = tier_index_find(&t->ix, j.tenant, j.seq);
    if (!se)
        return rc; /* closed for good meanwhile */
    char e[300];
    tier_status p = tier_mv_round_begin(t, e, sizeof e);
    if (p == TIER_OK)
        p = tier_mv_persist_seq(t, se, e, sizeof e);
    p = tier_mv_round_end(t, p, "the sequence record", e, sizeof e);
    if (rc == TIER_OK && p != TIER_OK) {
        TIER_ERR(err, errlen, "%s", e);
        rc = p;
    }
    return rc;
}
