/* attention_impl.h - private to attention.c / attention_decode.c: the
 * workspace layout and the entry point of the single-row (decode) kernel. */
#ifndef KVTIER_ATTENTION_IMPL_H
#define KVTIER_ATTENTION_IMPL_H

#include <stddef.h>

#include "attention.h"

struct attn_ws {
    int nthreads;
    size_t per_thread; /* floats per thread buffer */
    float **buf;       /* [nthreads] multi-row path scratch */
    /* decode path (one buffer shared by all tasks, each task owns a slice) */
    float *dec;     /* logits + chunk partials, see attention_decode.c */
    size_t dec_cap; /* floats */
    int *dec_off;   /* [n_blocks+1] token offset of each hot block */
    size_t off_cap; /* ints */
};

/* Grows the per-thread buffers of ws to nthreads x floats. 0 or -1 (OOM;
 * buffers stay valid at their old size). */
int attn_ws_reserve(attn_ws_t *ws, int nthreads, size_t floats);

/* Non-zero when the SIMD kernels may be used (not forced portable). */
int attn_simd_enabled(void);

/* Single query row (a->nq == 1): flash-decoding split of the
 * hot blocks into chunks, one task per chunk over all KV heads (K then V of
 * a chunk read once, in address order), then a log-sum-exp merge per head.
 * Same contract as attention_run. */
int attn_decode_run(const attn_args_t *a, attn_ws_t *ws, threadpool_t *tp);

#endif
