/* Tier library against real RocksDB in a temp dir: put/fetch, demotion,
 * reopen, corruption, summaries, budgets, close, admin calls, threads. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tier.h"
#include "tier_key.h"
#include "tier_ssd.h"
#include "tier_test_util.h"

#define BB 65536u /* block bytes */

typedef struct ctx {
    char *dir;
    tier_options o;
    tier_t *t;
    uint8_t buf[BB];
    char err[256];
} ctx;

static tier_seq_info shape(uint32_t layers) {
    tier_seq_info i = {.n_layers = layers,
                       .n_kv_heads = 8,
                       .head_dim = 128,
                       .block_tokens = 16,
                       .max_blocks = 4096,
                       .block_bytes = BB};
    return i;
}

static int setup(void **state) {
    ctx *c = calloc(1, sizeof *c);
    c->dir = tt_tmpdir();
    if (!c->dir)
        return -1;
    tier_options_init(&c->o);
    c->o.data_dir = c->dir;
    c->o.host_budget = 16ULL << 20;
    c->o.ssd_budget = 1ULL << 30;
    *state = c;
    return 0;
}

static int teardown(void **state) {
    ctx *c = *state;
    tier_close(c->t);
    tt_rmrf(c->dir);
    free(c->dir);
    free(c);
    return 0;
}

static void open_store(ctx *c) {
    c->err[0] = 0;
    tier_status rc = tier_open(&c->o, &c->t, c->err, sizeof c->err);
    if (rc != TIER_OK)
        fail_msg("tier_open: %s: %s", tier_status_name(rc), c->err);
}

static void reopen(ctx *c) {
    assert_int_equal(tier_close(c->t), TIER_OK);
    c->t = NULL;
    open_store(c);
}

static tier_status put(ctx *c, const char *ten, uint64_t seq, uint32_t l, uint32_t b, uint32_t salt,
                       int *where) {
    tt_pattern(c->buf, BB, l, b, salt);
    tier_block_key k = {ten, seq, l, b};
    return tier_put(c->t, &k, c->buf, BB, tier_crc32c(0, c->buf, BB), 16, where, c->err,
                    sizeof c->err);
}

/* fetch and compare with the pattern; returns the status */
static tier_status fetch_check(ctx *c, const char *ten, uint64_t seq, uint32_t l, uint32_t b,
                               uint32_t salt, int *where) {
    tier_block_key k = {ten, seq, l, b};
    void *d = NULL;
    size_t n = 0;
    uint32_t crc = 0;
    tier_status rc = tier_fetch(c->t, &k, &d, &n, &crc, where, c->err, sizeof c->err);
    if (rc != TIER_OK)
        return rc;
    tt_pattern(c->buf, BB, l, b, salt);
    assert_int_equal(n, BB);
    assert_memory_equal(d, c->buf, BB);
    assert_int_equal(crc, tier_crc32c(0, c->buf, BB));
    tier_buf_free(d);
    return rc;
}

static void seq_open(ctx *c, const char *ten, uint64_t seq, uint32_t layers) {
    tier_seq_info i = shape(layers);
    tier_status rc = tier_seq_open(c->t, ten, seq, &i, c->err, sizeof c->err);
    if (rc != TIER_OK)
        fail_msg("seq_open: %s", c->err);
}

/* 1200 blocks of 64 KiB: RAM holds 256, the rest goes to SSD; all come back
 * byte-identical, also after a reopen (index recovered from RocksDB). */
static void test_many_blocks_reopen(void **state) {
    ctx *c = *state;
    open_store(c);
    seq_open(c, "acme", 7, 4);
    int where = -1;
    for (uint32_t l = 0; l < 4; l++)
        for (uint32_t b = 0; b < 300; b++) {
            assert_int_equal(put(c, "acme", 7, l, b, 1, &where), TIER_OK);
            assert_int_equal(where, TIER_HOST);
        }
    tier_stats s;
    tier_stats_get(c->t, &s);
    assert_int_equal(s.level[TIER_HOST].blocks, 256); /* 16 MiB / 64 KiB */
    assert_int_equal(s.level[TIER_SSD].blocks, 1200 - 256);
    assert_true(s.level[TIER_HOST].bytes <= c->o.host_budget);
    int from_host = 0, from_ssd = 0;
    for (uint32_t l = 0; l < 4; l++)
        for (uint32_t b = 0; b < 300; b++) {
            assert_int_equal(fetch_check(c, "acme", 7, l, b, 1, &where), TIER_OK);
            from_host += where == TIER_HOST;
            from_ssd += where == TIER_SSD;
        }
    assert_int_equal(from_host, 256);
    assert_int_equal(from_ssd, 1200 - 256);
    tier_stats_get(c->t, &s);
    assert_int_equal(s.level[TIER_SSD].hits, 1200 - 256);
    assert_int_equal(s.level[TIER_HOST].hits, 256);
    reopen(c);
    tier_seq_desc *list = NULL;
    size_t n = 0;
    assert_int_equal(tier_seq_list(c->t, NULL, &list, &n, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].tenant, "acme");
    assert_int_equal(list[0].seq, 7);
    assert_int_equal(list[0].info.n_layers, 4);
    assert_int_equal(list[0].blocks[TIER_SSD], 1200); /* RAM was flushed at close */
    assert_true(list[0].bytes[TIER_SSD] == 1200ULL * BB);
    tier_buf_free(list);
    for (uint32_t l = 0; l < 4; l++)
        for (uint32_t b = 0; b < 300; b += 7)
            assert_int_equal(fetch_check(c, "acme", 7, l, b, 1, &where), TIER_OK);
    /* re-attach with the same shape works; another shape is refused */
    seq_open(c, "acme", 7, 4);
    tier_seq_info other = shape(5);
    assert_int_equal(tier_seq_open(c->t, "acme", 7, &other, c->err, sizeof c->err), TIER_EEXIST);
}

static void test_put_errors(void **state) {
    ctx *c = *state;
    open_store(c);
    seq_open(c, "t", 1, 2);
    tt_pattern(c->buf, BB, 0, 0, 0);
    uint32_t crc = tier_crc32c(0, c->buf, BB);
    tier_block_key k = {"t", 1, 0, 0};
    /* bad checksum: DATA_LOSS, nothing stored */
    assert_int_equal(tier_put(c->t, &k, c->buf, BB, crc ^ 1, 16, NULL, c->err, sizeof c->err),
                     TIER_EDATALOSS);
    assert_non_null(strstr(c->err, "crc32c"));
    void *d;
    size_t n;
    assert_int_equal(tier_fetch(c->t, &k, &d, &n, NULL, NULL, c->err, sizeof c->err),
                     TIER_ENOTFOUND);
    /* layer outside the shape */
    k.layer = 2;
    assert_int_equal(tier_put(c->t, &k, c->buf, BB, crc, 16, NULL, c->err, sizeof c->err),
                     TIER_EINVAL);
    assert_non_null(strstr(c->err, "outside the sequence shape"));
    k.layer = 0;
    k.block = 4096;
    assert_int_equal(tier_put(c->t, &k, c->buf, BB, crc, 16, NULL, c->err, sizeof c->err),
                     TIER_EINVAL);
    k.block = 0;
    /* too big for the sequence, and for the service */
    uint8_t *big = calloc(1, 2u << 20);
    assert_int_equal(tier_put(c->t, &k, big, BB + 1, tier_crc32c(0, big, BB + 1), 16, NULL, c->err,
                              sizeof c->err),
                     TIER_ETOOBIG);
    assert_int_equal(tier_put(c->t, &k, big, 2u << 20, 0, 16, NULL, c->err, sizeof c->err),
                     TIER_ETOOBIG);
    free(big);
    /* ntokens beyond block_tokens, empty payload */
    assert_int_equal(tier_put(c->t, &k, c->buf, BB, crc, 17, NULL, c->err, sizeof c->err),
                     TIER_EINVAL);
    assert_int_equal(tier_put(c->t, &k, c->buf, 0, crc, 1, NULL, c->err, sizeof c->err),
                     TIER_EINVAL);
    /* unknown sequence, bad tenant */
    k.seq = 2;
    assert_int_equal(tier_put(c->t, &k, c->buf, BB, crc, 16, NULL, c->err, sizeof c->err),
                     TIER_ENOTFOUND);
    assert_non_null(strstr(c->err, "t/2 not found"));
    k.tenant = "";
    assert_int_equal(tier_put(c->t, &k, c->buf, BB, crc, 16, NULL, c->err, sizeof c->err),
                     TIER_EINVAL);
    /* bad shapes at open */
    tier_seq_info bad = shape(0);
    assert_int_equal(tier_seq_open(c->t, "t", 9, &bad, c->err, sizeof c->err), TIER_EINVAL);
    bad = shape(2);
    bad.block_bytes = 2u << 20;
    assert_int_equal(tier_seq_open(c->t, "t", 9, &bad, c->err, sizeof c->err), TIER_ETOOBIG);
    policy_params pp;
    policy_params_init(&pp);
    pp.top_p = 0;
    bad = shape(2);
    bad.params = &pp;
    assert_int_equal(tier_seq_open(c->t, "t", 9, &bad, c->err, sizeof c->err), TIER_EINVAL);
    assert_non_null(strstr(c->err, "top_p"));
    /* fetch of a HOT block / unknown sequence */
    k = (tier_block_key){"t", 1, 1, 3};
    assert_int_equal(tier_fetch(c->t, &k, &d, &n, NULL, NULL, c->err, sizeof c->err),
                     TIER_ENOTFOUND);
    k.seq = 99;
    assert_int_equal(tier_fetch(c->t, &k, &d, &n, NULL, NULL, c->err, sizeof c->err),
                     TIER_ENOTFOUND);
    tier_stats s;
    tier_stats_get(c->t, &s);
    assert_int_equal(s.dataloss, 1);
    /* options */
    tier_options o;
    tier_options_init(&o);
    tier_t *t2 = NULL;
    assert_int_equal(tier_open(&o, &t2, c->err, sizeof c->err), TIER_EINVAL);
    assert_null(t2);
}

/* Overwrite stored values directly in RocksDB: the fetch reports DATA_LOSS. */
static void test_corruption(void **state) {
    ctx *c = *state;
    c->o.host_budget = 0; /* straight to SSD */
    open_store(c);
    seq_open(c, "t", 5, 1);
    for (uint32_t b = 0; b < 4; b++)
        assert_int_equal(put(c, "t", 5, 0, b, 3, NULL), TIER_OK);
    tier_close(c->t);
    c->t = NULL;
    tier_ssd *s = NULL;
    assert_int_equal(tier_ssd_open(c->dir, 0, 0, &s, c->err, sizeof c->err), 0);
    uint8_t key[TIER_KEY_MAX], key2[TIER_KEY_MAX];
    size_t kl = tier_key_encode("t", 5, 0, 1, key);
    char *rerr = NULL;
    size_t vl = 0;
    char *v = rocksdb_get_cf(s->db, s->ropts, s->cf_blocks, (const char *)key, kl, &vl, &rerr);
    assert_null(rerr);
    assert_non_null(v);
    v[vl - 100] ^= 0x10; /* flip one payload bit */
    rocksdb_put_cf(s->db, s->wopts, s->cf_blocks, (const char *)key, kl, v, vl, &rerr);
    assert_null(rerr);
    /* block 2 gets block 3's (valid) value: key mismatch */
    size_t kl2 = tier_key_encode("t", 5, 0, 3, key2);
    size_t vl3 = 0;
    char *v3 = rocksdb_get_cf(s->db, s->ropts, s->cf_blocks, (const char *)key2, kl2, &vl3, &rerr);
    kl = tier_key_encode("t", 5, 0, 2, key);
    rocksdb_put_cf(s->db, s->wopts, s->cf_blocks, (const char *)key, kl, v3, vl3, &rerr);
    assert_null(rerr);
    /* block 3 truncated */
    rocksdb_put_cf(s->db, s->wopts, s->cf_blocks, (const char *)key2, kl2, v3, 10, &rerr);
    assert_null(rerr);
    rocksdb_free(v);
    rocksdb_free(v3);
    tier_ssd_close(s);
    open_store(c);
    int where;
    assert_int_equal(fetch_check(c, "t", 5, 0, 0, 3, &where), TIER_OK);
    assert_int_equal(fetch_check(c, "t", 5, 0, 1, 3, &where), TIER_EDATALOSS);
    assert_non_null(strstr(c->err, "crc32c"));
    assert_int_equal(fetch_check(c, "t", 5, 0, 2, 3, &where), TIER_EDATALOSS);
    assert_non_null(strstr(c->err, "key"));
    assert_int_equal(fetch_check(c, "t", 5, 0, 3, 3, &where), TIER_EDATALOSS);
    tier_stats st;
    tier_stats_get(c->t, &st);
    assert_int_equal(st.dataloss, 3);
}

static tier_status summarize(ctx *c, uint64_t seq, uint64_t step, uint32_t nblocks,
                             tier_layer_summary *ls, uint32_t nl, tier_decision **d, size_t *n) {
    tier_summary s = {.step = step, .n_blocks = nblocks, .layers = ls, .n_layers = nl};
    return tier_summarize(c->t, "w", seq, &s, d, n, c->err, sizeof c->err);
}

/* Summaries keep the index; the worker demotes on its own (the service
 * never asks for a HOT block: the hot pool is the worker's), its puts land
 * in HOST, a recall makes the block HOT again (revival counted, stored copy
 * released). */
static void test_summary_cycle(void **state) {
    ctx *c = *state;
    open_store(c);
    seq_open(c, "w", 1, 2);
    uint32_t all[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    uint32_t some[6] = {0, 1, 2, 8, 9, 10}; /* 3..7 idle (11 is recent anyway) */
    tier_layer_summary ls[2] = {{.layer = 0, .active = all, .n_active = 12},
                                {.layer = 1, .active = all, .n_active = 12}};
    tier_decision *d = NULL;
    size_t n = 0;
    assert_int_equal(summarize(c, 1, 16, 12, ls, 2, &d, &n), TIER_OK);
    assert_int_equal(n, 0);
    ls[0].active = some;
    ls[0].n_active = 6;
    assert_int_equal(summarize(c, 1, 60, 12, ls, 2, &d, &n), TIER_OK);
    assert_int_equal(n, 0); /* 44 steps idle: not yet */
    assert_int_equal(summarize(c, 1, 80, 12, ls, 2, &d, &n), TIER_OK);
    assert_int_equal(n, 0);           /* 64 steps idle, but HOT blocks are the worker's */
    for (uint32_t b = 3; b <= 7; b++) /* the worker expires them (policy_hot_expired) */
        assert_int_equal(put(c, "w", 1, 0, b, 9, NULL), TIER_OK);
    uint8_t *map = NULL;
    uint32_t ml, mb;
    assert_int_equal(tier_map(c->t, "w", 1, &map, &ml, &mb, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(ml, 2);
    assert_int_equal(mb, 12);
    for (uint32_t b = 0; b < 12; b++)
        assert_int_equal(map[b], b >= 3 && b <= 7 ? TIER_HOST : TIER_HOT);
    tier_buf_free(map);
    tier_block_meta bm;
    tier_block_key bk = {"w", 1, 0, 4};
    assert_int_equal(tier_block_stat(c->t, &bk, &bm, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(bm.tier, TIER_HOST);
    assert_int_equal(bm.bytes, BB);
    assert_int_equal(bm.ntokens, 16);
    assert_int_equal(bm.durable, 1); /* write-through */
    assert_int_equal(bm.last_active, 16);
    assert_int_equal(bm.hits, 1);
    tt_pattern(c->buf, BB, 0, 4, 9);
    assert_int_equal(bm.crc32c, tier_crc32c(0, c->buf, BB));
    bk.block = 100;
    assert_int_equal(tier_block_stat(c->t, &bk, &bm, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(bm.tier, TIER_NONE);
    bk.layer = 2;
    assert_int_equal(tier_block_stat(c->t, &bk, &bm, c->err, sizeof c->err), TIER_EINVAL);
    /* the worker recalls block 5 */
    uint32_t rec[1] = {5};
    ls[0].recalled = rec;
    ls[0].n_recalled = 1;
    assert_int_equal(summarize(c, 1, 96, 12, ls, 2, &d, &n), TIER_OK);
    assert_int_equal(n, 0);
    tier_seq_desc sd;
    assert_int_equal(tier_seq_get(c->t, "w", 1, &sd, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(sd.blocks[TIER_HOST], 4);
    assert_int_equal(sd.blocks[TIER_HOT], 20);
    assert_int_equal(sd.step, 96);
    assert_int_equal(fetch_check(c, "w", 1, 0, 5, 9, NULL), TIER_ENOTFOUND); /* copy released */
    tier_stats st;
    tier_stats_get(c->t, &st);
    assert_int_equal(st.level[TIER_HOST].revivals, 1);
    assert_int_equal(st.decisions[POLICY_DEMOTE_HOST], 0);
    /* bad summaries */
    uint32_t badb[1] = {12};
    ls[0].recalled = badb;
    assert_int_equal(summarize(c, 1, 112, 12, ls, 2, &d, &n), TIER_EINVAL);
    assert_non_null(strstr(c->err, "out of range"));
    ls[0].recalled = NULL;
    ls[0].n_recalled = 0;
    assert_int_equal(summarize(c, 1, 112, 5000, ls, 2, &d, &n), TIER_EINVAL);
    assert_int_equal(summarize(c, 2, 112, 12, ls, 2, &d, &n), TIER_ENOTFOUND);
}

/* Per-sequence budgets: HOST over budget -> DEMOTE_SSD carried out by the
 * service; SSD over budget -> DROP (payload deleted). */
static void test_sequence_budgets(void **state) {
    ctx *c = *state;
    open_store(c);
    policy_params pp;
    policy_params_init(&pp);
    pp.host_budget_bytes = 2 * BB;
    pp.ssd_budget_bytes = 3 * BB;
    pp.prefetch_min_revivals = 0;
    tier_seq_info i = shape(1);
    i.params = &pp;
    assert_int_equal(tier_seq_open(c->t, "w", 3, &i, c->err, sizeof c->err), TIER_OK);
    tier_decision *d = NULL;
    size_t n = 0;
    uint32_t act[4] = {0, 1, 2, 3};
    tier_layer_summary ls[1] = {{.layer = 0, .active = act, .n_active = 4}};
    assert_int_equal(summarize(c, 3, 1, 20, ls, 1, &d, &n), TIER_OK);
    tier_buf_free(d);
    for (uint32_t b = 4; b < 14; b++)
        assert_int_equal(put(c, "w", 3, 0, b, 2, NULL), TIER_OK);
    assert_int_equal(summarize(c, 3, 2, 20, ls, 1, &d, &n), TIER_OK);
    size_t nssd = 0, ndrop = 0;
    for (size_t k = 0; k < n; k++) {
        nssd += d[k].kind == POLICY_DEMOTE_SSD;
        ndrop += d[k].kind == POLICY_DROP;
    }
    assert_int_equal(nssd, 8);  /* 10 in HOST, budget 2 */
    assert_int_equal(ndrop, 0); /* SSD was empty when deciding */
    tier_buf_free(d);
    assert_int_equal(summarize(c, 3, 3, 20, ls, 1, &d, &n), TIER_OK);
    ndrop = 0;
    for (size_t k = 0; k < n; k++)
        ndrop += d[k].kind == POLICY_DROP;
    assert_int_equal(ndrop, 5); /* 8 in SSD, budget 3 */
    tier_buf_free(d);
    tier_seq_desc sd;
    tier_seq_get(c->t, "w", 3, &sd, c->err, sizeof c->err);
    assert_int_equal(sd.blocks[TIER_HOST], 2);
    assert_int_equal(sd.blocks[TIER_SSD], 3);
    assert_int_equal(sd.blocks[TIER_DROPPED], 5);
    int dropped_seen = 0;
    for (uint32_t b = 4; b < 14; b++) {
        tier_status rc = fetch_check(c, "w", 3, 0, b, 2, NULL);
        assert_true(rc == TIER_OK || rc == TIER_ENOTFOUND);
        dropped_seen += rc == TIER_ENOTFOUND;
    }
    assert_int_equal(dropped_seen, 5);
}

/* Service-wide SSD budget: old blocks are dropped to make room, reported as
 * DROP in the next summary; a block larger than the budget is EFULL. */
static void test_global_ssd_budget(void **state) {
    ctx *c = *state;
    c->o.host_budget = 0;
    c->o.ssd_budget = 10 * BB;
    open_store(c);
    seq_open(c, "w", 4, 1);
    for (uint32_t b = 0; b < 15; b++)
        assert_int_equal(put(c, "w", 4, 0, b, 4, NULL), TIER_OK);
    tier_stats st;
    tier_stats_get(c->t, &st);
    assert_true(st.level[TIER_SSD].bytes <= 10ULL * BB);
    assert_int_equal(st.level[TIER_SSD].blocks + st.level[TIER_DROPPED].blocks, 15);
    assert_int_equal(fetch_check(c, "w", 4, 0, 14, 4, NULL), TIER_OK); /* newest kept */
    assert_int_equal(fetch_check(c, "w", 4, 0, 0, 4, NULL), TIER_ENOTFOUND);
    tier_decision *d = NULL;
    size_t n = 0;
    assert_int_equal(summarize(c, 4, 1, 0, NULL, 0, &d, &n), TIER_OK);
    assert_int_equal(n, st.level[TIER_DROPPED].blocks);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(d[i].kind, POLICY_DROP);
    tier_buf_free(d);
    assert_int_equal(summarize(c, 4, 2, 0, NULL, 0, &d, &n), TIER_OK);
    assert_int_equal(n, 0); /* reported once */
    tier_close(c->t);
    c->t = NULL;
    c->o.ssd_budget = BB / 2;
    open_store(c);
    assert_int_equal(put(c, "w", 4, 0, 20, 4, NULL), TIER_EFULL);
    assert_non_null(strstr(c->err, "SSD budget"));
}

static void test_close_and_admin(void **state) {
    ctx *c = *state;
    open_store(c);
    seq_open(c, "a", 1, 2);
    seq_open(c, "a", 2, 2);
    seq_open(c, "b", 1, 2);
    for (uint32_t b = 0; b < 8; b++) {
        assert_int_equal(put(c, "a", 1, 0, b, 5, NULL), TIER_OK);
        assert_int_equal(put(c, "a", 1, 1, b, 5, NULL), TIER_OK);
        assert_int_equal(put(c, "a", 2, 0, b, 6, NULL), TIER_OK);
    }
    uint64_t moved = 0;
    assert_int_equal(tier_evict(c->t, "a", 1, 1, TIER_SSD, &moved, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(moved, 8);
    int where;
    assert_int_equal(fetch_check(c, "a", 1, 1, 3, 5, &where), TIER_OK);
    assert_int_equal(where, TIER_SSD);
    assert_int_equal(fetch_check(c, "a", 1, 0, 3, 5, &where), TIER_OK);
    assert_int_equal(where, TIER_HOST);
    assert_int_equal(tier_evict(c->t, "a", 1, 5, TIER_SSD, &moved, c->err, sizeof c->err),
                     TIER_EINVAL);
    assert_int_equal(tier_evict(c->t, "a", 1, -1, TIER_HOT, &moved, c->err, sizeof c->err),
                     TIER_EINVAL);
    assert_int_equal(tier_drain(c->t, &moved, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(moved, 16);
    tier_stats st;
    tier_stats_get(c->t, &st);
    assert_int_equal(st.level[TIER_HOST].blocks, 0);
    assert_int_equal(st.level[TIER_SSD].blocks, 24);
    assert_int_equal(st.sequences_open, 3);
    assert_int_equal(tier_health(c->t, c->err, sizeof c->err), TIER_OK);
    /* list by tenant */
    tier_seq_desc *list;
    size_t n;
    assert_int_equal(tier_seq_list(c->t, "a", &list, &n, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(n, 2);
    assert_int_equal(list[0].seq, 1);
    assert_int_equal(list[1].seq, 2);
    tier_buf_free(list);
    /* close: a/1 retained, a/2 deleted */
    assert_int_equal(tier_seq_close(c->t, "a", 1, 1, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(tier_seq_close(c->t, "a", 2, 0, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(tier_seq_close(c->t, "a", 2, 0, c->err, sizeof c->err), TIER_ENOTFOUND);
    assert_int_equal(put(c, "a", 1, 0, 9, 5, NULL), TIER_ENOTFOUND); /* closed */
    assert_non_null(strstr(c->err, "closed"));
    reopen(c);
    assert_int_equal(fetch_check(c, "a", 1, 0, 2, 5, NULL), TIER_OK);
    assert_int_equal(fetch_check(c, "a", 2, 0, 2, 6, NULL), TIER_ENOTFOUND);
    tier_stats_get(c->t, &st);
    assert_int_equal(st.sequences_open, 1);
    assert_int_equal(st.sequences_retained, 1);
    assert_int_equal(st.level[TIER_SSD].blocks, 16);
    tier_seq_desc sd;
    assert_int_equal(tier_seq_get(c->t, "a", 1, &sd, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(sd.open, 0);
    assert_int_equal(sd.blocks[TIER_DROPPED], 0);
    seq_open(c, "a", 1, 2); /* reopen a retained sequence */
    assert_int_equal(tier_seq_get(c->t, "a", 1, &sd, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(sd.open, 1);
    assert_int_equal(tier_evict(c->t, "a", 1, -1, TIER_DROPPED, &moved, c->err, sizeof c->err),
                     TIER_OK);
    assert_int_equal(moved, 16);
    assert_int_equal(fetch_check(c, "a", 1, 0, 2, 5, NULL), TIER_ENOTFOUND);
    reopen(c); /* drops survive a restart */
    assert_int_equal(fetch_check(c, "a", 1, 0, 2, 5, NULL), TIER_ENOTFOUND);
    assert_int_equal(tier_seq_get(c->t, "a", 1, &sd, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(sd.blocks[TIER_DROPPED], 16);
}

/* A summary's RocksDB work runs after it released the lock (tier_summarize:
 * decide under the lock, write and read outside, publish after). Write-back
 * RAM blocks moved to SSD by a sequence host budget stay readable from RAM
 * until their deferred write landed, and are on SSD after a restart; an SSD
 * block revived twice is read outside the lock and published into RAM. */
static void test_deferred_summary_io(void **state) {
    ctx *c = *state;
    c->o.write_policy = TIER_WRITE_BACK;
    open_store(c);
    policy_params pp;
    policy_params_init(&pp);
    pp.host_budget_bytes = 2 * BB;
    tier_seq_info i = shape(1);
    i.params = &pp;
    assert_int_equal(tier_seq_open(c->t, "w", 7, &i, c->err, sizeof c->err), TIER_OK);
    for (uint32_t b = 4; b < 10; b++)
        assert_int_equal(put(c, "w", 7, 0, b, 3, NULL), TIER_OK);
    uint32_t act[2] = {0, 1};
    tier_layer_summary ls[1] = {{.layer = 0, .active = act, .n_active = 2}};
    tier_decision *d = NULL;
    size_t n = 0;
    assert_int_equal(summarize(c, 7, 20, 10, ls, 1, &d, &n), TIER_OK);
    size_t nssd = 0;
    for (size_t k = 0; k < n; k++)
        nssd += d[k].kind == POLICY_DEMOTE_SSD;
    tier_buf_free(d);
    assert_int_equal(nssd, 4); /* 6 in RAM, budget 2: written back to RocksDB */
    int where = -1, on_ssd = 0;
    for (uint32_t b = 4; b < 10; b++) {
        assert_int_equal(fetch_check(c, "w", 7, 0, b, 3, &where), TIER_OK);
        on_ssd += where == TIER_SSD;
    }
    assert_int_equal(on_ssd, 4); /* the RAM copies went once the SSD copies landed */
    /* an SSD block revived in two windows comes back into RAM (prefetch: read
     * outside the lock, published after) */
    seq_open(c, "w", 8, 1);
    assert_int_equal(put(c, "w", 8, 0, 5, 6, NULL), TIER_OK);
    uint64_t moved = 0;
    assert_int_equal(tier_evict(c->t, "w", 8, 0, TIER_SSD, &moved, c->err, sizeof c->err), TIER_OK);
    assert_int_equal(moved, 1);
    assert_int_equal(fetch_check(c, "w", 8, 0, 5, 6, &where), TIER_OK);
    assert_int_equal(where, TIER_SSD);
    uint32_t rev[1] = {5};
    tier_layer_summary lr[1] = {{.layer = 0, .revived = rev, .n_revived = 1}};
    int prefetched = 0;
    for (uint64_t step = 40; step <= 60; step += 20) {
        assert_int_equal(summarize(c, 8, step, 8, lr, 1, &d, &n), TIER_OK);
        for (size_t k = 0; k < n; k++)
            prefetched += d[k].kind == POLICY_PREFETCH && d[k].block == 5;
        tier_buf_free(d);
    }
    assert_int_equal(prefetched, 1);
    assert_int_equal(fetch_check(c, "w", 8, 0, 5, 6, &where), TIER_OK);
    assert_int_equal(where, TIER_HOST);
    reopen(c); /* every deferred write landed: all six are there after a restart */
    for (uint32_t b = 4; b < 10; b++)
        assert_int_equal(fetch_check(c, "w", 7, 0, b, 3, NULL), TIER_OK);
}

/* Summaries (recalls: deferred deletes; new blocks: deferred records) on one
 * sequence while other threads put and fetch on another: nothing fails,
 * nothing is lost (ThreadSanitizer runs this too). */
typedef struct sumthr {
    ctx *c;
    int fails;
} sumthr;

static void *summarizer(void *arg) {
    sumthr *z = arg;
    char err[256];
    uint8_t *buf = malloc(BB);
    for (uint32_t round = 0; round < 40; round++) {
        uint32_t b = round % 8;
        tt_pattern(buf, BB, 0, b, 4);
        tier_block_key k = {"s", 9, 0, b};
        if (tier_put(z->c->t, &k, buf, BB, tier_crc32c(0, buf, BB), 16, NULL, err, sizeof err) !=
            TIER_OK)
            z->fails++;
        uint32_t rec[1] = {b}, act[1] = {b};
        tier_layer_summary ls[1] = {
            {.layer = 0, .active = act, .n_active = 1, .recalled = rec, .n_recalled = 1}};
        tier_summary s = {.step = 16 * (round + 1), .n_blocks = 8, .layers = ls, .n_layers = 1};
        tier_decision *d = NULL;
        size_t n = 0;
        if (tier_summarize(z->c->t, "s", 9, &s, &d, &n, err, sizeof err) != TIER_OK)
            z->fails++;
        tier_buf_free(d);
        void *p = NULL;
        size_t len = 0;
        if (tier_fetch(z->c->t, &k, &p, &len, NULL, NULL, err, sizeof err) != TIER_ENOTFOUND)
            z->fails++;
        tier_buf_free(p); /* recalled: the stored copy is released */
    }
    free(buf);
    return NULL;
}

typedef struct thr {
    ctx *c;
    uint32_t layer;
    int fails;
} thr;

static void *worker(void *arg) {
    thr *w = arg;
    uint8_t *buf = malloc(BB);
    char err[256];
    for (uint32_t b = 0; b < 100; b++) {
        tt_pattern(buf, BB, w->layer, b, 8);
        tier_block_key k = {"c", 1, w->layer, b};
        if (tier_put(w->c->t, &k, buf, BB, tier_crc32c(0, buf, BB), 16, NULL, err, sizeof err) !=
            TIER_OK)
            w->fails++;
        if (b >= 10) { /* read back an older one while others write */
            k.block = b - 10;
            void *d = NULL;
            size_t n = 0;
            tt_pattern(buf, BB, w->layer, b - 10, 8);
            if (tier_fetch(w->c->t, &k, &d, &n, NULL, NULL, err, sizeof err) != TIER_OK ||
                n != BB || memcmp(d, buf, BB) != 0)
                w->fails++;
            tier_buf_free(d);
        }
    }
    free(buf);
    return NULL;
}

static void run_threads(ctx *c) {
    c->o.host_budget = 64 * BB; /* constant eviction */
    open_store(c);
    seq_open(c, "c", 1, 4);
    seq_open(c, "s", 9, 1);
    pthread_t th[4], zt;
    thr w[4];
    sumthr z = {c, 0};
    pthread_create(&zt, NULL, summarizer, &z);
    for (int i = 0; i < 4; i++) {
        w[i] = (thr){c, (uint32_t)i, 0};
        pthread_create(&th[i], NULL, worker, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].fails, 0);
    }
    pthread_join(zt, NULL);
    assert_int_equal(z.fails, 0);
    tier_stats st;
    tier_stats_get(c->t, &st);
    assert_int_equal(st.level[TIER_HOST].blocks + st.level[TIER_SSD].blocks, 400);
}

/* Four writers and a summarizer: RAM eviction and summaries write RocksDB
 * after releasing the lock (write-through, then write-back: moving RAM
 * blocks to SSD keeps them readable until their copy landed). */
static void test_threads(void **state) {
    run_threads(*state);
}

static void test_threads_write_back(void **state) {
    ctx *c = *state;
    c->o.write_policy = TIER_WRITE_BACK;
    run_threads(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_many_blocks_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corruption, setup, teardown),
        cmocka_unit_test_setup_teardown(test_summary_cycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sequence_budgets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_global_ssd_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_and_admin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deferred_summary_io, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_write_back, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
