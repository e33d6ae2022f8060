/* cuda_kernels.h - the CUDA kernels of the GPU forward pass (cuda_kernels.cu),
 * callable from C. Every launcher enqueues on `stream` and returns the launch
 * status (cudaGetLastError) as an int (cudaSuccess = 0); the callers check it
 * and report cudaGetErrorString. Shapes and math follow the CPU kernels
 * (worker/engine/kernels.c, worker/kvcache/attention*.c) operation by
 * operation; activations are f32, weights BF16 or F32 (ck_wdt), KV blocks in
 * the KV cache's layout and dtype (kvcache.h).
 */
#ifndef KVTIER_CUDA_KERNELS_H
#define KVTIER_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *ck_stream_t; /* == cudaStream_t */

enum { CK_F32 = 0, CK_BF16 = 2 }; /* weight / KV dtypes (the values of dtype_t) */

#define CK_BLOCK_TOKENS 16 /* == KV_BLOCK_TOKENS */
#define CK_MAX_HEAD_DIM 256

/* One readable KV block for the attention: device slot, logical index, tokens. */
typedef struct {
    const void *kv; /* device: K [n_kv][16][hd] then V [n_kv][16][hd] */
    int32_t block;
    int32_t ntok;
} ck_blk_t;

/* Where one appended row goes: the block's device slot and the row within it. */
typedef struct {
    void *base;
    int32_t t;
    int32_t pad;
} ck_row_dst_t;

/* x[i][:] = embed[ids[i]][:] as f32, i < n; embed [vocab][H] in wdt. */
int ck_embed(ck_stream_t s, const void *embed, int wdt, const int *ids, int n, int H, float *x);

/* out[r] = w * (x[r] * inv), inv = 1/sqrtf(mean(x[r]^2) + eps) (sum in double),
 * for rows r < n of width; w f32 [width]; out may alias x. */
int ck_rmsnorm(ck_stream_t s, const float *x, const float *w, float *out, int n, int width,
               float eps);

/* Per-head RMSNorm (w [hd]) then RoPE (rotate_half pairs j, j+hd/2) in place
 * on v [n][nheads][hd]; row i at position pos0+i; cos/sin [pos][hd/2]. */
int ck_qk_norm_rope(ck_stream_t s, float *v, const float *w, int n, int nheads, int hd, float eps,
                    const float *cos_t, const float *sin_t, int pos0);

/* g[i] = g[i] / (1 + expf(-g[i])) * u[i]. */
int ck_silu_mul(ck_stream_t s, float *g, const float *u, int64_t n);

/* hi = bf16(x), lo = bf16(x - hi) (round to nearest even), for the two-pass
 * bf16 GEMM (x ~ hi + lo to 16 bits of mantissa). */
int ck_split_bf16(ck_stream_t s, const float *x, uint16_t *hi, uint16_t *lo, int64_t n);

/* y[r] (+)= sum_c W[r][c] x[c] for r < rows (W in wdt, f32 accumulation);
 * accumulate != 0 adds to y. One warp per row. */
int ck_gemv(ck_stream_t s, const void *W, int wdt, const float *x, float *y, int rows, int cols,
            int accumulate);

/* Writes rows i < n of k, v [n][nkv*hd] (f32) into their blocks dst[i]
 * (device array) in kv dtype (bf16: round to nearest even, as the CPU). */
int ck_kv_append(ck_stream_t s, const ck_row_dst_t *dst, const float *k, const float *v, int n,
                 int nkv, int hd, int kv_dt);

/* Paged attention, pass 1: grid (KV head, split, row). Split sp covers
 * blocks [sp*per, min((sp+1)*per, nhot)) of blks (device array); row r at
 * position pos0+r sees keys at positions <= its own (causal), GQA (query head
 * h reads KV head h / (nh/nkv)). Writes per (row, head): the split's running
 * max and sum (part_ml [nq][nh][nsplit][2]), unnormalised output (part_o
 * [nq][nh][nsplit][hd]) and per block (max logit, sum of exp(logit - max))
 * (bstat [nq][nh][nhot][2]; (-inf, 0) for a block with no visible key). */
int ck_attn_partial(ck_stream_t s, const ck_blk_t *blks, int nhot, int nsplit, int per,
                    const float *q, int nq, int pos0, int nh, int nkv, int hd, int kv_dt,
                    float scale, float *part_ml, float *part_o, float *bstat);

/* Pass 2: merges the splits with a log-sum-exp per (row, head): out [nq][nh*hd]
 * (zeros for a row with no visible key), lse [nq][nh] (-inf then), and the
 * softmax mass of every hot block mass [nq][nh][nhot] (from bstat and lse,
 * no second pass over the KV). */
int ck_attn_merge(ck_stream_t s, int nq, int nh, int hd, int nsplit, int nhot, const float *part_ml,
                  const float *part_o, const float *bstat, float *out, float *lse, float *mass);

/* cum[i] = sum over rows and heads of mass [nq][nh][nhot] (H2O's score). */
int ck_mass_cum(ck_stream_t s, int nq, int nh, int nhot, const float *mass, float *cum);

#ifdef __cplusplus
}
#endif

#endif
