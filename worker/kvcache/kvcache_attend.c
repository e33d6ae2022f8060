/* kvcache_attend.c - the KV cache's attention entry point (summaries,
 * revival tracking), digest and sketch bounds, revival checks (see kvcache.h). */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ksketch.h"
#include "kvcache_internal.h"

/* Bound of query head q [hd] over digest (mn, mx), scaled, with a margin that
 * covers f32 rounding of both the bound and the exact dot product. */
static float digest_bound(const float *q, const float *mn, const float *mx, int hd, float scale) {
    float s = 0.0f, mag = 0.0f;
    for (int d = 0; d < hd; d++) {
        float a = q[d] * mn[d], b = q[d] * mx[d];
        s += a > b ? a : b;
        float fa = fabsf(a), fb = fabsf(b);
        mag += fa > fb ? fa : fb;
    }
    return (s + mag * (float)(2 * hd + 8) * FLT_EPSILON) * scale;
}

/* The tighter of the digest bound and, for an OUT block, the sketch bound
 * of query head h. `floor`: when the digest bound is already below it, that
 * bound is returned without the (costlier) sketch. */
static float head_bound(const kvcache_t *kv, const kv_lseq *L, int block, int h, const float *qh,
                        float floor) {
    const int hd = kv->o.head_dim, g = h / (kv->o.n_heads / kv->o.n_kv_heads);
    const float *mn = L->digest + (size_t)block * kv->digest_floats + (size_t)g * 2 * hd;
    float b = digest_bound(qh, mn, mn + hd, hd, kv->scale);
    if (L->state[block] != KV_BLOCK_OUT || b < floor)
        return b;
    int ntok = L->len - block * KV_BLOCK_TOKENS;
    float s = ksketch_bound(qh, mn, mn + hd, L->sketch + (size_t)block * kv->sketch_bytes, g,
                            KV_BLOCK_TOKENS, hd, ntok < KV_BLOCK_TOKENS ? ntok : KV_BLOCK_TOKENS,
                            kv->scale);
    return s < b ? s : b;
}

float kvcache_block_bound(const kvcache_t *kv, int seq, int layer, int block, const float *q) {
    const kv_lseq *L = get_ls(kv, seq, layer);
    if (!L || !q || block < 0 || block >= L->n_blocks || L->state[block] == KV_BLOCK_DROPPED)
        return -INFINITY;
    float best = -INFINITY;
    for (int h = 0; h < kv->o.n_heads; h++) {
        float b = head_bound(kv, L, block, h, q + (size_t)h * kv->o.head_dim, -INFINITY);
        if (b > best)
            best = b;
    }
    return best;
}

/* ================================================================ attention */

/* Gathers the HOT blocks of L (and, with_lent, the OUT blocks with a lent
 * payload; pending ones with kv NULL, counted in *n_pend when n_pend is
 * given, else left out) that hold positions <= pos_last into kv->blk, in
 * block order. */
static int gather_hot(kvcache_t *kv, int layer, const kv_lseq *L, int pos_last, int with_lent,
                      int *n_out, int *n_pend) {
    int nb = pos_last / KV_BLOCK_TOKENS + 1, n = 0;
    if (nb > L->n_blocks)
        nb = L->n_blocks;
    size_t cap = (size_t)kv->blk_cap;
    if (kvc_grow((void **)&kv->blk, &cap, (size_t)nb + 1, sizeof *kv->blk))
        return KV_ENOMEM;
    kv->blk_cap = (int)cap;
    for (int b = 0; b < nb; b++) {
        const void *p;
        if (L->state[b] == KV_BLOCK_HOT)
            p = slot_ptr(kv, layer, L->slot[b]);
        else if (with_lent && L->ext[b] == KVC_PENDING && n_pend)
            p = NULL, (*n_pend)++;
        else if (with_lent && L->ext[b] && L->ext[b] != KVC_PENDING)
            p = L->ext[b];
        else
            continue;
        int nt = L->len - b * KV_BLOCK_TOKENS;
        kv->blk[n].kv = p;
        kv->blk[n].block = b;
        kv->blk[n].ntok = nt < KV_BLOCK_TOKENS ? nt : KV_BLOCK_TOKENS;
        n++;
    }
    *n_out = n;
    return KV_OK;
}

/* Revival check of one query row. For each query head h, the OUT blocks
 * (positions <= pos) are ranked by the bound of their mass relative to the hot
 * mass, w_b = ntok_b * e^(bound_b - ref_h) (ref: the hot log-sum-exp per
 * head); the smallest are left out while their sum stays <= e^-tau, the rest
 * are candidates. A block a head already made a candidate is read anyway, so
 * later heads do not rank it. Whatever is not a candidate therefore holds, all
 * together, at most e^-tau of the hot mass of every head. Bounds below the
 * old per-block line tau + ln(N) (N = tokens in OUT blocks) may stay at the
 * digest bound (the sketch is skipped): those blocks fit the budget anyway.
 * Returns the count, writes up to max indices in block order, *margin = max
 * bound - ref over the (block, head) pairs evaluated. Returns -1 on
 * allocation failure. */
struct kv_rv {
    float v; /* ln w_b */
    int b;
};

static int cmp_rv(const void *a, const void *b) {
    float x = ((const struct kv_rv *)a)->v, y = ((const struct kv_rv *)b)->v;
    return (x > y) - (x < y);
}

static int revival_scan(kvcache_t *kv, const kv_lseq *L, const float *q, int pos, const float *ref,
                        float tau, int *out, int max, float *margin) {
    const int hd = kv->o.head_dim;
    int nb = pos / KV_BLOCK_TOKENS + 1, n = 0;
    if (nb > L->n_blocks)
        nb = L->n_blocks;
    if (kvc_grow((void **)&kv->rv, &kv->rv_cap, (size_t)nb + 1, sizeof *kv->rv) ||
        kvc_grow((void **)&kv->rflag, &kv->rflag_cap, (size_t)nb + 1, 1))
        return -1;
    uint8_t *cand = kv->rflag;
    memset(cand, 0, (size_t)nb);
    float best = -INFINITY;
    int n_out = 0;
    for (int b = 0; b < nb; b++)
        if (L->state[b] == KV_BLOCK_OUT)
            n_out += KV_BLOCK_TOKENS;
    const float line = tau + (n_out > 1 ? logf((float)n_out) : 0.0f);
    const float budget = expf(-tau);
    for (int h = 0; h < kv->o.n_heads; h++) {
        const float *qh = q + (size_t)h * hd;
        int k = 0;
        for (int b = 0; b < nb; b++) {
            if (L->state[b] != KV_BLOCK_OUT || cand[b])
                continue;
            const float floor = margin ? -INFINITY : ref[h] - line;
            float m = head_bound(kv, L, b, h, qh, floor) - ref[h]; /* ref -inf: +inf */
            if (m > best)
                best = m;
            int nt = L->len - b * KV_BLOCK_TOKENS;
            kv->rv[k].v = m + logf((float)(nt < KV_BLOCK_TOKENS ? nt : KV_BLOCK_TOKENS));
            kv->rv[k].b = b;
            k++;
        }
        if (k == 0)
            continue;
        qsort(kv->rv, (size_t)k, sizeof *kv->rv, cmp_rv);
        double acc = 0.0;
        for (int i = 0; i < k; i++) {
            double w = exp((double)kv->rv[i].v); /* +inf / nan (no hot keys): a candidate */
            if (!(acc + w <= (double)budget)) {
                for (int j = i; j < k; j++)
                    cand[kv->rv[j].b] = 1;
                break;
            }
            acc += w;
        }
    }
    for (int b = 0; b < nb; b++) {
        if (!cand[b])
            continue;
        if (n < max && out)
            out[n] = b;
        n++;
    }
    if (margin)
        *margin = best;
    return n;
}

/* Summary post-processing of one attend call: top-p sets per observed row. */
static int record_stats(kvcache_t *kv, kv_seq *S, int layer, int pos0, int obs0, int nq, int nlog,
                        const float *mass, float *cum, int nthreads) {
    const int nh = kv->o.n_heads;
    size_t need_u = 2 * (size_t)nlog;
    if (kvc_grow((void **)&kv->ubuf, &kv->ubuf_cap, need_u, 1) ||
        kvc_grow((void **)&kv->ibuf, &kv->ibuf_cap, (size_t)nlog, sizeof(int)))
        return KV_ENOMEM;
    uint8_t *uni = kv->ubuf, *act = kv->ubuf + nlog;
    float *peak = cum + (size_t)nthreads * nlog; /* after cum in fbuf */
    /* reduce per-thread cumulative masses into cum[0] */
    float *c0 = cum;
    for (int t = 1; t < nthreads; t++)
        for (int b = 0; b < nlog; b++)
            c0[b] += cum[(size_t)t * nlog + b];
    summary_add_cum(S->sum, layer, nlog, c0);
    for (int r = obs0; r < nq; r++) {
        memset(uni, 0, (size_t)nlog);
        for (int b = 0; b < nlog; b++)
            peak[b] = 0.0f;
        for (int h = 0; h < nh; h++) {
            const float *m = mass + ((size_t)(r - obs0) * nh + h) * nlog;
            summary_top_p_set(m, nlog, S->sum->top_p, act, kv->ibuf);
            for (int b = 0; b < nlog; b++) {
                uni[b] |= act[b];
                if (m[b] > peak[b])
                    peak[b] = m[b];
            }
        }
        int na = 0;
        for (int b = 0; b < nlog; b++)
            na += uni[b];
        summary_record_row(S->sum, layer, pos0 + r, nlog, uni, peak, NULL, na);
    }
    return KV_OK;
}

/* Pending loans of layer that did not get their bytes end: those blocks are
 * not read. */
static void unlend_pending(kv_lseq *L) {
    for (int b = 0; b < L->n_blocks; b++)
        if (L->ext[b] == KVC_PENDING) {
            L->ext[b] = NULL;
            L->lent--;
        }
}

typedef struct {
    kvcache_t *kv;
    kv_seq *S;
    kv_lseq *L;
    int seq, layer, nhot;
} kv_fill_ctx;

/* attn_args_t.fill: the sequence's pending callback, then the pointers of
 * the blocks it lent; returns how many stayed pending. */
static int fill_pending(void *ud) {
    kv_fill_ctx *f = ud;
    f->S->pend_fn(f->S->pend_ud, f->seq, f->layer);
    int missing = 0;
    for (int i = 0; i < f->nhot; i++) {
        attn_block_t *B = &f->kv->blk[i];
        if (B->kv)
            continue;
        const void *p = f->L->ext[B->block];
        if (p && p != KVC_PENDING)
            B->kv = p;
        else
            missing++;
    }
    return missing;
}

int kvcache_attend(kvcache_t *kv, int seq, int layer, const float *q, int nq, int pos0, float *out,
                   threadpool_t *tp) {
    if (!kv)
        return KV_EINVAL;
    kv_seq *S = get_seq(kv, seq);
    if (!S || layer < 0 || layer >= kv->o.n_layers || !q || !out || nq <= 0 || pos0 < 0)
        return kvc_fail(kv, KV_EINVAL,
                        "kvcache_attend: bad sequence %d / layer %d / rows %d / pos %d", seq, layer,
                        nq, pos0);
    kv_lseq *L = &S->L[layer];
    const int pos_last = pos0 + nq - 1, nh = kv->o.n_heads;
    if (pos_last >= L->len)
        return kvc_fail(kv, KV_EINVAL, "kvcache_attend: layer %d has %d positions, rows reach %d",
                        layer, L->len, pos_last);
    int nhot, npend = 0;
    if (gather_hot(kv, layer, L, pos_last, 1, &nhot, &npend))
        return kvc_fail(kv, KV_ENOMEM, "kvcache_attend: out of memory");
    if (npend && (nq > 1 || !S->pend_fn || kv->prov.attend)) { /* wait first: no overlap */
        if (S->pend_fn)
            S->pend_fn(S->pend_ud, seq, layer);
        unlend_pending(L);
        npend = 0;
        if (gather_hot(kv, layer, L, pos_last, 1, &nhot, NULL))
            return kvc_fail(kv, KV_ENOMEM, "kvcache_attend: out of memory");
    }
    const int nlog = pos_last / KV_BLOCK_TOKENS + 1;
    const int nthreads = tp_nthreads(tp);
    const int stats = S->sum != NULL;
    const int obs0 = stats && nq > S->sum->window ? nq - S->sum->window : 0;
    /* float scratch: mass [nq-obs0][nh][nlog], cum [nthreads][nlog], peak [nlog], row_lse [nh] */
    size_t n_mass = stats ? (size_t)(nq - obs0) * nh * nlog : 0;
    size_t n_cum = stats ? (size_t)nthreads * nlog + nlog : 0;
    if (kvc_grow((void **)&kv->fbuf, &kv->fbuf_cap, n_mass + n_cum + (size_t)nh, sizeof(float)))
        return kvc_fail(kv, KV_ENOMEM, "kvcache_attend: out of memory");
    float *mass = stats ? kv->fbuf : NULL;
    float *cum = stats ? kv->fbuf + n_mass : NULL;
    float *row_lse = kv->fbuf + n_mass + n_cum;
    if (cum)
        memset(cum, 0, (size_t)nthreads * nlog * sizeof(float));
    float *probs = NULL;
    if (S->debug) {
        size_t need = (size_t)pos_last + 1;
        if (need > L->dbg_cap) {
            size_t cap = need * 2;
            float *p = realloc(L->dbg, cap * nh * sizeof(float));
            if (!p)
                return kvc_fail(kv, KV_ENOMEM, "kvcache_attend: out of memory (debug capture)");
            L->dbg = p;
            L->dbg_cap = cap;
        }
        probs = L->dbg; /* stride pos_last+1 per head during the run */
    }
    attn_args_t a = {.n_heads = nh,
                     .n_kv_heads = kv->o.n_kv_heads,
                     .head_dim = kv->o.head_dim,
                     .block_tokens = KV_BLOCK_TOKENS,
                     .dtype = kv->o.kv_dtype,
                     .scale = kv->scale,
                     .blocks = kv->blk,
                     .n_blocks = nhot,
                     .n_logical = nlog,
                     .q = q,
                     .nq = nq,
                     .pos0 = pos0,
                     .out = out,
                     .mass = mass,
                     .obs0 = obs0,
                     .cum = cum,
                     .row_lse = row_lse,
                     .probs_last = probs};
    kv_fill_ctx fc = {kv, S, L, seq, layer, nhot};
    if (npend) {
        a.fill = fill_pending;
        a.fill_ud = &fc;
    }
    int rc = 1; /* 0: the provider ran it */
    if (kv->prov.attend) {
        char perr[200] = "";
        rc = kv->prov.attend(kv->prov.ud, seq, layer, &a, perr, sizeof perr);
        if (rc < 0)
            return kvc_fail(kv, KV_ENOMEM, "kvcache_attend: layer %d: %s", layer, perr);
    }
    if (rc)
        rc = attention_run(&a, kv->ws, tp);
    if (rc == 1) { /* some never came: attend over what is readable, from the start */
        unlend_pending(L);
        if (gather_hot(kv, layer, L, pos_last, 1, &nhot, NULL))
            return kvc_fail(kv, KV_ENOMEM, "kvcache_attend: out of memory");
        a.blocks = kv->blk; /* may have moved */
        a.n_blocks = nhot;
        a.fill = NULL;
        if (cum)
            memset(cum, 0, (size_t)nthreads * nlog * sizeof(float));
        rc = attention_run(&a, kv->ws, tp);
    }
    if (rc != 0)
        return kvc_fail(kv, KV_ENOMEM, "kvcache_attend: out of memory (scratch)");
    if (probs)
        L->dbg_n = pos_last + 1;
    if (stats && record_stats(kv, S, layer, pos0, obs0, nq, nlog, mass, cum, nthreads))
        return kvc_fail(kv, KV_ENOMEM, "kvcache_attend: out of memory (summary)");
    if (S->rev_tau > 0.0f) {
        /* every block can be a candidate: room for all, one scan */
        size_t rcap = (size_t)L->rev_cap;
        if (kvc_grow((void **)&L->rev, &rcap, (size_t)L->n_blocks + 1, sizeof(int)))
            return kvc_fail(kv, KV_ENOMEM, "kvcache_attend: out of memory (revival)");
        L->rev_cap = (int)rcap;
        int nc = revival_scan(kv, L, q + (size_t)(nq - 1) * nh * kv->o.head_dim, pos_last, row_lse,
                              S->rev_tau, L->rev, L->rev_cap, NULL);
        if (nc < 0)
            return kvc_fail(kv, KV_ENOMEM, "kvcache_attend: out of memory (revival)");
        L->n_rev = nc;
    }
    return KV_OK;
}

/* ================================================================ revival */

int kvcache_revival_candidates(kvcache_t *kv, int seq, int layer, const float *q, int pos,
                               float tau, int *blocks_out, int max, float *max_bound,
                               threadpool_t *tp) {
    if (max_bound)
        *max_bound = -INFINITY;
    kv_lseq *L = get_ls(kv, seq, layer);
    if (!L || !q || pos < 0 || pos >= L->len || max < 0 || (max > 0 && !blocks_out)) {
        if (kv)
            kvc_fail(kv, KV_EINVAL, "kvcache_revival_candidates: bad arguments");
        return -1;
    }
    int nb = pos / KV_BLOCK_TOKENS + 1, any_out = 0;
    if (nb > L->n_blocks)
        nb = L->n_blocks;
    for (int b = 0; b < nb && !any_out; b++)
        any_out = L->state[b] == KV_BLOCK_OUT;
    if (!any_out)
        return 0; /* nothing demoted: no candidate, no hot pass */
    int nhot;
    if (gather_hot(kv, layer, L, pos, 0, &nhot, NULL))
        return -1;
    const int nh = kv->o.n_heads;
    if (kvc_grow((void **)&kv->fbuf, &kv->fbuf_cap, (size_t)nh, sizeof(float)))
        return -1;
    float *row_lse = kv->fbuf;
    for (int h = 0; h < nh; h++)
        row_lse[h] = -INFINITY;
    if (nhot > 0) {
        attn_args_t a = {.n_heads = nh,
                         .n_kv_heads = kv->o.n_kv_heads,
                         .head_dim = kv->o.head_dim,
                         .block_tokens = KV_BLOCK_TOKENS,
                         .dtype = kv->o.kv_dtype,
                         .scale = kv->scale,
                         .blocks = kv->blk,
                         .n_blocks = nhot,
                         .n_logical = pos / KV_BLOCK_TOKENS + 1,
                         .q = q,
                         .nq = 1,
                         .pos0 = pos,
                         .row_lse = row_lse,
                         .lse_only = 1};
        int done = 1; /* 0: the provider computed row_lse */
        if (kv->prov.attend) {
            char perr[200] = "";
            done = kv->prov.attend(kv->prov.ud, seq, layer, &a, perr, sizeof perr);
            if (done < 0) {
                kvc_fail(kv, KV_ENOMEM, "kvcache_revival_candidates: layer %d: %s", layer, perr);
                return -1;
            }
        }
        if (done && attention_run(&a, kv->ws, tp))
            return -1;
    }
    return revival_scan(kv, L, q, pos, row_lse, tau, blocks_out, max, max_bound);
}

int kvcache_revival_last(const kvcache_t *kv, int seq, int layer, int *blocks_out, int max) {
    const kv_lseq *L = get_ls(kv, seq, layer);
    if (!L || max < 0 || (max > 0 && !blocks_out))
        return -1;
    for (int i = 0; i < L->n_rev && i < max; i++)
        blocks_out[i] = L->rev[i];
    return L->n_rev;
}
