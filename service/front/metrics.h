/* metrics.h - kvtierd counters, latency histograms and their Prometheus text
 * exposition (render is pure: counters + a tier_stats snapshot in, text out).
 * All updates are lock-free atomics, safe from any handler thread. */
#ifndef KVTIER_METRICS_H
#define KVTIER_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <grpc/status.h>

#include "tier.h"

#define METRICS_NBUCKETS 14 /* 13 bounds + Inf */
#define METRICS_NMETHODS 16 /* 15 served methods (13 + health) + "other" */
#define METRICS_NCODES 17   /* gRPC codes 0..16 */

/* Latency histogram; bounds in metrics.c (50 us .. 1 s). */
typedef struct metrics_hist {
    atomic_uint_fast64_t bucket[METRICS_NBUCKETS]; /* non-cumulative counts */
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum_ns;
} metrics_hist;

typedef struct metrics {
    metrics_hist put;                 /* per block stored by PutBlocks */
    metrics_hist fetch[TIER_NLEVELS]; /* per block served, by tier it came from */
    atomic_uint_fast64_t put_bytes, fetch_bytes;
    atomic_uint_fast64_t put_errors[METRICS_NCODES]; /* blocks refused, by code */
    atomic_uint_fast64_t rpc[METRICS_NMETHODS][METRICS_NCODES];
    metrics_hist rpc_latency[METRICS_NMETHODS];
} metrics;

/* metrics_init: zeroes everything. */
void metrics_init(metrics *m);

/* metrics_observe: records one latency of ns nanoseconds. */
void metrics_observe(metrics_hist *h, uint64_t ns);

/* metrics_quantile: estimate of quantile q (0..1) in seconds by linear
 * interpolation inside the bucket; 0 when empty; the last finite bound when it
 * falls into +Inf. */
double metrics_quantile(const metrics_hist *h, double q);

/* metrics_rpc: counts a finished call of `method` (full name) with `code`. */
void metrics_rpc(metrics *m, const char *method, grpc_status_code code, uint64_t ns);

/* metrics_render: Prometheus text format 0.0.4 of m and the snapshot st.
 * Returns a malloc'd NUL-terminated string (caller frees), *len its length;
 * NULL on out of memory. */
char *metrics_render(const metrics *m, const tier_stats *st, uint64_t uptime_s, const char *version,
                     size_t *len);

/* ---------------------------------------------------------------- HTTP */

typedef struct metrics_http metrics_http;

/* Produces the page: malloc'd text and its length, NULL on failure. */
typedef char *(*metrics_render_fn)(void *user, size_t *len);

/* metrics_http_start: serves GET /metrics on addr ("127.0.0.1:9100", port 0 =
 * any free port) with libmicrohttpd (own thread). *port_out (may be NULL) gets
 * the bound port. Returns NULL with a message in err on failure. */
metrics_http *metrics_http_start(const char *addr, metrics_render_fn fn, void *user, int *port_out,
                                 char *err, size_t errlen);

/* metrics_http_resolve: splits "host:port" / "[v6]:port" and resolves it
 * (numeric port, passive) into *ss / *sl. Returns 0, or -1 with a message
 * naming addr. Shared with the worker's HTTP API. */
int metrics_http_resolve(const char *addr, struct sockaddr_storage *ss, socklen_t *sl, char *err,
                         size_t errlen);

/* metrics_http_stop: stops the HTTP server and frees it. NULL is a no-op. */
void metrics_http_stop(metrics_http *h);

#endif
