/* test_kvcache.c - paged KV cache and attention against a naive reference:
 * attention numerics (f32/bf16, GQA, prefill chunks, threads), absent blocks,
 * take-out/put-back bit identity, digests, pool-full errors, revival checks,
 * debug capture of probabilities. */
// clang-format off
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
// clang-format on

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "kvcache.h"
#include "threadpool.h"

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state = 88172645463325252ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}
static void fill(float *x, size_t n, float amp) {
    for (size_t i = 0; i < n; i++)
        x[i] = frand() * amp;
}

typedef struct {
    int nh, nkv, hd, T;
    float *k, *v; /* [T][nkv*hd] as stored (rounded for bf16) */
} ref_t;

/* Naive causal attention for one row at position pos over keys with
 * mask[t] != 0; out [nh*hd]; probs (optional) [nh][pos+1]. */
static void ref_row(const ref_t *r, const float *q, int pos, const uint8_t *mask, float *out,
                    double *probs) {
    const int G = r->nh / r->nkv;
    double *lg = malloc((size_t)(pos + 1) * sizeof *lg);
    for (int h = 0; h < r->nh; h++) {
        const int g = h / G;
        double m = -INFINITY;
        for (int t = 0; t <= pos; t++) {
            lg[t] = -INFINITY;
            if (mask && !mask[t])
                continue;
            double s = 0;
            for (int d = 0; d < r->hd; d++)
                s += (double)q[h * r->hd + d] * r->k[(size_t)t * r->nkv * r->hd + g * r->hd + d];
            lg[t] = s / sqrt((double)r->hd);
            if (lg[t] > m)
                m = lg[t];
        }
        double z = 0;
        for (int t = 0; t <= pos; t++)
            z += isinf(lg[t]) ? 0 : exp(lg[t] - m);
        for (int d = 0; d < r->hd; d++) {
            double acc = 0;
            for (int t = 0; t <= pos; t++)
                if (!isinf(lg[t]))
                    acc += exp(lg[t] - m) / z * r->v[(size_t)t * r->nkv * r->hd + g * r->hd + d];
            out[h * r->hd + d] = z > 0 ? (float)acc : 0.0f;
        }
        if (probs)
            for (int t = 0; t <= pos; t++)
                probs[(size_t)h * (pos + 1) + t] =
                    isinf(lg[t]) || !(z > 0) ? 0 : exp(lg[t] - m) / z;
    }
    free(lg);
}

static float round_bf16(float x) {
    return attn_bf16_to_f32(attn_f32_to_bf16(x));
}

/* Cache + one sequence with T random tokens appended to every layer. */
static kvcache_t *make_cache(int nl, int nh, int nkv, int hd, dtype_t dt, int pool, int T, ref_t *r,
                             int *seq) {
    kvcache_opts o = {.n_layers = nl,
                      .n_heads = nh,
                      .n_kv_heads = nkv,
                      .head_dim = hd,
                      .kv_dtype = dt,
                      .pool_blocks = pool,
                      .max_seqs = 4};
    char err[256];
    kvcache_t *kv = kvcache_new(&o, err, sizeof err);
    assert_non_null(kv);
    *seq = kvcache_seq_new(kv);
    assert_true(*seq >= 0);
    r->nh = nh, r->nkv = nkv, r->hd = hd, r->T = T;
    r->k = malloc((size_t)T * nkv * hd * sizeof(float));
    r->v = malloc((size_t)T * nkv * hd * sizeof(float));
    fill(r->k, (size_t)T * nkv * hd, 2.0f);
    fill(r->v, (size_t)T * nkv * hd, 1.0f);
    for (int l = 0; l < nl; l++)
        assert_int_equal(kvcache_append_n(kv, *seq, l, 0, T, r->k, r->v), KV_OK);
    if (dt == DT_BF16)
        for (size_t i = 0; i < (size_t)T * nkv * hd; i++)
            r->k[i] = round_bf16(r->k[i]), r->v[i] = round_bf16(r->v[i]);
    return kv;
}

static void ref_free(ref_t *r) {
    free(r->k);
    free(r->v);
}

static void assert_close(const float *a, const float *b, size_t n, float tol) {
    for (size_t i = 0; i < n; i++) {
        if (fabsf(a[i] - b[i]) > tol * (1.0f + fabsf(b[i]))) {
            fprintf(stderr, "mismatch at %zu: got %.9g want %.9g\n", i, a[i], b[i]);
            fail();
        }
    }
}

/* Checks kvcache_attend (rows pos0..pos0+nq-1) against the reference. */
static void check_attend(kvcache_t *kv, int seq, int layer, const ref_t *r, int pos0, int nq,
                         const uint8_t *mask, threadpool_t *tp, float tol) {
    const size_t w = (size_t)r->nh * r->hd;
    float *q = malloc((size_t)nq * w * sizeof(float)),
          *out = malloc((size_t)nq * w * sizeof(float)), *want = malloc(w * sizeof(float));
    fill(q, (size_t)nq * w, 1.5f);
    assert_int_equal(kvcache_attend(kv, seq, layer, q, nq, pos0, out, tp), KV_OK);
    for (int i = 0; i < nq; i++) {
        ref_row(r, q + i * w, pos0 + i, mask, want, NULL);
        assert_close(out + i * w, want, w, tol);
    }
    free(q), free(out), free(want);
}

/* ---------------------------------------------------------------- tests */

static void test_attend_matches_reference(void **st) {
    (void)st;
    /* odd and even query heads per KV head; head_dim on and off the SIMD
     * widths; lengths cutting the decode split into one and many chunks */
    const int shapes[][3] = {{4, 2, 16},   {4, 4, 8},  {8, 2, 128}, {6, 3, 12},
                             {16, 8, 128}, {3, 1, 32}, {6, 2, 64}};
    const int lens[] = {1, 15, 16, 17, 100, 300};
    threadpool_t *tp = tp_new(3);
    assert_non_null(tp);
    for (int portable = 0; portable < 2; portable++) {
        attention_force_portable(portable); /* the SIMD kernels and the C ones, same reference */
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                ref_t r;
                int seq, T = lens[li];
                kvcache_t *kv =
                    make_cache(2, shapes[s][0], shapes[s][1], shapes[s][2], DT_F32, 0, T, &r, &seq);
                check_attend(kv, seq, 1, &r, T - 1, 1, NULL, NULL, 2e-5f); /* decode row */
                check_attend(kv, seq, 0, &r, T - 1, 1, NULL, tp, 2e-5f);
                int nq = T < 37 ? T : 37; /* prefill chunk ending at T-1 */
                check_attend(kv, seq, 0, &r, T - nq, nq, NULL, tp, 2e-5f);
                check_attend(kv, seq, 1, &r, 0, T, NULL, NULL, 2e-5f); /* whole prompt, row tiles */
                kvcache_free(kv);
                ref_free(&r);
            }
    }
    attention_force_portable(0);
    tp_free(tp);
}

static void test_attend_bf16(void **st) {
    (void)st;
    const int shapes[][4] = {{16, 8, 128, 129}, {3, 1, 32, 300}, {8, 2, 64, 1000}, {4, 2, 16, 50}};
    threadpool_t *tp = tp_new(2);
    assert_non_null(tp);
    for (int portable = 0; portable < 2; portable++) {
        attention_force_portable(portable);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            ref_t r;
            int seq;
            const int nh = shapes[s][0], nkv = shapes[s][1], hd = shapes[s][2], T = shapes[s][3];
            kvcache_t *kv = make_cache(1, nh, nkv, hd, DT_BF16, 0, T, &r, &seq);
            assert_int_equal(kvcache_block_bytes(kv), 2 * nkv * 16 * hd * 2);
            check_attend(kv, seq, 0, &r, T - 1, 1, NULL, NULL, 2e-5f);
            check_attend(kv, seq, 0, &r, T - 1, 1, NULL, tp, 2e-5f);
            check_attend(kv, seq, 0, &r, 0, T < 129 ? T : 129, NULL, NULL, 2e-5f);
            kvcache_free(kv);
            ref_free(&r);
        }
    }
    attention_force_portable(0);
    tp_free(tp);
}

/* The payload holds exactly bf16(k) / bf16(v) in the documented layout. */
static void test_bf16_roundtrip_layout(void **st) {
    (void)st;
    for (int dti = 0; dti < 2; dti++) {
        dtype_t dt = dti ? DT_BF16 : DT_F32;
        const int nkv = 2, hd = 8, bt = KV_BLOCK_TOKENS;
        ref_t r;
        int seq;
        kvcache_t *kv = make_cache(1, 4, nkv, hd, dt, 0, 20, &r, &seq);
        void *bytes;
        size_t len;
        assert_int_equal(kvcache_block_take(kv, seq, 0, 1, &bytes, &len), KV_OK);
        assert_int_equal(len, kvcache_block_bytes(kv));
        for (int half = 0; half < 2; half++)
            for (int g = 0; g < nkv; g++)
                for (int t = 0; t < bt; t++)
                    for (int d = 0; d < hd; d++) {
                        size_t idx = (((size_t)half * nkv + g) * bt + t) * hd + d;
                        float got = dt == DT_BF16 ? attn_bf16_to_f32(((uint16_t *)bytes)[idx])
                                                  : ((float *)bytes)[idx];
                        int pos = bt + t;
                        float want = pos < 20
                                         ? (half ? r.v : r.k)[(size_t)pos * nkv * hd + g * hd + d]
                                         : 0.0f;
                        assert_true(got == want);
                    }
        free(bytes);
        kvcache_free(kv);
        ref_free(&r);
    }
    /* rounding: nearest even, NaN stays NaN */
    assert_int_equal(attn_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(attn_f32_to_bf16(1.00390625f), 0x3f80); /* tie -> even */
    assert_int_equal(attn_f32_to_bf16(1.01171875f), 0x3f82); /* tie -> even (up) */
    assert_true(isnan(attn_bf16_to_f32(attn_f32_to_bf16(NAN))));
}

/* Attention with blocks taken out or dropped == reference over remaining keys. */
static void test_absent_blocks_exact(void **st) {
    (void)st;
    for (int dti = 0; dti < 2; dti++) {
        ref_t r;
        int seq, T = 150;
        kvcache_t *kv = make_cache(1, 8, 2, 128, dti ? DT_BF16 : DT_F32, 0, T, &r, &seq);
        uint8_t mask[150];
        memset(mask, 1, sizeof mask);
        void *bytes;
        size_t len;
        assert_int_equal(kvcache_block_take(kv, seq, 0, 3, &bytes, &len), KV_OK);
        free(bytes);
        assert_int_equal(kvcache_block_drop(kv, seq, 0, 5), KV_OK);
        assert_int_equal(kvcache_block_drop(kv, seq, 0, 0), KV_OK);
        for (int t = 0; t < T; t++)
            if (t / 16 == 3 || t / 16 == 5 || t / 16 == 0)
                mask[t] = 0;
        assert_int_equal(kvcache_block_state(kv, seq, 0, 3), KV_BLOCK_OUT);
        assert_int_equal(kvcache_block_state(kv, seq, 0, 5), KV_BLOCK_DROPPED);
        assert_int_equal(kvcache_block_state(kv, seq, 0, 4), KV_BLOCK_HOT);
        assert_int_equal(kvcache_block_state(kv, seq, 0, 99), KV_BLOCK_NONE);
        assert_int_equal(kvcache_hot_blocks(kv, seq, 0), 10 - 3);
        check_attend(kv, seq, 0, &r, T - 1, 1, mask, NULL, 2e-5f);
        check_attend(kv, seq, 0, &r, 0, T, mask, NULL, 2e-5f); /* rows 0..15 see nothing: zeros */
        kvcache_free(kv);
        ref_free(&r);
    }
}

static void test_take_put_bit_identical(void **st) {
    (void)st;
    ref_t r;
    int seq, T = 200;
    kvcache_t *kv = make_cache(2, 16, 8, 128, DT_BF16, 0, T, &r, &seq);
    const size_t w = 16 * 128;
    float *q = malloc(4 * w * sizeof(float)), *o1 = malloc(4 * w * sizeof(float)),
          *o2 = malloc(4 * w * sizeof(float));
    fill(q, 4 * w, 1.0f);
    threadpool_t *tp = tp_new(2);
    assert_int_equal(kvcache_attend(kv, seq, 1, q, 4, T - 4, o1, tp), KV_OK);
    size_t hot0 = kvcache_bytes_hot(kv);
    void *b1, *b2;
    size_t l1, l2;
    assert_int_equal(kvcache_block_take(kv, seq, 1, 4, &b1, &l1), KV_OK);
    assert_int_equal(kvcache_bytes_hot(kv), hot0 - l1);
    assert_int_equal(kvcache_block_take(kv, seq, 1, 4, &b2, &l2), KV_ESTATE); /* already out */
    assert_null(b2);
    assert_int_equal(kvcache_block_put(kv, seq, 1, 4, b1, l1 - 1), KV_EINVAL); /* wrong length */
    assert_int_equal(kvcache_block_state(kv, seq, 1, 4), KV_BLOCK_OUT);
    /* the digest survives take-out */
    const float *mn, *mx;
    assert_int_equal(kvcache_block_digest(kv, seq, 1, 4, 0, &mn, &mx), KV_OK);
    assert_int_equal(kvcache_block_put(kv, seq, 1, 4, b1, l1), KV_OK);
    assert_int_equal(kvcache_block_put(kv, seq, 1, 4, b1, l1), KV_ESTATE); /* already hot */
    assert_int_equal(kvcache_attend(kv, seq, 1, q, 4, T - 4, o2, tp), KV_OK);
    assert_memory_equal(o1, o2, 4 * w * sizeof(float));
    /* the payload comes back identical too (the slot may differ) */
    assert_int_equal(kvcache_block_take(kv, seq, 1, 4, &b2, &l2), KV_OK);
    assert_int_equal(l1, l2);
    assert_memory_equal(b1, b2, l1);
    /* partial tail block round-trips as well */
    void *b3;
    size_t l3;
    assert_int_equal(kvcache_block_take(kv, seq, 1, 12, &b3, &l3), KV_OK);
    assert_int_equal(kvcache_block_tokens(kv, seq, 1, 12), 200 - 192);
    float one[8 * 128] = {0};
    assert_int_equal(kvcache_append(kv, seq, 1, T, one, one), KV_ESTATE); /* tail is out */
    assert_int_equal(kvcache_block_put(kv, seq, 1, 12, b3, l3), KV_OK);
    assert_int_equal(kvcache_block_put(kv, seq, 1, 4, b2, l2), KV_OK);
    assert_int_equal(kvcache_attend(kv, seq, 1, q, 4, T - 4, o2, tp), KV_OK);
    assert_memory_equal(o1, o2, 4 * w * sizeof(float));
    assert_int_equal(kvcache_bytes_hot(kv), hot0);
    assert_true(kvcache_bytes_hot_peak(kv) >= hot0);
    kvcache_reset_peak(kv);
    assert_int_equal(kvcache_bytes_hot_peak(kv), hot0);
    /* dropped is final */
    assert_int_equal(kvcache_block_drop(kv, seq, 1, 4), KV_OK);
    assert_int_equal(kvcache_block_put(kv, seq, 1, 4, b1, l1), KV_ESTATE);
    assert_int_equal(kvcache_block_digest(kv, seq, 1, 4, 0, &mn, &mx), KV_ESTATE);
    assert_true(isinf(kvcache_block_bound(kv, seq, 1, 4, q)));
    free(b1), free(b2), free(b3), free(q), free(o1), free(o2);
    tp_free(tp);
    kvcache_free(kv);
    ref_free(&r);
}

/* A lent OUT block is read by the attention exactly as if it were hot (bit
 * identical), takes no slot, is left out of the revival check's hot pass but
 * still tested, and stops being read when the loan ends. */
static void test_lend_bit_identical(void **st) {
    (void)st;
    ref_t r;
    int seq, T = 200;
    kvcache_t *kv = make_cache(2, 16, 8, 128, DT_BF16, 0, T, &r, &seq);
    const size_t w = 16 * 128;
    float *q = malloc(w * sizeof(float)), *o1 = malloc(w * sizeof(float)),
          *o2 = malloc(w * sizeof(float)), *o3 = malloc(w * sizeof(float));
    fill(q, w, 1.0f);
    threadpool_t *tp = tp_new(2);
    assert_int_equal(kvcache_attend(kv, seq, 1, q, 1, T - 1, o1, tp), KV_OK);
    void *b[3];
    size_t len;
    int blk[3] = {2, 5, 7};
    for (int i = 0; i < 3; i++)
        assert_int_equal(kvcache_block_take(kv, seq, 1, blk[i], &b[i], &len), KV_OK);
    size_t hot = kvcache_bytes_hot(kv);
    int nhot = kvcache_hot_blocks(kv, seq, 1);
    /* out: the attention differs */
    assert_int_equal(kvcache_attend(kv, seq, 1, q, 1, T - 1, o2, tp), KV_OK);
    assert_true(memcmp(o1, o2, w * sizeof(float)) != 0);
    assert_int_equal(kvcache_block_lend(kv, seq, 1, 3, b[0], len), KV_ESTATE); /* block 3 is hot */
    assert_int_equal(kvcache_block_lend(kv, seq, 1, 2, b[0], len - 1), KV_EINVAL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(kvcache_block_lend(kv, seq, 1, blk[i], b[i], len), KV_OK);
    assert_int_equal(kvcache_lent_blocks(kv, seq, 1), 3);
    assert_true(kvcache_block_readable(kv, seq, 1, 5));
    assert_int_equal(kvcache_block_state(kv, seq, 1, 5), KV_BLOCK_OUT);
    assert_int_equal(kvcache_bytes_hot(kv), hot); /* no slot taken */
    assert_int_equal(kvcache_hot_blocks(kv, seq, 1), nhot);
    assert_int_equal(kvcache_attend(kv, seq, 1, q, 1, T - 1, o3, tp), KV_OK);
    assert_memory_equal(o1, o3, w * sizeof(float)); /* as if they were hot */
    /* the revival check still tests lent blocks (they are OUT) */
    int cand[16];
    int nc = kvcache_revival_candidates(kv, seq, 1, q, T - 1, 1000.0f, cand, 16, NULL, tp);
    assert_int_equal(nc, 3);
    /* loan ended: not read any more */
    assert_int_equal(kvcache_block_unlend(kv, seq, 1, 5), KV_OK);
    assert_false(kvcache_block_readable(kv, seq, 1, 5));
    assert_int_equal(kvcache_lent_blocks(kv, seq, 1), 2);
    /* put-back ends a loan too; drop as well */
    assert_int_equal(kvcache_block_put(kv, seq, 1, 2, b[0], len), KV_OK);
    assert_int_equal(kvcache_block_drop(kv, seq, 1, 7), KV_OK);
    assert_int_equal(kvcache_lent_blocks(kv, seq, 1), 0);
    assert_null(kvcache_block_lent(kv, seq, 1, 7));
    for (int i = 0; i < 3; i++)
        free(b[i]);
    free(q), free(o1), free(o2), free(o3);
    tp_free(tp);
    kvcache_free(kv);
    ref_free(&r);
}

/* Pending loans (kvcache_block_lend_pending): the callback lends the bytes
 * while the attention has read the chunks without a pending block; the
 * output is bit-identical to an attention over the blocks lent when it
 * returns, for one decode row and for several rows. */
static kvcache_t *g_pend_kv;

typedef struct {
    void **bytes; /* [4] payloads of blk[] */
    const int *blk;
    size_t len;
    int lend_mask; /* which of blk[2], blk[3] the callback lends */
    int calls, layer;
} pend_ud;

static void pend_cb(void *ud, int seq, int layer) {
    pend_ud *u = ud;
    u->calls++;
    u->layer = layer;
    for (int i = 2; i < 4; i++)
        if (u->lend_mask & (1 << i))
            assert_int_equal(
                kvcache_block_lend(g_pend_kv, seq, layer, u->blk[i], u->bytes[i], u->len), KV_OK);
}

static void test_lend_pending(void **st) {
    (void)st;
    ref_t r;
    int seq, T = 2000; /* 125 blocks of 64 KiB: the decode split has many chunks */
    kvcache_t *kv = make_cache(2, 16, 8, 128, DT_BF16, 0, T, &r, &seq);
    g_pend_kv = kv;
    const size_t w = 16 * 128;
    float *q = malloc(3 * w * sizeof(float)), *o1 = malloc(3 * w * sizeof(float)),
          *o2 = malloc(3 * w * sizeof(float));
    fill(q, 3 * w, 1.0f);
    threadpool_t *tp = tp_new(2);
    void *b[4];
    size_t len;
    int blk[4] = {2, 40, 41, 90};
    for (int i = 0; i < 4; i++)
        assert_int_equal(kvcache_block_take(kv, seq, 1, blk[i], &b[i], &len), KV_OK);
    pend_ud u = {b, blk, len, 0, 0, -1};
    kvcache_seq_set_pending(kv, seq, pend_cb, &u);
    for (int rows = 1; rows <= 3; rows += 2) {
        int pos0 = T - rows;
        /* reference: every block lent from the start */
        for (int i = 0; i < 4; i++)
            assert_int_equal(kvcache_block_lend(kv, seq, 1, blk[i], b[i], len), KV_OK);
        assert_int_equal(kvcache_attend(kv, seq, 1, q, rows, pos0, o1, tp), KV_OK);
        /* two of them pending, the callback lends both */
        for (int i = 2; i < 4; i++)
            assert_int_equal(kvcache_block_lend_pending(kv, seq, 1, blk[i]), KV_OK);
        assert_true(kvcache_block_pending(kv, seq, 1, 41));
        assert_int_equal(kvcache_lent_blocks(kv, seq, 1), 4);
        u.lend_mask = 4 | 8;
        u.calls = 0;
        assert_int_equal(kvcache_attend(kv, seq, 1, q, rows, pos0, o2, tp), KV_OK);
        assert_int_equal(u.calls, 1);
        assert_int_equal(u.layer, 1);
        assert_memory_equal(o1, o2, (size_t)rows * w * sizeof(float));
        /* block 90 never comes: the output is that of an attention without it */
        assert_int_equal(kvcache_block_unlend(kv, seq, 1, 90), KV_OK);
        assert_int_equal(kvcache_attend(kv, seq, 1, q, rows, pos0, o1, tp), KV_OK);
        for (int i = 2; i < 4; i++)
            assert_int_equal(kvcache_block_lend_pending(kv, seq, 1, blk[i]), KV_OK);
        u.lend_mask = 4;
        u.calls = 0;
        assert_int_equal(kvcache_attend(kv, seq, 1, q, rows, pos0, o2, tp), KV_OK);
        assert_int_equal(u.calls, 1);
        assert_memory_equal(o1, o2, (size_t)rows * w * sizeof(float));
        assert_false(kvcache_block_pending(kv, seq, 1, 90)); /* its loan ended */
        assert_false(kvcache_block_readable(kv, seq, 1, 90));
        assert_int_equal(kvcache_lent_blocks(kv, seq, 1), 3);
        for (int i = 0; i < 4; i++)
            assert_int_equal(kvcache_block_unlend(kv, seq, 1, blk[i]), KV_OK);
    }
    /* without a callback a pending block is simply not read */
    kvcache_seq_set_pending(kv, seq, NULL, NULL);
    assert_int_equal(kvcache_attend(kv, seq, 1, q, 1, T - 1, o1, tp), KV_OK);
    assert_int_equal(kvcache_block_lend_pending(kv, seq, 1, 41), KV_OK);
    assert_int_equal(kvcache_attend(kv, seq, 1, q, 1, T - 1, o2, tp), KV_OK);
    assert_memory_equal(o1, o2, w * sizeof(float));
    assert_int_equal(kvcache_lent_blocks(kv, seq, 1), 0);
    assert_int_equal(kvcache_block_lend_pending(kv, seq, 1, 3), KV_ESTATE); /* hot */
    for (int i = 0; i < 4; i++)
        free(b[i]);
    free(q), free(o1), free(o2);
    tp_free(tp);
    kvcache_free(kv);
    ref_free(&r);
}

/* bound >= every key's logit, for every head, f32 and bf16 */
static void test_digest_bound(void **st) {
    (void)st;
    for (int dti = 0; dti < 2; dti++) {
        ref_t r;
        int seq, T = 90, nh = 8, nkv = 2, hd = 64;
        kvcache_t *kv = make_cache(1, nh, nkv, hd, dti ? DT_BF16 : DT_F32, 0, T, &r, &seq);
        float q[8 * 64];
        for (int trial = 0; trial < 20; trial++) {
            fill(q, sizeof q / sizeof q[0], 3.0f);
            if (trial == 1) /* one block out: its digest still bounds it */
            {
                void *b;
                size_t l;
                assert_int_equal(kvcache_block_take(kv, seq, 0, 2, &b, &l), KV_OK);
                free(b);
            }
            for (int b = 0; b < 6; b++) {
                float bound = kvcache_block_bound(kv, seq, 0, b, q);
                for (int h = 0; h < nh; h++) {
                    const float *mn, *mx;
                    assert_int_equal(kvcache_block_digest(kv, seq, 0, b, h / (nh / nkv), &mn, &mx),
                                     KV_OK);
                    for (int t = b * 16; t < T && t < b * 16 + 16; t++) {
                        const float *k = r.k + (size_t)t * nkv * hd + (h / (nh / nkv)) * hd;
                        float logit =
                            attention_dot(q + h * hd, k, DT_F32, hd, 1.0f / sqrtf((float)hd));
                        assert_true(bound >= logit);
                        for (int d = 0; d < hd; d++)
                            assert_true(mn[d] <= k[d] && k[d] <= mx[d]);
                    }
                }
            }
        }
        kvcache_free(kv);
        ref_free(&r);
    }
}

/* A block taken out is bounded by its 4-bit key sketch: never below the true
 * max logit, never above the min/max digest bound, and much tighter. */
static void test_sketch_bound(void **st) {
    (void)st;
    for (int dti = 0; dti < 2; dti++) {
        ref_t r;
        int seq, T = 90, nh = 8, nkv = 2, hd = 64; /* block 5 holds 10 tokens */
        kvcache_t *kv = make_cache(1, nh, nkv, hd, dti ? DT_BF16 : DT_F32, 0, T, &r, &seq);
        float q[8 * 64], box[3][20];
        const int out[3] = {1, 3, 5};
        double slack_box = 0, slack_sketch = 0;
        for (int pass = 0; pass < 2; pass++) { /* 0: hot (digest bound), 1: out (sketch) */
            rng_state = 12345;
            for (int trial = 0; trial < 20; trial++) {
                fill(q, sizeof q / sizeof q[0], 3.0f);
                for (int i = 0; i < 3; i++) {
                    const int b = out[i];
                    float bound = kvcache_block_bound(kv, seq, 0, b, q), truth = -INFINITY;
                    for (int h = 0; h < nh; h++)
                        for (int t = b * 16; t < T && t < b * 16 + 16; t++) {
                            const float *k = r.k + (size_t)t * nkv * hd + (h / (nh / nkv)) * hd;
                            float l =
                                attention_dot(q + h * hd, k, DT_F32, hd, 1.0f / sqrtf((float)hd));
                            truth = l > truth ? l : truth;
                        }
                    assert_true(bound >= truth);
                    if (pass == 0) {
                        box[i][trial] = bound;
                        slack_box += bound - truth;
                    } else {
                        assert_true(bound <= box[i][trial]);
                        slack_sketch += bound - truth;
                    }
                }
            }
            if (pass == 0)
                for (int i = 0; i < 3; i++) {
                    void *b;
                    size_t l;
                    assert_int_equal(kvcache_block_take(kv, seq, 0, out[i], &b, &l), KV_OK);
                    free(b);
                }
        }
        fprintf(stderr, "sketch bound: mean slack %.3f (digest %.3f)\n", slack_sketch / 60,
                slack_box / 60);
        assert_true(slack_sketch < 0.25 * slack_box);
        kvcache_free(kv);
        ref_free(&r);
    }
}

static void test_pool_full(void **st) {
    (void)st;
    kvcache_opts o = {.n_layers = 2,
                      .n_heads = 2,
                      .n_kv_heads = 1,
                      .head_dim = 8,
                      .kv_dtype = DT_F32,
                      .pool_blocks = 3,
                      .max_seqs = 2};
    char err[256];
    kvcache_t *kv = kvcache_new(&o, err, sizeof err);
    assert_non_null(kv);
    int s0 = kvcache_seq_new(kv), s1 = kvcache_seq_new(kv);
    assert_true(s0 >= 0 && s1 >= 0 && s0 != s1);
    assert_int_equal(kvcache_seq_new(kv), -1); /* max_seqs */
    float k[8] = {1}, v[8] = {2};
    for (int p = 0; p < 32; p++)
        assert_int_equal(kvcache_append(kv, s0, 0, p, k, v), KV_OK);
    assert_int_equal(kvcache_append(kv, s1, 0, 0, k, v), KV_OK); /* third slot, other sequence */
    assert_int_equal(kvcache_free_slots(kv, 0), 0);
    assert_int_equal(kvcache_free_slots(kv, 1), 3);
    assert_int_equal(kvcache_append(kv, s0, 0, 32, k, v), KV_EFULL);
    assert_non_null(strstr(kvcache_errmsg(kv), "no free slot"));
    assert_int_equal(kvcache_seq_len(kv, s0, 0), 32); /* nothing changed */
    assert_int_equal(kvcache_seq_blocks(kv, s0, 0), 2);
    assert_int_equal(kvcache_append(kv, s0, 0, 5, k, v), KV_EINVAL); /* out of order */
    void *b;
    size_t l;
    assert_int_equal(kvcache_block_take(kv, s0, 0, 0, &b, &l), KV_OK);
    assert_int_equal(kvcache_append(kv, s0, 0, 32, k, v), KV_OK); /* slot reused */
    assert_int_equal(kvcache_block_put(kv, s0, 0, 0, b, l), KV_EFULL);
    assert_int_equal(kvcache_block_state(kv, s0, 0, 0), KV_BLOCK_OUT);
    kvcache_seq_free(kv, s1);
    assert_int_equal(kvcache_free_slots(kv, 0), 1);
    assert_int_equal(kvcache_block_put(kv, s0, 0, 0, b, l), KV_OK);
    free(b);
    /* bad handles and options are errors, not crashes */
    assert_int_equal(kvcache_append(kv, 7, 0, 0, k, v), KV_EINVAL);
    assert_int_equal(kvcache_append(kv, s0, 2, 0, k, v), KV_EINVAL);
    assert_int_equal(kvcache_block_take(kv, s0, 0, 9, &b, &l), KV_EINVAL);
    float q[16] = {0}, out[16];
    assert_int_equal(kvcache_attend(kv, s0, 0, q, 1, 40, out, NULL), KV_EINVAL);
    kvcache_free(kv);
    o.n_heads = 3, o.n_kv_heads = 2;
    assert_null(kvcache_new(&o, err, sizeof err));
    assert_non_null(strstr(err, "multiple"));
    o.n_heads = 2, o.n_kv_heads = 1, o.kv_dtype = DT_F16;
    assert_null(kvcache_new(&o, err, sizeof err));
}

/* A block taken out whose keys align with q is a revival candidate; one
 * whose keys are tiny is not. */
static void test_revival(void **st) {
    (void)st;
    const int nh = 2, nkv = 1, hd = 8, T = 64;
    kvcache_opts o = {
        .n_layers = 1, .n_heads = nh, .n_kv_heads = nkv, .head_dim = hd, .kv_dtype = DT_F32};
    char err[256];
    kvcache_t *kv = kvcache_new(&o, err, sizeof err);
    int seq = kvcache_seq_new(kv);
    float q[2 * 8], k[8], v[8] = {0};
    for (int d = 0; d < hd; d++)
        q[d] = q[hd + d] = 1.0f;
    for (int p = 0; p < T; p++) {
        float a =
            (p / 16 == 1) ? 6.0f : (p / 16 == 2 ? 0.01f : 4.0f); /* block 1 strong, block 2 weak */
        for (int d = 0; d < hd; d++)
            k[d] = a * (d % 2 ? 1.0f : 0.9f);
        assert_int_equal(kvcache_append(kv, seq, 0, p, k, v), KV_OK);
    }
    void *b;
    size_t l;
    for (int blk = 1; blk <= 2; blk++) {
        assert_int_equal(kvcache_block_take(kv, seq, 0, blk, &b, &l), KV_OK);
        free(b);
    }
    int cand[8];
    float margin;
    int n =
        kvcache_revival_candidates(kv, seq, 0, q, T - 1, KV_REVIVAL_TAU, cand, 8, &margin, NULL);
    assert_int_equal(n, 1);
    assert_int_equal(cand[0], 1);
    assert_true(margin > 0.0f);
    /* prefetch mode: the same answer as a by-product of attention */
    assert_int_equal(kvcache_seq_set_revival(kv, seq, KV_REVIVAL_TAU), KV_OK);
    float out[16];
    assert_int_equal(kvcache_attend(kv, seq, 0, q, 1, T - 1, out, NULL), KV_OK);
    assert_int_equal(kvcache_revival_last(kv, seq, 0, cand, 8), 1);
    assert_int_equal(cand[0], 1);
    /* huge tau: everything OUT is a candidate; dropped never */
    assert_int_equal(kvcache_revival_candidates(kv, seq, 0, q, T - 1, 1e9f, cand, 8, NULL, NULL),
                     2);
    assert_int_equal(kvcache_block_drop(kv, seq, 0, 2), KV_OK);
    assert_int_equal(kvcache_revival_candidates(kv, seq, 0, q, T - 1, 1e9f, cand, 8, NULL, NULL),
                     1);
    assert_int_equal(kvcache_revival_candidates(kv, seq, 0, q, T, 1e9f, cand, 8, NULL, NULL),
                     -1); /* bad pos */
    kvcache_free(kv);
}

/* Captured probabilities equal the reference within 1e-6 and sum to 1. */
static void test_debug_capture(void **st) {
    (void)st;
    ref_t r;
    int seq, T = 77, nh = 4;
    kvcache_t *kv = make_cache(1, nh, 2, 32, DT_F32, 0, T, &r, &seq);
    float probs[77];
    assert_int_equal(kvcache_debug_capture(kv, seq, 0, 0, probs), -1); /* off */
    assert_int_equal(kvcache_debug_enable(kv, seq, 1), KV_OK);
    void *b;
    size_t l;
    assert_int_equal(kvcache_block_take(kv, seq, 0, 2, &b, &l), KV_OK);
    free(b);
    uint8_t mask[77];
    for (int t = 0; t < T; t++)
        mask[t] = t / 16 != 2;
    float q[4 * 32], out[4 * 32], want[4 * 32];
    double pw[4 * 77];
    fill(q, sizeof q / sizeof q[0], 2.0f);
    assert_int_equal(kvcache_attend(kv, seq, 0, q, 1, T - 1, out, NULL), KV_OK);
    ref_row(&r, q, T - 1, mask, want, pw);
    for (int h = 0; h < nh; h++) {
        assert_int_equal(kvcache_debug_capture(kv, seq, 0, h, probs), T);
        double s = 0;
        for (int t = 0; t < T; t++) {
            assert_true(fabs(probs[t] - pw[h * T + t]) < 1e-6);
            s += probs[t];
        }
        assert_true(fabs(s - 1.0) < 1e-5);
    }
    kvcache_free(kv);
    ref_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attend_matches_reference),
        cmocka_unit_test(test_attend_bf16),
        cmocka_unit_test(test_bf16_roundtrip_layout),
        cmocka_unit_test(test_absent_blocks_exact),
        cmocka_unit_test(test_take_put_bit_identical),
        cmocka_unit_test(test_lend_bit_identical),
        cmocka_unit_test(test_lend_pending),
        cmocka_unit_test(test_digest_bound),
        cmocka_unit_test(test_sketch_bound),
        cmocka_unit_test(test_pool_full),
        cmocka_unit_test(test_revival),
        cmocka_unit_test(test_debug_capture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
