/* local_policy.h - worker-local eviction policies (no service needed).
 *
 * Pure functions over a view of one (sequence, layer): block states and the
 * attention summary. They answer "which hot blocks to evict now" and never do
 * I/O; kvcache_make_room applies the answer (drops the blocks).
 *
 *   LP_FULL    never evict (the pool should then be unlimited).
 *   LP_DROP    the "recently activated" cache: evict a hot block once it was
 *              inactive for more than T steps (top_p governs what "active"
 *              means, see summary.h); when the hot budget is still exceeded,
 *              evict the longest-inactive blocks first.
 *   LP_WINDOW  StreamingLLM: sink block(s) + the most recent blocks; the
 *              window is the hot budget (or R blocks when no budget is set).
 *   LP_H2O     heavy hitters: within the budget keep sink + recent R + the
 *              blocks with the largest accumulated attention mass.
 *
 * Always protected: blocks [0, sink_blocks) and the last R blocks
 * [n_blocks - R, n_blocks). Only HOT blocks are ever returned.
 */
#ifndef KVTIER_LOCAL_POLICY_H
#define KVTIER_LOCAL_POLICY_H

#include <stdint.h>

#include "summary.h"

typedef enum { LP_FULL = 0, LP_DROP = 1, LP_WINDOW = 2, LP_H2O = 3 } local_policy_t;

typedef struct {
    local_policy_t kind;
    int inactive_steps;          /* T for LP_DROP (default 50) */
    float top_p;                 /* active-set threshold (default 0.95; used by the summary) */
    int recent_blocks;           /* R, always hot (default 4) */
    int sink_blocks;             /* always hot at the start (default 1) */
    int hot_blocks;              /* hot budget in blocks per layer; 0 = see hot_frac */
    float hot_frac;              /* budget as a fraction of the layer's blocks (0 = none) */
    const int *layer_hot_blocks; /* optional [n_layers] per-layer budgets (> 0 wins); borrowed */
    int n_layer_budgets;         /* entries in layer_hot_blocks */
} local_policy_params;

/* What a policy sees of one (sequence, layer). All borrowed. */
typedef struct {
    int n_blocks;                 /* logical blocks of the layer */
    const uint8_t *state;         /* [n_blocks] kv_block_state_t values (KV_BLOCK_HOT ...) */
    const summary_block_t *stats; /* [n_blocks] or NULL (no summary: treated as never active) */
    int32_t cur_step;             /* current step (position of the newest token) */
} local_policy_view;

/* Fills p with the defaults above for `kind` (no budget). */
void local_policy_defaults(local_policy_params *p, local_policy_t kind);

/* Parses "full", "drop", "window", "h2o". Returns 0 and sets *kind, or -1. */
int local_policy_parse(const char *name, local_policy_t *kind);

/* Static name of kind ("full", ...; "?" when out of range). */
const char *local_policy_name(local_policy_t kind);

/* The hot budget (blocks) of `layer` for a layer with n_blocks blocks:
 * layer_hot_blocks[layer] if > 0, else hot_blocks if > 0, else
 * ceil(hot_frac * n_blocks) if hot_frac > 0 (at least sink + R), else
 * INT32_MAX (unlimited). */
int local_policy_budget(const local_policy_params *p, int layer, int n_blocks);

/* Decides which HOT blocks of the view to evict now so that, afterwards, the
 * layer keeps at most budget - need hot blocks (need = slots the caller is
 * about to take, e.g. 1 for a new tail block) and, for LP_DROP, no hot
 * unprotected block inactive for more than T steps. Writes at most max block
 * indices (ascending) to victims and returns their count; returns -1 for bad
 * arguments (NULL view/params, negative need). Protected blocks are never
 * returned, so the budget may stay exceeded when it is smaller than
 * sink + R. */
int local_policy_decide(const local_policy_params *p, const local_policy_view *v, int layer,
                        int need, int *victims, int max);

#endif
