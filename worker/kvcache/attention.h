/* attention.h - CPU attention kernels over paged KV blocks.
 *
 * The forward pass does not call this directly: it calls kvcache_attend
 * (kvcache.h), which gathers the HOT blocks of a sequence and runs
 * attention_run. This header is the kernel contract (what a CUDA backend
 * would replace): causal, GQA, scale 1/sqrt(head_dim), softmax in f32, K/V
 * stored as f32 or bf16 in the block layout of kvcache.h, plus the per-block
 * softmax masses the summaries need.
 *
 * Work split, several rows (prefill): tasks = (KV head g, tile of query
 * rows); all query heads that share g are done together so a K/V block is
 * converted/loaded once per tile. One row (decode): flash-decoding, tasks =
 * chunks of consecutive blocks over all KV heads (each K/V byte read once,
 * in address order), merged per head with a log-sum-exp. Scratch lives in an
 * attn_ws_t reused across calls (no per-call allocation once grown).
 */
#ifndef KVTIER_ATTENTION_H
#define KVTIER_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "threadpool.h"

/* One HOT block as the kernel sees it. */
typedef struct {
    const void *kv; /* slot base: K [n_kv][bt][hd] then V [n_kv][bt][hd], storage dtype */
    int block;      /* logical block index (pos0 = block * bt) */
    int ntok;       /* tokens held (1..bt) */
} attn_block_t;

typedef struct {
    /* shapes */
    int n_heads, n_kv_heads, head_dim, block_tokens;
    dtype_t dtype; /* DT_F32 or DT_BF16 */
    float scale;   /* 1/sqrt(head_dim) */
    /* keys/values: HOT blocks in ascending logical order */
    const attn_block_t *blocks;
    int n_blocks;
    int n_logical; /* logical blocks of the layer (width of mass rows) */
    /* queries */
    const float *q; /* [nq][n_heads*head_dim] */
    int nq, pos0;   /* row i is at position pos0 + i */
    float *out;     /* [nq][n_heads*head_dim] */
    /* optional outputs (NULL = not wanted) */
    float *mass; /* [nq - obs0][n_heads][n_logical]: per block softmax mass of
                    observed rows obs0..nq-1 (absent blocks 0) */
    int obs0;
    float *cum;        /* [tp_nthreads][n_logical]: += mass summed over heads, all rows
                          (per-thread partial sums; caller zeroes and reduces) */
    float *row_lse;    /* [n_heads]: log-sum-exp of the last row's scaled logits over
                          hot keys (-INFINITY when none) */
    float *probs_last; /* [n_heads][pos0+nq]: probabilities of the last row by position
                          (absent positions 0) */
    int lse_only;      /* one row (nq == 1): only row_lse (no V read; out, mass,
                          cum, probs_last untouched); used by revival checks */
    /* Pending blocks (one row only): blocks with kv == NULL are on their way.
     * The chunks without one are attended first; then fill(fill_ud) sets
     * their kv pointers (in the array `blocks` points to) and returns how
     * many it could not; 0: the rest is attended and merged, the result the
     * same as with every pointer there from the start; > 0: attention_run
     * returns 1 and writes nothing it promised (attend again without them). */
    int (*fill)(void *fill_ud);
    void *fill_ud;
} attn_args_t;

typedef struct attn_ws attn_ws_t;

/* Creates an empty workspace (grows on demand). NULL on allocation failure. */
attn_ws_t *attn_ws_new(void);
void attn_ws_free(attn_ws_t *ws);

/* Runs the attention described by a over pool tp (NULL = inline). Returns 0,
 * -1 when scratch cannot be allocated (out untouched then) or a is
 * inconsistent (pending blocks with several rows), 1 when a->fill left
 * blocks pending. */
int attention_run(const attn_args_t *a, attn_ws_t *ws, threadpool_t *tp);

/* on != 0: use only the portable C kernels (tests compare them with the
 * SIMD ones); 0: pick the best the CPU has (default). Process-wide; do not
 * flip it while attention runs on another thread. */
void attention_force_portable(int on);

/* Scaled dot product q.k * scale of one query head q [hd] with one key given
 * in storage dtype (f32 or bf16 row of hd elements): the reference used by
 * revival checks. */
float attention_dot(const float *q, const void *k, dtype_t dt, int hd, float scale);

/* f32 -> bf16 (round to nearest even; NaN kept quiet) and back. */
uint16_t attn_f32_to_bf16(float f);
float attn_bf16_to_f32(uint16_t h);

#endif
