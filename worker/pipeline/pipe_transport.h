/* pipe_transport.h - how the ranks of a pipeline pass messages (pipe_wire.h)
 * around their ring: each rank sends to the next rank and receives from the
 * previous one. Two implementations behind one function table:
 *
 *   socket  TCP between processes (CPU pipelines, tests in CI): the rank
 *           listens for its previous rank and connects to its next one
 *           (pipe_transport_socket.c)
 *   nccl    ncclSend / ncclRecv between GPUs, the NCCL unique id exchanged
 *           over the project's gRPC (rank 0 serves it, the others fetch it;
 *           pipe_transport_nccl.c, built when NCCL is found: KVTIER_HAVE_NCCL)
 *
 * Payloads are host memory on both (the NCCL transport stages them through
 * a device buffer). Every wait is bounded by timeout_ms (< 0: no bound; used
 * by stages idle between generations); a transport never hangs on a dead
 * peer: a closed connection, a timeout and a refused header are errors with
 * a message. A transport is used by one thread at a time.
 */
#ifndef KVTIER_PIPE_TRANSPORT_H
#define KVTIER_PIPE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "pipe_wire.h"

/* Status codes (0 = success). */
#define PIPE_OK 0
#define PIPE_EIO (-1)      /* the transport failed (socket / CUDA / NCCL error) */
#define PIPE_ETIMEOUT (-2) /* nothing within timeout_ms */
#define PIPE_ECLOSED (-3)  /* the peer closed the connection (or died) */
#define PIPE_EPROTO (-4)   /* a header was refused (pipe_hdr_decode) or too large for buf */

typedef struct pipe_transport pipe_transport_t;

typedef struct {
    const char *name; /* "socket", "nccl" */
    /* 1: a send completes without the peer receiving (kernel buffers), so
     * a rank may send again before it reads what came back (the driver keeps
     * prompt chunks in flight); 0: a send waits for the matching receive */
    int buffered;
    /* Sends h (payload_bytes set by the caller) and payload to the next rank. */
    int (*send)(pipe_transport_t *t, const pipe_hdr_t *h, const void *payload, int timeout_ms,
                char *err, size_t errlen);
    /* Receives the next message from the previous rank: header into *h,
     * payload into buf (cap bytes; a larger payload is PIPE_EPROTO). */
    int (*recv)(pipe_transport_t *t, pipe_hdr_t *h, void *buf, size_t cap, int timeout_ms,
                char *err, size_t errlen);
    void (*free)(pipe_transport_t *t);
} pipe_transport_ops;

struct pipe_transport {
    const pipe_transport_ops *ops;
};

/* Static text of a PIPE_* code. */
const char *pipe_strerror(int code);

/* Sends one message (h->payload_bytes bytes of payload). Returns PIPE_OK or
 * a PIPE_* error with a message in err. */
int pipe_send(pipe_transport_t *t, const pipe_hdr_t *h, const void *payload, int timeout_ms,
              char *err, size_t errlen);

/* Receives one message into *h and buf[cap]. Returns PIPE_OK or a PIPE_*
 * error with a message in err. */
int pipe_recv(pipe_transport_t *t, pipe_hdr_t *h, void *buf, size_t cap, int timeout_ms, char *err,
              size_t errlen);

/* Frees the transport (closes its connections). NULL is a no-op. */
void pipe_transport_free(pipe_transport_t *t);

/* ---- socket ---------------------------------------------------------- */

/* Sets up this rank's part of the ring over TCP: listens on listen_addr
 * ("host:port"), connects to next_addr (retrying until the deadline: the next
 * rank may start later), then accepts one connection from the previous rank.
 * Both within timeout_ms. Returns the transport, or NULL with a message in
 * err naming the address. */
pipe_transport_t *pipe_socket_ring(const char *listen_addr, const char *next_addr, int timeout_ms,
                                   char *err, size_t errlen);

/* A transport over two connected descriptors (taken: closed by free):
 * send_fd to the next rank, recv_fd from the previous one (may be equal).
 * For tests (a socketpair). NULL on allocation failure. */
pipe_transport_t *pipe_socket_from_fds(int send_fd, int recv_fd);

/* ---- nccl ------------------------------------------------------------ */

/* 1 when this build has the NCCL transport (KVTIER_HAVE_NCCL). */
int pipe_nccl_available(void);

/* Joins an NCCL communicator of `world` ranks as `rank` on CUDA device
 * `device` (-1: rank % visible devices). The unique id comes over gRPC:
 * rank 0 makes it and serves it at coord_addr (Pipeline/GetNcclId) until
 * every other rank fetched it; the others fetch it from coord_addr,
 * retrying until timeout_ms. Returns NULL with a message in err (no NCCL in
 * this build, no GPU, id exchange or NCCL init failed). */
pipe_transport_t *pipe_nccl_ring(int rank, int world, const char *coord_addr, int device,
                                 int timeout_ms, char *err, size_t errlen);

#endif
