/* serve_metrics.h - the worker's counters and their Prometheus text. */
#ifndef KVTIER_SERVE_METRICS_H
#define KVTIER_SERVE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "tiering.h"

typedef enum { GEN_OK = 0, GEN_INVALID, GEN_FAILED, GEN_CANCELLED, GEN_NRESULTS } gen_result_t;

typedef struct {
    atomic_uint_fast64_t generations[GEN_NRESULTS];
    atomic_int running;
    atomic_uint_fast64_t prompt_tokens, generated_tokens;
    atomic_uint_fast64_t demoted, recalled, dropped, lost, recall_bytes, put_bytes, summaries;
    atomic_uint_fast64_t degraded_runs;
    atomic_int degraded; /* the latest tiered generation was degraded */
    atomic_uint_fast64_t decode_ns, decode_steps, prefill_ns, prefill_tokens;
} serve_metrics;

/* Adds one finished tiered generation's statistics (st may be NULL). */
void serve_metrics_add_tiering(serve_metrics *m, const tiering_stats_t *st);

/* Prometheus text format of m; malloc'd, *len its length; NULL on OOM. */
char *serve_metrics_render(const serve_metrics *m, uint64_t uptime_s, size_t *len);

#endif
