/* summary.h - attention summaries: which KV blocks the attention used.
 *
 * Pure bookkeeping, no I/O. The KV cache (kvcache_attend) feeds one record per
 * observed query row and layer: for every query head the softmax mass of each
 * logical block; the active set of a head is the smallest set of blocks that
 * holds top_p of its mass (summary_top_p_set); a block is active for the row
 * when it is active for at least one head. The summary accumulates, per
 * (layer, block), over a window of W steps (a "step" is the position of the
 * observed query row):
 *   last_active   the last step the block was active (never reset),
 *   win_count     active steps in the current window,
 *   peak_mass     the largest mass of any head in the window,
 *   cum_mass      attention mass summed over all heads and observed rows since
 *                 the block existed (H2O's accumulated score; never reset),
 *   recalled / locally_demoted  flags set by the cache during the window.
 * and per layer the active-set size (union over heads) of the last row, the
 * window's maximum and its sum (mean = sum / win_steps).
 *
 * Decode: every row is observed. Prefill (nq > 1 rows in one attend call):
 * only the last W rows of the call are observed for the active sets (SnapKV
 * observation window); cum_mass takes every row.
 */
#ifndef KVTIER_SUMMARY_H
#define KVTIER_SUMMARY_H

#include <stddef.h>
#include <stdint.h>

#define SUMMARY_DEFAULT_TOP_P 0.95f
#define SUMMARY_DEFAULT_WINDOW 16

/* Per (layer, block) state. */
typedef struct {
    int32_t last_active; /* step of last activity; at creation the block's first position */
    int32_t win_count;   /* active steps in the current window */
    float peak_mass;     /* max over heads and window rows of the block's mass, [0,1] */
    float cum_mass;      /* sum over heads and observed rows of the block's mass */
    uint8_t recalled;    /* put back (fetched) during the window */
    uint8_t demoted;     /* taken out or dropped by the worker during the window */
} summary_block_t;

/* Per layer state. */
typedef struct {
    int n_blocks;            /* blocks known (grows with the sequence) */
    int cap;                 /* allocated entries */
    summary_block_t *blocks; /* [cap], first n_blocks valid */
    int32_t cur_step;        /* last observed step (-1 before any) */
    int32_t win_steps;       /* observed rows in the current window */
    int32_t last_active_n;   /* active-set size (union over heads) of the last row */
    int32_t win_active_max;  /* max active-set size in the window */
    int64_t win_active_sum;  /* sum of active-set sizes in the window */
} summary_layer_t;

typedef struct summary {
    int n_layers;
    float top_p;             /* (0, 1]; default 0.95 */
    int window;              /* W, default 16 */
    int32_t win_start;       /* first step of the current window (-1: none yet) */
    summary_layer_t *layers; /* [n_layers] */
} summary_t;

/* One (layer, block) entry for iteration. */
typedef struct {
    int layer, block;
    float peak_mass;
    int32_t last_active;
    int32_t win_count;
    int active; /* win_count > 0 */
    float cum_mass;
    int recalled, demoted;
} summary_entry_t;

/* Creates a summary for n_layers layers. top_p <= 0 or > 1 -> default 0.95;
 * window <= 0 -> 16. Returns NULL on allocation failure. Free with summary_free. */
summary_t *summary_new(int n_layers, float top_p, int window);

/* Frees s. NULL is a no-op. */
void summary_free(summary_t *s);

/* Makes layer know blocks [0, n_blocks): new blocks get last_active =
 * first_step_of_new(block) = block * block_tokens, zero counts. Returns 0 or
 * -1 (allocation failure or bad layer; nothing changed). */
int summary_ensure_blocks(summary_t *s, int layer, int n_blocks, int block_tokens);

/* Selects the smallest set of entries of mass[0..n) whose sum is >= top_p *
 * total (ties broken towards lower index), in expected O(n) (quickselect, no
 * full sort). Writes active[i] = 1 for selected, 0 otherwise, and returns the
 * set size (0 when the total is 0). scratch must hold n ints. Entries < 0 are
 * treated as 0. */
int summary_top_p_set(const float *mass, int n, float top_p, uint8_t *active, int *scratch);

/* Records one observed row at `step` for `layer`: active[b] (union over heads),
 * peak[b] (max mass over heads) and sum[b] (mass summed over heads) for b in
 * [0, n_blocks); n_active = number of set active[b]. Blocks must be known
 * (summary_ensure_blocks). sum may be NULL (cum_mass then untouched). */
void summary_record_row(summary_t *s, int layer, int step, int n_blocks, const uint8_t *active,
                        const float *peak, const float *sum, int n_active);

/* Adds mass sum[b] to cum_mass only (rows outside the observation window). */
void summary_add_cum(summary_t *s, int layer, int n_blocks, const float *sum);

/* Flags a block as recalled / demoted in the current window (no-op if unknown). */
void summary_mark_recalled(summary_t *s, int layer, int block);
void summary_mark_demoted(summary_t *s, int layer, int block);

/* Starts a new window: clears win_count, peak_mass, recalled, demoted and the
 * per-layer window counters; last_active and cum_mass are kept. */
void summary_reset_window(summary_t *s);

/* Observed rows in the current window, max over layers (a window is full when
 * this reaches s->window). */
int summary_window_steps(const summary_t *s);

/* Borrowed view of one layer's blocks (NULL and *n = 0 for a bad layer). */
const summary_block_t *summary_layer_blocks(const summary_t *s, int layer, int *n_blocks);

/* Iteration over every (layer, block): start with *cursor = 0; each call fills
 * *e and returns 1, or returns 0 at the end. With only_active, skips entries
 * whose win_count is 0 and that are not recalled/demoted. */
int summary_next(const summary_t *s, int64_t *cursor, int only_active, summary_entry_t *e);

#endif
