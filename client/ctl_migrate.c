/* ctl_migrate.c - `kvtierctl migrate`: copy every stored block of a shard's
 * sequences to another kvtierd, verify, then delete them on the source (the
 * steps and failure rules are in ctl_migrate.h). */
#include "ctl_migrate.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "ctl_print.h"

#define MIG_ERR 1024

/* ---------------------------------------------------------------- connections */

/* One tenant's clients: the tenant is a connection option of libkvtier. */
typedef struct mig_conn {
    char tenant[72];
    kvtier_client *src, *dst;
} mig_conn;

typedef struct mig_ctx {
    const ctl_migrate_opts *o;
    mig_conn *conns; /* [n_conns] */
    size_t n_conns;
} mig_ctx;

/* Formats into err[MIG_ERR]; returns 1 (a failed step). */
static int mig_fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int mig_fail(char *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, MIG_ERR, fmt, ap);
    va_end(ap);
    return 1;
}

/* mig_conn_get: the clients of `tenant` (made on first use, kept in m).
 * NULL with a message in err when a client cannot be made. */
static mig_conn *mig_conn_get(mig_ctx *m, const char *tenant, char *err) {
    for (size_t i = 0; i < m->n_conns; i++)
        if (!strcmp(m->conns[i].tenant, tenant))
            return &m->conns[i];
    mig_conn *v = realloc(m->conns, (m->n_conns + 1) * sizeof *v);
    if (!v) {
        mig_fail(err, "out of memory");
        return NULL;
    }
    m->conns = v;
    mig_conn *c = &v[m->n_conns];
    memset(c, 0, sizeof *c);
    snprintf(c->tenant, sizeof c->tenant, "%s", tenant);
    kvtier_connect_opts co = m->o->base;
    co.tenant = tenant;
    kvtier_error e;
    co.address = m->o->from;
    c->src = kvtier_connect(&co, &e);
    if (c->src) {
        co.address = m->o->to;
        c->dst = kvtier_connect(&co, &e);
    }
    if (!c->src || !c->dst) {
        kvtier_client_free(c->src);
        mig_fail(err, "client for %s: %s", co.address, e.message);
        return NULL;
    }
    m->n_conns++;
    return c;
}

static void mig_conns_free(mig_ctx *m) {
    for (size_t i = 0; i < m->n_conns; i++) {
        kvtier_client_free(m->conns[i].src);
        kvtier_client_free(m->conns[i].dst);
    }
    free(m->conns);
}

/* ---------------------------------------------------------------- one batch */

/* A block read from the source, owned until the batch is put. */
typedef struct mig_blk {
    uint32_t layer, block;
    void *data; /* [len], malloc'd */
    size_t len;
    uint32_t crc, ntokens;
    int got;
} mig_blk;

typedef struct mig_batch {
    mig_blk *b;     /* [n] */
    size_t n, next; /* next: where the search for the next arrival starts */
    int oom;
} mig_batch;

/* FetchBlocks callback: copies the block into its slot (blocks come in the
 * order asked for; a search covers any other order). */
static int mig_on_block(const kvtier_fetched *f, void *user) {
    mig_batch *bt = user;
    for (size_t k = 0; k < bt->n; k++) {
        mig_blk *x = &bt->b[(bt->next + k) % bt->n];
        if (x->layer != f->layer || x->block != f->block || x->got)
            continue;
        x->data = malloc(f->len ? f->len : 1);
        if (!x->data) {
            bt->oom = 1;
            return 1;
        }
        memcpy(x->data, f->payload, f->len);
        x->len = f->len;
        x->crc = f->crc32c;
        x->ntokens = f->token_count;
        x->got = 1;
        bt->next = (size_t)(x - bt->b) + 1;
        return 0;
    }
    return 0; /* a duplicate: libkvtier already checked it was asked for */
}

static void mig_batch_clear(mig_batch *bt) {
    for (size_t i = 0; i < bt->n; i++) {
        free(bt->b[i].data);
        bt->b[i].data = NULL;
        bt->b[i].got = 0;
    }
    bt->n = bt->next = 0;
    bt->oom = 0;
}

/* mig_batch_move: fetches refs[n] of seq from the source into bt, puts them
 * to the destination and checks every acknowledgement. Returns 0 (*bytes
 * += the payload moved) or 1 with err. */
static int mig_batch_move(mig_conn *c, uint64_t seq, const kvtier_block_ref *refs, size_t n,
                          mig_batch *bt, uint64_t *bytes, char *err) {
    mig_batch_clear(bt);
    for (size_t i = 0; i < n; i++) {
        bt->b[i].layer = refs[i].layer;
        bt->b[i].block = refs[i].block;
    }
    bt->n = n;
    kvtier_error e;
    size_t got = 0;
    kvtier_code code = kvtier_fetch_blocks(c->src, seq, refs, n, mig_on_block, bt, &got, &e);
    if (bt->oom)
        return mig_fail(err, "out of memory holding a batch of %zu blocks", n);
    if (code != KVTIER_OK)
        return mig_fail(err, "fetch from the source: %s: %s", kvtier_code_name(code), e.message);
    kvtier_block *put = calloc(n, sizeof *put);
    if (!put)
        return mig_fail(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const mig_blk *x = &bt->b[i];
        if (!x->got) {
            free(put);
            return mig_fail(err, "fetch from the source: layer %u block %u was not returned",
                            x->layer, x->block);
        }
        put[i] = (kvtier_block){.layer = x->layer,
                                .block = x->block,
                                .payload = x->data,
                                .len = x->len,
                                .crc32c = x->crc,
                                .crc_set = 1,
                                .token_count = x->ntokens,
                                .target = KVTIER_TIER_SSD};
    }
    kvtier_put_result pr;
    code = kvtier_put_blocks(c->dst, seq, put, n, &pr, &e);
    free(put);
    if (code != KVTIER_OK)
        return mig_fail(err, "put to the destination: %s: %s", kvtier_code_name(code), e.message);
    int bad = pr.acked != n || pr.n_acks != n;
    for (size_t i = 0; !bad && i < n; i++) /* acks in the order sent */
        bad = pr.acks[i].layer != bt->b[i].layer || pr.acks[i].block != bt->b[i].block ||
              (pr.acks[i].tier != KVTIER_TIER_HOST && pr.acks[i].tier != KVTIER_TIER_SSD);
    kvtier_put_result_free(&pr);
    if (bad)
        return mig_fail(err,
                        "put to the destination: %zu blocks sent, the answer does not "
                        "acknowledge each of them as stored",
                        n);
    for (size_t i = 0; i < n; i++)
        *bytes += bt->b[i].len;
    return 0;
}

/* ---------------------------------------------------------------- one sequence */

/* mig_probe: 0 when the destination does not route sequence `seq` to the
 * source itself (a probe sequence of that id, opened on the source in the
 * probe tenant, is unknown through the destination); 1 with err otherwise. */
static int mig_probe(mig_ctx *m, const kvtier_seq_shape *shape, char *err) {
    mig_conn *p = mig_conn_get(m, CTL_MIGRATE_PROBE_TENANT, err);
    if (!p)
        return 1;
    kvtier_seq_shape ps = *shape;
    ps.retain_on_close = 0;
    kvtier_error e;
    /* a probe of a killed run may be left, maybe with another shape */
    (void)kvtier_close_sequence(p->src, shape->sequence_id, 0, NULL, NULL, NULL);
    kvtier_code code = kvtier_open_sequence(p->src, &ps, NULL, &e);
    if (code != KVTIER_OK)
        return mig_fail(err, "routing probe on the source: %s: %s", kvtier_code_name(code),
                        e.message);
    kvtier_tier_map pm;
    code = kvtier_tier_map_get(p->dst, shape->sequence_id, &pm, &e);
    (void)kvtier_close_sequence(p->src, shape->sequence_id, 0, NULL, NULL, NULL); /* no data */
    if (code == KVTIER_OK) {
        kvtier_tier_map_free(&pm);
        return mig_fail(err,
                        "the destination %s routes this sequence to the source itself (is "
                        "the shard still in the load balancer's upstream list?)",
                        m->o->to);
    }
    if (code != KVTIER_NOT_FOUND)
        return mig_fail(err, "routing probe through the destination: %s: %s",
                        kvtier_code_name(code), e.message);
    return 0;
}

/* The stored (HOST, SSD) blocks of map *mp as refs: *out malloc'd, *n. */
static int mig_stored_refs(const kvtier_tier_map *mp, kvtier_block_ref **out, size_t *n) {
    size_t cells = (size_t)mp->n_layers * mp->n_blocks, k = 0;
    kvtier_block_ref *r = malloc((cells ? cells : 1) * sizeof *r);
    if (!r)
        return -1;
    for (uint32_t i = 0; i < mp->n_layers; i++)
        for (uint32_t b = 0; b < mp->n_blocks; b++) {
            uint8_t t = mp->tiers[(size_t)i * mp->n_blocks + b];
            if (t == KVTIER_TIER_HOST || t == KVTIER_TIER_SSD)
                r[k++] = (kvtier_block_ref){mp->layer_ids[i], b};
        }
    *out = r;
    *n = k;
    return 0;
}

/* mig_verify: 0 when the destination's map holds every ref as HOST or SSD. */
static int mig_verify(mig_conn *c, uint64_t seq, const kvtier_block_ref *refs, size_t n,
                      char *err) {
    kvtier_tier_map dm;
    kvtier_error e;
    kvtier_code code = kvtier_tier_map_get(c->dst, seq, &dm, &e);
    if (code != KVTIER_OK)
        return mig_fail(err, "map on the destination: %s: %s", kvtier_code_name(code), e.message);
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        uint32_t row = dm.n_layers;
        for (uint32_t l = 0; l < dm.n_layers; l++)
            if (dm.layer_ids[l] == refs[i].layer)
                row = l;
        uint8_t t = row < dm.n_layers && refs[i].block < dm.n_blocks
                        ? dm.tiers[(size_t)row * dm.n_blocks + refs[i].block]
                        : KVTIER_TIER_ABSENT;
        if (t != KVTIER_TIER_HOST && t != KVTIER_TIER_SSD)
            rc = mig_fail(err, "the destination's map shows layer %u block %u as %s after the copy",
                          refs[i].layer, refs[i].block, kvtier_tier_name(t));
    }
    kvtier_tier_map_free(&dm);
    return rc;
}

/* mig_copy: steps 3-5 for the stored refs of a sequence. */
static int mig_copy(mig_ctx *m, mig_conn *c, const kvtier_seq_shape *shape,
                    const kvtier_block_ref *refs, size_t n, uint64_t *bytes, char *err) {
    kvtier_error e;
    kvtier_code code = kvtier_open_sequence(c->dst, shape, NULL, &e);
    if (code != KVTIER_OK)
        return mig_fail(err, "open on the destination: %s: %s", kvtier_code_name(code), e.message);
    size_t per = m->o->batch ? m->o->batch : 256;
    uint64_t cap = m->o->batch_bytes ? m->o->batch_bytes : (64u << 20);
    if (shape->block_bytes && per > cap / shape->block_bytes)
        per = cap / shape->block_bytes ? (size_t)(cap / shape->block_bytes) : 1;
    mig_batch bt = {calloc(per, sizeof(mig_blk)), 0, 0, 0};
    if (!bt.b)
        return mig_fail(err, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i += per)
        rc = mig_batch_move(c, shape->sequence_id, refs + i, n - i < per ? n - i : per, &bt, bytes,
                            err);
    mig_batch_clear(&bt);
    free(bt.b);
    return rc ? rc : mig_verify(c, shape->sequence_id, refs, n, err);
}

/* mig_delete: deletes the sequence of *shape on the source. CloseSequence
 * with retain false still keeps a sequence opened with retain_on_close (the
 * worker's --retain), so it is first reopened, same shape, without it. */
static int mig_delete(kvtier_client *src, const kvtier_seq_shape *shape, char *err) {
    kvtier_seq_shape del = *shape;
    del.retain_on_close = 0;
    kvtier_error e;
    uint64_t kept = 0;
    kvtier_code code = kvtier_open_sequence(src, &del, NULL, &e);
    if (code == KVTIER_OK)
        code = kvtier_close_sequence(src, shape->sequence_id, 0, NULL, &kept, &e);
    if (code != KVTIER_OK)
        return mig_fail(err, "copied and verified, but deleting it on the source failed: %s: %s",
                        kvtier_code_name(code), e.message);
    if (kept)
        return mig_fail(err, "copied and verified, but the source kept %" PRIu64 " blocks at close",
                        kept);
    return 0;
}

/* mig_one: moves sequence *si. 0 with *blocks / *bytes moved, 1 with err (the
 * source sequence untouched unless err says the final close failed). */
static int mig_one(mig_ctx *m, const kvtier_seq_info *si, uint64_t *blocks, uint64_t *bytes,
                   char *err) {
    if (si->kv_heads == 0 || si->head_dim == 0)
        return mig_fail(err, "the source does not report the sequence's shape (kv_heads, "
                             "head_dim): a kvtierd older than kvtierctl migrate");
    kvtier_seq_shape shape = {.sequence_id = si->sequence_id,
                              .layers = si->layers,
                              .kv_heads = si->kv_heads,
                              .head_dim = si->head_dim,
                              .block_tokens = si->block_tokens,
                              .block_bytes = si->block_bytes,
                              .retain_on_close = 1};
    if (mig_probe(m, &shape, err))
        return 1;
    mig_conn *c = mig_conn_get(m, si->tenant, err); /* after the probe's: it may move conns */
    if (!c)
        return 1;
    kvtier_tier_map sm;
    kvtier_error e;
    kvtier_code code = kvtier_tier_map_get(c->src, si->sequence_id, &sm, &e);
    if (code != KVTIER_OK)
        return mig_fail(err, "map on the source: %s: %s", kvtier_code_name(code), e.message);
    kvtier_block_ref *refs = NULL;
    size_t n = 0;
    int rc = mig_stored_refs(&sm, &refs, &n) ? mig_fail(err, "out of memory") : 0;
    kvtier_tier_map_free(&sm);
    uint64_t moved = 0;
    if (!rc)
        rc = mig_copy(m, c, &shape, refs, n, &moved, err);
    free(refs);
    if (!rc && !si->open) { /* as it was: closed, kept for a reopen */
        code = kvtier_close_sequence(c->dst, si->sequence_id, 1, NULL, NULL, &e);
        if (code != KVTIER_OK)
            rc = mig_fail(err, "close (retained) on the destination: %s: %s",
                          kvtier_code_name(code), e.message);
    }
    if (rc)
        return rc;
    if (mig_delete(c->src, &shape, err))
        return 1;
    *blocks = n;
    *bytes = moved;
    return 0;
}

/* ---------------------------------------------------------------- the run */

static double mig_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int ctl_migrate_run(FILE *out, FILE *log, const ctl_migrate_opts *o) {
    FILE *prog = o->json ? log : out;
    double t0 = mig_now();
    kvtier_connect_opts co = o->base;
    co.address = o->from;
    co.tenant = NULL;
    kvtier_error e;
    kvtier_client *lister = kvtier_connect(&co, &e);
    kvtier_seq_info *v = NULL;
    size_t n = 0;
    kvtier_code code =
        lister ? kvtier_list_sequences(lister, o->tenant, &v, &n, &e) : KVTIER_INVALID_ARGUMENT;
    kvtier_client_free(lister);
    if (code != KVTIER_OK) {
        fprintf(log, "kvtierctl: migrate: listing the sequences of %s failed: %s: %s\n", o->from,
                kvtier_code_name(e.code), e.message);
        return 1;
    }
    mig_ctx m = {o, NULL, 0};
    uint64_t moved = 0, skipped = 0, failed = 0, blocks = 0, bytes = 0;
    cJSON *fails = cJSON_CreateArray();
    char err[MIG_ERR], b1[32];
    for (size_t i = 0; i < n; i++) {
        const kvtier_seq_info *si = &v[i];
        if (!strcmp(si->tenant, CTL_MIGRATE_PROBE_TENANT))
            continue; /* a probe of a migration that runs now or was killed */
        fprintf(prog, "sequence %s/%" PRIu64 ": ", si->tenant, si->sequence_id);
        if (si->open && !o->include_open) {
            skipped++;
            fprintf(prog, "skipped: open (a worker is using it; --include-open moves it)\n");
            fflush(prog);
            continue;
        }
        uint64_t nb = 0, by = 0;
        double ts = mig_now();
        if (mig_one(&m, si, &nb, &by, err)) {
            failed++;
            fprintf(prog, "FAILED, left on the source: %s\n", err);
            cJSON *f = cJSON_CreateObject();
            cJSON_AddStringToObject(f, "tenant", si->tenant);
            ctl_json_u64(f, "sequence_id", si->sequence_id);
            cJSON_AddStringToObject(f, "error", err);
            cJSON_AddItemToArray(fails, f);
        } else {
            moved++;
            blocks += nb;
            bytes += by;
            fprintf(prog, "%" PRIu64 " block%s (%s) moved in %.3f s%s\n", nb, nb == 1 ? "" : "s",
                    ctl_bytes(by, b1, sizeof b1), mig_now() - ts,
                    si->open ? " (was open: left open on the destination)" : "");
        }
        fflush(prog);
    }
    mig_conns_free(&m);
    size_t listed = (size_t)(moved + skipped + failed);
    kvtier_free(v);
    double secs = mig_now() - t0;
    int rc = failed || skipped ? 1 : 0;
    if (o->json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "from", o->from);
        cJSON_AddStringToObject(j, "to", o->to);
        ctl_json_u64(j, "sequences", listed);
        ctl_json_u64(j, "moved", moved);
        ctl_json_u64(j, "skipped_open", skipped);
        ctl_json_u64(j, "failed", failed);
        ctl_json_u64(j, "blocks", blocks);
        ctl_json_u64(j, "bytes", bytes);
        cJSON_AddNumberToObject(j, "seconds", secs);
        cJSON_AddItemToObject(j, "failures", fails);
        return ctl_json_print(out, j) ? 1 : rc;
    }
    cJSON_Delete(fails);
    fprintf(out,
            "migrate %s -> %s: %" PRIu64 " of %zu sequence%s moved, %" PRIu64 " block%s (%s) in "
            "%.2f s; %" PRIu64 " failed, %" PRIu64 " skipped (open)\n",
            o->from, o->to, moved, listed, listed == 1 ? "" : "s", blocks, blocks == 1 ? "" : "s",
            ctl_bytes(bytes, b1, sizeof b1), secs, failed, skipped);
    return rc;
}
