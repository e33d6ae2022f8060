/* pipe_stage.h - a rank > 0 of a layer-range pipeline (`kvtier-worker stage`).
 *
 * Loops over the messages of its ring (pipe_wire.h): receives from the
 * previous rank, runs its layers [l0, l1) on the hidden states with its own
 * engine and KV cache (holding only its layers), forwards to the next rank;
 * the last rank sends the final hidden states back to rank 0. Its sequence
 * lifecycle follows the driver's: FWD at position 0 opens a sequence (and
 * closes the one before), CLOSE ends it, BYE ends the process.
 *
 * With a tier (embedded or a kvtierd address) the stage tiers its own layers
 * through the same tiering driver as `serve` (tiering.h, exact recall): a
 * sequence of its own at the tier per generation, the hooks run where a
 * single process runs them (each chunk's layers, after the prompt, after
 * each decode step), so the output stays exact.
 *
 * A failure while running a chunk (KV cache, tier hook) is sent on as ERROR
 * naming this rank and its layers; the stage then waits for the next
 * sequence. A broken ring (the previous rank closed or sent a bad header)
 * is reported downstream as ERROR, then the stage exits.
 */
#ifndef KVTIER_PIPE_STAGE_H
#define KVTIER_PIPE_STAGE_H

#include <stddef.h>

#include "pipe_conf.h"

typedef struct {
    pipe_conf_t conf;
    const qwen3_model_t *model; /* the whole checkpoint (borrowed) */
    int threads;                /* compute threads (0 = online CPUs) */
    /* tiering of this stage's layers; tier NULL = every block stays hot */
    const char *tier;          /* "embedded" or a kvtierd HOST:PORT */
    const char *tier_data_dir; /* embedded: RocksDB directory */
    const char *tenant;        /* tenant of the stage's tier sequences (NULL = "default") */
    int hot_blocks;            /* hot budget in blocks per layer (tier only) */
    float tau;                 /* revival margin (<= 0: ln 1000) */
    int quiet;                 /* no per-sequence line on stderr */
} pipe_stage_opts;

/* Runs the stage until BYE (returns 0) or a broken ring / setup failure
 * (returns -1 with a message in err). */
int pipe_stage_run(const pipe_stage_opts *o, char *err, size_t errlen);

#endif
