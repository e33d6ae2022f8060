/* serve_internal.h - the serve context, shared by serve_gen.c (its life
 * cycle) and serve_run.c (one generation). Not for the front ends. */
#ifndef KVTIER_SERVE_INTERNAL_H
#define KVTIER_SERVE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "engine.h"
#include "serve_gen.h"
#include "tier.h"

struct serve_ctx {
    serve_cfg cfg;
    qwen3_model_t *model;
    tokenizer_t *tok;
    chat_format_t chat; /* CHAT_FORMAT_ERROR: `messages` are refused (chat_err says why) */
    char chat_err[256];
    tier_t *tier; /* embedded store, or NULL */
    tierlink_t *link;
    gen_config_t gc;
    int stop_ids[GEN_CONFIG_MAX_EOS + 2]; /* generation_config eos ids, <|im_end|>, <|endoftext|> */
    int n_stop_ids;
    char model_name[256];
    engine_t **engines; /* [slots] */
    int *busy;
    int waiting;
    uint64_t *running_seq; /* [slots] sequence id per busy slot (in-use check) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int stopping;
    atomic_ullong next_seq;
    int degraded;
    char degraded_reason[256];
    time_t started;
    serve_metrics metrics;
    struct pipe_driver *pipe; /* rank 0 of a layer-range pipeline, or NULL */
    qwen3_model_t pipe_view;  /* ... the model's layers [0, l1) of this rank */
};

/* Policy name ("tier", "full", "drop", "window", "h2o") to its value.
 * Returns 0, -1 when unknown. */
int serve_policy_parse(const char *name, serve_policy_t *out);

#endif
