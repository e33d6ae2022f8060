/* rope_scaling.h - Hugging Face `rope_scaling` (RoPE context extension) as
 * transformers computes it (modeling_rope_utils.py): the inverse frequencies
 * of the rotary embedding and the attention factor that multiplies its cos
 * and sin. Pure functions; the config parser (model_config.c) fills the
 * struct, the engine (kn_rope_init) turns it into tables.
 *
 * Types implemented: "default" (none), "linear" and "yarn". Every other type
 * (dynamic, longrope, llama3, ...) is refused by the parser, naming it.
 */
#ifndef KVTIER_ROPE_SCALING_H
#define KVTIER_ROPE_SCALING_H

#include <stddef.h>

typedef enum {
    ROPE_SCALING_NONE = 0, /* plain RoPE: inv_freq[i] = 1 / theta^(2i/d) */
    ROPE_SCALING_LINEAR,   /* inv_freq / factor (positions interpolated) */
    ROPE_SCALING_YARN      /* NTK-by-parts blend + attention factor (arXiv 2309.00071) */
} rope_scaling_kind_t;

/* A zeroed struct means no scaling, like rope_scaling_none (the attention
 * factor is used only by YARN). */
typedef struct {
    rope_scaling_kind_t kind;
    double factor;           /* linear, yarn: > 0 (1 when kind is NONE) */
    int original_max_pos;    /* yarn: rope_scaling.original_max_position_embeddings,
                                else max_position_embeddings */
    double beta_fast;        /* yarn: 32 unless given (0 / null count as absent) */
    double beta_slow;        /* yarn: 1 unless given (0 / null count as absent) */
    int truncate;            /* yarn: floor/ceil the correction range (default 1) */
    double attention_factor; /* multiplier on cos and sin: yarn resolved by
                                rope_yarn_attention_factor or given; else 1 */
} rope_scaling_t;

/* Sets s to "no scaling" (kind NONE, factor 1, attention factor 1). */
void rope_scaling_none(rope_scaling_t *s);

/* YaRN's default attention factor, transformers' get_mscale rule: with
 * mscale and mscale_all_dim both non-zero, get_mscale(factor, mscale) /
 * get_mscale(factor, mscale_all_dim), else get_mscale(factor, 1), where
 * get_mscale(s, m) = 1 for s <= 1 and 0.1 * m * ln(s) + 1 otherwise
 * (0.1 * ln(4) + 1 = 1.1386 for factor 4). Pass 0 for an absent mscale. */
double rope_yarn_attention_factor(double factor, double mscale, double mscale_all_dim);

/* Fills inv_freq[head_dim / 2] (caller-owned) for head_dim (even, > 0) and
 * rope base theta (> 0; > 1 for yarn), in f32 with the operations in the order torch does
 * them, so the tables match transformers to the last bit or so:
 *   pos[i]  = theta^((float)(2i) / head_dim)           (f32)
 *   extra   = 1 / pos[i]                                (NONE: the result)
 *   linear  = extra / factor
 *   yarn    = inter * (1 - e[i]) + extra * e[i], inter = 1 / (factor * pos[i]),
 *             e[i] = 1 - clamp((i - low) / (high - low), 0, 1) over the
 *             correction range [low, high] of beta_fast / beta_slow rotations
 *             at original_max_pos (rope_yarn_correction_range).
 * s NULL means NONE. Returns 0, or -1 (nothing written) on bad arguments. */
int rope_scaling_inv_freq(const rope_scaling_t *s, int head_dim, double theta, float *inv_freq);

/* YaRN's correction range, transformers' find_correction_range: the
 * (fractional) dimension pair index at which beta_fast resp. beta_slow full
 * rotations fit in original_max_pos positions, floored / ceiled when
 * s->truncate, clamped to [0, head_dim - 1]. Writes *low, *high. */
void rope_yarn_correction_range(const rope_scaling_t *s, int head_dim, double theta, double *low,
                                double *high);

/* "yarn", "linear", "default". Static string. */
const char *rope_scaling_kind_name(rope_scaling_kind_t k);

/* One line for load summaries into buf (always NUL-terminated):
 * "default", "linear x2", or "yarn x4 (original 32768 positions, attention
 * factor 1.1386)". Returns buf. */
const char *rope_scaling_describe(const rope_scaling_t *s, char *buf, size_t len);

#endif
