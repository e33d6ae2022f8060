/* test_kvcache_bench.c - benchmark of the paged KV cache attention
 * (program `bench_kvcache`, not a timed test). Prints a table and, with
 * --json, writes the numbers as JSON.
 *
 * Measures, at Qwen3-0.6B shapes by default (28 layers, 16 q heads, 8 KV
 * heads, head_dim 128, context 4096, bf16 KV):
 *   decode   one query row per layer over all layers (stats off / on),
 *            ms per step and achieved KV read bandwidth;
 *   prefill  one chunk of --chunk rows at the end of the context, per layer;
 *   revival  kvcache_revival_candidates with half the blocks taken out.
 * --quick shrinks everything (used as a smoke test under ctest).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvcache.h"
#include "threadpool.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rs = 0x1234567887654321ull;
static float frand(void) {
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return (float)((rs >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static void usage(FILE *f) {
    fprintf(f, "usage: bench_kvcache [options]\n"
               "  --ctx N          context length (default 4096)\n"
               "  --layers N       layers (default 28)\n"
               "  --heads N        query heads (default 16)\n"
               "  --kv-heads N     KV heads (default 8)\n"
               "  --head-dim N     head dim (default 128)\n"
               "  --dtype bf16|f32 KV storage (default bf16)\n"
               "  --threads N      thread pool size (default: online CPUs)\n"
               "  --steps N        decode steps timed (default 20)\n"
               "  --chunk N        prefill chunk rows (default 512)\n"
               "  --json PATH      also write results as JSON\n"
               "  --quick          tiny sizes (smoke test)\n"
               "  --help           this text\n");
}

int main(int argc, char **argv) {
    int ctx = 4096, nl = 28, nh = 16, nkv = 8, hd = 128, threads = 0, steps = 20, chunk = 512;
    dtype_t dt = DT_BF16;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define INTARG(name, var)                                                                          \
    if (strcmp(a, name) == 0) {                                                                    \
        if (!v || atoi(v) <= 0) {                                                                  \
            fprintf(stderr, "bench_kvcache: %s needs a positive number\n", name);                  \
            return 2;                                                                              \
        }                                                                                          \
        var = atoi(v);                                                                             \
        i++;                                                                                       \
        continue;                                                                                  \
    }
        INTARG("--ctx", ctx)
        INTARG("--layers", nl)
        INTARG("--heads", nh)
        INTARG("--kv-heads", nkv)
        INTARG("--head-dim", hd)
        INTARG("--threads", threads)
        INTARG("--steps", steps)
        INTARG("--chunk", chunk)
#undef INTARG
        if (strcmp(a, "--dtype") == 0 && v) {
            if (strcmp(v, "bf16") == 0)
                dt = DT_BF16;
            else if (strcmp(v, "f32") == 0)
                dt = DT_F32;
            else {
                fprintf(stderr, "bench_kvcache: --dtype must be bf16 or f32, got '%s'\n", v);
                return 2;
            }
            i++;
        } else if (strcmp(a, "--json") == 0 && v) {
            json = v;
            i++;
        } else if (strcmp(a, "--quick") == 0) {
            ctx = 300, nl = 2, steps = 3, chunk = 64;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "bench_kvcache: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (chunk > ctx)
        chunk = ctx;
    threadpool_t *tp = tp_new(threads);
    if (!tp) {
        fprintf(stderr, "bench_kvcache: cannot start threads\n");
        return 1;
    }
    kvcache_opts o = {
        .n_layers = nl, .n_heads = nh, .n_kv_heads = nkv, .head_dim = hd, .kv_dtype = dt};
    char err[256];
    kvcache_t *kv = kvcache_new(&o, err, sizeof err);
    if (!kv) {
        fprintf(stderr, "bench_kvcache: %s\n", err);
        return 1;
    }
    int seq = kvcache_seq_new(kv);
    const size_t kw = (size_t)nkv * hd, qw = (size_t)nh * hd;
    float *k = malloc(kw * sizeof(float)), *v = malloc(kw * sizeof(float));
    float *q = malloc((size_t)chunk * qw * sizeof(float)),
          *out = malloc((size_t)chunk * qw * sizeof(float));
    if (!k || !v || !q || !out)
        return 1;
    for (size_t i = 0; i < (size_t)chunk * qw; i++)
        q[i] = frand();
    for (int l = 0; l < nl; l++)
        for (int p = 0; p < ctx; p++) {
            for (size_t i = 0; i < kw; i++)
                k[i] = frand(), v[i] = frand();
            if (kvcache_append(kv, seq, l, p, k, v)) {
                fprintf(stderr, "bench_kvcache: %s\n", kvcache_errmsg(kv));
                return 1;
            }
        }
    const double kv_bytes = (double)ctx * kw * 2 * (dt == DT_BF16 ? 2 : 4) * nl;

    double dec[2], best[2] = {1e30, 1e30}; /* mean and fastest step (the box is shared) */
    for (int st = 0; st < 2; st++) {
        kvcache_seq_stats(kv, seq, st, 0.95f, 16);
        for (int l = 0; l < nl; l++)
            kvcache_attend(kv, seq, l, q, 1, ctx - 1, out, tp); /* warm */
        double t0 = now_s();
        for (int s = 0; s < steps; s++) {
            double t1 = now_s();
            for (int l = 0; l < nl; l++)
                kvcache_attend(kv, seq, l, q, 1, ctx - 1, out, tp);
            double dt = now_s() - t1;
            best[st] = dt < best[st] ? dt : best[st];
        }
        dec[st] = (now_s() - t0) / steps;
    }
    kvcache_seq_stats(kv, seq, 1, 0.95f, 16);
    int preps = steps / 4 > 0 ? steps / 4 : 1;
    double t0 = now_s();
    for (int s = 0; s < preps; s++)
        kvcache_attend(kv, seq, s % nl, q, chunk, ctx - chunk, out, tp);
    double pre = (now_s() - t0) / preps;
    /* flops of the chunk: rows see ctx-chunk+1 .. ctx keys; 2 (QK) + 2 (PV) per key and dim */
    double keys = (double)chunk * (ctx - chunk) + (double)chunk * (chunk + 1) / 2;
    double pre_gflops = keys * nh * hd * 4 / pre / 1e9;

    /* revival: take out every other block of layer 0 */
    int nb = kvcache_seq_blocks(kv, seq, 0);
    for (int b = 1; b < nb - 1; b += 2) {
        void *bytes;
        size_t len;
        if (kvcache_block_take(kv, seq, 0, b, &bytes, &len) == KV_OK)
            free(bytes);
    }
    int cand[1024];
    t0 = now_s();
    int ncand = 0;
    for (int s = 0; s < steps; s++)
        ncand = kvcache_revival_candidates(kv, seq, 0, q, ctx - 1, KV_REVIVAL_TAU, cand, 1024, NULL,
                                           tp);
    double rev = (now_s() - t0) / steps;

    printf("bench_kvcache: ctx %d, %d layers, %d/%d heads, head_dim %d, %s KV, %d threads\n", ctx,
           nl, nh, nkv, hd, dt == DT_BF16 ? "bf16" : "f32", tp_nthreads(tp));
    printf("%-34s %12s %12s\n", "measure", "value", "unit");
    printf("%-34s %12.3f %12s\n", "decode step, all layers, no stats", dec[0] * 1e3, "ms");
    printf("%-34s %12.3f %12s\n", "decode step, all layers, stats", dec[1] * 1e3, "ms");
    printf("%-34s %12.3f %12s\n", "decode step, no stats, best", best[0] * 1e3, "ms");
    printf("%-34s %12.3f %12s\n", "decode step, stats, best", best[1] * 1e3, "ms");
    printf("%-34s %12.2f %12s\n", "decode KV read bandwidth (stats)", kv_bytes / dec[1] / 1e9,
           "GB/s");
    printf("%-34s %12.2f %12s\n", "decode KV read GB/s (best, stats)", kv_bytes / best[1] / 1e9,
           "GB/s");
    printf("%-34s %12.3f %12s\n", "prefill chunk, one layer", pre * 1e3, "ms");
    printf("%-34s %12.2f %12s\n", "prefill attention throughput", pre_gflops, "GFLOP/s");
    printf("%-34s %12.3f %12s\n", "revival check, one layer", rev * 1e3, "ms");
    printf("%-34s %12d %12s\n", "revival candidates (half out)", ncand, "blocks");
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            fprintf(stderr, "bench_kvcache: cannot write %s\n", json);
            return 1;
        }
        fprintf(
            f,
            "{\"ctx\":%d,\"layers\":%d,\"heads\":%d,\"kv_heads\":%d,\"head_dim\":%d,\"dtype\":\"%"
            "s\","
            "\"threads\":%d,\"decode_ms\":%.4f,\"decode_stats_ms\":%.4f,\"decode_kv_gbps\":%.3f,"
            "\"decode_best_ms\":%.4f,\"decode_stats_best_ms\":%.4f,"
            "\"prefill_chunk\":%d,\"prefill_layer_ms\":%.4f,\"prefill_gflops\":%.3f,\"revival_ms\":"
            "%.4f}\n",
            ctx, nl, nh, nkv, hd, dt == DT_BF16 ? "bf16" : "f32", tp_nthreads(tp), dec[0] * 1e3,
            dec[1] * 1e3, kv_bytes / dec[1] / 1e9, best[0] * 1e3, best[1] * 1e3, chunk, pre * 1e3,
            pre_gflops, rev * 1e3);
        fclose(f);
    }
    free(k), free(v), free(q), free(out);
    kvcache_free(kv);
    tp_free(tp);
    return 0;
}
