/* ctl_print.h — kvtierctl: human tables and JSON documents for admin results.
 * Pure formatting: writes to a FILE* or builds cJSON trees, no RPC. */
#ifndef KVTIER_CTL_PRINT_H
#define KVTIER_CTL_PRINT_H

#include <stdio.h>

#include <cjson/cJSON.h>

#include "kvtier.h"

/* ctl_bytes: "512 B", "64.0 KiB", "1.50 GiB" (3 significant digits, binary
 * units) into buf[len]; returns buf. */
char *ctl_bytes(uint64_t bytes, char *buf, size_t len);

/* Human output. */
void ctl_print_health(FILE *out, const char *addr, const kvtier_health *h);
void ctl_print_stats(FILE *out, const kvtier_stats *s);
void ctl_print_sequences(FILE *out, const kvtier_seq_info *v, size_t n);

/* JSON documents (caller deletes with cJSON_Delete; NULL on OOM).
 * health: {"status","version","uptime_s","degraded","detail"}
 * stats:  {"tiers":{"HOT":{"blocks","bytes","budget_bytes","hits","puts","fetches",
 *          "fetch_latency_p50_us","fetch_latency_p99_us"},...},"revivals","sequences",
 *          "checksum_failures","decisions":{"DEMOTE_HOST":n,...}}
 * sequences: {"sequences":[{"tenant","sequence_id","layers","block_tokens","block_bytes",
 *          "blocks":{"HOT","HOST","SSD","DROPPED"},"last_step","open"}]}
 * map:    {"sequence_id","layers","blocks","legend":{"#":"HOT",...},
 *          "counts":{"HOT","HOST","SSD","DROPPED","ABSENT"},
 *          "rows":[{"layer","cells":"##hhss..","counts":{...}}]}
 * Counters and ids are exact JSON integers (full 64-bit range). */
cJSON *ctl_json_health(const kvtier_health *h);
cJSON *ctl_json_stats(const kvtier_stats *s);
cJSON *ctl_json_sequences(const kvtier_seq_info *v, size_t n);
cJSON *ctl_json_map(const kvtier_tier_map *m);

/* ctl_json_u64: adds key: v to object o as an exact JSON integer. */
void ctl_json_u64(cJSON *o, const char *k, uint64_t v);

/* ctl_json_print: prints j (formatted) and a newline; deletes j. Returns 0,
 * -1 when j is NULL or printing failed. */
int ctl_json_print(FILE *out, cJSON *j);

#endif
