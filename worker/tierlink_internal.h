/* tierlink_internal.h - the transport table behind tierlink.h (private). */
#ifndef KVTIER_TIERLINK_INTERNAL_H
#define KVTIER_TIERLINK_INTERNAL_H

#include "tierlink.h"

typedef struct tierlink_ops {
    tier_status (*open)(tierlink_t *, uint64_t, const tier_seq_info *, char *, size_t);
    tier_status (*put)(tierlink_t *, uint64_t, const tierlink_block *, size_t, size_t *, char *,
                       size_t);
    tier_status (*fetch)(tierlink_t *, uint64_t, uint32_t, uint32_t, void **, size_t *, char *,
                         size_t);
    tier_status (*summarize)(tierlink_t *, uint64_t, const tier_summary *, tier_decision **,
                             size_t *, char *, size_t);
    tier_status (*close)(tierlink_t *, uint64_t, int, char *, size_t);
    void (*free)(tierlink_t *);
} tierlink_ops;

struct tierlink {
    const tierlink_ops *ops;
    char tenant[TIER_TENANT_MAX + 1];
    char name[128];
    tier_t *tier;  /* embedded: borrowed store */
    void *remote;  /* remote: transport state */
};

#endif
