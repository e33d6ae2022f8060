/* pipe_driver.h - rank 0 of a layer-range pipeline: the process that runs
 * the generation loop (engine_generate: sampling, stop conditions, hooks,
 * the `run` front end unchanged), embeds the tokens, runs its own layers and
 * hands each chunk's hidden states around the ring (pipe_wire.h); the last
 * rank's final hidden states come back to it for the final norm + lm_head.
 *
 * Prompt chunks whose logits nobody reads are kept in flight on a buffered
 * transport (sockets; at most 8): the stages work on them while rank 0 runs
 * the next ones; their replies are read before the prompt's last chunk.
 *
 * Every wait on another rank is bounded (pipe_conf_t.timeout_ms): a stage
 * that died, hangs, or sends something wrong fails the generation with a
 * message naming the rank, never a hang.
 */
#ifndef KVTIER_PIPE_DRIVER_H
#define KVTIER_PIPE_DRIVER_H

#include <stddef.h>

#include "engine.h"
#include "pipe_conf.h"

typedef struct pipe_driver pipe_driver_t;

/* Sets up the ring (pipe_conf_connect) and checks it with a HELLO round:
 * every rank runs the same model (shapes and fingerprint of `full`, the
 * whole checkpoint), the ranks' layer ranges follow each other from 0 to the
 * last layer, world sizes agree. max_chunk is the engine's prefill chunk
 * (stages run chunks as they come), kv_dtype the KV storage the stages use.
 * Returns NULL with a message in err (naming the rank at fault). */
pipe_driver_t *pipe_driver_new(const pipe_conf_t *c, const qwen3_model_t *full, int max_chunk,
                               dtype_t kv_dtype, char *err, size_t errlen);

/* Makes e (an engine over the view of layers [0, l1) of this rank) hand its
 * hidden states to the pipeline: installs the forward pass's tail. d must
 * outlive e's generations. */
void pipe_driver_attach(pipe_driver_t *d, engine_t *e);

/* After engine_generate: ends the sequence on every stage (each frees its
 * KV and closes its tier sequence) and waits for the acknowledgement. A
 * no-op when no sequence is open. Returns 0, or -1 with a message in err. */
int pipe_driver_end_seq(pipe_driver_t *d, char *err, size_t errlen);

/* Sends BYE around the ring (the stages exit), waits for it (bounded), frees
 * everything. NULL is a no-op. */
void pipe_driver_free(pipe_driver_t *d);

#endif
