/* svc_health.h - kvtierd's standard gRPC health service (grpc.health.v1.Health,
 * proto/rpc_health.h) and the thread that keeps it true.
 *
 * Names and what they report:
 *   ""                 the shard: SERVING while the store answers (the same check
 *                      as Admin/Health: a RocksDB read), NOT_SERVING while it does
 *                      not (Admin/Health says DEGRADED) and once shutdown began
 *                      (Admin/Health says DRAINING)
 *   "kvtier.v1.Tier"   the same as "", and also NOT_SERVING while the disk is full
 *                      (tier_health EFULL: puts refused; "" stays SERVING, reads
 *                      and deletes work; Admin/Health says DEGRADED "disk full")
 *   "kvtier.v1.Admin"  SERVING until shutdown (admin calls still answer on a
 *                      degraded store: that is when an operator needs them)
 * Readiness probes ask "": a shard whose store does not answer is taken out of
 * rotation (and a rolling update stops there), one that recovers comes back. */
#ifndef KVTIER_SVC_HEALTH_H
#define KVTIER_SVC_HEALTH_H

#include "rpc_health.h"
#include "svc.h"

#define SVC_HEALTH_PERIOD_MS 1000 /* store check interval */

typedef struct svc_health svc_health;

/* svc_health_new: registers grpc.health.v1.Health on srv (before start) with the
 * names above SERVING and starts the thread that checks ctx->tier every
 * period_ms (borrowed: it must outlive svc_health_free). Returns NULL with a
 * reason in err on failure (srv must then not be started). */
svc_health *svc_health_new(rpc_server *srv, svc_ctx *ctx, int period_ms, char *err, size_t errlen);

/* svc_health_registry: the registry (borrowed), e.g. to set a status by hand. */
rpc_health *svc_health_registry(svc_health *sh);

/* svc_health_free: stops the thread and frees everything; after
 * rpc_server_shutdown (no Health handler may run). NULL is ignored. */
void svc_health_free(svc_health *sh);

#endif
