/* kvtier.h — libkvtier: the C client of kvtier.
 *
 * Talks to kvtierd (Tier + Admin services) and to the worker (Inference) over
 * gRPC, through the project's RPC layer. Everything here is plain C: no
 * protobuf or gRPC type appears in this header, so programs only need
 * `#include "kvtier.h"` and to link `kvtier`.
 *
 * Errors: every fallible call returns a kvtier_code (0 = KVTIER_OK; the other
 * values are the gRPC status codes, same numbers) and, when `err` is not NULL,
 * fills *err with the code and a message a person can act on. Client-side
 * usage errors (NULL argument, too many blocks) are KVTIER_INVALID_ARGUMENT
 * with a message starting "libkvtier:". A server that cannot be reached gives
 * KVTIER_UNAVAILABLE.
 *
 * Threads: a kvtier_client may be shared by threads (calls on it are
 * independent). A stream object (kvtier_put_stream, kvtier_summarize_stream)
 * is used by one thread at a time.
 *
 * Ownership: results with arrays are freed by their *_free function; a
 * borrowed pointer is valid until the call (or callback) returns.
 */
#ifndef KVTIER_CLIENT_H
#define KVTIER_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ================================================================ errors */

/* Same numbers as grpc_status_code. */
typedef enum kvtier_code {
    KVTIER_OK = 0,
    KVTIER_CANCELLED = 1,
    KVTIER_UNKNOWN = 2,
    KVTIER_INVALID_ARGUMENT = 3,
    KVTIER_DEADLINE_EXCEEDED = 4,
    KVTIER_NOT_FOUND = 5,
    KVTIER_ALREADY_EXISTS = 6,
    KVTIER_PERMISSION_DENIED = 7,
    KVTIER_RESOURCE_EXHAUSTED = 8,
    KVTIER_FAILED_PRECONDITION = 9,
    KVTIER_ABORTED = 10,
    KVTIER_OUT_OF_RANGE = 11,
    KVTIER_UNIMPLEMENTED = 12,
    KVTIER_INTERNAL = 13,
    KVTIER_UNAVAILABLE = 14,
    KVTIER_DATA_LOSS = 15,
    KVTIER_UNAUTHENTICATED = 16
} kvtier_code;

#define KVTIER_ERR_MAX 512

typedef struct kvtier_error {
    kvtier_code code;
    char message[KVTIER_ERR_MAX]; /* NUL-terminated; "" on OK */
} kvtier_error;

/* kvtier_code_name: "OK", "NOT_FOUND", ... (static string; "CODE_<n>" never:
 * unknown numbers give "UNKNOWN_CODE"). */
const char *kvtier_code_name(int code);

/* ================================================================ tiers */

/* Where a block lives; same numbers as kvtier.v1.TierKind. */
typedef enum kvtier_tier {
    KVTIER_TIER_ABSENT = 0,  /* not known to the index (never put, or lost) */
    KVTIER_TIER_HOT = 1,     /* worker memory */
    KVTIER_TIER_HOST = 2,    /* service RAM */
    KVTIER_TIER_SSD = 3,     /* service RocksDB */
    KVTIER_TIER_DROPPED = 4, /* gone */
    KVTIER_NTIERS = 5
} kvtier_tier;

/* kvtier_tier_name: "ABSENT", "HOT", "HOST", "SSD", "DROPPED" (static). */
const char *kvtier_tier_name(int tier);

/* kvtier_tier_parse: "hot"|"host"|"ssd"|"drop"|"dropped" (any case) -> tier;
 * -1 when unknown. */
int kvtier_tier_parse(const char *s);

/* Placement decisions; same numbers as kvtier.v1.DecisionKind. */
typedef enum kvtier_decision_kind {
    KVTIER_DECISION_UNSPECIFIED = 0,
    KVTIER_DECISION_KEEP_HOT = 1,
    KVTIER_DECISION_DEMOTE_HOST = 2,
    KVTIER_DECISION_DEMOTE_SSD = 3,
    KVTIER_DECISION_DROP = 4,
    KVTIER_DECISION_PREFETCH = 5,
    KVTIER_NDECISIONS = 6
} kvtier_decision_kind;

/* kvtier_decision_name: "KEEP_HOT", "DEMOTE_HOST", ... (static). */
const char *kvtier_decision_name(int kind);

/* kvtier_crc32c: standard crc32c (Castagnoli; crc32c("123456789") ==
 * 0xE3069283) of data[len], chained through `crc` (start with 0). */
uint32_t kvtier_crc32c(uint32_t crc, const void *data, size_t len);

/* ================================================================ client */

typedef struct kvtier_client kvtier_client; /* opaque */

typedef struct kvtier_connect_opts {
    const char *address;       /* "127.0.0.1:7070" (NULL: $KVTIER_SERVER, else that) */
    const char *token;         /* auth token, sent as "Bearer <token>"; NULL = none */
    const char *tenant;        /* tenant for every call; NULL/"" = server default */
    int64_t timeout_ms;        /* deadline of unary calls; 0 = 10000, <0 = none */
    int64_t stream_timeout_ms; /* whole-call deadline of streams; 0 or <0 = none (each
                                  message of a stream still waits at most timeout_ms) */
    size_t max_msg_bytes;      /* max message each way; 0 = 16 MiB */
    /* TLS (PEM file paths; NULL: $KVTIER_TLS_CA, $KVTIER_TLS_CERT,
     * $KVTIER_TLS_KEY; none set = plaintext): tls_ca verifies the server
     * (whose certificate must name the address's host), tls_cert + tls_key
     * are this client's certificate for mutual TLS. */
    const char *tls_ca, *tls_cert, *tls_key;
} kvtier_connect_opts;

#define KVTIER_DEFAULT_ADDRESS "127.0.0.1:7070"

/* kvtier_connect: creates a client for opts->address (strings copied; opts
 * may be NULL for all defaults). Connects lazily: an unreachable server shows
 * on the first call (KVTIER_UNAVAILABLE). Returns NULL only on bad options or
 * out of memory (err says which). Free with kvtier_client_free. */
kvtier_client *kvtier_connect(const kvtier_connect_opts *opts, kvtier_error *err);

/* kvtier_client_free: releases the client; streams on it must be finished.
 * NULL is a no-op. */
void kvtier_client_free(kvtier_client *c);

/* kvtier_client_address: the address the client talks to (borrowed). */
const char *kvtier_client_address(const kvtier_client *c);

/* ================================================================ admin */

typedef struct kvtier_health {
    char status[32]; /* "SERVING" | "DRAINING" | "DEGRADED" */
    char version[64];
    uint64_t uptime_s;
    int degraded;
    char detail[256];
} kvtier_health;

/* kvtier_health_check: Admin.Health into *out. */
kvtier_code kvtier_health_check(kvtier_client *c, kvtier_health *out, kvtier_error *err);

typedef struct kvtier_tier_stats {
    int present; /* 1 when the server reported this tier */
    uint64_t blocks;
    uint64_t bytes;
    uint64_t budget_bytes; /* 0 = unbounded / n.a. */
    uint64_t hits;
    uint64_t puts;
    uint64_t fetches;
    double fetch_p50_us;
    double fetch_p99_us;
} kvtier_tier_stats;

typedef struct kvtier_stats {
    kvtier_tier_stats tier[KVTIER_NTIERS]; /* indexed by kvtier_tier */
    uint64_t revivals;
    uint64_t decisions[KVTIER_NDECISIONS]; /* by kvtier_decision_kind */
    uint64_t sequences;
    uint64_t checksum_failures;
} kvtier_stats;

/* kvtier_stats_get: Admin.GetStats into *out (zeroed first). */
kvtier_code kvtier_stats_get(kvtier_client *c, kvtier_stats *out, kvtier_error *err);

typedef struct kvtier_seq_info {
    char tenant[72];
    uint64_t sequence_id;
    uint32_t layers;
    uint32_t block_tokens;
    uint64_t block_bytes;
    uint32_t kv_heads, head_dim;    /* shape (0 from a kvtierd older than these fields) */
    uint64_t blocks[KVTIER_NTIERS]; /* by kvtier_tier (ABSENT unused) */
    uint64_t last_step;
    int open; /* 0: closed and retained */
} kvtier_seq_info;

/* kvtier_list_sequences: Admin.ListSequences for `tenant` (NULL or "" = all).
 * *out: new array of *n entries (NULL when 0), freed with kvtier_free. */
kvtier_code kvtier_list_sequences(kvtier_client *c, const char *tenant, kvtier_seq_info **out,
                                  size_t *n, kvtier_error *err);

/* Tier map of one sequence: a layer x block matrix.
 *   tiers[i * n_blocks + b]: kvtier_tier of block b of the i-th layer
 *   (KVTIER_TIER_ABSENT past a layer's own length). layer_ids[i]: the layer
 *   number of row i. hits / revivals: same shape, or NULL when the server sent
 *   none. */
typedef struct kvtier_tier_map {
    uint64_t sequence_id;
    uint32_t n_layers;
    uint32_t n_blocks;   /* longest layer */
    uint32_t *layer_ids; /* [n_layers] */
    uint8_t *tiers;      /* [n_layers][n_blocks] */
    uint32_t *hits;      /* [n_layers][n_blocks] or NULL */
    uint32_t *revivals;  /* [n_layers][n_blocks] or NULL */
} kvtier_tier_map;

/* kvtier_tier_map_get: Admin.GetTierMap of sequence `seq` into *out (arrays
 * owned by *out; release with kvtier_tier_map_free). NOT_FOUND when unknown. */
kvtier_code kvtier_tier_map_get(kvtier_client *c, uint64_t seq, kvtier_tier_map *out,
                                kvtier_error *err);

/* kvtier_tier_map_free: frees the arrays of *m and zeroes it. */
void kvtier_tier_map_free(kvtier_tier_map *m);

/* kvtier_tier_map_count: blocks of the map in tier `tier`. */
uint64_t kvtier_tier_map_count(const kvtier_tier_map *m, kvtier_tier tier);

/* kvtier_evict: Admin.Evict: move the stored blocks of `seq` (layer < 0 = all
 * layers) to `to` (KVTIER_TIER_HOST, _SSD or _DROPPED). *moved (may be NULL)
 * gets the number of blocks moved. */
kvtier_code kvtier_evict(kvtier_client *c, uint64_t seq, int layer, kvtier_tier to, uint64_t *moved,
                         kvtier_error *err);

/* kvtier_drain: Admin.Drain: write every RAM block to SSD. *flushed (may be
 * NULL) gets the number of blocks written. */
kvtier_code kvtier_drain(kvtier_client *c, uint64_t *flushed, kvtier_error *err);

/* kvtier_free: frees an array returned by this library (NULL is a no-op). */
void kvtier_free(void *p);

/* ================================================================ sequences */

typedef struct kvtier_seq_shape {
    uint64_t sequence_id; /* != 0 */
    uint32_t layers;
    uint32_t kv_heads;
    uint32_t head_dim;
    uint32_t block_tokens; /* 0 = 16 */
    uint64_t block_bytes;  /* payload bytes of a full block */
    /* Policy parameters; 0 = service default. */
    float top_p;
    uint32_t hot_inactive_steps;
    uint32_t recent_blocks;
    uint32_t sink_blocks;
    const uint32_t *layer_hot_budget; /* [n_layer_hot_budget] or NULL */
    size_t n_layer_hot_budget;
    int retain_on_close;
} kvtier_seq_shape;

typedef struct kvtier_open_result {
    int created; /* 0: existed (reopen) */
    uint64_t blocks_host, blocks_ssd, blocks_lost;
} kvtier_open_result;

/* kvtier_open_sequence: Tier.OpenSequence. *out may be NULL. */
kvtier_code kvtier_open_sequence(kvtier_client *c, const kvtier_seq_shape *shape,
                                 kvtier_open_result *out, kvtier_error *err);

/* kvtier_close_sequence: Tier.CloseSequence. retain: keep demoted blocks.
 * *dropped / *retained may be NULL. */
kvtier_code kvtier_close_sequence(kvtier_client *c, uint64_t seq, int retain, uint64_t *dropped,
                                  uint64_t *retained, kvtier_error *err);

/* ================================================================ blocks */

/* One block to put. payload borrowed. */
typedef struct kvtier_block {
    uint32_t layer;
    uint32_t block;
    const void *payload;
    size_t len;
    uint32_t crc32c; /* used only when crc_set; else computed */
    int crc_set;
    uint32_t token_count; /* 0 = full block (block_tokens) is assumed by caller */
    kvtier_tier target;   /* HOST, SSD or ABSENT (service picks) */
} kvtier_block;

typedef struct kvtier_block_ack {
    uint32_t layer, block;
    kvtier_tier tier; /* where it landed */
} kvtier_block_ack;

typedef struct kvtier_put_result {
    uint32_t acked;         /* blocks the server stored */
    kvtier_block_ack *acks; /* [n_acks], free with kvtier_free */
    size_t n_acks;
} kvtier_put_result;

typedef struct kvtier_put_stream kvtier_put_stream; /* opaque */

/* kvtier_put_open: starts Tier.PutBlocks for sequence `seq`. NULL on failure
 * (err). Finish with kvtier_put_finish or kvtier_put_abort. */
kvtier_put_stream *kvtier_put_open(kvtier_client *c, uint64_t seq, kvtier_error *err);

/* kvtier_put_send: sends one block (copied into the message; crc computed
 * unless b->crc_set). Returns KVTIER_OK, or the code that ended the call (the
 * server may have answered early, e.g. DATA_LOSS): the stream must still be
 * finished or aborted. */
kvtier_code kvtier_put_send(kvtier_put_stream *s, const kvtier_block *b, kvtier_error *err);

/* kvtier_put_finish: half-closes, waits for the PutResponse and frees the
 * stream. *out (may be NULL) gets the acks on OK. Returns the call's code. */
kvtier_code kvtier_put_finish(kvtier_put_stream *s, kvtier_put_result *out, kvtier_error *err);

/* kvtier_put_abort: cancels the call (the server sees CANCELLED) and frees. */
void kvtier_put_abort(kvtier_put_stream *s);

/* kvtier_put_blocks: blocks[n] in ONE Tier.PutBlockBatches call (many blocks
 * per message, 1 MiB of payload each): the same all-or-nothing commit and
 * acks as a PutBlocks stream, without a message round trip per block. */
kvtier_code kvtier_put_blocks(kvtier_client *c, uint64_t seq, const kvtier_block *blocks, size_t n,
                              kvtier_put_result *out, kvtier_error *err);

/* kvtier_put_result_free: frees out->acks and zeroes *out. */
void kvtier_put_result_free(kvtier_put_result *r);

/* A block received by kvtier_fetch_blocks. Everything borrowed for the
 * duration of the callback. The library has verified crc32c(payload) ==
 * crc32c and that the key is one that was asked for. */
typedef struct kvtier_fetched {
    uint32_t layer, block;
    const void *payload;
    size_t len;
    uint32_t crc32c;
    uint32_t token_count;
    kvtier_tier tier; /* tier it was served from */
} kvtier_fetched;

/* Return 0 to continue, non-zero to cancel the rest of the stream (the call
 * then returns KVTIER_CANCELLED). */
typedef int (*kvtier_fetch_cb)(const kvtier_fetched *b, void *user);

typedef struct kvtier_block_ref {
    uint32_t layer, block;
} kvtier_block_ref;

/* kvtier_fetch_blocks: refs[n] of sequence `seq` in ONE Tier.FetchBlockBatches
 * call (blocks packed into messages of up to 1 MiB; Tier.FetchBlocks, one
 * message per block, when the server is older); calls cb for each block as it
 * arrives. Returns the final status: OK when the
 * stream ended well; the server's code otherwise (NOT_FOUND, DATA_LOSS, ...:
 * blocks delivered before it were good); DATA_LOSS with a "libkvtier:" message
 * when a received payload fails its crc32c or carries a key not asked for
 * (that block is not passed to cb, the call is cancelled). *n_got (may be
 * NULL) = blocks passed to cb. */
kvtier_code kvtier_fetch_blocks(kvtier_client *c, uint64_t seq, const kvtier_block_ref *refs,
                                size_t n, kvtier_fetch_cb cb, void *user, size_t *n_got,
                                kvtier_error *err);

/* ================================================================ summaries */

typedef struct kvtier_layer_summary {
    uint32_t layer;
    const uint32_t *active; /* [n_active] active blocks */
    const float *peak_mass; /* [n_active] or NULL */
    size_t n_active;
    const uint32_t *recalled; /* [n_recalled] */
    size_t n_recalled;
    const uint32_t *locally_demoted; /* [n_locally_demoted] */
    size_t n_locally_demoted;
    const uint32_t *locally_dropped; /* [n_locally_dropped] dropped by the worker */
    size_t n_locally_dropped;
    uint32_t block_count;    /* blocks the layer has now */
    const uint32_t *revived; /* [n_revived] fetched back and demoted again within the window */
    size_t n_revived;
} kvtier_layer_summary;

typedef struct kvtier_summary {
    uint64_t step;
    const kvtier_layer_summary *layers; /* [n_layers] */
    size_t n_layers;
} kvtier_summary;

typedef struct kvtier_decision {
    uint32_t layer, block;
    kvtier_decision_kind kind;
    kvtier_tier from, to; /* tier before / after (ABSENT when not sent) */
} kvtier_decision;

typedef struct kvtier_decisions {
    uint64_t step;
    kvtier_decision *d; /* [n], free with kvtier_free */
    size_t n;
} kvtier_decisions;

typedef struct kvtier_summarize_stream kvtier_summarize_stream; /* opaque */

/* kvtier_summarize_open: starts the Tier.Summarize bidi stream for `seq`.
 * The stream may live as long as the sequence: it has no whole-call
 * deadline unless stream_timeout_ms is set, and each send waits for its
 * Decisions at most timeout_ms (then the stream ends, DEADLINE_EXCEEDED). */
kvtier_summarize_stream *kvtier_summarize_open(kvtier_client *c, uint64_t seq, kvtier_error *err);

/* kvtier_summarize_send: sends one summary and waits for its Decisions
 * (*out, arrays owned by the caller: kvtier_free(out->d)). On failure the
 * stream is dead: finish it to learn nothing more, the code is returned. */
kvtier_code kvtier_summarize_send(kvtier_summarize_stream *s, const kvtier_summary *sum,
                                  kvtier_decisions *out, kvtier_error *err);

/* kvtier_summarize_finish: half-closes, waits for the status, frees. */
kvtier_code kvtier_summarize_finish(kvtier_summarize_stream *s, kvtier_error *err);

/* ================================================================ generate */

typedef struct kvtier_chat_message {
    const char *role; /* "system" | "user" | "assistant" */
    const char *content;
} kvtier_chat_message;

typedef struct kvtier_generate_params {
    const char *prompt;                  /* raw prompt, or */
    const kvtier_chat_message *messages; /* chat messages */
    size_t n_messages;
    uint32_t max_new_tokens; /* 0 = server default */
    /* Sampling: a non-zero value is sent; a zero is sent only with its has_
     * flag set (temperature 0 = greedy); unsent fields come from the model's
     * generation_config.json (greedy without one). */
    float temperature;
    uint32_t top_k;
    float top_p;
    int has_temperature, has_top_k, has_top_p;
    uint64_t seed;
    int has_seed;
    const char *const *stop; /* [n_stop] stop strings */
    size_t n_stop;
    uint64_t sequence_id; /* 0 = worker chooses */
    int enable_thinking;
    /* Tiering overrides; 0/NULL = worker defaults. */
    const char *policy; /* "tier" | "full" | "drop" */
    float hot_budget_fraction;
    uint32_t hot_budget_blocks;
    int recall_mode; /* 0 default, 1 exact, 2 prefetch */
    float tau;
} kvtier_generate_params;

/* One streamed piece of output (borrowed for the callback). */
typedef struct kvtier_token_event {
    const char *text;          /* text delta, NUL-terminated ("" possible) */
    const uint32_t *token_ids; /* [n_token_ids] */
    size_t n_token_ids;
    uint64_t sequence_id;
} kvtier_token_event;

/* Return 0 to continue, non-zero to cancel the generation. */
typedef int (*kvtier_token_cb)(const kvtier_token_event *ev, void *user);

typedef struct kvtier_generate_result {
    uint64_t sequence_id;
    char finish_reason[16]; /* "stop" (eos or stop string) | "length" (max tokens, context) */
    char stop[256];         /* the stop string that ended it ("" otherwise; not in the text) */
    uint32_t prompt_tokens, generated_tokens;
    double prefill_tokens_per_s, decode_tokens_per_s;
    uint64_t peak_hot_bytes;
    uint64_t blocks_demoted_host, blocks_demoted_ssd, blocks_recalled, blocks_dropped;
    double recall_latency_p50_ms, recall_latency_p99_ms;
    int degraded;
    char degraded_reason[256];
} kvtier_generate_result;

/* kvtier_generate: Inference.Generate on the client's address (a worker or
 * the load balancer): streams every response to cb, fills *out (may be NULL)
 * from the last message. Returns the call's code (CANCELLED when cb asked). */
kvtier_code kvtier_generate(kvtier_client *c, const kvtier_generate_params *p, kvtier_token_cb cb,
                            void *user, kvtier_generate_result *out, kvtier_error *err);

#ifdef __cplusplus
}
#endif
#endif
