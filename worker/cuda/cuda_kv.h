/* cuda_kv.h - the GPU's KV blocks: a device pool per layer and, per sequence
 * and layer, a device block table (logical block -> device slot, tokens the
 * device copy holds), plus the attention provider (kvcache.h) that runs
 * kvcache_attend's attention on the GPU over that table.
 *
 * The KV cache (worker/kvcache) stays the authority: its block tables,
 * states, digests, sketches, summaries and host payloads are maintained by
 * the same code as on the CPU backend (the forward pass appends every K/V row
 * to it too), so take / put / lend / drop and the bytes that reach a tier are
 * identical by construction. The device follows it lazily, at every attend of
 * a layer: a readable block (HOT, or OUT and lent) without an up-to-date
 * device copy is uploaded (host payload -> pinned staging -> cudaMemcpyAsync
 * on a copy stream, the compute stream waits on an event: a recall), a block
 * that is no longer readable gives its device slot back (a demotion: the
 * device holds only what the attention reads). New rows are written on the
 * device by the forward pass (cuda_kv_append_dst + ck_kv_append), so a decode
 * step uploads nothing.
 *
 * The attention itself is one pass over the device blocks (absent blocks are
 * not in the table: skipped exactly) that produces the output, each block's
 * softmax mass per query head (summaries / active sets) and the log-sum-exp per
 * head (revival checks): kvcache_attend then does the bookkeeping on the host
 * exactly as for the CPU kernels (revival bounds from digests and sketches
 * against that log-sum-exp; no second pass over the KV).
 */
#ifndef KVTIER_CUDA_KV_H
#define KVTIER_CUDA_KV_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#include "cuda_kernels.h"
#include "kvcache.h"

typedef struct cuda_kv cuda_kv_t;

typedef struct {
    uint64_t uploads;      /* blocks copied host -> device (recalls, foreign appends) */
    uint64_t upload_bytes; /* their bytes */
    uint64_t releases;     /* device slots given back (demoted / dropped blocks) */
    uint64_t d2h_bytes;    /* attention outputs read back (masses, lse, out) */
    size_t dev_bytes;      /* device pool bytes allocated (all layers) */
    size_t dev_used_bytes; /* of which in use */
} cuda_kv_stats_t;

/* Creates the device KV state for a model shape; attention kernels run on
 * stream s (borrowed). Returns NULL with a message in err. */
cuda_kv_t *cuda_kv_new(int n_layers, int n_heads, int n_kv_heads, int head_dim, cudaStream_t s,
                       char *err, size_t errlen);

/* Detaches from its cache (if any) and frees every device buffer. */
void cuda_kv_free(cuda_kv_t *c);

/* Makes c the attention provider of kv (a no-op when it already is; a
 * previous cache is detached and the device copies forgotten). Returns 0, or
 * -1 with err when kv's block layout is not f32 / bf16 of this shape. */
int cuda_kv_attach(cuda_kv_t *c, kvcache_t *kv, char *err, size_t errlen);

/* Device destinations dst[0..n) (host array) of the rows at positions
 * pos0..pos0+n-1 of (seq, layer), allocating (zeroed) device slots for new
 * blocks. Call after the same rows were appended to the host cache. Returns
 * 0 or -1 with err (device memory). */
int cuda_kv_append_dst(cuda_kv_t *c, int seq, int layer, int pos0, int n, ck_row_dst_t *dst,
                       char *err, size_t errlen);

/* Binds the forward pass's buffers for the next attends: when kvcache_attend
 * is called with q == hq (host) the device copy dq is used, and out == hout
 * makes the output stay on the device in dout (then the host out is not
 * written). NULLs unbind. */
void cuda_kv_bind(cuda_kv_t *c, const float *hq, const float *dq, float *hout, float *dout);

/* 1 when the last attend ran on the GPU and wrote the bound dout; 0 when the
 * provider declined (the CPU kernels wrote the host out). */
int cuda_kv_last_on_device(const cuda_kv_t *c);

/* Fast path (no hooks, no statistics: kvcache_seq_plain): 1 when the device
 * holds every position < pos0 of every layer of seq exactly as the cache
 * does (a new sequence at pos0 0 included), so the next rows can be attended
 * from the device table alone and appended to the cache afterwards. */
int cuda_kv_fast_ready(cuda_kv_t *c, int seq, int pos0);

/* Fast path: the device block table of (seq, layer) for positions < len
 * (after their rows went through cuda_kv_append_dst) into out
 * [(len-1)/16 + 1] (host memory; the caller uploads the tables of all layers
 * at once). Returns 0, or -1 with err when the device does not mirror those
 * positions (cuda_kv_fast_ready was not checked). */
int cuda_kv_fast_table(cuda_kv_t *c, int seq, int layer, int len, ck_blk_t *out, char *err,
                       size_t errlen);

/* Fast path attention of rows pos0..pos0+nq-1 over the nlog blocks of the
 * device table dtable (from cuda_kv_fast_table, uploaded): dq, dout device
 * [nq][n_heads*head_dim]. Enqueued on the stream, no host wait. Returns 0 or
 * -1 with err. */
int cuda_kv_attend_table(cuda_kv_t *c, const ck_blk_t *dtable, int nlog, const float *dq, int nq,
                         int pos0, float scale, float *dout, char *err, size_t errlen);

/* Copies the device copy of (seq, layer, block) into out (len must be the
 * block bytes). Returns 0, 1 when the device holds no up-to-date copy (never
 * attended since it changed, or released), -1 with err (bad arguments, CUDA
 * error). For tests: the device bytes must equal the cache's host payload. */
int cuda_kv_block_read(cuda_kv_t *c, int seq, int layer, int block, void *out, size_t len,
                       char *err, size_t errlen);

/* KV dtype of the attached cache: CK_F32 or CK_BF16 (CK_F32 before attach). */
int cuda_kv_dtype(const cuda_kv_t *c);

void cuda_kv_get_stats(const cuda_kv_t *c, cuda_kv_stats_t *st);

#endif
