/* tiering.h - the worker side of the tiering loop for one sequence.
 *
 * Plugs into the engine's hooks (engine.h) and moves KV blocks between the hot
 * pool (kvcache) and the tier service through one tier session (tierlink.h):
 *
 *   before the attention of each layer (decode):
 *     exact mode     revival check of this step's query against the digests
 *                    and key sketches of demoted blocks (hot log-sum-exp);
 *                    the candidates are made readable (lent, kvcache.h) for
 *                    this attention: from the staging area when their bytes
 *                    are there, else fetched, all of the layer's misses in ONE
 *                    batch; blocks no longer candidates stop being read;
 *     prefetch mode  the candidates the previous step's attention recorded
 *                    (one step late, no check on the hot path);
 *   after the layer's attention (at the next layer's hook / after the step):
 *                    hold the layer to its hot budget with one ranking over
 *                    hot and lent blocks (last active step, then accumulated
 *                    mass; policy.h policy_hot_rank): lent blocks that rank
 *                    in are promoted (copied into the pool), hot blocks that
 *                    rank out are demoted: ONE put batch per budget pass, sent
 *                    asynchronously; the block stays readable from its bytes
 *                    until the service acknowledged it and goes back into
 *                    the pool if refused;
 *   every W steps:   one summary for all layers on the session's Summarize
 *                    stream -> decisions: DEMOTE_HOST (Put + free), DROP
 *                    (forget), PREFETCH (fetch back if the budget allows).
 *   prefill:         each chunk's layers are held to the budget before the
 *                    chunk's attention, so a prompt larger than the hot budget
 *                    is served; a summary follows the prompt.
 *
 * Staging: the bytes of demoted blocks the worker still has (acknowledged
 * puts, fetched blocks) stay in a per-layer staging area: while a layer
 * attends, every candidate of that layer; between its attentions, up to
 * `stage_blocks` per layer (most recently named first, none idle for more
 * than `linger` steps): a block that keeps being a candidate is fetched
 * once, not every step. The staging area is worker memory: the worker holds
 * at most hot_blocks + stage_blocks blocks per layer plus one layer's
 * candidates; tiering_stats_t reports the peak of pool + staging.
 *
 * Exactness: the blocks attended at each decode step are the hot ones plus
 * exactly the revival candidates, in block order, as when candidates were
 * copied back into the pool one by one: decode outputs are bit-identical to
 * that sequential implementation.
 *
 * Nothing is ever dropped because it could not be placed: when the service
 * fails (TIER_EIO) the block stays (or goes back) hot, the run is marked
 * degraded, and calls resume after a backoff (a new session re-opening the
 * sequence). A demoted block the service no longer has (NOT_FOUND, e.g.
 * RAM-only blocks after a restart) is dropped locally: it is gone, and said
 * so in the statistics.
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
    tierlink_t *link;    /* borrowed; must outlive the tiering */
    uint64_t seq_id;     /* service-side sequence id (!= 0) */
    tiering_mode_t mode; /* EXACT (default) or PREFETCH */
    float tau; /* revival margin: what stays out holds <= e^-tau of the hot mass; <= 0 = ln(1000) */
    int hot_blocks;       /* hot budget in blocks per layer (>= sink + recent + 1) */
    int sink_blocks;      /* always hot (1) */
    int recent_blocks;    /* last R blocks always hot (4) */
    int window;           /* W steps per summary (16) */
    int max_recall;       /* prefetch mode: most candidates read per layer and step (64);
                             exact mode reads every candidate */
    int stage_blocks;     /* staged blocks kept per layer between its attentions
                             (-1 = hot_blocks; 0 = refetch every step) */
    int linger;           /* steps a staged block stays after its last candidacy (8) */
    int speculate;        /* exact mode: at the start of each decode step, fetch the last
                             step's candidates of every layer that are not staged in ONE
                             call, in the background; each layer waits only for its own */
    int overlap;          /* decode: a layer's missing candidates are fetched in the
                             background while its attention reads the blocks already
                             there, then the rest (the same result, bit for bit).
                             Both 0 by default: measured on a 2-core VM they cost more
                             (thread hand-offs, every layer's candidates held at once)
                             than they hide (a fixture layer's attention is ~20 us
                             against a ~1 ms loopback fetch); serve --tier-async */
    int adaptive_budget;  /* 1: the budget (hot_blocks x layers) is split over the layers
                             by their mean active-set size, each summary window
                             (0: hot_blocks in every layer) */
    policy_params params; /* sent with OpenSequence (policy_params_init defaults) */
} tiering_opts_t;

typedef struct {
    uint64_t demoted;                   /* blocks Put to the service and acknowledged */
    uint64_t demoted_host, demoted_ssd; /* by the tier they landed in */
    uint64_t recalled;     /* demoted blocks read by an attention (per layer and step) */
    uint64_t fetched;      /* blocks fetched from the service */
    uint64_t recall_bytes; /* payload bytes fetched */
    uint64_t promoted;     /* demoted blocks that ranked back into the hot pool */
    uint64_t fetch_calls, put_calls, summary_msgs, summarize_streams, other_calls;
    /* tier session calls (tierlink.h tiersess_counts) */
    size_t stage_peak_bytes;    /* most bytes staged at once (worker memory besides the pool) */
    size_t resident_peak_bytes; /* most hot pool + staged bytes at once (KV held by the worker) */
    uint64_t dropped;           /* blocks forgotten (service DROP or lost) */
    uint64_t lost;              /* demoted blocks the service no longer had */
    uint64_t summaries;         /* summaries sent */
    uint64_t put_bytes;         /* payload bytes Put */
    double recall_ms_p50, recall_ms_p99; /* latency of one fetch batch */
    int degraded;                        /* the service failed at least once */
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

/* The block counters so far (demoted, recalled, fetched, recall_bytes, ...)
 * while the generation runs, e.g. from a hook; call counts and latency
 * percentiles are filled by tiering_finish only. */
void tiering_peek(const tiering_t *t, tiering_stats_t *st);

/* After engine_generate: closes the service sequence (retain as given) and
 * fills *st. Safe to call once. */
void tiering_finish(tiering_t *t, int retain, tiering_stats_t *st);

#endif
