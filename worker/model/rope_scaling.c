/* rope_scaling.c - RoPE inverse frequencies for linear and YaRN scaling, as
 * transformers' _compute_linear_scaling_rope_parameters and
 * _compute_yarn_parameters (pure; see rope_scaling.h).
 *
 * The tables are f32 like torch's: each step below is one torch op on f32
 * tensors with python scalars rounded to f32, in the same order. This file is
 * built with -ffp-contract=off so no product is fused into a sum.
 */
#include "rope_scaling.h"

#include <math.h>
#include <stdio.h>

void rope_scaling_none(rope_scaling_t *s) {
    s->kind = ROPE_SCALING_NONE;
    s->factor = 1.0;
    s->original_max_pos = 0;
    s->beta_fast = 32.0;
    s->beta_slow = 1.0;
    s->truncate = 1;
    s->attention_factor = 1.0;
}

static double yarn_get_mscale(double scale, double mscale) {
    if (scale <= 1.0)
        return 1.0;
    return 0.1 * mscale * log(scale) + 1.0;
}

double rope_yarn_attention_factor(double factor, double mscale, double mscale_all_dim) {
    if (mscale != 0.0 && mscale_all_dim != 0.0)
        return yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim);
    return yarn_get_mscale(factor, 1.0);
}

/* find_correction_dim: the dimension (pair index scaled to head_dim) whose
 * wavelength fits num_rot full rotations into max_pos positions (double, as
 * python's math). */
static double yarn_correction_dim(double num_rot, int head_dim, double theta, int max_pos) {
    return ((double)head_dim * log((double)max_pos / (num_rot * 2 * M_PI))) / (2 * log(theta));
}

void rope_yarn_correction_range(const rope_scaling_t *s, int head_dim, double theta, double *low,
                                double *high) {
    double lo = yarn_correction_dim(s->beta_fast, head_dim, theta, s->original_max_pos);
    double hi = yarn_correction_dim(s->beta_slow, head_dim, theta, s->original_max_pos);
    if (s->truncate) {
        lo = floor(lo);
        hi = ceil(hi);
    }
    *low = lo > 0 ? lo : 0;
    *high = hi < head_dim - 1 ? hi : head_dim - 1;
}

int rope_scaling_inv_freq(const rope_scaling_t *s, int head_dim, double theta, float *inv_freq) {
    if (head_dim <= 0 || head_dim % 2 || !(theta > 0) || !inv_freq)
        return -1;
    rope_scaling_kind_t kind = s ? s->kind : ROPE_SCALING_NONE;
    if (kind != ROPE_SCALING_NONE && !(s->factor > 0))
        return -1;
    if (kind == ROPE_SCALING_YARN &&
        (s->original_max_pos <= 0 || !(theta > 1.0) || !(s->beta_fast > 0) || !(s->beta_slow > 0)))
        return -1;
    int half = head_dim / 2;
    float base = (float)theta; /* torch: python float base ** f32 tensor */
    double low = 0, high = 0;
    if (kind == ROPE_SCALING_YARN) {
        rope_yarn_correction_range(s, head_dim, theta, &low, &high);
        if (low == high)
            high += 0.001; /* transformers: prevent the singularity */
    }
    for (int i = 0; i < half; i++) {
        /* torch: base ** (arange(0, dim, 2).float() / dim) in f32 */
        float e = (float)(2 * i) / (float)head_dim;
        float pos = (float)pow((double)base, (double)e);
        float extra = 1.0f / pos;
        switch (kind) {
        case ROPE_SCALING_NONE:
            inv_freq[i] = extra;
            break;
        case ROPE_SCALING_LINEAR:
            inv_freq[i] = extra / (float)s->factor;
            break;
        case ROPE_SCALING_YARN: {
            float inter = 1.0f / ((float)s->factor * pos);
            float ramp = ((float)i - (float)low) / (float)(high - low);
            ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
            float ext = 1.0f - ramp; /* 1 = keep the original frequency */
            float a = inter * (1.0f - ext);
            float b = extra * ext;
            inv_freq[i] = a + b;
            break;
        }
        }
    }
    return 0;
}

const char *rope_scaling_kind_name(rope_scaling_kind_t k) {
    switch (k) {
    case ROPE_SCALING_LINEAR:
        return "linear";
    case ROPE_SCALING_YARN:
        return "yarn";
    case ROPE_SCALING_NONE:
        break;
    }
    return "default";
}

const char *rope_scaling_describe(const rope_scaling_t *s, char *buf, size_t len) {
    if (!buf || len == 0)
        return buf;
    if (!s || s->kind == ROPE_SCALING_NONE)
        snprintf(buf, len, "default");
    else if (s->kind == ROPE_SCALING_LINEAR)
        snprintf(buf, len, "linear x%g", s->factor);
    else
        snprintf(buf, len, "yarn x%g (original %d positions, attention factor %.4f)", s->factor,
                 s->original_max_pos, s->attention_factor);
    return buf;
}
