/* kernels.c - ISA dispatch, scalar row kernels, the parallel matvec driver,
 * RMSNorm, RoPE, SwiGLU. See kernels.h. */
#include "kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "kernels_impl.h"

/* ================================================================ ISA */

static kn_isa_t g_best, g_active;
static pthread_once_t g_isa_once = PTHREAD_ONCE_INIT;

static void kn_isa_detect(void) {
    kn_isa_t best = KN_ISA_SCALAR;
#if KN_HAVE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
        best = KN_ISA_AVX2;
    if (best == KN_ISA_AVX2 && __builtin_cpu_supports("avx512f") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        best = KN_ISA_AVX512;
#endif
    g_best = best;
    g_active = best;
}

kn_isa_t kn_isa_best(void) {
    pthread_once(&g_isa_once, kn_isa_detect);
    return g_best;
}

kn_isa_t kn_isa_active(void) {
    pthread_once(&g_isa_once, kn_isa_detect);
    return g_active;
}

int kn_isa_set(kn_isa_t isa) {
    pthread_once(&g_isa_once, kn_isa_detect);
    if (isa < KN_ISA_SCALAR || isa > g_best)
        return -1;
    g_active = isa;
    return 0;
}

const char *kn_isa_name(kn_isa_t isa) {
    switch (isa) {
    case KN_ISA_SCALAR:
        return "scalar";
    case KN_ISA_AVX2:
        return "avx2";
    case KN_ISA_AVX512:
        return "avx512";
    }
    return "?";
}

/* ================================================================ scalar rows */

static void mv_bf16_scalar(const void *wv, int64_t ld, int64_t nrows, const float *x, int64_t n,
                           float *y) {
    const uint16_t *w = wv;
    for (int64_t r = 0; r < nrows; r++) {
        const uint16_t *row = w + r * ld;
        float s = 0.0f;
        for (int64_t i = 0; i < n; i++)
            s += dtype_bf16_to_f32(row[i]) * x[i];
        y[r] = s;
    }
}

static void mv_f16_scalar(const void *wv, int64_t ld, int64_t nrows, const float *x, int64_t n,
                          float *y) {
    const uint16_t *w = wv;
    for (int64_t r = 0; r < nrows; r++) {
        const uint16_t *row = w + r * ld;
        float s = 0.0f;
        for (int64_t i = 0; i < n; i++)
            s += dtype_f16_to_f32(row[i]) * x[i];
        y[r] = s;
    }
}

static void mv_f32_scalar(const void *wv, int64_t ld, int64_t nrows, const float *x, int64_t n,
                          float *y) {
    const float *w = wv;
    for (int64_t r = 0; r < nrows; r++) {
        const float *row = w + r * ld;
        float s = 0.0f;
        for (int64_t i = 0; i < n; i++)
            s += row[i] * x[i];
        y[r] = s;
    }
}

static kn_rowk_fn kn_row_kernel(dtype_t dt) {
    kn_isa_t isa = kn_isa_active();
#if KN_HAVE_X86
    if (isa == KN_ISA_AVX512)
        return dt == DT_BF16  ? kn_mv_bf16_avx512
               : dt == DT_F16 ? kn_mv_f16_avx512
                              : kn_mv_f32_avx512;
    if (isa == KN_ISA_AVX2)
        return dt == DT_BF16 ? kn_mv_bf16_avx2 : dt == DT_F16 ? kn_mv_f16_avx2 : kn_mv_f32_avx2;
#else
    (void)isa;
#endif
    return dt == DT_BF16 ? mv_bf16_scalar : dt == DT_F16 ? mv_f16_scalar : mv_f32_scalar;
}

void kn_matvec_rows(const tensor_t *w, int64_t row0, int64_t nrows, const float *x, float *y) {
    int64_t cols = w->shape[1];
    const char *base = (const char *)w->data + (size_t)(row0 * cols) * dtype_size(w->dtype);
    kn_row_kernel(w->dtype)(base, cols, nrows, x, cols, y);
}

/* ================================================================ parallel matvec */

#define KN_MAX_JOBS 8

typedef struct {
    const kn_job_t *jobs;
    int njobs;
    const float *x;
    int64_t rows_per_task;
    int task_end[KN_MAX_JOBS]; /* exclusive prefix sums of the tasks per job */
    kn_rowk_fn fn[KN_MAX_JOBS];
} mv_ctx;

static void mv_task(void *ctxp, int task, int thread) {
    (void)thread;
    mv_ctx *c = ctxp;
    int j = 0;
    while (task >= c->task_end[j])
        j++;
    int t0 = j ? c->task_end[j - 1] : 0;
    const tensor_t *w = c->jobs[j].w;
    int64_t rows = w->shape[0], cols = w->shape[1];
    int64_t r0 = (int64_t)(task - t0) * c->rows_per_task;
    int64_t nr = rows - r0 < c->rows_per_task ? rows - r0 : c->rows_per_task;
    const char *base = (const char *)w->data + (size_t)(r0 * cols) * dtype_size(w->dtype);
    c->fn[j](base, cols, nr, c->x, cols, c->jobs[j].y + r0);
}

void kn_matvec(threadpool_t *tp, const kn_job_t *jobs, int njobs, const float *x) {
    while (njobs > KN_MAX_JOBS) { /* not expected; keeps the contract for any count */
        kn_matvec(tp, jobs, KN_MAX_JOBS, x);
        jobs += KN_MAX_JOBS;
        njobs -= KN_MAX_JOBS;
    }
    if (njobs <= 0)
        return;
    mv_ctx c = {.jobs = jobs, .njobs = njobs, .x = x};
    /* 256 KiB of weights per task (each task start is a cold stream: the row
     * prefetch only runs ahead inside a task), down to 64 KiB when that would
     * leave fewer than 4 tasks per thread. Multiple of 4 rows. */
    int64_t cols = jobs[0].w->shape[1];
    int64_t bytes_row = cols * (int64_t)dtype_size(jobs[0].w->dtype);
    int64_t all = 0;
    for (int j = 0; j < njobs; j++)
        all += jobs[j].w->shape[0] * bytes_row;
    int64_t task_bytes = all / (4 * (int64_t)tp_nthreads(tp));
    task_bytes = task_bytes > 262144 ? 262144 : task_bytes < 65536 ? 65536 : task_bytes;
    int64_t rpt = (task_bytes / (bytes_row ? bytes_row : 1)) & ~(int64_t)3;
    if (rpt < 4)
        rpt = 4;
    c.rows_per_task = rpt;
    int total = 0;
    for (int j = 0; j < njobs; j++) {
        total += (int)((jobs[j].w->shape[0] + rpt - 1) / rpt);
        c.task_end[j] = total;
        c.fn[j] = kn_row_kernel(jobs[j].w->dtype);
    }
    tp_parallel_for(tp, total, mv_task, &c);
}

/* ================================================================ small ops */

void kn_rmsnorm(float *out, const float *x, const tensor_t *w, int n, float eps) {
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float inv = 1.0f / sqrtf((float)(ss / n) + eps);
    switch (w->dtype) {
    case DT_F32: {
        const float *wf = w->data;
        for (int i = 0; i < n; i++)
            out[i] = wf[i] * (x[i] * inv);
        break;
    }
    case DT_BF16: {
        const uint16_t *wh = w->data;
        for (int i = 0; i < n; i++)
            out[i] = dtype_bf16_to_f32(wh[i]) * (x[i] * inv);
        break;
    }
    case DT_F16: {
        const uint16_t *wh = w->data;
        for (int i = 0; i < n; i++)
            out[i] = dtype_f16_to_f32(wh[i]) * (x[i] * inv);
        break;
    }
    }
}

void kn_rmsnorm_many(float *xs, int nvec, const tensor_t *w, int n, float eps) {
    for (int v = 0; v < nvec; v++)
        kn_rmsnorm(xs + (size_t)v * n, xs + (size_t)v * n, w, n, eps);
}

int kn_rope_init(kn_rope_t *r, int head_dim, double theta, const rope_scaling_t *sc) {
    memset(r, 0, sizeof *r);
    if (head_dim <= 0 || head_dim % 2 || !(theta > 0))
        return -1;
    r->head_dim = head_dim;
    r->theta = (float)theta;
    r->attn = sc && sc->kind == ROPE_SCALING_YARN ? (float)sc->attention_factor : 1.0f;
    r->inv_freq = malloc(sizeof(float) * (size_t)(head_dim / 2));
    if (!r->inv_freq)
        return -1;
    /* torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)) in f32, then the scaling */
    if (rope_scaling_inv_freq(sc, head_dim, theta, r->inv_freq) != 0) {
        kn_rope_free(r);
        return -1;
    }
    return 0;
}

int kn_rope_reserve(kn_rope_t *r, int npos) {
    if (npos <= r->cap)
        return 0;
    int cap = r->cap ? r->cap : 256;
    while (cap < npos)
        cap = cap > (1 << 29) ? npos : cap * 2;
    int half = r->head_dim / 2;
    float *c = realloc(r->cos, sizeof(float) * (size_t)cap * half);
    if (!c)
        return -1;
    r->cos = c;
    float *s = realloc(r->sin, sizeof(float) * (size_t)cap * half);
    if (!s)
        return -1;
    r->sin = s;
    for (int p = r->cap; p < cap; p++) {
        for (int i = 0; i < half; i++) {
            float ang = (float)p * r->inv_freq[i]; /* f32 product, as torch */
            /* transformers: emb.cos() * attention_scaling (f32) */
            r->cos[(size_t)p * half + i] = (float)cos((double)ang) * r->attn;
            r->sin[(size_t)p * half + i] = (float)sin((double)ang) * r->attn;
        }
    }
    r->cap = cap;
    return 0;
}

void kn_rope_free(kn_rope_t *r) {
    free(r->inv_freq);
    free(r->cos);
    free(r->sin);
    memset(r, 0, sizeof *r);
}

void kn_rope_apply(const kn_rope_t *r, float *v, int nheads, int pos) {
    int hd = r->head_dim, half = hd / 2;
    const float *c = r->cos + (size_t)pos * half, *s = r->sin + (size_t)pos * half;
    for (int h = 0; h < nheads; h++) {
        float *x = v + (size_t)h * hd;
        for (int i = 0; i < half; i++) {
            /* out = x*cos + rotate_half(x)*sin, rotate_half = [-x2, x1] */
            float x1 = x[i], x2 = x[i + half];
            x[i] = x1 * c[i] - x2 * s[i];
            x[i + half] = x2 * c[i] + x1 * s[i];
        }
    }
}

void kn_silu_mul(float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float a = g[i];
        g[i] = a / (1.0f + expf(-a)) * u[i];
    }
}

void kn_add(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        y[i] += x[i];
}
