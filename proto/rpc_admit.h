/* rpc_admit.h - admission of streaming calls: a count of the streams in flight
 * in total and per peer (client connection), with caps. Pure bookkeeping (no
 * gRPC, no locks, no I/O): the server calls it under its own mutex.
 *
 *   rpc_admit a; rpc_admit_init(&a, 128, 32);
 *   if (rpc_admit_take(&a, "ipv4:127.0.0.1:5555") == RPC_ADMIT_OK) { ... serve ...
 *       rpc_admit_put(&a, "ipv4:127.0.0.1:5555"); }
 *
 * A peer is whatever string identifies a client; the server uses
 * grpc_call_get_peer ("ipv4:10.0.0.7:51234": one per connection). Memory:
 * one entry per peer with a stream in flight, freed when its count drops to 0.
 */
#ifndef KVTIER_RPC_ADMIT_H
#define KVTIER_RPC_ADMIT_H

#include <stddef.h>

#define RPC_ADMIT_BUCKETS 256

typedef enum {
    RPC_ADMIT_OK = 0,       /* counted: the caller must rpc_admit_put it later */
    RPC_ADMIT_TOTAL = 1,    /* refused: max_total streams in flight */
    RPC_ADMIT_PER_PEER = 2, /* refused: max_per_peer streams in flight from this peer */
    RPC_ADMIT_NOMEM = 3     /* refused: no memory for a new peer entry */
} rpc_admit_result;

typedef struct rpc_admit_peer {
    struct rpc_admit_peer *next;
    int count; /* streams in flight from this peer (>= 1) */
    char name[];
} rpc_admit_peer;

typedef struct {
    int max_total, max_per_peer; /* 0 = no cap */
    int total;                   /* streams in flight, all peers */
    rpc_admit_peer *bucket[RPC_ADMIT_BUCKETS];
} rpc_admit;

/* rpc_admit_init: empty table with the caps (0 = no cap). */
void rpc_admit_init(rpc_admit *a, int max_total, int max_per_peer);

/* rpc_admit_take: counts one more stream of `peer` (NULL = "?") unless a cap
 * would be passed. Returns RPC_ADMIT_OK (counted) or why it was refused
 * (nothing counted). */
rpc_admit_result rpc_admit_take(rpc_admit *a, const char *peer);

/* rpc_admit_put: gives back one stream of `peer` taken with rpc_admit_take
 * (a peer not counted is ignored). */
void rpc_admit_put(rpc_admit *a, const char *peer);

/* rpc_admit_count: streams of `peer` in flight now. */
int rpc_admit_count(const rpc_admit *a, const char *peer);

/* rpc_admit_free: frees every peer entry (the counts are lost). */
void rpc_admit_free(rpc_admit *a);

#endif
