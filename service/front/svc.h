/* svc.h - kvtierd front end: shared context of the Tier and Admin handlers.
 * The handlers only translate RPCs to tier.h calls and back; placement policy
 * lives in the tier library. */
#ifndef KVTIER_SVC_H
#define KVTIER_SVC_H

#include <stdatomic.h>
#include <stdint.h>

#include "metrics.h"
#include "rpc.h"
#include "tier.h"

#define KVTIERD_VERSION "0.1.0"

typedef struct svc_ctx {
    tier_t *tier;                /* borrowed, open for the whole server lifetime */
    policy_params defaults;      /* service-wide policy parameters (from flags) */
    metrics *m;                  /* borrowed; counters and histograms */
    uint64_t start_ms;           /* unix ms at startup (uptime) */
    atomic_int draining;         /* 1 once shutdown began: Health says DRAINING */
    uint32_t max_fetch_refs;     /* block refs one FetchRequest may list (0 = no limit) */
    uint64_t max_staged;         /* payload bytes all open PutBlocks streams may stage
                                    together before their commit (0 = no limit) */
    atomic_uint_fast64_t staged; /* payload bytes staged now, all streams */
} svc_ctx;

/* svc_tier_register: registers the 5 Tier methods on srv. Returns 0 or -1. */
int svc_tier_register(rpc_server *srv, svc_ctx *ctx);

/* svc_admin_register: registers the 6 Admin methods on srv. Returns 0 or -1. */
int svc_admin_register(rpc_server *srv, svc_ctx *ctx);

/* svc_now_ns: monotonic clock in ns. */
uint64_t svc_now_ns(void);

#endif
