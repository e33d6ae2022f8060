/* cuda_kv.c - device KV pool, block tables and the GPU attention provider
 * (cuda_kv.h). */
#include "cuda_kv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_util.h"

#define CKV_CHUNK 64   /* device slots per cudaMalloc */
#define CKV_TARGET 264 /* CTAs wanted per attention launch (2 per H100 SM) */

typedef struct {
    char **chunks; /* [n_chunks] of CKV_CHUNK * block_bytes */
    int n_chunks, n_alloc, used;
    int *free_ids;
    int n_free, free_cap;
} ckv_pool;

typedef struct {
    int32_t *slot; /* [cap] device slot or -1 */
    int32_t *ntok; /* [cap] tokens the device copy holds; -1: stale (upload before use) */
    int cap;
    int ok_len; /* positions [0, ok_len) are on the device exactly as in the cache, every
                   block readable (-1: unknown until the next attend through the cache) */
} ckv_lseq;

struct cuda_kv {
    int nl, nh, nkv, hd, dt; /* dt: CK_F32 / CK_BF16 (of the attached cache) */
    size_t bb;               /* block bytes */
    cudaStream_t s, copy;
    cudaEvent_t ev;      /* copy stream -> compute stream: uploads done */
    cudaEvent_t ev_comp; /* compute stream -> copy stream: earlier writes to slots done */
    kvcache_t *owner;
    ckv_pool *pools; /* [nl] */
    ckv_lseq **seqs; /* [nseqs] -> [nl], NULL when unused */
    int nseqs;
    const float *hq, *dq; /* bound buffers of the forward pass */
    float *hout, *dout;
    int on_dev;
    /* scratch (grown on demand) */
    ck_blk_t *h_blk;
    size_t h_blk_cap;
    void *d_blk;
    size_t d_blk_cap;
    char *stage; /* pinned upload staging */
    size_t stage_cap;
    void *d_q, *d_out, *d_ml, *d_o, *d_bstat, *d_mass, *d_lse, *d_cum;
    size_t d_q_cap, d_out_cap, d_ml_cap, d_o_cap, d_bstat_cap, d_mass_cap, d_lse_cap, d_cum_cap;
    void *h_mass, *h_lse, *h_cum; /* pinned */
    size_t h_mass_cap, h_lse_cap, h_cum_cap;
    cuda_kv_stats_t st;
};

/* ================================================================ pool */

static char *ckv_slot_ptr(const cuda_kv_t *c, int layer, int slot) {
    return c->pools[layer].chunks[slot / CKV_CHUNK] + (size_t)(slot % CKV_CHUNK) * c->bb;
}

/* A free device slot of layer, or -1 with err. zero: cleared on the compute
 * stream (a new tail block); else the caller overwrites all of it (an upload
 * on the copy stream, which must not race a memset on the other stream). */
static int ckv_slot_take(cuda_kv_t *c, int layer, int zero, char *err, size_t errlen) {
    ckv_pool *P = &c->pools[layer];
    int id;
    if (P->n_free > 0) {
        id = P->free_ids[--P->n_free];
    } else {
        if (P->n_alloc == P->n_chunks * CKV_CHUNK) {
            char **nc = realloc(P->chunks, sizeof(char *) * (size_t)(P->n_chunks + 1));
            if (!nc) {
                snprintf(err, errlen, "cuda: out of host memory (KV pool)");
                return -1;
            }
            P->chunks = nc;
            void *d = NULL;
            CU_TRY(cudaMalloc(&d, (size_t)CKV_CHUNK * c->bb));
            P->chunks[P->n_chunks++] = d;
            c->st.dev_bytes += (size_t)CKV_CHUNK * c->bb;
        }
        id = P->n_alloc++;
    }
    P->used++;
    c->st.dev_used_bytes += c->bb;
    if (zero)
        CU_TRY(cudaMemsetAsync(ckv_slot_ptr(c, layer, id), 0, c->bb, c->s));
    return id;
fail:
    return -1;
}

static void ckv_slot_give(cuda_kv_t *c, int layer, int id) {
    ckv_pool *P = &c->pools[layer];
    if (P->n_free == P->free_cap) {
        int cap = P->free_cap ? P->free_cap * 2 : 64;
        int *nf = realloc(P->free_ids, sizeof(int) * (size_t)cap);
        if (!nf)
            return; /* the slot is lost to reuse, never handed out twice */
        P->free_ids = nf;
        P->free_cap = cap;
    }
    P->free_ids[P->n_free++] = id;
    P->used--;
    c->st.dev_used_bytes -= c->bb;
    c->st.releases++;
}

/* (seq, layer)'s table with room for nb blocks, or NULL (host memory). */
static ckv_lseq *ckv_table(cuda_kv_t *c, int seq, int layer, int nb) {
    if (seq < 0 || layer < 0 || layer >= c->nl)
        return NULL;
    if (seq >= c->nseqs) {
        int n = seq + 8;
        ckv_lseq **ns = realloc(c->seqs, sizeof *ns * (size_t)n);
        if (!ns)
            return NULL;
        memset(ns + c->nseqs, 0, sizeof *ns * (size_t)(n - c->nseqs));
        c->seqs = ns;
        c->nseqs = n;
    }
    if (!c->seqs[seq] && !(c->seqs[seq] = calloc((size_t)c->nl, sizeof(ckv_lseq))))
        return NULL;
    ckv_lseq *L = &c->seqs[seq][layer];
    if (nb > L->cap) {
        int cap = L->cap ? L->cap : 64;
        while (cap < nb)
            cap *= 2;
        int32_t *s = realloc(L->slot, sizeof(int32_t) * (size_t)cap);
        if (!s)
            return NULL;
        L->slot = s;
        int32_t *t = realloc(L->ntok, sizeof(int32_t) * (size_t)cap);
        if (!t)
            return NULL;
        L->ntok = t;
        for (int b = L->cap; b < cap; b++) {
            L->slot[b] = -1;
            L->ntok[b] = 0;
        }
        L->cap = cap;
    }
    return L;
}

static void ckv_seq_closed(void *ud, int seq) {
    cuda_kv_t *c = ud;
    if (seq < 0 || seq >= c->nseqs || !c->seqs[seq])
        return;
    for (int l = 0; l < c->nl; l++) {
        ckv_lseq *L = &c->seqs[seq][l];
        for (int b = 0; b < L->cap; b++)
            if (L->slot[b] >= 0)
                ckv_slot_give(c, l, L->slot[b]);
        free(L->slot);
        free(L->ntok);
    }
    free(c->seqs[seq]);
    c->seqs[seq] = NULL;
}

static void ckv_detached(void *ud) {
    cuda_kv_t *c = ud;
    for (int s = 0; s < c->nseqs; s++)
        ckv_seq_closed(c, s);
    c->owner = NULL;
}

/* ================================================================ attention */

static int ckv_grow(void **p, size_t *cap, size_t need, cudaStream_t s, char *err, size_t errlen) {
    CU_TRY(cu_grow(p, cap, need, s));
    return 0;
fail:
    return -1;
}

static int ckv_grow_host(void **p, size_t *cap, size_t need, cudaStream_t s, char *err,
                         size_t errlen) {
    CU_TRY(cu_grow_host(p, cap, need, s));
    return 0;
fail:
    return -1;
}

/* Brings the device table of (seq, layer) in line with the readable blocks of
 * a (uploads, releases) and fills c->h_blk. Returns 0 or -1. */
static int ckv_sync_blocks(cuda_kv_t *c, int seq, int layer, const attn_args_t *a, char *err,
                           size_t errlen) {
    const int nb = a->n_blocks, nlog = a->n_logical;
    ckv_lseq *L = ckv_table(c, seq, layer, nlog);
    if (!L) {
        snprintf(err, errlen, "cuda: out of host memory (block table)");
        return -1;
    }
    int nup = 0;
    for (int i = 0; i < nb; i++) {
        int b = a->blocks[i].block;
        if (b < 0 || b >= nlog) {
            snprintf(err, errlen, "cuda: block %d outside the %d logical blocks", b, nlog);
            return -1;
        }
        nup += L->slot[b] < 0 || L->ntok[b] != a->blocks[i].ntok;
    }
    if (ckv_grow_host((void **)&c->stage, &c->stage_cap, (size_t)(nup ? nup : 1) * c->bb, c->s, err,
                      errlen) ||
        ckv_grow_host((void **)&c->h_blk, &c->h_blk_cap, sizeof(ck_blk_t) * (size_t)nb, c->s, err,
                      errlen))
        return -1;
    if (nup) { /* uploads must follow the memsets / appends queued on the compute stream */
        CU_TRY(cudaEventRecord(c->ev_comp, c->s));
        CU_TRY(cudaStreamWaitEvent(c->copy, c->ev_comp, 0));
    }
    int i = 0, k = 0;
    for (int b = 0; b < nlog; b++) {
        if (i < nb && a->blocks[i].block == b) {
            const int ntok = a->blocks[i].ntok;
            if (L->slot[b] < 0) {
                if ((L->slot[b] = ckv_slot_take(c, layer, 0, err, errlen)) < 0)
                    return -1;
                L->ntok[b] = -1;
            }
            char *dev = ckv_slot_ptr(c, layer, L->slot[b]);
            if (L->ntok[b] != ntok) { /* recall (or rows appended elsewhere): upload */
                char *st = c->stage + (size_t)k * c->bb;
                memcpy(st, a->blocks[i].kv, c->bb);
                CU_TRY(cudaMemcpyAsync(dev, st, c->bb, cudaMemcpyHostToDevice, c->copy));
                L->ntok[b] = ntok;
                c->st.uploads++;
                c->st.upload_bytes += c->bb;
                k++;
            }
            c->h_blk[i].kv = dev;
            c->h_blk[i].block = b;
            c->h_blk[i].ntok = ntok;
            i++;
        } else if (L->slot[b] >= 0 && !a->lse_only) {
            /* taken out, dropped or no longer lent (an lse_only pass leaves
             * the lent blocks out of its list: they stay) */
            ckv_slot_give(c, layer, L->slot[b]);
            L->slot[b] = -1;
            L->ntok[b] = 0;
        }
    }
    if (k) {
        CU_TRY(cudaEventRecord(c->ev, c->copy));
        CU_TRY(cudaStreamWaitEvent(c->s, c->ev, 0));
    }
    return 0;
fail:
    return -1;
}

/* kvcache_attn_provider_t.attend: one kvcache_attend call on the GPU. */
static int ckv_attend(void *ud, int seq, int layer, const attn_args_t *a, char *err,
                      size_t errlen) {
    cuda_kv_t *c = ud;
    c->on_dev = 0;
    if (a->probs_last || a->n_blocks <= 0 || a->nq <= 0)
        return 1; /* the CPU kernels over the host payloads: same answer */
    if (a->head_dim != c->hd || a->n_heads != c->nh || a->n_kv_heads != c->nkv ||
        (int)a->dtype != c->dt || a->block_tokens != CK_BLOCK_TOKENS) {
        snprintf(err, errlen, "cuda: attention shape differs from the device KV state");
        return -1;
    }
    const int nq = a->nq, nh = c->nh, hd = c->hd, nb = a->n_blocks;
    if (ckv_sync_blocks(c, seq, layer, a, err, errlen))
        return -1;
    int ctas = c->nkv * nq;
    int nsplit = ctas >= CKV_TARGET ? 1 : (CKV_TARGET + ctas - 1) / ctas;
    if (nsplit > nb)
        nsplit = nb;
    const int per = (nb + nsplit - 1) / nsplit;
    nsplit = (nb + per - 1) / per;
    const size_t rows = (size_t)nq * nh;
    if (ckv_grow(&c->d_blk, &c->d_blk_cap, sizeof(ck_blk_t) * (size_t)nb, c->s, err, errlen) ||
        ckv_grow(&c->d_ml, &c->d_ml_cap, sizeof(float) * rows * nsplit * 2, c->s, err, errlen) ||
        ckv_grow(&c->d_o, &c->d_o_cap, sizeof(float) * rows * nsplit * hd, c->s, err, errlen) ||
        ckv_grow(&c->d_bstat, &c->d_bstat_cap, sizeof(float) * rows * nb * 2, c->s, err, errlen) ||
        ckv_grow(&c->d_mass, &c->d_mass_cap, sizeof(float) * rows * nb, c->s, err, errlen) ||
        ckv_grow(&c->d_lse, &c->d_lse_cap, sizeof(float) * rows, c->s, err, errlen) ||
        ckv_grow(&c->d_cum, &c->d_cum_cap, sizeof(float) * (size_t)nb, c->s, err, errlen))
        return -1;
    CU_TRY(cudaMemcpyAsync(c->d_blk, c->h_blk, sizeof(ck_blk_t) * (size_t)nb,
                           cudaMemcpyHostToDevice, c->s));
    const float *dq = c->dq;
    if (a->q != c->hq || !dq) {
        if (ckv_grow(&c->d_q, &c->d_q_cap, sizeof(float) * rows * hd, c->s, err, errlen))
            return -1;
        CU_TRY(
            cudaMemcpyAsync(c->d_q, a->q, sizeof(float) * rows * hd, cudaMemcpyHostToDevice, c->s));
        dq = c->d_q;
    }
    float *dout = c->dout;
    const int out_on_dev = !a->lse_only && a->out == c->hout && dout;
    if (!out_on_dev) {
        if (ckv_grow(&c->d_out, &c->d_out_cap, sizeof(float) * rows * hd, c->s, err, errlen))
            return -1;
        dout = c->d_out;
    }
    CU_TRY(ck_attn_partial(c->s, c->d_blk, nb, nsplit, per, dq, nq, a->pos0, nh, c->nkv, hd, c->dt,
                           a->scale, c->d_ml, c->d_o, c->d_bstat));
    CU_TRY(ck_attn_merge(c->s, nq, nh, hd, nsplit, nb, c->d_ml, c->d_o, c->d_bstat, dout, c->d_lse,
                         c->d_mass));
    const int nobs = a->mass && !a->lse_only ? nq - a->obs0 : 0;
    if (a->cum && !a->lse_only) {
        if (ckv_grow_host(&c->h_cum, &c->h_cum_cap, sizeof(float) * (size_t)nb, c->s, err, errlen))
            return -1;
        CU_TRY(ck_mass_cum(c->s, nq, nh, nb, c->d_mass, c->d_cum));
        CU_TRY(cudaMemcpyAsync(c->h_cum, c->d_cum, sizeof(float) * (size_t)nb,
                               cudaMemcpyDeviceToHost, c->s));
        c->st.d2h_bytes += sizeof(float) * (size_t)nb;
    }
    if (nobs > 0) {
        size_t bytes = sizeof(float) * (size_t)nobs * nh * nb;
        if (ckv_grow_host(&c->h_mass, &c->h_mass_cap, bytes, c->s, err, errlen))
            return -1;
        CU_TRY(cudaMemcpyAsync(c->h_mass, (float *)c->d_mass + (size_t)a->obs0 * nh * nb, bytes,
                               cudaMemcpyDeviceToHost, c->s));
        c->st.d2h_bytes += bytes;
    }
    if (a->row_lse) {
        if (ckv_grow_host(&c->h_lse, &c->h_lse_cap, sizeof(float) * (size_t)nh, c->s, err, errlen))
            return -1;
        CU_TRY(cudaMemcpyAsync(c->h_lse, (float *)c->d_lse + (size_t)(nq - 1) * nh,
                               sizeof(float) * (size_t)nh, cudaMemcpyDeviceToHost, c->s));
        c->st.d2h_bytes += sizeof(float) * (size_t)nh;
    }
    if (!out_on_dev && !a->lse_only) {
        CU_TRY(
            cudaMemcpyAsync(a->out, dout, sizeof(float) * rows * hd, cudaMemcpyDeviceToHost, c->s));
        c->st.d2h_bytes += sizeof(float) * rows * hd;
    }
    CU_TRY(cudaStreamSynchronize(c->s));
    if (nobs > 0) {
        const float *hm = c->h_mass;
        for (size_t rh = 0; rh < (size_t)nobs * nh; rh++) {
            float *row = a->mass + rh * a->n_logical;
            memset(row, 0, sizeof(float) * (size_t)a->n_logical);
            for (int i = 0; i < nb; i++)
                row[a->blocks[i].block] = hm[rh * nb + i];
        }
    }
    if (a->cum && !a->lse_only)
        for (int i = 0; i < nb; i++)
            a->cum[a->blocks[i].block] += ((const float *)c->h_cum)[i];
    if (a->row_lse)
        memcpy(a->row_lse, c->h_lse, sizeof(float) * (size_t)nh);
    c->on_dev = out_on_dev;
    if (!a->lse_only) { /* the device now mirrors every position iff no block is absent */
        ckv_lseq *L = ckv_table(c, seq, layer, a->n_logical);
        const ck_blk_t *last = &c->h_blk[nb - 1];
        L->ok_len = nb == a->n_logical ? last->block * CK_BLOCK_TOKENS + last->ntok : -1;
    }
    return 0;
fail:
    return -1;
}

/* ================================================================ API */

cuda_kv_t *cuda_kv_new(int n_layers, int n_heads, int n_kv_heads, int head_dim, cudaStream_t s,
                       char *err, size_t errlen) {
    if (n_layers <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads || head_dim <= 0 ||
        head_dim > CK_MAX_HEAD_DIM) {
        snprintf(err, errlen, "cuda: unsupported attention shape (heads %d/%d, head_dim %d <= %d)",
                 n_heads, n_kv_heads, head_dim, CK_MAX_HEAD_DIM);
        return NULL;
    }
    cuda_kv_t *c = calloc(1, sizeof *c);
    if (!c || !(c->pools = calloc((size_t)n_layers, sizeof *c->pools))) {
        free(c);
        snprintf(err, errlen, "cuda: out of host memory");
        return NULL;
    }
    c->nl = n_layers;
    c->nh = n_heads;
    c->nkv = n_kv_heads;
    c->hd = head_dim;
    c->s = s;
    CU_TRY(cudaStreamCreateWithFlags(&c->copy, cudaStreamNonBlocking));
    CU_TRY(cudaEventCreateWithFlags(&c->ev, cudaEventDisableTiming));
    CU_TRY(cudaEventCreateWithFlags(&c->ev_comp, cudaEventDisableTiming));
    return c;
fail:
    cuda_kv_free(c);
    return NULL;
}

static void ckv_free_pools(cuda_kv_t *c) {
    for (int l = 0; l < c->nl; l++) {
        ckv_pool *P = &c->pools[l];
        for (int k = 0; k < P->n_chunks; k++)
            cudaFree(P->chunks[k]);
        free(P->chunks);
        free(P->free_ids);
        memset(P, 0, sizeof *P);
    }
    c->st.dev_bytes = c->st.dev_used_bytes = 0;
}

void cuda_kv_free(cuda_kv_t *c) {
    if (!c)
        return;
    if (c->owner)
        kvcache_set_attn_provider(c->owner, NULL); /* calls ckv_detached */
    for (int s = 0; s < c->nseqs; s++)
        ckv_seq_closed(c, s);
    free(c->seqs);
    if (c->s)
        cudaStreamSynchronize(c->s);
    ckv_free_pools(c);
    free(c->pools);
    cudaFreeHost(c->h_blk);
    cudaFreeHost(c->stage);
    cudaFreeHost(c->h_mass);
    cudaFreeHost(c->h_lse);
    cudaFreeHost(c->h_cum);
    void *dev[] = {c->d_blk,   c->d_q,    c->d_out, c->d_ml, c->d_o,
                   c->d_bstat, c->d_mass, c->d_lse, c->d_cum};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        cudaFree(dev[i]);
    if (c->ev)
        cudaEventDestroy(c->ev);
    if (c->ev_comp)
        cudaEventDestroy(c->ev_comp);
    if (c->copy)
        cudaStreamDestroy(c->copy);
    free(c);
}

int cuda_kv_attach(cuda_kv_t *c, kvcache_t *kv, char *err, size_t errlen) {
    if (c->owner == kv && kvcache_attn_provider_ud(kv) == c)
        return 0;
    if (c->owner)
        kvcache_set_attn_provider(c->owner, NULL);
    const size_t per = 2 * (size_t)c->nkv * CK_BLOCK_TOKENS * (size_t)c->hd;
    const size_t bb = kvcache_block_bytes(kv);
    int dt = bb == per * 4 ? CK_F32 : bb == per * 2 ? CK_BF16 : -1;
    if (dt < 0) {
        snprintf(err, errlen, "cuda: KV blocks of %zu bytes do not match the model (%zu elements)",
                 bb, per);
        return -1;
    }
    if (bb != c->bb) {
        CU_TRY(cudaStreamSynchronize(c->s));
        ckv_free_pools(c);
    }
    c->bb = bb;
    c->dt = dt;
    kvcache_attn_provider_t p = {
        .ud = c, .attend = ckv_attend, .seq_closed = ckv_seq_closed, .detached = ckv_detached};
    kvcache_set_attn_provider(kv, &p);
    c->owner = kv;
    return 0;
fail:
    return -1;
}

int cuda_kv_append_dst(cuda_kv_t *c, int seq, int layer, int pos0, int n, ck_row_dst_t *dst,
                       char *err, size_t errlen) {
    const int last = (pos0 + n - 1) / CK_BLOCK_TOKENS;
    ckv_lseq *L = ckv_table(c, seq, layer, last + 1);
    if (!L) {
        snprintf(err, errlen, "cuda: out of host memory (block table)");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const int p = pos0 + i, b = p / CK_BLOCK_TOKENS, t = p % CK_BLOCK_TOKENS;
        if (L->slot[b] < 0) {
            if ((L->slot[b] = ckv_slot_take(c, layer, 1, err, errlen)) < 0)
                return -1;
            L->ntok[b] = t == 0 ? 0 : -1; /* rows before t are not on the device */
        }
        L->ntok[b] = L->ntok[b] == t ? t + 1 : -1;
        L->ok_len = L->ok_len == p ? p + 1 : -1;
        dst[i].base = ckv_slot_ptr(c, layer, L->slot[b]);
        dst[i].t = t;
        dst[i].pad = 0;
    }
    return 0;
}

void cuda_kv_bind(cuda_kv_t *c, const float *hq, const float *dq, float *hout, float *dout) {
    c->hq = hq;
    c->dq = dq;
    c->hout = hout;
    c->dout = dout;
}

int cuda_kv_last_on_device(const cuda_kv_t *c) {
    return c->on_dev;
}

void cuda_kv_get_stats(const cuda_kv_t *c, cuda_kv_stats_t *st) {
    *st = c->st;
}

int cuda_kv_dtype(const cuda_kv_t *c) {
    return c->dt;
}

int cuda_kv_block_read(cuda_kv_t *c, int seq, int layer, int block, void *out, size_t len,
                       char *err, size_t errlen) {
    if (len != c->bb || block < 0 || layer < 0 || layer >= c->nl) {
        snprintf(err, errlen, "cuda: bad block read (layer %d, block %d, %zu bytes)", layer, block,
                 len);
        return -1;
    }
    if (seq < 0 || seq >= c->nseqs || !c->seqs[seq])
        return 1;
    const ckv_lseq *L = &c->seqs[seq][layer];
    if (block >= L->cap || L->slot[block] < 0 || L->ntok[block] < 0)
        return 1;
    CU_TRY(cudaStreamSynchronize(c->s));
    CU_TRY(cudaMemcpy(out, ckv_slot_ptr(c, layer, L->slot[block]), len, cudaMemcpyDeviceToHost));
    return 0;
fail:
    return -1;
}

int cuda_kv_fast_ready(cuda_kv_t *c, int seq, int pos0) {
    if (seq < 0)
        return 0;
    if (seq >= c->nseqs || !c->seqs[seq])
        return pos0 == 0;
    for (int l = 0; l < c->nl; l++)
        if (c->seqs[seq][l].ok_len != pos0)
            return 0;
    return 1;
}

int cuda_kv_fast_table(cuda_kv_t *c, int seq, int layer, int len, ck_blk_t *out, char *err,
                       size_t errlen) {
    const int nlog = (len - 1) / CK_BLOCK_TOKENS + 1;
    ckv_lseq *L = len > 0 ? ckv_table(c, seq, layer, nlog) : NULL;
    if (!L || L->ok_len != len) {
        snprintf(err, errlen, "cuda: layer %d: the device blocks do not cover positions < %d",
                 layer, len);
        return -1;
    }
    for (int b = 0; b < nlog; b++) {
        if (L->slot[b] < 0 || L->ntok[b] <= 0) {
            snprintf(err, errlen, "cuda: layer %d block %d is not on the device", layer, b);
            return -1;
        }
        out[b].kv = ckv_slot_ptr(c, layer, L->slot[b]);
        out[b].block = b;
        out[b].ntok = L->ntok[b];
    }
    return 0;
}

int cuda_kv_attend_table(cuda_kv_t *c, const ck_blk_t *dtable, int nlog, const float *dq, int nq,
                         int pos0, float scale, float *dout, char *err, size_t errlen) {
    const int nh = c->nh, hd = c->hd;
    int ctas = c->nkv * nq;
    int nsplit = ctas >= CKV_TARGET ? 1 : (CKV_TARGET + ctas - 1) / ctas;
    if (nsplit > nlog)
        nsplit = nlog;
    const int per = (nlog + nsplit - 1) / nsplit;
    nsplit = (nlog + per - 1) / per;
    const size_t rows = (size_t)nq * nh;
    if (ckv_grow(&c->d_ml, &c->d_ml_cap, sizeof(float) * rows * nsplit * 2, c->s, err, errlen) ||
        ckv_grow(&c->d_o, &c->d_o_cap, sizeof(float) * rows * nsplit * hd, c->s, err, errlen) ||
        ckv_grow(&c->d_bstat, &c->d_bstat_cap, sizeof(float) * rows * nlog * 2, c->s, err,
                 errlen) ||
        ckv_grow(&c->d_mass, &c->d_mass_cap, sizeof(float) * rows * nlog, c->s, err, errlen) ||
        ckv_grow(&c->d_lse, &c->d_lse_cap, sizeof(float) * rows, c->s, err, errlen))
        return -1;
    CU_TRY(ck_attn_partial(c->s, dtable, nlog, nsplit, per, dq, nq, pos0, nh, c->nkv, hd, c->dt,
                           scale, c->d_ml, c->d_o, c->d_bstat));
    CU_TRY(ck_attn_merge(c->s, nq, nh, hd, nsplit, nlog, c->d_ml, c->d_o, c->d_bstat, dout,
                         c->d_lse, c->d_mass));
    return 0;
fail:
    return -1;
}
