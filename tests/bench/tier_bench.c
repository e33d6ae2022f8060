/* tier_bench.c — kvtierd benchmark (not a test): 64 KiB blocks over real gRPC.
 *
 *   put    : PutBlocks streams (64 blocks per call) -> GB/s; one-block calls -> p50/p99
 *   fetch  : FetchBlocks from HOST, then (after Admin.Evict --to ssd) from SSD:
 *            streams of 64 -> GB/s; one-block calls -> p50/p99
 *   summary: Summarize stream, 36 layers x 64 active blocks -> summaries/s, p50/p99
 *
 * Prints a table; --json FILE writes the same numbers. Runs against --server
 * ADDR, or --spawn starts a kvtierd on a temp dir (removed at exit). */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "itest.h"
#include "kvtier.h"

typedef struct {
    const char *name;
    double gbps;  /* 0 = n/a */
    double per_s; /* ops/s (summaries) or 0 */
    double p50_us, p99_us;
    uint64_t count; /* blocks or summaries measured */
} row;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Percentile (0..100) of n samples in ns, in microseconds. Sorts v. */
static double pct_us(uint64_t *v, size_t n, double p) {
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_u64);
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return (double)v[i] / 1000.0;
}

static void die(const char *what, const kvtier_error *e) {
    fprintf(stderr, "tier_bench: %s: %s: %s\n", what, kvtier_code_name(e->code), e->message);
    exit(1);
}

/* ---------------------------------------------------------------- put */

typedef struct {
    kvtier_client *c;
    uint64_t seq;
    uint32_t layers, per_layer, bb;
    uint8_t *buf;
} bench;

static void fill(bench *b, uint32_t l, uint32_t k) {
    /* cheap distinct payloads: a header word, the rest shared random bytes */
    memcpy(b->buf, &l, 4);
    memcpy(b->buf + 4, &k, 4);
}

static row bench_put_stream(bench *b, uint32_t batch) {
    kvtier_error e;
    uint64_t t0 = now_ns(), n = 0;
    size_t nb = (size_t)b->layers * b->per_layer;
    uint64_t *lat = calloc(nb / batch + 1, sizeof *lat);
    size_t nl = 0;
    for (size_t i = 0; i < nb;) {
        uint64_t c0 = now_ns();
        kvtier_put_stream *p = kvtier_put_open(b->c, b->seq, &e);
        if (!p)
            die("PutBlocks", &e);
        for (uint32_t j = 0; j < batch && i < nb; j++, i++) {
            uint32_t l = (uint32_t)(i / b->per_layer), k = (uint32_t)(i % b->per_layer);
            fill(b, l, k);
            kvtier_block blk = {l, k, b->buf, b->bb, 0, 0, 16, KVTIER_TIER_ABSENT};
            if (kvtier_put_send(p, &blk, &e))
                break;
        }
        kvtier_put_result r;
        if (kvtier_put_finish(p, &r, &e) != KVTIER_OK)
            die("PutBlocks", &e);
        n += r.acked;
        kvtier_put_result_free(&r);
        lat[nl++] = now_ns() - c0;
    }
    double s = (double)(now_ns() - t0) / 1e9;
    row rw = {"put, streams of 64", (double)n * b->bb / s / 1e9, 0,
              pct_us(lat, nl, 50),  pct_us(lat, nl, 99),         n};
    free(lat);
    return rw;
}

static row bench_put_single(bench *b, uint32_t count) {
    kvtier_error e;
    uint64_t *lat = calloc(count, sizeof *lat);
    uint64_t t0 = now_ns();
    for (uint32_t i = 0; i < count; i++) {
        uint32_t l = i % b->layers, k = (i / b->layers) % b->per_layer;
        fill(b, l, k);
        kvtier_block blk = {l, k, b->buf, b->bb, 0, 0, 16, KVTIER_TIER_ABSENT};
        uint64_t c0 = now_ns();
        if (kvtier_put_blocks(b->c, b->seq, &blk, 1, NULL, &e) != KVTIER_OK)
            die("PutBlocks", &e);
        lat[i] = now_ns() - c0;
    }
    double s = (double)(now_ns() - t0) / 1e9;
    row rw = {"put, 1 block per call", (double)count * b->bb / s / 1e9, 0,
              pct_us(lat, count, 50),  pct_us(lat, count, 99),          count};
    free(lat);
    return rw;
}

/* ---------------------------------------------------------------- fetch */

typedef struct {
    kvtier_tier want;
    uint64_t bytes, wrong_tier;
} fetch_ctx;

static int on_block(const kvtier_fetched *f, void *user) {
    fetch_ctx *x = user;
    x->bytes += f->len;
    if (f->tier != x->want)
        x->wrong_tier++;
    return 0;
}

static row bench_fetch_stream(bench *b, kvtier_tier want, const char *name, uint32_t batch) {
    kvtier_error e;
    size_t nb = (size_t)b->layers * b->per_layer;
    kvtier_block_ref *refs = calloc(batch, sizeof *refs);
    uint64_t *lat = calloc(nb / batch + 1, sizeof *lat);
    size_t nl = 0;
    fetch_ctx x = {want, 0, 0};
    uint64_t t0 = now_ns(), n = 0;
    for (size_t i = 0; i < nb;) {
        uint32_t m = 0;
        for (; m < batch && i < nb; m++, i++)
            refs[m] =
                (kvtier_block_ref){(uint32_t)(i / b->per_layer), (uint32_t)(i % b->per_layer)};
        uint64_t c0 = now_ns();
        size_t got = 0;
        if (kvtier_fetch_blocks(b->c, b->seq, refs, m, on_block, &x, &got, &e) != KVTIER_OK)
            die("FetchBlocks", &e);
        lat[nl++] = now_ns() - c0;
        n += got;
    }
    double s = (double)(now_ns() - t0) / 1e9;
    if (x.wrong_tier)
        fprintf(stderr, "tier_bench: %s: %" PRIu64 " blocks were not served from %s\n", name,
                x.wrong_tier, kvtier_tier_name(want));
    row rw = {name, (double)x.bytes / s / 1e9, 0, pct_us(lat, nl, 50), pct_us(lat, nl, 99), n};
    free(refs);
    free(lat);
    return rw;
}

static row bench_fetch_single(bench *b, kvtier_tier want, const char *name, uint32_t count) {
    kvtier_error e;
    uint64_t *lat = calloc(count, sizeof *lat);
    fetch_ctx x = {want, 0, 0};
    uint64_t t0 = now_ns();
    for (uint32_t i = 0; i < count; i++) {
        /* stride through the sequence so the SSD reads are not one cached run */
        size_t idx = ((size_t)i * 7919u) % ((size_t)b->layers * b->per_layer);
        kvtier_block_ref r = {(uint32_t)(idx / b->per_layer), (uint32_t)(idx % b->per_layer)};
        uint64_t c0 = now_ns();
        if (kvtier_fetch_blocks(b->c, b->seq, &r, 1, on_block, &x, NULL, &e) != KVTIER_OK)
            die("FetchBlocks", &e);
        lat[i] = now_ns() - c0;
    }
    double s = (double)(now_ns() - t0) / 1e9;
    row rw = {name, (double)x.bytes / s / 1e9, 0, pct_us(lat, count, 50), pct_us(lat, count, 99),
              count};
    free(lat);
    return rw;
}

/* ---------------------------------------------------------------- summaries */

static row bench_summaries(kvtier_client *c, uint64_t seq, double seconds) {
    enum { L = 36, ACT = 64, NB = 256 };
    kvtier_error e;
    kvtier_seq_shape sh = {0};
    sh.sequence_id = seq;
    sh.layers = L;
    sh.kv_heads = 8;
    sh.head_dim = 128;
    sh.block_bytes = 65536;
    if (kvtier_open_sequence(c, &sh, NULL, &e))
        die("OpenSequence", &e);
    kvtier_summarize_stream *z = kvtier_summarize_open(c, seq, &e);
    if (!z)
        die("Summarize", &e);
    static uint32_t act[L][ACT];
    static float mass[ACT];
    kvtier_layer_summary ls[L];
    size_t cap = 1 << 16, n = 0;
    uint64_t *lat = calloc(cap, sizeof *lat);
    uint64_t t0 = now_ns(), step = 0;
    while ((double)(now_ns() - t0) / 1e9 < seconds && n < cap) {
        step += 16;
        for (int l = 0; l < L; l++) {
            /* 64 active blocks per layer, a window that slides with the step */
            for (int k = 0; k < ACT; k++)
                act[l][k] = (uint32_t)((step / 16 + (uint64_t)k * 3 + l) % NB);
            ls[l] = (kvtier_layer_summary){.layer = (uint32_t)l,
                                           .active = act[l],
                                           .peak_mass = mass,
                                           .n_active = ACT,
                                           .block_count = NB};
        }
        for (int k = 0; k < ACT; k++)
            mass[k] = 0.01f;
        kvtier_summary s = {step, ls, L};
        kvtier_decisions d;
        uint64_t c0 = now_ns();
        if (kvtier_summarize_send(z, &s, &d, &e) != KVTIER_OK)
            die("Summarize", &e);
        lat[n++] = now_ns() - c0;
        kvtier_free(d.d);
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    kvtier_summarize_finish(z, &e);
    row rw = {"summarize, 36 layers x 64 active",
              0,
              (double)n / secs,
              pct_us(lat, n, 50),
              pct_us(lat, n, 99),
              n};
    free(lat);
    return rw;
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *f) {
    fprintf(f,
            "usage: tier_bench (--server ADDR | --spawn) [--blocks N] [--json FILE]\n"
            "                  [--host-budget SIZE] [--seconds S]\n"
            "Measures kvtierd with 64 KiB blocks: put and fetch throughput (GB/s) and\n"
            "p50/p99 latency, fetch from HOST and from SSD (Admin.Evict to ssd), and\n"
            "summaries per second (36 layers, 64 active blocks each).\n"
            "  --server ADDR      a running kvtierd\n"
            "  --spawn            start kvtierd (%s) on a temp dir, removed at exit\n"
            "  --blocks N         blocks put and fetched (default 2048 = 128 MiB)\n"
            "  --host-budget SIZE host budget of the spawned kvtierd (default 1GiB)\n"
            "  --seconds S        duration of the summary phase (default 3)\n"
            "  --json FILE        also write the results as JSON\n",
            itest_kvtierd());
}

int main(int argc, char **argv) {
    static const struct option opts[] = {{"server", required_argument, 0, 's'},
                                         {"spawn", no_argument, 0, 'S'},
                                         {"blocks", required_argument, 0, 'n'},
                                         {"json", required_argument, 0, 'j'},
                                         {"host-budget", required_argument, 0, 'H'},
                                         {"seconds", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *server = NULL, *json = NULL, *host_budget = "1GiB";
    int spawn = 0;
    long nblocks = 2048;
    double seconds = 3;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            server = optarg;
            break;
        case 'S':
            spawn = 1;
            break;
        case 'n':
            nblocks = strtol(optarg, NULL, 10);
            break;
        case 'j':
            json = optarg;
            break;
        case 'H':
            host_budget = optarg;
            break;
        case 't':
            seconds = strtod(optarg, NULL);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if ((!server) == (!spawn) || nblocks < 64 || nblocks > 1 << 22 || seconds <= 0 ||
        optind < argc) {
        fprintf(stderr,
                "tier_bench: give exactly one of --server ADDR or --spawn; --blocks >= 64\n");
        usage(stderr);
        return 2;
    }
    itest_server srv = {0};
    if (spawn) {
        const char *flags[] = {"--host-budget", host_budget, NULL};
        if (itest_server_start(&srv, flags) != 0) {
            fprintf(stderr, "tier_bench: could not start %s\n", itest_kvtierd());
            return 1;
        }
        server = srv.addr;
    }
    kvtier_connect_opts co = {0};
    co.address = server;
    co.timeout_ms = 60000;
    kvtier_error e;
    kvtier_client *cl = kvtier_connect(&co, &e);
    if (!cl)
        die("connect", &e);
    kvtier_health h;
    if (kvtier_health_check(cl, &h, &e)) {
        fprintf(stderr, "tier_bench: cannot reach kvtierd at %s: %s\n", server, e.message);
        return 1;
    }

    bench b = {cl, 0, 16, (uint32_t)((nblocks + 15) / 16), 65536, malloc(65536)};
    b.seq = 0x7b00000000ull + (uint64_t)time(NULL) % 100000; /* fresh on a shared server */
    for (uint32_t i = 0; i < b.bb; i++)
        b.buf[i] = (uint8_t)(rand() >> 7);
    kvtier_seq_shape sh = {0};
    sh.sequence_id = b.seq;
    sh.layers = b.layers;
    sh.kv_heads = 8;
    sh.head_dim = 128;
    sh.block_bytes = b.bb;
    if (kvtier_open_sequence(cl, &sh, NULL, &e))
        die("OpenSequence", &e);

    row rows[8];
    int nr = 0;
    rows[nr++] = bench_put_stream(&b, 64);
    rows[nr++] = bench_put_single(&b, 500);
    rows[nr++] = bench_fetch_stream(&b, KVTIER_TIER_HOST, "fetch HOST, streams of 64", 64);
    rows[nr++] = bench_fetch_single(&b, KVTIER_TIER_HOST, "fetch HOST, 1 block per call", 1000);
    uint64_t moved = 0;
    if (kvtier_evict(cl, b.seq, -1, KVTIER_TIER_SSD, &moved, &e))
        die("Evict", &e);
    rows[nr++] = bench_fetch_stream(&b, KVTIER_TIER_SSD, "fetch SSD, streams of 64", 64);
    rows[nr++] = bench_fetch_single(&b, KVTIER_TIER_SSD, "fetch SSD, 1 block per call", 1000);
    rows[nr++] = bench_summaries(cl, b.seq + 1, seconds);
    kvtier_close_sequence(cl, b.seq, 0, NULL, NULL, NULL);
    kvtier_close_sequence(cl, b.seq + 1, 0, NULL, NULL, NULL);

    printf("tier_bench: kvtierd %s at %s, 64 KiB blocks, %u blocks (%u MiB), %" PRIu64
           " evicted to SSD\n\n",
           h.version, server, b.layers * b.per_layer, b.layers * b.per_layer / 16, moved);
    printf("%-36s %10s %12s %10s %10s %8s\n", "operation", "GB/s", "ops/s", "p50 us", "p99 us",
           "count");
    for (int i = 0; i < nr; i++) {
        char g[32], o[32];
        snprintf(g, sizeof g, rows[i].gbps > 0 ? "%.3f" : "-", rows[i].gbps);
        snprintf(o, sizeof o, rows[i].per_s > 0 ? "%.0f" : "-", rows[i].per_s);
        printf("%-36s %10s %12s %10.1f %10.1f %8" PRIu64 "\n", rows[i].name, g, o, rows[i].p50_us,
               rows[i].p99_us, rows[i].count);
    }
    printf("\n(p50/p99 of streams: per call of 64 blocks; of 1-block calls: per call)\n");

    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "server", server);
        cJSON_AddStringToObject(j, "kvtierd_version", h.version);
        cJSON_AddNumberToObject(j, "block_bytes", b.bb);
        cJSON_AddNumberToObject(j, "blocks", (double)b.layers * b.per_layer);
        cJSON *a = cJSON_AddArrayToObject(j, "results");
        for (int i = 0; i < nr; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "operation", rows[i].name);
            if (rows[i].gbps > 0)
                cJSON_AddNumberToObject(o, "gb_per_s", rows[i].gbps);
            if (rows[i].per_s > 0)
                cJSON_AddNumberToObject(o, "ops_per_s", rows[i].per_s);
            cJSON_AddNumberToObject(o, "p50_us", rows[i].p50_us);
            cJSON_AddNumberToObject(o, "p99_us", rows[i].p99_us);
            cJSON_AddNumberToObject(o, "count", (double)rows[i].count);
            cJSON_AddItemToArray(a, o);
        }
        char *s = cJSON_Print(j);
        FILE *f = fopen(json, "w");
        if (!f || fprintf(f, "%s\n", s) < 0) {
            fprintf(stderr, "tier_bench: cannot write %s\n", json);
            return 1;
        }
        fclose(f);
        cJSON_free(s);
        cJSON_Delete(j);
    }
    free(b.buf);
    kvtier_client_free(cl);
    if (spawn) {
        int st;
        itest_server_signal(&srv, SIGTERM, 30000, &st);
    }
    return 0;
}
