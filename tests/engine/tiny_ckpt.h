/* tiny_ckpt.h - writes small random Qwen3 checkpoints (config.json +
 * model.safetensors) for engine tests, and a naive double-precision reference
 * forward pass to check the engine against. */
#ifndef KVTIER_TINY_CKPT_H
#define KVTIER_TINY_CKPT_H

#include <stdint.h>

#include "model.h"

typedef struct {
    int vocab, hidden, inter, layers, heads, kv_heads, head_dim;
    double rope_theta;
    int eos_id;
    int tied;      /* omit lm_head.weight */
    dtype_t dtype; /* F32, BF16 or F16 tensors */
    uint64_t seed;
    float scale; /* weight amplitude (uniform [-scale, scale]) */
} tiny_cfg;

/* The default tiny shape: vocab 96, hidden 64, inter 96, 2 layers, 4/2 heads,
 * head_dim 16, theta 10000, tied, F32. */
tiny_cfg tiny_cfg_default(void);

/* Creates a fresh temp dir (mkdtemp under $TMPDIR or /tmp) and writes the
 * checkpoint into it. Returns a malloc'd path, or NULL. */
char *tiny_ckpt_make(const tiny_cfg *c);

/* Removes the files written by tiny_ckpt_make and the dir; frees path. */
void tiny_ckpt_remove(char *dir);

/* Reference forward over ids[0..n) from position 0 with full causal
 * attention, in double; writes logits of every position to out[n][vocab]. */
void tiny_ref_forward(const qwen3_model_t *m, const int *ids, int n, double *out);

#endif
