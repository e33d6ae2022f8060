/* pipe_ncclid.c - NCCL unique id exchange over gRPC (see pipe_ncclid.h). */
#include "pipe_ncclid.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kvtier.pb-c.h"
#include "rpc.h"

#define NCCLID_METHOD "/kvtier.v1.Pipeline/GetNcclId"

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    const unsigned char *id;
    int world;
    unsigned char fetched[1024]; /* by rank */
    int n_fetched;
} ncclid_srv;

static void ncclid_handler(rpc_call *call, const ProtobufCMessage *reqm, void *user) {
    ncclid_srv *s = user;
    const Kvtier__V1__NcclIdRequest *req = (const Kvtier__V1__NcclIdRequest *)reqm;
    if (req->world_size != (uint32_t)s->world) {
        rpc_call_finish(call, GRPC_STATUS_FAILED_PRECONDITION,
                        "rank %u expects world size %u, rank 0 has %d", req->rank, req->world_size,
                        s->world);
        return;
    }
    if (req->rank == 0 || req->rank >= (uint32_t)s->world) {
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "rank %u is outside [1, %d)", req->rank,
                        s->world);
        return;
    }
    Kvtier__V1__NcclIdResponse resp = KVTIER__V1__NCCL_ID_RESPONSE__INIT;
    resp.id.data = (uint8_t *)s->id;
    resp.id.len = PIPE_NCCLID_BYTES;
    resp.world_size = (uint32_t)s->world;
    if (rpc_call_reply(call, &resp.base) != 0)
        return;
    pthread_mutex_lock(&s->mu);
    if (!s->fetched[req->rank]) {
        s->fetched[req->rank] = 1;
        s->n_fetched++;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
}

int pipe_ncclid_serve(const char *addr, const unsigned char *id, int world, int timeout_ms,
                      char *err, size_t errlen) {
    if (world < 2 || world > 1024) {
        snprintf(err, errlen, "NCCL id: world size %d is outside [2, 1024]", world);
        return -1;
    }
    ncclid_srv s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    s.id = id;
    s.world = world;
    char why[256] = "";
    rpc_server *srv = rpc_server_new(addr, 1, 0, why, sizeof why);
    if (!srv ||
        rpc_server_register_service(srv, &kvtier__v1__pipeline__descriptor, "GetNcclId",
                                    ncclid_handler, &s) != 0 ||
        rpc_server_start(srv) != 0) {
        snprintf(err, errlen, "NCCL id: cannot serve gRPC on %s: %s", addr,
                 why[0] ? why : "server start failed");
        rpc_server_free(srv);
        return -1;
    }
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&s.mu);
    while (s.n_fetched < world - 1 && rc == 0)
        rc = pthread_cond_timedwait(&s.cv, &s.mu, &dl);
    int got = s.n_fetched;
    pthread_mutex_unlock(&s.mu);
    rpc_server_shutdown(srv, 1000);
    rpc_server_free(srv);
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    if (got < world - 1) {
        snprintf(err, errlen,
                 "NCCL id: only %d of the %d other ranks fetched the id from %s within %d ms", got,
                 world - 1, addr, timeout_ms);
        return -1;
    }
    return 0;
}

static double ncclid_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

int pipe_ncclid_fetch(const char *addr, int rank, int world, unsigned char *id, int timeout_ms,
                      char *err, size_t errlen) {
    rpc_channel *ch = rpc_channel_new(addr, 0);
    if (!ch) {
        snprintf(err, errlen, "NCCL id: out of memory");
        return -1;
    }
    double end = ncclid_now_ms() + timeout_ms;
    Kvtier__V1__NcclIdRequest req = KVTIER__V1__NCCL_ID_REQUEST__INIT;
    req.rank = (uint32_t)rank;
    req.world_size = (uint32_t)world;
    int rc = -1;
    for (;;) {
        double left = end - ncclid_now_ms();
        rpc_opts o = {.timeout_ms = left > 2000 ? 2000 : left < 1 ? 1 : (int64_t)left};
        rpc_status st;
        Kvtier__V1__NcclIdResponse *resp = NULL;
        grpc_status_code code =
            rpc_unary(ch, NCCLID_METHOD, &o, &req.base, &kvtier__v1__nccl_id_response__descriptor,
                      (ProtobufCMessage **)&resp, &st);
        if (code == GRPC_STATUS_OK) {
            if (resp->id.len != PIPE_NCCLID_BYTES) {
                snprintf(err, errlen, "NCCL id from %s has %zu bytes, expected %d", addr,
                         resp->id.len, PIPE_NCCLID_BYTES);
            } else {
                memcpy(id, resp->id.data, PIPE_NCCLID_BYTES);
                rc = 0;
            }
            protobuf_c_message_free_unpacked(&resp->base, NULL);
            break;
        }
        if (code != GRPC_STATUS_UNAVAILABLE && code != GRPC_STATUS_DEADLINE_EXCEEDED) {
            snprintf(err, errlen, "NCCL id: rank 0 at %s refused: %s %s", addr,
                     rpc_status_name(code), st.message);
            break;
        }
        if (ncclid_now_ms() >= end) {
            snprintf(err, errlen, "NCCL id: rank 0 at %s did not answer within %d ms (%s %s)", addr,
                     timeout_ms, rpc_status_name(code), st.message);
            break;
        }
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    rpc_channel_free(ch);
    return rc;
}
