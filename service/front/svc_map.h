/* svc_map.h - pure conversions between the wire (kvtier.pb-c.h) and the tier
 * library (tier.h): status codes, tier and decision enums, tenants, policy
 * parameters, summaries. No I/O. */
#ifndef KVTIER_SVC_MAP_H
#define KVTIER_SVC_MAP_H

#include <stddef.h>
#include <stdint.h>

#include <grpc/status.h>

#include "kvtier.pb-c.h"
#include "tier.h"

#define SVC_DEFAULT_TENANT "default"

/* svc_status_code: gRPC code for a tier_status (the mapping in tier.h). */
grpc_status_code svc_status_code(tier_status s);

/* svc_tier_to_proto: tier_level -> TierKind (TIER_NONE -> UNSPECIFIED). */
Kvtier__V1__TierKind svc_tier_to_proto(int level);

/* svc_tier_from_proto: TierKind -> tier_level, -1 for UNSPECIFIED/unknown. */
int svc_tier_from_proto(Kvtier__V1__TierKind k);

/* svc_kind_to_proto: policy_kind -> DecisionKind. */
Kvtier__V1__DecisionKind svc_kind_to_proto(int kind);

/* svc_tenant: the tenant of a request: the message field, else the
 * x-kvtier-tenant metadata (md may be NULL), else SVC_DEFAULT_TENANT. Both set
 * and different, or longer than TIER_TENANT_MAX: -1 with a message.
 * Writes into out[TIER_TENANT_MAX + 1]; returns 0. */
int svc_tenant(const char *field, const char *md, char *out, char *err, size_t errlen);

/* svc_params_merge: *out = defaults with every non-zero field of pp (may be
 * NULL) applied, then checked (policy_params_check). Returns 0 or -1 + err. */
int svc_params_merge(const policy_params *defaults, const Kvtier__V1__PolicyParams *pp,
                     policy_params *out, char *err, size_t errlen);

/* svc_params_to_proto: fills pp (caller-initialised) from p; pp->layer_hot_budget_blocks
 * points into p (borrowed). */
void svc_params_to_proto(const policy_params *p, Kvtier__V1__PolicyParams *pp);

/* A summary converted for tier_summarize; owns its arrays. */
typedef struct svc_summary {
    tier_summary s;
    tier_layer_summary *layers; /* [s.n_layers] */
    uint32_t *active;           /* all layers' active blocks, concatenated */
    float *mass;                /* their peak masses */
} svc_summary;

/* svc_summary_from_proto: converts r into *out (free with svc_summary_free).
 * n_blocks = the largest block_count of any layer (0 = unchanged). Repeated
 * uint32 fields are borrowed from r. Returns 0, -1 with a message on a
 * malformed summary (null entries) or out of memory. */
int svc_summary_from_proto(const Kvtier__V1__SummaryRequest *r, svc_summary *out, char *err,
                           size_t errlen);
void svc_summary_free(svc_summary *s);

#endif
