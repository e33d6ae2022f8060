/* bw_ceiling.c - read kernels and the bandwidth ceiling of engine_bench's
 * roofline (see bw_ceiling.h). */
#include "bw_ceiling.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define MIN_TIMED_BYTES (64u << 20) /* a timing reads at least this much */
#define MAX_TASKS 256

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

const char *bw_kernel_name(int k) {
    static const char *n[BW_NKERNELS] = {"sum",      "avx2x4-pf",    "avx2x8",
                                         "avx512x8", "avx2-4stream", "matvec"};
    return k >= 0 && k < BW_NKERNELS ? n[k] : "?";
}

/* ------------------------------------------------------------ read kernels */

/* Each returns a value that depends on every byte of p[0..n) (n a multiple
 * of 512), so that no compiler drops the reads. */

static uint64_t rd_sum(const uint8_t *p, size_t n) {
    const uint64_t *q = (const uint64_t *)p;
    uint64_t s = 0;
    for (size_t i = 0; i < n / 8; i++)
        s += q[i];
    return s;
}

#if defined(__x86_64__)
#define BW_AHEAD 4096

__attribute__((target("avx2"))) static uint64_t fold256(__m256i s) {
    uint64_t t[4];
    _mm256_storeu_si256((__m256i *)t, s);
    return t[0] + t[1] + t[2] + t[3];
}

__attribute__((target("avx2"))) static uint64_t rd_avx2x4_pf(const uint8_t *p, size_t n) {
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < n; i += 128) { /* 128 B a turn; the lines 4 KiB ahead asked for */
        __builtin_prefetch(p + i + BW_AHEAD, 0, 3);
        __builtin_prefetch(p + i + BW_AHEAD + 64, 0, 3);
        s0 = _mm256_add_epi64(s0, _mm256_loadu_si256((const __m256i *)(p + i)));
        s1 = _mm256_add_epi64(s1, _mm256_loadu_si256((const __m256i *)(p + i + 32)));
        s2 = _mm256_add_epi64(s2, _mm256_loadu_si256((const __m256i *)(p + i + 64)));
        s3 = _mm256_add_epi64(s3, _mm256_loadu_si256((const __m256i *)(p + i + 96)));
    }
    return fold256(_mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3)));
}

__attribute__((target("avx2"))) static uint64_t rd_avx2x8(const uint8_t *p, size_t n) {
    __m256i s[8];
    for (int k = 0; k < 8; k++)
        s[k] = _mm256_setzero_si256();
    for (size_t i = 0; i < n; i += 256)
        for (int k = 0; k < 8; k++)
            s[k] = _mm256_add_epi64(s[k], _mm256_loadu_si256((const __m256i *)(p + i + 32 * k)));
    for (int k = 1; k < 8; k++)
        s[0] = _mm256_add_epi64(s[0], s[k]);
    return fold256(s[0]);
}

__attribute__((target("avx512f"))) static uint64_t rd_avx512x8(const uint8_t *p, size_t n) {
    __m512i s[8];
    for (int k = 0; k < 8; k++)
        s[k] = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 512 <= n; i += 512)
        for (int k = 0; k < 8; k++)
            s[k] = _mm512_add_epi64(s[k], _mm512_loadu_si512((const void *)(p + i + 64 * k)));
    for (int k = 1; k < 8; k++)
        s[0] = _mm512_add_epi64(s[0], s[k]);
    return (uint64_t)_mm512_reduce_add_epi64(s[0]) + rd_sum(p + i, n - i);
}

__attribute__((target("avx2"))) static uint64_t rd_avx2_4stream(const uint8_t *p, size_t n) {
    size_t q = n / 4 / 64 * 64; /* four streams of q bytes, the rest read plainly */
    const uint8_t *a = p, *b = p + q, *c = p + 2 * q, *d = p + 3 * q;
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i < q; i += 64) {
        s0 = _mm256_add_epi64(s0, _mm256_loadu_si256((const __m256i *)(a + i)));
        s1 = _mm256_add_epi64(s1, _mm256_loadu_si256((const __m256i *)(b + i)));
        s2 = _mm256_add_epi64(s2, _mm256_loadu_si256((const __m256i *)(c + i)));
        s3 = _mm256_add_epi64(s3, _mm256_loadu_si256((const __m256i *)(d + i)));
        s0 = _mm256_add_epi64(s0, _mm256_loadu_si256((const __m256i *)(a + i + 32)));
        s1 = _mm256_add_epi64(s1, _mm256_loadu_si256((const __m256i *)(b + i + 32)));
        s2 = _mm256_add_epi64(s2, _mm256_loadu_si256((const __m256i *)(c + i + 32)));
        s3 = _mm256_add_epi64(s3, _mm256_loadu_si256((const __m256i *)(d + i + 32)));
    }
    return fold256(_mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3))) +
           rd_sum(p + 4 * q, n - 4 * q);
}
#endif

/* 1 when this CPU runs kernel k. */
static int kernel_runs(int k) {
#if defined(__x86_64__)
    if (k == BW_K_AVX2X4_PF || k == BW_K_AVX2X8 || k == BW_K_AVX2_4STREAM)
        return __builtin_cpu_supports("avx2");
    if (k == BW_K_AVX512X8)
        return __builtin_cpu_supports("avx512f");
#else
    if (k != BW_K_SUM && k != BW_K_MATVEC)
        return 0;
#endif
    return 1;
}

typedef struct rd_ctx {
    const uint8_t *buf;
    size_t bytes; /* a multiple of 512 */
    int ntasks, k;
    uint64_t sink[MAX_TASKS];
    /* matvec */
    tensor_t w;
    float *x, *y;
} rd_ctx;

static void rd_task(void *ctxp, int task, int thread) {
    (void)thread;
    rd_ctx *c = ctxp;
    size_t per = (c->bytes / (size_t)c->ntasks + 511) / 512 * 512;
    size_t lo = (size_t)task * per, hi = lo + per > c->bytes ? c->bytes : lo + per;
    if (lo >= hi)
        return;
    const uint8_t *p = c->buf + lo;
    size_t n = hi - lo;
    uint64_t s = 0;
    switch (c->k) {
#if defined(__x86_64__)
    case BW_K_AVX2X4_PF:
        s = rd_avx2x4_pf(p, n);
        break;
    case BW_K_AVX2X8:
        s = rd_avx2x8(p, n);
        break;
    case BW_K_AVX512X8:
        s = rd_avx512x8(p, n);
        break;
    case BW_K_AVX2_4STREAM:
        s = rd_avx2_4stream(p, n);
        break;
#endif
    default:
        s = rd_sum(p, n);
    }
    c->sink[task] += s;
}

/* One pass of kernel c->k over the footprint; returns the bytes it read. */
static size_t rd_pass(threadpool_t *tp, rd_ctx *c) {
    if (c->k == BW_K_MATVEC) {
        kn_job_t job = {&c->w, c->y};
        kn_matvec(tp, &job, 1, c->x);
        return (size_t)(c->w.shape[0] * c->w.shape[1]) * (c->w.dtype == DT_F32 ? 4u : 2u);
    }
    tp_parallel_for(tp, c->ntasks, rd_task, c);
    return c->bytes;
}

/* ------------------------------------------------------------ ceilings */

int bw_ceiling_cpu(threadpool_t *tp, size_t bytes, dtype_t wdt, int cols, int reps, bw_ceiling *out,
                   char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    size_t es = wdt == DT_F32 ? 4 : 2;
    if (cols < 1)
        cols = 1024;
    bytes = (bytes + 4095) / 4096 * 4096;
    if (bytes < 4096)
        bytes = 4096;
    rd_ctx *c = calloc(1, sizeof *c);
    uint8_t *buf = aligned_alloc(4096, bytes);
    int64_t rows = (int64_t)(bytes / (es * (size_t)cols));
    float *x = malloc(sizeof(float) * (size_t)cols);
    float *y = malloc(sizeof(float) * (size_t)(rows > 0 ? rows : 1));
    if (!c || !buf || !x || !y) {
        free(c), free(buf), free(x), free(y);
        snprintf(err, errlen, "out of memory for a %zu-byte read buffer", bytes);
        return -1;
    }
    /* 16-bit 0x3C00 (f16 1.0, bf16 2^-7) everywhere: normal numbers in every
     * dtype the matvec reads (f32: 0x3C003C00), no denormal slow paths */
    uint16_t *h = (uint16_t *)buf;
    for (size_t i = 0; i < bytes / 2; i++)
        h[i] = 0x3C00;
    for (int i = 0; i < cols; i++)
        x[i] = 1.0f;
    c->buf = buf;
    c->bytes = bytes;
    c->ntasks = tp_nthreads(tp) > MAX_TASKS ? MAX_TASKS : tp_nthreads(tp);
    c->w = (tensor_t){buf, wdt, 2, {rows, cols, 0, 0}, "bw_ceiling.synthetic"};
    c->x = x;
    c->y = y;
    out->bytes = bytes;
    out->best = -1;
    for (int k = 0; k < BW_NKERNELS; k++) {
        if (!kernel_runs(k) || (k == BW_K_MATVEC && rows < 1))
            continue;
        c->k = k;
        rd_pass(tp, c); /* warm-up: caches, frequency */
        size_t passes = MIN_TIMED_BYTES / bytes;
        passes = passes < 1 ? 1 : passes > 4096 ? 4096 : passes;
        double best = 0;
        for (int r = 0; r < (reps > 0 ? reps : 1); r++) {
            double t0 = now_s(), read = 0;
            for (size_t p = 0; p < passes; p++)
                read += (double)rd_pass(tp, c);
            double gbs = read / (now_s() - t0) / 1e9;
            best = gbs > best ? gbs : best;
        }
        out->kernel_gbs[k] = best;
        if (best > out->gbs) {
            out->gbs = best;
            out->best = k;
        }
    }
    uint64_t sink = 0;
    for (int i = 0; i < MAX_TASKS; i++)
        sink += c->sink[i];
    if (sink == 1) /* never: keeps the sums alive */
        fprintf(stderr, "bw_ceiling: %g\n", (double)y[0]);
    free(c), free(buf), free(x), free(y);
    return 0;
}

int bw_ceiling_cuda(int device, size_t bytes, int reps, bw_ceiling *out, char *err, size_t errlen) {
    (void)device, (void)bytes, (void)reps;
    memset(out, 0, sizeof *out);
    out->best = -1;
    snprintf(err, errlen,
             "device-memory ceiling not measured: bw_ceiling_cuda is a seam for the CUDA "
             "backend (tests/bench/bw_ceiling.h)");
    return -1;
}

void bw_ceiling_merge(bw_ceiling *acc, const bw_ceiling *b) {
    for (int k = 0; k < BW_NKERNELS; k++)
        if (b->kernel_gbs[k] > acc->kernel_gbs[k])
            acc->kernel_gbs[k] = b->kernel_gbs[k];
    if (b->gbs > acc->gbs) {
        acc->gbs = b->gbs;
        acc->best = b->best;
    }
    if (b->bytes > acc->bytes)
        acc->bytes = b->bytes;
}

size_t bw_llc_bytes(void) {
    size_t best = 0;
    int best_level = 0;
    for (int i = 0; i < 8; i++) {
        char path[128], v[64];
        int level = 0;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        FILE *f = fopen(path, "r");
        if (!f)
            break;
        if (fscanf(f, "%d", &level) != 1)
            level = 0;
        fclose(f);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        f = fopen(path, "r");
        if (!f)
            continue;
        size_t size = 0;
        if (fgets(v, sizeof v, f)) {
            char *end;
            size = (size_t)strtoull(v, &end, 10);
            if (*end == 'K')
                size <<= 10;
            else if (*end == 'M')
                size <<= 20;
        }
        fclose(f);
        if (level >= best_level && size) {
            best_level = level;
            best = size;
        }
    }
#ifdef _SC_LEVEL3_CACHE_SIZE
    if (!best) {
        long s = sysconf(_SC_LEVEL3_CACHE_SIZE);
        best = s > 0 ? (size_t)s : 0;
    }
#endif
    return best;
}
