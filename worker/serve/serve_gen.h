/* serve_gen.h - what the worker's Generate RPC needs: the loaded model and
 * tokenizer, a pool of engines (slots), the tier link, request validation
 * and the streaming handler. */
#ifndef KVTIER_SERVE_GEN_H
#define KVTIER_SERVE_GEN_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "model.h"
#include "rpc.h"
#include "serve_metrics.h"
#include "tiering.h"

typedef enum { SP_TIER = 0, SP_FULL, SP_DROP, SP_WINDOW, SP_H2O } serve_policy_t;

typedef struct {
    const char *model_dir;
    const char *tenant; /* "default" */
    /* tier link: embedded (tier_data_dir set) or remote (tier_addr set) */
    const char *tier_data_dir;
    uint64_t tier_host_budget, tier_ssd_budget;
    const char *tier_addr, *tier_token;
    int tier_timeout_ms;
    /* defaults of a request's tiering overrides */
    serve_policy_t policy;
    float hot_frac; /* 0.2 */
    int hot_blocks; /* > 0 wins over hot_frac */
    tiering_mode_t mode;
    float tau;
    int stage_blocks; /* staged blocks per layer (-1 = the hot budget) */
    /* engines */
    int slots, threads, prefill_chunk;
    int kv_dtype; /* -1 = follow the model */
    int max_new_default, max_new_limit, max_prompt;
    int retain; /* keep a finished sequence's demoted blocks on the service */
} serve_cfg;

typedef struct serve_ctx serve_ctx;

/* Defaults as documented in `kvtier-worker serve --help`. */
void serve_cfg_defaults(serve_cfg *c);

/* Sets one of "policy", "hot-budget", "mode", "tau" from text. Returns 0, or
 * -1 with a message in err. */
int serve_cfg_set(serve_cfg *c, const char *key, const char *val, char *err, size_t errlen);

/* Loads the model and tokenizer, opens the tier (embedded store or remote
 * link) and creates cfg->slots engines. Returns NULL with a message in err. */
serve_ctx *serve_ctx_new(const serve_cfg *cfg, char *err, size_t errlen);

/* Asks running generations to stop at their next token (shutdown). */
void serve_ctx_stop(serve_ctx *s);

/* Frees everything (no generation may be running). NULL is a no-op. */
void serve_ctx_free(serve_ctx *s);

/* 1 when the tier service failed during the latest generation (reason in
 * detail), 0 when healthy. */
int serve_degraded(serve_ctx *s, char *detail, size_t len);

/* rpc_handler of /kvtier.v1.Inference/Generate (user = serve_ctx). */
void serve_generate(rpc_call *call, const ProtobufCMessage *req, void *user);

/* The worker's counters (borrowed; live as long as s). */
serve_metrics *serve_ctx_metrics(serve_ctx *s);

/* Unix time the context was created (for uptime). */
time_t serve_ctx_started(const serve_ctx *s);

#endif
