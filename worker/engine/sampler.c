/* sampler.c - greedy / temperature / top-k / top-p sampling, xoshiro256**. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "sampler.h"

typedef struct {
    float p;
    int id;
} sp_cand;

struct sampler {
    int n;
    sampler_opts_t o;
    uint64_t st[4]; /* xoshiro256** state */
    sp_cand *cand;  /* [n] */
};

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

void sampler_defaults(sampler_opts_t *o) {
    o->temperature = 0.0f;
    o->top_k = 0;
    o->top_p = 1.0f;
    o->seed = 0;
}

int sampler_validate(const sampler_opts_t *o, char *err, size_t errlen) {
    if (!isfinite(o->temperature) || o->temperature < 0) {
        snprintf(err, errlen, "temperature must be a finite number >= 0 (got %g)",
                 (double)o->temperature);
        return -1;
    }
    if (!isfinite(o->top_p) || o->top_p < 0 || o->top_p > 1) {
        snprintf(err, errlen, "top-p must be in [0, 1] (got %g)", (double)o->top_p);
        return -1;
    }
    if (o->top_k < 0) {
        snprintf(err, errlen, "top-k must be >= 0 (got %d)", o->top_k);
        return -1;
    }
    return 0;
}

sampler_t *sampler_new(int n_vocab, const sampler_opts_t *o) {
    if (n_vocab <= 0 || !o)
        return NULL;
    sampler_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->n = n_vocab;
    s->o = *o;
    s->cand = malloc(sizeof(sp_cand) * (size_t)n_vocab);
    if (!s->cand) {
        free(s);
        return NULL;
    }
    uint64_t x = o->seed;
    for (int i = 0; i < 4; i++)
        s->st[i] = splitmix64(&x);
    return s;
}

void sampler_free(sampler_t *s) {
    if (!s)
        return;
    free(s->cand);
    free(s);
}

float sampler_uniform(sampler_t *s) {
    return (float)(xoshiro_next(s->st) >> 40) * 0x1p-24f;
}

int sampler_argmax(const float *x, int n) {
    int best = -1;
    for (int i = 0; i < n; i++)
        if (!isnan(x[i]) && (best < 0 || x[i] > x[best]))
            best = i;
    return best < 0 ? 0 : best;
}

/* Descending probability, ties by lower id: a total order, so qsort's
 * instability cannot change the result. */
static int cand_cmp(const void *a, const void *b) {
    const sp_cand *x = a, *y = b;
    if (x->p != y->p)
        return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Quickselect: reorders c[0..n) so that the k first (k < n) are the k
 * smallest under cand_cmp (in any order). Deterministic median-of-3 pivot. */
static void cand_select(sp_cand *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (cand_cmp(&c[mid], &c[lo]) < 0) {
            sp_cand t = c[mid];
            c[mid] = c[lo];
            c[lo] = t;
        }
        if (cand_cmp(&c[hi], &c[lo]) < 0) {
            sp_cand t = c[hi];
            c[hi] = c[lo];
            c[lo] = t;
        }
        if (cand_cmp(&c[hi], &c[mid]) < 0) {
            sp_cand t = c[hi];
            c[hi] = c[mid];
            c[mid] = t;
        }
        sp_cand piv = c[mid];
        int i = lo, j = hi;
        while (i <= j) {
            while (cand_cmp(&c[i], &piv) < 0)
                i++;
            while (cand_cmp(&piv, &c[j]) < 0)
                j--;
            if (i <= j) {
                sp_cand t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            return;
    }
}

int sampler_sample(sampler_t *s, const float *logits) {
    const sampler_opts_t *o = &s->o;
    if (o->temperature <= 0 || o->top_k == 1)
        return sampler_argmax(logits, s->n);
    int amax = sampler_argmax(logits, s->n);
    float mx = logits[amax], inv_t = 1.0f / o->temperature;
    /* unnormalized probabilities exp((l - max) / T) */
    double total = 0;
    for (int i = 0; i < s->n; i++) {
        float p = isnan(logits[i]) ? 0.0f : expf((logits[i] - mx) * inv_t);
        s->cand[i].p = p;
        s->cand[i].id = i;
        total += p;
    }
    int n = s->n;
    int use_p = o->top_p > 0 && o->top_p < 1;
    if (use_p && !(o->top_k > 0 && o->top_k < n)) {
        /* nucleus without top-k: candidates below (1-p)/(n-1) of the total
         * can never be inside the nucleus (llama2.c's cutoff), drop them
         * before sorting */
        double cutoff = (1.0 - o->top_p) / (double)(n - 1) * total;
        int m = 0;
        for (int i = 0; i < n; i++)
            if (s->cand[i].p >= cutoff)
                s->cand[m++] = s->cand[i];
        n = m;
    }
    if ((o->top_k > 0 && o->top_k < n) || use_p) {
        if (o->top_k > 0 && o->top_k < n) {
            cand_select(s->cand, n, o->top_k); /* the k best first, O(n) */
            n = o->top_k;
        }
        qsort(s->cand, (size_t)n, sizeof *s->cand, cand_cmp);
        total = 0;
        for (int i = 0; i < n; i++)
            total += s->cand[i].p;
        if (use_p) {
            double acc = 0, lim = o->top_p * total;
            for (int i = 0; i < n; i++) {
                acc += s->cand[i].p;
                if (acc >= lim) {
                    n = i + 1;
                    break;
                }
            }
            total = 0;
            for (int i = 0; i < n; i++)
                total += s->cand[i].p;
        }
    }
    double r = (double)sampler_uniform(s) * total, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += s->cand[i].p;
        if (r < acc)
            return s->cand[i].id;
    }
    return s->cand[n - 1].id; /* rounding at the very end of the range */
}
