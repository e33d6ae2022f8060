/* local_policy.c - worker-local eviction policies (see local_policy.h). Pure. */
#include "local_policy.h"

#include <math.h>

#include "policy.h"
#include <stdlib.h>
#include <string.h>

/* Same numeric values as kv_block_state_t (kvcache.h), kept local so the
 * policy has no dependency on the cache. */
#define LP_STATE_HOT 0
#define LP_BLOCK_TOKENS 16

static const char *const names[] = {"full", "drop", "window", "h2o"};

void local_policy_defaults(local_policy_params *p, local_policy_t kind) {
    if (!p)
        return;
    policy_params d; /* the one set of defaults (policy.h) */
    policy_params_init(&d);
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->inactive_steps = (int)d.hot_inactive_steps;
    p->top_p = (float)d.top_p;
    p->recent_blocks = (int)d.recent_blocks;
    p->sink_blocks = (int)d.sink_blocks;
}

int local_policy_parse(const char *name, local_policy_t *kind) {
    if (!name || !kind)
        return -1;
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0) {
            *kind = (local_policy_t)i;
            return 0;
        }
    return -1;
}

const char *local_policy_name(local_policy_t kind) {
    return (kind >= LP_FULL && kind <= LP_H2O) ? names[kind] : "?";
}

int local_policy_budget(const local_policy_params *p, int layer, int n_blocks) {
    if (!p)
        return INT32_MAX;
    if (p->layer_hot_blocks && layer >= 0 && layer < p->n_layer_budgets &&
        p->layer_hot_blocks[layer] > 0)
        return p->layer_hot_blocks[layer];
    if (p->hot_blocks > 0)
        return p->hot_blocks;
    if (p->hot_frac > 0.0f) {
        int b = (int)ceil((double)p->hot_frac * n_blocks);
        int floor_b = (p->sink_blocks > 0 ? p->sink_blocks : 0) +
                      (p->recent_blocks > 0 ? p->recent_blocks : 0);
        return b > floor_b ? b : floor_b;
    }
    return INT32_MAX;
}

typedef struct {
    policy_hot_key key; /* LP_DROP: policy_hot_colder; LP_H2O: cum_mass only */
    int block;
} cand_t;

/* The one ranking (policy_hot_colder), ties to the lower block. */
static int cand_cmp(const void *x, const void *y) {
    const cand_t *a = x, *b = y;
    if (policy_hot_colder(&a->key, &b->key))
        return -1;
    if (policy_hot_colder(&b->key, &a->key))
        return 1;
    return (a->block > b->block) - (a->block < b->block);
}

static int int_cmp(const void *x, const void *y) {
    int a = *(const int *)x, b = *(const int *)y;
    return (a > b) - (a < b);
}

static int32_t last_active(const local_policy_view *v, int b) {
    return v->stats ? v->stats[b].last_active : (int32_t)((int64_t)b * LP_BLOCK_TOKENS);
}

int local_policy_decide(const local_policy_params *p, const local_policy_view *v, int layer,
                        int need, int *victims, int max) {
    if (!p || !v || need < 0 || max < 0 || (max > 0 && !victims) || v->n_blocks < 0 ||
        (v->n_blocks > 0 && !v->state))
        return -1;
    if (p->kind < LP_FULL || p->kind > LP_H2O)
        return -1;
    const int n = v->n_blocks;
    if (p->kind == LP_FULL || n == 0 || max == 0)
        return 0;
    const int sink = p->sink_blocks > 0 ? p->sink_blocks : 0;
    const int R = p->recent_blocks > 0 ? p->recent_blocks : 0;
    policy_params pp; /* protection and expiry as the tiering worker has them */
    memset(&pp, 0, sizeof pp);
    pp.sink_blocks = (uint32_t)sink;
    pp.recent_blocks = (uint32_t)R;
    pp.hot_inactive_steps = (uint32_t)(p->inactive_steps > 0 ? p->inactive_steps : 50);
    const int budget = local_policy_budget(p, layer, n);
    const int64_t target = budget == INT32_MAX ? INT64_MAX : (int64_t)budget - need;

    int hot = 0;
    for (int b = 0; b < n; b++)
        hot += v->state[b] == LP_STATE_HOT;
    cand_t *c = malloc((size_t)n * sizeof *c);
    if (!c)
        return -1;
    int nc = 0, nvict = 0;
#define UNPROTECTED_HOT(b)                                                                         \
    (v->state[b] == LP_STATE_HOT && !policy_is_protected(&pp, (uint32_t)n, (uint32_t)(b)))

    if (p->kind == LP_WINDOW) {
        /* keep sink + the last `win` blocks; win = budget - need - sink, at least R */
        int64_t win = R;
        if (target != INT64_MAX && target - sink > win)
            win = target - sink;
        for (int b = sink; b < n; b++)
            if (v->state[b] == LP_STATE_HOT && (int64_t)b < (int64_t)n - win && nvict < max)
                victims[nvict++] = b;
        free(c);
        return nvict;
    }

    if (p->kind == LP_DROP) {
        for (int b = 0; b < n; b++) {
            if (!UNPROTECTED_HOT(b))
                continue;
            policy_hot_key k = {last_active(v, b), v->stats ? v->stats[b].cum_mass : 0.0f};
            if (policy_hot_expired(&pp, v->cur_step, &k)) {
                if (nvict < max)
                    victims[nvict++] = b;
                hot--;
            } else {
                c[nc].key = k;
                c[nc].block = b;
                nc++;
            }
        }
    } else { /* LP_H2O: lowest accumulated mass first */
        for (int b = 0; b < n; b++) {
            if (!UNPROTECTED_HOT(b))
                continue;
            c[nc].key = (policy_hot_key){0, v->stats ? v->stats[b].cum_mass : 0.0f};
            c[nc].block = b;
            nc++;
        }
    }
#undef UNPROTECTED_HOT
    if ((int64_t)hot > target) {
        qsort(c, (size_t)nc, sizeof *c, cand_cmp);
        for (int i = 0; i < nc && (int64_t)hot > target && nvict < max; i++) {
            victims[nvict++] = c[i].block;
            hot--;
        }
    }
    free(c);
    qsort(victims, (size_t)nvict, sizeof *victims, int_cmp);
    return nvict;
}
