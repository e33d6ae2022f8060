/* pipe_conf.h - where a worker process sits in a layer-range pipeline: its
 * rank, the ring's size, its layers, the transport and its addresses; the
 * flags that set them (shared by `run`, the driver, and `stage`), and the
 * model view of one stage. */
#ifndef KVTIER_PIPE_CONF_H
#define KVTIER_PIPE_CONF_H

#include <stddef.h>

#include "model.h"
#include "pipe_transport.h"

typedef struct pipe_conf {
    int rank, world;         /* world 0 = no pipeline (flags not given) */
    int l0, l1;              /* this rank's layers [l0, l1) (--layers A-B: l0 = A, l1 = B + 1) */
    int layers_set;          /* --layers given */
    const char *transport;   /* "socket" (default) or "nccl" */
    const char *listen;      /* socket: where the previous rank connects; nccl: rank 0's
                                gRPC address for the NCCL id */
    const char *next;        /* socket: the next rank's --pipe-listen */
    const char *coordinator; /* nccl, ranks > 0: rank 0's --pipe-listen */
    int device;              /* nccl: CUDA device (-1 = rank % devices) */
    int timeout_ms;          /* bound on each wait of a generation (default 30000) */
    int connect_timeout_ms;  /* bound on setting the ring up (default 60000) */
} pipe_conf_t;

/* Help text of the pipeline flags (one line each, two-space indent). */
extern const char PIPE_CONF_USAGE[];

/* Defaults: no pipeline, socket transport, device -1, timeouts above. */
void pipe_conf_defaults(pipe_conf_t *c);

/* Applies one pipeline flag ("--layers", "--rank", "--world-size",
 * "--transport", "--pipe-listen", "--pipe-next", "--pipe-coordinator", "--device",
 * "--pipe-timeout-ms") with its value. Returns 1 when the flag is a
 * pipeline flag and was applied, 0 when it is not one of them, -1 when the
 * value is bad (message "PROG: ..." printed). */
int pipe_conf_set(pipe_conf_t *c, const char *prog, const char *flag, const char *val);

/* Checks the flags together and against a model of n_layers layers: rank
 * in [0, world), world >= 2, layers within the model, and the addresses the
 * transport needs. Returns 0, or -1 with a message in err. */
int pipe_conf_check(const pipe_conf_t *c, int n_layers, char *err, size_t errlen);

/* Sets up this rank's transport (socket ring or NCCL communicator) within
 * connect_timeout_ms. NULL with a message in err. */
pipe_transport_t *pipe_conf_connect(const pipe_conf_t *c, char *err, size_t errlen);

/* Fills *out with a view of m restricted to layers [l0, l1): the same
 * embedding, final norm and lm_head, cfg.n_layers = l1 - l0, layers
 * pointing into m's (borrowed: m must outlive the view; never pass the
 * view to qwen3_model_free). */
void pipe_model_view(const qwen3_model_t *m, int l0, int l1, qwen3_model_t *out);

/* A 32-bit fingerprint of a model's shape and some of its weights (the
 * stages check they run the same checkpoint). */
uint32_t pipe_model_fingerprint(const qwen3_model_t *m);

#endif
