/* forward.h - the Qwen3 forward pass on the CPU (HF modeling_qwen3 semantics).
 *
 *   x = embed[ids]                                            [n, H]
 *   per layer:
 *     h = rmsnorm(x) ; q,k,v = h Wq^T, h Wk^T, h Wv^T         [n, nh*hd], [n, nkv*hd]
 *     q,k = rmsnorm per head (q_norm, k_norm) ; rope(pos)
 *     kvcache_append(k, v) ; hook ; a = kvcache_attend(q)     [n, nh*hd]
 *     x += a Wo^T
 *     h = rmsnorm(x) ; x += (silu(h Wg^T) * (h Wu^T)) Wd^T
 *   logits = rmsnorm(x) lm_head^T                             [V]
 *
 * One token (decode) runs the fused multithreaded matvec kernels; a chunk of
 * n > 1 tokens (prefill) runs the panel GEMM (kernels.h). Longer inputs are
 * split into chunks of max_chunk tokens.
 */
#ifndef KVTIER_FORWARD_H
#define KVTIER_FORWARD_H

#include <stddef.h>

#include "kvcache.h"
#include "model.h"
#include "threadpool.h"

/* Hooks into the layer loop (all optional; ud is passed back). */
typedef struct {
    void *ud;
    /* Called for each layer after this chunk's K/V were appended and before
     * the attention reads the cache: the place to put blocks back (recall) or
     * take them out. q [n][n_heads*head_dim] are the post-RoPE queries of rows
     * at positions pos0..pos0+n-1 (borrowed). A non-zero return aborts the
     * forward pass with an error naming the layer. */
    int (*before_attention)(void *ud, kvcache_t *kv, int seq, int layer, int pos0, int n,
                            const float *q);
} fwd_hooks_t;

typedef struct fwd fwd_t;

/* Path selection for chunks of more than one token. */
typedef enum {
    FWD_PATH_AUTO = 0,   /* n == 1: matvec, n > 1: GEMM */
    FWD_PATH_MATVEC = 1, /* every row through the matvec kernels (reference for tests) */
} fwd_path_t;

/* Creates forward state (activation scratch for max_chunk rows, RoPE tables,
 * GEMM panels) for model m (borrowed; must outlive the state) on pool tp
 * (borrowed; NULL = single-threaded). max_chunk <= 0 means 256. Returns NULL
 * with a message in err on bad shapes or allocation failure. */
fwd_t *fwd_new(const qwen3_model_t *m, threadpool_t *tp, int max_chunk, char *err, size_t errlen);

void fwd_free(fwd_t *f);

/* Largest chunk processed at once. */
int fwd_max_chunk(const fwd_t *f);

void fwd_set_path(fwd_t *f, fwd_path_t path);

/* A forward pass on another device (worker/cuda, see backend.h): once
 * attached, fwd_run hands every call to ops->run(dev, ...) with the same
 * contract, and fwd_free calls ops->free(dev). */
typedef struct {
    const char *name;
    int (*run)(void *dev, kvcache_t *kv, int seq, const int *ids, int n, int pos0, float *logits,
               int all_logits, const fwd_hooks_t *hooks, char *err, size_t errlen);
    void (*free)(void *dev);
} fwd_device_ops_t;

/* Attaches dev (ownership passes to f) with its ops (static, borrowed). */
void fwd_attach_device(fwd_t *f, const fwd_device_ops_t *ops, void *dev);

/* Name of the device running f: "cpu" or ops->name. */
const char *fwd_device_name(const fwd_t *f);

/* The attached device state (borrowed; e.g. cuda_fwd_t for "cuda"), or NULL. */
void *fwd_device(const fwd_t *f);

/* Runs n tokens ids[0..n) at positions pos0..pos0+n-1 of sequence seq:
 * appends their K/V to kv (pos0 must equal the sequence's length) and, when
 * logits is non-NULL, writes logits: with all_logits, logits[n][vocab] (row i
 * = position pos0+i); otherwise only the last row's logits[vocab]. hooks may
 * be NULL. Positions are not capped at max_position_embeddings (the caller
 * decides the context limit). Returns 0, or -1 with a message in err (token
 * id out of range, a KV cache error such as a full hot pool, a hook abort,
 * allocation failure); the cache may then hold K/V of the failed chunk's
 * earlier layers, so the caller should close the sequence. */
int fwd_run(fwd_t *f, kvcache_t *kv, int seq, const int *ids, int n, int pos0, float *logits,
            int all_logits, const fwd_hooks_t *hooks, char *err, size_t errlen);

/* ---- pipeline seams (worker/pipeline): a model split by layer ranges ----
 * A stage's forward state is made over a model view holding only its layers
 * (pipe_model_view); its cache holds only those layers (layer index = cache
 * layer). The first stage embeds and, when it has a tail, hands the residual
 * stream to the rest of the pipeline before its final norm + lm_head; the
 * other stages run fwd_layers on the hidden states they receive. */

/* The layers after this forward state's model, run elsewhere. */
typedef struct {
    void *ud;
    /* Called once per chunk after the local layers, before the final norm:
     * x [n][hidden] is the residual stream of positions pos0..pos0+n-1 of
     * sequence seq. want_rows (0, 1 or n) is how many of the last rows the
     * caller needs (0: a prefill chunk whose logits nobody reads). The tail
     * runs the remaining layers and writes the final hidden states of the
     * last want_rows rows into those rows of x. Returns 0, or -1 with a
     * message in err (the forward pass fails with it). */
    int (*run)(void *ud, int seq, int pos0, int n, float *x, int want_rows, char *err,
               size_t errlen);
} fwd_tail_t;

/* Installs (copied) or removes (NULL) the tail of f. */
void fwd_set_tail(fwd_t *f, const fwd_tail_t *tail);

/* Runs the decoder layers of f's model on the residual stream x [n][hidden]
 * (in place) of positions pos0..pos0+n-1 of sequence seq, appending K/V to
 * kv: no embedding, no final norm, no lm_head, no tail. n must be <=
 * fwd_max_chunk (a chunk is run as one, as the first stage ran it: the same
 * arithmetic as one process). Returns 0, or -1 with a message in err (as
 * fwd_run). */
int fwd_layers(fwd_t *f, kvcache_t *kv, int seq, float *x, int n, int pos0,
               const fwd_hooks_t *hooks, char *err, size_t errlen);

#endif
