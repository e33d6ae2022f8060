/* forward.c - Qwen3 forward pass: embed, decoder layers, final norm, lm_head.
 * See forward.h for the math; kernels.h for the matvec / GEMM kernels. */
#include "forward.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

struct fwd {
    const qwen3_model_t *m;
    threadpool_t *tp;
    int max_chunk;
    fwd_path_t path;
    kn_gemm_ws_t *gws;
    kn_rope_t rope;
    /* activations for up to max_chunk rows */
    float *x;    /* [C, H] residual stream */
    float *h;    /* [C, H] normed input of the current sublayer */
    float *q;    /* [C, nh*hd] */
    float *k;    /* [C, nkv*hd] */
    float *v;    /* [C, nkv*hd] */
    float *att;  /* [C, nh*hd] attention output */
    float *tmp;  /* [C, H] sublayer output */
    float *gate; /* [C, I] */
    float *up;   /* [C, I] */
    /* another device runs the pass (fwd_attach_device) */
    const fwd_device_ops_t *dev_ops;
    void *dev;
    /* the rest of a layer-range pipeline (tail.run == NULL: none) */
    fwd_tail_t tail;
};

static void fwd_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fwd_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void fwd_free(fwd_t *f) {
    if (!f)
        return;
    if (f->dev_ops)
        f->dev_ops->free(f->dev);
    kn_gemm_ws_free(f->gws);
    kn_rope_free(&f->rope);
    free(f->x);
    free(f->h);
    free(f->q);
    free(f->k);
    free(f->v);
    free(f->att);
    free(f->tmp);
    free(f->gate);
    free(f->up);
    free(f);
}

fwd_t *fwd_new(const qwen3_model_t *m, threadpool_t *tp, int max_chunk, char *err, size_t errlen) {
    const qwen3_config_t *c = &m->cfg;
    if (c->hidden <= 0 || c->n_heads <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 ||
        c->head_dim % 2 || c->n_heads % c->n_kv_heads || c->intermediate <= 0 ||
        c->vocab_size <= 0 || c->n_layers <= 0) {
        fwd_err(err, errlen,
                "forward: unsupported model shape (hidden %d, heads %d/%d, head_dim %d)", c->hidden,
                c->n_heads, c->n_kv_heads, c->head_dim);
        return NULL;
    }
    fwd_t *f = calloc(1, sizeof *f);
    if (!f)
        goto oom;
    f->m = m;
    f->tp = tp;
    f->max_chunk = max_chunk > 0 ? max_chunk : 256;
    size_t C = (size_t)f->max_chunk, H = (size_t)c->hidden, I = (size_t)c->intermediate;
    size_t QW = (size_t)c->n_heads * c->head_dim, KW = (size_t)c->n_kv_heads * c->head_dim;
    f->x = malloc(sizeof(float) * C * H);
    f->h = malloc(sizeof(float) * C * H);
    f->tmp = malloc(sizeof(float) * C * H);
    f->q = malloc(sizeof(float) * C * QW);
    f->att = malloc(sizeof(float) * C * QW);
    f->k = malloc(sizeof(float) * C * KW);
    f->v = malloc(sizeof(float) * C * KW);
    f->gate = malloc(sizeof(float) * C * I);
    f->up = malloc(sizeof(float) * C * I);
    if (!f->x || !f->h || !f->tmp || !f->q || !f->att || !f->k || !f->v || !f->gate || !f->up)
        goto oom;
    int64_t max_cols = c->hidden;
    if ((int64_t)QW > max_cols)
        max_cols = (int64_t)QW;
    if (c->intermediate > max_cols)
        max_cols = c->intermediate;
    f->gws = kn_gemm_ws_new(tp_nthreads(tp), max_cols);
    if (!f->gws)
        goto oom;
    if (kn_rope_init(&f->rope, c->head_dim, c->rope_theta, &c->rope_scaling) != 0 ||
        kn_rope_reserve(&f->rope, 4096) != 0)
        goto oom;
    return f;
oom:
    fwd_err(err, errlen, "forward: out of memory for %d-token chunk scratch",
            max_chunk > 0 ? max_chunk : 256);
    fwd_free(f);
    return NULL;
}

int fwd_max_chunk(const fwd_t *f) {
    return f->max_chunk;
}

void fwd_attach_device(fwd_t *f, const fwd_device_ops_t *ops, void *dev) {
    if (f->dev_ops)
        f->dev_ops->free(f->dev);
    f->dev_ops = ops;
    f->dev = dev;
}

const char *fwd_device_name(const fwd_t *f) {
    return f->dev_ops ? f->dev_ops->name : "cpu";
}

void *fwd_device(const fwd_t *f) {
    return f->dev_ops ? f->dev : NULL;
}

void fwd_set_path(fwd_t *f, fwd_path_t path) {
    f->path = path;
}

/* Y[n, rows_j] = X[n, cols] W_j^T for njobs matrices: matvec per row for
 * n == 1 (or the forced matvec path), GEMM otherwise. */
static void fwd_linear(fwd_t *f, const kn_job_t *jobs, int njobs, const float *x, int n) {
    if (n > 1 && f->path == FWD_PATH_AUTO) {
        kn_gemm(f->tp, f->gws, jobs, njobs, x, n);
        return;
    }
    int64_t cols = jobs[0].w->shape[1];
    for (int i = 0; i < n; i++) {
        kn_job_t row[8];
        for (int j = 0; j < njobs && j < 8; j++) {
            row[j].w = jobs[j].w;
            row[j].y = jobs[j].y + (size_t)i * jobs[j].w->shape[0];
        }
        kn_matvec(f->tp, row, njobs < 8 ? njobs : 8, x + (size_t)i * cols);
    }
}

static void fwd_norm_rows(float *out, const float *x, const tensor_t *w, int n, int width,
                          float eps) {
    for (int i = 0; i < n; i++)
        kn_rmsnorm(out + (size_t)i * width, x + (size_t)i * width, w, width, eps);
}

/* One decoder layer over the chunk's n rows (hot path of prefill and decode). */
static int fwd_layer(fwd_t *f, kvcache_t *kv, int seq, int l, int n, int pos0,
                     const fwd_hooks_t *hooks, char *err, size_t errlen) {
    const qwen3_config_t *c = &f->m->cfg;
    const qwen3_layer_t *L = &f->m->layers[l];
    int H = c->hidden, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads, I = c->intermediate;

    /* attention block */
    fwd_norm_rows(f->h, f->x, &L->input_norm, n, H, c->rms_eps);
    kn_job_t qkv[3] = {{&L->wq, f->q}, {&L->wk, f->k}, {&L->wv, f->v}};
    fwd_linear(f, qkv, 3, f->h, n);
    kn_rmsnorm_many(f->q, n * nh, &L->q_norm, hd, c->rms_eps);
    kn_rmsnorm_many(f->k, n * nkv, &L->k_norm, hd, c->rms_eps);
    for (int i = 0; i < n; i++) {
        kn_rope_apply(&f->rope, f->q + (size_t)i * nh * hd, nh, pos0 + i);
        kn_rope_apply(&f->rope, f->k + (size_t)i * nkv * hd, nkv, pos0 + i);
    }
    int rc = kvcache_append_n(kv, seq, l, pos0, n, f->k, f->v);
    if (rc != KV_OK) {
        fwd_err(err, errlen, "layer %d: KV append at position %d failed: %s (%s)", l, pos0,
                kvcache_strerror(rc), kvcache_errmsg(kv));
        return -1;
    }
    if (hooks && hooks->before_attention &&
        hooks->before_attention(hooks->ud, kv, seq, l, pos0, n, f->q) != 0) {
        fwd_err(err, errlen, "layer %d: before-attention hook aborted at position %d", l, pos0);
        return -1;
    }
    rc = kvcache_attend(kv, seq, l, f->q, n, pos0, f->att, f->tp);
    if (rc != KV_OK) {
        fwd_err(err, errlen, "layer %d: attention at position %d failed: %s (%s)", l, pos0,
                kvcache_strerror(rc), kvcache_errmsg(kv));
        return -1;
    }
    kn_job_t o = {&L->wo, f->tmp};
    fwd_linear(f, &o, 1, f->att, n);
    kn_add(f->x, f->tmp, (int64_t)n * H);

    /* MLP block */
    fwd_norm_rows(f->h, f->x, &L->post_norm, n, H, c->rms_eps);
    kn_job_t gu[2] = {{&L->w_gate, f->gate}, {&L->w_up, f->up}};
    fwd_linear(f, gu, 2, f->h, n);
    kn_silu_mul(f->gate, f->up, (int64_t)n * I);
    kn_job_t d = {&L->w_down, f->tmp};
    fwd_linear(f, &d, 1, f->gate, n);
    kn_add(f->x, f->tmp, (int64_t)n * H);
    return 0;
}

/* One chunk of n <= max_chunk tokens. */
static int fwd_chunk(fwd_t *f, kvcache_t *kv, int seq, const int *ids, int n, int pos0,
                     float *logits, int all_logits, const fwd_hooks_t *hooks, char *err,
                     size_t errlen) {
    const qwen3_config_t *c = &f->m->cfg;
    int H = c->hidden, V = c->vocab_size;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= V || ids[i] >= f->m->embed.shape[0]) {
            fwd_err(err, errlen, "token id %d at position %d is outside the vocabulary [0, %d)",
                    ids[i], pos0 + i, V);
            return -1;
        }
        tensor_row_f32(&f->m->embed, ids[i], f->x + (size_t)i * H);
    }
    if (kn_rope_reserve(&f->rope, pos0 + n) != 0) {
        fwd_err(err, errlen, "out of memory for RoPE tables up to position %d", pos0 + n);
        return -1;
    }
    for (int l = 0; l < c->n_layers; l++)
        if (fwd_layer(f, kv, seq, l, n, pos0, hooks, err, errlen) != 0)
            return -1;
    int want = !logits ? 0 : all_logits ? n : 1; /* rows whose logits the caller reads */
    if (f->tail.run && f->tail.run(f->tail.ud, seq, pos0, n, f->x, want, err, errlen) != 0)
        return -1;
    if (!logits)
        return 0;
    if (all_logits) {
        fwd_norm_rows(f->h, f->x, &f->m->final_norm, n, H, c->rms_eps);
        kn_job_t lm = {&f->m->lm_head, logits};
        fwd_linear(f, &lm, 1, f->h, n);
    } else {
        kn_rmsnorm(f->h, f->x + (size_t)(n - 1) * H, &f->m->final_norm, H, c->rms_eps);
        kn_job_t lm = {&f->m->lm_head, logits};
        kn_matvec(f->tp, &lm, 1, f->h);
    }
    return 0;
}

int fwd_run(fwd_t *f, kvcache_t *kv, int seq, const int *ids, int n, int pos0, float *logits,
            int all_logits, const fwd_hooks_t *hooks, char *err, size_t errlen) {
    if (n <= 0 || pos0 < 0) {
        fwd_err(err, errlen,
                "forward: need at least one token at a position >= 0 (got n=%d, pos0=%d)", n, pos0);
        return -1;
    }
    if (f->dev_ops && f->tail.run) {
        fwd_err(err, errlen,
                "forward: the %s backend does not run a layer-range pipeline (use the CPU backend)",
                f->dev_ops->name);
        return -1;
    }
    if (f->dev_ops)
        return f->dev_ops->run(f->dev, kv, seq, ids, n, pos0, logits, all_logits, hooks, err,
                               errlen);
    size_t V = (size_t)f->m->cfg.vocab_size;
    for (int done = 0; done < n;) {
        int m = n - done < f->max_chunk ? n - done : f->max_chunk;
        int last = done + m == n;
        float *lg = NULL;
        if (logits && all_logits)
            lg = logits + (size_t)done * V;
        else if (logits && last)
            lg = logits;
        if (fwd_chunk(f, kv, seq, ids + done, m, pos0 + done, lg, all_logits, hooks, err, errlen) !=
            0)
            return -1;
        done += m;
    }
    return 0;
}

/* ---------------------------------------------------------------- pipeline seams */

void fwd_set_tail(fwd_t *f, const fwd_tail_t *tail) {
    if (tail)
        f->tail = *tail;
    else
        memset(&f->tail, 0, sizeof f->tail);
}

int fwd_layers(fwd_t *f, kvcache_t *kv, int seq, float *x, int n, int pos0,
               const fwd_hooks_t *hooks, char *err, size_t errlen) {
    const qwen3_config_t *c = &f->m->cfg;
    if (n <= 0 || pos0 < 0 || n > f->max_chunk) {
        fwd_err(err, errlen, "forward: %d rows at position %d (need 1..%d rows at a position >= 0)",
                n, pos0, f->max_chunk);
        return -1;
    }
    if (kn_rope_reserve(&f->rope, pos0 + n) != 0) {
        fwd_err(err, errlen, "out of memory for RoPE tables up to position %d", pos0 + n);
        return -1;
    }
    size_t bytes = sizeof(float) * (size_t)n * (size_t)c->hidden;
    memcpy(f->x, x, bytes);
    for (int l = 0; l < c->n_layers; l++)
        if (fwd_layer(f, kv, seq, l, n, pos0, hooks, err, errlen) != 0)
            return -1;
    memcpy(x, f->x, bytes);
    return 0;
}
