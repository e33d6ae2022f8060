/* serve_metrics.h - the worker's counters, gauges and latency histograms, and
 * their Prometheus text (every series labelled with model_name). */
#ifndef KVTIER_SERVE_METRICS_H
#define KVTIER_SERVE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "tiering.h"

/* A generation's outcome (the `result` label). */
typedef enum {
    GEN_OK = 0,
    GEN_INVALID,
    GEN_FAILED,
    GEN_CANCELLED,
    GEN_DEADLINE,
    GEN_EXHAUSTED,
    GEN_UNAVAILABLE,
    GEN_ALREADY_EXISTS,
    GEN_NRESULTS
} gen_result_t;

#define SERVE_HIST_MAX 24

/* A fixed-bucket histogram of seconds (bounds borrowed, ascending). */
typedef struct {
    const double *bounds;
    int n_bounds;
    atomic_uint_fast64_t bucket[SERVE_HIST_MAX + 1]; /* not cumulative; last = +Inf */
    atomic_uint_fast64_t sum_ns;
} serve_hist;

typedef struct {
    atomic_uint_fast64_t generations[GEN_NRESULTS];
    atomic_int running, waiting;
    atomic_llong kv_hot_bytes; /* hot KV of the running generations */
    atomic_uint_fast64_t prompt_tokens, generated_tokens;
    atomic_uint_fast64_t demoted, recalled, dropped, lost, recall_bytes, put_bytes, summaries;
    atomic_uint_fast64_t degraded_runs;
    atomic_int degraded; /* the latest tiered generation was degraded */
    atomic_uint_fast64_t decode_ns, decode_steps;
    serve_hist ttft, itl, e2e, queue;
    atomic_uint_fast64_t tier_skipped, tier_timeouts; /* the tier link's breaker (copied in) */
} serve_metrics;

/* Zeroes m and sets the histograms' buckets. */
void serve_metrics_init(serve_metrics *m);

/* Adds one observation of `seconds` (clamped at 0) to h. Thread-safe. */
void serve_hist_observe(serve_hist *h, double seconds);

/* Adds one finished tiered generation's statistics (st may be NULL). */
void serve_metrics_add_tiering(serve_metrics *m, const tiering_stats_t *st);

/* Prometheus text format of m (model_name escaped into every series' labels);
 * malloc'd, *len its length; NULL on OOM. */
char *serve_metrics_render(const serve_metrics *m, const char *model_name, uint64_t uptime_s,
                           size_t *len);

/* The `result` label of an outcome. */
const char *serve_metrics_result_name(gen_result_t r);

#endif
