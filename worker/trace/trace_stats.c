/* trace_stats.c - see trace_stats.h. */
#include "trace_stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "summary.h"

typedef struct {
    int32_t *last;    /* [max_pos] step the token was last active, -1 never */
    uint8_t *revived; /* [max_pos] */
    int32_t *act_tok; /* [max_pos] per row */
    int32_t *act_blk; /* [max_pos] per row */
    double ent_sum, sink_sum;
    int tokens_revived, max_gap, max_gap_token;
    int64_t revivals;
    int64_t gap_hist[TRACE_GAP_BUCKETS];
} trace_head_t;

typedef struct {
    int rows;
    int32_t *row_pos;   /* [max_pos] */
    int32_t *union_blk; /* [max_pos] per row */
    int32_t *blk_last;  /* [max_blocks] */
    uint8_t *blk_revived;
    int blocks_revived, max_block_gap;
    int64_t block_revivals;
} trace_layer_t;

struct trace {
    trace_opts_t o;
    int max_blocks;
    trace_head_t *heads;   /* [n_layers * n_heads] */
    trace_layer_t *layers; /* [n_layers] */
    uint8_t *act;          /* scratch [max_pos] */
    uint8_t *bact, *bunion;
    float *bmass; /* [max_blocks] */
    int *scratch; /* [max_pos] */
};

int trace_gap_bucket_lo(int gap, int i) {
    return gap << i;
}

static int gap_bucket(int gap, int g) {
    int i = 0;
    while (i + 1 < TRACE_GAP_BUCKETS && g >= (gap << (i + 1)))
        i++;
    return i;
}

trace_t *trace_new(const trace_opts_t *o) {
    if (!o || o->n_layers <= 0 || o->n_heads <= 0 || o->max_pos <= 0 || o->block_tokens <= 0 ||
        !(o->top_p > 0.0f && o->top_p <= 1.0f) || o->gap <= 0)
        return NULL;
    trace_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->o = *o;
    size_t P = (size_t)o->max_pos;
    t->max_blocks = (o->max_pos + o->block_tokens - 1) / o->block_tokens;
    size_t B = (size_t)t->max_blocks;
    size_t nh = (size_t)o->n_layers * (size_t)o->n_heads;
    t->heads = calloc(nh, sizeof *t->heads);
    t->layers = calloc((size_t)o->n_layers, sizeof *t->layers);
    t->act = malloc(P);
    t->bact = malloc(B);
    t->bunion = malloc(B);
    t->bmass = malloc(B * sizeof(float));
    t->scratch = malloc(P * sizeof(int));
    int ok = t->heads && t->layers && t->act && t->bact && t->bunion && t->bmass && t->scratch;
    for (size_t i = 0; ok && i < nh; i++) {
        trace_head_t *h = &t->heads[i];
        h->last = malloc(P * sizeof(int32_t));
        h->revived = calloc(P, 1);
        h->act_tok = malloc(P * sizeof(int32_t));
        h->act_blk = malloc(P * sizeof(int32_t));
        ok = h->last && h->revived && h->act_tok && h->act_blk;
        if (ok)
            memset(h->last, 0xff, P * sizeof(int32_t)); /* -1 */
        h->max_gap_token = -1;
    }
    for (int l = 0; ok && l < o->n_layers; l++) {
        trace_layer_t *L = &t->layers[l];
        L->row_pos = malloc(P * sizeof(int32_t));
        L->union_blk = malloc(P * sizeof(int32_t));
        L->blk_last = malloc(B * sizeof(int32_t));
        L->blk_revived = calloc(B, 1);
        ok = L->row_pos && L->union_blk && L->blk_last && L->blk_revived;
        if (ok)
            memset(L->blk_last, 0xff, B * sizeof(int32_t));
    }
    if (!ok) {
        trace_free(t);
        return NULL;
    }
    return t;
}

void trace_free(trace_t *t) {
    if (!t)
        return;
    if (t->heads)
        for (int i = 0; i < t->o.n_layers * t->o.n_heads; i++) {
            free(t->heads[i].last);
            free(t->heads[i].revived);
            free(t->heads[i].act_tok);
            free(t->heads[i].act_blk);
        }
    if (t->layers)
        for (int l = 0; l < t->o.n_layers; l++) {
            free(t->layers[l].row_pos);
            free(t->layers[l].union_blk);
            free(t->layers[l].blk_last);
            free(t->layers[l].blk_revived);
        }
    free(t->heads);
    free(t->layers);
    free(t->act);
    free(t->bact);
    free(t->bunion);
    free(t->bmass);
    free(t->scratch);
    free(t);
}

/* One head's row of n = pos + 1 probabilities at step pos. */
static void head_row(trace_t *t, trace_head_t *h, int row, int pos, const float *p) {
    const int n = pos + 1, bt = t->o.block_tokens, nb = (n + bt - 1) / bt, gap = t->o.gap;
    double ent = 0.0;
    for (int i = 0; i < n; i++)
        if (p[i] > 0.0f)
            ent -= (double)p[i] * log((double)p[i]);
    h->ent_sum += ent;
    h->sink_sum += p[0];
    h->act_tok[row] = summary_top_p_set(p, n, t->o.top_p, t->act, t->scratch);
    for (int i = 0; i < n; i++) {
        if (!t->act[i])
            continue;
        int32_t last = h->last[i];
        if (last >= 0) {
            int idle = pos - last - 1;
            if (idle > h->max_gap) {
                h->max_gap = idle;
                h->max_gap_token = i;
            }
            if (idle >= gap) {
                h->revivals++;
                h->gap_hist[gap_bucket(gap, idle)]++;
                if (!h->revived[i]) {
                    h->revived[i] = 1;
                    h->tokens_revived++;
                }
            }
        }
        h->last[i] = pos;
    }
    for (int b = 0; b < nb; b++) {
        float s = 0.0f;
        int e = (b + 1) * bt < n ? (b + 1) * bt : n;
        for (int i = b * bt; i < e; i++)
            s += p[i];
        t->bmass[b] = s;
    }
    h->act_blk[row] = summary_top_p_set(t->bmass, nb, t->o.top_p, t->bact, t->scratch);
    for (int b = 0; b < nb; b++)
        t->bunion[b] |= t->bact[b];
}

int trace_row(trace_t *t, int layer, int pos, const float *probs) {
    if (!t || layer < 0 || layer >= t->o.n_layers || pos < 0 || pos >= t->o.max_pos || !probs)
        return -1;
    trace_layer_t *L = &t->layers[layer];
    if (L->rows > 0 && pos <= L->row_pos[L->rows - 1])
        return -1;
    const int n = pos + 1, nb = (n + t->o.block_tokens - 1) / t->o.block_tokens;
    const int row = L->rows;
    memset(t->bunion, 0, (size_t)nb);
    for (int hd = 0; hd < t->o.n_heads; hd++)
        head_row(t, &t->heads[layer * t->o.n_heads + hd], row, pos, probs + (size_t)hd * n);
    int cnt = 0;
    for (int b = 0; b < nb; b++) {
        if (!t->bunion[b])
            continue;
        cnt++;
        int32_t last = L->blk_last[b];
        if (last >= 0) {
            int idle = pos - last - 1;
            if (idle > L->max_block_gap)
                L->max_block_gap = idle;
            if (idle >= t->o.gap) {
                L->block_revivals++;
                if (!L->blk_revived[b]) {
                    L->blk_revived[b] = 1;
                    L->blocks_revived++;
                }
            }
        }
        L->blk_last[b] = pos;
    }
    L->union_blk[row] = cnt;
    L->row_pos[row] = pos;
    L->rows++;
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (sorted in place); 0 when n == 0. */
static double median(double *v, int n) {
    if (n <= 0)
        return 0.0;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int trace_head_result(const trace_t *t, int layer, int head, trace_head_res_t *r) {
    if (!t || !r || layer < 0 || layer >= t->o.n_layers || head < 0 || head >= t->o.n_heads)
        return -1;
    const trace_layer_t *L = &t->layers[layer];
    const trace_head_t *h = &t->heads[layer * t->o.n_heads + head];
    memset(r, 0, sizeof *r);
    r->rows = L->rows;
    r->tokens_revived = h->tokens_revived;
    r->revivals = h->revivals;
    r->max_gap = h->max_gap;
    r->max_gap_token = h->max_gap_token;
    memcpy(r->gap_hist, h->gap_hist, sizeof r->gap_hist);
    if (L->rows == 0)
        return 0;
    double *v = malloc(sizeof(double) * (size_t)L->rows);
    if (!v)
        return -1;
    const int bt = t->o.block_tokens;
    double sum = 0.0;
    for (int i = 0; i < L->rows; i++) {
        v[i] = h->act_tok[i];
        sum += v[i];
    }
    r->active_tokens_mean = sum / L->rows;
    r->active_tokens_median = median(v, L->rows);
    for (int i = 0; i < L->rows; i++)
        v[i] = (double)h->act_tok[i] / (L->row_pos[i] + 1);
    r->active_token_frac_median = median(v, L->rows);
    for (int i = 0; i < L->rows; i++)
        v[i] = h->act_blk[i];
    r->active_blocks_median = median(v, L->rows);
    for (int i = 0; i < L->rows; i++)
        v[i] = (double)h->act_blk[i] / ((L->row_pos[i] + bt) / bt);
    r->active_block_frac_median = median(v, L->rows);
    r->entropy_mean = h->ent_sum / L->rows;
    r->sink_mass_mean = h->sink_sum / L->rows;
    free(v);
    return 0;
}

int trace_layer_result(const trace_t *t, int layer, trace_layer_res_t *r) {
    if (!t || !r || layer < 0 || layer >= t->o.n_layers)
        return -1;
    const trace_layer_t *L = &t->layers[layer];
    memset(r, 0, sizeof *r);
    r->rows = L->rows;
    r->blocks_revived = L->blocks_revived;
    r->block_revivals = L->block_revivals;
    r->max_block_gap = L->max_block_gap;
    const int nh = t->o.n_heads, bt = t->o.block_tokens;
    int n = L->rows > nh ? L->rows : nh;
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!v)
        return -1;
    for (int hd = 0; hd < nh; hd++) {
        trace_head_res_t hr;
        if (trace_head_result(t, layer, hd, &hr) != 0) {
            free(v);
            return -1;
        }
        v[hd] = hr.active_block_frac_median;
        r->heads_with_revivals += hr.tokens_revived > 0;
    }
    r->head_block_frac_median = L->rows ? median(v, nh) : 0.0;
    for (int i = 0; i < L->rows; i++)
        v[i] = L->union_blk[i];
    r->union_blocks_median = median(v, L->rows);
    for (int i = 0; i < L->rows; i++)
        v[i] = (double)L->union_blk[i] / ((L->row_pos[i] + bt) / bt);
    r->union_block_frac_median = median(v, L->rows);
    free(v);
    return 0;
}

int trace_series(const trace_t *t, int layer, int *pos, double *block_frac, double *tokens) {
    if (!t || layer < 0 || layer >= t->o.n_layers)
        return 0;
    const trace_layer_t *L = &t->layers[layer];
    const int nh = t->o.n_heads, bt = t->o.block_tokens;
    for (int i = 0; i < L->rows; i++) {
        double bf = 0.0, tk = 0.0;
        for (int hd = 0; hd < nh; hd++) {
            const trace_head_t *h = &t->heads[layer * nh + hd];
            bf += (double)h->act_blk[i] / ((L->row_pos[i] + bt) / bt);
            tk += h->act_tok[i];
        }
        if (pos)
            pos[i] = L->row_pos[i];
        if (block_frac)
            block_frac[i] = bf / nh;
        if (tokens)
            tokens[i] = tk / nh;
    }
    return L->rows;
}

int trace_summary(const trace_t *t, double *frac, int *with_rev, int *heads) {
    const int nl = t->o.n_layers, nh = t->o.n_heads, l0 = nl > 1 ? 1 : 0;
    double *v = malloc(sizeof(double) * (size_t)(nl * nh));
    if (!v)
        return -1;
    int n = 0, wr = 0;
    for (int l = l0; l < nl; l++)
        for (int h = 0; h < nh; h++) {
            trace_head_res_t hr;
            if (trace_head_result(t, l, h, &hr) != 0) {
                free(v);
                return -1;
            }
            v[n++] = hr.active_block_frac_median;
            wr += hr.tokens_revived > 0;
        }
    *frac = median(v, n);
    *with_rev = wr;
    *heads = n;
    free(v);
    return 0;
}
