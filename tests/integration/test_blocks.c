/* test_blocks.c — end to end block flow against a real kvtierd:
 * open a sequence, a summary makes blocks inactive, the service leaves the
 * hot pool to the worker (no DEMOTE_HOST), the "worker" (this test) expires
 * them by the shared policy (policy_hot_expired) and puts those 1004 blocks of 64 KiB
 * (random bytes, correct crc32c); a small host budget pushes most to SSD;
 * every block fetches back byte-identical from the tier the map says; and
 * `kvtierctl stats --json` / `map --json` / `map --plain` agree with what
 * was sent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "ctl_map.h"
#include "itest.h"
#include "policy.h"

#define BLOCK (64 * 1024)
#define LAYERS 4
#define NBLK 256
#define SEQ 1001ull

static itest_server g_srv;

static int setup(void **state) {
    (void)state;
    static const char *flags[] = {"--host-budget", "8MiB", NULL};
    return itest_server_start(&g_srv, flags);
}

static int teardown(void **state) {
    (void)state;
    itest_server_stop(&g_srv);
    return 0;
}

/* Sends one summary where only `active` blocks (per layer) were active. */
static kvtier_decisions summarize(kvtier_summarize_stream *z, uint64_t step, const uint32_t *active,
                                  size_t n_active) {
    kvtier_layer_summary ls[LAYERS];
    memset(ls, 0, sizeof ls);
    for (uint32_t l = 0; l < LAYERS; l++) {
        ls[l].layer = l;
        ls[l].active = active;
        ls[l].n_active = n_active;
        ls[l].block_count = NBLK;
    }
    kvtier_summary s = {step, ls, LAYERS};
    kvtier_decisions d;
    kvtier_error e;
    kvtier_code code = kvtier_summarize_send(z, &s, &d, &e);
    if (code != KVTIER_OK)
        fprintf(stderr, "summarize: %s: %s\n", kvtier_code_name(code), e.message);
    assert_int_equal(code, KVTIER_OK);
    assert_int_equal(d.step, step);
    return d;
}

typedef struct {
    const kvtier_tier_map *map;
    size_t got, bad;
    uint8_t *buf;
} fetch_ctx;

static int on_block(const kvtier_fetched *b, void *user) {
    fetch_ctx *f = user;
    itest_payload(f->buf, BLOCK, SEQ, b->layer, b->block, 0);
    if (b->len != BLOCK || memcmp(b->payload, f->buf, BLOCK) != 0) {
        fprintf(stderr, "block (%u,%u): payload differs\n", b->layer, b->block);
        f->bad++;
    }
    uint8_t want = f->map->tiers[(size_t)b->layer * f->map->n_blocks + b->block];
    if (b->tier != (kvtier_tier)want) {
        fprintf(stderr, "block (%u,%u): served from %s, map says %s\n", b->layer, b->block,
                kvtier_tier_name(b->tier), kvtier_tier_name(want));
        f->bad++;
    }
    f->got++;
    return 0;
}

static double jnum(cJSON *o, const char *a, const char *b) {
    cJSON *x = cJSON_GetObjectItem(o, a);
    if (b)
        x = cJSON_GetObjectItem(x, b);
    assert_non_null(x);
    return x->valuedouble;
}

static cJSON *ctl_json(const char *cmd, const char *arg) {
    const char *argv[] = {itest_kvtierctl(), "--server", g_srv.addr, "--json", cmd, arg, NULL};
    char *out = NULL, *err = NULL;
    int rc = itest_run(argv, &out, &err);
    if (rc != 0)
        fprintf(stderr, "kvtierctl %s: exit %d: %s\n", cmd, rc, err);
    assert_int_equal(rc, 0);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    free(out);
    free(err);
    return j;
}

static void test_put_demote_fetch(void **state) {
    (void)state;
    kvtier_client *c = itest_client(&g_srv, NULL);
    kvtier_error e;
    kvtier_seq_shape sh = {0};
    sh.sequence_id = SEQ;
    sh.layers = LAYERS;
    sh.kv_heads = 8;
    sh.head_dim = 128;
    sh.block_tokens = 16;
    sh.block_bytes = BLOCK;
    sh.hot_inactive_steps = 50;
    sh.recent_blocks = 4;
    sh.sink_blocks = 1;
    kvtier_open_result orr;
    assert_int_equal(kvtier_open_sequence(c, &sh, &orr, &e), KVTIER_OK);
    assert_int_equal(orr.created, 1);

    /* Window 1: every block active at step 16; nothing to demote yet. */
    kvtier_summarize_stream *z = kvtier_summarize_open(c, SEQ, &e);
    assert_non_null(z);
    uint32_t all[NBLK];
    for (uint32_t b = 0; b < NBLK; b++)
        all[b] = b;
    kvtier_decisions d = summarize(z, 16, all, NBLK);
    assert_int_equal(d.n, 0);
    kvtier_free(d.d);

    /* Window 2 at step 200: only the last 4 blocks active. The service
     * decides nothing about HOT blocks; the worker expires every other
     * unprotected block (not the sink, not the last R=4): idle since 16. */
    d = summarize(z, 200, all + NBLK - 4, 4);
    for (size_t i = 0; i < d.n; i++)
        assert_int_not_equal(d.d[i].kind, KVTIER_DECISION_DEMOTE_HOST);
    kvtier_free(d.d);
    policy_params pp;
    policy_params_init(&pp);
    size_t expect = (size_t)LAYERS * (NBLK - 1 - 4);
    kvtier_block_ref *dem = calloc(expect + 1, sizeof *dem);
    size_t n_dem = 0;
    for (uint32_t l = 0; l < LAYERS; l++)
        for (uint32_t b = 0; b < NBLK; b++) {
            policy_hot_key k = {b >= NBLK - 4 ? 200 : 16, 0.0f};
            if (!policy_is_protected(&pp, NBLK, b) && policy_hot_expired(&pp, 200, &k))
                dem[n_dem++] = (kvtier_block_ref){l, b};
        }
    assert_int_equal(n_dem, expect);

    /* The worker puts every demoted block, 128 per PutBlocks stream. */
    uint8_t *buf = malloc(BLOCK);
    size_t acked = 0, on_host = 0, on_ssd = 0, i = 0;
    while (i < n_dem) {
        kvtier_put_stream *p = kvtier_put_open(c, SEQ, &e);
        assert_non_null(p);
        size_t sent = 0;
        for (; i < n_dem && sent < 128; i++) {
            itest_payload(buf, BLOCK, SEQ, dem[i].layer, dem[i].block, 0);
            kvtier_block b = {dem[i].layer, dem[i].block, buf, BLOCK, 0, 0, 16, KVTIER_TIER_ABSENT};
            assert_int_equal(kvtier_put_send(p, &b, &e), KVTIER_OK);
            sent++;
        }
        kvtier_put_result r;
        kvtier_code code = kvtier_put_finish(p, &r, &e);
        if (code != KVTIER_OK)
            fprintf(stderr, "put: %s\n", e.message);
        assert_int_equal(code, KVTIER_OK);
        assert_int_equal(r.acked, sent);
        acked += r.acked;
        for (size_t k = 0; k < r.n_acks; k++) {
            on_host += r.acks[k].tier == KVTIER_TIER_HOST;
            on_ssd += r.acks[k].tier == KVTIER_TIER_SSD;
        }
        kvtier_put_result_free(&r);
    }
    assert_int_equal(acked, expect);
    assert_true(on_host + on_ssd == expect || on_host + on_ssd == 0); /* acks list optional */
    free(dem);

    /* Window 3: the service sees the HOST overflow (8 MiB = 128 blocks). */
    d = summarize(z, 216, all + NBLK - 4, 4);
    kvtier_free(d.d);
    assert_int_equal(kvtier_summarize_finish(z, &e), KVTIER_OK);

    /* Map: HOT = sink + recent per layer; HOST within budget; rest on SSD. */
    kvtier_tier_map m;
    assert_int_equal(kvtier_tier_map_get(c, SEQ, &m, &e), KVTIER_OK);
    assert_int_equal(m.n_layers, LAYERS);
    assert_int_equal(m.n_blocks, NBLK);
    uint64_t hot = kvtier_tier_map_count(&m, KVTIER_TIER_HOT);
    uint64_t host = kvtier_tier_map_count(&m, KVTIER_TIER_HOST);
    uint64_t ssd = kvtier_tier_map_count(&m, KVTIER_TIER_SSD);
    fprintf(stderr, "map: HOT %llu HOST %llu SSD %llu\n", (unsigned long long)hot,
            (unsigned long long)host, (unsigned long long)ssd);
    assert_int_equal(hot, LAYERS * 5);
    assert_int_equal(host + ssd, expect);
    assert_true(host <= 128);
    assert_true(ssd >= expect - 128);
    for (uint32_t l = 0; l < LAYERS; l++) {
        assert_int_equal(m.tiers[l * NBLK + 0], KVTIER_TIER_HOT);
        for (uint32_t b = NBLK - 4; b < NBLK; b++)
            assert_int_equal(m.tiers[l * NBLK + b], KVTIER_TIER_HOT);
    }

    /* Fetch everything back, byte-identical, from the tier the map says. */
    kvtier_block_ref *refs = calloc(expect, sizeof *refs);
    size_t nr = 0;
    for (uint32_t l = 0; l < LAYERS; l++)
        for (uint32_t b = 1; b < NBLK - 4; b++)
            refs[nr++] = (kvtier_block_ref){l, b};
    fetch_ctx f = {&m, 0, 0, buf};
    size_t got = 0;
    kvtier_code code = kvtier_fetch_blocks(c, SEQ, refs, nr, on_block, &f, &got, &e);
    if (code != KVTIER_OK)
        fprintf(stderr, "fetch: %s\n", e.message);
    assert_int_equal(code, KVTIER_OK);
    assert_int_equal(got, expect);
    assert_int_equal(f.bad, 0);

    /* kvtierctl stats --json agrees with the map and with what was sent. */
    cJSON *st = ctl_json("stats", NULL);
    assert_int_equal((uint64_t)jnum(cJSON_GetObjectItem(st, "tiers"), "HOST", "blocks"), host);
    assert_int_equal((uint64_t)jnum(cJSON_GetObjectItem(st, "tiers"), "SSD", "blocks"), ssd);
    assert_int_equal((uint64_t)jnum(cJSON_GetObjectItem(st, "tiers"), "HOST", "bytes"),
                     host * BLOCK);
    assert_true(jnum(cJSON_GetObjectItem(st, "tiers"), "HOST", "bytes") <= 8.0 * 1024 * 1024);
    assert_int_equal((uint64_t)jnum(st, "checksum_failures", NULL), 0);
    assert_int_equal((uint64_t)jnum(st, "decisions", "DEMOTE_HOST"), 0);
    assert_int_equal((uint64_t)jnum(st, "sequences", NULL), 1);
    cJSON_Delete(st);

    /* kvtierctl map --json: same counts, row by row. */
    cJSON *mj = ctl_json("map", "1001");
    assert_int_equal((uint64_t)jnum(mj, "counts", "HOT"), hot);
    assert_int_equal((uint64_t)jnum(mj, "counts", "HOST"), host);
    assert_int_equal((uint64_t)jnum(mj, "counts", "SSD"), ssd);
    assert_int_equal((uint64_t)jnum(mj, "counts", "DROPPED"), 0);
    cJSON *rows = cJSON_GetObjectItem(mj, "rows");
    assert_int_equal(cJSON_GetArraySize(rows), LAYERS);
    for (int l = 0; l < LAYERS; l++) {
        const char *cells = cJSON_GetObjectItem(cJSON_GetArrayItem(rows, l), "cells")->valuestring;
        assert_int_equal(strlen(cells), NBLK);
        for (uint32_t b = 0; b < NBLK; b++)
            assert_int_equal(cells[b], ctl_map_char(m.tiers[l * NBLK + b]));
    }
    cJSON_Delete(mj);

    /* kvtierctl map (stdout is a pipe -> plain characters). */
    const char *argv[] = {itest_kvtierctl(), "--server", g_srv.addr, "map", "1001", NULL};
    char *out = NULL, *err = NULL;
    assert_int_equal(itest_run(argv, &out, &err), 0);
    assert_null(strchr(out, '\x1b'));
    size_t nh = 0, nho = 0, ns = 0;
    for (const char *p = out; *p; p++)
        if (!strncmp(p, "\nL", 2)) { /* a layer row: count its cells */
            const char *q = p + 2;
            while (*q && *q != ' ')
                q++;
            while (*q == ' ')
                q++;
            for (; *q && *q != '\n'; q++) {
                nh += *q == '#';
                nho += *q == 'h';
                ns += *q == 's';
            }
        }
    assert_int_equal(nh, hot);
    assert_int_equal(nho, host);
    assert_int_equal(ns, ssd);
    free(out);
    free(err);

    /* Listing shows the sequence with the same per-tier counts. */
    kvtier_seq_info *v = NULL;
    size_t n = 0;
    assert_int_equal(kvtier_list_sequences(c, NULL, &v, &n, &e), KVTIER_OK);
    int found = 0;
    for (size_t k = 0; k < n; k++)
        if (v[k].sequence_id == SEQ) {
            found = 1;
            assert_int_equal(v[k].blocks[KVTIER_TIER_SSD], ssd);
            assert_int_equal(v[k].blocks[KVTIER_TIER_HOST], host);
            assert_int_equal(v[k].layers, LAYERS);
        }
    assert_true(found);
    kvtier_free(v);

    free(refs);
    free(buf);
    kvtier_tier_map_free(&m);
    kvtier_client_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_put_demote_fetch)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
