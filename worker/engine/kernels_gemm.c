/* kernels_gemm.c - prefill GEMM: Y[n, rows] = X[n, cols] W^T through OpenBLAS.
 *
 * 16-bit weights are converted one row-panel (~1 MiB of f32) at a time into a
 * per-thread scratch buffer and multiplied with cblas_sgemm; panels of all the
 * jobs are spread over our thread pool, OpenBLAS itself runs single-threaded
 * (set once), so the two never oversubscribe the cores. */
#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>

#include "dtype.h"
#include "kernels.h"

#define KN_PANEL_FLOATS (1 << 18) /* 1 MiB of f32 per panel */
#define KN_GEMM_MAX_JOBS 8

struct kn_gemm_ws {
    int nthreads;
    int64_t max_cols;
    int64_t panel_rows;
    float **panel; /* [nthreads][panel_rows * max_cols] */
};

static pthread_once_t g_blas_once = PTHREAD_ONCE_INIT;
static void kn_blas_single(void) {
    openblas_set_num_threads(1);
}

kn_gemm_ws_t *kn_gemm_ws_new(int nthreads, int64_t max_cols) {
    if (nthreads < 1 || max_cols < 1)
        return NULL;
    pthread_once(&g_blas_once, kn_blas_single);
    kn_gemm_ws_t *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->nthreads = nthreads;
    ws->max_cols = max_cols;
    int64_t pr = (KN_PANEL_FLOATS / max_cols) & ~(int64_t)15;
    ws->panel_rows = pr < 16 ? 16 : pr;
    ws->panel = calloc((size_t)nthreads, sizeof *ws->panel);
    if (!ws->panel)
        goto fail;
    for (int t = 0; t < nthreads; t++) {
        ws->panel[t] = malloc(sizeof(float) * (size_t)(ws->panel_rows * max_cols));
        if (!ws->panel[t])
            goto fail;
    }
    return ws;
fail:
    kn_gemm_ws_free(ws);
    return NULL;
}

void kn_gemm_ws_free(kn_gemm_ws_t *ws) {
    if (!ws)
        return;
    if (ws->panel)
        for (int t = 0; t < ws->nthreads; t++)
            free(ws->panel[t]);
    free(ws->panel);
    free(ws);
}

typedef struct {
    kn_gemm_ws_t *ws;
    const kn_job_t *jobs;
    const float *x;
    int n;
    int task_end[KN_GEMM_MAX_JOBS];
} gemm_ctx;

static void gemm_task(void *ctxp, int task, int thread) {
    gemm_ctx *c = ctxp;
    int j = 0;
    while (task >= c->task_end[j])
        j++;
    int t0 = j ? c->task_end[j - 1] : 0;
    const tensor_t *w = c->jobs[j].w;
    int64_t rows = w->shape[0], cols = w->shape[1], pr = c->ws->panel_rows;
    int64_t r0 = (int64_t)(task - t0) * pr;
    int64_t nr = rows - r0 < pr ? rows - r0 : pr;
    const float *b;
    if (w->dtype == DT_F32) {
        b = (const float *)w->data + r0 * cols;
    } else {
        float *panel = c->ws->panel[thread];
        const char *src = (const char *)w->data + (size_t)(r0 * cols) * dtype_size(w->dtype);
        dtype_row_to_f32(w->dtype, src, panel, (size_t)(nr * cols));
        b = panel;
    }
    /* Y[:, r0:r0+nr] = X[n, cols] * B[nr, cols]^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c->n, (int)nr, (int)cols, 1.0f, c->x,
                (int)cols, b, (int)cols, 0.0f, c->jobs[j].y + r0, (int)rows);
}

void kn_gemm(threadpool_t *tp, kn_gemm_ws_t *ws, const kn_job_t *jobs, int njobs, const float *x,
             int n) {
    while (njobs > KN_GEMM_MAX_JOBS) {
        kn_gemm(tp, ws, jobs, KN_GEMM_MAX_JOBS, x, n);
        jobs += KN_GEMM_MAX_JOBS;
        njobs -= KN_GEMM_MAX_JOBS;
    }
    if (njobs <= 0 || n <= 0)
        return;
    gemm_ctx c = {.ws = ws, .jobs = jobs, .x = x, .n = n};
    int total = 0;
    for (int j = 0; j < njobs; j++) {
        total += (int)((jobs[j].w->shape[0] + ws->panel_rows - 1) / ws->panel_rows);
        c.task_end[j] = total;
    }
    tp_parallel_for(tp, total, gemm_task, &c);
}
