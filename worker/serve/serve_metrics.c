/* serve_metrics.c - Prometheus text of the worker's counters, gauges and
 * histograms (pure apart from the atomics). */
#include "serve_metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* vLLM's buckets, so dashboards built for it read ours. */
static const double lat_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25,
                                    0.5,   0.75,  1.0,  2.5,  5.0,  7.5,  10,   20,  40};
static const double e2e_bounds[] = {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10,  15,
                                    20,  30,  40,  50,  60,  120, 240, 480, 960, 1920};

static void hist_init(serve_hist *h, const double *b, int n) {
    h->bounds = b;
    h->n_bounds = n < SERVE_HIST_MAX ? n : SERVE_HIST_MAX;
}

void serve_metrics_init(serve_metrics *m) {
    memset(m, 0, sizeof *m);
    int nl = (int)(sizeof lat_bounds / sizeof lat_bounds[0]);
    hist_init(&m->ttft, lat_bounds, nl);
    hist_init(&m->itl, lat_bounds, nl);
    hist_init(&m->queue, lat_bounds, nl);
    hist_init(&m->e2e, e2e_bounds, (int)(sizeof e2e_bounds / sizeof e2e_bounds[0]));
}

void serve_hist_observe(serve_hist *h, double s) {
    if (!(s > 0))
        s = 0;
    int i = 0;
    while (i < h->n_bounds && s > h->bounds[i])
        i++;
    atomic_fetch_add(&h->bucket[i], 1);
    atomic_fetch_add(&h->sum_ns, (uint64_t)(s * 1e9));
}

void serve_metrics_add_tiering(serve_metrics *m, const tiering_stats_t *st) {
    if (!st)
        return;
    atomic_fetch_add(&m->demoted, st->demoted);
    atomic_fetch_add(&m->recalled, st->recalled);
    atomic_fetch_add(&m->dropped, st->dropped);
    atomic_fetch_add(&m->lost, st->lost);
    atomic_fetch_add(&m->recall_bytes, st->recall_bytes);
    atomic_fetch_add(&m->put_bytes, st->put_bytes);
    atomic_fetch_add(&m->summaries, st->summaries);
    if (st->degraded)
        atomic_fetch_add(&m->degraded_runs, 1);
    atomic_store(&m->degraded, st->degraded ? 1 : 0);
}

const char *serve_metrics_result_name(gen_result_t r) {
    static const char *names[GEN_NRESULTS] = {
        "ok",          "invalid_argument",  "failed",
        "cancelled",   "deadline_exceeded", "resource_exhausted",
        "unavailable", "already_exists"};
    return r >= 0 && r < GEN_NRESULTS ? names[r] : "unknown";
}

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
    char lbl[300]; /* model_name="..." */
} sbuf;

static void put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *b, const char *fmt, ...) {
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->buf + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t nc = (b->cap + (size_t)n + 1) * 2;
        char *p = realloc(b->buf, nc);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->buf = p, b->cap = nc;
    }
}

static void head(sbuf *b, const char *name, const char *type, const char *help) {
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(sbuf *b, const char *name, const char *help, uint64_t v) {
    head(b, name, "counter", help);
    put(b, "%s{%s} %llu\n", name, b->lbl, (unsigned long long)v);
}

static void gauge(sbuf *b, const char *name, const char *help, double v) {
    head(b, name, "gauge", help);
    put(b, "%s{%s} %.17g\n", name, b->lbl, v);
}

static void hist(sbuf *b, const char *name, const char *help, const serve_hist *h) {
    head(b, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i <= h->n_bounds; i++) {
        cum += atomic_load(&h->bucket[i]);
        if (i < h->n_bounds)
            put(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, b->lbl, h->bounds[i],
                (unsigned long long)cum);
        else
            put(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, b->lbl, (unsigned long long)cum);
    }
    put(b, "%s_sum{%s} %.9f\n", name, b->lbl, (double)atomic_load(&h->sum_ns) * 1e-9);
    put(b, "%s_count{%s} %llu\n", name, b->lbl, (unsigned long long)cum);
}

/* model_name="..." with \ " and newlines escaped (the text format's rule). */
static void label_init(sbuf *b, const char *model) {
    size_t o = (size_t)snprintf(b->lbl, sizeof b->lbl, "model_name=\"");
    for (const char *p = model ? model : ""; *p && o + 4 < sizeof b->lbl; p++) {
        if (*p == '\\' || *p == '"')
            b->lbl[o++] = '\\', b->lbl[o++] = *p;
        else if (*p == '\n')
            b->lbl[o++] = '\\', b->lbl[o++] = 'n';
        else
            b->lbl[o++] = *p;
    }
    b->lbl[o++] = '"';
    b->lbl[o] = 0;
}

char *serve_metrics_render(const serve_metrics *m, const char *model_name, uint64_t uptime_s,
                           size_t *len) {
    sbuf b = {malloc(8192), 0, 8192, 0, {0}};
    if (!b.buf)
        return NULL;
    label_init(&b, model_name);
    head(&b, "kvtier_worker_generations_total", "counter",
         "Generations (gRPC Generate and HTTP completions) by outcome.");
    for (int i = 0; i < GEN_NRESULTS; i++)
        put(&b, "kvtier_worker_generations_total{%s,result=\"%s\"} %llu\n", b.lbl,
            serve_metrics_result_name((gen_result_t)i),
            (unsigned long long)atomic_load(&m->generations[i]));
    gauge(&b, "kvtier_worker_requests_running", "Generations running now (holding a slot).",
          (double)atomic_load(&m->running));
    gauge(&b, "kvtier_worker_requests_waiting", "Generations queued for a slot.",
          (double)atomic_load(&m->waiting));
    long long hot = atomic_load(&m->kv_hot_bytes);
    gauge(&b, "kvtier_worker_kv_hot_bytes", "Hot KV bytes of the running generations.",
          (double)(hot > 0 ? hot : 0));
    hist(&b, "kvtier_worker_time_to_first_token_seconds",
         "From the request's arrival to its first token.", &m->ttft);
    hist(&b, "kvtier_worker_inter_token_latency_seconds", "Between consecutive tokens.", &m->itl);
    hist(&b, "kvtier_worker_e2e_request_latency_seconds",
         "From the request's arrival to its last token.", &m->e2e);
    hist(&b, "kvtier_worker_request_queue_time_seconds", "Time a request waited for a slot.",
         &m->queue);
    gauge(&b, "kvtier_worker_degraded",
          "1 when the latest tiered generation could not reach the tier service.",
          (double)atomic_load(&m->degraded));
    counter(&b, "kvtier_worker_degraded_generations_total",
            "Tiered generations that ran degraded (tier service failed).",
            atomic_load(&m->degraded_runs));
    counter(&b, "kvtier_worker_prompt_tokens_total", "Prompt tokens prefilled.",
            atomic_load(&m->prompt_tokens));
    counter(&b, "kvtier_worker_generated_tokens_total", "Tokens generated.",
            atomic_load(&m->generated_tokens));
    counter(&b, "kvtier_worker_blocks_demoted_total", "KV blocks put to the tier service.",
            atomic_load(&m->demoted));
    counter(&b, "kvtier_worker_blocks_recalled_total", "KV blocks fetched back (revivals).",
            atomic_load(&m->recalled));
    counter(&b, "kvtier_worker_blocks_dropped_total", "KV blocks forgotten.",
            atomic_load(&m->dropped));
    counter(&b, "kvtier_worker_blocks_lost_total",
            "Demoted KV blocks the tier service no longer had.", atomic_load(&m->lost));
    counter(&b, "kvtier_worker_recall_bytes_total", "Payload bytes fetched back.",
            atomic_load(&m->recall_bytes));
    counter(&b, "kvtier_worker_put_bytes_total", "Payload bytes put to the tier service.",
            atomic_load(&m->put_bytes));
    counter(&b, "kvtier_worker_summaries_total", "Attention summaries sent.",
            atomic_load(&m->summaries));
    counter(&b, "kvtier_worker_tier_timeouts_total",
            "Tier service calls that ran into their deadline.", atomic_load(&m->tier_timeouts));
    counter(&b, "kvtier_worker_tier_calls_skipped_total",
            "Tier service calls skipped right after a timeout (no deadline waited).",
            atomic_load(&m->tier_skipped));
    head(&b, "kvtier_worker_decode_seconds_total", "counter", "Wall time of decode steps.");
    put(&b, "kvtier_worker_decode_seconds_total{%s} %.9f\n", b.lbl,
        (double)atomic_load(&m->decode_ns) * 1e-9);
    counter(&b, "kvtier_worker_decode_steps_total", "Decode forward passes.",
            atomic_load(&m->decode_steps));
    gauge(&b, "kvtier_worker_uptime_seconds", "Seconds since start.", (double)uptime_s);
    if (b.oom) {
        free(b.buf);
        return NULL;
    }
    *len = b.len;
    return b.buf;
}
