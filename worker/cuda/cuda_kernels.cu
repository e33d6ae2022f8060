/* cuda_kernels.cu - kernels of the GPU forward pass (see cuda_kernels.h).
 * Each kernel names the CPU function whose arithmetic it reproduces. */
#include "cuda_kernels.h"

#include <cuda_runtime.h>
#include <math.h>

#define CK_WARP 32
#define CK_MAXJ (CK_MAX_HEAD_DIM / CK_WARP) /* head_dim elements per lane */

static int ck_status(void) {
    return (int)cudaGetLastError();
}

__device__ __forceinline__ float ck_bf16_to_f32(uint16_t h) {
    return __uint_as_float((uint32_t)h << 16);
}

/* f32 -> bf16, round to nearest even, NaN kept quiet (attn_f32_to_bf16). */
__device__ __forceinline__ uint16_t ck_f32_to_bf16(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

__device__ __forceinline__ float ck_load(const void *p, int dt, size_t i) {
    return dt == CK_BF16 ? ck_bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

__device__ __forceinline__ float ck_warp_sum(float v) {
    for (int off = CK_WARP / 2; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

__device__ __forceinline__ double ck_warp_sum_d(double v) {
    for (int off = CK_WARP / 2; off > 0; off >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

/* Block-wide sum in double (blockDim.x a multiple of 32, <= 1024). */
__device__ double ck_block_sum_d(double v) {
    __shared__ double part[32];
    int lane = threadIdx.x % CK_WARP, w = threadIdx.x / CK_WARP;
    v = ck_warp_sum_d(v);
    __syncthreads(); /* part may still be read by a previous call */
    if (lane == 0)
        part[w] = v;
    __syncthreads();
    double t = 0.0;
    for (int i = 0; i < (int)(blockDim.x / CK_WARP); i++)
        t += part[i];
    return t;
}

/* ---------------------------------------------------------------- embed */

__global__ void k_embed(const void *embed, int wdt, const int *ids, int H, float *x) {
    const size_t row = (size_t)ids[blockIdx.x] * H;
    float *out = x + (size_t)blockIdx.x * H;
    for (int j = threadIdx.x; j < H; j += blockDim.x)
        out[j] = ck_load(embed, wdt, row + j);
}

extern "C" int ck_embed(ck_stream_t s, const void *embed, int wdt, const int *ids, int n, int H,
                        float *x) {
    k_embed<<<n, 256, 0, s>>>(embed, wdt, ids, H, x);
    return ck_status();
}

/* ---------------------------------------------------------------- rmsnorm */

/* kn_rmsnorm: ss in double, inv = 1/sqrtf((float)(ss/n) + eps), w * (x * inv). */
__global__ void k_rmsnorm(const float *x, const float *w, float *out, int width, float eps) {
    const float *xr = x + (size_t)blockIdx.x * width;
    float *o = out + (size_t)blockIdx.x * width;
    double ss = 0.0;
    for (int j = threadIdx.x; j < width; j += blockDim.x)
        ss += (double)xr[j] * xr[j];
    ss = ck_block_sum_d(ss);
    const float inv = 1.0f / sqrtf(__fadd_rn((float)(ss / width), eps));
    for (int j = threadIdx.x; j < width; j += blockDim.x)
        o[j] = __fmul_rn(w[j], __fmul_rn(xr[j], inv));
}

extern "C" int ck_rmsnorm(ck_stream_t s, const float *x, const float *w, float *out, int n,
                          int width, float eps) {
    k_rmsnorm<<<n, 256, 0, s>>>(x, w, out, width, eps);
    return ck_status();
}

/* ---------------------------------------------------------------- q/k norm + rope */

/* kn_rmsnorm_many then kn_rope_apply: x1 = v[i], x2 = v[i+half];
 * v[i] = x1*c - x2*s, v[i+half] = x2*c + x1*s (no fused multiply-add). */
__global__ void k_qk_norm_rope(float *v, const float *w, int nheads, int hd, float eps,
                               const float *cos_t, const float *sin_t, int pos0) {
    extern __shared__ float sh[]; /* [hd] normed vector */
    const int row = blockIdx.y, head = blockIdx.x, half = hd / 2;
    float *x = v + ((size_t)row * nheads + head) * hd;
    double ss = 0.0;
    for (int j = threadIdx.x; j < hd; j += blockDim.x)
        ss += (double)x[j] * x[j];
    ss = ck_block_sum_d(ss);
    const float inv = 1.0f / sqrtf(__fadd_rn((float)(ss / hd), eps));
    for (int j = threadIdx.x; j < hd; j += blockDim.x)
        sh[j] = __fmul_rn(w[j], __fmul_rn(x[j], inv));
    __syncthreads();
    const float *c = cos_t + (size_t)(pos0 + row) * half, *sn = sin_t + (size_t)(pos0 + row) * half;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float x1 = sh[i], x2 = sh[i + half];
        x[i] = __fsub_rn(__fmul_rn(x1, c[i]), __fmul_rn(x2, sn[i]));
        x[i + half] = __fadd_rn(__fmul_rn(x2, c[i]), __fmul_rn(x1, sn[i]));
    }
}

extern "C" int ck_qk_norm_rope(ck_stream_t s, float *v, const float *w, int n, int nheads, int hd,
                               float eps, const float *cos_t, const float *sin_t, int pos0) {
    dim3 grid((unsigned)nheads, (unsigned)n);
    k_qk_norm_rope<<<grid, 128, (size_t)hd * sizeof(float), s>>>(v, w, nheads, hd, eps, cos_t,
                                                                 sin_t, pos0);
    return ck_status();
}

/* ---------------------------------------------------------------- elementwise */

/* kn_silu_mul */
__global__ void k_silu_mul(float *g, const float *u, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float a = g[i];
        g[i] = __fmul_rn(a / (1.0f + expf(-a)), u[i]);
    }
}

extern "C" int ck_silu_mul(ck_stream_t s, float *g, const float *u, int64_t n) {
    int64_t blocks = (n + 255) / 256;
    k_silu_mul<<<(unsigned)(blocks < 65535 ? blocks : 65535), 256, 0, s>>>(g, u, n);
    return ck_status();
}

__global__ void k_split_bf16(const float *x, uint16_t *hi, uint16_t *lo, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        uint16_t h = ck_f32_to_bf16(x[i]);
        hi[i] = h;
        lo[i] = ck_f32_to_bf16(x[i] - ck_bf16_to_f32(h));
    }
}

extern "C" int ck_split_bf16(ck_stream_t s, const float *x, uint16_t *hi, uint16_t *lo, int64_t n) {
    int64_t blocks = (n + 255) / 256;
    k_split_bf16<<<(unsigned)(blocks < 65535 ? blocks : 65535), 256, 0, s>>>(x, hi, lo, n);
    return ck_status();
}

/* ---------------------------------------------------------------- gemv */

/* kn_matvec: one warp per output row, 16-byte loads of the weights when the
 * row allows it (bf16: 8 per load, f32: 4), f32 accumulation. */
__global__ void k_gemv(const void *W, int wdt, const float *x, float *y, int rows, int cols,
                       int accumulate, int vec) {
    const int row = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) / CK_WARP);
    const int lane = threadIdx.x % CK_WARP;
    if (row >= rows)
        return;
    float sum = 0.0f;
    if (vec && wdt == CK_BF16) {
        const uint4 *wr = (const uint4 *)((const uint16_t *)W + (size_t)row * cols);
        const float4 *xv = (const float4 *)x;
#pragma unroll 4 /* several 16-byte loads in flight per lane: the decode step is bandwidth */
        for (int c = lane; c < cols / 8; c += CK_WARP) {
            uint4 u = __ldg(wr + c);
            float4 a = xv[2 * c], b = xv[2 * c + 1];
            sum += __uint_as_float(u.x << 16) * a.x + __uint_as_float(u.x & 0xffff0000u) * a.y +
                   __uint_as_float(u.y << 16) * a.z + __uint_as_float(u.y & 0xffff0000u) * a.w +
                   __uint_as_float(u.z << 16) * b.x + __uint_as_float(u.z & 0xffff0000u) * b.y +
                   __uint_as_float(u.w << 16) * b.z + __uint_as_float(u.w & 0xffff0000u) * b.w;
        }
    } else if (vec) {
        const float4 *wr = (const float4 *)((const float *)W + (size_t)row * cols);
        const float4 *xv = (const float4 *)x;
#pragma unroll 4
        for (int c = lane; c < cols / 4; c += CK_WARP) {
            float4 w4 = __ldg(wr + c), a = xv[c];
            sum += w4.x * a.x + w4.y * a.y + w4.z * a.z + w4.w * a.w;
        }
    } else {
        for (int c = lane; c < cols; c += CK_WARP)
            sum += ck_load(W, wdt, (size_t)row * cols + c) * x[c];
    }
    sum = ck_warp_sum(sum);
    if (lane == 0)
        y[row] = accumulate ? y[row] + sum : sum;
}

extern "C" int ck_gemv(ck_stream_t s, const void *W, int wdt, const float *x, float *y, int rows,
                       int cols, int accumulate) {
    const int per = wdt == CK_BF16 ? 8 : 4;
    const int vec = cols % per == 0 && ((uintptr_t)x % 16) == 0 && ((uintptr_t)W % 16) == 0;
    const int threads = 256, rows_per = threads / CK_WARP;
    k_gemv<<<(unsigned)((rows + rows_per - 1) / rows_per), threads, 0, s>>>(W, wdt, x, y, rows,
                                                                            cols, accumulate, vec);
    return ck_status();
}

/* ---------------------------------------------------------------- KV append */

/* kvcache_append: K row of KV head g at slot offset (g*16 + t)*hd, V after
 * all K (offset nkv*16*hd more), in the storage dtype. */
__global__ void k_kv_append(const ck_row_dst_t *dst, const float *k, const float *v, int nkv,
                            int hd, int kv_dt) {
    const int i = blockIdx.x;
    const ck_row_dst_t d = dst[i];
    const size_t w = (size_t)nkv * hd, voff = (size_t)nkv * CK_BLOCK_TOKENS * hd;
    for (int j = threadIdx.x; j < (int)w; j += blockDim.x) {
        const int g = j / hd, e = j % hd;
        const size_t off = ((size_t)g * CK_BLOCK_TOKENS + d.t) * hd + e;
        const float kf = k[(size_t)i * w + j], vf = v[(size_t)i * w + j];
        if (kv_dt == CK_BF16) {
            ((uint16_t *)d.base)[off] = ck_f32_to_bf16(kf);
            ((uint16_t *)d.base)[voff + off] = ck_f32_to_bf16(vf);
        } else {
            ((float *)d.base)[off] = kf;
            ((float *)d.base)[voff + off] = vf;
        }
    }
}

extern "C" int ck_kv_append(ck_stream_t s, const ck_row_dst_t *dst, const float *k, const float *v,
                            int n, int nkv, int hd, int kv_dt) {
    k_kv_append<<<n, 256, 0, s>>>(dst, k, v, nkv, hd, kv_dt);
    return ck_status();
}

/* ---------------------------------------------------------------- attention */

/* Pass 1 (attention_run's flash-decoding chunks, on the GPU): one CTA per
 * (KV head g, split, row); each warp takes the query heads of g in turn, each
 * lane the head_dim elements lane, lane+32, ... The block's 16 logits stay in
 * registers: their max and exp-sum are the block statistics (for the masses),
 * the online softmax carries (m, l, acc) across blocks. */
__global__ void __launch_bounds__(128)
    k_attn_partial(const ck_blk_t *blks, int nhot, int nsplit, int per, const float *q, int pos0,
                   int nh, int nkv, int hd, int kv_dt, float scale, float *part_ml, float *part_o,
                   float *bstat) {
    const int g = blockIdx.x, sp = blockIdx.y, r = blockIdx.z;
    const int lane = threadIdx.x % CK_WARP, warp = threadIdx.x / CK_WARP;
    const int nwarps = blockDim.x / CK_WARP, grp = nh / nkv, pos = pos0 + r;
    const int i0 = sp * per, i1 = min(i0 + per, nhot);
    const size_t head_off = (size_t)g * CK_BLOCK_TOKENS * hd;          /* K of head g */
    const size_t voff = (size_t)nkv * CK_BLOCK_TOKENS * hd + head_off; /* V of head g */
    for (int hh = warp; hh < grp; hh += nwarps) {
        const int h = g * grp + hh;
        const size_t rh = (size_t)r * nh + h;
        const float *qh = q + rh * hd;
        float qr[CK_MAXJ], acc[CK_MAXJ];
#pragma unroll
        for (int j = 0; j < CK_MAXJ; j++) {
            const int d = lane + CK_WARP * j;
            qr[j] = d < hd ? qh[d] : 0.0f;
            acc[j] = 0.0f;
        }
        float m = -INFINITY, l = 0.0f;
        for (int i = i0; i < i1; i++) {
            const ck_blk_t B = blks[i];
            int nv = pos - B.block * CK_BLOCK_TOKENS + 1;
            if (nv > B.ntok)
                nv = B.ntok;
            float bm = -INFINITY, bs = 0.0f;
            if (nv > 0) {
                float sc[CK_BLOCK_TOKENS];
#pragma unroll
                for (int t = 0; t < CK_BLOCK_TOKENS; t++) {
                    sc[t] = -INFINITY;
                    if (t < nv) {
                        float part = 0.0f;
#pragma unroll
                        for (int j = 0; j < CK_MAXJ; j++) {
                            const int d = lane + CK_WARP * j;
                            if (d < hd)
                                part += qr[j] * ck_load(B.kv, kv_dt, head_off + (size_t)t * hd + d);
                        }
                        sc[t] = ck_warp_sum(part) * scale;
                        bm = fmaxf(bm, sc[t]);
                    }
                }
#pragma unroll
                for (int t = 0; t < CK_BLOCK_TOKENS; t++)
                    if (t < nv)
                        bs += expf(sc[t] - bm);
                const float mn = fmaxf(m, bm), c = expf(m - mn); /* m = -inf: c = 0 */
#pragma unroll
                for (int j = 0; j < CK_MAXJ; j++)
                    acc[j] *= c;
#pragma unroll
                for (int t = 0; t < CK_BLOCK_TOKENS; t++) {
                    if (t < nv) {
                        const float p = expf(sc[t] - mn);
#pragma unroll
                        for (int j = 0; j < CK_MAXJ; j++) {
                            const int d = lane + CK_WARP * j;
                            if (d < hd)
                                acc[j] += p * ck_load(B.kv, kv_dt, voff + (size_t)t * hd + d);
                        }
                    }
                }
                l = l * c + bs * expf(bm - mn);
                m = mn;
            }
            if (lane == 0) {
                bstat[(rh * nhot + i) * 2] = bm;
                bstat[(rh * nhot + i) * 2 + 1] = bs;
            }
        }
        const size_t pi = rh * nsplit + sp;
        if (lane == 0) {
            part_ml[pi * 2] = m;
            part_ml[pi * 2 + 1] = l;
        }
#pragma unroll
        for (int j = 0; j < CK_MAXJ; j++) {
            const int d = lane + CK_WARP * j;
            if (d < hd)
                part_o[pi * hd + d] = acc[j];
        }
    }
}

extern "C" int ck_attn_partial(ck_stream_t s, const ck_blk_t *blks, int nhot, int nsplit, int per,
                               const float *q, int nq, int pos0, int nh, int nkv, int hd, int kv_dt,
                               float scale, float *part_ml, float *part_o, float *bstat) {
    if (hd > CK_MAX_HEAD_DIM || nkv <= 0 || nh % nkv)
        return (int)cudaErrorInvalidValue;
    dim3 grid((unsigned)nkv, (unsigned)nsplit, (unsigned)nq);
    k_attn_partial<<<grid, 128, 0, s>>>(blks, nhot, nsplit, per, q, pos0, nh, nkv, hd, kv_dt, scale,
                                        part_ml, part_o, bstat);
    return ck_status();
}

/* Pass 2: one CTA per (head, row). */
__global__ void k_attn_merge(int nh, int hd, int nsplit, int nhot, const float *part_ml,
                             const float *part_o, const float *bstat, float *out, float *lse,
                             float *mass) {
    const int h = blockIdx.x, r = blockIdx.y;
    const size_t rh = (size_t)r * nh + h, p0 = rh * nsplit;
    float M = -INFINITY;
    for (int sp = 0; sp < nsplit; sp++)
        M = fmaxf(M, part_ml[(p0 + sp) * 2]);
    float L = 0.0f;
    if (M > -INFINITY)
        for (int sp = 0; sp < nsplit; sp++) {
            const float ms = part_ml[(p0 + sp) * 2];
            if (ms > -INFINITY)
                L += part_ml[(p0 + sp) * 2 + 1] * expf(ms - M);
        }
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float o = 0.0f;
        if (L > 0.0f)
            for (int sp = 0; sp < nsplit; sp++) {
                const float ms = part_ml[(p0 + sp) * 2];
                if (ms > -INFINITY)
                    o += part_o[(p0 + sp) * hd + d] * expf(ms - M);
            }
        out[rh * hd + d] = L > 0.0f ? o / L : 0.0f;
    }
    const float z = L > 0.0f ? M + logf(L) : -INFINITY;
    if (threadIdx.x == 0)
        lse[rh] = z;
    for (int i = threadIdx.x; i < nhot; i += blockDim.x) {
        const float bm = bstat[(rh * nhot + i) * 2], bs = bstat[(rh * nhot + i) * 2 + 1];
        mass[rh * nhot + i] = (bs > 0.0f && L > 0.0f) ? bs * expf(bm - z) : 0.0f;
    }
}

extern "C" int ck_attn_merge(ck_stream_t s, int nq, int nh, int hd, int nsplit, int nhot,
                             const float *part_ml, const float *part_o, const float *bstat,
                             float *out, float *lse, float *mass) {
    dim3 grid((unsigned)nh, (unsigned)nq);
    k_attn_merge<<<grid, 128, 0, s>>>(nh, hd, nsplit, nhot, part_ml, part_o, bstat, out, lse, mass);
    return ck_status();
}

__global__ void k_mass_cum(int rows, int nhot, const float *mass, float *cum) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= nhot)
        return;
    float t = 0.0f;
    for (int r = 0; r < rows; r++)
        t += mass[(size_t)r * nhot + i];
    cum[i] = t;
}

extern "C" int ck_mass_cum(ck_stream_t s, int nq, int nh, int nhot, const float *mass, float *cum) {
    k_mass_cum<<<(unsigned)((nhot + 127) / 128), 128, 0, s>>>(nq * nh, nhot, mass, cum);
    return ck_status();
}
