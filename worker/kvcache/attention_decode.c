/* attention_decode.c - one query row over paged KV blocks (decode), split
 * flash-decoding style (see attention_impl.h).
 *
 * The n hot blocks visible to the row are cut into chunks of consecutive
 * blocks. One task = one chunk, all KV heads:
 *   1. logits of every token of the chunk for every query head (K read once,
 *      block after block in address order: K[g=0..n_kv) of a slot is one
 *      contiguous run);
 *   2. per head: chunk max m_c, e_t = exp(l_t - m_c) in place, s_c = sum e_t;
 *   3. P_c = sum_t e_t v_t (V read once, in address order).
 * Then one task per head merges the chunks: M = max m_c, S = sum s_c
 * exp(m_c - M), out = sum P_c exp(m_c - M) / S. Per-block masses, the
 * per-thread cumulative masses and the last-row probabilities are computed
 * afterwards from the final M and S (p_t = e_t exp(m_c - M) / S), so they are
 * the exact softmax of the row, whatever the split.
 *
 * The split depends only on the shapes (never on the thread count), so the
 * result is the same with any pool.
 *
 * Scratch (ws->dec, grown on demand, never per call):
 *   E    [n_heads][lcap]          logits, then e_t
 *   part [nchunk][n_heads][hd]    unnormalised partial outputs
 *   pm   [nchunk][n_heads]        chunk maxima
 *   ps   [nchunk][n_heads]        chunk sums
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "attention_impl.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define DEC_X86 1
#else
#define DEC_X86 0
#endif

#define DEC_CHUNK_MIN 131072 /* K+V per task: at least this much, */
#define DEC_CHUNK_MAX 524288 /* at most this much (each task start is a cold stream), */
#define DEC_CHUNK_SPLIT 16   /* aiming at this many tasks in between */
#define DEC_MAX_CHUNKS 64    /* bounds the merge work and scratch */

/* out[j*ldo + t] = q_j . K[t] * scale for heads j < G (q [G][hd]), t < nv.
 * pf: the run of keys read next (another head or block; NULL: none): the
 * SIMD kernels ask for its lines at the pace they read their own, so the next
 * page is in flight before the hardware prefetcher would get to it. */
typedef void (*dec_qk_fn)(const float *q, int G, const void *K, int nv, int hd, float scale,
                          float *out, size_t ldo, const char *pf);
/* acc[j][d] += sum_t p[j*ldp + t] * V[t][d] for heads j < G; pf as above */
typedef void (*dec_pv_fn)(float *acc, int G, const float *p, size_t ldp, const void *V, int nv,
                          int hd, const char *pf);
/* x[i] = exp(x[i] - m), returns the sum */
typedef float (*dec_expsum_fn)(float *x, int n, float m);
typedef float (*dec_max_fn)(const float *x, int n);

typedef struct {
    dec_qk_fn qk;
    dec_pv_fn pv;
    dec_expsum_fn expsum;
    dec_max_fn maxv;
    int eo; /* q and partial outputs in the even/odd order of ld32_bf16_eo */
} dec_ops;

/* ================================================================ portable */

static inline float kv_at(const void *p, size_t i, int bf16) {
    if (bf16)
        return attn_bf16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

#define DEC_GENERIC(SUFFIX, BF16)                                                                  \
    static void qk_gen_##SUFFIX(const float *q, int G, const void *K, int nv, int hd, float scale, \
                                float *out, size_t ldo, const char *pf) {                          \
        (void)pf;                                                                                  \
        for (int j = 0; j < G; j++)                                                                \
            for (int t = 0; t < nv; t++) {                                                         \
                float s = 0.0f;                                                                    \
                for (int d = 0; d < hd; d++)                                                       \
                    s += q[(size_t)j * hd + d] * kv_at(K, (size_t)t * hd + d, BF16);               \
                out[(size_t)j * ldo + t] = s * scale;                                              \
            }                                                                                      \
    }                                                                                              \
    static void pv_gen_##SUFFIX(float *acc, int G, const float *p, size_t ldp, const void *V,      \
                                int nv, int hd, const char *pf) {                                  \
        (void)pf;                                                                                  \
        for (int j = 0; j < G; j++)                                                                \
            for (int t = 0; t < nv; t++) {                                                         \
                const float w = p[(size_t)j * ldp + t];                                            \
                for (int d = 0; d < hd; d++)                                                       \
                    acc[(size_t)j * hd + d] += w * kv_at(V, (size_t)t * hd + d, BF16);             \
            }                                                                                      \
    }

DEC_GENERIC(f32, 0)
DEC_GENERIC(bf16, 1)

static float expsum_gen(float *x, int n, float m) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    return s;
}

static float max_gen(const float *x, int n) {
    float m = -INFINITY;
    for (int i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

static const dec_ops ops_gen_f32 = {qk_gen_f32, pv_gen_f32, expsum_gen, max_gen, 0};
static const dec_ops ops_gen_bf16 = {qk_gen_bf16, pv_gen_bf16, expsum_gen, max_gen, 0};

/* ================================================================ AVX-512 */

#if DEC_X86
#define T5 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define T5I                                                                                        \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma"), always_inline)) static inline

T5I __m512 ld16_bf16(const void *p) {
    __m256i h = _mm256_loadu_si256((const __m256i *)p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
T5I __m512 ld16_f32(const void *p) {
    return _mm512_loadu_ps(p);
}

/* Sums of four vectors -> one __m128 {sum a, sum b, sum c, sum d}. */
T5I __m128 hsum4x16(__m512 a, __m512 b, __m512 c, __m512 d) {
    /* fold 512 -> 256 */
    __m256 a8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    __m256 b8 = _mm256_add_ps(_mm512_castps512_ps256(b), _mm512_extractf32x8_ps(b, 1));
    __m256 c8 = _mm256_add_ps(_mm512_castps512_ps256(c), _mm512_extractf32x8_ps(c, 1));
    __m256 d8 = _mm256_add_ps(_mm512_castps512_ps256(d), _mm512_extractf32x8_ps(d, 1));
    /* pairwise: hadd gives {a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, ...} */
    __m256 ab = _mm256_hadd_ps(a8, b8), cd = _mm256_hadd_ps(c8, d8);
    __m256 abcd = _mm256_hadd_ps(ab, cd); /* {a, b, c, d | a', b', c', d'} per 128-bit lane */
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* Two heads (qa, qb) x four tokens: 8 accumulators, 6 loads per 8 FMAs. */
#define DEC_QK512(SUFFIX, ES, LOAD)                                                                \
    T5 static void qk512_##SUFFIX(const float *q, int G, const void *Kv, int nv, int hd,           \
                                  float scale, float *out, size_t ldo, const char *pf) {           \
        (void)pf;                                                                                  \
        const char *K = Kv;                                                                        \
        const size_t row = (size_t)hd * ES;                                                        \
        const __m128 sc = _mm_set1_ps(scale);                                                      \
        int j = 0;                                                                                 \
        for (; j < G; j += 2) {                                                                    \
            const float *qa = q + (size_t)j * hd, *qb = j + 1 < G ? qa + hd : qa;                  \
            float *oa = out + (size_t)j * ldo, *ob = j + 1 < G ? oa + ldo : oa;                    \
            int t = 0;                                                                             \
            for (; t + 4 <= nv; t += 4) { /* hot loop: 4 keys, 2 heads */                          \
                const char *k0 = K + (size_t)t * row, *k1 = k0 + row, *k2 = k1 + row,              \
                           *k3 = k2 + row;                                                         \
                __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0,      \
                       b2 = a0, b3 = a0;                                                           \
                for (int d = 0; d < hd; d += 16) {                                                 \
                    const size_t o = (size_t)d * ES;                                               \
                    __m512 x = _mm512_loadu_ps(qa + d), y = _mm512_loadu_ps(qb + d);               \
                    __m512 v0 = LOAD(k0 + o), v1 = LOAD(k1 + o), v2 = LOAD(k2 + o),                \
                           v3 = LOAD(k3 + o);                                                      \
                    a0 = _mm512_fmadd_ps(x, v0, a0), b0 = _mm512_fmadd_ps(y, v0, b0);              \
                    a1 = _mm512_fmadd_ps(x, v1, a1), b1 = _mm512_fmadd_ps(y, v1, b1);              \
                    a2 = _mm512_fmadd_ps(x, v2, a2), b2 = _mm512_fmadd_ps(y, v2, b2);              \
                    a3 = _mm512_fmadd_ps(x, v3, a3), b3 = _mm512_fmadd_ps(y, v3, b3);              \
                }                                                                                  \
                _mm_storeu_ps(ob + t, _mm_mul_ps(hsum4x16(b0, b1, b2, b3), sc));                   \
                _mm_storeu_ps(oa + t, _mm_mul_ps(hsum4x16(a0, a1, a2, a3), sc));                   \
            }                                                                                      \
            for (; t < nv; t++) {                                                                  \
                const char *k0 = K + (size_t)t * row;                                              \
                __m512 a0 = _mm512_setzero_ps(), b0 = a0;                                          \
                for (int d = 0; d < hd; d += 16) {                                                 \
                    __m512 v0 = LOAD(k0 + (size_t)d * ES);                                         \
                    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qa + d), v0, a0);                         \
                    b0 = _mm512_fmadd_ps(_mm512_loadu_ps(qb + d), v0, b0);                         \
                }                                                                                  \
                ob[t] = _mm512_reduce_add_ps(b0) * scale;                                          \
                oa[t] = _mm512_reduce_add_ps(a0) * scale;                                          \
            }                                                                                      \
        }                                                                                          \
    }

/* acc for two heads over NV vectors (16 floats each) of dims [d, d+16 NV):
 * all 2 NV accumulators stay in registers across the tokens. */
#define DEC_PV512_SPAN(SUFFIX, ES, LOAD, NV)                                                       \
    T5I void pvspan##NV##_##SUFFIX(float *aa, float *ab, const float *pa, const float *pb,         \
                                   const char *V, size_t row, int nv, int d) {                     \
        __m512 A[NV], B[NV];                                                                       \
        for (int i = 0; i < NV; i++)                                                               \
            A[i] = _mm512_loadu_ps(aa + d + 16 * i), B[i] = _mm512_loadu_ps(ab + d + 16 * i);      \
        for (int t = 0; t < nv; t++) { /* hot loop: one value row */                               \
            const char *v = V + (size_t)t * row + (size_t)d * ES;                                  \
            const __m512 wa = _mm512_set1_ps(pa[t]), wb = _mm512_set1_ps(pb[t]);                   \
            for (int i = 0; i < NV; i++) {                                                         \
                __m512 x = LOAD(v + (size_t)16 * i * ES);                                          \
                A[i] = _mm512_fmadd_ps(wa, x, A[i]), B[i] = _mm512_fmadd_ps(wb, x, B[i]);          \
            }                                                                                      \
        }                                                                                          \
        for (int i = 0; i < NV; i++)                                                               \
            _mm512_storeu_ps(aa + d + 16 * i, A[i]), _mm512_storeu_ps(ab + d + 16 * i, B[i]);      \
    }

#define DEC_PV512(SUFFIX, ES)                                                                      \
    T5 static void pv512_##SUFFIX(float *acc, int G, const float *p, size_t ldp, const void *Vv,   \
                                  int nv, int hd, const char *pf) {                                \
        (void)pf;                                                                                  \
        const char *V = Vv;                                                                        \
        const size_t row = (size_t)hd * ES;                                                        \
        for (int j = 0; j < G; j += 2) {                                                           \
            float *aa = acc + (size_t)j * hd;                                                      \
            const float *pa = p + (size_t)j * ldp;                                                 \
            /* odd G: the last head pairs with itself against a scratch row */                     \
            float *ab = aa + hd;                                                                   \
            const float *pb = pa + ldp;                                                            \
            float spare[512];                                                                      \
            if (j + 1 >= G) {                                                                      \
                memset(spare, 0, sizeof spare);                                                    \
                ab = spare, pb = pa;                                                               \
            }                                                                                      \
            int d = 0;                                                                             \
            for (; d + 128 <= hd; d += 128)                                                        \
                pvspan8_##SUFFIX(aa, ab, pa, pb, V, row, nv, d);                                   \
            for (; d + 64 <= hd; d += 64)                                                          \
                pvspan4_##SUFFIX(aa, ab, pa, pb, V, row, nv, d);                                   \
            for (; d < hd; d += 16)                                                                \
                pvspan1_##SUFFIX(aa, ab, pa, pb, V, row, nv, d);                                   \
        }                                                                                          \
    }

DEC_QK512(bf16, 2, ld16_bf16)
DEC_QK512(f32, 4, ld16_f32)
DEC_PV512_SPAN(bf16, 2, ld16_bf16, 8)
DEC_PV512_SPAN(bf16, 2, ld16_bf16, 4)
DEC_PV512_SPAN(bf16, 2, ld16_bf16, 1)
DEC_PV512_SPAN(f32, 4, ld16_f32, 8)
DEC_PV512_SPAN(f32, 4, ld16_f32, 4)
DEC_PV512_SPAN(f32, 4, ld16_f32, 1)
DEC_PV512(bf16, 2)
DEC_PV512(f32, 4)

/* bf16 K/V, head_dim % 32 == 0: one 64-byte load holds 32 elements as 16
 * dwords; (dword << 16) widens the even elements, (dword & 0xffff0000) the
 * odd ones, exactly, with no shuffle. q and the accumulators use the same
 * permuted order (per 32-element chunk: 16 even, then 16 odd), prepared by
 * dec_permute and undone by the merge. */
T5I void ld32_bf16_eo(const void *p, __m512 *ev, __m512 *od) {
    __m512i w = _mm512_loadu_si512(p);
    *ev = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    *od = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32((int)0xffff0000u)));
}

T5 static void qk512_bf16eo(const float *q, int G, const void *Kv, int nv, int hd, float scale,
                            float *out, size_t ldo, const char *pf) {
    const uint16_t *K = Kv;
    const __m128 sc = _mm_set1_ps(scale);
    for (int j = 0; j < G; j += 2) {
        const float *qa = q + (size_t)j * hd, *qb = j + 1 < G ? qa + hd : qa;
        float *oa = out + (size_t)j * ldo, *ob = j + 1 < G ? oa + ldo : oa;
        int t = 0;
        for (; t + 4 <= nv; t += 4) { /* hot loop: 4 keys, 2 heads */
            const uint16_t *k0 = K + (size_t)t * hd, *k1 = k0 + hd, *k2 = k1 + hd, *k3 = k2 + hd;
            if (j == 0 && pf)
                for (int o = 0; o < 4 * hd * 2; o += 64)
                    __builtin_prefetch(pf + (size_t)t * hd * 2 + o, 0, 3);
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0,
                   b3 = a0;
            for (int d = 0; d < hd; d += 32) {
                __m512 xe = _mm512_loadu_ps(qa + d), xo = _mm512_loadu_ps(qa + d + 16);
                __m512 ye = _mm512_loadu_ps(qb + d), yo = _mm512_loadu_ps(qb + d + 16);
                __m512 e, o;
                ld32_bf16_eo(k0 + d, &e, &o);
                a0 = _mm512_fmadd_ps(xe, e, a0), b0 = _mm512_fmadd_ps(ye, e, b0);
                a0 = _mm512_fmadd_ps(xo, o, a0), b0 = _mm512_fmadd_ps(yo, o, b0);
                ld32_bf16_eo(k1 + d, &e, &o);
                a1 = _mm512_fmadd_ps(xe, e, a1), b1 = _mm512_fmadd_ps(ye, e, b1);
                a1 = _mm512_fmadd_ps(xo, o, a1), b1 = _mm512_fmadd_ps(yo, o, b1);
                ld32_bf16_eo(k2 + d, &e, &o);
                a2 = _mm512_fmadd_ps(xe, e, a2), b2 = _mm512_fmadd_ps(ye, e, b2);
                a2 = _mm512_fmadd_ps(xo, o, a2), b2 = _mm512_fmadd_ps(yo, o, b2);
                ld32_bf16_eo(k3 + d, &e, &o);
                a3 = _mm512_fmadd_ps(xe, e, a3), b3 = _mm512_fmadd_ps(ye, e, b3);
                a3 = _mm512_fmadd_ps(xo, o, a3), b3 = _mm512_fmadd_ps(yo, o, b3);
            }
            _mm_storeu_ps(ob + t, _mm_mul_ps(hsum4x16(b0, b1, b2, b3), sc));
            _mm_storeu_ps(oa + t, _mm_mul_ps(hsum4x16(a0, a1, a2, a3), sc));
        }
        for (; t < nv; t++) {
            const uint16_t *k0 = K + (size_t)t * hd;
            __m512 a0 = _mm512_setzero_ps(), b0 = a0;
            for (int d = 0; d < hd; d += 32) {
                __m512 e, o;
                ld32_bf16_eo(k0 + d, &e, &o);
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qa + d), e, a0);
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(qa + d + 16), o, a0);
                b0 = _mm512_fmadd_ps(_mm512_loadu_ps(qb + d), e, b0);
                b0 = _mm512_fmadd_ps(_mm512_loadu_ps(qb + d + 16), o, b0);
            }
            ob[t] = _mm512_reduce_add_ps(b0) * scale;
            oa[t] = _mm512_reduce_add_ps(a0) * scale;
        }
    }
}

/* Two heads over NC 32-element chunks from dim d: 4 NC accumulators. */
#define DEC_PVEO_SPAN(NC)                                                                          \
    T5I void pveo##NC(float *aa, float *ab, const float *pa, const float *pb, const uint16_t *V,   \
                      const char *pf, int hd, int nv, int d) {                                     \
        __m512 A[2 * NC], B[2 * NC];                                                               \
        for (int i = 0; i < 2 * NC; i++)                                                           \
            A[i] = _mm512_loadu_ps(aa + d + 16 * i), B[i] = _mm512_loadu_ps(ab + d + 16 * i);      \
        for (int t = 0; t < nv; t++) { /* hot loop: one value row */                               \
            const uint16_t *v = V + (size_t)t * hd + d;                                            \
            if (pf)                                                                                \
                for (int o = 0; o < NC * 64; o += 64)                                              \
                    __builtin_prefetch(pf + ((size_t)t * hd + d) * 2 + o, 0, 3);                   \
            const __m512 wa = _mm512_set1_ps(pa[t]), wb = _mm512_set1_ps(pb[t]);                   \
            for (int i = 0; i < NC; i++) {                                                         \
                __m512 e, o;                                                                       \
                ld32_bf16_eo(v + 32 * i, &e, &o);                                                  \
                A[2 * i] = _mm512_fmadd_ps(wa, e, A[2 * i]),                                       \
                      B[2 * i] = _mm512_fmadd_ps(wb, e, B[2 * i]);                                 \
                A[2 * i + 1] = _mm512_fmadd_ps(wa, o, A[2 * i + 1]);                               \
                B[2 * i + 1] = _mm512_fmadd_ps(wb, o, B[2 * i + 1]);                               \
            }                                                                                      \
        }                                                                                          \
        for (int i = 0; i < 2 * NC; i++)                                                           \
            _mm512_storeu_ps(aa + d + 16 * i, A[i]), _mm512_storeu_ps(ab + d + 16 * i, B[i]);      \
    }
DEC_PVEO_SPAN(4)
DEC_PVEO_SPAN(1)

T5 static void pv512_bf16eo(float *acc, int G, const float *p, size_t ldp, const void *Vv, int nv,
                            int hd, const char *pf) {
    const uint16_t *V = Vv;
    for (int j = 0; j < G; j += 2) {
        float *aa = acc + (size_t)j * hd, *ab = aa + hd;
        const float *pa = p + (size_t)j * ldp, *pb = pa + ldp;
        float spare[512];
        if (j + 1 >= G) { /* odd G: the last head pairs with itself against a scratch row */
            memset(spare, 0, sizeof spare);
            ab = spare, pb = pa;
        }
        int d = 0;
        for (; d + 128 <= hd; d += 128)
            pveo4(aa, ab, pa, pb, V, j == 0 ? pf : NULL, hd, nv, d);
        for (; d < hd; d += 32)
            pveo1(aa, ab, pa, pb, V, j == 0 ? pf : NULL, hd, nv, d);
    }
}

/* exp(x) for x <= 0 (softmax arguments), Cephes polynomial, ~2 ulp. */
T5I __m512 exp512(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.3f);
    __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_max_ps(x, lo);
    __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
    __m512 y = _mm512_set1_ps(1.9875691500E-4f);
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507E-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073E-3f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894E-2f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459E-1f));
    y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201E-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.0f)));
    __m512i n = _mm512_cvtps_epi32(fx);
    n = _mm512_slli_epi32(_mm512_add_epi32(n, _mm512_set1_epi32(127)), 23);
    y = _mm512_mul_ps(y, _mm512_castsi512_ps(n));
    return _mm512_maskz_mov_ps((__mmask16)~under, y);
}

T5 static float expsum512(float *x, int n, float m) {
    const __m512 mv = _mm512_set1_ps(m);
    __m512 s = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv));
        _mm512_storeu_ps(x + i, e);
        s = _mm512_add_ps(s, e);
    }
    if (i < n) {
        __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv));
        e = _mm512_maskz_mov_ps(k, e);
        _mm512_mask_storeu_ps(x + i, k, e);
        s = _mm512_add_ps(s, e);
    }
    return _mm512_reduce_add_ps(s);
}

T5 static float max512(const float *x, int n) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
    if (i < n)
        m = _mm512_mask_max_ps(m, (__mmask16)((1u << (n - i)) - 1), m,
                               _mm512_maskz_loadu_ps((__mmask16)((1u << (n - i)) - 1), x + i));
    return _mm512_reduce_max_ps(m);
}

static const dec_ops ops512_f32 = {qk512_f32, pv512_f32, expsum512, max512, 0};
static const dec_ops ops512_bf16 = {qk512_bf16, pv512_bf16, expsum512, max512, 0};
static const dec_ops ops512_bf16eo = {qk512_bf16eo, pv512_bf16eo, expsum512, max512, 1};

static int have512;
static pthread_once_t once512 = PTHREAD_ONCE_INIT;
static void probe512(void) {
    __builtin_cpu_init();
    have512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
              __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}
#endif

static const dec_ops *dec_pick(dtype_t dt, int hd) {
#if DEC_X86
    pthread_once(&once512, probe512);
    if (have512 && hd % 32 == 0 && hd <= 512 && dt == DT_BF16 && attn_simd_enabled())
        return &ops512_bf16eo;
    if (have512 && hd % 16 == 0 && hd <= 512 && attn_simd_enabled())
        return dt == DT_BF16 ? &ops512_bf16 : &ops512_f32;
#endif
    return dt == DT_BF16 ? &ops_gen_bf16 : &ops_gen_f32;
}

/* ================================================================ tasks */

typedef struct {
    const attn_args_t *a;
    const dec_ops *ops;
    int G, nb, bpc, nchunk; /* query heads per KV head, visible blocks, blocks per chunk, chunks */
    const int *off;         /* [nb+1] token offset of each block */
    size_t lcap;            /* E row stride */
    const float *q;         /* [n_heads][hd] queries (permuted when ops->eo) */
    float *E, *part, *pm, *ps;
    const int *cidx; /* chunk of each task (dec_chunk_task_idx) */
} dec_ctx;

/* dst = src in the even/odd order of ld32_bf16_eo (n % 32 == 0): per
 * 32-element chunk, elements 0,2,..,30 then 1,3,..,31. */
static void dec_permute(float *dst, const float *src, int n) {
    for (int c = 0; c < n; c += 32)
        for (int i = 0; i < 16; i++)
            dst[c + i] = src[c + 2 * i], dst[c + 16 + i] = src[c + 2 * i + 1];
}

/* Pulls [p, p + bytes) towards the cache: the first run of a task, which no
 * kernel asked for (each asks for the run after its own, see dec_qk_fn). */
static inline void dec_prefetch(const char *p, size_t bytes) {
    if (!p)
        return;
    for (size_t o = 0; o < bytes; o += 64)
        __builtin_prefetch(p + o, 0, 3);
}

/* hot loop: one chunk of blocks, all heads */
static void dec_chunk_task(void *vc, int c, int thread) {
    (void)thread;
    const dec_ctx *x = vc;
    const attn_args_t *a = x->a;
    const dec_ops *ops = x->ops;
    const int hd = a->head_dim, G = x->G, nh = a->n_heads, nkv = a->n_kv_heads;
    const size_t es = a->dtype == DT_BF16 ? 2 : 4;
    const size_t head_bytes = (size_t)a->block_tokens * hd * es, half = (size_t)nkv * head_bytes;
    const int b0 = c * x->bpc, b1 = b0 + x->bpc < x->nb ? b0 + x->bpc : x->nb;
    const int o0 = x->off[b0], n = x->off[b1] - o0;

    /* 1. logits, K in address order */
    for (int bi = b0; bi < b1; bi++) {
        const char *kb = a->blocks[bi].kv;
        const int nv = x->off[bi + 1] - x->off[bi];
        for (int g = 0; g < nkv; g++) {
            const char *next = g + 1 < nkv   ? kb + (size_t)(g + 1) * head_bytes
                               : bi + 1 < b1 ? (const char *)a->blocks[bi + 1].kv
                                             : (const char *)a->blocks[b0].kv + half;
            if (bi == b0 && g == 0)
                dec_prefetch(kb, head_bytes);
            ops->qk(x->q + (size_t)g * G * hd, G, kb + (size_t)g * head_bytes, nv, hd, a->scale,
                    x->E + (size_t)g * G * x->lcap + x->off[bi], x->lcap, next);
        }
    }
    /* 2. chunk max and exponentials */
    float *pm = x->pm + (size_t)c * nh, *ps = x->ps + (size_t)c * nh;
    for (int h = 0; h < nh; h++) {
        float *e = x->E + (size_t)h * x->lcap + o0;
        pm[h] = ops->maxv(e, n);
        ps[h] = ops->expsum(e, n, pm[h]);
    }
    if (a->lse_only)
        return;
    /* 3. unnormalised P V, V in address order */
    float *P = x->part + (size_t)c * nh * hd;
    memset(P, 0, (size_t)nh * hd * sizeof(float));
    for (int bi = b0; bi < b1; bi++) {
        const char *vb = (const char *)a->blocks[bi].kv + half;
        const int nv = x->off[bi + 1] - x->off[bi];
        for (int g = 0; g < nkv; g++) {
            const char *next = g + 1 < nkv   ? vb + (size_t)(g + 1) * head_bytes
                               : bi + 1 < b1 ? (const char *)a->blocks[bi + 1].kv + half
                                             : NULL;
            ops->pv(P + (size_t)g * G * hd, G, x->E + (size_t)g * G * x->lcap + x->off[bi], x->lcap,
                    vb + (size_t)g * head_bytes, nv, hd, next);
        }
    }
}

/* Chunk x->cidx[i] (a subset of the chunks, see attn_decode_run). */
static void dec_chunk_task_idx(void *vc, int i, int thread) {
    const dec_ctx *x = vc;
    dec_chunk_task(vc, x->cidx[i], thread);
}

/* One query head: log-sum-exp merge of the chunks, then masses/probabilities
 * from the final max and sum. */
static void dec_merge_task(void *vc, int h, int thread) {
    const dec_ctx *x = vc;
    const attn_args_t *a = x->a;
    const int hd = a->head_dim, nh = a->n_heads, bt = a->block_tokens;
    float *o = a->lse_only ? NULL : a->out + (size_t)h * hd;
    if (o)
        memset(o, 0, (size_t)hd * sizeof(float));
    if (x->nchunk == 0) {
        if (a->row_lse)
            a->row_lse[h] = -INFINITY;
        return;
    }
    float M = -INFINITY;
    for (int c = 0; c < x->nchunk; c++)
        M = x->pm[(size_t)c * nh + h] > M ? x->pm[(size_t)c * nh + h] : M;
    float S = 0.0f;
    for (int c = 0; c < x->nchunk; c++)
        S += x->ps[(size_t)c * nh + h] * expf(x->pm[(size_t)c * nh + h] - M);
    const float invS = 1.0f / S;
    if (a->row_lse)
        a->row_lse[h] = M + logf(S);
    if (a->lse_only)
        return;
    float acc[512]; /* hd <= 512 on the permuted path */
    float *dst = x->ops->eo ? acc : o;
    if (x->ops->eo)
        memset(acc, 0, (size_t)hd * sizeof(float));
    for (int c = 0; c < x->nchunk; c++) {
        const float f = expf(x->pm[(size_t)c * nh + h] - M) * invS;
        const float *P = x->part + ((size_t)c * nh + h) * hd;
        for (int d = 0; d < hd; d++)
            dst[d] += f * P[d];
    }
    if (x->ops->eo)
        for (int c = 0; c < hd; c += 32)
            for (int i = 0; i < 16; i++)
                o[c + 2 * i] = acc[c + i], o[c + 2 * i + 1] = acc[c + 16 + i];

    float *mass = a->mass && a->obs0 <= 0 ? a->mass + (size_t)h * a->n_logical : NULL;
    float *cum = a->cum ? a->cum + (size_t)thread * a->n_logical : NULL;
    float *pl = a->probs_last ? a->probs_last + (size_t)h * (a->pos0 + 1) : NULL;
    if (!mass && !cum && !pl)
        return;
    const float *e = x->E + (size_t)h * x->lcap;
    for (int c = 0; c < x->nchunk; c++) {
        const float f = expf(x->pm[(size_t)c * nh + h] - M) * invS;
        const int b0 = c * x->bpc, b1 = b0 + x->bpc < x->nb ? b0 + x->bpc : x->nb;
        for (int bi = b0; bi < b1; bi++) {
            const int blk = a->blocks[bi].block, t0 = x->off[bi], nv = x->off[bi + 1] - t0;
            float bm = 0.0f;
            for (int t = 0; t < nv; t++) {
                const float p = e[t0 + t] * f;
                bm += p;
                if (pl)
                    pl[(size_t)blk * bt + t] = p;
            }
            if (mass)
                mass[blk] = bm;
            if (cum)
                cum[blk] += bm;
        }
    }
}

int attn_decode_run(const attn_args_t *a, attn_ws_t *ws, threadpool_t *tp) {
    const int bt = a->block_tokens, pos = a->pos0, nh = a->n_heads, hd = a->head_dim;
    /* token offsets of the visible blocks (ascending; stop at the first invisible one) */
    if ((size_t)a->n_blocks + 1 > ws->off_cap) {
        size_t cap = (size_t)a->n_blocks + 1 + (size_t)a->n_blocks / 2 + 16;
        int *p = realloc(ws->dec_off, cap * sizeof *p);
        if (!p)
            return -1;
        ws->dec_off = p, ws->off_cap = cap;
    }
    int nb = 0, n = 0;
    ws->dec_off[0] = 0;
    for (; nb < a->n_blocks; nb++) {
        const attn_block_t *B = &a->blocks[nb];
        int nv = pos - B->block * bt + 1;
        if (nv <= 0)
            break;
        nv = nv < B->ntok ? nv : B->ntok;
        n += nv;
        ws->dec_off[nb + 1] = n;
    }
    const size_t es = a->dtype == DT_BF16 ? 2 : 4;
    const size_t blk_bytes = 2 * (size_t)a->n_kv_heads * bt * hd * es;
    size_t chunk =
        (size_t)nb * blk_bytes / DEC_CHUNK_SPLIT; /* shapes only: same split on any pool */
    chunk = chunk < DEC_CHUNK_MIN ? DEC_CHUNK_MIN : chunk > DEC_CHUNK_MAX ? DEC_CHUNK_MAX : chunk;
    int bpc = (int)((chunk + blk_bytes - 1) / blk_bytes);
    if (bpc < 1)
        bpc = 1;
    if ((nb + bpc - 1) / bpc > DEC_MAX_CHUNKS)
        bpc = (nb + DEC_MAX_CHUNKS - 1) / DEC_MAX_CHUNKS;
    const int nchunk = (nb + bpc - 1) / bpc;
    const size_t lcap = ((size_t)n + 15) & ~(size_t)15;
    const size_t need = (size_t)nh * lcap + (size_t)nchunk * nh * (hd + 2) + (size_t)nh * hd + 16;
    if (need > ws->dec_cap) {
        size_t cap = need + need / 2 + 1024;
        float *p = aligned_alloc(64, (cap * sizeof(float) + 63) / 64 * 64);
        if (!p)
            return -1;
        free(ws->dec);
        ws->dec = p, ws->dec_cap = cap;
    }
    dec_ctx x = {.a = a,
                 .ops = dec_pick(a->dtype, hd),
                 .G = nh / a->n_kv_heads,
                 .nb = nb,
                 .bpc = bpc,
                 .nchunk = nchunk,
                 .off = ws->dec_off,
                 .lcap = lcap,
                 .E = ws->dec};
    x.part = x.E + (size_t)nh * lcap;
    x.pm = x.part + (size_t)nchunk * nh * hd;
    x.ps = x.pm + (size_t)nchunk * nh;
    x.q = a->q;
    if (x.ops->eo) {
        float *qp = x.ps + (size_t)nchunk * nh;
        for (int h = 0; h < nh; h++)
            dec_permute(qp + (size_t)h * hd, a->q + (size_t)h * hd, hd);
        x.q = qp;
    }
    if (a->mass && a->obs0 <= 0 && !a->lse_only)
        memset(a->mass, 0, (size_t)nh * a->n_logical * sizeof(float));
    if (a->probs_last && !a->lse_only)
        memset(a->probs_last, 0, (size_t)nh * (pos + 1) * sizeof(float));
    if (a->fill) {
        /* chunks whose blocks are all there first; the wait overlaps them */
        int ready[DEC_MAX_CHUNKS], later[DEC_MAX_CHUNKS], nr = 0, nl = 0;
        for (int c = 0; c < nchunk; c++) {
            int b0 = c * bpc, b1 = b0 + bpc < nb ? b0 + bpc : nb, all = 1;
            for (int bi = b0; bi < b1 && all; bi++)
                all = a->blocks[bi].kv != NULL;
            if (all)
                ready[nr++] = c;
            else
                later[nl++] = c;
        }
        x.cidx = ready;
        tp_parallel_for(tp, nr, dec_chunk_task_idx, &x);
        if (a->fill(a->fill_ud) != 0)
            return 1;
        x.cidx = later;
        tp_parallel_for(tp, nl, dec_chunk_task_idx, &x);
    } else {
        tp_parallel_for(tp, nchunk, dec_chunk_task, &x);
    }
    tp_parallel_for(tp, nh, dec_merge_task, &x);
    return 0;
}
