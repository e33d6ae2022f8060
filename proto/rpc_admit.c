/* rpc_admit.c - stream counts per peer (chained hash of peer strings). */
#include "rpc_admit.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* FNV-1a of the peer string. */
static size_t peer_hash(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h % RPC_ADMIT_BUCKETS;
}

static rpc_admit_peer **peer_slot(rpc_admit *a, const char *peer) {
    rpc_admit_peer **p = &a->bucket[peer_hash(peer)];
    while (*p && strcmp((*p)->name, peer) != 0)
        p = &(*p)->next;
    return p;
}

void rpc_admit_init(rpc_admit *a, int max_total, int max_per_peer) {
    memset(a, 0, sizeof *a);
    a->max_total = max_total > 0 ? max_total : 0;
    a->max_per_peer = max_per_peer > 0 ? max_per_peer : 0;
}

rpc_admit_result rpc_admit_take(rpc_admit *a, const char *peer) {
    if (!peer)
        peer = "?";
    if (a->max_total && a->total >= a->max_total)
        return RPC_ADMIT_TOTAL;
    rpc_admit_peer **p = peer_slot(a, peer);
    if (*p) {
        if (a->max_per_peer && (*p)->count >= a->max_per_peer)
            return RPC_ADMIT_PER_PEER;
        (*p)->count++;
    } else {
        size_t n = strlen(peer);
        rpc_admit_peer *e = malloc(sizeof *e + n + 1);
        if (!e)
            return RPC_ADMIT_NOMEM;
        e->next = NULL;
        e->count = 1;
        memcpy(e->name, peer, n + 1);
        *p = e;
    }
    a->total++;
    return RPC_ADMIT_OK;
}

void rpc_admit_put(rpc_admit *a, const char *peer) {
    if (!peer)
        peer = "?";
    rpc_admit_peer **p = peer_slot(a, peer);
    if (!*p)
        return;
    a->total--;
    if (--(*p)->count == 0) {
        rpc_admit_peer *e = *p;
        *p = e->next;
        free(e);
    }
}

int rpc_admit_count(const rpc_admit *a, const char *peer) {
    rpc_admit_peer **p = peer_slot((rpc_admit *)a, peer ? peer : "?");
    return *p ? (*p)->count : 0;
}

void rpc_admit_free(rpc_admit *a) {
    for (size_t i = 0; i < RPC_ADMIT_BUCKETS; i++) {
        rpc_admit_peer *e = a->bucket[i];
        while (e) {
            rpc_admit_peer *n = e->next;
            free(e);
            e = n;
        }
        a->bucket[i] = NULL;
    }
    a->total = 0;
}
