/* kvtier_admin.c — libkvtier: Admin service calls (health, stats, sequences,
 * tier map, evict, drain), converted to plain C structs. */
#include <stdlib.h>
#include <string.h>

#include "kvtier_internal.h"

#define FREE_MSG(m) protobuf_c_message_free_unpacked((ProtobufCMessage *)(m), NULL)

static int tier_ok(int t) {
    return t >= 0 && t < KVTIER_NTIERS;
}

kvtier_code kvtier_health_check(kvtier_client *c, kvtier_health *out, kvtier_error *err) {
    if (!c || !out)
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
    memset(out, 0, sizeof *out);
    Kvtier__V1__HealthRequest req = KVTIER__V1__HEALTH_REQUEST__INIT;
    Kvtier__V1__HealthResponse *r = NULL;
    kvtier_code code =
        kvc_unary(c, KVC_ADMIN "Health", 0, &req.base, &kvtier__v1__health_response__descriptor,
                  (ProtobufCMessage **)&r, err);
    if (code != KVTIER_OK)
        return code;
    kvc_copy(out->status, sizeof out->status, r->status);
    kvc_copy(out->version, sizeof out->version, r->version);
    out->uptime_s = r->uptime_s;
    out->degraded = r->degraded ? 1 : 0;
    kvc_copy(out->detail, sizeof out->detail, r->detail);
    FREE_MSG(r);
    return KVTIER_OK;
}

kvtier_code kvtier_stats_get(kvtier_client *c, kvtier_stats *out, kvtier_error *err) {
    if (!c || !out)
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
    memset(out, 0, sizeof *out);
    Kvtier__V1__GetStatsRequest req = KVTIER__V1__GET_STATS_REQUEST__INIT;
    Kvtier__V1__GetStatsResponse *r = NULL;
    kvtier_code code =
        kvc_unary(c, KVC_ADMIN "GetStats", 0, &req.base,
                  &kvtier__v1__get_stats_response__descriptor, (ProtobufCMessage **)&r, err);
    if (code != KVTIER_OK)
        return code;
    for (size_t i = 0; i < r->n_tiers; i++) {
        const Kvtier__V1__TierStats *t = r->tiers[i];
        if (!tier_ok((int)t->tier))
            continue;
        kvtier_tier_stats *o = &out->tier[t->tier];
        o->present = 1;
        o->blocks = t->blocks;
        o->bytes = t->bytes;
        o->budget_bytes = t->budget_bytes;
        o->hits = t->hits;
        o->puts = t->puts;
        o->fetches = t->fetches;
        o->fetch_p50_us = t->fetch_latency_p50_us;
        o->fetch_p99_us = t->fetch_latency_p99_us;
    }
    for (size_t i = 0; i < r->n_decisions; i++) {
        int k = (int)r->decisions[i]->decision;
        if (k >= 0 && k < KVTIER_NDECISIONS)
            out->decisions[k] += r->decisions[i]->count;
    }
    out->revivals = r->revivals;
    out->sequences = r->sequences;
    out->checksum_failures = r->checksum_failures;
    FREE_MSG(r);
    return KVTIER_OK;
}

kvtier_code kvtier_list_sequences(kvtier_client *c, const char *tenant, kvtier_seq_info **out,
                                  size_t *n, kvtier_error *err) {
    if (!c || !out || !n)
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
    *out = NULL;
    *n = 0;
    Kvtier__V1__ListSequencesRequest req = KVTIER__V1__LIST_SEQUENCES_REQUEST__INIT;
    req.tenant = (char *)(tenant ? tenant : "");
    Kvtier__V1__ListSequencesResponse *r = NULL;
    kvtier_code code =
        kvc_unary(c, KVC_ADMIN "ListSequences", 0, &req.base,
                  &kvtier__v1__list_sequences_response__descriptor, (ProtobufCMessage **)&r, err);
    if (code != KVTIER_OK)
        return code;
    if (r->n_sequences) {
        kvtier_seq_info *a = calloc(r->n_sequences, sizeof *a);
        if (!a) {
            FREE_MSG(r);
            return kvc_errf(err, KVTIER_RESOURCE_EXHAUSTED, "libkvtier: out of memory");
        }
        for (size_t i = 0; i < r->n_sequences; i++) {
            const Kvtier__V1__SequenceInfo *s = r->sequences[i];
            kvc_copy(a[i].tenant, sizeof a[i].tenant, s->tenant);
            a[i].sequence_id = s->sequence_id;
            a[i].layers = s->layers;
            a[i].block_tokens = s->block_tokens;
            a[i].block_bytes = s->block_bytes;
            a[i].kv_heads = s->kv_heads;
            a[i].head_dim = s->head_dim;
            a[i].blocks[KVTIER_TIER_HOT] = s->blocks_hot;
            a[i].blocks[KVTIER_TIER_HOST] = s->blocks_host;
            a[i].blocks[KVTIER_TIER_SSD] = s->blocks_ssd;
            a[i].blocks[KVTIER_TIER_DROPPED] = s->blocks_dropped;
            a[i].last_step = s->last_step;
            a[i].open = s->open ? 1 : 0;
        }
        *out = a;
        *n = r->n_sequences;
    }
    FREE_MSG(r);
    return KVTIER_OK;
}

void kvtier_tier_map_free(kvtier_tier_map *m) {
    if (!m)
        return;
    free(m->layer_ids);
    free(m->tiers);
    free(m->hits);
    free(m->revivals);
    memset(m, 0, sizeof *m);
}

uint64_t kvtier_tier_map_count(const kvtier_tier_map *m, kvtier_tier tier) {
    uint64_t n = 0;
    size_t cells = (size_t)m->n_layers * m->n_blocks;
    for (size_t i = 0; i < cells; i++)
        n += m->tiers[i] == (uint8_t)tier;
    return n;
}

/* Converts a GetTierMapResponse into *m (rows padded to the longest layer). */
static kvtier_code map_convert(const Kvtier__V1__GetTierMapResponse *r, kvtier_tier_map *m,
                               kvtier_error *err) {
    m->sequence_id = r->sequence_id;
    m->n_layers = (uint32_t)r->n_layers;
    int any_hits = 0, any_rev = 0;
    for (size_t i = 0; i < r->n_layers; i++) {
        if (r->layers[i]->n_tiers > m->n_blocks)
            m->n_blocks = (uint32_t)r->layers[i]->n_tiers;
        any_hits |= r->layers[i]->n_hits > 0;
        any_rev |= r->layers[i]->n_revivals > 0;
    }
    size_t cells = (size_t)m->n_layers * m->n_blocks;
    m->layer_ids = calloc(m->n_layers ? m->n_layers : 1, sizeof *m->layer_ids);
    m->tiers = calloc(cells ? cells : 1, 1);
    if (any_hits)
        m->hits = calloc(cells ? cells : 1, sizeof *m->hits);
    if (any_rev)
        m->revivals = calloc(cells ? cells : 1, sizeof *m->revivals);
    if (!m->layer_ids || !m->tiers || (any_hits && !m->hits) || (any_rev && !m->revivals)) {
        kvtier_tier_map_free(m);
        return kvc_errf(err, KVTIER_RESOURCE_EXHAUSTED, "libkvtier: out of memory for tier map");
    }
    for (size_t i = 0; i < r->n_layers; i++) {
        const Kvtier__V1__LayerTierMap *l = r->layers[i];
        m->layer_ids[i] = l->layer;
        size_t row = i * m->n_blocks;
        for (size_t b = 0; b < l->n_tiers; b++)
            m->tiers[row + b] =
                tier_ok((int)l->tiers[b]) ? (uint8_t)l->tiers[b] : KVTIER_TIER_ABSENT;
        for (size_t b = 0; m->hits && b < l->n_hits && b < m->n_blocks; b++)
            m->hits[row + b] = l->hits[b];
        for (size_t b = 0; m->revivals && b < l->n_revivals && b < m->n_blocks; b++)
            m->revivals[row + b] = l->revivals[b];
    }
    return KVTIER_OK;
}

kvtier_code kvtier_tier_map_get(kvtier_client *c, uint64_t seq, kvtier_tier_map *out,
                                kvtier_error *err) {
    if (!c || !out)
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
    memset(out, 0, sizeof *out);
    Kvtier__V1__GetTierMapRequest req = KVTIER__V1__GET_TIER_MAP_REQUEST__INIT;
    req.tenant = kvc_tenant(c);
    req.sequence_id = seq;
    Kvtier__V1__GetTierMapResponse *r = NULL;
    kvtier_code code =
        kvc_unary(c, KVC_ADMIN "GetTierMap", seq, &req.base,
                  &kvtier__v1__get_tier_map_response__descriptor, (ProtobufCMessage **)&r, err);
    if (code != KVTIER_OK)
        return code;
    code = map_convert(r, out, err);
    FREE_MSG(r);
    return code;
}

kvtier_code kvtier_evict(kvtier_client *c, uint64_t seq, int layer, kvtier_tier to, uint64_t *moved,
                         kvtier_error *err) {
    if (!c)
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
    if (to != KVTIER_TIER_HOST && to != KVTIER_TIER_SSD && to != KVTIER_TIER_DROPPED)
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT,
                        "libkvtier: evict target must be host, ssd or drop (got %s)",
                        kvtier_tier_name(to));
    Kvtier__V1__EvictRequest req = KVTIER__V1__EVICT_REQUEST__INIT;
    req.tenant = kvc_tenant(c);
    req.sequence_id = seq;
    req.has_layer = layer >= 0;
    req.layer = layer >= 0 ? (uint32_t)layer : 0;
    req.to = (Kvtier__V1__TierKind)to;
    Kvtier__V1__EvictResponse *r = NULL;
    kvtier_code code =
        kvc_unary(c, KVC_ADMIN "Evict", seq, &req.base, &kvtier__v1__evict_response__descriptor,
                  (ProtobufCMessage **)&r, err);
    if (code != KVTIER_OK)
        return code;
    if (moved)
        *moved = r->blocks_moved;
    FREE_MSG(r);
    return KVTIER_OK;
}

kvtier_code kvtier_drain(kvtier_client *c, uint64_t *flushed, kvtier_error *err) {
    if (!c)
        return kvc_errf(err, KVTIER_INVALID_ARGUMENT, "libkvtier: NULL argument");
    Kvtier__V1__DrainRequest req = KVTIER__V1__DRAIN_REQUEST__INIT;
    Kvtier__V1__DrainResponse *r = NULL;
    kvtier_code code =
        kvc_unary(c, KVC_ADMIN "Drain", 0, &req.base, &kvtier__v1__drain_response__descriptor,
                  (ProtobufCMessage **)&r, err);
    if (code != KVTIER_OK)
        return code;
    if (flushed)
        *flushed = r->blocks_flushed;
    FREE_MSG(r);
    return KVTIER_OK;
}
