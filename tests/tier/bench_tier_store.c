/* bench_tier_store — throughput of the tier library on real RocksDB.
 * For write-through / write-back, with and without blob files: put 64 KiB
 * blocks, fetch them from RAM, drain, fetch them from RocksDB. Prints a
 * table and writes JSON. Not a test: numbers only. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tier.h"
#include "tier_test_util.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(FILE *f) {
    fprintf(f, "usage: bench_tier_store [--blocks N] [--block-bytes B] [--json FILE] [--fsync]\n"
               "  Puts N blocks (default 2000) of B bytes (default 65536) into a temp store per\n"
               "  configuration (write-through/back x blob files off/on), fetches them from RAM\n"
               "  and, after a drain, from RocksDB. Prints MB/s; --json writes the table.\n");
}

typedef struct result {
    const char *policy;
    int blob;
    double put_mbs, fetch_ram_mbs, drain_mbs, fetch_ssd_mbs;
} result;

static int run(result *r, uint32_t nblocks, uint32_t bb, int fsync) {
    char *dir = tt_tmpdir();
    if (!dir)
        return -1;
    tier_options o;
    tier_options_init(&o);
    o.data_dir = dir;
    o.write_policy = strcmp(r->policy, "back") == 0 ? TIER_WRITE_BACK : TIER_WRITE_THROUGH;
    o.host_budget = (uint64_t)nblocks * bb; /* everything fits in RAM */
    o.blob_files = r->blob;
    o.fsync = fsync;
    tier_t *t = NULL;
    char err[256];
    if (tier_open(&o, &t, err, sizeof err) != TIER_OK) {
        fprintf(stderr, "tier_open: %s\n", err);
        return -1;
    }
    uint32_t layers = 36, per = (nblocks + layers - 1) / layers;
    tier_seq_info info = {.n_layers = layers,
                          .n_kv_heads = 8,
                          .head_dim = 128,
                          .block_tokens = 16,
                          .max_blocks = per,
                          .block_bytes = bb};
    if (tier_seq_open(t, "bench", 1, &info, err, sizeof err) != TIER_OK)
        return -1;
    uint8_t *buf = malloc(bb);
    uint32_t *crc = malloc(nblocks * sizeof *crc);
    double mb = (double)nblocks * bb / 1e6;
    double t0 = now_s();
    for (uint32_t i = 0; i < nblocks; i++) {
        tt_pattern(buf, bb, i % layers, i / layers, 1);
        crc[i] = tier_crc32c(0, buf, bb);
        tier_block_key k = {"bench", 1, i % layers, i / layers};
        if (tier_put(t, &k, buf, bb, crc[i], 16, NULL, err, sizeof err) != TIER_OK) {
            fprintf(stderr, "put: %s\n", err);
            return -1;
        }
    }
    r->put_mbs = mb / (now_s() - t0);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            t0 = now_s();
            if (tier_drain(t, NULL, err, sizeof err) != TIER_OK)
                return -1;
            r->drain_mbs = mb / (now_s() - t0);
        }
        t0 = now_s();
        for (uint32_t i = 0; i < nblocks; i++) {
            tier_block_key k = {"bench", 1, i % layers, i / layers};
            void *d;
            size_t n;
            uint32_t c;
            if (tier_fetch(t, &k, &d, &n, &c, NULL, err, sizeof err) != TIER_OK || c != crc[i]) {
                fprintf(stderr, "fetch: %s\n", err);
                return -1;
            }
            tier_buf_free(d);
        }
        double v = mb / (now_s() - t0);
        if (pass == 0)
            r->fetch_ram_mbs = v;
        else
            r->fetch_ssd_mbs = v;
    }
    free(buf);
    free(crc);
    tier_close(t);
    tt_rmrf(dir);
    free(dir);
    return 0;
}

int main(int argc, char **argv) {
    uint32_t nblocks = 2000, bb = 65536;
    const char *json = NULL;
    int fsync = 0;
    static const struct option lo[] = {{"blocks", 1, 0, 'n'}, {"block-bytes", 1, 0, 'b'},
                                       {"json", 1, 0, 'j'},   {"fsync", 0, 0, 'f'},
                                       {"help", 0, 0, 'h'},   {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "n:b:j:fh", lo, NULL)) != -1) {
        switch (ch) {
        case 'n':
            nblocks = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'b':
            bb = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'j':
            json = optarg;
            break;
        case 'f':
            fsync = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (nblocks == 0 || bb == 0 || bb > (1u << 20)) {
        fprintf(stderr,
                "bench_tier_store: --blocks must be >= 1 and --block-bytes in 1..1048576\n");
        return 2;
    }
    result rs[4] = {{"through", 0, 0, 0, 0, 0},
                    {"through", 1, 0, 0, 0, 0},
                    {"back", 0, 0, 0, 0, 0},
                    {"back", 1, 0, 0, 0, 0}};
    printf("%u blocks x %u bytes%s\n", nblocks, bb, fsync ? ", fsync per write" : "");
    printf("%-8s %-5s %10s %12s %10s %12s\n", "write", "blob", "put MB/s", "fetchRAM", "drain",
           "fetchSSD");
    for (int i = 0; i < 4; i++) {
        if (run(&rs[i], nblocks, bb, fsync) != 0)
            return 1;
        printf("%-8s %-5s %10.0f %12.0f %10.0f %12.0f\n", rs[i].policy, rs[i].blob ? "on" : "off",
               rs[i].put_mbs, rs[i].fetch_ram_mbs, rs[i].drain_mbs, rs[i].fetch_ssd_mbs);
    }
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            perror(json);
            return 1;
        }
        fprintf(f, "{\"blocks\": %u, \"block_bytes\": %u, \"fsync\": %d, \"results\": [", nblocks,
                bb, fsync);
        for (int i = 0; i < 4; i++)
            fprintf(
                f,
                "%s{\"write\": \"%s\", \"blob\": %d, \"put_mbs\": %.1f, \"fetch_ram_mbs\": %.1f, "
                "\"drain_mbs\": %.1f, \"fetch_ssd_mbs\": %.1f}",
                i ? ", " : "", rs[i].policy, rs[i].blob, rs[i].put_mbs, rs[i].fetch_ram_mbs,
                rs[i].drain_mbs, rs[i].fetch_ssd_mbs);
        fprintf(f, "]}\n");
        fclose(f);
    }
    return 0;
}
