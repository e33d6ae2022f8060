/* tierlink.h - the worker's one interface to the cache-tier service.
 *
 * Two transports behind the same calls:
 *   embedded  the tier library (service/tier.h) linked into the worker: index,
 *             policy, host-RAM and RocksDB tiers in-process (single machine);
 *   remote    a kvtierd reached over gRPC (proto/rpc.h), Tier service.
 * Everything above this header (tiering.c) is the same code for both.
 *
 * Status: every call returns a tier_status (service/tier.h). The remote link
 * maps gRPC codes back onto it 1:1 (NOT_FOUND -> TIER_ENOTFOUND, DATA_LOSS ->
 * TIER_EDATALOSS, ...); transport failures (UNAVAILABLE, DEADLINE_EXCEEDED,
 * CANCELLED, INTERNAL, UNKNOWN) become TIER_EIO: the caller treats those as
 * "service unreachable" (degraded), never as an answer about the data.
 * Every fetched payload has its crc32c verified here before it is returned.
 *
 * Threading: a link may be shared by threads; calls on one sequence are made
 * by one thread at a time.
 */
#ifndef KVTIER_TIERLINK_H
#define KVTIER_TIERLINK_H

#include <stddef.h>
#include <stdint.h>

#include "tier.h"

typedef struct tierlink tierlink_t;

/* Block to store, for tierlink_put. data borrowed. */
typedef struct {
    uint32_t layer, block;
    const void *data;
    size_t len;
    uint32_t ntokens; /* filled positions of the block */
} tierlink_block;

/* Embedded link over an open tier store `t` (borrowed: must outlive the link)
 * for tenant `tenant` (copied). Returns NULL on allocation failure. */
tierlink_t *tierlink_embedded_new(tier_t *t, const char *tenant);

/* Remote link to kvtierd at `addr` ("127.0.0.1:7070") for `tenant` (copied);
 * `auth` (may be NULL) is sent as the authorization token; each call has a
 * deadline of timeout_ms (0 = 5000). Connects lazily: a service that is down
 * shows up as TIER_EIO on the first call. Returns NULL on allocation failure. */
tierlink_t *tierlink_remote_new(const char *addr, const char *tenant, const char *auth,
                                int timeout_ms);

/* Releases the link (the embedded tier store is not closed). NULL is a no-op. */
void tierlink_free(tierlink_t *l);

/* "embedded" or the remote address (borrowed). */
const char *tierlink_name(const tierlink_t *l);

/* Opens (or re-attaches to) sequence seq with shape *info. */
tier_status tierlink_open(tierlink_t *l, uint64_t seq, const tier_seq_info *info, char *err,
                          size_t errlen);

/* Stores n blocks of seq, in order, computing their crc32c. Stops at the first
 * failure: *acked (may be NULL) = blocks durably stored (a prefix of blocks).
 * Returns TIER_OK when all n were stored. */
tier_status tierlink_put(tierlink_t *l, uint64_t seq, const tierlink_block *blocks, size_t n,
                         size_t *acked, char *err, size_t errlen);

/* Fetches one block: on OK *data (malloc'd, caller frees) holds *len bytes
 * whose crc32c matched. ENOTFOUND when the service no longer has it. */
tier_status tierlink_fetch(tierlink_t *l, uint64_t seq, uint32_t layer, uint32_t block,
                           void **data, size_t *len, char *err, size_t errlen);

/* Sends one summary and returns the decisions: *out is a malloc'd array of *n
 * (caller frees; NULL when 0). */
tier_status tierlink_summarize(tierlink_t *l, uint64_t seq, const tier_summary *s,
                               tier_decision **out, size_t *n, char *err, size_t errlen);

/* Closes seq on the service (retain: keep its stored blocks). */
tier_status tierlink_close(tierlink_t *l, uint64_t seq, int retain, char *err, size_t errlen);

/* Shared by both transports: crc check of a fetched payload. */
tier_status tierlink_check_crc(const void *data, size_t len, uint32_t crc, uint32_t layer,
                               uint32_t block, char *err, size_t errlen);

#endif
