/* tierlink.h - the worker's one interface to the cache-tier service: a link
 * (one store or one kvtierd, shared by sequences) and, per sequence, a tier
 * session that moves blocks in batches.
 *
 * Two transports behind the same calls:
 *   embedded  the tier library (service/tier/tier.h) linked into the worker: index,
 *             policy, host-RAM and RocksDB tiers in-process (single machine);
 *             calls run on the caller's thread, without copies they do not
 *             need (a fetched block is the tier's own copy, handed over);
 *   remote    a kvtierd reached through libkvtier (client/kvtier.h), the one
 *             client of the Tier service: one FetchBlocks call per batch,
 *             one PutBlocks stream per batch of demotions, one Summarize
 *             stream per session (opened once, one message per summary).
 *             Puts and summaries run on the session's own thread, in order.
 * Everything above this header (tiering.c) is the same code for both.
 *
 * Status: every call returns a tier_status (service/tier/tier.h). gRPC codes map
 * back 1:1 (NOT_FOUND -> TIER_ENOTFOUND, DATA_LOSS -> TIER_EDATALOSS, ...);
 * transport failures (UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, INTERNAL,
 * UNKNOWN) become TIER_EIO: "service unreachable" (degraded), never an answer
 * about the data. Every fetched payload has its crc32c verified before it is
 * handed out (libkvtier checks remote ones; the embedded tier its RAM and
 * RocksDB copies).
 *
 * Threading: a link may be shared by threads; one session is used by one
 * thread at a time (its own put thread aside).
 */
#ifndef KVTIER_TIERLINK_H
#define KVTIER_TIERLINK_H

#include <stddef.h>
#include <stdint.h>

#include "tier.h"

typedef struct tierlink tierlink_t;
typedef struct tiersess tiersess_t;

/* Embedded link over an open tier store `t` (borrowed: must outlive the link)
 * for tenant `tenant` (copied). Returns NULL on allocation failure. */
tierlink_t *tierlink_embedded_new(tier_t *t, const char *tenant);

/* Remote link to kvtierd at `addr` ("127.0.0.1:7070") for `tenant` (copied);
 * `auth` (may be NULL) is sent as the bearer token; each call has a deadline
 * of timeout_ms (0 = 5000; streams: the same per message). Connects lazily: a
 * service that is down shows up as TIER_EIO on the first call. Returns NULL
 * on allocation failure. */
tierlink_t *tierlink_remote_new(const char *addr, const char *tenant, const char *auth,
                                int timeout_ms);

/* Same over TLS: tls_ca verifies kvtierd (or the load balancer), tls_cert +
 * tls_key are the worker's client certificate (mutual TLS); NULLs as in
 * kvtier_connect_opts. NULL with a message in err on unreadable files. */
tierlink_t *tierlink_remote_new_tls(const char *addr, const char *tenant, const char *auth,
                                    int timeout_ms, const char *tls_ca, const char *tls_cert,
                                    const char *tls_key, char *err, size_t errlen);

/* Releases the link (sessions on it must be freed first; the embedded store
 * is not closed). NULL is a no-op. */
void tierlink_free(tierlink_t *l);

/* "embedded" or the remote address (borrowed). */
const char *tierlink_name(const tierlink_t *l);

/* Calls skipped because the service timed out a moment ago, and the timeouts
 * that opened the breaker (tier_breaker.h); 0/0 for the embedded tier. */
void tierlink_breaker_counts(tierlink_t *l, uint64_t *skipped, uint64_t *timeouts);

/* ---------------------------------------------------------------- session */

/* A block handed to tiersess_put: data is malloc'd and OWNED by the session
 * from the call on; it comes back, unchanged, in the block's ack. */
typedef struct {
    uint32_t layer, block;
    void *data;
    size_t len;
    uint32_t ntokens; /* filled positions of the block */
} tiersess_block;

/* Outcome of one put block: status TIER_OK = stored (the service holds these
 * exact bytes); anything else = not stored. data/len: the payload given to
 * tiersess_put, owned by the caller again. */
typedef struct {
    uint32_t layer, block;
    tier_status status;
    void *data;
    size_t len;
    char err[160]; /* why, when status != TIER_OK */
} tiersess_ack;

/* Counted calls (what crossed the session's boundary; the remote transport
 * makes exactly these RPCs, the embedded one the same calls in-process). */
typedef struct {
    uint64_t fetch_calls;       /* FetchBlocks calls (one per tiersess_fetch batch) */
    uint64_t fetch_blocks;      /* blocks received */
    uint64_t fetch_bytes;       /* payload bytes received */
    uint64_t put_calls;         /* PutBlocks streams (one per tiersess_put batch) */
    uint64_t put_blocks;        /* blocks sent */
    uint64_t summary_msgs;      /* Summarize messages sent */
    uint64_t summarize_streams; /* Summarize streams opened */
    uint64_t other_calls;       /* OpenSequence + CloseSequence */
} tiersess_counts;

/* Opens (or re-attaches to) sequence seq with shape *info and starts its
 * session. On TIER_OK *out is a new session (tiersess_free). A failure opens
 * nothing (*out NULL). */
tier_status tiersess_open(tierlink_t *l, uint64_t seq, const tier_seq_info *info, tiersess_t **out,
                          char *err, size_t errlen);

/* Called once per fetched block: st TIER_OK with data (malloc'd, OWNED by
 * the callee from now on) of len bytes whose crc32c matched; or
 * TIER_ENOTFOUND / TIER_EDATALOSS (data NULL): the service no longer has it,
 * or its copy is corrupt. */
typedef void (*tiersess_fetch_cb)(void *ud, uint32_t layer, uint32_t block, tier_status st,
                                  void *data, size_t len);

/* One block of a sequence: (layer, block). */
typedef struct {
    uint32_t layer, block;
} tiersess_ref;

/* Fetches blocks[0..n) of `layer` in ONE call (n == 0: nothing, no call).
 * Every block gets exactly one callback unless the transport fails: then the
 * return is TIER_EIO and the blocks without a callback were not fetched
 * (nothing else changed). Returns TIER_OK otherwise, also when some blocks
 * were NOT_FOUND (their callbacks say so). Runs on the calling thread. */
tier_status tiersess_fetch(tiersess_t *s, uint32_t layer, const uint32_t *blocks, size_t n,
                           tiersess_fetch_cb cb, void *ud, char *err, size_t errlen);

/* Starts fetching refs[0..n) (any layers, in this order; copied) in ONE call
 * and returns at once: the remote transport runs it on the session's fetch
 * thread (started fetches one after the other, in order), the embedded one
 * before returning. Blocks arrive into the session and are handed over by
 * tiersess_fetch_collect, on the caller's thread. Returns TIER_OK (started),
 * or TIER_EIO when nothing was started (memory short, no thread). */
tier_status tiersess_fetch_start(tiersess_t *s, const tiersess_ref *refs, size_t n, char *err,
                                 size_t errlen);

/* Hands the blocks the started fetches delivered so far to cb (the same
 * contract as tiersess_fetch's callback). wait != 0 first waits: with
 * layer >= 0 until every block of that layer they asked for arrived or they
 * ended, with layer < 0 until they ended. Returns TIER_OK; or, once all
 * ended and one failed in transport, its status (TIER_EIO) with the message
 * in err: the blocks that got no callback were not fetched. Started fetches
 * that ended and were handed over completely are over
 * (tiersess_fetch_active 0); nothing started: TIER_OK, no callback. */
tier_status tiersess_fetch_collect(tiersess_t *s, int layer, int wait, tiersess_fetch_cb cb,
                                   void *ud, char *err, size_t errlen);

/* 1 when tiersess_fetch_collect(s, layer, 1, ...) would not wait: no
 * started fetch still owes a block of `layer` (layer < 0: none runs). */
int tiersess_fetch_ready(tiersess_t *s, int layer);

/* 1 when the link's calls leave the process (remote), 0 embedded. */
int tierlink_is_remote(const tierlink_t *l);

/* 1 while started fetches have not been collected to their end. */
int tiersess_fetch_active(tiersess_t *s);

/* Queues blocks[0..n) as ONE put batch and returns at once (embedded: stored
 * before it returns). The session owns their data until their acks are
 * taken with tiersess_acks. Returns TIER_OK, or TIER_EIO when the session is
 * closed or memory is short: then nothing was queued and the caller still
 * owns the data. */
tier_status tiersess_put(tiersess_t *s, const tiersess_block *blocks, size_t n, char *err,
                         size_t errlen);

/* Takes up to max finished put acks (oldest first) into out; with wait != 0
 * first waits until every queued put finished. Returns the number taken. */
size_t tiersess_acks(tiersess_t *s, tiersess_ack *out, size_t max, int wait);

/* Outcome of one summary: status (TIER_OK: the service applied it), err
 * when not, and its decisions (d: malloc'd array of n, the caller frees). */
typedef struct {
    uint64_t step;
    tier_status status;
    char err[256];
    tier_decision *d;
    size_t n;
} tiersess_summary_result;

/* Queues one summary (copied) for the session's Summarize stream, after
 * every put queued before it, and returns at once (embedded: applied before
 * it returns). Its result comes back through tiersess_summary_results. A
 * broken stream is reopened once on the next summary. Returns TIER_OK, or
 * TIER_EIO when memory is short (nothing queued). */
tier_status tiersess_summary_send(tiersess_t *s, const tier_summary *sum, char *err, size_t errlen);

/* Takes up to max finished summary results (oldest first); with wait != 0
 * first waits until every queued summary finished. Returns the number taken. */
size_t tiersess_summary_results(tiersess_t *s, tiersess_summary_result *out, size_t max, int wait);

/* Waits for the queued puts (their acks stay to be taken), then closes the
 * sequence on the service (retain: keep its stored blocks). */
tier_status tiersess_close(tiersess_t *s, int retain, char *err, size_t errlen);

/* Counters since open into *c. */
void tiersess_counts_get(tiersess_t *s, tiersess_counts *c);

/* Stops the session: waits for its queued puts, frees the data of acks not
 * taken, ends the Summarize stream. Does not close the sequence. NULL no-op. */
void tiersess_free(tiersess_t *s);

#endif
