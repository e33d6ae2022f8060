/* pipe_transport.c - the transport-independent calls (see pipe_transport.h). */
#include "pipe_transport.h"

#include <stdio.h>

const char *pipe_strerror(int code) {
    switch (code) {
    case PIPE_OK:
        return "ok";
    case PIPE_EIO:
        return "transport error";
    case PIPE_ETIMEOUT:
        return "timed out";
    case PIPE_ECLOSED:
        return "connection closed by the peer";
    case PIPE_EPROTO:
        return "protocol error";
    }
    return "unknown error";
}

int pipe_send(pipe_transport_t *t, const pipe_hdr_t *h, const void *payload, int timeout_ms,
              char *err, size_t errlen) {
    return t->ops->send(t, h, payload, timeout_ms, err, errlen);
}

int pipe_recv(pipe_transport_t *t, pipe_hdr_t *h, void *buf, size_t cap, int timeout_ms, char *err,
              size_t errlen) {
    return t->ops->recv(t, h, buf, cap, timeout_ms, err, errlen);
}

void pipe_transport_free(pipe_transport_t *t) {
    if (t)
        t->ops->free(t);
}

#ifndef KVTIER_HAVE_NCCL
int pipe_nccl_available(void) {
    return 0;
}

pipe_transport_t *pipe_nccl_ring(int rank, int world, const char *coord_addr, int device,
                                 int timeout_ms, char *err, size_t errlen) {
    (void)rank, (void)world, (void)coord_addr, (void)device, (void)timeout_ms;
    snprintf(err, errlen,
             "--transport nccl: this build has no NCCL (configure found no nccl.h / libnccl "
             "under CUDA; see the configure output)");
    return NULL;
}
#endif
