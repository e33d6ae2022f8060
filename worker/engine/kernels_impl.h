/* kernels_impl.h - private: per-ISA row kernels behind kernels.h.
 * A row kernel computes y[r] = sum_i W[r, i] x[i] for r < nrows, with W rows
 * `ld` elements apart, n columns. */
#ifndef KVTIER_KERNELS_IMPL_H
#define KVTIER_KERNELS_IMPL_H

#include <stdint.h>

typedef void (*kn_rowk_fn)(const void *w, int64_t ld, int64_t nrows, const float *x, int64_t n,
                           float *y);

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KN_HAVE_X86 1
void kn_mv_bf16_avx2(const void *w, int64_t ld, int64_t nrows, const float *x, int64_t n, float *y);
void kn_mv_f16_avx2(const void *w, int64_t ld, int64_t nrows, const float *x, int64_t n, float *y);
void kn_mv_f32_avx2(const void *w, int64_t ld, int64_t nrows, const float *x, int64_t n, float *y);
void kn_mv_bf16_avx512(const void *w, int64_t ld, int64_t nrows, const float *x, int64_t n,
                       float *y);
void kn_mv_f16_avx512(const void *w, int64_t ld, int64_t nrows, const float *x, int64_t n,
                      float *y);
void kn_mv_f32_avx512(const void *w, int64_t ld, int64_t nrows, const float *x, int64_t n,
                      float *y);
#else
#define KN_HAVE_X86 0
#endif

#endif
