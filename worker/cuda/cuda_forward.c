/* cuda_forward.c - Qwen3 forward pass on the GPU (cuda_forward.h). */
#include "cuda_forward.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "cuda_blas.h"
#include "cuda_kernels.h"
#include "cuda_kv.h"
#include "cuda_util.h"
#include "kernels.h"

typedef struct {
    void *wq, *wk, *wv, *wo, *wg, *wu, *wd; /* [rows, cols] in wdt */
    float *in_norm, *post_norm, *q_norm, *k_norm;
} cf_layer;

struct cuda_fwd {
    const qwen3_model_t *m;
    int C;   /* max rows per chunk */
    int wdt; /* CK_BF16 or CK_F32 */
    cudaStream_t s;
    cuda_lin_t *lin;
    cuda_kv_t *kv;
    cf_layer *L;
    void *embed, *lm_head; /* lm_head == embed when tied */
    float *final_norm;
    /* device activations [C][...] */
    float *x, *h, *q, *k, *v, *att, *gate, *up;
    void *logits; /* [rows][V], grown for all_logits */
    size_t logits_cap;
    int *ids;
    ck_row_dst_t *dst;
    /* pinned host mirrors */
    float *hq, *hk, *hv, *hatt;
    int *hids;
    ck_row_dst_t *hdst;
    void *hlogits;
    size_t hlogits_cap;
    /* fast path: per-layer K/V row copies and append destinations, so the
     * layers run without waiting for the host (cache appends after the chunk) */
    float *fk, *fv;            /* pinned [nl][C][KW]: the rows for the cache */
    float *kall, *vall;        /* device [nl][C][KW]: each layer's k, v */
    ck_row_dst_t *fdst;        /* pinned [nl][n]: append destinations of the chunk */
    ck_row_dst_t *fddst;       /* device copy */
    ck_blk_t *ftab;            /* pinned [nl][nlog]: block tables of the chunk */
    void *dtab;                /* device copy */
    size_t ftab_cap, dtab_cap; /* bytes */
    uint64_t fast_chunks, slow_chunks;
    /* RoPE: the CPU tables (kernels.h), uploaded */
    kn_rope_t rope;
    float *dcos, *dsin;
    int rope_dev_cap;
    cuda_fwd_info_t info;
};

static void cf_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cf_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ================================================================ weights */

/* Copies tensor t to the device as dtype `to` (CK_F32 or CK_BF16), converting
 * on the host in chunks when the dtypes differ. */
static int cf_upload(cuda_fwd_t *f, const tensor_t *t, int to, void **out, char *err,
                     size_t errlen) {
    const int64_t n = tensor_numel(t);
    const size_t es = to == CK_BF16 ? 2 : 4, bytes = (size_t)n * es;
    void *stage = NULL;
    cudaError_t e = cudaMalloc(out, bytes);
    if (e != cudaSuccess) {
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        cf_err(err, errlen,
               "cuda: cannot allocate %zu bytes for %s (%s; %zu of %zu MiB free): the model does "
               "not fit this GPU",
               bytes, t->name ? t->name : "a tensor", cudaGetErrorString(e), fr >> 20, tot >> 20);
        *out = NULL;
        return -1;
    }
    f->info.weight_bytes += bytes;
    if ((int)t->dtype == to) {
        CU_TRY(cudaMemcpy(*out, t->data, bytes, cudaMemcpyHostToDevice));
        f->info.h2d_bytes += bytes;
        return 0;
    }
    const int64_t chunk = 1 << 20;
    CU_TRY(cudaMallocHost(&stage, (size_t)chunk * es));
    for (int64_t i0 = 0; i0 < n; i0 += chunk) {
        int64_t m = n - i0 < chunk ? n - i0 : chunk;
        for (int64_t i = 0; i < m; i++) {
            float x = tensor_get_f32(t, i0 + i);
            if (to == CK_BF16)
                ((uint16_t *)stage)[i] = attn_f32_to_bf16(x);
            else
                ((float *)stage)[i] = x;
        }
        CU_TRY(cudaMemcpy((char *)*out + (size_t)i0 * es, stage, (size_t)m * es,
                          cudaMemcpyHostToDevice));
    }
    f->info.h2d_bytes += bytes;
    cudaFreeHost(stage);
    return 0;
fail:
    cudaFreeHost(stage);
    return -1;
}

static int cf_all_bf16(const qwen3_model_t *m) {
    if (m->embed.dtype != DT_BF16 || m->lm_head.dtype != DT_BF16)
        return 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const qwen3_layer_t *L = &m->layers[l];
        const tensor_t *w[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++)
            if (w[i]->dtype != DT_BF16)
                return 0;
    }
    return 1;
}

static int cf_upload_weights(cuda_fwd_t *f, char *err, size_t errlen) {
    const qwen3_model_t *m = f->m;
    f->wdt = cf_all_bf16(m) ? CK_BF16 : CK_F32;
    f->info.weight_dtype = f->wdt;
    if (cf_upload(f, &m->embed, f->wdt, &f->embed, err, errlen) ||
        cf_upload(f, &m->final_norm, CK_F32, (void **)&f->final_norm, err, errlen))
        return -1;
    if (m->lm_head.data == m->embed.data && m->lm_head.dtype == m->embed.dtype)
        f->lm_head = f->embed;
    else if (cf_upload(f, &m->lm_head, f->wdt, &f->lm_head, err, errlen))
        return -1;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        const qwen3_layer_t *W = &m->layers[l];
        cf_layer *D = &f->L[l];
        if (cf_upload(f, &W->wq, f->wdt, &D->wq, err, errlen) ||
            cf_upload(f, &W->wk, f->wdt, &D->wk, err, errlen) ||
            cf_upload(f, &W->wv, f->wdt, &D->wv, err, errlen) ||
            cf_upload(f, &W->wo, f->wdt, &D->wo, err, errlen) ||
            cf_upload(f, &W->w_gate, f->wdt, &D->wg, err, errlen) ||
            cf_upload(f, &W->w_up, f->wdt, &D->wu, err, errlen) ||
            cf_upload(f, &W->w_down, f->wdt, &D->wd, err, errlen) ||
            cf_upload(f, &W->input_norm, CK_F32, (void **)&D->in_norm, err, errlen) ||
            cf_upload(f, &W->post_norm, CK_F32, (void **)&D->post_norm, err, errlen) ||
            cf_upload(f, &W->q_norm, CK_F32, (void **)&D->q_norm, err, errlen) ||
            cf_upload(f, &W->k_norm, CK_F32, (void **)&D->k_norm, err, errlen))
            return -1;
    }
    return 0;
}

/* ================================================================ lifetime */

void cuda_fwd_free(cuda_fwd_t *f) {
    if (!f)
        return;
    if (f->s)
        cudaStreamSynchronize(f->s);
    cuda_kv_free(f->kv);
    cuda_lin_free(f->lin);
    if (f->L) {
        for (int l = 0; l < f->m->cfg.n_layers; l++) {
            cf_layer *D = &f->L[l];
            void *p[] = {D->wq, D->wk,      D->wv,        D->wo,     D->wg,    D->wu,
                         D->wd, D->in_norm, D->post_norm, D->q_norm, D->k_norm};
            for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
                cudaFree(p[i]);
        }
        free(f->L);
    }
    if (f->lm_head != f->embed)
        cudaFree(f->lm_head);
    cudaFree(f->embed);
    cudaFree(f->fddst);
    cudaFree(f->kall);
    cudaFree(f->vall);
    cudaFree(f->dtab);
    cudaFreeHost(f->ftab);
    void *d[] = {f->final_norm, f->x,  f->h,      f->q,   f->k,   f->v,    f->att,
                 f->gate,       f->up, f->logits, f->ids, f->dst, f->dcos, f->dsin};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        cudaFree(d[i]);
    void *hp[] = {f->hq,   f->hk,      f->hv, f->hatt, f->hids,
                  f->hdst, f->hlogits, f->fk, f->fv,   f->fdst};
    for (size_t i = 0; i < sizeof hp / sizeof hp[0]; i++)
        cudaFreeHost(hp[i]);
    kn_rope_free(&f->rope);
    if (f->s)
        cudaStreamDestroy(f->s);
    free(f);
}

cuda_fwd_t *cuda_fwd_new(const qwen3_model_t *m, int max_chunk, char *err, size_t errlen) {
    const qwen3_config_t *c = &m->cfg;
    if (c->head_dim > CK_MAX_HEAD_DIM || c->head_dim % 2 || c->n_kv_heads <= 0 ||
        c->n_heads % c->n_kv_heads) {
        cf_err(err, errlen, "cuda: unsupported shape (heads %d/%d, head_dim %d; at most %d)",
               c->n_heads, c->n_kv_heads, c->head_dim, CK_MAX_HEAD_DIM);
        return NULL;
    }
    cuda_fwd_t *f = calloc(1, sizeof *f);
    if (!f || !(f->L = calloc((size_t)c->n_layers, sizeof *f->L))) {
        free(f);
        cf_err(err, errlen, "cuda: out of host memory");
        return NULL;
    }
    f->m = m;
    f->C = max_chunk > 0 ? max_chunk : 256;
    struct cudaDeviceProp prop;
    CU_TRY(cudaSetDevice(0));
    CU_TRY(cudaGetDeviceProperties(&prop, 0));
    snprintf(f->info.device, sizeof f->info.device, "%s", prop.name);
    CU_TRY(cudaStreamCreateWithFlags(&f->s, cudaStreamNonBlocking));
    if (cf_upload_weights(f, err, errlen))
        goto out;
    const size_t C = (size_t)f->C, H = (size_t)c->hidden, I = (size_t)c->intermediate;
    const size_t QW = (size_t)c->n_heads * c->head_dim, KW = (size_t)c->n_kv_heads * c->head_dim;
    CU_TRY(cudaMalloc((void **)&f->x, sizeof(float) * C * H));
    CU_TRY(cudaMalloc((void **)&f->h, sizeof(float) * C * H));
    CU_TRY(cudaMalloc((void **)&f->q, sizeof(float) * C * QW));
    CU_TRY(cudaMalloc((void **)&f->att, sizeof(float) * C * QW));
    CU_TRY(cudaMalloc((void **)&f->k, sizeof(float) * C * KW));
    CU_TRY(cudaMalloc((void **)&f->v, sizeof(float) * C * KW));
    CU_TRY(cudaMalloc((void **)&f->gate, sizeof(float) * C * I));
    CU_TRY(cudaMalloc((void **)&f->up, sizeof(float) * C * I));
    CU_TRY(cudaMalloc((void **)&f->ids, sizeof(int) * C));
    CU_TRY(cudaMalloc((void **)&f->dst, sizeof(ck_row_dst_t) * C));
    CU_TRY(cudaMallocHost((void **)&f->hq, sizeof(float) * C * QW));
    CU_TRY(cudaMallocHost((void **)&f->hatt, sizeof(float) * C * QW));
    CU_TRY(cudaMallocHost((void **)&f->hk, sizeof(float) * C * KW));
    CU_TRY(cudaMallocHost((void **)&f->hv, sizeof(float) * C * KW));
    CU_TRY(cudaMallocHost((void **)&f->hids, sizeof(int) * C));
    CU_TRY(cudaMallocHost((void **)&f->hdst, sizeof(ck_row_dst_t) * C));
    size_t maxc = H > QW ? H : QW;
    if (I > maxc)
        maxc = I;
    if (!(f->lin = cuda_lin_new(f->s, f->C, (int)maxc, err, errlen)) ||
        !(f->kv =
              cuda_kv_new(c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, f->s, err, errlen)))
        goto out;
    if (kn_rope_init(&f->rope, c->head_dim, c->rope_theta, &c->rope_scaling) != 0) {
        cf_err(err, errlen, "cuda: cannot build the RoPE tables");
        goto out;
    }
    return f;
fail:
out:
    cuda_fwd_free(f);
    return NULL;
}

/* ================================================================ run */

/* Makes RoPE positions [0, npos) available on the device. */
static int cf_rope(cuda_fwd_t *f, int npos, char *err, size_t errlen) {
    if (npos <= f->rope_dev_cap)
        return 0;
    if (kn_rope_reserve(&f->rope, npos) != 0) {
        cf_err(err, errlen, "out of memory for RoPE tables up to position %d", npos);
        return -1;
    }
    const size_t half = (size_t)f->rope.head_dim / 2, n = (size_t)f->rope.cap * half;
    CU_TRY(cudaStreamSynchronize(f->s));
    cudaFree(f->dcos);
    cudaFree(f->dsin);
    f->dcos = f->dsin = NULL;
    f->rope_dev_cap = 0;
    CU_TRY(cudaMalloc((void **)&f->dcos, sizeof(float) * n));
    CU_TRY(cudaMalloc((void **)&f->dsin, sizeof(float) * n));
    CU_TRY(cudaMemcpy(f->dcos, f->rope.cos, sizeof(float) * n, cudaMemcpyHostToDevice));
    CU_TRY(cudaMemcpy(f->dsin, f->rope.sin, sizeof(float) * n, cudaMemcpyHostToDevice));
    f->info.h2d_bytes += 2 * sizeof(float) * n;
    f->rope_dev_cap = f->rope.cap;
    return 0;
fail:
    return -1;
}

/* The K/V rows of this chunk: down to the host cache (digests, tiers) and
 * into the device blocks. */
static int cf_append(cuda_fwd_t *f, kvcache_t *kv, int seq, int l, int n, int pos0, char *err,
                     size_t errlen) {
    const qwen3_config_t *c = &f->m->cfg;
    const size_t QW = (size_t)c->n_heads * c->head_dim, KW = (size_t)c->n_kv_heads * c->head_dim;
    CU_TRY(cudaMemcpyAsync(f->hq, f->q, sizeof(float) * n * QW, cudaMemcpyDeviceToHost, f->s));
    CU_TRY(cudaMemcpyAsync(f->hk, f->k, sizeof(float) * n * KW, cudaMemcpyDeviceToHost, f->s));
    CU_TRY(cudaMemcpyAsync(f->hv, f->v, sizeof(float) * n * KW, cudaMemcpyDeviceToHost, f->s));
    CU_TRY(cudaStreamSynchronize(f->s));
    f->info.d2h_bytes += sizeof(float) * n * (QW + 2 * KW);
    int rc = kvcache_append_n(kv, seq, l, pos0, n, f->hk, f->hv);
    if (rc != KV_OK) {
        cf_err(err, errlen, "layer %d: KV append at position %d failed: %s (%s)", l, pos0,
               kvcache_strerror(rc), kvcache_errmsg(kv));
        return -1;
    }
    if (cuda_kv_append_dst(f->kv, seq, l, pos0, n, f->hdst, err, errlen))
        return -1;
    CU_TRY(
        cudaMemcpyAsync(f->dst, f->hdst, sizeof(ck_row_dst_t) * n, cudaMemcpyHostToDevice, f->s));
    f->info.h2d_bytes += sizeof(ck_row_dst_t) * n;
    CU_TRY(ck_kv_append(f->s, f->dst, f->k, f->v, n, c->n_kv_heads, c->head_dim,
                        cuda_kv_dtype(f->kv)));
    return 0;
fail:
    return -1;
}

/* One decoder layer over n rows (the hot path of prefill and decode). */
/* The rest of layer D after its attention wrote f->att: output projection
 * into the residual stream, then the MLP block. */
static int cf_layer_out(cuda_fwd_t *f, const cf_layer *D, int n, char *err, size_t errlen) {
    const qwen3_config_t *c = &f->m->cfg;
    const int H = c->hidden, I = c->intermediate, QW = c->n_heads * c->head_dim;
    if (cuda_lin_input(f->lin, f->att, n, QW, err, errlen) ||
        cuda_lin_run(f->lin, D->wo, f->wdt, H, f->x, 1, err, errlen))
        return -1;
    /* MLP block */
    CU_TRY(ck_rmsnorm(f->s, f->x, D->post_norm, f->h, n, H, c->rms_eps));
    if (cuda_lin_input(f->lin, f->h, n, H, err, errlen) ||
        cuda_lin_run(f->lin, D->wg, f->wdt, I, f->gate, 0, err, errlen) ||
        cuda_lin_run(f->lin, D->wu, f->wdt, I, f->up, 0, err, errlen))
        return -1;
    CU_TRY(ck_silu_mul(f->s, f->gate, f->up, (int64_t)n * I));
    if (cuda_lin_input(f->lin, f->gate, n, I, err, errlen) ||
        cuda_lin_run(f->lin, D->wd, f->wdt, H, f->x, 1, err, errlen))
        return -1;
    return 0;
fail:
    return -1;
}

static int cf_layer_run(cuda_fwd_t *f, kvcache_t *kv, int seq, int l, int n, int pos0,
                        const fwd_hooks_t *hooks, char *err, size_t errlen) {
    const qwen3_config_t *c = &f->m->cfg;
    const cf_layer *D = &f->L[l];
    const int H = c->hidden, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
    const int QW = nh * hd, KW = nkv * hd;
    /* attention block */
    CU_TRY(ck_rmsnorm(f->s, f->x, D->in_norm, f->h, n, H, c->rms_eps));
    if (cuda_lin_input(f->lin, f->h, n, H, err, errlen) ||
        cuda_lin_run(f->lin, D->wq, f->wdt, QW, f->q, 0, err, errlen) ||
        cuda_lin_run(f->lin, D->wk, f->wdt, KW, f->k, 0, err, errlen) ||
        cuda_lin_run(f->lin, D->wv, f->wdt, KW, f->v, 0, err, errlen))
        return -1;
    CU_TRY(ck_qk_norm_rope(f->s, f->q, D->q_norm, n, nh, hd, c->rms_eps, f->dcos, f->dsin, pos0));
    CU_TRY(ck_qk_norm_rope(f->s, f->k, D->k_norm, n, nkv, hd, c->rms_eps, f->dcos, f->dsin, pos0));
    if (cf_append(f, kv, seq, l, n, pos0, err, errlen))
        return -1;
    if (hooks && hooks->before_attention &&
        hooks->before_attention(hooks->ud, kv, seq, l, pos0, n, f->hq) != 0) {
        cf_err(err, errlen, "layer %d: before-attention hook aborted at position %d", l, pos0);
        return -1;
    }
    cuda_kv_bind(f->kv, f->hq, f->q, f->hatt, f->att);
    int rc = kvcache_attend(kv, seq, l, f->hq, n, pos0, f->hatt, NULL);
    cuda_kv_bind(f->kv, NULL, NULL, NULL, NULL);
    if (rc != KV_OK) {
        cf_err(err, errlen, "layer %d: attention at position %d failed: %s (%s)", l, pos0,
               kvcache_strerror(rc), kvcache_errmsg(kv));
        return -1;
    }
    if (!cuda_kv_last_on_device(f->kv)) { /* the CPU kernels ran (debug capture) */
        CU_TRY(
            cudaMemcpyAsync(f->att, f->hatt, sizeof(float) * n * QW, cudaMemcpyHostToDevice, f->s));
        f->info.h2d_bytes += sizeof(float) * n * QW;
    }
    return cf_layer_out(f, D, n, err, errlen);
fail:
    return -1;
}

/* Final norm and lm_head: all rows' logits [n][V] or the last row's [V]. */
static int cf_logits(cuda_fwd_t *f, int n, float *logits, int all_logits, char *err,
                     size_t errlen) {
    const qwen3_config_t *c = &f->m->cfg;
    const int H = c->hidden, V = c->vocab_size, rows = all_logits ? n : 1;
    const size_t bytes = sizeof(float) * (size_t)rows * V;
    if (bytes > f->logits_cap) {
        CU_TRY(cu_grow(&f->logits, &f->logits_cap, bytes, f->s));
    }
    if (bytes > f->hlogits_cap) {
        CU_TRY(cu_grow_host(&f->hlogits, &f->hlogits_cap, bytes, f->s));
    }
    const float *src = all_logits ? f->x : f->x + (size_t)(n - 1) * H;
    CU_TRY(ck_rmsnorm(f->s, src, f->final_norm, f->h, rows, H, c->rms_eps));
    if (cuda_lin_input(f->lin, f->h, rows, H, err, errlen) ||
        cuda_lin_run(f->lin, f->lm_head, f->wdt, V, f->logits, 0, err, errlen))
        return -1;
    CU_TRY(cudaMemcpyAsync(f->hlogits, f->logits, bytes, cudaMemcpyDeviceToHost, f->s));
    CU_TRY(cudaStreamSynchronize(f->s));
    f->info.d2h_bytes += bytes;
    memcpy(logits, f->hlogits, bytes);
    return 0;
fail:
    return -1;
}

/* ---------------------------------------------------------------- fast path */

/* One layer without host waits: k, v are computed into the layer's own
 * device rows (all go down in one copy after the chunk), the append
 * destinations and the block table were uploaded for all layers at once. */
static int cf_layer_fast(cuda_fwd_t *f, int l, int n, int pos0, int nlog, char *err,
                         size_t errlen) {
    const qwen3_config_t *c = &f->m->cfg;
    const cf_layer *D = &f->L[l];
    const int H = c->hidden, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
    const int QW = nh * hd, KW = nkv * hd;
    float *k = f->kall + (size_t)l * f->C * KW, *v = f->vall + (size_t)l * f->C * KW;
    CU_TRY(ck_rmsnorm(f->s, f->x, D->in_norm, f->h, n, H, c->rms_eps));
    if (cuda_lin_input(f->lin, f->h, n, H, err, errlen) ||
        cuda_lin_run(f->lin, D->wq, f->wdt, QW, f->q, 0, err, errlen) ||
        cuda_lin_run(f->lin, D->wk, f->wdt, KW, k, 0, err, errlen) ||
        cuda_lin_run(f->lin, D->wv, f->wdt, KW, v, 0, err, errlen))
        return -1;
    CU_TRY(ck_qk_norm_rope(f->s, f->q, D->q_norm, n, nh, hd, c->rms_eps, f->dcos, f->dsin, pos0));
    CU_TRY(ck_qk_norm_rope(f->s, k, D->k_norm, n, nkv, hd, c->rms_eps, f->dcos, f->dsin, pos0));
    CU_TRY(ck_kv_append(f->s, f->fddst + (size_t)l * n, k, v, n, nkv, hd, cuda_kv_dtype(f->kv)));
    if (cuda_kv_attend_table(f->kv, (const ck_blk_t *)f->dtab + (size_t)l * nlog, nlog, f->q, n,
                             pos0, 1.0f / sqrtf((float)hd), f->att, err, errlen))
        return -1;
    return cf_layer_out(f, D, n, err, errlen);
fail:
    return -1;
}

/* Before the layers of a fast chunk: every layer's append destinations and
 * block table (host bookkeeping), uploaded in two copies. Returns nlog, or -1. */
static int cf_fast_prepare(cuda_fwd_t *f, int seq, int n, int pos0, char *err, size_t errlen) {
    const int nl = f->m->cfg.n_layers, nlog = (pos0 + n - 1) / CK_BLOCK_TOKENS + 1;
    const size_t tbytes = sizeof(ck_blk_t) * (size_t)nl * nlog;
    if (tbytes > f->ftab_cap) {
        CU_TRY(cu_grow_host((void **)&f->ftab, &f->ftab_cap, tbytes, f->s));
    }
    if (tbytes > f->dtab_cap) {
        CU_TRY(cu_grow(&f->dtab, &f->dtab_cap, tbytes, f->s));
    }
    for (int l = 0; l < nl; l++)
        if (cuda_kv_append_dst(f->kv, seq, l, pos0, n, f->fdst + (size_t)l * n, err, errlen) ||
            cuda_kv_fast_table(f->kv, seq, l, pos0 + n, f->ftab + (size_t)l * nlog, err, errlen))
            return -1;
    CU_TRY(cudaMemcpyAsync(f->fddst, f->fdst, sizeof(ck_row_dst_t) * (size_t)nl * n,
                           cudaMemcpyHostToDevice, f->s));
    CU_TRY(cudaMemcpyAsync(f->dtab, f->ftab, tbytes, cudaMemcpyHostToDevice, f->s));
    f->info.h2d_bytes += sizeof(ck_row_dst_t) * (size_t)nl * n + tbytes;
    return nlog;
fail:
    return -1;
}

/* The fast path applies when nothing outside the pass can change what the
 * attention reads: no before-attention hook, a plain sequence (no summary,
 * policy, revival tracking or debug capture; every block hot) and the device
 * mirroring every earlier position. Allocates its buffers on first use. */
static int cf_fast_ok(cuda_fwd_t *f, kvcache_t *kv, int seq, int pos0, const fwd_hooks_t *hooks) {
    if ((hooks && hooks->before_attention) || !kvcache_seq_plain(kv, seq) ||
        !cuda_kv_fast_ready(f->kv, seq, pos0))
        return 0;
    if (f->fk)
        return 1;
    const qwen3_config_t *c = &f->m->cfg;
    const size_t rows = (size_t)c->n_layers * f->C, KW = (size_t)c->n_kv_heads * c->head_dim;
    if (cudaMallocHost((void **)&f->fk, sizeof(float) * rows * KW) != cudaSuccess ||
        cudaMallocHost((void **)&f->fv, sizeof(float) * rows * KW) != cudaSuccess ||
        cudaMallocHost((void **)&f->fdst, sizeof(ck_row_dst_t) * rows) != cudaSuccess ||
        cudaMalloc((void **)&f->fddst, sizeof(ck_row_dst_t) * rows) != cudaSuccess ||
        cudaMalloc((void **)&f->kall, sizeof(float) * rows * KW) != cudaSuccess ||
        cudaMalloc((void **)&f->vall, sizeof(float) * rows * KW) != cudaSuccess) {
        cudaGetLastError(); /* not sticky: the slow path still works */
        cudaFreeHost(f->fk), cudaFreeHost(f->fv), cudaFreeHost(f->fdst);
        cudaFree(f->fddst), cudaFree(f->kall), cudaFree(f->vall);
        f->fk = f->fv = f->kall = f->vall = NULL;
        f->fdst = f->fddst = NULL;
        return 0;
    }
    return 1;
}

/* After a fast chunk: the rows of every layer into the cache (the device
 * already has them). */
static int cf_fast_commit(cuda_fwd_t *f, kvcache_t *kv, int seq, int n, int pos0, char *err,
                          size_t errlen) {
    const qwen3_config_t *c = &f->m->cfg;
    const size_t KW = (size_t)c->n_kv_heads * c->head_dim, pitch = sizeof(float) * f->C * KW;
    CU_TRY(cudaMemcpy2DAsync(f->fk, pitch, f->kall, pitch, sizeof(float) * n * KW,
                             (size_t)c->n_layers, cudaMemcpyDeviceToHost, f->s));
    CU_TRY(cudaMemcpy2DAsync(f->fv, pitch, f->vall, pitch, sizeof(float) * n * KW,
                             (size_t)c->n_layers, cudaMemcpyDeviceToHost, f->s));
    f->info.d2h_bytes += 2 * sizeof(float) * n * KW * (size_t)c->n_layers;
    CU_TRY(cudaStreamSynchronize(f->s));
    for (int l = 0; l < c->n_layers; l++) {
        const size_t rows = (size_t)l * f->C;
        int rc = kvcache_append_n(kv, seq, l, pos0, n, f->fk + rows * KW, f->fv + rows * KW);
        if (rc != KV_OK) {
            cf_err(err, errlen, "layer %d: KV append at position %d failed: %s (%s)", l, pos0,
                   kvcache_strerror(rc), kvcache_errmsg(kv));
            return -1;
        }
    }
    return 0;
fail:
    return -1;
}

/* ---------------------------------------------------------------- chunks */

static int cf_chunk(cuda_fwd_t *f, kvcache_t *kv, int seq, const int *ids, int n, int pos0,
                    float *logits, int all_logits, const fwd_hooks_t *hooks, char *err,
                    size_t errlen) {
    const qwen3_config_t *c = &f->m->cfg;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= c->vocab_size || ids[i] >= f->m->embed.shape[0]) {
            cf_err(err, errlen, "token id %d at position %d is outside the vocabulary [0, %d)",
                   ids[i], pos0 + i, c->vocab_size);
            return -1;
        }
        f->hids[i] = ids[i];
    }
    if (cf_rope(f, pos0 + n, err, errlen))
        return -1;
    CU_TRY(cudaMemcpyAsync(f->ids, f->hids, sizeof(int) * n, cudaMemcpyHostToDevice, f->s));
    f->info.h2d_bytes += sizeof(int) * n;
    CU_TRY(ck_embed(f->s, f->embed, f->wdt, f->ids, n, c->hidden, f->x));
    if (cf_fast_ok(f, kv, seq, pos0, hooks)) {
        f->fast_chunks++;
        const int nlog = cf_fast_prepare(f, seq, n, pos0, err, errlen);
        if (nlog < 0)
            return -1;
        for (int l = 0; l < c->n_layers; l++)
            if (cf_layer_fast(f, l, n, pos0, nlog, err, errlen))
                return -1;
        if (logits && cf_logits(f, n, logits, all_logits, err, errlen))
            return -1;
        return cf_fast_commit(f, kv, seq, n, pos0, err, errlen);
    }
    f->slow_chunks++;
    for (int l = 0; l < c->n_layers; l++)
        if (cf_layer_run(f, kv, seq, l, n, pos0, hooks, err, errlen))
            return -1;
    if (logits && cf_logits(f, n, logits, all_logits, err, errlen))
        return -1;
    return 0;
fail:
    return -1;
}

int cuda_fwd_run(cuda_fwd_t *f, kvcache_t *kv, int seq, const int *ids, int n, int pos0,
                 float *logits, int all_logits, const fwd_hooks_t *hooks, char *err,
                 size_t errlen) {
    if (n <= 0 || pos0 < 0) {
        cf_err(err, errlen,
               "forward: need at least one token at a position >= 0 (got n=%d, pos0=%d)", n, pos0);
        return -1;
    }
    if (cuda_kv_attach(f->kv, kv, err, errlen))
        return -1;
    const size_t V = (size_t)f->m->cfg.vocab_size;
    for (int done = 0; done < n;) {
        int m = n - done < f->C ? n - done : f->C;
        int last = done + m == n;
        float *lg = NULL;
        if (logits && all_logits)
            lg = logits + (size_t)done * V;
        else if (logits && last)
            lg = logits;
        if (cf_chunk(f, kv, seq, ids + done, m, pos0 + done, lg, all_logits, hooks, err, errlen))
            return -1;
        done += m;
    }
    return 0;
}

struct cuda_kv *cuda_fwd_kv(cuda_fwd_t *f) {
    return f->kv;
}

void cuda_fwd_get_info(const cuda_fwd_t *f, cuda_fwd_info_t *info) {
    *info = f->info;
    cuda_kv_stats_t st;
    cuda_kv_get_stats(f->kv, &st);
    info->h2d_bytes += st.upload_bytes;
    info->d2h_bytes += st.d2h_bytes;
    info->kv_uploads = st.uploads;
    info->kv_releases = st.releases;
    info->kv_dev_bytes = st.dev_bytes;
    info->kv_dev_used = st.dev_used_bytes;
    info->fast_chunks = f->fast_chunks;
    info->slow_chunks = f->slow_chunks;
}

/* ================================================================ ops */

static int cf_ops_run(void *dev, kvcache_t *kv, int seq, const int *ids, int n, int pos0,
                      float *logits, int all_logits, const fwd_hooks_t *hooks, char *err,
                      size_t errlen) {
    return cuda_fwd_run(dev, kv, seq, ids, n, pos0, logits, all_logits, hooks, err, errlen);
}

static void cf_ops_free(void *dev) {
    cuda_fwd_free(dev);
}

const fwd_device_ops_t cuda_fwd_ops = {.name = "cuda", .run = cf_ops_run, .free = cf_ops_free};
