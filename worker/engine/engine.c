/* engine.c - generation loop (prefill in chunks, decode, stop conditions,
 * statistics, hooks). See engine.h. */
#include "engine.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "forward.h"

struct engine {
    const qwen3_model_t *m;
    engine_opts_t o;
    threadpool_t *tp;
    fwd_t *fwd;
    kvcache_t *kv;
    float *logits; /* [vocab] */
    /* generation in progress: lets the forward hook reach the engine hooks */
    const engine_hooks_t *hooks;
    backend_kind_t backend; /* resolved: CPU or CUDA */
};

static void eng_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void eng_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static double eng_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void engine_opts_defaults(engine_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->kv_dtype = DT_F32;
}

void engine_gen_defaults(engine_gen_opts_t *g) {
    memset(g, 0, sizeof *g);
    g->max_new_tokens = 256;
    sampler_defaults(&g->sampling);
    local_policy_defaults(&g->policy, LP_FULL);
}

const char *engine_finish_reason(engine_stop_t s) {
    switch (s) {
    case ENGINE_STOP_EOS:
    case ENGINE_STOP_STRING:
        return "stop";
    case ENGINE_STOP_MAX_TOKENS:
    case ENGINE_STOP_CONTEXT:
        return "length";
    default:
        return "cancelled";
    }
}

const char *engine_stop_name(engine_stop_t s) {
    switch (s) {
    case ENGINE_STOP_EOS:
        return "eos";
    case ENGINE_STOP_STRING:
        return "stop_string";
    case ENGINE_STOP_MAX_TOKENS:
        return "max_tokens";
    case ENGINE_STOP_CONTEXT:
        return "context";
    case ENGINE_STOP_HOOK:
        return "hook";
    }
    return "?";
}

engine_t *engine_new(const qwen3_model_t *m, const engine_opts_t *o, char *err, size_t errlen) {
    engine_opts_t def;
    if (!o) {
        engine_opts_defaults(&def);
        o = &def;
    }
    if (o->threads < 0 || o->prefill_chunk < 0 || o->max_context < 0 ||
        (o->backend != BACKEND_CPU && o->backend != BACKEND_CUDA && o->backend != BACKEND_AUTO) ||
        (o->kv_dtype != DT_F32 && o->kv_dtype != DT_BF16)) {
        eng_err(err, errlen, "engine: bad options (threads %d, chunk %d, context %d, kv dtype %d)",
                o->threads, o->prefill_chunk, o->max_context, (int)o->kv_dtype);
        return NULL;
    }
    engine_t *e = calloc(1, sizeof *e);
    if (!e) {
        eng_err(err, errlen, "engine: out of memory");
        return NULL;
    }
    e->m = m;
    e->o = *o;
    if (e->o.max_context == 0)
        e->o.max_context = m->cfg.max_pos > 0 ? m->cfg.max_pos : 40960;
    e->tp = tp_new(o->threads);
    if (!e->tp) {
        eng_err(err, errlen, "engine: cannot start %d threads", o->threads);
        goto fail;
    }
    e->fwd = backend_fwd_new(m, e->tp, o->prefill_chunk, o->backend, &e->backend, err, errlen);
    if (!e->fwd)
        goto fail;
    kvcache_opts ko = {.n_layers = m->cfg.n_layers,
                       .n_kv_heads = m->cfg.n_kv_heads,
                       .head_dim = m->cfg.head_dim,
                       .n_heads = m->cfg.n_heads,
                       .kv_dtype = o->kv_dtype};
    e->kv = kvcache_new(&ko, err, errlen);
    if (!e->kv)
        goto fail;
    e->logits = malloc(sizeof(float) * (size_t)m->cfg.vocab_size);
    if (!e->logits) {
        eng_err(err, errlen, "engine: out of memory for logits");
        goto fail;
    }
    return e;
fail:
    engine_free(e);
    return NULL;
}

void engine_free(engine_t *e) {
    if (!e)
        return;
    kvcache_free(e->kv);
    fwd_free(e->fwd);
    tp_free(e->tp);
    free(e->logits);
    free(e);
}

kvcache_t *engine_kvcache(engine_t *e) {
    return e->kv;
}
threadpool_t *engine_pool(engine_t *e) {
    return e->tp;
}
const qwen3_model_t *engine_model(const engine_t *e) {
    return e->m;
}
struct fwd *engine_forward(engine_t *e) {
    return e->fwd;
}
backend_kind_t engine_backend(const engine_t *e) {
    return e->backend;
}

void engine_result_free(engine_result_t *r) {
    if (!r)
        return;
    free(r->tokens);
    free(r->text);
    free(r->layer_hot_blocks);
    free(r->layer_blocks);
    free(r->layer_active_mean);
    free(r->layer_active_max);
    memset(r, 0, sizeof *r);
}

/* ================================================================ text + stop strings */

/* Pending text: bytes decoded but not yet emitted because they could still
 * start a stop string. */
typedef struct {
    char *emitted; /* all emitted text (result) */
    size_t emitted_len, emitted_cap;
    char *pend;
    size_t pend_len, pend_cap;
} eng_text;

static int buf_append(char **b, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < *len + n + 1)
            c *= 2;
        char *nb = realloc(*b, c);
        if (!nb)
            return -1;
        *b = nb;
        *cap = c;
    }
    if (n)
        memcpy(*b + *len, s, n);
    *len += n;
    (*b)[*len] = 0;
    return 0;
}

static int text_emit(eng_text *t, const engine_gen_opts_t *g, size_t n) {
    if (n == 0)
        return 0;
    if (buf_append(&t->emitted, &t->emitted_len, &t->emitted_cap, t->pend, n) != 0)
        return -1;
    if (g->hooks.on_text)
        g->hooks.on_text(g->hooks.ud, t->pend, n);
    memmove(t->pend, t->pend + n, t->pend_len - n);
    t->pend_len -= n;
    return 0;
}

/* Adds piece; emits what is safe. Returns 1 when a stop string matched (text
 * before it emitted, the rest discarded), 0 otherwise, -1 on OOM. */
static int text_feed(eng_text *t, const engine_gen_opts_t *g, const char *piece, size_t n,
                     int final, int *matched) {
    if (buf_append(&t->pend, &t->pend_len, &t->pend_cap, piece, n) != 0)
        return -1;
    size_t first = (size_t)-1;
    for (int i = 0; i < g->n_stop_strings; i++) {
        const char *s = g->stop_strings[i];
        size_t sl = strlen(s);
        if (!sl || sl > t->pend_len)
            continue;
        for (size_t off = 0; off + sl <= t->pend_len && off < first; off++)
            if (memcmp(t->pend + off, s, sl) == 0) {
                first = off;
                *matched = i;
                break;
            }
    }
    if (first != (size_t)-1) {
        if (text_emit(t, g, first) != 0)
            return -1;
        t->pend_len = 0;
        return 1;
    }
    /* hold back the longest suffix that is a proper prefix of a stop string */
    size_t hold = 0;
    if (!final)
        for (int i = 0; i < g->n_stop_strings; i++) {
            const char *s = g->stop_strings[i];
            size_t sl = strlen(s);
            for (size_t k = sl > 1 ? sl - 1 : 0; k > hold; k--)
                if (k <= t->pend_len && memcmp(t->pend + t->pend_len - k, s, k) == 0) {
                    hold = k;
                    break;
                }
        }
    return text_emit(t, g, t->pend_len - hold) != 0 ? -1 : 0;
}

/* ================================================================ loop */

typedef struct {
    engine_t *e;
    const engine_hooks_t *h;
} eng_fwd_ud;

static int eng_before_attention(void *udp, kvcache_t *kv, int seq, int layer, int pos0, int n,
                                const float *q) {
    (void)kv;
    eng_fwd_ud *ud = udp;
    return ud->h->before_attention(ud->h->ud, ud->e, seq, layer, pos0, n, q);
}

static int eng_is_stop_id(const engine_t *e, const engine_gen_opts_t *g, int tok) {
    if (g->ignore_eos)
        return 0;
    if (e->m->cfg.eos_id >= 0 && tok == e->m->cfg.eos_id)
        return 1;
    for (int i = 0; i < g->n_stop_ids; i++)
        if (g->stop_ids[i] == tok)
            return 1;
    return 0;
}

static int eng_validate(const engine_t *e, const int *prompt, int n_prompt,
                        const engine_gen_opts_t *g, char *err, size_t errlen) {
    if (g->max_new_tokens <= 0) {
        eng_err(err, errlen, "max-new-tokens must be > 0 (got %d)", g->max_new_tokens);
        return -1;
    }
    if (sampler_validate(&g->sampling, err, errlen) != 0)
        return -1;
    if (n_prompt <= 0 || !prompt) {
        eng_err(err, errlen, "the prompt is empty (need at least one token)");
        return -1;
    }
    if (n_prompt >= e->o.max_context) {
        eng_err(err, errlen, "prompt of %d tokens does not fit the context of %d", n_prompt,
                e->o.max_context);
        return -1;
    }
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= e->m->cfg.vocab_size) {
            eng_err(err, errlen, "prompt token %d (id %d) is outside the vocabulary [0, %d)", i,
                    prompt[i], e->m->cfg.vocab_size);
            return -1;
        }
    for (int i = 0; i < g->n_stop_strings; i++)
        if (!g->stop_strings[i] || !g->stop_strings[i][0]) {
            eng_err(err, errlen, "stop string %d is empty", i);
            return -1;
        }
    return 0;
}

static void eng_collect(engine_t *e, int seq, int stats, const double *act_sum, const int *act_max,
                        int nobs, engine_result_t *r) {
    int L = e->m->cfg.n_layers;
    r->kv_hot_bytes = kvcache_bytes_hot(e->kv);
    r->kv_peak_bytes = kvcache_bytes_hot_peak(e->kv);
    r->n_layers = L;
    r->layer_hot_blocks = calloc((size_t)L, sizeof(int));
    r->layer_blocks = calloc((size_t)L, sizeof(int));
    if (stats) {
        r->layer_active_mean = calloc((size_t)L, sizeof(double));
        r->layer_active_max = calloc((size_t)L, sizeof(int));
    }
    for (int l = 0; l < L; l++) {
        if (r->layer_hot_blocks)
            r->layer_hot_blocks[l] = kvcache_hot_blocks(e->kv, seq, l);
        if (r->layer_blocks)
            r->layer_blocks[l] = kvcache_seq_blocks(e->kv, seq, l);
        if (stats && r->layer_active_mean && r->layer_active_max) {
            r->layer_active_mean[l] = nobs ? act_sum[l] / nobs : 0;
            r->layer_active_max[l] = act_max[l];
        }
    }
}

int engine_generate(engine_t *e, const int *prompt, int n_prompt, const engine_gen_opts_t *g,
                    engine_result_t *r, char *err, size_t errlen) {
    memset(r, 0, sizeof *r);
    r->stop_index = -1;
    r->n_prompt = n_prompt;
    if (eng_validate(e, prompt, n_prompt, g, err, errlen) != 0)
        return -1;
    int L = e->m->cfg.n_layers, rc = -1, seq = -1, nobs = 0;
    /* drop and h2o decide from the summary: they need stats */
    int stats = g->stats || g->policy.kind == LP_DROP || g->policy.kind == LP_H2O;
    int window = g->window > 0 ? g->window : SUMMARY_DEFAULT_WINDOW;
    sampler_t *smp = sampler_new(e->m->cfg.vocab_size, &g->sampling);
    double *act_sum = calloc((size_t)L, sizeof(double));
    int *act_max = calloc((size_t)L, sizeof(int));
    eng_text text = {0};
    r->tokens = malloc(sizeof(int) * (size_t)g->max_new_tokens);
    if (!smp || !act_sum || !act_max || !r->tokens ||
        buf_append(&text.emitted, &text.emitted_len, &text.emitted_cap, "", 0) != 0) {
        eng_err(err, errlen, "engine: out of memory");
        goto done;
    }
    seq = kvcache_seq_new(e->kv);
    kvcache_reset_peak(e->kv); /* peak of this generation (one at a time per engine) */
    if (seq < 0) {
        eng_err(err, errlen, "engine: cannot open a KV sequence (%s)", kvcache_errmsg(e->kv));
        goto done;
    }
    if (g->policy.kind != LP_FULL && kvcache_seq_set_policy(e->kv, seq, &g->policy) != KV_OK) {
        eng_err(err, errlen, "engine: bad local policy parameters (%s)", kvcache_errmsg(e->kv));
        goto done;
    }
    if (stats && kvcache_seq_stats(e->kv, seq, 1, g->active_top_p, window) != KV_OK) {
        eng_err(err, errlen, "engine: cannot enable attention statistics (%s)",
                kvcache_errmsg(e->kv));
        goto done;
    }
    eng_fwd_ud fud = {e, &g->hooks};
    fwd_hooks_t fh = {.ud = &fud, .before_attention = eng_before_attention};
    const fwd_hooks_t *fhp = g->hooks.before_attention ? &fh : NULL;

    /* ---- prefill, chunk by chunk (the forward pass's own chunking, so the
     * same arithmetic), asking hooks.poll between chunks */
    double t0 = eng_now();
    int hr = 0;
    int chunk = e->o.prefill_chunk > 0 ? e->o.prefill_chunk : 256; /* as fwd_new */
    for (int off = 0; off < n_prompt; off += chunk) {
        if (off > 0 && g->hooks.poll && (hr = g->hooks.poll(g->hooks.ud)) != 0) {
            r->prefill_s = eng_now() - t0;
            r->stop = ENGINE_STOP_HOOK;
            rc = hr < 0 ? -1 : 0;
            if (hr < 0)
                eng_err(err, errlen, "poll hook failed");
            goto done;
        }
        int n = n_prompt - off < chunk ? n_prompt - off : chunk;
        if (fwd_run(e->fwd, e->kv, seq, prompt + off, n, off,
                    off + n == n_prompt ? e->logits : NULL, 0, fhp, err, errlen) != 0)
            goto done;
    }
    r->prefill_s = eng_now() - t0;
    if (g->hooks.after_prefill &&
        (hr = g->hooks.after_prefill(g->hooks.ud, e, seq, n_prompt)) != 0) {
        if (hr < 0) {
            eng_err(err, errlen, "after-prefill hook failed");
            goto done;
        }
        r->stop = ENGINE_STOP_HOOK;
        rc = 0;
        goto done;
    }
    if (stats && !g->no_window_reset)
        summary_reset_window(kvcache_summary(e->kv, seq));

    /* ---- decode */
    int pos = n_prompt;
    for (;;) {
        int tok = sampler_sample(smp, e->logits);
        if (g->hooks.on_logits)
            tok = g->hooks.on_logits(g->hooks.ud, e->logits, e->m->cfg.vocab_size, tok);
        r->tokens[r->n_tokens++] = tok;
        if (g->hooks.on_token && (hr = g->hooks.on_token(g->hooks.ud, tok)) != 0) {
            if (hr < 0) {
                eng_err(err, errlen, "on-token hook failed");
                goto done;
            }
            r->stop = ENGINE_STOP_HOOK;
            break;
        }
        if (eng_is_stop_id(e, g, tok)) {
            r->stop = ENGINE_STOP_EOS;
            break;
        }
        if (g->hooks.token_piece) {
            size_t pl = 0;
            const char *piece = g->hooks.token_piece(g->hooks.ud, tok, &pl);
            int sr = text_feed(&text, g, piece ? piece : "", piece ? pl : 0, 0, &r->stop_index);
            if (sr < 0) {
                eng_err(err, errlen, "engine: out of memory");
                goto done;
            }
            if (sr == 1) {
                r->stop = ENGINE_STOP_STRING;
                break;
            }
        }
        if (r->n_tokens >= g->max_new_tokens) {
            r->stop = ENGINE_STOP_MAX_TOKENS;
            break;
        }
        if (pos >= e->o.max_context) {
            r->stop = ENGINE_STOP_CONTEXT;
            break;
        }
        /* hot loop: one token through the model */
        double ts = eng_now();
        if (fwd_run(e->fwd, e->kv, seq, &tok, 1, pos, e->logits, 0, fhp, err, errlen) != 0)
            goto done;
        r->decode_s += eng_now() - ts;
        r->decode_steps++;
        if (stats) {
            summary_t *sm = kvcache_summary(e->kv, seq);
            for (int l = 0; l < L; l++) {
                int a = sm->layers[l].last_active_n;
                act_sum[l] += a;
                if (a > act_max[l])
                    act_max[l] = a;
            }
            nobs++;
            if (!g->no_window_reset && summary_window_steps(sm) >= window)
                summary_reset_window(sm);
        }
        if (g->hooks.after_step &&
            (hr = g->hooks.after_step(g->hooks.ud, e, seq, r->decode_steps - 1, pos, tok)) != 0) {
            if (hr < 0) {
                eng_err(err, errlen, "after-step hook failed at position %d", pos);
                goto done;
            }
            r->stop = ENGINE_STOP_HOOK;
            break;
        }
        pos++;
    }
    rc = 0;
done:
    /* flush the detokenizer and whatever text is still held back */
    if (rc == 0 && g->hooks.token_piece && r->stop != ENGINE_STOP_STRING) {
        size_t fl = 0;
        const char *rest = g->hooks.piece_flush ? g->hooks.piece_flush(g->hooks.ud, &fl) : NULL;
        if (text_feed(&text, g, rest ? rest : "", rest ? fl : 0, 1, &r->stop_index) == 1)
            r->stop = ENGINE_STOP_STRING;
    }
    if (seq >= 0) {
        if (g->hooks.before_end)
            g->hooks.before_end(g->hooks.ud, e, seq);
        eng_collect(e, seq, stats, act_sum, act_max, nobs, r);
        kvcache_seq_free(e->kv, seq);
    }
    r->text = text.emitted;
    r->text_len = text.emitted_len;
    free(text.pend);
    free(act_sum);
    free(act_max);
    sampler_free(smp);
    return rc;
}
