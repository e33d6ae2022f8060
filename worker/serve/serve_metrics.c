/* serve_metrics.c - Prometheus text of the worker's counters (pure). */
#include "serve_metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} sbuf;

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

static void counter(sbuf *b, const char *name, const char *help, uint64_t v) {
    put(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
        (unsigned long long)v);
}

static void gauge(sbuf *b, const char *name, const char *help, double v) {
    put(b, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

char *serve_metrics_render(const serve_metrics *m, uint64_t uptime_s, size_t *len) {
    sbuf b = {malloc(4096), 0, 4096, 0};
    if (!b.buf)
        return NULL;
    static const char *results[GEN_NRESULTS] = {"ok", "invalid_argument", "failed", "cancelled"};
    put(&b, "# HELP kvtier_worker_generations_total Generate calls by result.\n"
            "# TYPE kvtier_worker_generations_total counter\n");
    for (int i = 0; i < GEN_NRESULTS; i++)
        put(&b, "kvtier_worker_generations_total{result=\"%s\"} %llu\n", results[i],
            (unsigned long long)atomic_load(&m->generations[i]));
    gauge(&b, "kvtier_worker_generations_running", "Generations running now.",
          (double)atomic_load(&m->running));
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
    put(&b,
        "# HELP kvtier_worker_decode_seconds_total Wall time of decode steps.\n"
        "# TYPE kvtier_worker_decode_seconds_total counter\n"
        "kvtier_worker_decode_seconds_total %.9f\n",
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
