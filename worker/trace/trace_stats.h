/* trace_stats.h - attention statistics of a generation, per layer and query
 * head: the yardstick for choosing a hot budget (`kvtier-worker trace`).
 *
 * Pure bookkeeping, no I/O. The caller feeds one attention row per observed
 * query position and layer: the softmax probabilities of every query head
 * over positions 0..pos. Rows must come in increasing pos, one per position
 * (a "step" is a position; the revival gaps count positions). For each head:
 *   active set (tokens)  smallest set of positions holding top_p of the row's
 *                        mass (summary_top_p_set);
 *   active set (blocks)  the same over per-block masses (block_tokens
 *                        positions per block: what the KV cache tiers);
 *   entropy              -sum p ln p (nats);  sink mass: p[0];
 *   revivals             the study of the seed notebook ("How many tokens are
 *                        revived?"): for each token, the idle gaps between the
 *                        steps in which it is in the head's active set; a
 *                        revival is an idle gap >= gap steps.
 * Per layer, a block is active when it is active for at least one head (as the
 * tiering summaries count it); block revivals are counted the same way.
 */
#ifndef KVTIER_TRACE_STATS_H
#define KVTIER_TRACE_STATS_H

#include <stdint.h>

#define TRACE_GAP_BUCKETS 5 /* idle gap in [g,2g) [2g,4g) [4g,8g) [8g,16g) [16g,inf) */

typedef struct {
    int n_layers, n_heads;
    int max_pos;      /* rows have pos < max_pos */
    int block_tokens; /* > 0 */
    float top_p;      /* (0, 1] */
    int gap;          /* idle steps that make a revival, > 0 */
} trace_opts_t;

/* Per head result. Medians are over the observed rows. */
typedef struct {
    int rows;
    double active_tokens_median, active_tokens_mean;
    double active_token_frac_median; /* |active tokens| / (pos + 1) */
    double active_blocks_median;
    double active_block_frac_median; /* |active blocks| / blocks(pos) */
    double entropy_mean, sink_mass_mean;
    int tokens_revived; /* distinct tokens with at least one revival */
    int64_t revivals;   /* revival events (idle gap >= gap) */
    int max_gap;        /* largest idle gap of any token (0: none) */
    int max_gap_token;  /* the token of that gap (-1: none) */
    int64_t gap_hist[TRACE_GAP_BUCKETS];
} trace_head_res_t;

/* Per layer result (union over heads). */
typedef struct {
    int rows;
    double union_blocks_median; /* blocks active for >= 1 head */
    double union_block_frac_median;
    double head_block_frac_median; /* median over heads of active_block_frac_median */
    int heads_with_revivals;       /* heads whose tokens_revived > 0 */
    int blocks_revived;            /* distinct blocks with a union-level revival */
    int64_t block_revivals;
    int max_block_gap;
} trace_layer_res_t;

typedef struct trace trace_t;

/* Creates a trace for o (copied). NULL on bad options or allocation failure. */
trace_t *trace_new(const trace_opts_t *o);

/* Frees t. NULL is a no-op. */
void trace_free(trace_t *t);

/* Records the row of position pos in layer: probs [n_heads][pos + 1],
 * contiguous by head. Rows of a layer must have increasing pos < max_pos.
 * Returns 0, or -1 (bad layer / pos out of order or range; nothing recorded). */
int trace_row(trace_t *t, int layer, int pos, const float *probs);

/* Fills *r for (layer, head). Returns 0 or -1 (bad indices). */
int trace_head_result(const trace_t *t, int layer, int head, trace_head_res_t *r);

/* Fills *r for layer. Returns 0 or -1. */
int trace_layer_result(const trace_t *t, int layer, trace_layer_res_t *r);

/* The yardstick over layers >= 1 (all layers when there is one): the median
 * over their heads of active_block_frac_median into *frac, the heads with at
 * least one revived token into *with_rev, the heads counted into *heads.
 * Returns 0 or -1 (allocation failure). */
int trace_summary(const trace_t *t, double *frac, int *with_rev, int *heads);

/* Row series for plots: pos of row i, and the mean over heads of the active
 * block fraction and active token count of row i of layer. Returns the number
 * of rows of the layer (0 when none or bad layer); the out arrays (may be NULL)
 * must hold that many entries. */
int trace_series(const trace_t *t, int layer, int *pos, double *block_frac, double *tokens);

/* Lower bound of gap bucket i (in steps) for gap g: g << i. */
int trace_gap_bucket_lo(int gap, int i);

#endif
