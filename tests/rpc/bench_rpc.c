/* bench_rpc.c - throughput of the RPC layer over loopback (in-process server and
 * client on a real TCP port). Prints a table; writes JSON with --json PATH.
 *
 *   bench_rpc [--quick] [--json PATH]
 *
 * Cases: unary round trips (1 and 4 client threads), client stream of 64 KiB
 * blocks (PutBlocks), server stream of 64 KiB blocks (FetchBlocks), bidi
 * request/response pairs (Summarize). Handlers do no work beyond (un)packing.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvtier.pb-c.h"
#include "rpc.h"

#define BLOCK (64u << 10)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- handlers */

static void h_open(rpc_call *c, const ProtobufCMessage *req, void *u) {
    (void)u;
    Kvtier__V1__OpenSequenceResponse r = KVTIER__V1__OPEN_SEQUENCE_RESPONSE__INIT;
    r.blocks_host = ((const Kvtier__V1__OpenSequenceRequest *)req)->layers;
    rpc_call_reply(c, &r.base);
}

static void h_put(rpc_call *c, const ProtobufCMessage *req, void *u) {
    (void)req;
    (void)u;
    ProtobufCMessage *m;
    uint32_t n = 0;
    int r;
    while ((r = rpc_call_read(c, &kvtier__v1__block__descriptor, &m)) == 1) {
        n++;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (r < 0)
        return;
    Kvtier__V1__PutResponse resp = KVTIER__V1__PUT_RESPONSE__INIT;
    resp.acked = n;
    rpc_call_reply(c, &resp.base);
}

static void h_fetch(rpc_call *c, const ProtobufCMessage *req, void *u) {
    (void)u;
    const Kvtier__V1__FetchRequest *r = (const Kvtier__V1__FetchRequest *)req;
    static uint8_t buf[BLOCK];
    Kvtier__V1__Block b = KVTIER__V1__BLOCK__INIT;
    b.payload.data = buf;
    b.payload.len = BLOCK;
    for (uint64_t i = 0; i < r->sequence_id; i++)
        if (rpc_call_write(c, &b.base) != 0)
            return;
    rpc_call_finish(c, GRPC_STATUS_OK, NULL);
}

static void h_sum(rpc_call *c, const ProtobufCMessage *req, void *u) {
    (void)req;
    (void)u;
    Kvtier__V1__SummaryRequest *s;
    int r;
    while ((r = rpc_call_read(c, &kvtier__v1__summary_request__descriptor,
                              (ProtobufCMessage **)&s)) == 1) {
        Kvtier__V1__Decisions d = KVTIER__V1__DECISIONS__INIT;
        d.step = s->step;
        protobuf_c_message_free_unpacked(&s->base, NULL);
        if (rpc_call_write(c, &d.base) != 0)
            return;
    }
    if (r == 0)
        rpc_call_finish(c, GRPC_STATUS_OK, NULL);
}

/* ---------------------------------------------------------------- cases */

typedef struct {
    rpc_channel *ch;
    int n;
    int errors;
} unary_arg;

static void *unary_loop(void *p) {
    unary_arg *a = p;
    Kvtier__V1__OpenSequenceRequest req = KVTIER__V1__OPEN_SEQUENCE_REQUEST__INIT;
    req.layers = 36;
    for (int i = 0; i < a->n; i++) {
        ProtobufCMessage *resp = NULL;
        rpc_status st;
        if (rpc_unary(a->ch, "/kvtier.v1.Tier/OpenSequence", NULL, &req.base,
                      &kvtier__v1__open_sequence_response__descriptor, &resp,
                      &st) != GRPC_STATUS_OK)
            a->errors++;
        if (resp)
            protobuf_c_message_free_unpacked(resp, NULL);
    }
    return NULL;
}

static double bench_unary(rpc_channel *ch, int threads, int per_thread, int *errors) {
    pthread_t t[16];
    unary_arg a[16];
    double t0 = now_s();
    for (int i = 0; i < threads; i++) {
        a[i] = (unary_arg){ch, per_thread, 0};
        pthread_create(&t[i], NULL, unary_loop, &a[i]);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        *errors += a[i].errors;
    }
    return (double)(threads * per_thread) / (now_s() - t0);
}

static double bench_put(rpc_channel *ch, int n, int *errors) {
    static uint8_t buf[BLOCK];
    Kvtier__V1__Block b = KVTIER__V1__BLOCK__INIT;
    b.payload.data = buf;
    b.payload.len = BLOCK;
    rpc_status st;
    double t0 = now_s();
    rpc_stream *s = rpc_stream_open(ch, "/kvtier.v1.Tier/PutBlocks", NULL, &st);
    for (int i = 0; i < n; i++)
        if (rpc_stream_write(s, &b.base) != 0)
            break;
    Kvtier__V1__PutResponse *resp = NULL;
    if (rpc_stream_close_and_recv(s, &kvtier__v1__put_response__descriptor,
                                  (ProtobufCMessage **)&resp, &st) != GRPC_STATUS_OK ||
        resp->acked != (uint32_t)n)
        (*errors)++;
    double dt = now_s() - t0;
    if (resp)
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    rpc_stream_free(s);
    return (double)n * BLOCK / dt / 1e6;
}

static double bench_fetch(rpc_channel *ch, int n, int *errors) {
    Kvtier__V1__FetchRequest req = KVTIER__V1__FETCH_REQUEST__INIT;
    req.sequence_id = (uint64_t)n;
    rpc_status st;
    double t0 = now_s();
    rpc_stream *s = rpc_stream_open(ch, "/kvtier.v1.Tier/FetchBlocks", NULL, &st);
    rpc_stream_write(s, &req.base);
    rpc_stream_close_send(s);
    int got = 0;
    ProtobufCMessage *m;
    while (rpc_stream_read(s, &kvtier__v1__block__descriptor, &m) == 1) {
        got++;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (rpc_stream_finish(s, &st) != GRPC_STATUS_OK || got != n)
        (*errors)++;
    double dt = now_s() - t0;
    rpc_stream_free(s);
    return (double)n * BLOCK / dt / 1e6;
}

static double bench_bidi(rpc_channel *ch, int n, int *errors) {
    rpc_status st;
    double t0 = now_s();
    rpc_stream *s = rpc_stream_open(ch, "/kvtier.v1.Tier/Summarize", NULL, &st);
    for (int i = 0; i < n; i++) {
        Kvtier__V1__SummaryRequest r = KVTIER__V1__SUMMARY_REQUEST__INIT;
        r.step = (uint64_t)i;
        ProtobufCMessage *m = NULL;
        if (rpc_stream_write(s, &r.base) != 0 ||
            rpc_stream_read(s, &kvtier__v1__decisions__descriptor, &m) != 1) {
            (*errors)++;
            break;
        }
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (rpc_stream_finish(s, &st) != GRPC_STATUS_OK)
        (*errors)++;
    double dt = now_s() - t0;
    rpc_stream_free(s);
    return (double)n / dt;
}

int main(int argc, char **argv) {
    int quick = 0;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc)
            json = argv[++i];
        else {
            fprintf(stderr, "usage: bench_rpc [--quick] [--json PATH]\n");
            return strcmp(argv[i], "--help") == 0 ? 0 : 2;
        }
    }
    char err[256];
    rpc_server *srv = rpc_server_new("127.0.0.1:0", 4, 32u << 20, err, sizeof err);
    if (!srv) {
        fprintf(stderr, "bench_rpc: %s\n", err);
        return 1;
    }
    const ProtobufCServiceDescriptor *t = &kvtier__v1__tier__descriptor;
    rpc_server_register_service(srv, t, "OpenSequence", h_open, NULL);
    rpc_server_register_service(srv, t, "PutBlocks", h_put, NULL);
    rpc_server_register_service(srv, t, "FetchBlocks", h_fetch, NULL);
    rpc_server_register_service(srv, t, "Summarize", h_sum, NULL);
    rpc_server_start(srv);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", rpc_server_port(srv));
    rpc_channel *ch = rpc_channel_new(addr, 32u << 20);

    int scale = quick ? 10 : 1, errors = 0;
    bench_unary(ch, 1, 200, &errors); /* warm-up: connect */
    double u1 = bench_unary(ch, 1, 10000 / scale, &errors);
    double u4 = bench_unary(ch, 4, 5000 / scale, &errors);
    double put = bench_put(ch, 4000 / scale, &errors);
    double fetch = bench_fetch(ch, 4000 / scale, &errors);
    double bidi = bench_bidi(ch, 10000 / scale, &errors);

    printf("%-40s %14s\n", "case", "result");
    printf("%-40s %10.0f /s  (%.0f us/call)\n", "unary round trips, 1 client thread", u1, 1e6 / u1);
    printf("%-40s %10.0f /s\n", "unary round trips, 4 client threads", u4);
    printf("%-40s %10.0f MB/s\n", "client stream, 64 KiB messages", put);
    printf("%-40s %10.0f MB/s\n", "server stream, 64 KiB messages", fetch);
    printf("%-40s %10.0f /s\n", "bidi request/response pairs", bidi);
    printf("errors: %d\n", errors);
    if (json) {
        FILE *f = fopen(json, "w");
        if (f) {
            fprintf(f,
                    "{\"unary_calls_per_s_1t\": %.1f, \"unary_calls_per_s_4t\": %.1f, "
                    "\"client_stream_64k_mb_per_s\": %.1f, \"server_stream_64k_mb_per_s\": %.1f, "
                    "\"bidi_pairs_per_s\": %.1f, \"errors\": %d, \"quick\": %s}\n",
                    u1, u4, put, fetch, bidi, errors, quick ? "true" : "false");
            fclose(f);
        }
    }
    rpc_channel_free(ch);
    rpc_server_free(srv);
    return errors ? 1 : 0;
}
