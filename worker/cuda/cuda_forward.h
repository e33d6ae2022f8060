/* cuda_forward.h - the Qwen3 forward pass on one GPU (the CUDA backend).
 *
 * Same contract as fwd_run (forward.h) and the same math, on the device:
 *   weights copied once: BF16 checkpoints stay BF16 on the device, others
 *   become F32 (so a F32 checkpoint is not rounded); norm weights F32
 *   x = embed[ids] ; per layer: rmsnorm -> q,k,v (gemv for one row, cuBLAS
 *   for a chunk) -> q/k norm + RoPE (the CPU's cos/sin tables, uploaded) ->
 *   K/V rows appended to the KV cache (host, the authority: digests, tiers)
 *   and to the device blocks -> hooks.before_attention (host q) ->
 *   kvcache_attend, which the device runs (cuda_kv.h) -> x += a Wo^T ->
 *   rmsnorm -> SwiGLU -> x += ... Wd^T ; logits = rmsnorm(x) lm_head^T.
 * Per layer the device waits twice for the host (K/V rows down for the cache
 * and the hooks; the attention's masses and log-sum-exp down for the
 * summaries): the price of keeping the tiering code one and the same.
 * Fast path: with no before-attention hook and a plain sequence
 * (kvcache_seq_plain: no summaries, policy, revival tracking; all blocks hot)
 * the layers run back to back from the device's block table and the K/V rows
 * reach the cache after the chunk, one host wait per chunk.
 */
#ifndef KVTIER_CUDA_FORWARD_H
#define KVTIER_CUDA_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "forward.h"
#include "model.h"

typedef struct cuda_fwd cuda_fwd_t;

/* The ops fwd_attach_device takes (name "cuda"). */
extern const fwd_device_ops_t cuda_fwd_ops;

/* Copies m's weights to device 0 (or the first of CUDA_VISIBLE_DEVICES) and
 * allocates activations for max_chunk rows. m is borrowed (must outlive the
 * state). Returns NULL with a message in err (no device, device memory short
 * -- with the bytes asked for --, unsupported shape). */
cuda_fwd_t *cuda_fwd_new(const qwen3_model_t *m, int max_chunk, char *err, size_t errlen);

void cuda_fwd_free(cuda_fwd_t *f);

/* fwd_run's contract on the device (see forward.h). */
int cuda_fwd_run(cuda_fwd_t *f, kvcache_t *kv, int seq, const int *ids, int n, int pos0,
                 float *logits, int all_logits, const fwd_hooks_t *hooks, char *err, size_t errlen);

typedef struct {
    char device[256];     /* cudaDeviceProp.name */
    size_t weight_bytes;  /* weights on the device */
    int weight_dtype;     /* 0 F32, 2 BF16 (dtype_t values) */
    uint64_t h2d_bytes;   /* host -> device: ids, block uploads, tables */
    uint64_t d2h_bytes;   /* device -> host: K/V/q rows, attention outputs, logits */
    uint64_t kv_uploads;  /* KV blocks uploaded (recalls) */
    uint64_t kv_releases; /* device KV slots released (demotions, drops) */
    size_t kv_dev_bytes;  /* device KV pool allocated */
    size_t kv_dev_used;   /* in use now */
    uint64_t fast_chunks; /* chunks run without host waits between layers (no hooks,
                             no statistics: kvcache_seq_plain) */
    uint64_t slow_chunks; /* chunks that went through kvcache_attend layer by layer */
} cuda_fwd_info_t;

/* The device KV state (borrowed; tests read device blocks through it). */
struct cuda_kv *cuda_fwd_kv(cuda_fwd_t *f);

/* Counters since creation (PCIe bytes per token = (h2d + d2h) / tokens). */
void cuda_fwd_get_info(const cuda_fwd_t *f, cuda_fwd_info_t *info);

#endif
