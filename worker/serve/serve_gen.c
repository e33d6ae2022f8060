/* serve_gen.c - Inference.Generate: validation, slots, streaming, tiering. */
#include "serve_gen.h"

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
#include "kvtier.pb-c.h"
#include "tier.h"
#include "tokenizer.h"

#define SERVE_MAX_STOPS 16

struct serve_ctx {
    serve_cfg cfg;
    qwen3_model_t *model;
    tokenizer_t *tok;
    chat_format_t chat; /* CHAT_FORMAT_ERROR: `messages` are refused (chat_err says why) */
    char chat_err[256];
    tier_t *tier; /* embedded store, or NULL */
    tierlink_t *link;
    engine_t **engines; /* [slots] */
    int *busy;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int stopping;
    atomic_ullong next_seq;
    int degraded;
    char degraded_reason[256];
    time_t started;
    serve_metrics metrics;
};

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
    c->tier_timeout_ms = 2000;
}

static int policy_parse(const char *name, serve_policy_t *out) {
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
        if (policy_parse(val, &c->policy) == 0)
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

serve_metrics *serve_ctx_metrics(serve_ctx *s) {
    return &s->metrics;
}

time_t serve_ctx_started(const serve_ctx *s) {
    return s->started;
}

serve_ctx *serve_ctx_new(const serve_cfg *cfg, char *err, size_t errlen) {
    serve_ctx *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    s->started = time(NULL);
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
        s->link =
            tierlink_remote_new(cfg->tier_addr, cfg->tenant, cfg->tier_token, cfg->tier_timeout_ms);
    }
    if (!s->link) {
        snprintf(err, errlen, "cannot create the tier link");
        goto fail;
    }
    int slots = cfg->slots > 0 ? cfg->slots : 1;
    s->engines = calloc((size_t)slots, sizeof *s->engines);
    s->busy = calloc((size_t)slots, sizeof *s->busy);
    if (!s->engines || !s->busy) {
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
        eo.kv_dtype = cfg->kv_dtype >= 0               ? (dtype_t)cfg->kv_dtype
                      : s->model->cfg.dtype == DT_BF16 ? DT_BF16
                                                       : DT_F32;
        s->engines[i] = engine_new(s->model, &eo, err, errlen);
        if (!s->engines[i])
            goto fail;
    }
    return s;
fail:
    serve_ctx_free(s);
    return NULL;
}

void serve_ctx_stop(serve_ctx *s) {
    atomic_store(&s->stopping, 1);
}

void serve_ctx_free(serve_ctx *s) {
    if (!s)
        return;
    int slots = s->cfg.slots > 0 ? s->cfg.slots : 1;
    for (int i = 0; s->engines && i < slots; i++)
        engine_free(s->engines[i]);
    free(s->engines);
    free(s->busy);
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

static int slot_acquire(serve_ctx *s) {
    int slots = s->cfg.slots > 0 ? s->cfg.slots : 1;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        for (int i = 0; i < slots; i++)
            if (!s->busy[i]) {
                s->busy[i] = 1;
                pthread_mutex_unlock(&s->mu);
                return i;
            }
        pthread_cond_wait(&s->cv, &s->mu);
    }
}

static void slot_release(serve_ctx *s, int i) {
    pthread_mutex_lock(&s->mu);
    s->busy[i] = 0;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------ streaming */

typedef struct {
    serve_ctx *s;
    rpc_call *call;
    tokenizer_stream_t *stream;
    uint64_t seq_id;
    uint32_t *ids; /* ids not yet sent */
    size_t n_ids, cap_ids;
    int broken; /* the client went away */
} gen_io;

static int io_on_token(void *ud, int token) {
    gen_io *io = ud;
    if (io->broken || atomic_load(&io->s->stopping) || rpc_call_cancelled(io->call))
        return 1;
    if (io->n_ids == io->cap_ids) {
        size_t nc = io->cap_ids ? io->cap_ids * 2 : 64;
        uint32_t *p = realloc(io->ids, nc * sizeof *p);
        if (!p)
            return -1;
        io->ids = p, io->cap_ids = nc;
    }
    io->ids[io->n_ids++] = (uint32_t)token;
    return 0;
}

static const char *io_piece(void *ud, int token, size_t *len) {
    gen_io *io = ud;
    const char *p = tokenizer_stream_put(io->stream, token, len);
    if (!p) {
        *len = 0;
        return "";
    }
    return p;
}

static const char *io_flush(void *ud, size_t *len) {
    gen_io *io = ud;
    return tokenizer_stream_flush(io->stream, len);
}

static void io_send(gen_io *io, const char *text, size_t len) {
    if (io->broken)
        return;
    Kvtier__V1__GenerateResponse r = KVTIER__V1__GENERATE_RESPONSE__INIT;
    char *t = malloc(len + 1);
    if (!t) {
        io->broken = 1;
        return;
    }
    memcpy(t, text, len);
    t[len] = 0;
    r.text_delta = t;
    r.token_ids = io->ids;
    r.n_token_ids = io->n_ids;
    r.sequence_id = io->seq_id;
    if (rpc_call_write(io->call, &r.base) != 0)
        io->broken = 1;
    io->n_ids = 0;
    free(t);
}

static void io_on_text(void *ud, const char *text, size_t len) {
    io_send(ud, text, len);
}

/* ------------------------------------------------------------ validation */

static int check_utf8(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80             ? 0
                : (*p & 0xE0) == 0xC0 ? 1
                : (*p & 0xF0) == 0xE0 ? 2
                : (*p & 0xF8) == 0xF0 ? 3
                                      : -1;
        if (n < 0 || (n == 1 && *p < 0xC2))
            return -1;
        p++;
        for (int i = 0; i < n; i++, p++)
            if ((*p & 0xC0) != 0x80)
                return -1;
    }
    return 0;
}

/* Builds the prompt ids from a request. Returns 0, or -1 with a message for
 * INVALID_ARGUMENT. */
static int prompt_ids(serve_ctx *s, const Kvtier__V1__GenerateRequest *rq, int32_t **ids, size_t *n,
                      char *err, size_t errlen) {
    int has_prompt = rq->prompt && rq->prompt[0];
    if (!has_prompt && rq->n_messages == 0) {
        snprintf(err, errlen, "empty prompt: set `prompt` or `messages`");
        return -1;
    }
    if (has_prompt && rq->n_messages) {
        snprintf(err, errlen, "set either `prompt` or `messages`, not both");
        return -1;
    }
    char *text = NULL;
    if (has_prompt) {
        if (check_utf8(rq->prompt) != 0) {
            snprintf(err, errlen, "prompt is not valid UTF-8");
            return -1;
        }
        text = strdup(rq->prompt);
    } else if (s->chat == CHAT_FORMAT_ERROR) {
        snprintf(err, errlen,
                 "this model's chat template is not one kvtier can render (%.200s): send a plain "
                 "`prompt` instead of `messages`",
                 s->chat_err);
        return -1;
    } else {
        chat_msg *m = calloc(rq->n_messages, sizeof *m);
        if (!m) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        for (size_t i = 0; i < rq->n_messages; i++) {
            const Kvtier__V1__ChatMessage *cm = rq->messages[i];
            if (!cm->role || (strcmp(cm->role, "system") && strcmp(cm->role, "user") &&
                              strcmp(cm->role, "assistant"))) {
                snprintf(err, errlen,
                         "messages[%zu]: role must be system, user or assistant (got '%s')", i,
                         cm->role ? cm->role : "");
                free(m);
                return -1;
            }
            if (check_utf8(cm->content) != 0) {
                snprintf(err, errlen, "messages[%zu]: content is not valid UTF-8", i);
                free(m);
                return -1;
            }
            m[i].role = cm->role;
            m[i].content = cm->content;
        }
        text = chat_render(s->chat, m, rq->n_messages, 1, rq->enable_thinking);
        free(m);
    }
    if (!text) {
        snprintf(err, errlen, "cannot render the prompt");
        return -1;
    }
    int rc = tokenizer_encode(s->tok, text, strlen(text), ids, n, err, errlen);
    free(text);
    if (rc != 0)
        return -1;
    if (*n == 0) {
        snprintf(err, errlen, "empty prompt after tokenization");
        free(*ids);
        *ids = NULL;
        return -1;
    }
    return 0;
}

typedef struct {
    serve_policy_t policy;
    float hot_frac;
    int hot_blocks;
    tiering_mode_t mode;
    float tau;
    int max_new;
    sampler_opts_t sampling;
    const char *stops[SERVE_MAX_STOPS];
    int n_stops;
} gen_params;

static int gen_params_from(serve_ctx *s, const Kvtier__V1__GenerateRequest *rq, gen_params *g,
                           char *err, size_t errlen) {
    memset(g, 0, sizeof *g);
    g->policy = s->cfg.policy;
    g->hot_frac = s->cfg.hot_frac;
    g->hot_blocks = s->cfg.hot_blocks;
    g->mode = s->cfg.mode;
    g->tau = s->cfg.tau;
    g->max_new = s->cfg.max_new_default;
    sampler_defaults(&g->sampling);
    const Kvtier__V1__SamplingParams *sp = rq->sampling;
    if (sp) {
        if (sp->max_new_tokens > (uint32_t)s->cfg.max_new_limit) {
            snprintf(err, errlen, "max_new_tokens %u is over this worker's limit of %d",
                     sp->max_new_tokens, s->cfg.max_new_limit);
            return -1;
        }
        if (sp->max_new_tokens)
            g->max_new = (int)sp->max_new_tokens;
        if (!isfinite(sp->temperature) || sp->temperature < 0) {
            snprintf(err, errlen, "temperature must be >= 0 (got %g)", sp->temperature);
            return -1;
        }
        if (!isfinite(sp->top_p) || sp->top_p < 0 || sp->top_p > 1) {
            snprintf(err, errlen, "top_p must be in [0, 1] (got %g)", sp->top_p);
            return -1;
        }
        if (sp->top_k > 1000000) {
            snprintf(err, errlen, "top_k %u is out of range", sp->top_k);
            return -1;
        }
        g->sampling.temperature = sp->temperature;
        g->sampling.top_k = (int)sp->top_k;
        g->sampling.top_p = sp->top_p > 0 ? sp->top_p : 1.0f;
        g->sampling.seed = sp->has_seed ? sp->seed : 0;
        if (sp->n_stop > SERVE_MAX_STOPS) {
            snprintf(err, errlen, "at most %d stop strings (got %zu)", SERVE_MAX_STOPS, sp->n_stop);
            return -1;
        }
        for (size_t i = 0; i < sp->n_stop; i++) {
            if (!sp->stop[i][0]) {
                snprintf(err, errlen, "stop[%zu] is empty", i);
                return -1;
            }
            g->stops[g->n_stops++] = sp->stop[i];
        }
    }
    const Kvtier__V1__TieringOverrides *t = rq->tiering;
    if (t) {
        if (t->policy && t->policy[0] && policy_parse(t->policy, &g->policy) != 0) {
            snprintf(err, errlen, "unknown policy '%s' (expected tier, full, drop, window or h2o)",
                     t->policy);
            return -1;
        }
        if (!isfinite(t->hot_budget_fraction) || t->hot_budget_fraction < 0 ||
            t->hot_budget_fraction > 1) {
            snprintf(err, errlen, "hot_budget_fraction must be in (0, 1] (got %g)",
                     t->hot_budget_fraction);
            return -1;
        }
        if (t->hot_budget_blocks)
            g->hot_blocks = (int)t->hot_budget_blocks, g->hot_frac = 0;
        else if (t->hot_budget_fraction > 0)
            g->hot_frac = t->hot_budget_fraction, g->hot_blocks = 0;
        if (t->mode == KVTIER__V1__RECALL_MODE__RECALL_MODE_PREFETCH)
            g->mode = TIERING_PREFETCH;
        else if (t->mode == KVTIER__V1__RECALL_MODE__RECALL_MODE_EXACT)
            g->mode = TIERING_EXACT;
        else if (t->mode != KVTIER__V1__RECALL_MODE__RECALL_MODE_UNSPECIFIED) {
            snprintf(err, errlen, "unknown recall mode %d", (int)t->mode);
            return -1;
        }
        if (!isfinite(t->tau) || t->tau < 0) {
            snprintf(err, errlen, "tau must be >= 0 (got %g)", t->tau);
            return -1;
        }
        if (t->tau > 0)
            g->tau = t->tau;
    }
    return 0;
}

/* Hot blocks per layer for a fraction of the sequence's final KV. */
static int budget_blocks(const gen_params *g, int n_prompt, int floor_blocks) {
    if (g->hot_blocks > 0)
        return g->hot_blocks < floor_blocks ? floor_blocks : g->hot_blocks;
    int total = (n_prompt + g->max_new + KV_BLOCK_TOKENS - 1) / KV_BLOCK_TOKENS;
    int b = (int)ceil(g->hot_frac * (float)total);
    return b < floor_blocks ? floor_blocks : b;
}

static const char *finish_name(engine_stop_t st) {
    return engine_finish_reason(st);
}

void serve_generate(rpc_call *call, const ProtobufCMessage *req, void *user) {
    serve_ctx *s = user;
    const Kvtier__V1__GenerateRequest *rq = (const Kvtier__V1__GenerateRequest *)req;
    char err[512];
    gen_params gp;
    serve_metrics *mt = &s->metrics;
    if (gen_params_from(s, rq, &gp, err, sizeof err) != 0) {
        atomic_fetch_add(&mt->generations[GEN_INVALID], 1);
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", err);
        return;
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (prompt_ids(s, rq, &ids, &n_ids, err, sizeof err) != 0) {
        atomic_fetch_add(&mt->generations[GEN_INVALID], 1);
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", err);
        return;
    }
    int max_prompt = s->cfg.max_prompt > 0 ? s->cfg.max_prompt : s->model->cfg.max_pos;
    if ((int64_t)n_ids > max_prompt || (int64_t)n_ids + gp.max_new > s->model->cfg.max_pos) {
        atomic_fetch_add(&mt->generations[GEN_INVALID], 1);
        rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
                        "prompt is %zu tokens (+%d new); this worker accepts %d prompt tokens and "
                        "a context of %d",
                        n_ids, gp.max_new, max_prompt, s->model->cfg.max_pos);
        free(ids);
        return;
    }
    int *prompt = malloc(n_ids * sizeof *prompt);
    if (!prompt) {
        free(ids);
        rpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    for (size_t i = 0; i < n_ids; i++)
        prompt[i] = ids[i];
    free(ids);

    gen_io io = {s, call, tokenizer_stream_new(s->tok), 0, NULL, 0, 0, 0};
    io.seq_id = rq->sequence_id ? rq->sequence_id : atomic_fetch_add(&s->next_seq, 1);
    engine_gen_opts_t go;
    engine_gen_defaults(&go);
    go.max_new_tokens = gp.max_new;
    go.sampling = gp.sampling;
    go.stop_strings = gp.stops;
    go.n_stop_strings = gp.n_stops;
    go.hooks.ud = &io;
    go.hooks.on_token = io_on_token;
    go.hooks.token_piece = io_piece;
    go.hooks.piece_flush = io_flush;
    go.hooks.on_text = io_on_text;

    tiering_t *tr = NULL;
    if (gp.policy == SP_TIER) {
        tiering_opts_t to;
        tiering_opts_defaults(&to);
        to.link = s->link;
        to.seq_id = io.seq_id;
        to.mode = gp.mode;
        to.tau = gp.tau;
        to.stage_blocks = s->cfg.stage_blocks;
        to.hot_blocks = budget_blocks(&gp, (int)n_ids, to.sink_blocks + to.recent_blocks + 1);
        tr = tiering_new(&to, err, sizeof err);
        if (!tr) {
            atomic_fetch_add(&mt->generations[GEN_INVALID], 1);
            rpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", err);
            goto out;
        }
        tiering_install(tr, &go); /* chains the text hooks above */
    } else {
        local_policy_t kind = gp.policy == SP_FULL     ? LP_FULL
                              : gp.policy == SP_DROP   ? LP_DROP
                              : gp.policy == SP_WINDOW ? LP_WINDOW
                                                       : LP_H2O;
        local_policy_defaults(&go.policy, kind);
        if (kind != LP_FULL) {
            go.policy.hot_blocks = budget_blocks(&gp, (int)n_ids, 6);
            go.policy.hot_frac = 0;
            go.stats = 1;
        }
    }
    int slot = slot_acquire(s);
    engine_result_t res;
    memset(&res, 0, sizeof res);
    atomic_fetch_add(&mt->running, 1);
    int rc = engine_generate(s->engines[slot], prompt, (int)n_ids, &go, &res, err, sizeof err);
    atomic_fetch_sub(&mt->running, 1);
    slot_release(s, slot);
    atomic_fetch_add(&mt->prompt_tokens, (uint64_t)res.n_prompt);
    atomic_fetch_add(&mt->generated_tokens, (uint64_t)res.n_tokens);
    atomic_fetch_add(&mt->decode_steps, (uint64_t)res.decode_steps);
    atomic_fetch_add(&mt->decode_ns, (uint64_t)(res.decode_s * 1e9));
    atomic_fetch_add(&mt->generations[rc != 0     ? GEN_FAILED
                                      : io.broken ? GEN_CANCELLED
                                                  : GEN_OK],
                     1);
    tiering_stats_t ts;
    memset(&ts, 0, sizeof ts);
    if (tr) {
        tiering_finish(tr, s->cfg.retain, &ts);
        serve_metrics_add_tiering(mt, &ts);
    }
    pthread_mutex_lock(&s->mu);
    if (tr) {
        s->degraded = ts.degraded;
        snprintf(s->degraded_reason, sizeof s->degraded_reason, "%s", ts.degraded_reason);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != 0) {
        rpc_call_finish(call, GRPC_STATUS_INTERNAL, "generation failed: %s", err);
    } else if (!io.broken) {
        Kvtier__V1__GenerateResponse r = KVTIER__V1__GENERATE_RESPONSE__INIT;
        Kvtier__V1__Usage u = KVTIER__V1__USAGE__INIT;
        Kvtier__V1__TierRunStats t = KVTIER__V1__TIER_RUN_STATS__INIT;
        u.prompt_tokens = (uint32_t)res.n_prompt;
        u.generated_tokens = (uint32_t)res.n_tokens;
        u.prefill_tokens_per_s = res.prefill_s > 0 ? res.n_prompt / res.prefill_s : 0;
        u.decode_tokens_per_s = res.decode_s > 0 ? res.decode_steps / res.decode_s : 0;
        t.peak_hot_bytes = res.kv_peak_bytes;
        t.blocks_demoted_host = ts.demoted_host;
        t.blocks_demoted_ssd = ts.demoted_ssd;
        t.blocks_recalled = ts.recalled;
        t.blocks_dropped = ts.dropped;
        t.recall_latency_p50_ms = ts.recall_ms_p50;
        t.recall_latency_p99_ms = ts.recall_ms_p99;
        t.degraded = ts.degraded;
        t.degraded_reason = ts.degraded_reason;
        r.text_delta = "";
        r.token_ids = io.ids;
        r.n_token_ids = io.n_ids;
        r.sequence_id = io.seq_id;
        r.done = 1;
        r.finish_reason = (char *)finish_name(res.stop);
        r.usage = &u;
        r.tier_stats = &t;
        rpc_call_write(call, &r.base);
        rpc_call_finish(call, GRPC_STATUS_OK, NULL);
    } else {
        rpc_call_finish(call, GRPC_STATUS_CANCELLED, "client went away");
    }
    engine_result_free(&res);
out:
    tiering_free(tr);
    tokenizer_stream_free(io.stream);
    free(io.ids);
    free(prompt);
}
