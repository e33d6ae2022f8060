/* cluster_check.c — checks a running kvtier cluster (ops/cluster.sh up) from
 * the outside, through its nginx load balancer:
 *   - sequences opened through the tier LB each live on exactly one shard
 *     (kvtierctl --server SHARD --json sequences on every shard), and the
 *     consistent hash spreads them over all shards;
 *   - blocks put through the LB come back byte for byte through the LB, also
 *     a multi-MiB PutBlocks stream (nginx must not cap a stream's body);
 *   - a reopen through the LB finds the sequence (same shard), Admin calls
 *     that carry the sequence (GetTierMap) reach its shard, Summarize (bidi)
 *     streams through nginx;
 *   - with a worker: Generate through the client LB completes with blocks
 *     demoted, and its sequence lands on exactly one shard;
 *   - last: a killed shard's sequences get UNAVAILABLE through the LB, never
 *     another shard's answer; the live shard's are still served.
 * Usage: cluster_check RUNDIR/cluster.env   (run by cluster_test.sh)
 * KVTIERCTL_PATH and EXAMPLE_GENERATE_PATH come from the build. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "itest.h"
#include "kvtier.h"

#define MAX_SHARDS 8
#define N_SEQ 12      /* sequences spread over the shards */
#define SEQ_BASE 7000 /* their ids: SEQ_BASE + k (small: JSON numbers are doubles) */
#define LAYERS 2
#define NBLK 3
#define BLOCK 4096
#define BIG_SEQ 9001 /* the multi-MiB stream */
#define BIG_NBLK 64
#define BIG_BLOCK (64 * 1024)
#define GEN_SEQ 4242 /* the worker's generation */

/* The cluster under test, from cluster.env. */
static char g_client_lb[64], g_tier_lb[64];
static char g_shards[MAX_SHARDS][64]; /* shard i = RUNDIR/shard-i */
static int g_nshards;
static char g_rundir[512];
static int g_has_worker;

/* ---------------------------------------------------------------- setup */

/* env_value: copies the value of KEY=VALUE / KEY="VALUE" from text. */
static int env_value(const char *text, const char *key, char *out, size_t len) {
    size_t kl = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, key, kl) != 0 || p[kl] != '=')
            continue;
        const char *v = p + kl + 1, *e = strchr(v, '\n');
        size_t n = e ? (size_t)(e - v) : strlen(v);
        if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
            v++;
            n -= 2;
        }
        if (n >= len)
            return -1;
        memcpy(out, v, n);
        out[n] = '\0';
        return 0;
    }
    return -1;
}

static int load_env(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cluster_check: cannot open %s\n", path);
        return -1;
    }
    static char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char shards[1024], workers[1024];
    if (env_value(text, "KVTIER_CLIENT_LB", g_client_lb, sizeof g_client_lb) ||
        env_value(text, "KVTIER_TIER_LB", g_tier_lb, sizeof g_tier_lb) ||
        env_value(text, "KVTIER_SHARDS", shards, sizeof shards) ||
        env_value(text, "KVTIER_WORKERS", workers, sizeof workers) ||
        env_value(text, "KVTIER_RUNDIR", g_rundir, sizeof g_rundir)) {
        fprintf(stderr, "cluster_check: %s lacks a KVTIER_* address\n", path);
        return -1;
    }
    for (char *save = NULL, *t = strtok_r(shards, " ", &save); t && g_nshards < MAX_SHARDS;
         t = strtok_r(NULL, " ", &save))
        snprintf(g_shards[g_nshards++], sizeof g_shards[0], "%s", t);
    g_has_worker = workers[0] != '\0';
    return g_nshards >= 2 ? 0 : -1;
}

/* ---------------------------------------------------------------- helpers */

static kvtier_client *connect_to(const char *addr) {
    kvtier_connect_opts o = {0};
    o.address = addr;
    o.timeout_ms = 10000;
    o.stream_timeout_ms = 30000;
    o.max_msg_bytes = 8u << 20;
    kvtier_error e;
    kvtier_client *c = kvtier_connect(&o, &e);
    if (!c)
        fail_msg("connect %s: %s", addr, e.message);
    return c;
}

static void open_seq(kvtier_client *c, uint64_t seq, uint64_t block_bytes, int *created) {
    kvtier_seq_shape sh = {0};
    sh.sequence_id = seq;
    sh.layers = LAYERS;
    sh.kv_heads = 1;
    sh.head_dim = (uint32_t)(block_bytes / 64); /* 16 tokens x 1 head x 2 (K,V) x bf16 */
    sh.block_tokens = 16;
    sh.block_bytes = block_bytes;
    sh.retain_on_close = 1;
    kvtier_open_result r;
    kvtier_error e;
    kvtier_code code = kvtier_open_sequence(c, &sh, &r, &e);
    if (code != KVTIER_OK)
        fail_msg("OpenSequence %llu via LB: %s", (unsigned long long)seq, e.message);
    *created = r.created;
}

static void put_seq(kvtier_client *c, uint64_t seq, uint32_t nblk, size_t len) {
    kvtier_put_stream *s = kvtier_put_open(c, seq, NULL);
    assert_non_null(s);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    kvtier_error e;
    for (uint32_t l = 0; l < LAYERS; l++)
        for (uint32_t b = 0; b < nblk; b++) {
            itest_payload(buf, len, seq, l, b, 1);
            kvtier_block blk = {0};
            blk.layer = l;
            blk.block = b;
            blk.payload = buf;
            blk.len = len;
            blk.target = KVTIER_TIER_HOST;
            kvtier_code code = kvtier_put_send(s, &blk, &e);
            if (code != KVTIER_OK) {
                free(buf);
                kvtier_put_abort(s);
                fail_msg("PutBlocks %llu via LB: %s", (unsigned long long)seq, e.message);
            }
        }
    free(buf);
    kvtier_put_result r;
    kvtier_code code = kvtier_put_finish(s, &r, &e);
    if (code != KVTIER_OK)
        fail_msg("PutBlocks %llu via LB finish: %s", (unsigned long long)seq, e.message);
    assert_int_equal(r.acked, LAYERS * nblk);
    kvtier_put_result_free(&r);
}

typedef struct fetch_ctx {
    uint64_t seq;
    size_t len;
    int bad;
    uint8_t *want;
} fetch_ctx;

static int on_block(const kvtier_fetched *b, void *user) {
    fetch_ctx *f = user;
    itest_payload(f->want, f->len, f->seq, b->layer, b->block, 1);
    if (b->len != f->len || memcmp(b->payload, f->want, f->len) != 0)
        f->bad++;
    return 0;
}

/* fetch_seq: every block of seq through c; asserts all came back intact. */
static void fetch_seq(kvtier_client *c, uint64_t seq, uint32_t nblk, size_t len) {
    kvtier_block_ref refs[LAYERS * BIG_NBLK];
    size_t n = 0;
    for (uint32_t l = 0; l < LAYERS; l++)
        for (uint32_t b = 0; b < nblk; b++)
            refs[n++] = (kvtier_block_ref){l, b};
    fetch_ctx f = {seq, len, 0, malloc(len)};
    assert_non_null(f.want);
    size_t got = 0;
    kvtier_error e;
    kvtier_code code = kvtier_fetch_blocks(c, seq, refs, n, on_block, &f, &got, &e);
    free(f.want);
    if (code != KVTIER_OK)
        fail_msg("FetchBlocks %llu via LB: %s", (unsigned long long)seq, e.message);
    assert_int_equal(got, n);
    assert_int_equal(f.bad, 0);
}

/* shard_sequences: runs `kvtierctl --server SHARD --json sequences`; returns
 * the parsed JSON (caller frees). */
static cJSON *shard_sequences(const char *shard) {
    const char *argv[] = {KVTIERCTL_PATH, "--server", shard, "--json", "sequences", NULL};
    char *out = NULL, *err = NULL;
    int rc = itest_run(argv, &out, &err);
    if (rc != 0)
        fail_msg("kvtierctl --server %s sequences: exit %d: %s", shard, rc, err ? err : "");
    cJSON *j = cJSON_Parse(out);
    free(out);
    free(err);
    assert_non_null(j);
    assert_true(cJSON_IsArray(cJSON_GetObjectItem(j, "sequences")));
    return j;
}

/* owners: for each id in ids[n], how many shards hold it (holders[k]) and on
 * which shard it was last seen (where[k]); per_shard[s] = how many of ids. */
static void owners(const uint64_t *ids, int n, int *holders, int *where, int *per_shard) {
    memset(holders, 0, sizeof(int) * (size_t)n);
    for (int s = 0; s < g_nshards; s++) {
        per_shard[s] = 0;
        cJSON *j = shard_sequences(g_shards[s]);
        cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "sequences")) {
            cJSON *id = cJSON_GetObjectItem(it, "sequence_id");
            assert_true(cJSON_IsNumber(id));
            for (int k = 0; k < n; k++)
                if ((uint64_t)id->valuedouble == ids[k]) {
                    holders[k]++;
                    where[k] = s;
                    per_shard[s]++;
                }
        }
        cJSON_Delete(j);
    }
}

/* ---------------------------------------------------------------- tests */

static void test_lb_health(void **state) {
    (void)state;
    kvtier_client *c = connect_to(g_tier_lb);
    kvtier_health h;
    kvtier_error e;
    assert_int_equal(kvtier_health_check(c, &h, &e), KVTIER_OK);
    assert_string_equal(h.status, "SERVING");
    kvtier_client_free(c);
}

static void test_sequences_spread_one_shard_each(void **state) {
    (void)state;
    kvtier_client *lb = connect_to(g_tier_lb);
    uint64_t ids[N_SEQ];
    for (int k = 0; k < N_SEQ; k++) {
        ids[k] = SEQ_BASE + (uint64_t)k;
        int created;
        open_seq(lb, ids[k], BLOCK, &created);
        assert_int_equal(created, 1);
        put_seq(lb, ids[k], NBLK, BLOCK);
    }
    int holders[N_SEQ], where[N_SEQ], per_shard[MAX_SHARDS];
    owners(ids, N_SEQ, holders, where, per_shard);
    for (int k = 0; k < N_SEQ; k++)
        if (holders[k] != 1)
            fail_msg("sequence %llu is on %d shards (want exactly 1)", (unsigned long long)ids[k],
                     holders[k]);
    for (int s = 0; s < g_nshards; s++) {
        printf("shard %s holds %d of the %d sequences\n", g_shards[s], per_shard[s], N_SEQ);
        if (per_shard[s] == 0)
            fail_msg("shard %s got none of %d sequences: the LB does not spread", g_shards[s],
                     N_SEQ);
    }

    /* Bytes back through the LB; a reopen finds the sequence (same shard). */
    for (int k = 0; k < N_SEQ; k++) {
        fetch_seq(lb, ids[k], NBLK, BLOCK);
        int created;
        open_seq(lb, ids[k], BLOCK, &created);
        assert_int_equal(created, 0);
    }

    /* The owning shard, asked directly, has the blocks; another does not. */
    kvtier_client *own = connect_to(g_shards[where[0]]);
    fetch_seq(own, ids[0], NBLK, BLOCK);
    kvtier_client_free(own);
    kvtier_client *other = connect_to(g_shards[(where[0] + 1) % g_nshards]);
    kvtier_tier_map m;
    kvtier_error e;
    assert_int_equal(kvtier_tier_map_get(other, ids[0], &m, &e), KVTIER_NOT_FOUND);
    kvtier_client_free(other);

    /* Admin calls with the sequence id reach its shard through the LB. */
    for (int k = 0; k < N_SEQ; k++) {
        if (kvtier_tier_map_get(lb, ids[k], &m, &e) != KVTIER_OK)
            fail_msg("GetTierMap %llu via LB: %s", (unsigned long long)ids[k], e.message);
        assert_int_equal(kvtier_tier_map_count(&m, KVTIER_TIER_HOST), LAYERS * NBLK);
        kvtier_tier_map_free(&m);
    }
    kvtier_client_free(lb);
}

static void test_big_stream_through_lb(void **state) {
    (void)state;
    kvtier_client *lb = connect_to(g_tier_lb);
    int created;
    open_seq(lb, BIG_SEQ, BIG_BLOCK, &created);
    put_seq(lb, BIG_SEQ, BIG_NBLK, BIG_BLOCK); /* 8 MiB in one PutBlocks stream */
    fetch_seq(lb, BIG_SEQ, BIG_NBLK, BIG_BLOCK);
    kvtier_client_free(lb);
}

static void test_summarize_through_lb(void **state) {
    (void)state;
    kvtier_client *lb = connect_to(g_tier_lb);
    const uint64_t seq = SEQ_BASE + 1;
    kvtier_error e;
    kvtier_summarize_stream *z = kvtier_summarize_open(lb, seq, &e);
    assert_non_null(z);
    uint32_t active[NBLK] = {0, 1, 2};
    kvtier_layer_summary ls[LAYERS] = {{0}};
    for (uint32_t l = 0; l < LAYERS; l++) {
        ls[l].layer = l;
        ls[l].active = active;
        ls[l].n_active = NBLK;
        ls[l].block_count = NBLK;
    }
    for (uint64_t step = 16; step <= 48; step += 16) {
        kvtier_summary sum = {step, ls, LAYERS};
        kvtier_decisions d = {0};
        if (kvtier_summarize_send(z, &sum, &d, &e) != KVTIER_OK)
            fail_msg("Summarize step %llu via LB: %s", (unsigned long long)step, e.message);
        assert_int_equal(d.step, step);
        kvtier_free(d.d);
    }
    assert_int_equal(kvtier_summarize_finish(z, &e), KVTIER_OK);
    kvtier_client_free(lb);
}

/* A prompt long enough for the worker to demote blocks at a 20% hot budget:
 * the first recall prompt of the fixture when present, else a synthetic list. */
static char *gen_prompt(void) {
    FILE *f = fopen(FIXTURE_PROMPTS, "r");
    if (f) {
        static char line[1 << 16];
        char *ok = fgets(line, sizeof line, f);
        fclose(f);
        cJSON *j = ok ? cJSON_Parse(line) : NULL;
        cJSON *p = cJSON_GetObjectItem(j, "prompt");
        char *s = cJSON_IsString(p) ? strdup(p->valuestring) : NULL;
        cJSON_Delete(j);
        if (s)
            return s;
    }
    size_t cap = 8192, n = 0;
    char *s = malloc(cap);
    assert_non_null(s);
    for (int i = 0; i < 80; i++)
        n += (size_t)snprintf(s + n, cap - n, "key %d is value %d. ", i, (i * 37) % 101);
    snprintf(s + n, cap - n, "What is the value of key 17?");
    return s;
}

static void test_generate_through_lb(void **state) {
    (void)state;
    if (!g_has_worker) {
        printf("no worker in this cluster (fixture model missing): Generate skipped\n");
        skip();
    }
    char *prompt = gen_prompt();
    const char *argv[] = {EXAMPLE_GENERATE_PATH,
                          "--server",
                          g_client_lb,
                          "--json",
                          "--max-new-tokens",
                          "48",
                          "--policy",
                          "tier",
                          "--hot-budget",
                          "0.2",
                          "--seq",
                          "4242",
                          prompt,
                          NULL};
    char *out = NULL, *err = NULL;
    int rc = itest_run(argv, &out, &err);
    free(prompt);
    if (rc != 0)
        fail_msg("example_generate via the client LB: exit %d: %s", rc, err ? err : "");
    cJSON *j = cJSON_Parse(out);
    if (!j)
        fail_msg("example_generate printed no JSON: %s", out);
    double host = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "demoted_host"));
    double ssd = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "demoted_ssd"));
    double gen = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "generated_tokens"));
    double seq = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "sequence_id"));
    cJSON *deg = cJSON_GetObjectItem(j, "degraded");
    printf("generate via LB: %.0f tokens, demoted host %.0f ssd %.0f, degraded %s\n", gen, host,
           ssd, cJSON_IsTrue(deg) ? "yes" : "no");
    assert_true(gen > 0);
    assert_true(host + ssd > 0);
    assert_false(cJSON_IsTrue(deg)); /* the tier service was reachable through nginx */
    assert_true(seq == GEN_SEQ);
    cJSON_Delete(j);
    free(out);
    free(err);

    uint64_t ids[1] = {GEN_SEQ};
    int holders[1] = {0}, where[1] = {0}, per_shard[MAX_SHARDS]; /* -O3: set by owners() */
    owners(ids, 1, holders, where, per_shard);
    if (holders[0] != 1)
        fail_msg("generated sequence %d is on %d shards (want exactly 1)", GEN_SEQ, holders[0]);
    printf("generated sequence %d lives on shard %s\n", GEN_SEQ, g_shards[where[0]]);
}

/* A dead shard: its sequences get UNAVAILABLE through the LB (never another
 * shard's answer), the other shard's sequences are still served. Runs last. */
static void test_dead_shard_not_substituted(void **state) {
    (void)state;
    uint64_t ids[N_SEQ];
    for (int k = 0; k < N_SEQ; k++)
        ids[k] = SEQ_BASE + (uint64_t)k;
    int holders[N_SEQ], where[N_SEQ], per_shard[MAX_SHARDS];
    owners(ids, N_SEQ, holders, where, per_shard);
    const int dead = where[0];

    char path[600];
    snprintf(path, sizeof path, "%s/shard-%d/pid", g_rundir, dead);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    long pid = 0;
    assert_int_equal(fscanf(f, "%ld", &pid), 1);
    fclose(f);
    assert_true(pid > 1);
    assert_int_equal(kill((pid_t)pid, SIGKILL), 0);
    kvtier_client *sc = connect_to(g_shards[dead]);
    kvtier_health h;
    kvtier_error e;
    int gone = 0;
    for (int i = 0; i < 100 && !gone; i++) {
        gone = kvtier_health_check(sc, &h, &e) == KVTIER_UNAVAILABLE;
        if (!gone)
            usleep(50 * 1000);
    }
    kvtier_client_free(sc);
    assert_true(gone);

    kvtier_client *lb = connect_to(g_tier_lb);
    kvtier_tier_map m;
    for (int k = 0; k < N_SEQ; k++) {
        kvtier_code code = kvtier_tier_map_get(lb, ids[k], &m, &e);
        if (where[k] == dead) {
            if (code != KVTIER_UNAVAILABLE)
                fail_msg("sequence %llu of the dead shard: %s via LB (want UNAVAILABLE): %s",
                         (unsigned long long)ids[k], kvtier_code_name(code), e.message);
            assert_non_null(strstr(e.message, "kvtier LB"));
        } else {
            if (code != KVTIER_OK)
                fail_msg("sequence %llu of a live shard via LB: %s", (unsigned long long)ids[k],
                         e.message);
            kvtier_tier_map_free(&m);
        }
    }
    kvtier_client_free(lb);
}

int main(int argc, char **argv) {
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: cluster_check RUNDIR/cluster.env (a cluster with >= 2 shards, from "
               "ops/cluster.sh up)\n");
        return 0;
    }
    if (argc != 2 || load_env(argv[1]) != 0) {
        fprintf(stderr, "usage: cluster_check RUNDIR/cluster.env (a cluster with >= 2 shards)\n");
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lb_health),
        cmocka_unit_test(test_sequences_spread_one_shard_each),
        cmocka_unit_test(test_big_stream_through_lb),
        cmocka_unit_test(test_summarize_through_lb),
        cmocka_unit_test(test_generate_through_lb),
        cmocka_unit_test(test_dead_shard_not_substituted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
