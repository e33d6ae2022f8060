/* attention.c - CPU attention over paged KV blocks (see attention.h).
 *
 * One task = (KV head g, tile of up to ATTN_ROW_TILE query rows). For the
 * tile it computes, for the G = n_heads / n_kv_heads query heads of g:
 *   1. logits of every visible HOT key (compacted: hot tokens in order),
 *   2. a two-pass softmax per (row, head) -> probabilities in place, plus
 *      the per-block mass the summaries need,
 *   3. out = sum_t p_t * v_t.
 * K/V blocks in bf16 are widened to f32 once per (task, block). The inner
 * ops (block dot products, axpy, exp) have an AVX2+FMA version chosen at run
 * time and a portable one.
 */
#include "attention.h"

#include <stdatomic.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "attention_impl.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define ATTN_X86 1
#else
#define ATTN_X86 0
#endif

#define ATTN_ROW_TILE 16

/* ================================================================ bf16 */

uint16_t attn_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float attn_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ================================================================ kernel ops */

typedef struct {
    /* out[t] = q . K[t] * scale for t < ntok; K [ntok][hd] */
    void (*qk)(const float *q, const float *K, int ntok, int hd, float scale, float *out);
    /* acc[d] += sum_t p[t] * V[t][d]; V [ntok][hd] */
    void (*pv)(float *acc, const float *p, const float *V, int ntok, int hd);
    /* x[i] = exp(x[i] - m) for i < n; returns the sum */
    float (*expsum)(float *x, int n, float m);
    /* dst[i] = bf16 src[i] widened */
    void (*cvt)(const uint16_t *src, float *dst, int n);
    /* qk for two query vectors sharing K (two heads of one KV head) */
    void (*qk2)(const float *qa, const float *qb, const float *K, int ntok, int hd, float scale,
                float *oa, float *ob);
    /* pv for two accumulators sharing V */
    void (*pv2)(float *acca, float *accb, const float *pa, const float *pb, const float *V,
                int ntok, int hd);
    /* max of x[0..n) (-INFINITY when n == 0) */
    float (*maxv)(const float *x, int n);
    /* optional (NULL): qk2 / pv2 reading bf16 K / V directly, for single-row tiles */
    void (*qk2_bf16)(const float *qa, const float *qb, const uint16_t *K, int ntok, int hd,
                     float scale, float *oa, float *ob);
    void (*pv2_bf16)(float *acca, float *accb, const float *pa, const float *pb, const uint16_t *V,
                     int ntok, int hd);
} attn_ops;

static void qk_generic(const float *q, const float *K, int ntok, int hd, float scale, float *out) {
    for (int t = 0; t < ntok; t++) {
        const float *k = K + (size_t)t * hd;
        float a[8] = {0};
        int d = 0;
        for (; d + 8 <= hd; d += 8)
            for (int j = 0; j < 8; j++)
                a[j] += q[d + j] * k[d + j];
        float s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
        for (; d < hd; d++)
            s += q[d] * k[d];
        out[t] = s * scale;
    }
}

static void pv_generic(float *acc, const float *p, const float *V, int ntok, int hd) {
    for (int t = 0; t < ntok; t++) {
        const float w = p[t];
        const float *v = V + (size_t)t * hd;
        for (int d = 0; d < hd; d++)
            acc[d] += w * v[d];
    }
}

static float expsum_generic(float *x, int n, float m) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    return s;
}

static void cvt_generic(const uint16_t *src, float *dst, int n) {
    for (int i = 0; i < n; i++)
        dst[i] = attn_bf16_to_f32(src[i]);
}

static void qk2_generic(const float *qa, const float *qb, const float *K, int ntok, int hd,
                        float scale, float *oa, float *ob) {
    qk_generic(qa, K, ntok, hd, scale, oa);
    qk_generic(qb, K, ntok, hd, scale, ob);
}

static void pv2_generic(float *acca, float *accb, const float *pa, const float *pb, const float *V,
                        int ntok, int hd) {
    pv_generic(acca, pa, V, ntok, hd);
    pv_generic(accb, pb, V, ntok, hd);
}

static float maxv_generic(const float *x, int n) {
    float m = -INFINITY;
    for (int i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

#if ATTN_X86
#define AVX2 __attribute__((target("avx2,fma")))

AVX2 static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* hd % 8 == 0 (checked by the dispatcher). Four keys share each q load. */
AVX2 static void qk_avx2(const float *q, const float *K, int ntok, int hd, float scale,
                         float *out) {
    int t = 0;
    for (; t + 4 <= ntok; t += 4) {
        const float *k0 = K + (size_t)t * hd, *k1 = k0 + hd, *k2 = k1 + hd, *k3 = k2 + hd;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int d = 0; d < hd; d += 8) {
            __m256 qv = _mm256_loadu_ps(q + d);
            a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
            a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + d), a1);
            a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + d), a2);
            a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + d), a3);
        }
        out[t] = hsum256(a0) * scale;
        out[t + 1] = hsum256(a1) * scale;
        out[t + 2] = hsum256(a2) * scale;
        out[t + 3] = hsum256(a3) * scale;
    }
    for (; t < ntok; t++) {
        const float *k = K + (size_t)t * hd;
        __m256 a = _mm256_setzero_ps();
        for (int d = 0; d < hd; d += 8)
            a = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(k + d), a);
        out[t] = hsum256(a) * scale;
    }
}

AVX2 static void pv_avx2(float *acc, const float *p, const float *V, int ntok, int hd) {
    int d = 0;
    for (; d + 32 <= hd; d += 32) {
        __m256 a0 = _mm256_loadu_ps(acc + d), a1 = _mm256_loadu_ps(acc + d + 8),
               a2 = _mm256_loadu_ps(acc + d + 16), a3 = _mm256_loadu_ps(acc + d + 24);
        for (int t = 0; t < ntok; t++) {
            const float *v = V + (size_t)t * hd + d;
            __m256 w = _mm256_set1_ps(p[t]);
            a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v), a0);
            a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 8), a1);
            a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 16), a2);
            a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 24), a3);
        }
        _mm256_storeu_ps(acc + d, a0);
        _mm256_storeu_ps(acc + d + 8, a1);
        _mm256_storeu_ps(acc + d + 16, a2);
        _mm256_storeu_ps(acc + d + 24, a3);
    }
    for (; d < hd; d += 8) {
        __m256 a = _mm256_loadu_ps(acc + d);
        for (int t = 0; t < ntok; t++)
            a = _mm256_fmadd_ps(_mm256_set1_ps(p[t]), _mm256_loadu_ps(V + (size_t)t * hd + d), a);
        _mm256_storeu_ps(acc + d, a);
    }
}

/* exp(x) for x <= 0 (softmax arguments), Cephes polynomial, ~2 ulp. */
AVX2 static inline __m256 exp256(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i n = _mm256_cvtps_epi32(fx);
    n = _mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(n));
    return _mm256_andnot_ps(under, y);
}

AVX2 static float expsum_avx2(float *x, int n, float m) {
    __m256 mv = _mm256_set1_ps(m), s = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
        _mm256_storeu_ps(x + i, e);
        s = _mm256_add_ps(s, e);
    }
    float tot = hsum256(s);
    if (i < n) {
        float tmp[8] = {0};
        int r = n - i;
        for (int j = 0; j < r; j++)
            tmp[j] = x[i + j] - m;
        for (int j = r; j < 8; j++)
            tmp[j] = -INFINITY;
        __m256 e = exp256(_mm256_loadu_ps(tmp));
        _mm256_storeu_ps(tmp, e);
        for (int j = 0; j < r; j++)
            x[i + j] = tmp[j], tot += tmp[j];
    }
    return tot;
}

/* Two query vectors x four keys: 6 loads per 8 FMAs. */
AVX2 static void qk2_avx2(const float *qa, const float *qb, const float *K, int ntok, int hd,
                          float scale, float *oa, float *ob) {
    int t = 0;
    for (; t + 4 <= ntok; t += 4) {
        const float *k0 = K + (size_t)t * hd, *k1 = k0 + hd, *k2 = k1 + hd, *k3 = k2 + hd;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0,
               b3 = a0;
        for (int d = 0; d < hd; d += 8) {
            __m256 qa_ = _mm256_loadu_ps(qa + d), qb_ = _mm256_loadu_ps(qb + d);
            __m256 x0 = _mm256_loadu_ps(k0 + d), x1 = _mm256_loadu_ps(k1 + d),
                   x2 = _mm256_loadu_ps(k2 + d), x3 = _mm256_loadu_ps(k3 + d);
            a0 = _mm256_fmadd_ps(qa_, x0, a0), b0 = _mm256_fmadd_ps(qb_, x0, b0);
            a1 = _mm256_fmadd_ps(qa_, x1, a1), b1 = _mm256_fmadd_ps(qb_, x1, b1);
            a2 = _mm256_fmadd_ps(qa_, x2, a2), b2 = _mm256_fmadd_ps(qb_, x2, b2);
            a3 = _mm256_fmadd_ps(qa_, x3, a3), b3 = _mm256_fmadd_ps(qb_, x3, b3);
        }
        oa[t] = hsum256(a0) * scale, oa[t + 1] = hsum256(a1) * scale;
        oa[t + 2] = hsum256(a2) * scale, oa[t + 3] = hsum256(a3) * scale;
        ob[t] = hsum256(b0) * scale, ob[t + 1] = hsum256(b1) * scale;
        ob[t + 2] = hsum256(b2) * scale, ob[t + 3] = hsum256(b3) * scale;
    }
    if (t < ntok) {
        qk_avx2(qa, K + (size_t)t * hd, ntok - t, hd, scale, oa + t);
        qk_avx2(qb, K + (size_t)t * hd, ntok - t, hd, scale, ob + t);
    }
}

AVX2 static void pv2_avx2(float *acca, float *accb, const float *pa, const float *pb,
                          const float *V, int ntok, int hd) {
    int d = 0;
    for (; d + 32 <= hd; d += 32) {
        __m256 a0 = _mm256_loadu_ps(acca + d), a1 = _mm256_loadu_ps(acca + d + 8),
               a2 = _mm256_loadu_ps(acca + d + 16), a3 = _mm256_loadu_ps(acca + d + 24);
        __m256 b0 = _mm256_loadu_ps(accb + d), b1 = _mm256_loadu_ps(accb + d + 8),
               b2 = _mm256_loadu_ps(accb + d + 16), b3 = _mm256_loadu_ps(accb + d + 24);
        for (int t = 0; t < ntok; t++) {
            const float *v = V + (size_t)t * hd + d;
            __m256 wa = _mm256_set1_ps(pa[t]), wb = _mm256_set1_ps(pb[t]);
            __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8),
                   v2 = _mm256_loadu_ps(v + 16), v3 = _mm256_loadu_ps(v + 24);
            a0 = _mm256_fmadd_ps(wa, v0, a0), b0 = _mm256_fmadd_ps(wb, v0, b0);
            a1 = _mm256_fmadd_ps(wa, v1, a1), b1 = _mm256_fmadd_ps(wb, v1, b1);
            a2 = _mm256_fmadd_ps(wa, v2, a2), b2 = _mm256_fmadd_ps(wb, v2, b2);
            a3 = _mm256_fmadd_ps(wa, v3, a3), b3 = _mm256_fmadd_ps(wb, v3, b3);
        }
        _mm256_storeu_ps(acca + d, a0), _mm256_storeu_ps(acca + d + 8, a1);
        _mm256_storeu_ps(acca + d + 16, a2), _mm256_storeu_ps(acca + d + 24, a3);
        _mm256_storeu_ps(accb + d, b0), _mm256_storeu_ps(accb + d + 8, b1);
        _mm256_storeu_ps(accb + d + 16, b2), _mm256_storeu_ps(accb + d + 24, b3);
    }
    if (d < hd) {
        /* hd % 32 != 0: the remaining multiple of 8, one head at a time */
        for (int t = 0; t < ntok; t++)
            for (int e = d; e < hd; e += 8) {
                __m256 v = _mm256_loadu_ps(V + (size_t)t * hd + e);
                _mm256_storeu_ps(
                    acca + e, _mm256_fmadd_ps(_mm256_set1_ps(pa[t]), v, _mm256_loadu_ps(acca + e)));
                _mm256_storeu_ps(
                    accb + e, _mm256_fmadd_ps(_mm256_set1_ps(pb[t]), v, _mm256_loadu_ps(accb + e)));
            }
    }
}

AVX2 static float maxv_avx2(const float *x, int n) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    float r[8];
    _mm256_storeu_ps(r, m);
    float best = r[0];
    for (int j = 1; j < 8; j++)
        best = r[j] > best ? r[j] : best;
    for (; i < n; i++)
        best = x[i] > best ? x[i] : best;
    return best;
}

AVX2 static inline __m256 ld_bf16(const uint16_t *p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

/* Decode variants reading bf16 K/V directly (no widened copy): two heads. */
AVX2 static void qk2_bf16_avx2(const float *qa, const float *qb, const uint16_t *K, int ntok,
                               int hd, float scale, float *oa, float *ob) {
    int t = 0;
    for (; t + 2 <= ntok; t += 2) {
        const uint16_t *k0 = K + (size_t)t * hd, *k1 = k0 + hd;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
        for (int d = 0; d < hd; d += 8) {
            __m256 qa_ = _mm256_loadu_ps(qa + d), qb_ = _mm256_loadu_ps(qb + d);
            __m256 x0 = ld_bf16(k0 + d), x1 = ld_bf16(k1 + d);
            a0 = _mm256_fmadd_ps(qa_, x0, a0), b0 = _mm256_fmadd_ps(qb_, x0, b0);
            a1 = _mm256_fmadd_ps(qa_, x1, a1), b1 = _mm256_fmadd_ps(qb_, x1, b1);
        }
        oa[t] = hsum256(a0) * scale, oa[t + 1] = hsum256(a1) * scale;
        ob[t] = hsum256(b0) * scale, ob[t + 1] = hsum256(b1) * scale;
    }
    for (; t < ntok; t++) {
        const uint16_t *k0 = K + (size_t)t * hd;
        __m256 a0 = _mm256_setzero_ps(), b0 = a0;
        for (int d = 0; d < hd; d += 8) {
            __m256 x0 = ld_bf16(k0 + d);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qa + d), x0, a0);
            b0 = _mm256_fmadd_ps(_mm256_loadu_ps(qb + d), x0, b0);
        }
        oa[t] = hsum256(a0) * scale, ob[t] = hsum256(b0) * scale;
    }
}

AVX2 static void pv2_bf16_avx2(float *acca, float *accb, const float *pa, const float *pb,
                               const uint16_t *V, int ntok, int hd) {
    for (int d = 0; d < hd; d += 32) {
        const int w = hd - d >= 32 ? 4 : (hd - d) / 8; /* vectors in this chunk */
        __m256 a[4], b[4];
        for (int i = 0; i < w; i++)
            a[i] = _mm256_loadu_ps(acca + d + 8 * i), b[i] = _mm256_loadu_ps(accb + d + 8 * i);
        for (int t = 0; t < ntok; t++) {
            const uint16_t *v = V + (size_t)t * hd + d;
            __m256 wa = _mm256_set1_ps(pa[t]), wb = _mm256_set1_ps(pb[t]);
            for (int i = 0; i < w; i++) {
                __m256 x = ld_bf16(v + 8 * i);
                a[i] = _mm256_fmadd_ps(wa, x, a[i]), b[i] = _mm256_fmadd_ps(wb, x, b[i]);
            }
        }
        for (int i = 0; i < w; i++)
            _mm256_storeu_ps(acca + d + 8 * i, a[i]), _mm256_storeu_ps(accb + d + 8 * i, b[i]);
    }
}

AVX2 static void cvt_avx2(const uint16_t *src, float *dst, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(src + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
    for (; i < n; i++)
        dst[i] = attn_bf16_to_f32(src[i]);
}
#endif

static const attn_ops ops_generic = {qk_generic,   pv_generic,  expsum_generic,
                                     cvt_generic,  qk2_generic, pv2_generic,
                                     maxv_generic, NULL,        NULL};
#if ATTN_X86
static const attn_ops ops_avx2 = {qk_avx2,  pv_avx2,   expsum_avx2,   cvt_avx2,     qk2_avx2,
                                  pv2_avx2, maxv_avx2, qk2_bf16_avx2, pv2_bf16_avx2};
#endif

#if ATTN_X86
static int have_avx2;
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static void cpu_probe(void) {
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

static atomic_int force_portable;

void attention_force_portable(int on) {
    atomic_store(&force_portable, on != 0);
}

int attn_simd_enabled(void) {
    return !atomic_load(&force_portable);
}

static const attn_ops *pick_ops(int hd) {
#if ATTN_X86
    pthread_once(&cpu_once, cpu_probe);
    if (have_avx2 && hd % 8 == 0 && attn_simd_enabled())
        return &ops_avx2;
#else
    (void)hd;
#endif
    return &ops_generic;
}

float attention_dot(const float *q, const void *k, dtype_t dt, int hd, float scale) {
    float s = 0.0f;
    if (dt == DT_BF16) {
        const uint16_t *kb = k;
        for (int d = 0; d < hd; d++)
            s += q[d] * attn_bf16_to_f32(kb[d]);
    } else {
        const float *kf = k;
        for (int d = 0; d < hd; d++)
            s += q[d] * kf[d];
    }
    return s * scale;
}

/* ================================================================ workspace */

attn_ws_t *attn_ws_new(void) {
    return calloc(1, sizeof(attn_ws_t));
}

void attn_ws_free(attn_ws_t *ws) {
    if (!ws)
        return;
    for (int i = 0; i < ws->nthreads; i++)
        free(ws->buf[i]);
    free(ws->buf);
    free(ws->dec);
    free(ws->dec_off);
    free(ws);
}

int attn_ws_reserve(attn_ws_t *ws, int nthreads, size_t floats) {
    if (nthreads > ws->nthreads) {
        float **nb = realloc(ws->buf, (size_t)nthreads * sizeof *nb);
        if (!nb)
            return -1;
        for (int i = ws->nthreads; i < nthreads; i++)
            nb[i] = NULL;
        /* new threads get a buffer of the current size below */
        ws->buf = nb;
        for (int i = ws->nthreads; i < nthreads; i++) {
            if (ws->per_thread) {
                nb[i] = aligned_alloc(64, ((ws->per_thread * sizeof(float)) + 63) / 64 * 64);
                if (!nb[i]) {
                    for (int j = ws->nthreads; j < i; j++)
                        free(nb[j]), nb[j] = NULL;
                    return -1;
                }
            }
        }
        ws->nthreads = nthreads;
    }
    if (floats > ws->per_thread) {
        size_t want = floats + floats / 2 + 1024;
        for (int i = 0; i < ws->nthreads; i++) {
            float *p = aligned_alloc(64, (want * sizeof(float) + 63) / 64 * 64);
            if (!p)
                return -1; /* buffers stay valid at the old size */
            free(ws->buf[i]);
            ws->buf[i] = p;
        }
        ws->per_thread = want;
    }
    return 0;
}

/* ================================================================ tasks */

typedef struct {
    const attn_args_t *a;
    const attn_ops *ops;
    attn_ws_t *ws;
    int G;       /* query heads per KV head */
    int ntiles;  /* row tiles */
    size_t lcap; /* logits stride per (row, head): hot tokens visible to the last row */
} attn_ctx;

/* Tokens of block bi visible to a row at position pos. */
static inline int visible(const attn_block_t *B, int bt, int pos) {
    int n = pos - B->block * bt + 1;
    if (n <= 0)
        return 0;
    return n < B->ntok ? n : B->ntok;
}

/* Prefetches `bytes` at p into L2 (the next blocks' K or V of one head:
 * 4-8 KiB in a page of its own, which hardware prefetchers ramp up on late). */
static inline void prefetch_span(const char *p, size_t bytes) {
    for (size_t o = 0; o < bytes; o += 64)
        __builtin_prefetch(p + o, 0, 2);
}

#define ATTN_PREFETCH_AHEAD 2

/* hot loop: one (KV head, row tile) of attention */
static void attn_task(void *vctx, int task, int thread) {
    const attn_ctx *c = vctx;
    const attn_args_t *a = c->a;
    const attn_ops *ops = c->ops;
    const int hd = a->head_dim, bt = a->block_tokens, G = c->G, nh = a->n_heads;
    const int g = task / c->ntiles, tile = task % c->ntiles;
    const int r0 = tile * ATTN_ROW_TILE,
              r1 = r0 + ATTN_ROW_TILE < a->nq ? r0 + ATTN_ROW_TILE : a->nq;
    const int nr = r1 - r0, qw = nh * hd;
    const size_t es = a->dtype == DT_BF16 ? 2 : 4;
    const size_t head_elems = (size_t)bt * hd, kv_half = (size_t)a->n_kv_heads * head_elems;

    float *L = c->ws->buf[thread];            /* [nr*G][lcap] */
    float *kf = L + (size_t)nr * G * c->lcap; /* [bt][hd] */
    const int pos_last = a->pos0 + r1 - 1;
    /* one row (decode): every visible token of a block is visible to it */
    const int direct =
        nr == 1 && a->dtype == DT_BF16 && G % 2 == 0 && ops->qk2_bf16 && ops->pv2_bf16;

    /* 1. logits */
    size_t off = 0;
    for (int bi = 0; bi < a->n_blocks; bi++) {
        const attn_block_t *B = &a->blocks[bi];
        int nmax = visible(B, bt, pos_last);
        if (nmax == 0)
            break;
        if (bi + ATTN_PREFETCH_AHEAD < a->n_blocks)
            prefetch_span((const char *)a->blocks[bi + ATTN_PREFETCH_AHEAD].kv +
                              (size_t)g * head_elems * es,
                          head_elems * es);
        const char *kp = (const char *)B->kv + (size_t)g * head_elems * es;
        const float *K = (const float *)kp;
        if (direct) { /* decode: widen in registers, no copy */
            const float *qr = a->q + (size_t)r0 * qw + (size_t)g * G * hd;
            float *lr = L + off;
            for (int j = 0; j < G; j += 2)
                ops->qk2_bf16(qr + (size_t)j * hd, qr + (size_t)(j + 1) * hd, (const uint16_t *)kp,
                              nmax, hd, a->scale, lr + (size_t)j * c->lcap,
                              lr + (size_t)(j + 1) * c->lcap);
            off += (size_t)nmax;
            continue;
        }
        if (a->dtype == DT_BF16) {
            ops->cvt((const uint16_t *)kp, kf, nmax * hd);
            K = kf;
        }
        for (int r = 0; r < nr; r++) {
            int nv = visible(B, bt, a->pos0 + r0 + r);
            if (nv == 0)
                continue;
            const float *qr = a->q + (size_t)(r0 + r) * qw + (size_t)g * G * hd;
            float *lr = L + (size_t)r * G * c->lcap + off;
            int j = 0;
            for (; j + 2 <= G; j += 2)
                ops->qk2(qr + (size_t)j * hd, qr + (size_t)(j + 1) * hd, K, nv, hd, a->scale,
                         lr + (size_t)j * c->lcap, lr + (size_t)(j + 1) * c->lcap);
            if (j < G)
                ops->qk(qr + (size_t)j * hd, K, nv, hd, a->scale, lr + (size_t)j * c->lcap);
        }
        off += (size_t)nmax;
    }

    /* 2. softmax, masses */
    float *cum = a->cum ? a->cum + (size_t)thread * a->n_logical : NULL;
    for (int r = 0; r < nr; r++) {
        const int row = r0 + r, pos = a->pos0 + row;
        /* visible count for this row */
        size_t n = 0;
        for (int bi = 0; bi < a->n_blocks; bi++) {
            int nv = visible(&a->blocks[bi], bt, pos);
            if (nv == 0)
                break;
            n += (size_t)nv;
        }
        for (int j = 0; j < G; j++) {
            const int h = g * G + j;
            float *x = L + (size_t)(r * G + j) * c->lcap;
            float m = ops->maxv(x, (int)n);
            if (row == a->nq - 1 && a->row_lse)
                a->row_lse[h] = -INFINITY;
            if (n == 0)
                continue;
            float s = ops->expsum(x, (int)n, m);
            if (row == a->nq - 1 && a->row_lse)
                a->row_lse[h] = m + logf(s);
            float inv = 1.0f / s;
            for (size_t i = 0; i < n; i++)
                x[i] *= inv;
            float *mass = (a->mass && row >= a->obs0)
                              ? a->mass + ((size_t)(row - a->obs0) * nh + h) * a->n_logical
                              : NULL;
            const int want_last = row == a->nq - 1 && a->probs_last;
            float *pl = want_last ? a->probs_last + (size_t)h * (a->pos0 + a->nq) : NULL;
            if (mass || cum || pl) {
                size_t o = 0;
                for (int bi = 0; bi < a->n_blocks; bi++) {
                    const attn_block_t *B = &a->blocks[bi];
                    int nv = visible(B, bt, pos);
                    if (nv == 0)
                        break;
                    float bm = 0.0f;
                    for (int t = 0; t < nv; t++)
                        bm += x[o + t];
                    if (mass)
                        mass[B->block] = bm;
                    if (cum)
                        cum[B->block] += bm;
                    if (pl)
                        memcpy(pl + (size_t)B->block * bt, x + o, (size_t)nv * sizeof(float));
                    o += (size_t)nv;
                }
            }
        }
    }

    /* 3. out = P V */
    for (int r = 0; r < nr; r++)
        memset(a->out + (size_t)(r0 + r) * qw + (size_t)g * G * hd, 0,
               (size_t)G * hd * sizeof(float));
    off = 0;
    for (int bi = 0; bi < a->n_blocks; bi++) {
        const attn_block_t *B = &a->blocks[bi];
        int nmax = visible(B, bt, pos_last);
        if (nmax == 0)
            break;
        if (bi + ATTN_PREFETCH_AHEAD < a->n_blocks)
            prefetch_span((const char *)a->blocks[bi + ATTN_PREFETCH_AHEAD].kv +
                              (kv_half + (size_t)g * head_elems) * es,
                          head_elems * es);
        const char *vp = (const char *)B->kv + (kv_half + (size_t)g * head_elems) * es;
        const float *V = (const float *)vp;
        if (direct) {
            float *orow = a->out + (size_t)r0 * qw + (size_t)g * G * hd;
            const float *lr = L + off;
            for (int j = 0; j < G; j += 2)
                ops->pv2_bf16(orow + (size_t)j * hd, orow + (size_t)(j + 1) * hd,
                              lr + (size_t)j * c->lcap, lr + (size_t)(j + 1) * c->lcap,
                              (const uint16_t *)vp, nmax, hd);
            off += (size_t)nmax;
            continue;
        }
        if (a->dtype == DT_BF16) {
            ops->cvt((const uint16_t *)vp, kf, nmax * hd);
            V = kf;
        }
        for (int r = 0; r < nr; r++) {
            int nv = visible(B, bt, a->pos0 + r0 + r);
            if (nv == 0)
                continue;
            float *orow = a->out + (size_t)(r0 + r) * qw + (size_t)g * G * hd;
            const float *lr = L + (size_t)r * G * c->lcap + off;
            int j = 0;
            for (; j + 2 <= G; j += 2)
                ops->pv2(orow + (size_t)j * hd, orow + (size_t)(j + 1) * hd,
                         lr + (size_t)j * c->lcap, lr + (size_t)(j + 1) * c->lcap, V, nv, hd);
            if (j < G)
                ops->pv(orow + (size_t)j * hd, lr + (size_t)j * c->lcap, V, nv, hd);
        }
        off += (size_t)nmax;
    }
}

int attention_run(const attn_args_t *a, attn_ws_t *ws, threadpool_t *tp) {
    if (!a || !ws || a->nq <= 0 || a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads != 0 ||
        a->head_dim <= 0 || a->block_tokens <= 0 || (a->dtype != DT_F32 && a->dtype != DT_BF16))
        return -1;
    const int pos_last = a->pos0 + a->nq - 1;
    size_t lcap = 0;
    for (int bi = 0; bi < a->n_blocks; bi++)
        lcap += (size_t)visible(&a->blocks[bi], a->block_tokens, pos_last);
    lcap = (lcap + 15) & ~(size_t)15;
    attn_ctx c = {.a = a,
                  .ops = pick_ops(a->head_dim),
                  .ws = ws,
                  .G = a->n_heads / a->n_kv_heads,
                  .ntiles = (a->nq + ATTN_ROW_TILE - 1) / ATTN_ROW_TILE,
                  .lcap = lcap};
    if (a->nq == 1)
        return attn_decode_run(a, ws, tp);
    if (a->lse_only || a->fill)
        return -1; /* one row only */
    const int rows = a->nq < ATTN_ROW_TILE ? a->nq : ATTN_ROW_TILE;
    size_t need = (size_t)rows * c.G * lcap + (size_t)a->block_tokens * a->head_dim + 16;
    if (attn_ws_reserve(ws, tp_nthreads(tp), need) != 0)
        return -1;
    if (a->mass && a->nq > a->obs0)
        memset(a->mass, 0, (size_t)(a->nq - a->obs0) * a->n_heads * a->n_logical * sizeof(float));
    if (a->probs_last)
        memset(a->probs_last, 0, (size_t)a->n_heads * (a->pos0 + a->nq) * sizeof(float));
    tp_parallel_for(tp, a->n_kv_heads * c.ntiles, attn_task, &c);
    return 0;
}
