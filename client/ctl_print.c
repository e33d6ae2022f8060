/* ctl_print.c — kvtierctl: tables and JSON for health, stats, sequences and
 * the tier map. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_map.h"
#include "ctl_print.h"

/* ---------------------------------------------------------------- helpers */

char *ctl_bytes(uint64_t bytes, char *buf, size_t len) {
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) {
        snprintf(buf, len, "%" PRIu64 " B", bytes);
        return buf;
    }
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 6) {
        v /= 1024.0;
        u++;
    }
    if (v >= 1023.5 && u < 6) { /* "1024 KiB" after rounding reads badly */
        v /= 1024.0;
        u++;
    }
    snprintf(buf, len, v >= 100 ? "%.0f %s" : v >= 10 ? "%.1f %s" : "%.2f %s", v, units[u]);
    return buf;
}

static void uptime(uint64_t s, char *buf, size_t len) {
    if (s < 60)
        snprintf(buf, len, "%" PRIu64 "s", s);
    else if (s < 3600)
        snprintf(buf, len, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, len, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, s / 60 % 60);
    else
        snprintf(buf, len, "%" PRIu64 "d%02" PRIu64 "h", s / 86400, s / 3600 % 24);
}

static const int k_tiers[] = {KVTIER_TIER_HOT, KVTIER_TIER_HOST, KVTIER_TIER_SSD,
                              KVTIER_TIER_DROPPED};

/* ---------------------------------------------------------------- human */

void ctl_print_health(FILE *out, const char *addr, const kvtier_health *h) {
    char up[32];
    uptime(h->uptime_s, up, sizeof up);
    fprintf(out, "kvtierd at %s: %s", addr, h->status[0] ? h->status : "(no status)");
    if (h->version[0])
        fprintf(out, "  version %s", h->version);
    fprintf(out, "  up %s", up);
    if (h->degraded)
        fputs("  DEGRADED", out);
    fputc('\n', out);
    if (h->detail[0])
        fprintf(out, "  %s\n", h->detail);
}

void ctl_print_stats(FILE *out, const kvtier_stats *s) {
    fprintf(out, "%-8s %10s %11s %11s %10s %10s %10s %12s %12s\n", "TIER", "BLOCKS", "BYTES",
            "BUDGET", "HITS", "PUTS", "FETCHES", "FETCH p50", "FETCH p99");
    for (size_t i = 0; i < sizeof k_tiers / sizeof k_tiers[0]; i++) {
        const kvtier_tier_stats *t = &s->tier[k_tiers[i]];
        char b[32], bud[32], p50[32], p99[32];
        ctl_bytes(t->bytes, b, sizeof b);
        if (t->budget_bytes)
            ctl_bytes(t->budget_bytes, bud, sizeof bud);
        else
            snprintf(bud, sizeof bud, "-");
        if (t->fetches || t->fetch_p50_us > 0) {
            snprintf(p50, sizeof p50, "%.1f us", t->fetch_p50_us);
            snprintf(p99, sizeof p99, "%.1f us", t->fetch_p99_us);
        } else {
            snprintf(p50, sizeof p50, "-");
            snprintf(p99, sizeof p99, "-");
        }
        fprintf(out,
                "%-8s %10" PRIu64 " %11s %11s %10" PRIu64 " %10" PRIu64 " %10" PRIu64
                " %12s %12s\n",
                kvtier_tier_name(k_tiers[i]), t->blocks, b, bud, t->hits, t->puts, t->fetches, p50,
                p99);
    }
    fprintf(out, "\nsequences %" PRIu64 "   revivals %" PRIu64 "   checksum failures %" PRIu64 "\n",
            s->sequences, s->revivals, s->checksum_failures);
    fputs("decisions:", out);
    for (int k = KVTIER_DECISION_KEEP_HOT; k < KVTIER_NDECISIONS; k++)
        fprintf(out, "  %s %" PRIu64, kvtier_decision_name(k), s->decisions[k]);
    fputc('\n', out);
}

void ctl_print_sequences(FILE *out, const kvtier_seq_info *v, size_t n) {
    if (n == 0) {
        fputs("no sequences\n", out);
        return;
    }
    fprintf(out, "%-16s %20s %6s %6s %10s %8s %8s %8s %8s %10s %s\n", "TENANT", "SEQUENCE",
            "LAYERS", "BTOK", "BLOCK", "HOT", "HOST", "SSD", "DROPPED", "STEP", "STATE");
    for (size_t i = 0; i < n; i++) {
        char bb[32];
        ctl_bytes(v[i].block_bytes, bb, sizeof bb);
        fprintf(out,
                "%-16s %20" PRIu64 " %6" PRIu32 " %6" PRIu32 " %10s %8" PRIu64 " %8" PRIu64
                " %8" PRIu64 " %8" PRIu64 " %10" PRIu64 " %s\n",
                v[i].tenant[0] ? v[i].tenant : "-", v[i].sequence_id, v[i].layers,
                v[i].block_tokens, bb, v[i].blocks[KVTIER_TIER_HOT], v[i].blocks[KVTIER_TIER_HOST],
                v[i].blocks[KVTIER_TIER_SSD], v[i].blocks[KVTIER_TIER_DROPPED], v[i].last_step,
                v[i].open ? "open" : "retained");
    }
}

/* ---------------------------------------------------------------- JSON */

/* Unsigned integers are written as exact JSON integers (cJSON numbers are
 * doubles: a 64-bit sequence id would lose its low bits). */
void ctl_json_u64(cJSON *o, const char *k, uint64_t v) {
    char b[24];
    snprintf(b, sizeof b, "%" PRIu64, v);
    cJSON_AddRawToObject(o, k, b);
}

static void num(cJSON *o, const char *k, double v) {
    cJSON_AddNumberToObject(o, k, v);
}

cJSON *ctl_json_health(const kvtier_health *h) {
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    cJSON_AddStringToObject(j, "status", h->status);
    cJSON_AddStringToObject(j, "version", h->version);
    ctl_json_u64(j, "uptime_s", h->uptime_s);
    cJSON_AddBoolToObject(j, "degraded", h->degraded);
    cJSON_AddStringToObject(j, "detail", h->detail);
    return j;
}

cJSON *ctl_json_stats(const kvtier_stats *s) {
    cJSON *j = cJSON_CreateObject();
    cJSON *tiers = cJSON_AddObjectToObject(j, "tiers");
    if (!tiers) {
        cJSON_Delete(j);
        return NULL;
    }
    for (size_t i = 0; i < sizeof k_tiers / sizeof k_tiers[0]; i++) {
        const kvtier_tier_stats *t = &s->tier[k_tiers[i]];
        cJSON *o = cJSON_AddObjectToObject(tiers, kvtier_tier_name(k_tiers[i]));
        if (!o)
            continue;
        ctl_json_u64(o, "blocks", t->blocks);
        ctl_json_u64(o, "bytes", t->bytes);
        ctl_json_u64(o, "budget_bytes", t->budget_bytes);
        ctl_json_u64(o, "hits", t->hits);
        ctl_json_u64(o, "puts", t->puts);
        ctl_json_u64(o, "fetches", t->fetches);
        num(o, "fetch_latency_p50_us", t->fetch_p50_us);
        num(o, "fetch_latency_p99_us", t->fetch_p99_us);
    }
    ctl_json_u64(j, "revivals", s->revivals);
    ctl_json_u64(j, "sequences", s->sequences);
    ctl_json_u64(j, "checksum_failures", s->checksum_failures);
    cJSON *d = cJSON_AddObjectToObject(j, "decisions");
    for (int k = KVTIER_DECISION_KEEP_HOT; d && k < KVTIER_NDECISIONS; k++)
        ctl_json_u64(d, kvtier_decision_name(k), s->decisions[k]);
    return j;
}

cJSON *ctl_json_sequences(const kvtier_seq_info *v, size_t n) {
    cJSON *j = cJSON_CreateObject();
    cJSON *a = cJSON_AddArrayToObject(j, "sequences");
    if (!a) {
        cJSON_Delete(j);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        if (!o)
            continue;
        cJSON_AddStringToObject(o, "tenant", v[i].tenant);
        ctl_json_u64(o, "sequence_id", v[i].sequence_id);
        ctl_json_u64(o, "layers", v[i].layers);
        ctl_json_u64(o, "block_tokens", v[i].block_tokens);
        ctl_json_u64(o, "block_bytes", v[i].block_bytes);
        cJSON *b = cJSON_AddObjectToObject(o, "blocks");
        for (size_t t = 0; b && t < sizeof k_tiers / sizeof k_tiers[0]; t++)
            ctl_json_u64(b, kvtier_tier_name(k_tiers[t]), v[i].blocks[k_tiers[t]]);
        ctl_json_u64(o, "last_step", v[i].last_step);
        cJSON_AddBoolToObject(o, "open", v[i].open);
        cJSON_AddItemToArray(a, o);
    }
    return j;
}

static cJSON *counts_json(const uint64_t c[KVTIER_NTIERS]) {
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    for (size_t t = 0; t < sizeof k_tiers / sizeof k_tiers[0]; t++)
        ctl_json_u64(o, kvtier_tier_name(k_tiers[t]), c[k_tiers[t]]);
    ctl_json_u64(o, "ABSENT", c[KVTIER_TIER_ABSENT]);
    return o;
}

cJSON *ctl_json_map(const kvtier_tier_map *m) {
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    ctl_json_u64(j, "sequence_id", m->sequence_id);
    ctl_json_u64(j, "layers", m->n_layers);
    ctl_json_u64(j, "blocks", m->n_blocks);
    cJSON *lg = cJSON_AddObjectToObject(j, "legend");
    for (int t = KVTIER_TIER_HOT; lg && t < KVTIER_NTIERS; t++) {
        char k[2] = {ctl_map_char(t), 0};
        cJSON_AddStringToObject(lg, k, kvtier_tier_name(t));
    }
    if (lg)
        cJSON_AddStringToObject(lg, " ", "ABSENT");
    uint64_t total[KVTIER_NTIERS] = {0};
    cJSON *rows = cJSON_CreateArray();
    char *cells = malloc((size_t)m->n_blocks + 1);
    if (!rows || !cells) {
        free(cells);
        cJSON_Delete(rows);
        cJSON_Delete(j);
        return NULL;
    }
    for (uint32_t i = 0; i < m->n_layers; i++) {
        uint64_t c[KVTIER_NTIERS] = {0};
        const uint8_t *row = m->tiers + (size_t)i * m->n_blocks;
        for (uint32_t b = 0; b < m->n_blocks; b++) {
            int t = row[b] < KVTIER_NTIERS ? row[b] : KVTIER_TIER_ABSENT;
            cells[b] = ctl_map_char(t);
            c[t]++;
            total[t]++;
        }
        cells[m->n_blocks] = 0;
        cJSON *o = cJSON_CreateObject();
        if (!o)
            continue;
        ctl_json_u64(o, "layer", m->layer_ids[i]);
        cJSON_AddStringToObject(o, "cells", cells);
        cJSON_AddItemToObject(o, "counts", counts_json(c));
        cJSON_AddItemToArray(rows, o);
    }
    free(cells);
    cJSON_AddItemToObject(j, "counts", counts_json(total));
    cJSON_AddItemToObject(j, "rows", rows);
    return j;
}

int ctl_json_print(FILE *out, cJSON *j) {
    if (!j)
        return -1;
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    if (!s)
        return -1;
    int rc = fprintf(out, "%s\n", s) < 0 ? -1 : 0;
    cJSON_free(s);
    return rc;
}
