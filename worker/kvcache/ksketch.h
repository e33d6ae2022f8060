/* ksketch.h - 4-bit sketches of the keys of a block that left the hot pool,
 * for tight revival bounds.
 *
 * The min/max digest of a block bounds q.k by sum_d max(q_d mn_d, q_d mx_d):
 * every dimension takes its own worst token, which on real heads is several
 * nats above any actual logit, so nearly every absent block looks revivable.
 * A sketch keeps, per token and dimension, a 4-bit code c of where the key
 * lies in [mn_d, mx_d] (step_d = (mx_d - mn_d) / 15). Then, for every token,
 *   q.k <= sum_d q_d (mn_d + c_td step_d) + sum_d |q_d| step_d / 2 (+ fp margin)
 * and the bound of the block is the max over its tokens: within a few hundredths
 * of a nat of the true max logit for typical heads, and never below it.
 *
 * Size per block: n_kv_heads * KV_BLOCK_TOKENS * head_dim / 2 bytes (a quarter
 * of the block's keys in bf16, an eighth in f32). Pure functions, no state. */
#ifndef KVTIER_KSKETCH_H
#define KVTIER_KSKETCH_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

/* Tokens per block the bound is written for (KV_BLOCK_TOKENS). */
#define KSKETCH_MAX_BT 16

/* Bytes of one block's sketch for n_kv KV heads of head_dim hd (even) and
 * bt tokens per block. */
size_t ksketch_bytes(int n_kv, int bt, int hd);

/* Encodes the keys of one block: `keys` points at the K half of a block
 * payload ([n_kv][bt][hd] elements of dtype dt, f32 or bf16), `digest` at its
 * [n_kv][2][hd] min/max rows (which must bound the stored keys), ntok <= bt
 * tokens are used (the rest get code 0). Writes ksketch_bytes() to codes. */
void ksketch_encode(const void *keys, dtype_t dt, int n_kv, int bt, int hd, int ntok,
                    const float *digest, uint8_t *codes);

/* Upper bound of scale * q.k over the ntok keys of KV head g of a sketched
 * block: q [hd] one query head, mn/mx the digest rows of g, codes the whole
 * block's sketch ([n_kv][hd/2][bt] bytes: the codes of dimensions 2i and
 * 2i+1 of every token side by side). -INFINITY when ntok <= 0; +INFINITY (no
 * bound) when the digest holds NaN (forgotten), hd > 512 or bt != 16. */
float ksketch_bound(const float *q, const float *mn, const float *mx, const uint8_t *codes, int g,
                    int bt, int hd, int ntok, float scale);

#endif
