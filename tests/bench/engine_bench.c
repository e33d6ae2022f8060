/* engine_bench.c - CPU engine speed on a checkpoint (--model, e.g. a random
 * Qwen3-0.6B from tests/fixtures/make_random_qwen3.py):
 *   - memory bandwidth of the machine: the read ceiling over --stream-mib
 *     (bw_ceiling.h: the best of several read kernels), copy and triad,
 *     measured in the same run with the same thread pool;
 *   - prefill tokens/s of an N-token prompt (default 512);
 *   - decode tokens/s at each context (default 512 and 4096): the KV cache is
 *     filled to the context first, then S single-token steps are timed;
 *   - decode as a fraction of the bandwidth roofline: bytes read per token =
 *     weight bytes + KV bytes at that context, divided by the read ceiling
 *     measured over that same footprint right before and after the steps
 *     (bw_ceiling_cpu: best of several read kernels, the engine's own matvec
 *     among them, on the engine's thread pool), against the time per token.
 *     A step faster than the ceiling is reported with a warning (part of the
 *     footprint sat in the cache), never clamped.
 * Prints a table; --json FILE writes one row per context. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "bench_kv.h"
#include "bw_ceiling.h"
#include "forward.h"
#include "kernels.h"
#include "kvcache.h"
#include "threadpool.h"

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
            "                   (the startup bandwidth line measures host memory; a cuda\n"
            "                   row's ceiling comes from bw_ceiling_cuda, not filled yet: n/a)\n");
}

/* ------------------------------------------------------------ bandwidth */

/* STREAM-like copy and triad (the read ceiling is bw_ceiling.c's). */
typedef struct {
    float *a, *b, *c;
    size_t n;
    int ntasks;
    int op; /* 1 copy, 2 triad */
} bw_ctx;

static void bw_task(void *ctxp, int task, int thread) {
    (void)thread;
    bw_ctx *c = ctxp;
    size_t per = (c->n + (size_t)c->ntasks - 1) / (size_t)c->ntasks;
    size_t lo = (size_t)task * per, hi = lo + per > c->n ? c->n : lo + per;
    if (lo >= hi)
        return;
    if (c->op == 1) {
        memcpy(c->c + lo, c->a + lo, (hi - lo) * sizeof(float));
    } else {
        for (size_t i = lo; i < hi; i++)
            c->a[i] = c->b[i] + 3.0f * c->c[i];
    }
}

/* Best-of-5 GB/s (1e9 bytes) of copy (out[0]) and triad (out[1]) with
 * ntasks = threads. */
static int measure_copy_triad(threadpool_t *tp, size_t mib, double out[2]) {
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
    for (size_t i = 0; i < c.n; i++)
        c.a[i] = 1.0f, c.b[i] = 2.0f, c.c[i] = 0.5f;
    const double bytes[3] = {0, 2, 3};
    for (int op = 1; op <= 2; op++) {
        double best = 0;
        c.op = op;
        for (int rep = 0; rep < 5; rep++) {
            double t0 = bench_now_s();
            tp_parallel_for(tp, c.ntasks, bw_task, &c);
            double dt = bench_now_s() - t0;
            double gbs = bytes[op] * (double)c.n * sizeof(float) / dt / 1e9;
            if (gbs > best)
                best = gbs;
        }
        out[op - 1] = best;
    }
    free(c.a), free(c.b), free(c.c);
    return 0;
}

/* "sum 12.3, avx2x4-pf 20.1, ..." of every kernel that ran. */
static void kernels_line(const bw_ceiling *b, char *out, size_t len) {
    size_t used = 0;
    out[0] = 0;
    for (int k = 0; k < BW_NKERNELS && used < len; k++)
        if (b->kernel_gbs[k] > 0)
            used += (size_t)snprintf(out + used, len - used, "%s%s %.2f", used ? ", " : "",
                                     bw_kernel_name(k), b->kernel_gbs[k]);
}

/* ------------------------------------------------------------ model runs */

typedef struct {
    int context;
    double decode_tok_s, ms_per_tok, kv_bytes, roofline;
    double best_ms, best_roofline; /* fastest single step (least disturbed by other load) */
    double med_ms, med_roofline;   /* median step */
    double bw_gbs;                 /* read ceiling over this row's footprint (before/after) */
    bw_ceiling ceil;               /* its kernels */
    double footprint;              /* weight + KV bytes one step reads */
    double eng_gbs, eng_best_gbs;  /* what the engine read: mean step, fastest step */
    int cached;                    /* the fastest step beat every read kernel */
} row_t;

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Fills (kv, seq) to ctx positions: random unit-scale K/V appended directly,
 * or a prefill of random ids. Returns 0 or -1. */
static int fill_kv(fwd_t *fw, kvcache_t *kv, int seq, const qwen3_model_t *m, int ctx,
                   int use_prefill) {
    char err[512];
    if (use_prefill) {
        int *ids = malloc(sizeof(int) * (size_t)ctx);
        for (int i = 0; i < ctx; i++)
            ids[i] = (int)(bench_rnd() % (uint64_t)m->cfg.vocab_size);
        int rc = fwd_run(fw, kv, seq, ids, ctx, 0, NULL, 0, NULL, err, sizeof err);
        if (rc)
            fprintf(stderr, "engine_bench: fill: %s\n", err);
        free(ids);
        return rc;
    }
    return bench_kv_fill_random(kv, seq, m, ctx, "engine_bench");
}

/* The read ceiling of one row over `foot` bytes: the backend's function
 * (bw_ceiling.h). The CUDA one is a seam not filled yet: then *out->gbs is 0
 * (no roofline) and 0 is returned. -1 only when the CPU buffer cannot be had. */
static int row_ceiling(threadpool_t *tp, backend_kind_t backend, double foot,
                       const qwen3_model_t *m, bw_ceiling *out, char *err, size_t errlen) {
    if (backend == BACKEND_CUDA) {
        bw_ceiling_cuda(0, (size_t)foot, 5, out, err, errlen);
        return 0;
    }
    return bw_ceiling_cpu(tp, (size_t)foot, m->cfg.dtype, m->cfg.hidden, 5, out, err, errlen);
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
    double t0 = bench_now_s();
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
            bench_now_s() - t0, wbytes / 1e9, nth, kn_isa_name(kn_isa_active()));

    double bw[2];
    bw_ceiling dram;
    char kl[512];
    if (measure_copy_triad(tp, stream_mib, bw) != 0 ||
        bw_ceiling_cpu(tp, stream_mib << 20, m->cfg.dtype, m->cfg.hidden, 5, &dram, err,
                       sizeof err) != 0) {
        fprintf(stderr, "engine_bench: cannot allocate bandwidth arrays\n");
        return 1;
    }
    kernels_line(&dram, kl, sizeof kl);
    size_t llc = bw_llc_bytes();
    fprintf(stderr,
            "bandwidth over %zu MiB (best of 5, %d threads): read %.2f GB/s (%s; kernels: %s), "
            "copy %.2f GB/s, triad %.2f GB/s; last-level cache %.1f MiB\n",
            stream_mib, nth, dram.gbs, bw_kernel_name(dram.best), kl, bw[0], bw[1],
            llc / 1048576.0);
    if (backend == BACKEND_CUDA) {
        bw_ceiling dev;
        if (bw_ceiling_cuda(0, stream_mib << 20, 5, &dev, err, sizeof err) != 0)
            fprintf(stderr, "engine_bench: %s: no roofline for this device run\n", err);
    }

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
            ids[i] = (int)(bench_rnd() % (uint64_t)m->cfg.vocab_size);
        kvcache_t *kv = bench_kv_new(m, kvdt, 0, "engine_bench");
        int seq = kvcache_seq_new(kv);
        if (fwd_run(fw, kv, seq, ids, prefill_n < 32 ? prefill_n : 32, 0, logits, 0, NULL, err,
                    sizeof err) != 0) {
            fprintf(stderr, "engine_bench: %s\n", err);
            return 1;
        }
        kvcache_seq_free(kv, seq);
        seq = kvcache_seq_new(kv);
        double ts = bench_now_s();
        if (fwd_run(fw, kv, seq, ids, prefill_n, 0, logits, 0, NULL, err, sizeof err) != 0) {
            fprintf(stderr, "engine_bench: %s\n", err);
            return 1;
        }
        prefill_tok_s = prefill_n / (bench_now_s() - ts);
        fprintf(stderr, "prefill %d tokens: %.1f tok/s\n", prefill_n, prefill_tok_s);
        kvcache_free(kv);
        free(ids);
    }

    row_t rows[16];
    size_t kv_es = kvdt == DT_F32 ? 4 : 2;
    for (int ci = 0; ci < nctx; ci++) {
        int ctx = ctxs[ci];
        kvcache_t *kv = bench_kv_new(m, kvdt, 0, "engine_bench");
        int seq = kvcache_seq_new(kv);
        if (fill_kv(fw, kv, seq, m, ctx, use_prefill) != 0)
            return 1;
        int pos = ctx, tok = 1;
        for (int w = 0; w < 2; w++, pos++) /* warm-up */
            if (fwd_run(fw, kv, seq, &tok, 1, pos, logits, 0, NULL, err, sizeof err) != 0) {
                fprintf(stderr, "engine_bench: %s\n", err);
                return 1;
            }
        /* the ceiling over the bytes one step reads (weights + KV at the mean
         * context of the timed steps), right before the steps: the box may be
         * shared */
        double mean_ctx = ctx + 2 + (steps - 1) / 2.0;
        double kvb =
            mean_ctx * m->cfg.n_layers * 2.0 * m->cfg.n_kv_heads * m->cfg.head_dim * (double)kv_es;
        double foot = wbytes + kvb;
        bw_ceiling ceil, ceil2;
        if (row_ceiling(tp, backend, foot, m, &ceil, err, sizeof err) != 0) {
            fprintf(stderr, "engine_bench: %s\n", err);
            return 1;
        }
        double *st = malloc((size_t)steps * sizeof *st);
        if (!st)
            return 1;
        double ts = bench_now_s(), best = 1e30;
        for (int s = 0; s < steps; s++, pos++) { /* hot loop: the measured decode steps */
            double t1 = bench_now_s();
            if (fwd_run(fw, kv, seq, &tok, 1, pos, logits, 0, NULL, err, sizeof err) != 0) {
                fprintf(stderr, "engine_bench: %s\n", err);
                return 1;
            }
            double dt = bench_now_s() - t1;
            best = dt < best ? dt : best;
            st[s] = dt;
        }
        double per = (bench_now_s() - ts) / steps;
        /* and again after them: a read disturbed by other load gives a low figure,
         * so the higher of the two stands, per kernel (the roofline errs on the
         * strict side) */
        if (row_ceiling(tp, backend, foot, m, &ceil2, err, sizeof err) != 0) {
            fprintf(stderr, "engine_bench: %s\n", err);
            return 1;
        }
        bw_ceiling_merge(&ceil, &ceil2);
        qsort(st, (size_t)steps, sizeof *st, cmp_dbl);
        double med = steps % 2 ? st[steps / 2] : 0.5 * (st[steps / 2 - 1] + st[steps / 2]);
        free(st);
        double ideal = ceil.gbs > 0 ? foot / (ceil.gbs * 1e9) : 0; /* 0: not measured */
        rows[ci] = (row_t){ctx,
                           1.0 / per,
                           per * 1e3,
                           kvb,
                           ideal / per,
                           best * 1e3,
                           ideal / best,
                           med * 1e3,
                           ideal / med,
                           ceil.gbs,
                           ceil,
                           foot,
                           foot / per / 1e9,
                           foot / best / 1e9,
                           ceil.gbs > 0 && foot / best / 1e9 > ceil.gbs};
        kernels_line(&ceil, kl, sizeof kl);
        fprintf(stderr, "context %d: ceiling over %.0f MB: %.2f GB/s (%s; kernels: %s)\n", ctx,
                foot / 1e6, ceil.gbs, bw_kernel_name(ceil.best), kl);
        if (rows[ci].cached)
            fprintf(stderr,
                    "engine_bench: WARNING: at context %d the engine's fastest step read %.2f "
                    "GB/s, above every read kernel (best %.2f GB/s, %s) over the same %.0f MB: "
                    "part of its footprint sat in the cache (last-level cache %.1f MiB) or the "
                    "machine changed speed between the measurements; the roofline figures "
                    "above 100%% are reported as measured, not clamped\n",
                    ctx, rows[ci].eng_best_gbs, ceil.gbs, bw_kernel_name(ceil.best), foot / 1e6,
                    llc / 1048576.0);
        kvcache_free(kv);
    }

    printf("\n%-20s %7s %7s %11s %10s %9s %8s %8s %9s %9s %-12s %9s %9s %9s %9s\n", "model",
           "context", "threads", "prefill_t/s", "decode_t/s", "ms/token", "med_ms", "best_ms",
           "GB/token", "ceil_GB/s", "ceiling", "eng_GB/s", "roofline", "med_roof", "best_roof");
    const char *mname = strrchr(model, '/') ? strrchr(model, '/') + 1 : model;
    for (int ci = 0; ci < nctx; ci++) {
        printf("%-20s %7d %7d %11.1f %10.2f %9.2f %8.2f %8.2f %9.3f %9.2f %-12s %9.2f", mname,
               rows[ci].context, nth, prefill_tok_s, rows[ci].decode_tok_s, rows[ci].ms_per_tok,
               rows[ci].med_ms, rows[ci].best_ms, rows[ci].footprint / 1e9, rows[ci].bw_gbs,
               bw_kernel_name(rows[ci].ceil.best), rows[ci].eng_gbs);
        if (rows[ci].bw_gbs > 0)
            printf(" %8.1f%% %8.1f%% %8.1f%%%s\n", rows[ci].roofline * 100,
                   rows[ci].med_roofline * 100, rows[ci].best_roofline * 100,
                   rows[ci].cached ? "  (!)" : "");
        else /* the backend's ceiling is not measured (bw_ceiling_cuda) */
            printf(" %9s %9s %9s\n", "n/a", "n/a", "n/a");
    }
    printf("(roofline: (weight bytes + KV bytes) / read ceiling vs the mean time per token;\n"
           " med_roof / best_roof: vs the median / fastest step. The ceiling is the best of %d "
           "read kernels\n"
           " (bw_ceiling.h; `ceiling` names the winner) on the engine's %d threads over that "
           "same footprint,\n"
           " before and after each row's steps. (!): the engine beat every kernel (see the "
           "warning).\n"
           " Over %zu MiB: read %.2f GB/s, copy %.2f GB/s, triad %.2f GB/s; LLC %.1f MiB; KV %s, "
           "fill %s)\n",
           BW_NKERNELS, nth, stream_mib, dram.gbs, bw[0], bw[1], llc / 1048576.0,
           kvdt == DT_F32 ? "f32" : "bf16", use_prefill ? "prefill" : "random");

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
            cJSON_AddNumberToObject(o, "bandwidth_gbs", rows[ci].bw_gbs); /* the ceiling */
            cJSON_AddStringToObject(o, "ceiling_kernel", bw_kernel_name(rows[ci].ceil.best));
            cJSON *ks = cJSON_AddObjectToObject(o, "ceiling_kernels_gbs");
            for (int k = 0; k < BW_NKERNELS; k++)
                if (rows[ci].ceil.kernel_gbs[k] > 0)
                    cJSON_AddNumberToObject(ks, bw_kernel_name(k), rows[ci].ceil.kernel_gbs[k]);
            cJSON_AddNumberToObject(o, "footprint_bytes", rows[ci].footprint);
            cJSON_AddNumberToObject(o, "llc_bytes", (double)llc);
            cJSON_AddNumberToObject(o, "engine_read_gbs", rows[ci].eng_gbs);
            cJSON_AddNumberToObject(o, "engine_read_gbs_best_step", rows[ci].eng_best_gbs);
            cJSON_AddBoolToObject(o, "above_ceiling", rows[ci].cached);
            cJSON_AddNumberToObject(o, "dram_read_gbs", dram.gbs);
            cJSON_AddNumberToObject(o, "bandwidth_copy_gbs", bw[0]);
            cJSON_AddNumberToObject(o, "bandwidth_triad_gbs", bw[1]);
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
