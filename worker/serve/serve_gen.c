/* serve_gen.c - one generation for any front end: the context (model,
 * tokenizer, generation_config, tier link, engines), slots with a bounded
 * wait queue, validation, streaming to a sink, tiering, metrics. */
#include "serve_gen.h"
#include "serve_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "chat.h"
#include "engine.h"
#include "tier.h"
#include "tokenizer.h"
#ifdef KVTIER_HAVE_PIPELINE
#include "pipe_driver.h"
#endif

static const char *policy_names[] = {"tier", "full", "drop", "window", "h2o"};

void serve_cfg_defaults(serve_cfg *c) {
    memset(c, 0, sizeof *c);
    c->tenant = "default";
    c->policy = SP_TIER;
    c->hot_frac = 0.2f;
    c->mode = TIERING_EXACT;
    c->tau = KV_REVIVAL_TAU;
    c->stage_blocks = -1;
    c->slots = 1;
    c->prefill_chunk = 64;
    c->kv_dtype = -1;
    c->max_new_default = 512;
    c->max_new_limit = 4096;
    c->max_queue = 256;
    c->tier_timeout_ms = 2000;
}

int serve_policy_parse(const char *name, serve_policy_t *out) {
    for (int i = 0; i < 5; i++)
        if (strcmp(name, policy_names[i]) == 0) {
            *out = (serve_policy_t)i;
            return 0;
        }
    return -1;
}

int serve_cfg_set(serve_cfg *c, const char *key, const char *val, char *err, size_t errlen) {
    char *end;
    if (strcmp(key, "policy") == 0) {
        if (serve_policy_parse(val, &c->policy) == 0)
            return 0;
        snprintf(err, errlen, "--policy must be tier, full, drop, window or h2o (got '%s')", val);
        return -1;
    }
    if (strcmp(key, "hot-budget") == 0) {
        double v = strtod(val, &end);
        if (*end || end == val || !(v > 0)) {
            snprintf(err, errlen,
                     "--hot-budget must be a fraction in (0,1] or a block count (got '%s')", val);
            return -1;
        }
        if (strchr(val, '.')) {
            if (v > 1) {
                snprintf(err, errlen, "--hot-budget fraction must be in (0,1] (got '%s')", val);
                return -1;
            }
            c->hot_frac = (float)v, c->hot_blocks = 0;
        } else {
            c->hot_blocks = (int)v, c->hot_frac = 0;
        }
        return 0;
    }
    if (strcmp(key, "mode") == 0) {
        if (strcmp(val, "exact") == 0)
            c->mode = TIERING_EXACT;
        else if (strcmp(val, "prefetch") == 0)
            c->mode = TIERING_PREFETCH;
        else {
            snprintf(err, errlen, "--mode must be exact or prefetch (got '%s')", val);
            return -1;
        }
        return 0;
    }
    if (strcmp(key, "tau") == 0) {
        double v = strtod(val, &end);
        if (*end || end == val || !(v > 0) || !isfinite(v)) {
            snprintf(err, errlen, "--tau must be a positive number of logits (got '%s')", val);
            return -1;
        }
        c->tau = (float)v;
        return 0;
    }
    snprintf(err, errlen, "unknown setting %s", key);
    return -1;
}

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

char *serve_ctx_render_metrics(serve_ctx *s, size_t *len) {
    uint64_t skipped = 0, timeouts = 0;
    tierlink_breaker_counts(s->link, &skipped, &timeouts);
    atomic_store(&s->metrics.tier_skipped, skipped);
    atomic_store(&s->metrics.tier_timeouts, timeouts);
    return serve_metrics_render(&s->metrics, s->model_name, (uint64_t)(time(NULL) - s->started),
                                len);
}

time_t serve_ctx_started(const serve_ctx *s) {
    return s->started;
}

const char *serve_ctx_model_name(const serve_ctx *s) {
    return s->model_name;
}

const qwen3_model_t *serve_ctx_model(const serve_ctx *s) {
    return s->model;
}

const tokenizer_t *serve_ctx_tokenizer(const serve_ctx *s) {
    return s->tok;
}

const gen_config_t *serve_ctx_gen_config(const serve_ctx *s) {
    return &s->gc;
}

const serve_cfg *serve_ctx_cfg(const serve_ctx *s) {
    return &s->cfg;
}

serve_ctx *serve_ctx_new(const serve_cfg *cfg, char *err, size_t errlen) {
    serve_ctx *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    s->started = time(NULL);
    serve_metrics_init(&s->metrics);
    if (cfg->model_name && cfg->model_name[0])
        snprintf(s->model_name, sizeof s->model_name, "%s", cfg->model_name);
    else {
        size_t l = strlen(cfg->model_dir);
        while (l > 1 && cfg->model_dir[l - 1] == '/')
            l--;
        size_t b = l;
        while (b > 0 && cfg->model_dir[b - 1] != '/')
            b--;
        snprintf(s->model_name, sizeof s->model_name, "%.*s", (int)(l - b), cfg->model_dir + b);
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    atomic_init(&s->stopping, 0);
    /* Sequence ids must not collide across workers sharing a tier service:
     * start at random (53 bits: exact in JSON numbers), then count up. */
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        r = ((uint64_t)time(NULL) << 20) ^ ((uint64_t)getpid() << 40);
    atomic_init(&s->next_seq, (unsigned long long)((r & ((1ull << 53) - 1)) | 1u));
    if (qwen3_model_load(cfg->model_dir, 0, &s->model, err, errlen) != 0)
        goto fail;
    if (s->model->cfg.rope_scaling.kind != ROPE_SCALING_NONE) {
        char rs[160];
        fprintf(stderr, "kvtier-worker serve: %s: rope scaling %s\n", cfg->model_dir,
                rope_scaling_describe(&s->model->cfg.rope_scaling, rs, sizeof rs));
    }
    char *tp = path_join(cfg->model_dir, "tokenizer.json");
    s->tok = tp ? tokenizer_load(tp, err, errlen) : NULL;
    free(tp);
    if (!s->tok)
        goto fail;
    if (gen_config_load(cfg->model_dir, s->model->cfg.vocab_size, &s->gc, err, errlen) != 0)
        goto fail;
    /* as `run`: generation_config's eos ids, and the chat end markers */
    for (int i = 0; i < s->gc.n_eos; i++)
        s->stop_ids[s->n_stop_ids++] = s->gc.eos[i];
    static const char *const eos_names[2] = {"<|im_end|>", "<|endoftext|>"};
    for (int i = 0; i < 2; i++) {
        int id = tokenizer_token_id(s->tok, eos_names[i]), dup = 0;
        for (int k = 0; k < s->n_stop_ids; k++)
            dup |= s->stop_ids[k] == id;
        if (id >= 0 && id < s->model->cfg.vocab_size && !dup)
            s->stop_ids[s->n_stop_ids++] = id;
    }
    /* As `run --chat`: no tokenizer_config.json -> the Qwen3 template; one whose
     * template kvtier does not know -> chat requests are refused with the reason
     * (plain prompts still work), never rendered with a template the model was
     * not trained on. */
    char *cp = path_join(cfg->model_dir, "tokenizer_config.json");
    struct stat cst;
    s->chat = CHAT_QWEN3;
    if (cp && stat(cp, &cst) == 0) {
        char why[200];
        s->chat = chat_detect_file(cp, why, sizeof why);
        if (s->chat == CHAT_FORMAT_ERROR) {
            snprintf(s->chat_err, sizeof s->chat_err, "%.200s", why);
            fprintf(stderr,
                    "kvtier-worker serve: warning: %s: %s; requests with `messages` will be "
                    "refused (plain prompts work)\n",
                    cp, why);
        }
    }
    free(cp);
    if (cfg->tier_data_dir) {
#ifndef KVTIER_HAVE_EMBEDDED_TIER
        snprintf(err, errlen,
                 "this worker was built without the embedded tier "
                 "(-DKVTIER_EMBEDDED_TIER=OFF): give --tier ADDR of a kvtierd");
        goto fail;
#else
        tier_options o;
        tier_options_init(&o);
        o.data_dir = cfg->tier_data_dir;
        o.host_budget = cfg->tier_host_budget;
        o.ssd_budget = cfg->tier_ssd_budget;
        if (tier_open(&o, &s->tier, err, errlen) != TIER_OK)
            goto fail;
        s->link = tierlink_embedded_new(s->tier, cfg->tenant);
#endif
    } else {
        s->link = tierlink_remote_new_tls(cfg->tier_addr, cfg->tenant, cfg->tier_token,
                                          cfg->tier_timeout_ms, cfg->tier_tls_ca,
                                          cfg->tier_tls_cert, cfg->tier_tls_key, err, errlen);
        if (!s->link)
            goto fail;
    }
    if (!s->link) {
        snprintf(err, errlen, "cannot create the tier link");
        goto fail;
    }
    int slots = cfg->slots > 0 ? cfg->slots : 1;
    const qwen3_model_t *em = s->model; /* what the engines run */
#ifdef KVTIER_HAVE_PIPELINE
    if (cfg->pipe) {
        if (slots != 1) {
            snprintf(err, errlen, "a pipeline runs one generation at a time: --slots 1");
            goto fail;
        }
        dtype_t kvd = cfg->kv_dtype >= 0               ? (dtype_t)cfg->kv_dtype
                      : s->model->cfg.dtype == DT_BF16 ? DT_BF16
                                                       : DT_F32;
        s->pipe = pipe_driver_new(cfg->pipe, s->model, cfg->prefill_chunk, kvd, err, errlen);
        if (!s->pipe)
            goto fail;
        pipe_model_view(s->model, 0, cfg->pipe->l1, &s->pipe_view);
        em = &s->pipe_view;
    }
#endif
    s->engines = calloc((size_t)slots, sizeof *s->engines);
    s->busy = calloc((size_t)slots, sizeof *s->busy);
    s->running_seq = calloc((size_t)slots, sizeof *s->running_seq);
    if (!s->engines || !s->busy || !s->running_seq) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (int i = 0; i < slots; i++) {
        engine_opts_t eo;
        engine_opts_defaults(&eo);
        if (cfg->threads > 0)
            eo.threads = cfg->threads;
        else {
            long n = sysconf(_SC_NPROCESSORS_ONLN);
            eo.threads = n > slots ? (int)(n / slots) : 1;
        }
        eo.prefill_chunk = cfg->prefill_chunk;
        eo.backend = cfg->backend;
        eo.kv_dtype = cfg->kv_dtype >= 0               ? (dtype_t)cfg->kv_dtype
                      : s->model->cfg.dtype == DT_BF16 ? DT_BF16
                                                       : DT_F32;
        s->engines[i] = engine_new(em, &eo, err, errlen);
        if (!s->engines[i])
            goto fail;
#ifdef KVTIER_HAVE_PIPELINE
        if (s->pipe)
            pipe_driver_attach(s->pipe, s->engines[i]);
#endif
    }
    return s;
fail:
    serve_ctx_free(s);
    return NULL;
}

void serve_ctx_stop(serve_ctx *s) {
    atomic_store(&s->stopping, 1);
    pthread_mutex_lock(&s->mu);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int serve_ctx_stopping(serve_ctx *s) {
    return atomic_load(&s->stopping);
}

void serve_ctx_free(serve_ctx *s) {
    if (!s)
        return;
    int slots = s->cfg.slots > 0 ? s->cfg.slots : 1;
    for (int i = 0; s->engines && i < slots; i++)
        engine_free(s->engines[i]);
    free(s->engines);
    free(s->busy);
    free(s->running_seq);
#ifdef KVTIER_HAVE_PIPELINE
    pipe_driver_free(s->pipe); /* BYE: the stages exit */
#endif
    tierlink_free(s->link);
#ifdef KVTIER_HAVE_EMBEDDED_TIER
    if (s->tier)
        tier_close(s->tier);
#endif
    tokenizer_free(s->tok);
    qwen3_model_free(s->model);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

int serve_degraded(serve_ctx *s, char *detail, size_t len) {
    pthread_mutex_lock(&s->mu);
    int d = s->degraded;
    snprintf(detail, len, "%s", d ? s->degraded_reason : "");
    pthread_mutex_unlock(&s->mu);
    return d;
}
