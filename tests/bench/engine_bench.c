/* engine_bench.c - CPU engine speed on a checkpoint (--model, e.g. a random
 * Qwen3-0.6B from tests/fixtures/make_random_qwen3.py):
 *   - memory bandwidth, STREAM-like (read, copy, triad over arrays >> LLC),
 *     measured in the same run with the same thread pool;
 *   - prefill tokens/s of an N-token prompt (default 512);
 *   - decode tokens/s at each context (default 512 and 4096): the KV cache is
 *     filled to the context first, then S single-token steps are timed;
 *   - decode as a fraction of the bandwidth roofline: bytes read per token =
 *     weight bytes + KV bytes at that context, divided by the read bandwidth,
 *     against the measured time per token.
 * Prints a table; --json FILE writes one row per context. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "forward.h"
#include "kernels.h"
#include "kvcache.h"
#include "threadpool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: engine_bench --model DIR [--threads N] [--prefill N] [--contexts 512,4096]\n"
            "                    [--steps N] [--fill random|prefill] [--kv-dtype f32|bf16]\n"
            "                    [--chunk N] [--stream-mib N] [--json FILE] [--backend B]\n"
            "\n"
            "  --model DIR      checkpoint (required; a random Qwen3-0.6B: /usr/bin/python3\n"
            "                   tests/fixtures/make_random_qwen3.py --shape 0.6B --out DIR)\n"
            "  --threads N      compute threads (default: online CPUs)\n"
            "  --prefill N      prompt length of the prefill measurement (default 512)\n"
            "  --contexts LIST  decode contexts (default 512,4096)\n"
            "  --steps N        timed decode steps per context (default 16, after 2 warm-up)\n"
            "  --fill MODE      random: append random K/V up to the context (fast, default);\n"
            "                   prefill: run a prefill of random ids\n"
            "  --kv-dtype T     KV storage (default: bf16 for bf16 weights, else f32)\n"
            "  --chunk N        prefill chunk (default 256)\n"
            "  --stream-mib N   size of each bandwidth array in MiB (default 512)\n"
            "  --json FILE      write the rows as JSON\n"
            "  --backend B      cpu (default), cuda or auto: which machine runs the forward pass\n"
            "                   (the bandwidth rows still measure host memory)\n");
}

/* ------------------------------------------------------------ bandwidth */

typedef struct {
    float *a, *b, *c;
    size_t n;
    int ntasks;
    int op; /* 0 read, 1 copy, 2 triad */
    double sums[256];
} bw_ctx;

#if defined(__x86_64__)
#ifndef BW_AHEAD
#define BW_AHEAD 4096
#endif
__attribute__((target("avx2"))) static double bw_read_avx2(const float *p, size_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) { /* 128 B per turn; ask for the lines BW_AHEAD bytes ahead too */
        __builtin_prefetch((const char *)(p + i) + BW_AHEAD, 0, 3);
        __builtin_prefetch((const char *)(p + i) + BW_AHEAD + 64, 0, 3);
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(p + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(p + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(p + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    double s = 0;
    for (int k = 0; k < 8; k++)
        s += t[k];
    for (; i < n; i++)
        s += p[i];
    return s;
}
#endif

static void bw_task(void *ctxp, int task, int thread) {
    (void)thread;
    bw_ctx *c = ctxp;
    size_t per = (c->n + (size_t)c->ntasks - 1) / (size_t)c->ntasks;
    size_t lo = (size_t)task * per, hi = lo + per > c->n ? c->n : lo + per;
    if (lo >= hi)
        return;
    if (c->op == 0) {
#if defined(__x86_64__)
        if (__builtin_cpu_supports("avx2")) {
            c->sums[task] = bw_read_avx2(c->a + lo, hi - lo);
            return;
        }
#endif
        double s = 0;
        for (size_t i = lo; i < hi; i++)
            s += c->a[i];
        c->sums[task] = s;
    } else if (c->op == 1) {
        memcpy(c->c + lo, c->a + lo, (hi - lo) * sizeof(float));
    } else {
        for (size_t i = lo; i < hi; i++)
            c->a[i] = c->b[i] + 3.0f * c->c[i];
    }
}

/* Best-of-5 GB/s (1e9 bytes) of read, copy, triad with ntasks = threads. */
static int measure_bw(threadpool_t *tp, size_t mib, double out[3]) {
    bw_ctx c = {0};
    c.n = mib * 1048576 / sizeof(float);
    c.a = malloc(c.n * sizeof(float));
    c.b = malloc(c.n * sizeof(float));
    c.c = malloc(c.n * sizeof(float));
    if (!c.a || !c.b || !c.c) {
        free(c.a), free(c.b), free(c.c);
        return -1;
    }
    c.ntasks = tp_nthreads(tp);
    if (c.ntasks > 256)
        c.ntasks = 256;
    for (size_t i = 0; i < c.n; i++)
        c.a[i] = 1.0f, c.b[i] = 2.0f, c.c[i] = 0.5f;
    const double bytes[3] = {1, 2, 3};
    for (int op = 0; op < 3; op++) {
        double best = 0;
        c.op = op;
        for (int rep = 0; rep < 5; rep++) {
            double t0 = now_s();
            tp_parallel_for(tp, c.ntasks, bw_task, &c);
            double dt = now_s() - t0;
            double gbs = bytes[op] * (double)c.n * sizeof(float) / dt / 1e9;
            if (gbs > best)
                best = gbs;
        }
        out[op] = best;
    }
    free(c.a), free(c.b), free(c.c);
    return 0;
}

/* ------------------------------------------------------------ model runs */

typedef struct {
    int context;
    double decode_tok_s, ms_per_tok, kv_bytes, roofline;
    double best_ms, best_roofline; /* fastest single step (least disturbed by other load) */
    double med_ms, med_roofline;   /* median step */
    double bw_gbs;                 /* read bandwidth measured just before this row's steps */
} row_t;

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t g_rng = 0x1234567887654321ULL;
static uint64_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

static kvcache_t *new_kv(const qwen3_model_t *m, dtype_t dt) {
    kvcache_opts o = {.n_layers = m->cfg.n_layers,
                      .n_kv_heads = m->cfg.n_kv_heads,
                      .head_dim = m->cfg.head_dim,
                      .n_heads = m->cfg.n_heads,
                      .kv_dtype = dt};
    char err[256];
    kvcache_t *kv = kvcache_new(&o, err, sizeof err);
    if (!kv)
        fprintf(stderr, "engine_bench: %s\n", err);
    return kv;
}

/* Fills (kv, seq) to ctx positions: random unit-scale K/V appended directly,
 * or a prefill of random ids. Returns 0 or -1. */
static int fill_kv(fwd_t *fw, kvcache_t *kv, int seq, const qwen3_model_t *m, int ctx,
                   int use_prefill) {
    char err[512];
    if (use_prefill) {
        int *ids = malloc(sizeof(int) * (size_t)ctx);
        for (int i = 0; i < ctx; i++)
            ids[i] = (int)(rnd() % (uint64_t)m->cfg.vocab_size);
        int rc = fwd_run(fw, kv, seq, ids, ctx, 0, NULL, 0, NULL, err, sizeof err);
        if (rc)
            fprintf(stderr, "engine_bench: fill: %s\n", err);
        free(ids);
        return rc;
    }
    int w = m->cfg.n_kv_heads * m->cfg.head_dim, chunk = 256;
    float *k = malloc(sizeof(float) * (size_t)w * chunk),
          *v = malloc(sizeof(float) * (size_t)w * chunk);
    for (int p = 0; p < ctx; p += chunk) {
        int n = ctx - p < chunk ? ctx - p : chunk;
        for (int i = 0; i < w * n; i++) {
            k[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
            v[i] = (float)((int)(rnd() % 2001) - 1000) * 1e-3f;
        }
        for (int l = 0; l < m->cfg.n_layers; l++)
            if (kvcache_append_n(kv, seq, l, p, n, k, v) != KV_OK) {
                fprintf(stderr, "engine_bench: fill: %s\n", kvcache_errmsg(kv));
                free(k), free(v);
                return -1;
            }
    }
    free(k), free(v);
    return 0;
}

int main(int argc, char **argv) {
    const char *model = NULL, *json = NULL, *contexts = "512,4096";
    int threads = 0, prefill_n = 512, steps = 16, use_prefill = 0, chunk = 256;
    size_t stream_mib = 512;
    dtype_t kvdt = DT_F32;
    int kvdt_set = 0; /* default: bf16 KV for bf16 weights, as the worker */
    backend_kind_t backend = BACKEND_CPU;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "engine_bench: %s needs a value (see --help)\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--threads"))
            threads = atoi(v);
        else if (!strcmp(a, "--prefill"))
            prefill_n = atoi(v);
        else if (!strcmp(a, "--contexts"))
            contexts = v;
        else if (!strcmp(a, "--steps"))
            steps = atoi(v);
        else if (!strcmp(a, "--chunk"))
            chunk = atoi(v);
        else if (!strcmp(a, "--stream-mib"))
            stream_mib = (size_t)atol(v);
        else if (!strcmp(a, "--json"))
            json = v;
        else if (!strcmp(a, "--fill") && (!strcmp(v, "random") || !strcmp(v, "prefill")))
            use_prefill = !strcmp(v, "prefill");
        else if (!strcmp(a, "--backend")) {
            if (backend_parse(v, &backend) != 0) {
                fprintf(stderr, "engine_bench: --backend must be cpu, cuda or auto (got '%s')\n",
                        v);
                return 2;
            }
        } else if (!strcmp(a, "--kv-dtype") && (!strcmp(v, "f32") || !strcmp(v, "bf16")))
            kvdt = !strcmp(v, "f32") ? DT_F32 : DT_BF16, kvdt_set = 1;
        else {
            fprintf(stderr, "engine_bench: bad option %s %s (see --help)\n", a, v);
            return 2;
        }
    }
    if (threads < 0 || prefill_n < 1 || steps < 1 || chunk < 1 || stream_mib < 16) {
        fprintf(stderr, "engine_bench: bad numeric option (see --help)\n");
        return 2;
    }
    int ctxs[16], nctx = 0;
    for (const char *p = contexts; *p && nctx < 16;) {
        char *end;
        long c = strtol(p, &end, 10);
        if (end == p || c < 1) {
            fprintf(stderr, "engine_bench: bad --contexts '%s'\n", contexts);
            return 2;
        }
        ctxs[nctx++] = (int)c;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') {
            fprintf(stderr, "engine_bench: bad --contexts '%s'\n", contexts);
            return 2;
        }
    }

    if (!model) {
        fprintf(stderr,
                "engine_bench: --model DIR is required (a random Qwen3-0.6B: /usr/bin/python3 "
                "tests/fixtures/make_random_qwen3.py --shape 0.6B --out DIR)\n");
        return 2;
    }
    char err[1024];
    if (backend_resolve(backend, &backend, err, sizeof err) != 0) {
        fprintf(stderr, "engine_bench: %s\n", err);
        return 2;
    }
    qwen3_model_t *m = NULL;
    double t0 = now_s();
    if (qwen3_model_load(model, 0, &m, err, sizeof err) != 0) {
        fprintf(stderr, "engine_bench: %s\n", err);
        return 1;
    }
    if (!kvdt_set)
        kvdt = m->cfg.dtype == DT_BF16 ? DT_BF16 : DT_F32;
    threadpool_t *tp = tp_new(threads);
    int nth = tp_nthreads(tp);
    double wbytes = (double)qwen3_model_weight_bytes(m);
    fprintf(stderr, "loaded %s in %.1f s: %.3f GB of weights, %d threads, %s kernels\n", model,
            now_s() - t0, wbytes / 1e9, nth, kn_isa_name(kn_isa_active()));

    double bw[3];
    if (measure_bw(tp, stream_mib, bw) != 0) {
        fprintf(stderr, "engine_bench: cannot allocate bandwidth arrays\n");
        return 1;
    }
    fprintf(
        stderr,
        "bandwidth (best of 5, %zu MiB arrays): read %.2f GB/s, copy %.2f GB/s, triad %.2f GB/s\n",
        stream_mib, bw[0], bw[1], bw[2]);

    fwd_t *fw = backend_fwd_new(m, tp, chunk, backend, NULL, err, sizeof err);
    if (!fw) {
        fprintf(stderr, "engine_bench: %s\n", err);
        return backend == BACKEND_CUDA ? 2 : 1;
    }
    fprintf(stderr, "backend: %s\n", fwd_device_name(fw));
    float *logits = malloc(sizeof(float) * (size_t)m->cfg.vocab_size);

    /* prefill: one warm-up run of 32 tokens (page-in, OpenBLAS buffers), then the measured prompt
     */
    double prefill_tok_s = 0;
    {
        int *ids = malloc(sizeof(int) * (size_t)prefill_n);
        for (int i = 0; i < prefill_n; i++)
            ids[i] = (int)(rnd() % (uint64_t)m->cfg.vocab_size);
        kvcache_t *kv = new_kv(m, kvdt);
        int seq = kvcache_seq_new(kv);
        if (fwd_run(fw, kv, seq, ids, prefill_n < 32 ? prefill_n : 32, 0, logits, 0, NULL, err,
                    sizeof err) != 0) {
            fprintf(stderr, "engine_bench: %s\n", err);
            return 1;
        }
        kvcache_seq_free(kv, seq);
        seq = kvcache_seq_new(kv);
        double ts = now_s();
        if (fwd_run(fw, kv, seq, ids, prefill_n, 0, logits, 0, NULL, err, sizeof err) != 0) {
            fprintf(stderr, "engine_bench: %s\n", err);
            return 1;
        }
        prefill_tok_s = prefill_n / (now_s() - ts);
        fprintf(stderr, "prefill %d tokens: %.1f tok/s\n", prefill_n, prefill_tok_s);
        kvcache_free(kv);
        free(ids);
    }

    row_t rows[16];
    size_t kv_es = kvdt == DT_F32 ? 4 : 2;
    for (int ci = 0; ci < nctx; ci++) {
        int ctx = ctxs[ci];
        kvcache_t *kv = new_kv(m, kvdt);
        int seq = kvcache_seq_new(kv);
        if (fill_kv(fw, kv, seq, m, ctx, use_prefill) != 0)
            return 1;
        int pos = ctx, tok = 1;
        for (int w = 0; w < 2; w++, pos++) /* warm-up */
            if (fwd_run(fw, kv, seq, &tok, 1, pos, logits, 0, NULL, err, sizeof err) != 0) {
                fprintf(stderr, "engine_bench: %s\n", err);
                return 1;
            }
        /* the box may be shared: measure the bandwidth right before the steps it is compared with
         */
        double rbw[3];
        if (measure_bw(tp, stream_mib, rbw) != 0) {
            fprintf(stderr, "engine_bench: cannot allocate bandwidth arrays\n");
            return 1;
        }
        double *st = malloc((size_t)steps * sizeof *st);
        if (!st)
            return 1;
        double ts = now_s(), best = 1e30;
        for (int s = 0; s < steps; s++, pos++) { /* hot loop: the measured decode steps */
            double t1 = now_s();
            if (fwd_run(fw, kv, seq, &tok, 1, pos, logits, 0, NULL, err, sizeof err) != 0) {
                fprintf(stderr, "engine_bench: %s\n", err);
                return 1;
            }
            double dt = now_s() - t1;
            best = dt < best ? dt : best;
            st[s] = dt;
        }
        double per = (now_s() - ts) / steps;
        /* and again after them: a read disturbed by other load gives a low figure,
         * so the higher of the two stands (the roofline errs on the strict side) */
        double rbw2[3];
        if (measure_bw(tp, stream_mib, rbw2) != 0) {
            fprintf(stderr, "engine_bench: cannot allocate bandwidth arrays\n");
            return 1;
        }
        if (rbw2[0] > rbw[0])
            rbw[0] = rbw2[0];
        qsort(st, (size_t)steps, sizeof *st, cmp_dbl);
        double med = steps % 2 ? st[steps / 2] : 0.5 * (st[steps / 2 - 1] + st[steps / 2]);
        free(st);
        /* KV read per step at the mean context of the timed steps */
        double mean_ctx = ctx + 2 + (steps - 1) / 2.0;
        double kvb =
            mean_ctx * m->cfg.n_layers * 2.0 * m->cfg.n_kv_heads * m->cfg.head_dim * (double)kv_es;
        double ideal = (wbytes + kvb) / (rbw[0] * 1e9);
        rows[ci] = (row_t){ctx,        1.0 / per,    per * 1e3, kvb,         ideal / per,
                           best * 1e3, ideal / best, med * 1e3, ideal / med, rbw[0]};
        kvcache_free(kv);
    }

    printf("\n%-20s %7s %7s %11s %10s %9s %8s %8s %9s %9s %9s %9s %9s\n", "model", "context",
           "threads", "prefill_t/s", "decode_t/s", "ms/token", "med_ms", "best_ms", "GB/token",
           "read_GB/s", "roofline", "med_roof", "best_roof");
    const char *mname = strrchr(model, '/') ? strrchr(model, '/') + 1 : model;
    for (int ci = 0; ci < nctx; ci++)
        printf(
            "%-20s %7d %7d %11.1f %10.2f %9.2f %8.2f %8.2f %9.3f %9.2f %8.1f%% %8.1f%% %8.1f%%\n",
            mname, rows[ci].context, nth, prefill_tok_s, rows[ci].decode_tok_s, rows[ci].ms_per_tok,
            rows[ci].med_ms, rows[ci].best_ms, (wbytes + rows[ci].kv_bytes) / 1e9, rows[ci].bw_gbs,
            rows[ci].roofline * 100, rows[ci].med_roofline * 100, rows[ci].best_roofline * 100);
    printf("(roofline: (weight bytes + KV bytes) / read bandwidth (the better of the reads before "
           "and after\n"
           " each row's steps) vs the mean time per token; med_roof / best_roof: vs the median / "
           "fastest step;\n"
           " first copy %.2f GB/s, triad %.2f GB/s; KV %s, fill %s)\n",
           bw[1], bw[2], kvdt == DT_F32 ? "f32" : "bf16", use_prefill ? "prefill" : "random");

    if (json) {
        cJSON *arr = cJSON_CreateArray();
        for (int ci = 0; ci < nctx; ci++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "model", mname);
            cJSON_AddNumberToObject(o, "context", rows[ci].context);
            cJSON_AddNumberToObject(o, "threads", nth);
            cJSON_AddNumberToObject(o, "prefill_tokens", prefill_n);
            cJSON_AddNumberToObject(o, "prefill_tok_s", prefill_tok_s);
            cJSON_AddNumberToObject(o, "decode_tok_s", rows[ci].decode_tok_s);
            cJSON_AddNumberToObject(o, "decode_ms_per_token", rows[ci].ms_per_tok);
            cJSON_AddNumberToObject(o, "weight_bytes", wbytes);
            cJSON_AddNumberToObject(o, "kv_bytes_per_token", rows[ci].kv_bytes);
            cJSON_AddNumberToObject(o, "bandwidth_gbs", rows[ci].bw_gbs);
            cJSON_AddNumberToObject(o, "bandwidth_copy_gbs", bw[1]);
            cJSON_AddNumberToObject(o, "bandwidth_triad_gbs", bw[2]);
            cJSON_AddNumberToObject(o, "roofline_fraction", rows[ci].roofline);
            cJSON_AddNumberToObject(o, "decode_best_ms", rows[ci].best_ms);
            cJSON_AddNumberToObject(o, "roofline_fraction_best_step", rows[ci].best_roofline);
            cJSON_AddNumberToObject(o, "decode_median_ms", rows[ci].med_ms);
            cJSON_AddNumberToObject(o, "roofline_fraction_median_step", rows[ci].med_roofline);
            cJSON_AddStringToObject(o, "isa", kn_isa_name(kn_isa_active()));
            cJSON_AddStringToObject(o, "kv_dtype", kvdt == DT_F32 ? "f32" : "bf16");
            cJSON_AddItemToArray(arr, o);
        }
        char *s = cJSON_Print(arr);
        FILE *f = fopen(json, "w");
        if (!f || fputs(s, f) < 0 || fclose(f) != 0) {
            fprintf(stderr, "engine_bench: cannot write %s\n", json);
            return 1;
        }
        free(s);
        cJSON_Delete(arr);
    }
    free(logits);
    fwd_free(fw);
    tp_free(tp);
    qwen3_model_free(m);
    return 0;
}
