/* metrics.c - counters, histograms and Prometheus text rendering (pure). */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc.h"

/* Upper bounds of the finite buckets, seconds. */
static const double k_bounds[METRICS_NBUCKETS - 1] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0};

static const char *k_methods[METRICS_NMETHODS] = {
    "/kvtier.v1.Tier/OpenSequence",    "/kvtier.v1.Tier/Summarize",
    "/kvtier.v1.Tier/PutBlocks",       "/kvtier.v1.Tier/FetchBlocks",
    "/kvtier.v1.Tier/PutBlockBatches", "/kvtier.v1.Tier/FetchBlockBatches",
    "/kvtier.v1.Tier/CloseSequence",   "/kvtier.v1.Admin/ListSequences",
    "/kvtier.v1.Admin/GetTierMap",     "/kvtier.v1.Admin/GetStats",
    "/kvtier.v1.Admin/Evict",          "/kvtier.v1.Admin/Drain",
    "/kvtier.v1.Admin/Health",         "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",    "other"};

static const char *k_tiers[TIER_NLEVELS] = {"hot", "host", "ssd", "dropped", "none"};
static const char *k_kinds[POLICY_NKINDS] = {"keep_hot", "demote_host", "demote_ssd", "drop",
                                             "prefetch"};

void metrics_init(metrics *m) {
    memset(m, 0, sizeof *m);
}

void metrics_observe(metrics_hist *h, uint64_t ns) {
    double s = (double)ns / 1e9;
    int b = 0;
    while (b < METRICS_NBUCKETS - 1 && s > k_bounds[b])
        b++;
    atomic_fetch_add(&h->bucket[b], 1);
    atomic_fetch_add(&h->count, 1);
    atomic_fetch_add(&h->sum_ns, ns);
}

double metrics_quantile(const metrics_hist *h, double q) {
    uint64_t c[METRICS_NBUCKETS], total = 0;
    for (int i = 0; i < METRICS_NBUCKETS; i++)
        total += c[i] = atomic_load(&h->bucket[i]);
    if (total == 0)
        return 0.0;
    double rank = q * (double)total, cum = 0;
    for (int i = 0; i < METRICS_NBUCKETS; i++) {
        if (c[i] && cum + (double)c[i] >= rank) {
            if (i == METRICS_NBUCKETS - 1)
                return k_bounds[METRICS_NBUCKETS - 2];
            double lo = i ? k_bounds[i - 1] : 0.0, hi = k_bounds[i];
            return lo + (hi - lo) * ((rank - cum) / (double)c[i]);
        }
        cum += (double)c[i];
    }
    return k_bounds[METRICS_NBUCKETS - 2];
}

void metrics_rpc(metrics *m, const char *method, grpc_status_code code, uint64_t ns) {
    int i = 0;
    while (i < METRICS_NMETHODS - 1 && strcmp(k_methods[i], method) != 0)
        i++;
    int c = ((int)code >= 0 && (int)code < METRICS_NCODES) ? (int)code : GRPC_STATUS_UNKNOWN;
    atomic_fetch_add(&m->rpc[i][c], 1);
    metrics_observe(&m->rpc_latency[i], ns);
}

/* ---------------------------------------------------------------- rendering */

static void head(FILE *f, const char *name, const char *type, const char *help) {
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One histogram series; labels like `tier="ssd"` or "" for none. */
static void hist(FILE *f, const char *name, const char *labels, const metrics_hist *h) {
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (int i = 0; i < METRICS_NBUCKETS; i++) {
        cum += atomic_load(&h->bucket[i]);
        if (i < METRICS_NBUCKETS - 1)
            fprintf(f, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, k_bounds[i],
                    (unsigned long long)cum);
        else
            fprintf(f, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                    (unsigned long long)cum);
    }
    if (labels[0]) {
        fprintf(f, "%s_sum{%s} %.9f\n", name, labels, (double)atomic_load(&h->sum_ns) / 1e9);
        fprintf(f, "%s_count{%s} %llu\n", name, labels, (unsigned long long)atomic_load(&h->count));
    } else {
        fprintf(f, "%s_sum %.9f\n", name, (double)atomic_load(&h->sum_ns) / 1e9);
        fprintf(f, "%s_count %llu\n", name, (unsigned long long)atomic_load(&h->count));
    }
}

/* A per-tier series over HOT..DROPPED. */
static void per_tier(FILE *f, const char *name, const char *type, const char *help,
                     const tier_stats *st, size_t off, int lo, int hi) {
    head(f, name, type, help);
    for (int t = lo; t <= hi; t++) {
        const uint64_t *v = (const uint64_t *)((const char *)&st->level[t] + off);
        fprintf(f, "%s{tier=\"%s\"} %llu\n", name, k_tiers[t], (unsigned long long)*v);
    }
}

char *metrics_render(const metrics *m, const tier_stats *st, uint64_t uptime_s, const char *version,
                     size_t *len) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return NULL;

    head(f, "kvtier_build_info", "gauge", "Build information of kvtierd.");
    fprintf(f, "kvtier_build_info{version=\"%s\"} 1\n", version);
    head(f, "kvtier_uptime_seconds", "gauge", "Seconds since kvtierd started.");
    fprintf(f, "kvtier_uptime_seconds %llu\n", (unsigned long long)uptime_s);

    per_tier(f, "kvtier_tier_blocks", "gauge", "Blocks now in each tier (all sequences).", st,
             offsetof(tier_level_stats, blocks), TIER_HOT, TIER_DROPPED);
    per_tier(f, "kvtier_tier_bytes", "gauge", "Payload bytes now in each tier.", st,
             offsetof(tier_level_stats, bytes), TIER_HOT, TIER_SSD);
    head(f, "kvtier_tier_budget_bytes", "gauge", "Byte budget of each service tier.");
    fprintf(f, "kvtier_tier_budget_bytes{tier=\"host\"} %llu\n",
            (unsigned long long)st->host_budget);
    fprintf(f, "kvtier_tier_budget_bytes{tier=\"ssd\"} %llu\n", (unsigned long long)st->ssd_budget);
    per_tier(f, "kvtier_tier_hits_total", "counter", "Fetches served from each tier.", st,
             offsetof(tier_level_stats, hits), TIER_HOST, TIER_SSD);
    per_tier(f, "kvtier_tier_misses_total", "counter",
             "Fetches that did not find the block in this tier.", st,
             offsetof(tier_level_stats, misses), TIER_HOST, TIER_SSD);
    per_tier(f, "kvtier_tier_puts_total", "counter", "Payloads written into each tier.", st,
             offsetof(tier_level_stats, puts), TIER_HOST, TIER_SSD);
    per_tier(f, "kvtier_tier_fetches_total", "counter", "Fetch calls that reached each tier.", st,
             offsetof(tier_level_stats, fetches), TIER_HOST, TIER_SSD);
    per_tier(f, "kvtier_tier_revivals_total", "counter",
             "Recalls reported for blocks that were in each tier.", st,
             offsetof(tier_level_stats, revivals), TIER_HOST, TIER_SSD);
    head(f, "kvtier_tier_hit_ratio", "gauge", "hits / (hits + misses) of each tier; 0 before any.");
    for (int t = TIER_HOST; t <= TIER_SSD; t++) {
        uint64_t h = st->level[t].hits, mi = st->level[t].misses;
        fprintf(f, "kvtier_tier_hit_ratio{tier=\"%s\"} %g\n", k_tiers[t],
                h + mi ? (double)h / (double)(h + mi) : 0.0);
    }
    uint64_t rev = 0;
    for (int t = 0; t < TIER_NLEVELS; t++)
        rev += st->level[t].revivals;
    head(f, "kvtier_revivals_total", "counter", "Demoted blocks recalled to HOT.");
    fprintf(f, "kvtier_revivals_total %llu\n", (unsigned long long)rev);

    head(f, "kvtier_decisions_total", "counter", "Placement decisions returned, by kind.");
    for (int k = 0; k < POLICY_NKINDS; k++)
        fprintf(f, "kvtier_decisions_total{kind=\"%s\"} %llu\n", k_kinds[k],
                (unsigned long long)st->decisions[k]);
    head(f, "kvtier_sequences", "gauge", "Sequences known, open or closed and retained.");
    fprintf(f, "kvtier_sequences{state=\"open\"} %llu\n", (unsigned long long)st->sequences_open);
    fprintf(f, "kvtier_sequences{state=\"retained\"} %llu\n",
            (unsigned long long)st->sequences_retained);
    head(f, "kvtier_dataloss_total", "counter", "Checksum or key mismatches (put and fetch).");
    fprintf(f, "kvtier_dataloss_total %llu\n", (unsigned long long)st->dataloss);
    head(f, "kvtier_fetch_not_found_total", "counter", "Block fetches answered NOT_FOUND.");
    fprintf(f, "kvtier_fetch_not_found_total %llu\n", (unsigned long long)st->not_found);

    head(f, "kvtier_put_bytes_total", "counter", "Payload bytes accepted by PutBlocks.");
    fprintf(f, "kvtier_put_bytes_total %llu\n", (unsigned long long)atomic_load(&m->put_bytes));
    head(f, "kvtier_fetch_bytes_total", "counter", "Payload bytes served by FetchBlocks.");
    fprintf(f, "kvtier_fetch_bytes_total %llu\n", (unsigned long long)atomic_load(&m->fetch_bytes));
    head(f, "kvtier_put_errors_total", "counter", "Blocks refused by PutBlocks, by gRPC code.");
    for (int c = 1; c < METRICS_NCODES; c++)
        fprintf(f, "kvtier_put_errors_total{code=\"%s\"} %llu\n",
                rpc_status_name((grpc_status_code)c),
                (unsigned long long)atomic_load(&m->put_errors[c]));
    head(f, "kvtier_put_seconds", "histogram",
         "Time to store one block durably (per write policy).");
    hist(f, "kvtier_put_seconds", "", &m->put);
    head(f, "kvtier_fetch_seconds", "histogram", "Time to read one block, by tier served from.");
    for (int t = TIER_HOST; t <= TIER_SSD; t++) {
        char l[32];
        snprintf(l, sizeof l, "tier=\"%s\"", k_tiers[t]);
        hist(f, "kvtier_fetch_seconds", l, &m->fetch[t]);
    }

    head(f, "kvtier_rpc_requests_total", "counter", "Finished RPCs by method and status code.");
    for (int i = 0; i < METRICS_NMETHODS; i++)
        for (int c = 0; c < METRICS_NCODES; c++) {
            uint64_t v = atomic_load(&m->rpc[i][c]);
            if (v || c == 0)
                fprintf(f, "kvtier_rpc_requests_total{method=\"%s\",code=\"%s\"} %llu\n",
                        k_methods[i], rpc_status_name((grpc_status_code)c), (unsigned long long)v);
        }
    head(f, "kvtier_rpc_duration_seconds", "histogram", "Duration of finished RPCs by method.");
    for (int i = 0; i < METRICS_NMETHODS; i++) {
        if (atomic_load(&m->rpc_latency[i].count) == 0)
            continue;
        char l[96];
        snprintf(l, sizeof l, "method=\"%s\"", k_methods[i]);
        hist(f, "kvtier_rpc_duration_seconds", l, &m->rpc_latency[i]);
    }

    head(f, "kvtier_rocksdb_live_data_bytes", "gauge", "RocksDB estimate-live-data-size.");
    fprintf(f, "kvtier_rocksdb_live_data_bytes %llu\n", (unsigned long long)st->rocksdb_live_bytes);
    head(f, "kvtier_rocksdb_memtable_bytes", "gauge", "RocksDB cur-size-all-mem-tables.");
    fprintf(f, "kvtier_rocksdb_memtable_bytes %llu\n",
            (unsigned long long)st->rocksdb_memtable_bytes);
    head(f, "kvtier_rocksdb_sst_bytes", "gauge", "RocksDB total-sst-files-size.");
    fprintf(f, "kvtier_rocksdb_sst_bytes %llu\n", (unsigned long long)st->rocksdb_sst_bytes);

    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    if (len)
        *len = n;
    return buf;
}
