/* tiering.h - the worker side of the tiering loop for one sequence.
 *
 * Plugs into the engine's hooks (engine.h) and moves KV blocks between the hot
 * pool (kvcache) and the tier service (tierlink: embedded or remote):
 *
 *   before the attention of each layer (decode):
 *     exact mode     revival check of this step's query against the digests
 *                    of demoted blocks; candidates are fetched and put back
 *                    before the attention reads the cache;
 *     prefetch mode  the candidates the previous step's attention recorded
 *                    are fetched (one step late, no check on the hot path);
 *   after each step: hold every layer to its hot budget (demote the locally
 *                    coldest unprotected blocks: Put, then free the slot);
 *   every W steps:   one summary for all layers (active blocks with peak mass,
 *                    recalled blocks) -> decisions: DEMOTE_HOST (Put + free),
 *                    DROP (forget), PREFETCH (fetch back if the budget allows).
 *   prefill:         each chunk's layers are held to the budget before the
 *                    chunk's attention, so a prompt larger than the hot budget
 *                    is served; a summary follows the prompt.
 *
 * Nothing is ever dropped because it could not be placed: when the service
 * fails (TIER_EIO) the block stays hot, the run is marked degraded, and calls
 * resume after a backoff (re-opening the sequence). A demoted block the
 * service no longer has (NOT_FOUND, e.g. RAM-only blocks after a restart) is
 * dropped locally: it is gone, and said so in the statistics.
 *
 * A block recalled and demoted again before the service heard of the recall
 * is not Put twice: the service still holds the identical bytes. The next
 * summary lists it as `revived` (one revival, tier unchanged), so the policy
 * learns which blocks come back even when they never stay hot for a window.
 */
#ifndef KVTIER_TIERING_H
#define KVTIER_TIERING_H

#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "tierlink.h"

typedef enum { TIERING_EXACT = 0, TIERING_PREFETCH = 1 } tiering_mode_t;

typedef struct {
    tierlink_t *link;      /* borrowed; must outlive the tiering */
    uint64_t seq_id;       /* service-side sequence id (!= 0) */
    tiering_mode_t mode;   /* EXACT (default) or PREFETCH */
    float tau;             /* revival margin: what stays out holds <= e^-tau of the hot mass; <= 0 = ln(1000) */
    int hot_blocks;        /* hot budget in blocks per layer (>= sink + recent + 1) */
    int sink_blocks;       /* always hot (1) */
    int recent_blocks;     /* last R blocks always hot (4) */
    int window;            /* W steps per summary (16) */
    int max_recall;        /* most blocks fetched per layer and step (64) */
    policy_params params;  /* sent with OpenSequence (policy_params_init defaults) */
} tiering_opts_t;

typedef struct {
    uint64_t demoted;          /* blocks Put to the service (incl. re-demotions) */
    uint64_t demoted_host, demoted_ssd; /* by the tier they landed in */
    uint64_t recalled;         /* blocks fetched back into the hot pool */
    uint64_t recall_bytes;     /* payload bytes fetched */
    uint64_t dropped;          /* blocks forgotten (service DROP or lost) */
    uint64_t lost;             /* demoted blocks the service no longer had */
    uint64_t summaries;        /* summaries sent */
    uint64_t put_bytes;        /* payload bytes Put */
    double recall_ms_p50, recall_ms_p99; /* fetch latency */
    int degraded;              /* the service failed at least once */
    char degraded_reason[256];
} tiering_stats_t;

typedef struct tiering tiering_t;

/* Fills *o with defaults (link NULL, seq_id 0: the caller sets them). */
void tiering_opts_defaults(tiering_opts_t *o);

/* Creates the driver for one generation. Opens nothing yet: the sequence is
 * opened on the service when the engine starts (first hook). Returns NULL on
 * bad options or allocation failure, with a message in err. */
tiering_t *tiering_new(const tiering_opts_t *o, char *err, size_t errlen);

/* Frees the driver (does not close the service sequence: see tiering_finish). */
void tiering_free(tiering_t *t);

/* Installs the driver's hooks into *g (before_attention, after_prefill,
 * after_step) and turns on what it needs (stats, no_window_reset, an
 * unbounded pool: the driver holds the budget). The hooks already in *g are
 * chained: the driver calls them (with their own ud) after its own work. */
void tiering_install(tiering_t *t, engine_gen_opts_t *g);

/* After engine_generate: closes the service sequence (retain as given) and
 * fills *st. Safe to call once. */
void tiering_finish(tiering_t *t, int retain, tiering_stats_t *st);

#endif
