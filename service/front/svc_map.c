/* svc_map.c - wire <-> tier library conversions (pure). */
#include "svc_map.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tier_key.h"

grpc_status_code svc_status_code(tier_status s) {
    switch (s) {
    case TIER_OK:
        return GRPC_STATUS_OK;
    case TIER_EINVAL:
        return GRPC_STATUS_INVALID_ARGUMENT;
    case TIER_ENOTFOUND:
        return GRPC_STATUS_NOT_FOUND;
    case TIER_EDATALOSS:
        return GRPC_STATUS_DATA_LOSS;
    case TIER_ETOOBIG:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case TIER_EFULL:
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case TIER_EIO:
        return GRPC_STATUS_UNAVAILABLE;
    case TIER_EEXIST:
        return GRPC_STATUS_ALREADY_EXISTS;
    }
    return GRPC_STATUS_INTERNAL;
}

Kvtier__V1__TierKind svc_tier_to_proto(int level) {
    switch (level) {
    case TIER_HOT:
        return KVTIER__V1__TIER_KIND__TIER_HOT;
    case TIER_HOST:
        return KVTIER__V1__TIER_KIND__TIER_HOST;
    case TIER_SSD:
        return KVTIER__V1__TIER_KIND__TIER_SSD;
    case TIER_DROPPED:
        return KVTIER__V1__TIER_KIND__TIER_DROPPED;
    default:
        return KVTIER__V1__TIER_KIND__TIER_UNSPECIFIED;
    }
}

int svc_tier_from_proto(Kvtier__V1__TierKind k) {
    switch (k) {
    case KVTIER__V1__TIER_KIND__TIER_HOT:
        return TIER_HOT;
    case KVTIER__V1__TIER_KIND__TIER_HOST:
        return TIER_HOST;
    case KVTIER__V1__TIER_KIND__TIER_SSD:
        return TIER_SSD;
    case KVTIER__V1__TIER_KIND__TIER_DROPPED:
        return TIER_DROPPED;
    default:
        return -1;
    }
}

Kvtier__V1__DecisionKind svc_kind_to_proto(int kind) {
    switch (kind) {
    case POLICY_KEEP_HOT:
        return KVTIER__V1__DECISION_KIND__DECISION_KEEP_HOT;
    case POLICY_DEMOTE_HOST:
        return KVTIER__V1__DECISION_KIND__DECISION_DEMOTE_HOST;
    case POLICY_DEMOTE_SSD:
        return KVTIER__V1__DECISION_KIND__DECISION_DEMOTE_SSD;
    case POLICY_DROP:
        return KVTIER__V1__DECISION_KIND__DECISION_DROP;
    case POLICY_PREFETCH:
        return KVTIER__V1__DECISION_KIND__DECISION_PREFETCH;
    default:
        return KVTIER__V1__DECISION_KIND__DECISION_UNSPECIFIED;
    }
}

int svc_tenant(const char *field, const char *md, char *out, char *err, size_t errlen) {
    const char *t = (field && *field) ? field : (md && *md) ? md : SVC_DEFAULT_TENANT;
    if (field && *field && md && *md && strcmp(field, md) != 0) {
        snprintf(err, errlen, "tenant \"%s\" in the message differs from x-kvtier-tenant \"%s\"",
                 field, md);
        return -1;
    }
    if (strlen(t) > TIER_TENANT_MAX) {
        snprintf(err, errlen, "tenant name of %zu bytes exceeds %d bytes", strlen(t),
                 TIER_TENANT_MAX);
        return -1;
    }
    if (tier_key_tenant_name_check(t, err, errlen) != 0)
        return -1;
    snprintf(out, TIER_TENANT_MAX + 1, "%s", t);
    return 0;
}

int svc_params_merge(const policy_params *defaults, const Kvtier__V1__PolicyParams *pp,
                     policy_params *out, char *err, size_t errlen) {
    *out = *defaults;
    if (pp) {
        if (pp->top_p != 0.0f)
            out->top_p = pp->top_p;
        if (pp->hot_inactive_steps)
            out->hot_inactive_steps = pp->hot_inactive_steps;
        if (pp->recent_blocks)
            out->recent_blocks = pp->recent_blocks;
        if (pp->sink_blocks)
            out->sink_blocks = pp->sink_blocks;
        if (pp->retain_on_close)
            out->retain_on_close = 1;
        if (pp->n_layer_hot_budget_blocks) {
            if (pp->n_layer_hot_budget_blocks > POLICY_MAX_LAYERS) {
                snprintf(err, errlen, "%zu per-layer hot budgets given, at most %d layers",
                         pp->n_layer_hot_budget_blocks, POLICY_MAX_LAYERS);
                return -1;
            }
            out->n_layer_budgets = (uint32_t)pp->n_layer_hot_budget_blocks;
            memcpy(out->layer_hot_budget, pp->layer_hot_budget_blocks,
                   pp->n_layer_hot_budget_blocks * sizeof(uint32_t));
        }
    }
    char e[256];
    if (policy_params_check(out, e, sizeof e) != 0) {
        snprintf(err, errlen, "policy parameters: %s", e);
        return -1;
    }
    return 0;
}

void svc_params_to_proto(const policy_params *p, Kvtier__V1__PolicyParams *pp) {
    pp->top_p = (float)p->top_p;
    pp->hot_inactive_steps = p->hot_inactive_steps;
    pp->recent_blocks = p->recent_blocks;
    pp->sink_blocks = p->sink_blocks;
    pp->retain_on_close = p->retain_on_close != 0;
    pp->n_layer_hot_budget_blocks = p->n_layer_budgets;
    pp->layer_hot_budget_blocks = (uint32_t *)p->layer_hot_budget;
}

int svc_summary_from_proto(const Kvtier__V1__SummaryRequest *r, svc_summary *out, char *err,
                           size_t errlen) {
    memset(out, 0, sizeof *out);
    size_t total = 0;
    uint32_t n_blocks = 0;
    for (size_t l = 0; l < r->n_layers; l++) {
        const Kvtier__V1__LayerSummary *ls = r->layers[l];
        if (!ls) {
            snprintf(err, errlen, "summary layer entry %zu is empty", l);
            return -1;
        }
        for (size_t a = 0; a < ls->n_active; a++)
            if (!ls->active[a]) {
                snprintf(err, errlen, "layer %u: active entry %zu is empty", ls->layer, a);
                return -1;
            }
        total += ls->n_active;
        if (ls->block_count > n_blocks)
            n_blocks = ls->block_count;
    }
    out->layers = calloc(r->n_layers ? r->n_layers : 1, sizeof *out->layers);
    out->active = malloc((total ? total : 1) * sizeof *out->active);
    out->mass = malloc((total ? total : 1) * sizeof *out->mass);
    if (!out->layers || !out->active || !out->mass) {
        svc_summary_free(out);
        snprintf(err, errlen, "out of memory converting a summary of %zu layers", r->n_layers);
        return -1;
    }
    size_t k = 0;
    for (size_t l = 0; l < r->n_layers; l++) {
        const Kvtier__V1__LayerSummary *ls = r->layers[l];
        tier_layer_summary *t = &out->layers[l];
        t->layer = ls->layer;
        t->active = out->active + k;
        t->peak_mass = out->mass + k;
        t->n_active = (uint32_t)ls->n_active;
        for (size_t a = 0; a < ls->n_active; a++, k++) {
            out->active[k] = ls->active[a]->block;
            out->mass[k] = ls->active[a]->peak_mass;
        }
        t->recalled = ls->recalled;
        t->n_recalled = (uint32_t)ls->n_recalled;
        t->dropped = ls->locally_dropped;
        t->n_dropped = (uint32_t)ls->n_locally_dropped;
        t->revived = ls->revived;
        t->n_revived = (uint32_t)ls->n_revived;
    }
    out->s.step = r->step;
    out->s.n_blocks = n_blocks;
    out->s.layers = out->layers;
    out->s.n_layers = (uint32_t)r->n_layers;
    return 0;
}

void svc_summary_free(svc_summary *s) {
    free(s->layers);
    free(s->active);
    free(s->mass);
    memset(s, 0, sizeof *s);
}
