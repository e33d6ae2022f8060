/* tensor.c - element access on borrowed tensor views and row conversions
 * between f32 and the 16-bit float formats (scalar + AVX2/F16C dispatch). */
#include <string.h>

#include "dtype.h"
#include "model.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define DTYPE_HAVE_X86 1
#else
#define DTYPE_HAVE_X86 0
#endif

/* ------------------------------------------------------------------ dtypes */

size_t dtype_size(dtype_t d) {
    switch (d) {
    case DT_F32:
        return 4;
    case DT_F16:
        return 2;
    case DT_BF16:
        return 2;
    }
    return 0;
}

const char *dtype_name(dtype_t d) {
    switch (d) {
    case DT_F32:
        return "F32";
    case DT_F16:
        return "F16";
    case DT_BF16:
        return "BF16";
    }
    return "?";
}

/* ------------------------------------------------------------------ views */

int64_t tensor_numel(const tensor_t *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

float tensor_get_f32(const tensor_t *t, int64_t i) {
    const unsigned char *p = (const unsigned char *)t->data + (size_t)i * dtype_size(t->dtype);
    switch (t->dtype) {
    case DT_F32: {
        float f;
        memcpy(&f, p, sizeof f);
        return f;
    }
    case DT_F16: {
        uint16_t h;
        memcpy(&h, p, sizeof h);
        return dtype_f16_to_f32(h);
    }
    case DT_BF16: {
        uint16_t h;
        memcpy(&h, p, sizeof h);
        return dtype_bf16_to_f32(h);
    }
    }
    return 0.0f;
}

void tensor_row_f32(const tensor_t *t, int64_t r, float *out) {
    int64_t cols = t->ndim >= 2 ? t->shape[t->ndim - 1] : tensor_numel(t);
    const unsigned char *p =
        (const unsigned char *)t->data + (size_t)(r * cols) * dtype_size(t->dtype);
    dtype_row_to_f32(t->dtype, p, out, (size_t)cols);
}

/* ------------------------------------------------------------------ rows */

#if DTYPE_HAVE_X86
__attribute__((target("avx2"))) static void bf16_row_avx2(const uint16_t *s, float *d, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { /* hot loop: 8 bf16 -> 8 f32 by a 16-bit shift */
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
        _mm256_storeu_ps(d + i, _mm256_castsi256_ps(w));
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + i, sizeof h);
        d[i] = dtype_bf16_to_f32(h);
    }
}

__attribute__((target("avx2,f16c"))) static void f16_row_f16c(const uint16_t *s, float *d,
                                                              size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, s + i, sizeof h);
        d[i] = dtype_f16_to_f32(h);
    }
}

__attribute__((target("avx2,f16c"))) static void f32_to_f16_row_f16c(const float *s, uint16_t *d,
                                                                     size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h =
            _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(void *)(d + i), h);
    }
    for (; i < n; i++)
        d[i] = dtype_f32_to_f16(s[i]);
}

static int simd_state = -1; /* -1 unknown, 0 scalar, 1 avx2+f16c */

static int simd_ok(void) {
    int s = __atomic_load_n(&simd_state, __ATOMIC_RELAXED);
    if (s < 0) {
        unsigned a, b, c, d;
        __builtin_cpu_init(); /* "avx2" also checks OS (XSAVE) support */
        int f16c =
            __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C); /* clang 14 lacks "f16c" here */
        s = __builtin_cpu_supports("avx2") && f16c;
        __atomic_store_n(&simd_state, s, __ATOMIC_RELAXED);
    }
    return s;
}
#else
static int simd_ok(void) {
    return 0;
}
#endif

int dtype_simd_active(void) {
    return simd_ok();
}

void dtype_row_to_f32(dtype_t dt, const void *src, float *dst, size_t n) {
    const uint16_t *s16 = (const uint16_t *)src;
    switch (dt) {
    case DT_F32:
        memcpy(dst, src, n * sizeof(float));
        return;
    case DT_BF16:
#if DTYPE_HAVE_X86
        if (simd_ok()) {
            bf16_row_avx2(s16, dst, n);
            return;
        }
#endif
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, (const unsigned char *)src + 2 * i, sizeof h);
            dst[i] = dtype_bf16_to_f32(h);
        }
        return;
    case DT_F16:
#if DTYPE_HAVE_X86
        if (simd_ok()) {
            f16_row_f16c(s16, dst, n);
            return;
        }
#endif
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, (const unsigned char *)src + 2 * i, sizeof h);
            dst[i] = dtype_f16_to_f32(h);
        }
        return;
    }
}

void dtype_f32_to_bf16_row(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++)
        dst[i] = dtype_f32_to_bf16(src[i]); /* compilers vectorize this */
}

void dtype_f32_to_f16_row(const float *src, uint16_t *dst, size_t n) {
#if DTYPE_HAVE_X86
    if (simd_ok()) {
        f32_to_f16_row_f16c(src, dst, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++)
        dst[i] = dtype_f32_to_f16(src[i]);
}
