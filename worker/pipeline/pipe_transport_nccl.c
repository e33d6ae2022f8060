/* pipe_transport_nccl.c - the pipeline ring over NCCL (see pipe_transport.h).
 *
 * One communicator of `world` ranks, one GPU each; rank r ncclSend's to
 * (r+1) % world and ncclRecv's from (r-1+world) % world, on a stream of its
 * own. A message is two transfers: the 48-byte header, then (after it was
 * decoded and checked) its payload, so the receiver always knows the count.
 * Payloads are host memory: they are staged through one device buffer.
 *
 * Bounded waits: the communicator is non-blocking (ncclConfig_t.blocking =
 * 0); a wait polls the stream and ncclCommGetAsyncError until its deadline,
 * and a timeout aborts the communicator (ncclCommAbort), after which every
 * call fails. NCCL has no notion of a closed peer: a rank that died shows as
 * a timeout (or an asynchronous NCCL error), never a hang.
 */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipe_ncclid.h"
#include "pipe_transport.h"

_Static_assert(sizeof(ncclUniqueId) == PIPE_NCCLID_BYTES, "ncclUniqueId is 128 bytes");

typedef struct {
    pipe_transport_t base;
    ncclComm_t comm;
    cudaStream_t stream;
    void *dbuf; /* device staging buffer */
    size_t dcap;
    int rank, world, broken;
} pipe_nccl_t;

static double pn_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int pn_cuda(cudaError_t e, const char *what, char *err, size_t errlen) {
    if (e == cudaSuccess)
        return 0;
    snprintf(err, errlen, "%s: CUDA error %d (%s)", what, (int)e, cudaGetErrorString(e));
    return -1;
}

static int pn_nccl(ncclResult_t r, const char *what, char *err, size_t errlen) {
    if (r == ncclSuccess || r == ncclInProgress)
        return 0;
    snprintf(err, errlen, "%s: NCCL error %d (%s)", what, (int)r, ncclGetErrorString(r));
    return -1;
}

/* Waits for the communicator to leave ncclInProgress (init) or for the
 * stream to drain (transfers), until timeout_ms (< 0: no bound). A timeout
 * aborts the communicator. */
static int pn_wait(pipe_nccl_t *t, int stream_too, int timeout_ms, const char *what, char *err,
                   size_t errlen) {
    double end = timeout_ms < 0 ? -1 : pn_now_ms() + timeout_ms;
    for (;;) {
        ncclResult_t as = ncclSuccess;
        ncclCommGetAsyncError(t->comm, &as);
        if (as != ncclSuccess && as != ncclInProgress) {
            snprintf(err, errlen, "%s: NCCL error %d (%s)", what, (int)as, ncclGetErrorString(as));
            t->broken = 1;
            return PIPE_EIO;
        }
        if (as == ncclSuccess) {
            if (!stream_too)
                return PIPE_OK;
            cudaError_t q = cudaStreamQuery(t->stream);
            if (q == cudaSuccess)
                return PIPE_OK;
            if (q != cudaErrorNotReady) {
                pn_cuda(q, what, err, errlen);
                t->broken = 1;
                return PIPE_EIO;
            }
        }
        if (end >= 0 && pn_now_ms() > end) {
            snprintf(err, errlen,
                     "%s: no progress within %d ms (peer rank dead or hung); "
                     "communicator aborted",
                     what, timeout_ms);
            ncclCommAbort(t->comm);
            t->comm = NULL;
            t->broken = 1;
            return PIPE_ETIMEOUT;
        }
        struct timespec ts = {0, 100 * 1000};
        nanosleep(&ts, NULL);
    }
}

static int pn_reserve(pipe_nccl_t *t, size_t n, char *err, size_t errlen) {
    if (n <= t->dcap)
        return 0;
    if (t->dbuf)
        cudaFree(t->dbuf);
    t->dbuf = NULL;
    t->dcap = 0;
    if (pn_cuda(cudaMalloc(&t->dbuf, n), "cudaMalloc of the staging buffer", err, errlen))
        return -1;
    t->dcap = n;
    return 0;
}

static int pn_check(pipe_nccl_t *t, char *err, size_t errlen) {
    if (t->broken || !t->comm) {
        snprintf(err, errlen, "the NCCL communicator failed before (aborted)");
        return -1;
    }
    return 0;
}

/* One host -> peer transfer of n bytes. */
static int pn_send_bytes(pipe_nccl_t *t, const void *p, size_t n, int timeout_ms, char *err,
                         size_t errlen) {
    int next = (t->rank + 1) % t->world;
    if (pn_reserve(t, n, err, errlen) ||
        pn_cuda(cudaMemcpyAsync(t->dbuf, p, n, cudaMemcpyHostToDevice, t->stream), "copy to GPU",
                err, errlen) ||
        pn_nccl(ncclSend(t->dbuf, n, ncclUint8, next, t->comm, t->stream), "ncclSend", err, errlen))
        return PIPE_EIO;
    return pn_wait(t, 1, timeout_ms, "ncclSend", err, errlen);
}

/* One peer -> host transfer of n bytes. */
static int pn_recv_bytes(pipe_nccl_t *t, void *p, size_t n, int timeout_ms, char *err,
                         size_t errlen) {
    int prev = (t->rank + t->world - 1) % t->world;
    if (pn_reserve(t, n, err, errlen) ||
        pn_nccl(ncclRecv(t->dbuf, n, ncclUint8, prev, t->comm, t->stream), "ncclRecv", err, errlen))
        return PIPE_EIO;
    int rc = pn_wait(t, 1, timeout_ms, "ncclRecv", err, errlen);
    if (rc)
        return rc;
    if (pn_cuda(cudaMemcpy(p, t->dbuf, n, cudaMemcpyDeviceToHost), "copy from GPU", err, errlen))
        return PIPE_EIO;
    return PIPE_OK;
}

static int pn_send(pipe_transport_t *bt, const pipe_hdr_t *h, const void *payload, int timeout_ms,
                   char *err, size_t errlen) {
    pipe_nccl_t *t = (pipe_nccl_t *)bt;
    if (pn_check(t, err, errlen))
        return PIPE_EIO;
    unsigned char hb[PIPE_HDR_BYTES];
    pipe_hdr_encode(h, hb);
    int rc = pn_send_bytes(t, hb, sizeof hb, timeout_ms, err, errlen);
    if (rc == PIPE_OK && h->payload_bytes)
        rc = pn_send_bytes(t, payload, (size_t)h->payload_bytes, timeout_ms, err, errlen);
    return rc;
}

static int pn_recv(pipe_transport_t *bt, pipe_hdr_t *h, void *buf, size_t cap, int timeout_ms,
                   char *err, size_t errlen) {
    pipe_nccl_t *t = (pipe_nccl_t *)bt;
    if (pn_check(t, err, errlen))
        return PIPE_EIO;
    unsigned char hb[PIPE_HDR_BYTES];
    int rc = pn_recv_bytes(t, hb, sizeof hb, timeout_ms, err, errlen);
    if (rc)
        return rc;
    if (pipe_hdr_decode(hb, cap, h, err, errlen) != 0) {
        /* the sender will send a payload we cannot take: the ring is unusable */
        t->broken = 1;
        return PIPE_EPROTO;
    }
    if (h->payload_bytes)
        rc = pn_recv_bytes(t, buf, (size_t)h->payload_bytes, timeout_ms, err, errlen);
    return rc;
}

static void pn_free(pipe_transport_t *bt) {
    pipe_nccl_t *t = (pipe_nccl_t *)bt;
    if (t->comm) {
        if (t->broken)
            ncclCommAbort(t->comm);
        else {
            char err[128];
            ncclCommFinalize(t->comm);
            if (pn_wait(t, 0, 5000, "ncclCommFinalize", err, sizeof err) == PIPE_OK)
                ncclCommDestroy(t->comm);
            else if (t->comm)
                ncclCommAbort(t->comm);
        }
    }
    if (t->dbuf)
        cudaFree(t->dbuf);
    if (t->stream)
        cudaStreamDestroy(t->stream);
    free(t);
}

static const pipe_transport_ops pn_ops = {"nccl", 0, pn_send, pn_recv, pn_free};

int pipe_nccl_available(void) {
    return 1;
}

pipe_transport_t *pipe_nccl_ring(int rank, int world, const char *coord_addr, int device,
                                 int timeout_ms, char *err, size_t errlen) {
    int ndev = 0;
    cudaError_t ce = cudaGetDeviceCount(&ndev);
    if (ce != cudaSuccess || ndev <= 0) {
        snprintf(err, errlen, "--transport nccl: no CUDA device visible (%s)",
                 ce != cudaSuccess ? cudaGetErrorString(ce) : "0 devices");
        return NULL;
    }
    int dev = device >= 0 ? device : rank % ndev;
    if (dev >= ndev) {
        snprintf(err, errlen, "--device %d: only %d CUDA device(s) visible", dev, ndev);
        return NULL;
    }
    if (pn_cuda(cudaSetDevice(dev), "cudaSetDevice", err, errlen))
        return NULL;
    ncclUniqueId id;
    if (rank == 0) {
        if (pn_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId", err, errlen) ||
            pipe_ncclid_serve(coord_addr, (const unsigned char *)&id, world, timeout_ms, err,
                              errlen) != 0)
            return NULL;
    } else if (pipe_ncclid_fetch(coord_addr, rank, world, (unsigned char *)&id, timeout_ms, err,
                                 errlen) != 0)
        return NULL;
    pipe_nccl_t *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->base.ops = &pn_ops;
    t->rank = rank;
    t->world = world;
    if (pn_cuda(cudaStreamCreateWithFlags(&t->stream, cudaStreamNonBlocking), "cudaStreamCreate",
                err, errlen)) {
        pn_free(&t->base);
        return NULL;
    }
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    if (pn_nccl(ncclCommInitRankConfig(&t->comm, world, id, rank, &cfg), "ncclCommInitRank", err,
                errlen) ||
        pn_wait(t, 0, timeout_ms, "ncclCommInitRank", err, errlen) != PIPE_OK) {
        t->broken = 1;
        pn_free(&t->base);
        return NULL;
    }
    return &t->base;
}
