/* dtype.h - scalar conversions between f32 and the 16-bit float formats of
 * Qwen3 checkpoints (bf16, IEEE f16), plus row converters.
 *
 * The scalar converters are exact bit manipulations, correct for zeros,
 * subnormals, infinities and NaNs; f32 -> 16-bit rounds to nearest even.
 * They use memcpy for type punning (no aliasing or alignment UB), which
 * compilers turn into plain register moves.
 *
 * The row converters (dtype_row_to_f32 and friends, in tensor.c) pick an
 * AVX2/F16C path at run time when the CPU has it and fall back to the scalar
 * code otherwise; their results are bit-identical to the scalar converters.
 */
#ifndef KVTIER_DTYPE_H
#define KVTIER_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "model.h"

/* bf16 bits -> f32 (exact: bf16 is the top half of an f32). */
static inline float dtype_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* f32 -> bf16 bits, round to nearest even; NaN stays NaN (made quiet). */
static inline uint16_t dtype_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x0040u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* IEEE binary16 bits -> f32 (exact, subnormals included). */
static inline float dtype_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0x1fu) {
        /* inf, or NaN keeping its payload, made quiet (as F16C's vcvtph2ps) */
        bits = sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0u);
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign; /* +-0 */
        } else {
            float v = (float)man * 0x1p-24f; /* subnormal: man * 2^-24, exact in f32 */
            memcpy(&bits, &v, sizeof bits);
            bits |= sign;
        }
    } else {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* f32 -> IEEE binary16 bits, round to nearest even; overflow -> inf,
 * underflow -> subnormal or signed zero; NaN stays NaN (made quiet). */
static inline uint16_t dtype_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or NaN */
        return (uint16_t)(sign | 0x7c00u |
                          (ax > 0x7f800000u ? (0x200u | ((ax >> 13) & 0x3ffu)) : 0u));
    if (ax >= 0x477ff000u)
        return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (ax < 0x38800000u) {                /* below 2^-14: subnormal result */
        if (ax <= 0x33000000u)
            return (uint16_t)sign; /* <= 2^-25 rounds to zero */
        uint32_t e = ax >> 23;
        uint32_t m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* result = m * 2^(e-126), shift in [14, 24] */
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u)))
            r++;
        return (uint16_t)(sign | r); /* r == 0x400 is the smallest normal: right */
    }
    uint32_t r = (ax - 0x38000000u) >> 13; /* rebias exponent 127 -> 15 */
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u)))
        r++;
    return (uint16_t)(sign | r);
}

/* Converts n elements of type `dt` at src (any alignment) to f32 in dst.
 * Vectorized (AVX2/F16C) when available; bit-identical to the scalar code. */
void dtype_row_to_f32(dtype_t dt, const void *src, float *dst, size_t n);

/* n f32 values -> bf16 / f16 bits (round to nearest even). */
void dtype_f32_to_bf16_row(const float *src, uint16_t *dst, size_t n);
void dtype_f32_to_f16_row(const float *src, uint16_t *dst, size_t n);

/* Non-zero when the vectorized paths are in use (for benchmark tables). */
int dtype_simd_active(void);

#endif
