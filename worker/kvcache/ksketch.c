/* ksketch.c - 4-bit key sketches and their revival bound (see ksketch.h). */
#include "ksketch.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "attention.h"

size_t ksketch_bytes(int n_kv, int bt, int hd) {
    return (size_t)n_kv * bt * (size_t)(hd / 2);
}

static float key_at(const void *keys, dtype_t dt, size_t i) {
    if (dt == DT_BF16)
        return attn_bf16_to_f32(((const uint16_t *)keys)[i]);
    return ((const float *)keys)[i];
}

void ksketch_encode(const void *keys, dtype_t dt, int n_kv, int bt, int hd, int ntok,
                    const float *digest, uint8_t *codes) {
    memset(codes, 0, ksketch_bytes(n_kv, bt, hd));
    for (int g = 0; g < n_kv; g++) {
        const float *mn = digest + (size_t)g * 2 * hd, *mx = mn + hd;
        uint8_t *cg = codes + (size_t)g * (size_t)(hd / 2) * bt;
        for (int t = 0; t < ntok && t < bt; t++)
            for (int d = 0; d < hd; d++) {
                const float step = (mx[d] - mn[d]) / 15.0f;
                const float k = key_at(keys, dt, ((size_t)g * bt + t) * hd + d);
                int c = 0;
                if (step > 0.0f && isfinite(step)) {
                    c = (int)lrintf((k - mn[d]) / step);
                    c = c < 0 ? 0 : c > 15 ? 15 : c;
                }
                cg[(size_t)(d / 2) * bt + t] |= (uint8_t)(c << ((d & 1) * 4));
            }
    }
}

float ksketch_bound(const float *q, const float *mn, const float *mx, const uint8_t *codes, int g,
                    int bt, int hd, int ntok, float scale) {
    if (ntok <= 0)
        return -INFINITY;
    if (ntok > bt)
        ntok = bt;
    if (bt != KSKETCH_MAX_BT)
        return INFINITY; /* layout is for 16-token blocks: keep the box bound */
    float qs[512], base = 0.0f, slack = 0.0f, mag = 0.0f;
    if (hd > 512)
        return INFINITY; /* no sketch bound: caller keeps the box bound */
    for (int d = 0; d < hd; d++) {
        const float step = (mx[d] - mn[d]) / 15.0f;
        if (!isfinite(step))
            return INFINITY;
        qs[d] = q[d] * step;
        base += q[d] * mn[d];
        /* the code is the nearest step: |k - (mn + c step)| <= step/2; a
         * hair more for the rounding of (k - mn) / step */
        slack += fabsf(q[d]) * step * 0.5f * (1.0f + 1e-4f);
        mag += fabsf(q[d]) * (fabsf(mn[d]) + fabsf(mx[d]));
    }
    /* all tokens at once: for each pair of dimensions the codes of the bt
     * tokens are bt consecutive bytes (vectorises) */
    float acc[KSKETCH_MAX_BT] = {0};
    const uint8_t *cg = codes + (size_t)g * (size_t)(hd / 2) * bt;
    for (int d = 0; d < hd; d += 2) {
        const uint8_t *c = cg + (size_t)(d / 2) * bt;
        const float q0 = qs[d], q1 = qs[d + 1];
        for (int t = 0; t < KSKETCH_MAX_BT; t++)
            acc[t] += q0 * (float)(c[t] & 15) + q1 * (float)(c[t] >> 4);
    }
    float best = -INFINITY;
    for (int t = 0; t < ntok; t++)
        best = acc[t] > best ? acc[t] : best;
    /* float error of the sums above: a few ulps of the magnitudes involved */
    return (base + best + slack + mag * (float)(4 * hd + 16) * FLT_EPSILON) * scale;
}
