/* serve_run.c - one generation: validation, the slot queue, the engine hooks
 * that stream deltas (with log-probabilities) to a sink, tiering, outcome and
 * latency metrics. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat.h"
#include "engine.h"
#include "serve_gen.h"
#include "serve_internal.h"
#include "tokenizer.h"
#ifdef KVTIER_HAVE_PIPELINE
#include "pipe_driver.h"
#endif

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static gen_result_t result_of(serve_status_t st) {
    switch (st) {
    case SERVE_OK:
        return GEN_OK;
    case SERVE_INVALID:
        return GEN_INVALID;
    case SERVE_EXHAUSTED:
        return GEN_EXHAUSTED;
    case SERVE_UNAVAILABLE:
        return GEN_UNAVAILABLE;
    case SERVE_CANCELLED:
        return GEN_CANCELLED;
    case SERVE_DEADLINE:
        return GEN_DEADLINE;
    case SERVE_ALREADY_EXISTS:
        return GEN_ALREADY_EXISTS;
    default:
        return GEN_FAILED;
    }
}

/* ------------------------------------------------------------ slots */

static int seq_in_use(serve_ctx *s, uint64_t id, int slots) {
    for (int i = 0; i < slots; i++)
        if (s->busy[i] && s->running_seq[i] == id)
            return 1;
    return 0;
}

/* Waits for a free slot and claims it for sequence id. Returns the slot, or
 * -status (SERVE_EXHAUSTED queue full, SERVE_UNAVAILABLE stopping,
 * SERVE_CANCELLED / SERVE_DEADLINE from the sink, SERVE_ALREADY_EXISTS when id
 * is running). */
static int slot_acquire(serve_ctx *s, uint64_t id, int check_id, const serve_sink *sink) {
    int slots = s->cfg.slots > 0 ? s->cfg.slots : 1;
    int queued = 0, rc = -SERVE_UNAVAILABLE;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (atomic_load(&s->stopping)) {
            rc = -SERVE_UNAVAILABLE;
            break;
        }
        if (check_id && seq_in_use(s, id, slots)) {
            rc = -SERVE_ALREADY_EXISTS;
            break;
        }
        int free_slot = -1;
        for (int i = 0; i < slots && free_slot < 0; i++)
            if (!s->busy[i])
                free_slot = i;
        if (free_slot >= 0) {
            s->busy[free_slot] = 1;
            s->running_seq[free_slot] = id;
            rc = free_slot;
            break;
        }
        if (!queued) {
            if (s->waiting >= s->cfg.max_queue) {
                rc = -SERVE_EXHAUSTED;
                break;
            }
            s->waiting++;
            atomic_fetch_add(&s->metrics.waiting, 1);
            queued = 1;
        }
        int c = sink && sink->cancelled ? sink->cancelled(sink->ud) : 0;
        if (c) {
            rc = c == 2 ? -SERVE_DEADLINE : -SERVE_CANCELLED;
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000 * 1000; /* the sink is polled every 50 ms */
        if (ts.tv_nsec >= 1000000000L)
            ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    if (queued) {
        s->waiting--;
        atomic_fetch_sub(&s->metrics.waiting, 1);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static void slot_release(serve_ctx *s, int i) {
    pthread_mutex_lock(&s->mu);
    s->busy[i] = 0;
    s->running_seq[i] = 0;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------ streaming */

typedef struct {
    serve_ctx *s;
    const serve_sink *sink;
    engine_t *e;
    tokenizer_stream_t *stream;
    int32_t *ids; /* ids not yet handed to the sink */
    serve_logprob *lps;
    size_t n_ids, cap_ids;
    int want_lp; /* 1 + alternatives, 0 = off */
    serve_logprob cur_lp;
    int gone;      /* the sink said its receiver is gone */
    int cancelled; /* 1 client, 2 deadline, 3 shutdown */
    double t0, t_last;
    int n_seen;
    long long hot_reported;
} gen_io;

static void io_report_hot(gen_io *io, long long now_bytes) {
    atomic_fetch_add(&io->s->metrics.kv_hot_bytes, now_bytes - io->hot_reported);
    io->hot_reported = now_bytes;
}

/* log-softmax of the sampled token and the top alternatives */
static int io_on_logits(void *ud, const float *logits, int n_vocab, int sampled) {
    gen_io *io = ud;
    serve_logprob *lp = &io->cur_lp;
    int k = io->want_lp - 1;
    float mx = -INFINITY;
    for (int i = 0; i < n_vocab; i++)
        if (logits[i] > mx)
            mx = logits[i];
    double sum = 0;
    for (int i = 0; i < n_vocab; i++)
        sum += exp((double)(logits[i] - mx));
    double lse = (double)mx + log(sum);
    lp->id = sampled;
    lp->logprob = (float)((double)logits[sampled] - lse);
    lp->n_top = 0;
    for (int i = 0; i < n_vocab && k > 0; i++) {
        float v = logits[i];
        if (lp->n_top == k && v <= lp->top_logprob[k - 1])
            continue;
        int j = lp->n_top < k ? lp->n_top++ : k - 1;
        while (j > 0 && lp->top_logprob[j - 1] < v) {
            lp->top_logprob[j] = lp->top_logprob[j - 1];
            lp->top_id[j] = lp->top_id[j - 1];
            j--;
        }
        lp->top_logprob[j] = v;
        lp->top_id[j] = i;
    }
    for (int j = 0; j < lp->n_top; j++)
        lp->top_logprob[j] = (float)((double)lp->top_logprob[j] - lse);
    return sampled;
}

static int io_poll(gen_io *io) {
    if (io->gone)
        return 1;
    if (atomic_load(&io->s->stopping)) {
        io->cancelled = 3;
        return 1;
    }
    int c = io->sink->cancelled ? io->sink->cancelled(io->sink->ud) : 0;
    if (c) {
        io->cancelled = c == 2 ? 2 : 1;
        return 1;
    }
    return 0;
}

static int io_hook_poll(void *ud) {
    return io_poll(ud);
}

static int io_on_token(void *ud, int token) {
    gen_io *io = ud;
    double t = now_s();
    serve_metrics *m = &io->s->metrics;
    if (io->n_seen++ == 0)
        serve_hist_observe(&m->ttft, t - io->t0);
    else
        serve_hist_observe(&m->itl, t - io->t_last);
    io->t_last = t;
    io_report_hot(io, (long long)kvcache_bytes_hot(engine_kvcache(io->e)));
    if (io_poll(io))
        return 1;
    if (io->n_ids == io->cap_ids) {
        size_t nc = io->cap_ids ? io->cap_ids * 2 : 64;
        int32_t *p = realloc(io->ids, nc * sizeof *p);
        if (!p)
            return -1;
        io->ids = p;
        if (io->want_lp) {
            serve_logprob *q = realloc(io->lps, nc * sizeof *q);
            if (!q)
                return -1;
            io->lps = q;
        }
        io->cap_ids = nc;
    }
    if (io->want_lp)
        io->lps[io->n_ids] = io->cur_lp;
    io->ids[io->n_ids++] = token;
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

static void io_on_text(void *ud, const char *text, size_t len) {
    gen_io *io = ud;
    if (io->gone)
        return;
    if (io->sink->on_delta(io->sink->ud, text, len, io->ids, io->want_lp ? io->lps : NULL,
                           io->n_ids) != 0)
        io->gone = 1;
    io->n_ids = 0;
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

int serve_tokenize(serve_ctx *s, const serve_req *rq, int32_t **ids, size_t *n, char *err,
                   size_t errlen) {
    int has_prompt = rq->prompt && rq->prompt[0];
    int forms = has_prompt + (rq->n_messages > 0) + (rq->n_prompt_ids > 0);
    *ids = NULL, *n = 0;
    if (forms == 0) {
        snprintf(err, errlen, "empty prompt: set `prompt` or `messages`");
        return -1;
    }
    if (forms > 1) {
        snprintf(err, errlen, "set either `prompt` or `messages`, not both");
        return -1;
    }
    if (rq->n_prompt_ids) {
        int vocab = s->model->cfg.vocab_size;
        for (size_t i = 0; i < rq->n_prompt_ids; i++)
            if (rq->prompt_ids[i] < 0 || rq->prompt_ids[i] >= vocab) {
                snprintf(err, errlen, "prompt token %zu is %d, outside [0, %d)", i,
                         (int)rq->prompt_ids[i], vocab);
                return -1;
            }
        *ids = malloc(rq->n_prompt_ids * sizeof **ids);
        if (!*ids) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        memcpy(*ids, rq->prompt_ids, rq->n_prompt_ids * sizeof **ids);
        *n = rq->n_prompt_ids;
        return 0;
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
        for (size_t i = 0; i < rq->n_messages; i++) {
            const chat_msg *cm = &rq->messages[i];
            if (!cm->role || (strcmp(cm->role, "system") && strcmp(cm->role, "user") &&
                              strcmp(cm->role, "assistant"))) {
                snprintf(err, errlen,
                         "messages[%zu]: role must be system, user or assistant (got '%s')", i,
                         cm->role ? cm->role : "");
                return -1;
            }
            if (!cm->content || check_utf8(cm->content) != 0) {
                snprintf(err, errlen, "messages[%zu]: content is not valid UTF-8 text", i);
                return -1;
            }
        }
        text = chat_render(s->chat, rq->messages, rq->n_messages, 1, rq->enable_thinking);
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
} gen_params;

static int gen_params_from(serve_ctx *s, const serve_req *rq, gen_params *g, char *err,
                           size_t errlen) {
    memset(g, 0, sizeof *g);
    g->policy = s->cfg.policy;
    g->hot_frac = s->cfg.hot_frac;
    g->hot_blocks = s->cfg.hot_blocks;
    g->mode = s->cfg.mode;
    g->tau = s->cfg.tau;
    g->max_new = s->cfg.max_new_default < s->cfg.max_new_limit ? s->cfg.max_new_default
                                                               : s->cfg.max_new_limit;
    sampler_defaults(&g->sampling);
    /* generation_config.json: with do_sample its sampling, without it greedy;
     * what the request sets wins, field by field */
    if (s->gc.present && s->gc.do_sample) {
        g->sampling.temperature = s->gc.temperature;
        g->sampling.top_p = s->gc.top_p;
        g->sampling.top_k = s->gc.top_k;
    }
    if (rq->has_max_new) {
        if (rq->max_new < 1 || rq->max_new > s->cfg.max_new_limit) {
            snprintf(err, errlen, "max_new_tokens must be in [1, %d] on this worker (got %d)",
                     s->cfg.max_new_limit, rq->max_new);
            return -1;
        }
        g->max_new = rq->max_new;
    }
    if (rq->has_temperature) {
        if (!isfinite(rq->temperature) || rq->temperature < 0) {
            snprintf(err, errlen, "temperature must be >= 0 (got %g)", rq->temperature);
            return -1;
        }
        g->sampling.temperature = rq->temperature;
    }
    if (rq->has_top_p) {
        if (!isfinite(rq->top_p) || rq->top_p < 0 || rq->top_p > 1) {
            snprintf(err, errlen, "top_p must be in [0, 1] (got %g)", rq->top_p);
            return -1;
        }
        g->sampling.top_p = rq->top_p > 0 ? rq->top_p : 1.0f;
    }
    if (rq->has_top_k) {
        if (rq->top_k < 0 || rq->top_k > 1000000) {
            snprintf(err, errlen, "top_k %d is out of range [0, 1000000]", rq->top_k);
            return -1;
        }
        g->sampling.top_k = rq->top_k;
    }
    g->sampling.seed = rq->has_seed ? rq->seed : 0;
    if (rq->n_stops < 0 || rq->n_stops > SERVE_MAX_STOPS) {
        snprintf(err, errlen, "at most %d stop strings", SERVE_MAX_STOPS);
        return -1;
    }
    for (int i = 0; i < rq->n_stops; i++)
        if (!rq->stops[i] || !rq->stops[i][0]) {
            snprintf(err, errlen, "stop[%d] is empty", i);
            return -1;
        }
    if (rq->logprobs < 0 || rq->logprobs > SERVE_MAX_TOP_LOGPROBS + 1) {
        snprintf(err, errlen, "top_logprobs must be in [0, %d]", SERVE_MAX_TOP_LOGPROBS);
        return -1;
    }
    if (rq->policy && rq->policy[0] && serve_policy_parse(rq->policy, &g->policy) != 0) {
        snprintf(err, errlen, "unknown policy '%s' (expected tier, full, drop, window or h2o)",
                 rq->policy);
        return -1;
    }
    if (s->pipe && g->policy != SP_TIER && g->policy != SP_FULL) {
        snprintf(err, errlen, "this worker is rank 0 of a pipeline: policy tier or full only");
        return -1;
    }
    if (!isfinite(rq->hot_frac) || rq->hot_frac < 0 || rq->hot_frac > 1) {
        snprintf(err, errlen, "hot_budget_fraction must be in (0, 1] (got %g)", rq->hot_frac);
        return -1;
    }
    if (rq->hot_blocks < 0) {
        snprintf(err, errlen, "hot_budget_blocks must be > 0 (got %d)", rq->hot_blocks);
        return -1;
    }
    if (rq->hot_blocks)
        g->hot_blocks = rq->hot_blocks, g->hot_frac = 0;
    else if (rq->hot_frac > 0)
        g->hot_frac = rq->hot_frac, g->hot_blocks = 0;
    if (rq->mode == TIERING_EXACT || rq->mode == TIERING_PREFETCH)
        g->mode = (tiering_mode_t)rq->mode;
    else if (rq->mode != -1) {
        snprintf(err, errlen, "unknown recall mode %d", rq->mode);
        return -1;
    }
    if (!isfinite(rq->tau) || rq->tau < 0) {
        snprintf(err, errlen, "tau must be >= 0 (got %g)", rq->tau);
        return -1;
    }
    if (rq->tau > 0)
        g->tau = rq->tau;
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

/* ------------------------------------------------------------ one run */

static serve_status_t finish(serve_ctx *s, serve_out *out, serve_status_t st, double t0) {
    out->status = st;
    atomic_fetch_add(&s->metrics.generations[result_of(st)], 1);
    if (st == SERVE_OK)
        serve_hist_observe(&s->metrics.e2e, now_s() - t0);
    return st;
}

serve_status_t serve_run(serve_ctx *s, const serve_req *rq, const serve_sink *sink,
                         serve_out *out) {
    double t0 = now_s();
    memset(out, 0, sizeof *out);
    out->stop_token = -1;
    char *err = out->err;
    size_t errlen = sizeof out->err;
    gen_params gp;
    if (gen_params_from(s, rq, &gp, err, errlen) != 0)
        return finish(s, out, SERVE_INVALID, t0);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (serve_tokenize(s, rq, &ids, &n_ids, err, errlen) != 0)
        return finish(s, out, SERVE_INVALID, t0);
    int max_prompt = s->cfg.max_prompt > 0 ? s->cfg.max_prompt : s->model->cfg.max_pos;
    if ((int64_t)n_ids > max_prompt || (int64_t)n_ids + gp.max_new > s->model->cfg.max_pos) {
        snprintf(err, errlen,
                 "prompt is %zu tokens (+%d new); this worker accepts %d prompt tokens and a "
                 "context of %d",
                 n_ids, gp.max_new, max_prompt, s->model->cfg.max_pos);
        free(ids);
        return finish(s, out, SERVE_INVALID, t0);
    }
    int *prompt = malloc(n_ids * sizeof *prompt);
    if (!prompt) {
        free(ids);
        snprintf(err, errlen, "out of memory");
        return finish(s, out, SERVE_EXHAUSTED, t0);
    }
    for (size_t i = 0; i < n_ids; i++)
        prompt[i] = ids[i];
    free(ids);

    serve_status_t st = SERVE_OK;
    gen_io io;
    memset(&io, 0, sizeof io);
    io.s = s, io.sink = sink, io.t0 = t0;
    io.want_lp = rq->logprobs;
    io.stream = tokenizer_stream_new(s->tok);
    out->seq_id = rq->sequence_id ? rq->sequence_id : atomic_fetch_add(&s->next_seq, 1);
    engine_gen_opts_t go;
    engine_gen_defaults(&go);
    go.max_new_tokens = gp.max_new;
    go.sampling = gp.sampling;
    go.stop_strings = rq->stops;
    go.n_stop_strings = rq->n_stops;
    go.stop_ids = s->stop_ids;
    go.n_stop_ids = s->n_stop_ids;
    go.hooks.ud = &io;
    go.hooks.on_token = io_on_token;
    go.hooks.poll = io_hook_poll;
    go.hooks.on_logits = io.want_lp ? io_on_logits : NULL;
    go.hooks.token_piece = io_piece;
    go.hooks.piece_flush = io_flush;
    go.hooks.on_text = io_on_text;

    tiering_t *tr = NULL;
    if (!io.stream) {
        snprintf(err, errlen, "out of memory");
        st = SERVE_EXHAUSTED;
        goto out;
    }
    int slot = slot_acquire(s, out->seq_id, rq->sequence_id != 0, sink);
    out->queue_s = now_s() - t0;
    if (slot < 0) {
        st = (serve_status_t)-slot;
        snprintf(err, errlen, "%s",
                 st == SERVE_EXHAUSTED     ? "too many requests waiting for a slot; retry later"
                 : st == SERVE_UNAVAILABLE ? "the worker is shutting down"
                 : st == SERVE_ALREADY_EXISTS
                     ? "sequence_id is in use by a running generation; leave it 0 to get a "
                       "fresh one"
                 : st == SERVE_DEADLINE ? "deadline exceeded while waiting for a slot"
                                        : "cancelled while waiting for a slot");
        goto out;
    }
    serve_hist_observe(&s->metrics.queue, out->queue_s);
    io.e = s->engines[slot];
    if (sink->on_start)
        sink->on_start(sink->ud, out->seq_id, (int)n_ids);
    if (gp.policy == SP_TIER) {
        tiering_opts_t to;
        tiering_opts_defaults(&to);
        to.link = s->link;
        to.seq_id = out->seq_id;
        to.mode = gp.mode;
        to.tau = gp.tau;
        to.stage_blocks = s->cfg.stage_blocks;
        to.speculate = to.overlap = s->cfg.tier_async;
        to.hot_blocks = budget_blocks(&gp, (int)n_ids, to.sink_blocks + to.recent_blocks + 1);
        tr = tiering_new(&to, err, errlen);
        if (!tr) {
            slot_release(s, slot);
            st = SERVE_INVALID;
            goto out;
        }
        tiering_install(tr, &go); /* chains the hooks above */
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
    engine_result_t res;
    memset(&res, 0, sizeof res);
    atomic_fetch_add(&s->metrics.running, 1);
    int rc = engine_generate(io.e, prompt, (int)n_ids, &go, &res, err, errlen);
#ifdef KVTIER_HAVE_PIPELINE
    /* the stages end the sequence before the slot (and the ring) is free again */
    if (s->pipe) {
        char perr[512];
        if (pipe_driver_end_seq(s->pipe, perr, sizeof perr) != 0) {
            fprintf(stderr, "kvtier-worker serve: %s\n", perr);
            if (rc == 0) {
                snprintf(err, errlen, "%s", perr);
                rc = -1;
            }
        }
    }
#endif
    atomic_fetch_sub(&s->metrics.running, 1);
    io_report_hot(&io, 0);
    slot_release(s, slot);
    serve_metrics *mt = &s->metrics;
    atomic_fetch_add(&mt->prompt_tokens, (uint64_t)res.n_prompt);
    atomic_fetch_add(&mt->generated_tokens, (uint64_t)res.n_tokens);
    atomic_fetch_add(&mt->decode_steps, (uint64_t)res.decode_steps);
    atomic_fetch_add(&mt->decode_ns, (uint64_t)(res.decode_s * 1e9));
    if (tr) {
        tiering_finish(tr, s->cfg.retain, &out->ts);
        serve_metrics_add_tiering(mt, &out->ts);
        out->tiered = 1;
        pthread_mutex_lock(&s->mu);
        s->degraded = out->ts.degraded;
        snprintf(s->degraded_reason, sizeof s->degraded_reason, "%s", out->ts.degraded_reason);
        pthread_mutex_unlock(&s->mu);
    }
    out->n_prompt = res.n_prompt;
    out->n_tokens = res.n_tokens;
    out->prefill_s = res.prefill_s;
    out->decode_s = res.decode_s;
    out->decode_steps = res.decode_steps;
    out->kv_peak_bytes = res.kv_peak_bytes;
    out->finish_reason = engine_finish_reason(res.stop);
    if (res.stop == ENGINE_STOP_STRING && res.stop_index >= 0 && res.stop_index < rq->n_stops)
        out->stop_matched = rq->stops[res.stop_index];
    if (res.stop == ENGINE_STOP_EOS && res.n_tokens > 0)
        out->stop_token = res.tokens[res.n_tokens - 1];
    engine_result_free(&res);
    if (rc != 0) {
        st = SERVE_FAILED;
    } else if (io.gone || io.cancelled == 1) {
        st = SERVE_CANCELLED;
        snprintf(err, errlen, "the client went away");
    } else if (io.cancelled == 2) {
        st = SERVE_DEADLINE;
        snprintf(err, errlen, "deadline exceeded after %d tokens", out->n_tokens);
    } else if (io.cancelled == 3) {
        st = SERVE_UNAVAILABLE;
        snprintf(err, errlen, "the worker is shutting down");
    }
    /* the ids not yet handed over (a held-back stop string's) go with the end */
    out->rest_ids = io.ids, io.ids = NULL;
    out->rest_lps = io.lps, io.lps = NULL;
    out->n_rest = io.n_ids;
out:
    tiering_free(tr);
    tokenizer_stream_free(io.stream);
    free(io.ids);
    free(io.lps);
    free(prompt);
    return finish(s, out, st, t0);
}

void serve_out_free(serve_out *out) {
    free(out->rest_ids);
    free(out->rest_lps);
    out->rest_ids = NULL;
    out->rest_lps = NULL;
    out->n_rest = 0;
}
