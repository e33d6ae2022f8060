/* ctl_cluster.c - `kvtierctl cluster`: every shard's health, bytes per tier
 * and sequences, side by side, and the cluster's total. */
#include "ctl_cluster.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ctl_print.h"

static int push(char ***v, int *n, const char *s, size_t len) {
    char **p = realloc(*v, (size_t)(*n + 1) * sizeof *p);
    if (!p)
        return -1;
    *v = p;
    p[*n] = malloc(len + 1);
    if (!p[*n])
        return -1;
    memcpy(p[*n], s, len);
    p[*n][len] = 0;
    (*n)++;
    return 0;
}

/* Splits a space/comma separated list into *v. */
static int split(const char *s, char ***v, int *n) {
    while (*s) {
        size_t skip = strspn(s, " ,\t\r\n\"'");
        s += skip;
        size_t len = strcspn(s, " ,\t\r\n\"'");
        if (len && push(v, n, s, len) != 0)
            return -1;
        s += len;
    }
    return 0;
}

int ctl_cluster_servers(const char *const *args, size_t nargs, char ***out, char *err,
                        size_t errlen) {
    char **v = NULL;
    int n = 0;
    FILE *f = nargs == 1 ? fopen(args[0], "r") : NULL;
    if (f) {
        char line[4096];
        while (fgets(line, sizeof line, f))
            if (strncmp(line, "KVTIER_SHARDS=", 14) == 0 && split(line + 14, &v, &n) != 0) {
                fclose(f);
                ctl_cluster_free_list(v, n);
                return -1;
            }
        fclose(f);
        if (n == 0)
            snprintf(err, errlen, "%s has no KVTIER_SHARDS line (an ops/cluster.sh cluster.env?)",
                     args[0]);
    } else if (nargs) {
        for (size_t i = 0; i < nargs; i++)
            if (split(args[i], &v, &n) != 0) {
                ctl_cluster_free_list(v, n);
                return -1;
            }
    } else {
        const char *env = getenv("KVTIER_SHARDS");
        if (env && split(env, &v, &n) != 0) {
            ctl_cluster_free_list(v, n);
            return -1;
        }
        if (n == 0)
            snprintf(err, errlen,
                     "no shards: give RUNDIR/cluster.env, addresses, or set KVTIER_SHARDS");
    }
    *out = v;
    return n;
}

void ctl_cluster_free_list(char **v, int n) {
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

typedef struct {
    int ok; /* answered */
    kvtier_health h;
    kvtier_stats st;
    size_t n_seq;
    char err[KVTIER_ERR_MAX + 64];
} shard_view;

static void ask(const char *addr, const kvtier_connect_opts *base, shard_view *sv) {
    kvtier_connect_opts o = *base;
    o.address = addr;
    kvtier_error e;
    memset(sv, 0, sizeof *sv);
    kvtier_client *c = kvtier_connect(&o, &e);
    kvtier_seq_info *seqs = NULL;
    if (!c || kvtier_health_check(c, &sv->h, &e) != KVTIER_OK ||
        kvtier_stats_get(c, &sv->st, &e) != KVTIER_OK ||
        kvtier_list_sequences(c, o.tenant, &seqs, &sv->n_seq, &e) != KVTIER_OK) {
        snprintf(sv->err, sizeof sv->err, "%s: %s", kvtier_code_name(e.code), e.message);
    } else {
        sv->ok = 1;
    }
    kvtier_free(seqs);
    kvtier_client_free(c);
}

int ctl_cluster_report(FILE *out, char **servers, int n, const kvtier_connect_opts *base,
                       int json) {
    shard_view *v = calloc((size_t)n, sizeof *v);
    if (!v) {
        fprintf(stderr, "kvtierctl: out of memory\n");
        return 1;
    }
    int all = 1;
    uint64_t tb[KVTIER_NTIERS] = {0}, tn[KVTIER_NTIERS] = {0}, seqs = 0, bad = 0;
    for (int i = 0; i < n; i++) {
        ask(servers[i], base, &v[i]);
        int serving = v[i].ok && strcmp(v[i].h.status, "SERVING") == 0 && !v[i].h.degraded;
        all &= serving;
        if (!v[i].ok)
            continue;
        for (int t = 0; t < KVTIER_NTIERS; t++) {
            tb[t] += v[i].st.tier[t].bytes;
            tn[t] += v[i].st.tier[t].blocks;
        }
        seqs += v[i].n_seq;
        bad += v[i].st.checksum_failures;
    }
    if (json) {
        cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "shards");
        for (int i = 0; i < n; i++) {
            cJSON *s = cJSON_CreateObject();
            cJSON_AddStringToObject(s, "address", servers[i]);
            cJSON_AddStringToObject(s, "status", v[i].ok ? v[i].h.status : "UNREACHABLE");
            if (!v[i].ok) {
                cJSON_AddStringToObject(s, "error", v[i].err);
            } else {
                ctl_json_u64(s, "sequences", v[i].n_seq);
                ctl_json_u64(s, "host_blocks", v[i].st.tier[KVTIER_TIER_HOST].blocks);
                ctl_json_u64(s, "host_bytes", v[i].st.tier[KVTIER_TIER_HOST].bytes);
                ctl_json_u64(s, "ssd_blocks", v[i].st.tier[KVTIER_TIER_SSD].blocks);
                ctl_json_u64(s, "ssd_bytes", v[i].st.tier[KVTIER_TIER_SSD].bytes);
                ctl_json_u64(s, "checksum_failures", v[i].st.checksum_failures);
                ctl_json_u64(s, "uptime_s", v[i].h.uptime_s);
            }
            cJSON_AddItemToArray(arr, s);
        }
        cJSON *t = cJSON_AddObjectToObject(root, "total");
        ctl_json_u64(t, "sequences", seqs);
        ctl_json_u64(t, "host_bytes", tb[KVTIER_TIER_HOST]);
        ctl_json_u64(t, "ssd_bytes", tb[KVTIER_TIER_SSD]);
        cJSON_AddBoolToObject(root, "all_serving", all);
        int rc = ctl_json_print(out, root);
        free(v);
        return rc ? 1 : (all ? 0 : 1);
    }
    fprintf(out, "%-22s %-11s %9s %18s %18s %9s\n", "shard", "status", "sequences",
            "HOST blocks/bytes", "SSD blocks/bytes", "bad crc");
    char b1[32], b2[32], c1[48], c2[48];
    for (int i = 0; i < n; i++) {
        if (!v[i].ok) {
            fprintf(out, "%-22s %-11s %s\n", servers[i], "UNREACHABLE", v[i].err);
            continue;
        }
        const kvtier_tier_stats *h = &v[i].st.tier[KVTIER_TIER_HOST];
        const kvtier_tier_stats *s = &v[i].st.tier[KVTIER_TIER_SSD];
        snprintf(c1, sizeof c1, "%" PRIu64 " / %s", h->blocks, ctl_bytes(h->bytes, b1, sizeof b1));
        snprintf(c2, sizeof c2, "%" PRIu64 " / %s", s->blocks, ctl_bytes(s->bytes, b2, sizeof b2));
        fprintf(out, "%-22s %-11s %9zu %18s %18s %9" PRIu64 "%s%s\n", servers[i], v[i].h.status,
                v[i].n_seq, c1, c2, v[i].st.checksum_failures, v[i].h.degraded ? "  " : "",
                v[i].h.degraded ? v[i].h.detail : "");
    }
    snprintf(c1, sizeof c1, "%" PRIu64 " / %s", tn[KVTIER_TIER_HOST],
             ctl_bytes(tb[KVTIER_TIER_HOST], b1, sizeof b1));
    snprintf(c2, sizeof c2, "%" PRIu64 " / %s", tn[KVTIER_TIER_SSD],
             ctl_bytes(tb[KVTIER_TIER_SSD], b2, sizeof b2));
    fprintf(out, "%-22s %-11s %9" PRIu64 " %18s %18s %9" PRIu64 "\n", "total",
            all ? "SERVING" : "NOT ALL", seqs, c1, c2, bad);
    free(v);
    return all ? 0 : 1;
}
