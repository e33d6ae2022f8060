/* svc_admin.c - Admin service handlers: ListSequences, GetTierMap, GetStats,
 * Evict, Drain, Health (all unary, one tier.h call each). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvtier.pb-c.h"
#include "svc.h"
#include "svc_authz.h"
#include "svc_map.h"

#define ERRLEN 512

static uint64_t unix_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The tenant an Admin call acts on (svc_authz_tenant), or the call answered
 * INVALID_ARGUMENT / PERMISSION_DENIED. Returns 0/-1. */
static int admin_tenant(rpc_call *c, const char *field, char *out) {
    char err[ERRLEN];
    grpc_status_code code =
        svc_authz_tenant(rpc_call_identity(c), field, rpc_call_tenant(c), out, err, sizeof err);
    if (code != GRPC_STATUS_OK) {
        rpc_call_finish(c, code, "%s", err);
        return -1;
    }
    return 0;
}

/* The tenant a listing covers ("" = all: svc_authz_scope), or the call
 * answered. Returns 0/-1. */
static int admin_scope(rpc_call *c, const char *field, char *out) {
    char err[ERRLEN];
    grpc_status_code code =
        svc_authz_scope(rpc_call_identity(c), field, rpc_call_tenant(c), out, err, sizeof err);
    if (code != GRPC_STATUS_OK) {
        rpc_call_finish(c, code, "%s", err);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- ListSequences */

static void h_list(rpc_call *c, const ProtobufCMessage *msg, void *user) {
    svc_ctx *ctx = user;
    const Kvtier__V1__ListSequencesRequest *r = (const Kvtier__V1__ListSequencesRequest *)msg;
    /* Empty tenant (field and metadata) lists all tenants, or a tenant
     * token's own only. */
    char tenant[TIER_TENANT_MAX + 1], err[ERRLEN];
    if (admin_scope(c, r->tenant, tenant) != 0)
        return;
    tier_seq_desc *d = NULL;
    size_t n = 0;
    tier_status s = tier_seq_list(ctx->tier, tenant, &d, &n, err, sizeof err);
    if (s != TIER_OK) {
        rpc_call_finish(c, svc_status_code(s), "list sequences: %s", err);
        return;
    }
    Kvtier__V1__SequenceInfo *si = calloc(n ? n : 1, sizeof *si);
    Kvtier__V1__SequenceInfo **sp = calloc(n ? n : 1, sizeof *sp);
    if (!si || !sp) {
        rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory listing %zu sequences",
                        n);
    } else {
        for (size_t i = 0; i < n; i++) {
            kvtier__v1__sequence_info__init(&si[i]);
            si[i].tenant = d[i].tenant;
            si[i].sequence_id = d[i].seq;
            si[i].layers = d[i].info.n_layers;
            si[i].block_tokens = d[i].info.block_tokens;
            si[i].block_bytes = d[i].info.block_bytes;
            si[i].kv_heads = d[i].info.n_kv_heads;
            si[i].head_dim = d[i].info.head_dim;
            si[i].blocks_hot = d[i].blocks[TIER_HOT];
            si[i].blocks_host = d[i].blocks[TIER_HOST];
            si[i].blocks_ssd = d[i].blocks[TIER_SSD];
            si[i].blocks_dropped = d[i].blocks[TIER_DROPPED];
            si[i].last_step = d[i].step;
            si[i].open = d[i].open != 0;
            sp[i] = &si[i];
        }
        Kvtier__V1__ListSequencesResponse resp = KVTIER__V1__LIST_SEQUENCES_RESPONSE__INIT;
        resp.n_sequences = n;
        resp.sequences = sp;
        rpc_call_reply(c, &resp.base);
    }
    free(si);
    free(sp);
    tier_buf_free(d);
}

/* ---------------------------------------------------------------- GetTierMap */

static void h_map(rpc_call *c, const ProtobufCMessage *msg, void *user) {
    svc_ctx *ctx = user;
    const Kvtier__V1__GetTierMapRequest *r = (const Kvtier__V1__GetTierMapRequest *)msg;
    char tenant[TIER_TENANT_MAX + 1], err[ERRLEN];
    if (admin_tenant(c, r->tenant, tenant) != 0)
        return;
    uint8_t *map = NULL;
    uint32_t nl = 0, nb = 0;
    tier_status s = tier_map(ctx->tier, tenant, r->sequence_id, &map, &nl, &nb, err, sizeof err);
    if (s != TIER_OK) {
        rpc_call_finish(c, svc_status_code(s), "tier map of %s/%llu: %s", tenant,
                        (unsigned long long)r->sequence_id, err);
        return;
    }
    Kvtier__V1__LayerTierMap *lm = calloc(nl ? nl : 1, sizeof *lm);
    Kvtier__V1__LayerTierMap **lp = calloc(nl ? nl : 1, sizeof *lp);
    Kvtier__V1__TierKind *kinds = calloc((size_t)nl * nb + 1, sizeof *kinds);
    if (!lm || !lp || !kinds) {
        rpc_call_finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory for a %u x %u tier map",
                        nl, nb);
    } else {
        for (uint32_t l = 0; l < nl; l++) {
            kvtier__v1__layer_tier_map__init(&lm[l]);
            lm[l].layer = l;
            lm[l].n_tiers = nb;
            lm[l].tiers = kinds + (size_t)l * nb;
            for (uint32_t b = 0; b < nb; b++)
                lm[l].tiers[b] = svc_tier_to_proto(map[(size_t)l * nb + b]);
            lp[l] = &lm[l];
        }
        Kvtier__V1__GetTierMapResponse resp = KVTIER__V1__GET_TIER_MAP_RESPONSE__INIT;
        resp.sequence_id = r->sequence_id;
        resp.n_layers = nl;
        resp.layers = lp;
        rpc_call_reply(c, &resp.base);
    }
    free(lm);
    free(lp);
    free(kinds);
    tier_buf_free(map);
}

/* ---------------------------------------------------------------- GetStats */

/* GetStats of a tenant token: its own sequences and their blocks per tier
 * (budgets, hits, latencies and decisions are the whole service's: zero). */
static void stats_own(rpc_call *c, svc_ctx *ctx, const char *tenant) {
    char err[ERRLEN];
    tier_seq_desc *d = NULL;
    size_t n = 0;
    tier_status s = tier_seq_list(ctx->tier, tenant, &d, &n, err, sizeof err);
    if (s != TIER_OK) {
        rpc_call_finish(c, svc_status_code(s), "stats of tenant %s: %s", tenant, err);
        return;
    }
    Kvtier__V1__TierStats ts[4], *tsp[4];
    for (int t = TIER_HOT; t <= TIER_DROPPED; t++) {
        kvtier__v1__tier_stats__init(&ts[t]);
        ts[t].tier = svc_tier_to_proto(t);
        for (size_t i = 0; i < n; i++) {
            ts[t].blocks += d[i].blocks[t];
            ts[t].bytes += d[i].bytes[t];
        }
        tsp[t] = &ts[t];
    }
    Kvtier__V1__GetStatsResponse resp = KVTIER__V1__GET_STATS_RESPONSE__INIT;
    resp.n_tiers = 4;
    resp.tiers = tsp;
    resp.sequences = n;
    rpc_call_reply(c, &resp.base);
    tier_buf_free(d);
}

static void h_stats(rpc_call *c, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    svc_ctx *ctx = user;
    const rpc_identity *id = rpc_call_identity(c);
    if (id && id->role != SVC_ROLE_OPERATOR) {
        stats_own(c, ctx, id->tenant);
        return;
    }
    tier_stats st;
    tier_stats_get(ctx->tier, &st);
    Kvtier__V1__TierStats ts[4], *tsp[4];
    for (int t = TIER_HOT; t <= TIER_DROPPED; t++) {
        kvtier__v1__tier_stats__init(&ts[t]);
        ts[t].tier = svc_tier_to_proto(t);
        ts[t].blocks = st.level[t].blocks;
        ts[t].bytes = st.level[t].bytes;
        ts[t].budget_bytes = t == TIER_HOST ? st.host_budget : t == TIER_SSD ? st.ssd_budget : 0;
        ts[t].hits = st.level[t].hits;
        ts[t].puts = st.level[t].puts;
        ts[t].fetches = st.level[t].fetches;
        ts[t].fetch_latency_p50_us = metrics_quantile(&ctx->m->fetch[t], 0.50) * 1e6;
        ts[t].fetch_latency_p99_us = metrics_quantile(&ctx->m->fetch[t], 0.99) * 1e6;
        tsp[t] = &ts[t];
    }
    Kvtier__V1__DecisionCount dc[POLICY_NKINDS], *dcp[POLICY_NKINDS];
    for (int k = 0; k < POLICY_NKINDS; k++) {
        kvtier__v1__decision_count__init(&dc[k]);
        dc[k].decision = svc_kind_to_proto(k);
        dc[k].count = st.decisions[k];
        dcp[k] = &dc[k];
    }
    Kvtier__V1__GetStatsResponse resp = KVTIER__V1__GET_STATS_RESPONSE__INIT;
    resp.n_tiers = 4;
    resp.tiers = tsp;
    for (int t = 0; t < TIER_NLEVELS; t++)
        resp.revivals += st.level[t].revivals;
    resp.n_decisions = POLICY_NKINDS;
    resp.decisions = dcp;
    resp.sequences = st.sequences_open + st.sequences_retained;
    resp.checksum_failures = st.dataloss;
    rpc_call_reply(c, &resp.base);
}

/* ---------------------------------------------------------------- Evict / Drain */

static void h_evict(rpc_call *c, const ProtobufCMessage *msg, void *user) {
    svc_ctx *ctx = user;
    const Kvtier__V1__EvictRequest *r = (const Kvtier__V1__EvictRequest *)msg;
    char tenant[TIER_TENANT_MAX + 1], err[ERRLEN];
    if (admin_tenant(c, r->tenant, tenant) != 0)
        return;
    int to = svc_tier_from_proto(r->to);
    if (to != TIER_HOST && to != TIER_SSD && to != TIER_DROPPED) {
        rpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
                        "evict %s/%llu: target must be TIER_HOST, TIER_SSD or TIER_DROPPED (HOT "
                        "blocks belong to the worker: it fetches them back itself)",
                        tenant, (unsigned long long)r->sequence_id);
        return;
    }
    if (r->has_layer && r->layer >= TIER_MAX_LAYERS) {
        rpc_call_finish(c, GRPC_STATUS_INVALID_ARGUMENT,
                        "evict %s/%llu: layer %u out of range (0..%d; leave has_layer unset for "
                        "all layers)",
                        tenant, (unsigned long long)r->sequence_id, r->layer, TIER_MAX_LAYERS - 1);
        return;
    }
    uint64_t moved = 0;
    tier_status s = tier_evict(ctx->tier, tenant, r->sequence_id, r->has_layer ? (int)r->layer : -1,
                               to, &moved, err, sizeof err);
    if (s != TIER_OK) {
        rpc_call_finish(c, svc_status_code(s), "evict %s/%llu: %s", tenant,
                        (unsigned long long)r->sequence_id, err);
        return;
    }
    Kvtier__V1__EvictResponse resp = KVTIER__V1__EVICT_RESPONSE__INIT;
    resp.blocks_moved = moved;
    rpc_call_reply(c, &resp.base);
}

static void h_drain(rpc_call *c, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    svc_ctx *ctx = user;
    char err[ERRLEN];
    uint64_t moved = 0;
    tier_status s = tier_drain(ctx->tier, &moved, err, sizeof err);
    if (s != TIER_OK) {
        rpc_call_finish(c, svc_status_code(s), "drain: %s", err);
        return;
    }
    Kvtier__V1__DrainResponse resp = KVTIER__V1__DRAIN_RESPONSE__INIT;
    resp.blocks_flushed = moved;
    rpc_call_reply(c, &resp.base);
}

/* ---------------------------------------------------------------- Health */

static void h_health(rpc_call *c, const ProtobufCMessage *msg, void *user) {
    (void)msg;
    svc_ctx *ctx = user;
    char err[ERRLEN] = "";
    tier_status s = tier_health(ctx->tier, err, sizeof err);
    Kvtier__V1__HealthResponse resp = KVTIER__V1__HEALTH_RESPONSE__INIT;
    resp.version = KVTIERD_VERSION;
    resp.uptime_s = (unix_ms() - ctx->start_ms) / 1000u;
    resp.degraded = s != TIER_OK;
    if (atomic_load(&ctx->draining))
        resp.status = "DRAINING";
    else
        resp.status = s == TIER_OK ? "SERVING" : "DEGRADED";
    resp.detail = s == TIER_OK ? "" : err;
    rpc_call_reply(c, &resp.base);
}

int svc_admin_register(rpc_server *srv, svc_ctx *ctx) {
    const ProtobufCServiceDescriptor *d = &kvtier__v1__admin__descriptor;
    if (rpc_server_register_service(srv, d, "ListSequences", h_list, ctx) != 0)
        return -1;
    if (rpc_server_register_service(srv, d, "GetTierMap", h_map, ctx) != 0)
        return -1;
    if (rpc_server_register_service(srv, d, "GetStats", h_stats, ctx) != 0)
        return -1;
    if (rpc_server_register_service(srv, d, "Evict", h_evict, ctx) != 0)
        return -1;
    if (rpc_server_register_service(srv, d, "Drain", h_drain, ctx) != 0)
        return -1;
    if (rpc_server_register_service(srv, d, "Health", h_health, ctx) != 0)
        return -1;
    /* answers while the handler pool is saturated (its own threads) */
    if (rpc_server_set_reserved(srv, "/kvtier.v1.Admin/Health") != 0)
        return -1;
    return 0;
}
