/* serve_gen.h - one generation for any front end (gRPC Generate, the OpenAI
 * HTTP API): the loaded model and tokenizer, a pool of engines (slots) with a
 * bounded wait queue, the tier link, request validation, and the stream of
 * text deltas handed to a sink. The front ends translate their wire format to
 * a serve_req and the serve_out back; nothing here knows gRPC or HTTP. */
#ifndef KVTIER_SERVE_GEN_H
#define KVTIER_SERVE_GEN_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "chat.h"
#include "gen_config.h"
#include "model.h"
#include "serve_metrics.h"
#include "tiering.h"
#include "tokenizer.h"

typedef enum { SP_TIER = 0, SP_FULL, SP_DROP, SP_WINDOW, SP_H2O } serve_policy_t;

#define SERVE_MAX_STOPS 16
#define SERVE_MAX_TOP_LOGPROBS 20

typedef struct {
    const char *model_dir;
    const char *model_name; /* served name (/v1/models, metrics label); NULL = the dir's basename */
    const char *tenant;     /* "default" */
    /* tier link: embedded (tier_data_dir set) or remote (tier_addr set) */
    const char *tier_data_dir;
    uint64_t tier_host_budget, tier_ssd_budget;
    const char *tier_addr, *tier_token;
    const char *tier_tls_ca, *tier_tls_cert, *tier_tls_key; /* remote tier over (m)TLS */
    int tier_timeout_ms;
    /* defaults of a request's tiering overrides */
    serve_policy_t policy;
    float hot_frac; /* 0.2 */
    int hot_blocks; /* > 0 wins over hot_frac */
    tiering_mode_t mode;
    float tau;
    int stage_blocks; /* staged blocks per layer (-1 = the hot budget) */
    int tier_async;   /* tiering_opts_t speculate + overlap */
    /* engines */
    int slots, threads, prefill_chunk;
    int kv_dtype;           /* -1 = follow the model */
    backend_kind_t backend; /* BACKEND_CPU (default) or BACKEND_CUDA (resolved by the CLI) */
    int max_new_default, max_new_limit, max_prompt;
    int max_queue; /* requests waiting for a slot beyond which RESOURCE_EXHAUSTED (256) */
    int retain;    /* keep a finished sequence's demoted blocks on the service */
    /* rank 0 of a layer-range pipeline (worker/pipeline/pipe_conf.h; NULL = the
     * whole model here): the engine runs layers [0, l1), the stages the rest */
    const struct pipe_conf *pipe;
} serve_cfg;

typedef struct serve_ctx serve_ctx;

/* What a request asks for. Exactly one prompt form: prompt text, chat
 * messages, or token ids. has_* = the request set the field; unset sampling
 * fields come from generation_config.json (transformers' rule), then greedy. */
typedef struct {
    const char *prompt;
    const chat_msg *messages;
    size_t n_messages;
    int enable_thinking;
    const int32_t *prompt_ids;
    size_t n_prompt_ids;
    int has_max_new, has_temperature, has_top_p, has_top_k, has_seed;
    int max_new;
    float temperature, top_p;
    int top_k;
    uint64_t seed;
    const char *stops[SERVE_MAX_STOPS];
    int n_stops;
    /* tiering overrides; NULL / 0 / -1 keep the worker's defaults */
    const char *policy;
    float hot_frac;
    int hot_blocks;
    int mode; /* -1, TIERING_EXACT or TIERING_PREFETCH */
    float tau;
    uint64_t sequence_id; /* 0 = the worker picks one */
    int logprobs;         /* 0 = off; 1 + the number of alternatives per token */
} serve_req;

/* Log-probabilities of one sampled token under the model (log-softmax of the
 * raw logits) and of the most likely alternatives. */
typedef struct {
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_id[SERVE_MAX_TOP_LOGPROBS];
    float top_logprob[SERVE_MAX_TOP_LOGPROBS];
} serve_logprob;

/* Where the generation goes. Both callbacks run on the generating thread. */
typedef struct {
    void *ud;
    /* The generation got its slot and starts (may be NULL): its sequence id
     * and prompt length. */
    void (*on_start)(void *ud, uint64_t seq_id, int n_prompt);
    /* Text that became final (never part of a stop string) and the tokens
     * sampled since the previous delta (lps NULL unless logprobs were asked).
     * Returns non-zero when the receiver is gone (the generation stops). */
    int (*on_delta)(void *ud, const char *text, size_t len, const int32_t *ids,
                    const serve_logprob *lps, size_t n_ids);
    /* Polled per token and while queued: 1 = stop (client gone), 2 = its
     * deadline passed. May be NULL. */
    int (*cancelled)(void *ud);
} serve_sink;

typedef enum {
    SERVE_OK = 0,
    SERVE_INVALID,        /* bad request (err says what) */
    SERVE_EXHAUSTED,      /* the wait queue is full, or out of memory */
    SERVE_UNAVAILABLE,    /* shutting down */
    SERVE_CANCELLED,      /* the client went away */
    SERVE_DEADLINE,       /* the client's deadline passed (queued or running) */
    SERVE_ALREADY_EXISTS, /* the sequence id is in use by a running generation */
    SERVE_FAILED,         /* the engine failed */
} serve_status_t;

typedef struct {
    serve_status_t status;
    char err[512];
    uint64_t seq_id;
    int n_prompt, n_tokens;
    const char *finish_reason; /* OpenAI's: "stop", "length" (or "cancelled") */
    const char *stop_matched;  /* the stop string that ended it (borrowed from the request) */
    int32_t stop_token;        /* the eos / stop id that ended it, or -1 */
    double queue_s, prefill_s, decode_s;
    int decode_steps;
    size_t kv_peak_bytes;
    int tiered; /* ts is filled */
    tiering_stats_t ts;
    /* tokens sampled after the last delta (the stop's ids), for the final
     * message; valid until serve_out_free */
    int32_t *rest_ids;
    serve_logprob *rest_lps;
    size_t n_rest;
} serve_out;

/* Defaults as documented in `kvtier-worker serve --help`. */
void serve_cfg_defaults(serve_cfg *c);

/* Sets one of "policy", "hot-budget", "mode", "tau" from text. Returns 0, or
 * -1 with a message in err. */
int serve_cfg_set(serve_cfg *c, const char *key, const char *val, char *err, size_t errlen);

/* Loads the model, tokenizer and generation_config.json, opens the tier
 * (embedded store or remote link) and creates cfg->slots engines. Returns
 * NULL with a message in err. */
serve_ctx *serve_ctx_new(const serve_cfg *cfg, char *err, size_t errlen);

/* Asks running generations to stop at their next token and queued ones to
 * give up (shutdown). */
void serve_ctx_stop(serve_ctx *s);

/* 1 once serve_ctx_stop was called. */
int serve_ctx_stopping(serve_ctx *s);

/* Frees everything (no generation may be running). NULL is a no-op. */
void serve_ctx_free(serve_ctx *s);

/* 1 when the tier service failed during the latest generation (reason in
 * detail), 0 when healthy. */
int serve_degraded(serve_ctx *s, char *detail, size_t len);

/* Runs one generation: validates req, waits for a slot (bounded queue,
 * sink->cancelled polled), generates, streams deltas to sink, and fills *out
 * (free with serve_out_free). Counts the outcome in the metrics. Returns
 * out->status. */
serve_status_t serve_run(serve_ctx *s, const serve_req *req, const serve_sink *sink,
                         serve_out *out);

void serve_out_free(serve_out *out);

/* Tokenizes a request's prompt the way serve_run does (chat template for
 * messages). Returns 0 with malloc'd ids, or -1 with a message. */
int serve_tokenize(serve_ctx *s, const serve_req *req, int32_t **ids, size_t *n, char *err,
                   size_t errlen);

/* The Prometheus page of the worker's metrics (tier link counters brought up
 * to date first); malloc'd, NULL on OOM. */
char *serve_ctx_render_metrics(serve_ctx *s, size_t *len);

/* Borrowed parts for the front ends. */
const char *serve_ctx_model_name(const serve_ctx *s);
const qwen3_model_t *serve_ctx_model(const serve_ctx *s);
const tokenizer_t *serve_ctx_tokenizer(const serve_ctx *s);
const gen_config_t *serve_ctx_gen_config(const serve_ctx *s);
const serve_cfg *serve_ctx_cfg(const serve_ctx *s);

/* Unix time the context was created (for uptime). */
time_t serve_ctx_started(const serve_ctx *s);

#endif
