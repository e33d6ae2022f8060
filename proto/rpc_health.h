/* rpc_health.h - the standard gRPC health service (grpc.health.v1.Health, proto/
 * health.proto) on an rpc_server: a table of service name -> serving status that
 * the program sets, and the two methods that read it.
 *
 *   Check(service)  unary: the status of `service`; NOT_FOUND when the name was
 *                   never set ("" is the server as a whole).
 *   Watch(service)  server stream: the current status at once, then one message
 *                   on every change; SERVICE_UNKNOWN for a name never set (the
 *                   stream stays open: the name may be set later). Ends when the
 *                   client cancels, or with UNAVAILABLE when the server shuts down.
 *
 * Following the specification (doc/health-checking.md in grpc/grpc), server
 * shutdown sets every name NOT_SERVING and further changes are ignored: the
 * server's shutdown hook (rpc_server_on_shutdown) does it and then ends the Watch
 * streams, so that they do not hold the shutdown's grace period. Both methods are
 * public (answered without the auth token: kubelets and load balancers send no
 * metadata); they tell nothing but the statuses set here. Check runs on the
 * server's reserved threads (rpc_server_set_reserved): it answers while every
 * pool thread is held by other calls. Watch is a stream like any other (it
 * counts against the server's stream caps).
 *
 * Thread safety: rpc_health_set / rpc_health_get / rpc_health_shutdown may be
 * called from any thread at any time, handlers included.
 *
 * Usage:
 *   const char *names[] = {"kvtier.v1.Tier", NULL};
 *   rpc_health *h = rpc_health_new(srv, names, err, sizeof err); // before start
 *   rpc_server_start(srv); ...                                   // "", Tier: SERVING
 *   rpc_health_set(h, "kvtier.v1.Tier", RPC_HEALTH_NOT_SERVING);
 *   rpc_server_shutdown(srv, grace);  // -> all NOT_SERVING, Watch streams end
 *   rpc_server_free(srv);
 *   rpc_health_free(h);
 */
#ifndef KVTIER_RPC_HEALTH_H
#define KVTIER_RPC_HEALTH_H

#include <stddef.h>

#include "rpc.h"

#define RPC_HEALTH_NAME_MAX 200 /* longest service name accepted */

/* Serving status; the numbers are those of HealthCheckResponse.ServingStatus. */
typedef enum {
    RPC_HEALTH_UNKNOWN = 0,
    RPC_HEALTH_SERVING = 1,
    RPC_HEALTH_NOT_SERVING = 2,
    RPC_HEALTH_SERVICE_UNKNOWN = 3 /* a name never set (Watch only) */
} rpc_health_status;

typedef struct rpc_health rpc_health;

/* rpc_health_name: "SERVING", "NOT_SERVING", ... (static string). */
const char *rpc_health_name(rpc_health_status st);

/* rpc_health_new: registers grpc.health.v1.Health (Check, Watch) on srv, which
 * must not be started yet, makes both public and installs the shutdown hook.
 * The overall status "" and the service names in `names` (NULL-terminated
 * list, may be NULL; e.g. "kvtier.v1.Tier") start SERVING; other names are
 * unknown until set. Returns the registry (free it with
 * rpc_health_free after rpc_server_shutdown or rpc_server_free), or NULL with a
 * reason in err (errlen bytes); srv must then be freed without being started
 * (it may hold a registration that points to the freed registry). */
rpc_health *rpc_health_new(rpc_server *srv, const char *const *names, char *err, size_t errlen);

/* rpc_health_set: sets the status of `service` (the name is copied; "" = the
 * whole server) and wakes its watchers when it changed. `st` is SERVING,
 * NOT_SERVING or UNKNOWN. Returns 0; -1 when st or the name is invalid (NULL,
 * longer than RPC_HEALTH_NAME_MAX), on out of memory, or after shutdown (the
 * status stays NOT_SERVING). */
int rpc_health_set(rpc_health *h, const char *service, rpc_health_status st);

/* rpc_health_get: the status of `service`, RPC_HEALTH_SERVICE_UNKNOWN when it
 * was never set. */
rpc_health_status rpc_health_get(rpc_health *h, const char *service);

/* rpc_health_shutdown: every name NOT_SERVING for good, Watch streams told so
 * and then ended (UNAVAILABLE). Idempotent; never blocks on a client. Called by
 * the server's shutdown hook; call it earlier to fail health checks while the
 * server still accepts calls. */
void rpc_health_shutdown(rpc_health *h);

/* rpc_health_free: frees the registry. The server must be shut down (no
 * handler may be running). NULL is ignored. */
void rpc_health_free(rpc_health *h);

#endif /* KVTIER_RPC_HEALTH_H */
