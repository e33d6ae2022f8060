/* kernels.h - the numeric kernels of the CPU forward pass.
 *
 * Weights are borrowed tensor views (BF16, F16 or F32, row-major [rows, cols]
 * as nn.Linear stores them: y = W x). Activations are f32.
 *
 * Decode (one token) uses matrix-vector kernels that read the 16-bit weights
 * directly (AVX-512 / AVX2+FMA+F16C chosen at run time, scalar fallback).
 * Prefill (a chunk of tokens) converts weight row-panels to f32 in a per-thread
 * scratch buffer and multiplies them with OpenBLAS sgemm; the whole model is
 * never expanded.
 *
 * Several matrices that share one input (q/k/v, gate/up) run as one parallel
 * loop: one pass over the input, one thread-pool dispatch.
 */
#ifndef KVTIER_KERNELS_H
#define KVTIER_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "threadpool.h"

/* ------------------------------------------------------------------ ISA */

typedef enum { KN_ISA_SCALAR = 0, KN_ISA_AVX2 = 1, KN_ISA_AVX512 = 2 } kn_isa_t;

/* The best instruction set this CPU supports (AVX2 needs FMA and F16C). */
kn_isa_t kn_isa_best(void);

/* The set the kernels use now (default: kn_isa_best). */
kn_isa_t kn_isa_active(void);

/* Forces the kernels to `isa` (tests compare every path with the scalar one).
 * Returns 0, or -1 (unchanged) when the CPU lacks it. Not thread-safe with
 * running kernels. */
int kn_isa_set(kn_isa_t isa);

/* "scalar", "avx2", "avx512". */
const char *kn_isa_name(kn_isa_t isa);

/* ------------------------------------------------------------------ matvec */

/* One matrix of a fused multiply: y[rows] = W[rows, cols] x[cols]
 * (or, for GEMM, Y[n, rows] = X[n, cols] W^T with ldy = rows). */
typedef struct {
    const tensor_t *w; /* borrowed, 2-D, cols == the shared input width */
    float *y;          /* borrowed output */
} kn_job_t;

/* Rows [row0, row0+nrows) of y = W x on the calling thread (no pool).
 * y points at the output of row0. */
void kn_matvec_rows(const tensor_t *w, int64_t row0, int64_t nrows, const float *x, float *y);

/* y_j = W_j x for every job, split across the pool in row blocks.
 * All W_j have the same number of columns (== length of x). */
void kn_matvec(threadpool_t *tp, const kn_job_t *jobs, int njobs, const float *x);

/* ------------------------------------------------------------------ gemm */

typedef struct kn_gemm_ws kn_gemm_ws_t;

/* Scratch for kn_gemm: one f32 weight panel per pool thread, sized for
 * matrices up to max_cols columns. Returns NULL on allocation failure. */
kn_gemm_ws_t *kn_gemm_ws_new(int nthreads, int64_t max_cols);
void kn_gemm_ws_free(kn_gemm_ws_t *ws);

/* Y_j[n, rows_j] = X[n, cols] W_j^T for every job (Y row-major, ld = rows_j).
 * Weight panels of ~1 MiB are converted to f32 and multiplied with
 * cblas_sgemm (OpenBLAS kept single-threaded; our pool splits the panels).
 * F32 weights are used in place. */
void kn_gemm(threadpool_t *tp, kn_gemm_ws_t *ws, const kn_job_t *jobs, int njobs, const float *x,
             int n);

/* ------------------------------------------------------------------ small ops */

/* out[i] = w[i] * x[i] / sqrt(mean(x^2) + eps) for i < n (f32 math, the sum
 * in double). out may alias x. w is a 1-D view of length n. */
void kn_rmsnorm(float *out, const float *x, const tensor_t *w, int n, float eps);

/* Same, for nvec vectors of n stored contiguously (per-head q/k norm). */
void kn_rmsnorm_many(float *xs, int nvec, const tensor_t *w, int n, float eps);

/* Rotary tables, HF Qwen3 style (f32 like transformers):
 * inv_freq[i] = 1 / theta^(2i/hd) (f32), or its linear / YaRN scaling
 * (rope_scaling_inv_freq), angle = (float)pos * inv_freq[i] (f32), cos/sin of
 * that angle rounded to f32, times the attention factor (f32; 1 unless YaRN).
 * Grows on demand. */
typedef struct {
    int head_dim;
    float theta;      /* f32 like torch */
    float attn;       /* multiplier on cos and sin (rope_scaling_t.attention_factor) */
    float *inv_freq;  /* [head_dim/2] */
    float *cos, *sin; /* [cap, head_dim/2] */
    int cap;          /* positions tabulated */
} kn_rope_t;

/* Initializes r for head_dim (even), theta and the scaling sc (borrowed for
 * the call only; NULL = none). Returns 0 or -1 (alloc/args). */
int kn_rope_init(kn_rope_t *r, int head_dim, double theta, const rope_scaling_t *sc);

/* Makes positions [0, npos) available. Returns 0 or -1 on allocation failure. */
int kn_rope_reserve(kn_rope_t *r, int npos);

void kn_rope_free(kn_rope_t *r);

/* Rotates nheads vectors of head_dim at position pos in place (rotate_half:
 * element j pairs with j + hd/2). pos must be < r->cap. */
void kn_rope_apply(const kn_rope_t *r, float *v, int nheads, int pos);

/* g[i] = silu(g[i]) * u[i] for i < n. */
void kn_silu_mul(float *g, const float *u, int64_t n);

/* y[i] += x[i]. */
void kn_add(float *y, const float *x, int64_t n);

#endif
