/* sampler.h - next-token selection from logits: greedy, temperature, top-k,
 * top-p (nucleus), with a private deterministic PRNG (xoshiro256**, seeded
 * through splitmix64): the same seed and logits give the same tokens on every
 * machine and thread count. */
#ifndef KVTIER_SAMPLER_H
#define KVTIER_SAMPLER_H

#include <stdint.h>

typedef struct {
    float temperature; /* <= 0: greedy (argmax) */
    int top_k;         /* <= 0: off; 1 = greedy */
    float top_p;       /* (0, 1); >= 1 or <= 0: off */
    uint64_t seed;
} sampler_opts_t;

typedef struct sampler sampler_t;

/* Fills o with the defaults: greedy, top_k 0, top_p 1, seed 0. */
void sampler_defaults(sampler_opts_t *o);

/* Checks o: temperature finite and >= 0, top_p finite in [0, 1], top_k >= 0.
 * Returns 0, or -1 with a message in err. */
int sampler_validate(const sampler_opts_t *o, char *err, size_t errlen);

/* Creates a sampler for a vocabulary of n_vocab logits (options copied).
 * Returns NULL on bad arguments or allocation failure. */
sampler_t *sampler_new(int n_vocab, const sampler_opts_t *o);

void sampler_free(sampler_t *s);

/* Picks the next token from logits[n_vocab] (not modified). Greedy when
 * temperature <= 0 or top_k == 1. Otherwise softmax(logits / temperature)
 * restricted to the top_k largest and then to the smallest prefix (by
 * descending probability, ties by lower id) whose mass reaches top_p, sampled
 * with the PRNG. Returns the token id. */
int sampler_sample(sampler_t *s, const float *logits);

/* Index of the largest value of x[n]; ties go to the lowest index; NaNs are
 * skipped (0 when all are NaN). */
int sampler_argmax(const float *x, int n);

/* Next uniform float in [0, 1) of the sampler's PRNG (exposed for tests). */
float sampler_uniform(sampler_t *s);

#endif
