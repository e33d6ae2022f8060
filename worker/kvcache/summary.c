/* summary.c - attention summaries (see summary.h). Pure bookkeeping. */
#include "summary.h"

#include <stdlib.h>
#include <string.h>

summary_t *summary_new(int n_layers, float top_p, int window) {
    if (n_layers <= 0)
        return NULL;
    summary_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->layers = calloc((size_t)n_layers, sizeof *s->layers);
    if (!s->layers) {
        free(s);
        return NULL;
    }
    s->n_layers = n_layers;
    s->top_p = (top_p > 0.0f && top_p <= 1.0f) ? top_p : SUMMARY_DEFAULT_TOP_P;
    s->window = window > 0 ? window : SUMMARY_DEFAULT_WINDOW;
    s->win_start = -1;
    for (int l = 0; l < n_layers; l++)
        s->layers[l].cur_step = -1;
    return s;
}

void summary_free(summary_t *s) {
    if (!s)
        return;
    for (int l = 0; l < s->n_layers; l++)
        free(s->layers[l].blocks);
    free(s->layers);
    free(s);
}

int summary_ensure_blocks(summary_t *s, int layer, int n_blocks, int block_tokens) {
    if (!s || layer < 0 || layer >= s->n_layers || n_blocks < 0)
        return -1;
    summary_layer_t *L = &s->layers[layer];
    if (n_blocks <= L->n_blocks)
        return 0;
    if (n_blocks > L->cap) {
        int cap = L->cap ? L->cap : 64;
        while (cap < n_blocks)
            cap *= 2;
        summary_block_t *nb = realloc(L->blocks, (size_t)cap * sizeof *nb);
        if (!nb)
            return -1;
        L->blocks = nb;
        L->cap = cap;
    }
    for (int b = L->n_blocks; b < n_blocks; b++) {
        summary_block_t *e = &L->blocks[b];
        memset(e, 0, sizeof *e);
        e->last_active = (int32_t)((int64_t)b * block_tokens);
    }
    L->n_blocks = n_blocks;
    return 0;
}

/* ---------------------------------------------------------------- top-p set */

/* Strict total order: larger mass first, then lower index. */
static inline int before(const float *m, int a, int b) {
    return m[a] > m[b] || (m[a] == m[b] && a < b);
}

static inline float pos0f(float x) {
    return x > 0.0f ? x : 0.0f;
}

int summary_top_p_set(const float *mass, int n, float top_p, uint8_t *active, int *scratch) {
    if (n <= 0)
        return 0;
    memset(active, 0, (size_t)n);
    double total = 0.0;
    for (int i = 0; i < n; i++)
        total += pos0f(mass[i]);
    if (!(total > 0.0))
        return 0;
    int count = 0;
    if (top_p >= 1.0f) {
        for (int i = 0; i < n; i++)
            if (mass[i] > 0.0f)
                active[i] = 1, count++;
        return count;
    }
    double need = (double)top_p * total, acc = 0.0;
    int *ix = scratch;
    for (int i = 0; i < n; i++)
        ix[i] = i;
    int lo = 0, hi = n; /* undecided range ix[lo..hi) */
    uint32_t rng = 2463534242u;
    while (lo < hi && acc < need) {
        /* pivot: median of three pseudo-random picks keeps expected O(n) */
        rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
        int len = hi - lo;
        int a = lo + (int)(rng % (uint32_t)len), b = lo + (int)((rng >> 8) % (uint32_t)len),
            c = lo + (int)((rng >> 16) % (uint32_t)len);
        int pa = ix[a], pb = ix[b], pc = ix[c], p;
        if (before(mass, pa, pb))
            p = before(mass, pb, pc) ? b : (before(mass, pa, pc) ? c : a);
        else
            p = before(mass, pa, pc) ? a : (before(mass, pb, pc) ? c : b);
        int pv = ix[p];
        ix[p] = ix[hi - 1], ix[hi - 1] = pv;
        /* partition: elements before the pivot go to the front */
        int store = lo;
        double s_hi = 0.0;
        for (int i = lo; i < hi - 1; i++) {
            if (before(mass, ix[i], pv)) {
                int t = ix[i];
                ix[i] = ix[store], ix[store] = t;
                s_hi += pos0f(mass[t]);
                store++;
            }
        }
        ix[hi - 1] = ix[store], ix[store] = pv;
        if (acc + s_hi >= need) {
            hi = store; /* the answer lies within the heavier part */
            continue;
        }
        /* take the whole heavier part and the pivot */
        for (int i = lo; i < store; i++)
            active[ix[i]] = 1;
        count += store - lo;
        acc += s_hi;
        if (!(mass[pv] > 0.0f))
            break; /* nothing left that adds mass */
        active[pv] = 1, count++;
        acc += mass[pv];
        lo = store + 1;
    }
    return count;
}

/* ---------------------------------------------------------------- records */

void summary_record_row(summary_t *s, int layer, int step, int n_blocks, const uint8_t *active,
                        const float *peak, const float *sum, int n_active) {
    if (!s || layer < 0 || layer >= s->n_layers)
        return;
    summary_layer_t *L = &s->layers[layer];
    if (n_blocks > L->n_blocks)
        n_blocks = L->n_blocks;
    summary_block_t *B = L->blocks;
    for (int b = 0; b < n_blocks; b++) {
        if (active[b]) {
            B[b].last_active = step;
            B[b].win_count++;
        }
        if (peak[b] > B[b].peak_mass)
            B[b].peak_mass = peak[b];
    }
    if (sum)
        for (int b = 0; b < n_blocks; b++)
            B[b].cum_mass += sum[b];
    if (s->win_start < 0)
        s->win_start = step;
    L->cur_step = step;
    L->win_steps++;
    L->last_active_n = n_active;
    if (n_active > L->win_active_max)
        L->win_active_max = n_active;
    L->win_active_sum += n_active;
}

void summary_add_cum(summary_t *s, int layer, int n_blocks, const float *sum) {
    if (!s || layer < 0 || layer >= s->n_layers)
        return;
    summary_layer_t *L = &s->layers[layer];
    if (n_blocks > L->n_blocks)
        n_blocks = L->n_blocks;
    for (int b = 0; b < n_blocks; b++)
        L->blocks[b].cum_mass += sum[b];
}

void summary_mark_recalled(summary_t *s, int layer, int block) {
    if (!s || layer < 0 || layer >= s->n_layers)
        return;
    if (block < 0 || block >= s->layers[layer].n_blocks)
        return;
    s->layers[layer].blocks[block].recalled = 1;
}

void summary_mark_demoted(summary_t *s, int layer, int block) {
    if (!s || layer < 0 || layer >= s->n_layers)
        return;
    if (block < 0 || block >= s->layers[layer].n_blocks)
        return;
    s->layers[layer].blocks[block].demoted = 1;
}

void summary_reset_window(summary_t *s) {
    if (!s)
        return;
    int32_t next = -1;
    for (int l = 0; l < s->n_layers; l++) {
        summary_layer_t *L = &s->layers[l];
        for (int b = 0; b < L->n_blocks; b++) {
            L->blocks[b].win_count = 0;
            L->blocks[b].peak_mass = 0.0f;
            L->blocks[b].recalled = 0;
            L->blocks[b].demoted = 0;
        }
        L->win_steps = 0;
        L->win_active_max = 0;
        L->win_active_sum = 0;
        if (L->cur_step + 1 > next)
            next = L->cur_step + 1;
    }
    s->win_start = next > 0 ? next : -1;
}

int summary_window_steps(const summary_t *s) {
    if (!s)
        return 0;
    int m = 0;
    for (int l = 0; l < s->n_layers; l++)
        if (s->layers[l].win_steps > m)
            m = s->layers[l].win_steps;
    return m;
}

const summary_block_t *summary_layer_blocks(const summary_t *s, int layer, int *n_blocks) {
    if (!s || layer < 0 || layer >= s->n_layers) {
        if (n_blocks)
            *n_blocks = 0;
        return NULL;
    }
    if (n_blocks)
        *n_blocks = s->layers[layer].n_blocks;
    return s->layers[layer].blocks;
}

int summary_next(const summary_t *s, int64_t *cursor, int only_active, summary_entry_t *e) {
    if (!s || !cursor || !e || *cursor < 0)
        return 0;
    int64_t c = *cursor;
    int layer = (int)(c >> 32), block = (int)(c & 0xffffffff);
    for (; layer < s->n_layers; layer++, block = 0) {
        const summary_layer_t *L = &s->layers[layer];
        for (; block < L->n_blocks; block++) {
            const summary_block_t *B = &L->blocks[block];
            if (only_active && B->win_count == 0 && !B->recalled && !B->demoted)
                continue;
            e->layer = layer;
            e->block = block;
            e->peak_mass = B->peak_mass;
            e->last_active = B->last_active;
            e->win_count = B->win_count;
            e->active = B->win_count > 0;
            e->cum_mass = B->cum_mass;
            e->recalled = B->recalled;
            e->demoted = B->demoted;
            *cursor = ((int64_t)layer << 32) | (int64_t)(block + 1);
            return 1;
        }
    }
    *cursor = (int64_t)s->n_layers << 32;
    return 0;
}
