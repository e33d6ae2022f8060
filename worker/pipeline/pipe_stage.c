/* pipe_stage.c - a follower rank of a layer-range pipeline (see pipe_stage.h). */
#include "pipe_stage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "forward.h"
#ifdef KVTIER_PIPE_TIERING
#include "tier.h"
#include "tiering.h"
#endif

typedef struct {
    const pipe_stage_opts *o;
    pipe_conf_t c;
    pipe_transport_t *t;
    qwen3_model_t view; /* layers [l0, l1) of o->model */
    engine_t *e;
    int hidden, last; /* last: this rank sends RESULT to rank 0 */
    float *buf;       /* received payload [max_chunk][hidden] (or text) */
    size_t cap;
    /* the open sequence */
    int seq; /* kvcache handle, -1 = none */
    uint32_t drv_seq;
    int len;    /* positions in the cache */
    int steps;  /* decode steps run */
    int failed; /* a chunk failed: FWDs of this sequence are refused until the next opens */
    engine_gen_opts_t g; /* hooks of the tiering driver (when tiered) */
    uint64_t tier_seqs;
#ifdef KVTIER_PIPE_TIERING
    tier_t *tier;
    tierlink_t *link;
    tiering_t *tr;
#endif
} ps_t;

static void ps_label(const ps_t *s, char *out, size_t n) {
    snprintf(out, n, "rank %d (layers %d-%d)", s->c.rank, s->c.l0, s->c.l1 - 1);
}

/* Sends an ERROR naming this rank on to the next one (best effort). */
static void ps_send_error(ps_t *s, uint32_t drv_seq, const char *msg) {
    char text[PIPE_ERRTEXT_MAX], lab[64], why[256];
    ps_label(s, lab, sizeof lab);
    int n = snprintf(text, sizeof text, "%s: %s", lab, msg);
    if (n < 0)
        n = 0;
    if (n >= (int)sizeof text)
        n = sizeof text - 1;
    pipe_hdr_t h;
    pipe_hdr_init(&h, PIPE_OP_ERROR, (uint32_t)s->c.rank);
    h.seq = drv_seq;
    h.payload_bytes = (uint64_t)n;
    if (pipe_send(s->t, &h, text, s->c.timeout_ms, why, sizeof why) != PIPE_OK)
        fprintf(stderr, "kvtier-worker stage: %s: cannot pass on the error (%s): %s\n", lab, why,
                text);
}

/* ---------------------------------------------------------------- sequences */

/* The tiering driver's before_attention through the forward pass's hook. */
static int ps_before_attention(void *ud, kvcache_t *kv, int seq, int layer, int pos0, int n,
                               const float *q) {
    (void)kv;
    ps_t *s = ud;
    return s->g.hooks.before_attention(s->g.hooks.ud, s->e, seq, layer, pos0, n, q);
}

static void ps_close_seq(ps_t *s) {
    if (s->seq < 0)
        return;
    char lab[64];
    ps_label(s, lab, sizeof lab);
    kvcache_t *kv = engine_kvcache(s->e);
    size_t peak = kvcache_bytes_hot_peak(kv);
    if (s->g.hooks.before_end)
        s->g.hooks.before_end(s->g.hooks.ud, s->e, s->seq);
#ifdef KVTIER_PIPE_TIERING
    if (s->tr) {
        tiering_stats_t st;
        tiering_finish(s->tr, 0, &st);
        if (!s->o->quiet)
            fprintf(stderr,
                    "%s: sequence %u closed: %d positions, hot KV peak %zu bytes; tier: demoted "
                    "%llu, recalled %llu, fetched %llu%s%s\n",
                    lab, s->drv_seq, s->len, peak, (unsigned long long)st.demoted,
                    (unsigned long long)st.recalled, (unsigned long long)st.fetched,
                    st.degraded ? ", degraded: " : "", st.degraded ? st.degraded_reason : "");
        tiering_free(s->tr);
        s->tr = NULL;
    } else
#endif
        if (!s->o->quiet)
        fprintf(stderr, "%s: sequence %u closed: %d positions, hot KV peak %zu bytes\n", lab,
                s->drv_seq, s->len, peak);
    kvcache_seq_free(kv, s->seq);
    s->seq = -1;
    memset(&s->g, 0, sizeof s->g);
}

static int ps_open_seq(ps_t *s, uint32_t drv_seq, char *err, size_t errlen) {
    ps_close_seq(s);
    kvcache_t *kv = engine_kvcache(s->e);
    s->drv_seq = drv_seq;
    s->len = 0;
    s->steps = 0;
    s->failed = 0;
    engine_gen_defaults(&s->g);
#ifdef KVTIER_PIPE_TIERING
    if (s->link) {
        tiering_opts_t to;
        tiering_opts_defaults(&to);
        to.link = s->link;
        /* a tier sequence of its own per stage and generation: rank, process
         * and count (stages of several pipelines may share one kvtierd) */
        to.seq_id = ((uint64_t)(s->c.rank + 1) << 52) | ((uint64_t)(getpid() & 0xfff) << 40) |
                    ++s->tier_seqs;
        to.hot_blocks = s->o->hot_blocks;
        if (s->o->tau > 0)
            to.tau = s->o->tau;
        s->tr = tiering_new(&to, err, errlen);
        if (!s->tr)
            return -1;
        tiering_install(s->tr, &s->g);
    }
#endif
    s->seq = kvcache_seq_new(kv);
    kvcache_reset_peak(kv);
    if (s->seq < 0) {
        snprintf(err, errlen, "cannot open a KV sequence (%s)", kvcache_errmsg(kv));
        return -1;
    }
    if (s->g.stats && kvcache_seq_stats(kv, s->seq, 1, s->g.active_top_p, s->g.window) != KV_OK) {
        snprintf(err, errlen, "cannot enable attention statistics (%s)", kvcache_errmsg(kv));
        return -1;
    }
    return 0;
}

/* Runs one FWD chunk through this stage's layers, in place in s->buf. */
static int ps_forward(ps_t *s, const pipe_hdr_t *h, char *err, size_t errlen) {
    if (h->width != (uint32_t)s->hidden) {
        snprintf(err, errlen, "FWD rows of %u floats, this model's hidden size is %d", h->width,
                 s->hidden);
        return -1;
    }
    if (h->pos0 == 0 && ps_open_seq(s, h->seq, err, errlen) != 0)
        return -1;
    if (s->seq < 0 || h->seq != s->drv_seq || h->pos0 != s->len || s->failed) {
        snprintf(err, errlen,
                 "FWD for sequence %u at position %d, but this stage has %s %u at length %d",
                 h->seq, h->pos0, s->failed ? "a failed sequence" : "sequence", s->drv_seq, s->len);
        return -1;
    }
    int n = (int)h->n;
    long bad = pipe_first_nonfinite(s->buf, (size_t)n * (size_t)s->hidden);
    if (bad >= 0) {
        snprintf(err, errlen,
                 "rank %d sent a non-finite hidden state (position %ld, element %ld): refused",
                 (s->c.rank + s->c.world - 1) % s->c.world, h->pos0 + bad / s->hidden,
                 bad % s->hidden);
        return -1;
    }
    const fwd_hooks_t hooks = {.ud = s, .before_attention = ps_before_attention};
    if (fwd_layers(engine_forward(s->e), engine_kvcache(s->e), s->seq, s->buf, n, h->pos0,
                   s->g.hooks.before_attention ? &hooks : NULL, err, errlen) != 0)
        return -1;
    s->len += n;
    int hr = 0;
    if ((h->flags & PIPE_F_PROMPT_END) && s->g.hooks.after_prefill)
        hr = s->g.hooks.after_prefill(s->g.hooks.ud, s->e, s->seq, s->len);
    else if ((h->flags & PIPE_F_DECODE) && s->g.hooks.after_step)
        hr = s->g.hooks.after_step(s->g.hooks.ud, s->e, s->seq, s->steps++, h->pos0, 0);
    if (hr < 0) {
        snprintf(err, errlen, "tiering hook failed at position %d", h->pos0);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- setup */

/* HELLO: check what rank 0 announces against this rank, make the engine,
 * pass it on with the next layer advanced. */
static int ps_hello(ps_t *s, const pipe_hdr_t *h, char *err, size_t errlen) {
    pipe_hello_t hl;
    pipe_hello_decode((const unsigned char *)s->buf, &hl);
    const qwen3_config_t *mc = &s->o->model->cfg;
    if (hl.world != (uint32_t)s->c.world) {
        snprintf(err, errlen, "--world-size %d here, rank 0 has %u", s->c.world, hl.world);
        return -1;
    }
    if (hl.hops != (uint32_t)s->c.rank) {
        snprintf(err, errlen,
                 "the ring reaches this rank after %u ranks: check --rank and --pipe-next",
                 hl.hops);
        return -1;
    }
    if (hl.hidden != (uint32_t)mc->hidden || hl.n_layers != (uint32_t)mc->n_layers ||
        hl.vocab != (uint32_t)mc->vocab_size || hl.n_heads != (uint32_t)mc->n_heads ||
        hl.n_kv_heads != (uint32_t)mc->n_kv_heads || hl.head_dim != (uint32_t)mc->head_dim ||
        hl.fingerprint != pipe_model_fingerprint(s->o->model)) {
        snprintf(err, errlen,
                 "rank 0 runs another model (hidden %u, %u layers, vocab %u; here hidden %d, %d "
                 "layers, vocab %d, or other weights): give every rank the same --model",
                 hl.hidden, hl.n_layers, hl.vocab, mc->hidden, mc->n_layers, mc->vocab_size);
        return -1;
    }
    if (hl.next_layer != (uint32_t)s->c.l0) {
        snprintf(err, errlen,
                 "the ranks before this one end at layer %u, this rank starts at %d: the --layers "
                 "ranges must follow each other",
                 hl.next_layer - 1, s->c.l0);
        return -1;
    }
    if (hl.max_chunk == 0 || hl.max_chunk > 65536 ||
        (hl.kv_dtype != DT_F32 && hl.kv_dtype != DT_BF16)) {
        snprintf(err, errlen, "rank 0 announces chunk %u and KV dtype %u (not usable)",
                 hl.max_chunk, hl.kv_dtype);
        return -1;
    }
    engine_opts_t eo;
    engine_opts_defaults(&eo);
    eo.threads = s->o->threads;
    eo.prefill_chunk = (int)hl.max_chunk;
    eo.kv_dtype = (dtype_t)hl.kv_dtype;
    s->e = engine_new(&s->view, &eo, err, errlen);
    if (!s->e)
        return -1;
    s->cap = (size_t)hl.max_chunk * (size_t)s->hidden * sizeof(float);
    if (s->cap < PIPE_ERRTEXT_MAX)
        s->cap = PIPE_ERRTEXT_MAX;
    float *nb = realloc(s->buf, s->cap);
    if (!nb) {
        snprintf(err, errlen, "out of memory for %zu bytes of hidden states", s->cap);
        return -1;
    }
    s->buf = nb;
    hl.hops++;
    hl.next_layer = (uint32_t)s->c.l1;
    pipe_hdr_t out = *h;
    out.rank = (uint32_t)s->c.rank;
    pipe_hello_encode(&hl, (unsigned char *)s->buf);
    char why[256];
    if (pipe_send(s->t, &out, s->buf, s->c.connect_timeout_ms, why, sizeof why) != PIPE_OK) {
        snprintf(err, errlen, "cannot pass HELLO to the next rank: %s", why);
        return -1;
    }
    return 0;
}

static int ps_open_tier(ps_t *s, char *err, size_t errlen) {
    if (!s->o->tier)
        return 0;
#ifdef KVTIER_PIPE_TIERING
    const char *tenant = s->o->tenant ? s->o->tenant : "default";
    if (!strcmp(s->o->tier, "embedded")) {
#ifdef KVTIER_HAVE_EMBEDDED_TIER
        tier_options to;
        tier_options_init(&to);
        to.data_dir = s->o->tier_data_dir;
        if (tier_open(&to, &s->tier, err, errlen) != TIER_OK)
            return -1;
        s->link = tierlink_embedded_new(s->tier, tenant);
#else
        snprintf(err, errlen, "this build has no embedded tier: give --tier ADDR");
        return -1;
#endif
    } else
        s->link = tierlink_remote_new(s->o->tier, tenant, NULL, 0);
    if (!s->link) {
        snprintf(err, errlen, "cannot create the tier link");
        return -1;
    }
    return 0;
#else
    snprintf(err, errlen, "this build has no tiering (needs the tier client libraries)");
    return -1;
#endif
}

static void ps_free(ps_t *s) {
    if (s->e)
        ps_close_seq(s);
    engine_free(s->e);
#ifdef KVTIER_PIPE_TIERING
    tierlink_free(s->link);
#ifdef KVTIER_HAVE_EMBEDDED_TIER
    if (s->tier)
        tier_close(s->tier);
#endif
#endif
    pipe_transport_free(s->t);
    free(s->buf);
}

/* ---------------------------------------------------------------- loop */

/* Passes h (payload in s->buf) on to the next rank. */
static int ps_pass(ps_t *s, const pipe_hdr_t *h, char *err, size_t errlen) {
    char why[256];
    int rc = pipe_send(s->t, h, s->buf, s->c.timeout_ms, why, sizeof why);
    if (rc != PIPE_OK) {
        snprintf(err, errlen, "sending %s to rank %d failed: %s", pipe_op_name(h->op),
                 (s->c.rank + 1) % s->c.world, why);
        return -1;
    }
    return 0;
}

/* One FWD: run, then forward it (or RESULT to rank 0 from the last rank). */
static int ps_on_fwd(ps_t *s, pipe_hdr_t *h, char *err, size_t errlen) {
    char why[512];
    if (ps_forward(s, h, why, sizeof why) != 0) {
        s->failed = 1;
        ps_send_error(s, h->seq, why);
        return 0; /* the ring still works: wait for the next sequence */
    }
    pipe_hdr_t out = *h;
    out.rank = (uint32_t)s->c.rank;
    if (s->last) {
        out.op = PIPE_OP_RESULT;
        out.n = h->want;
        out.want = 0;
        size_t row = (size_t)s->hidden;
        if (h->want && h->want < h->n)
            memmove(s->buf, s->buf + (size_t)(h->n - h->want) * row,
                    (size_t)h->want * row * sizeof(float));
    }
    out.payload_bytes = (uint64_t)out.n * out.width * sizeof(float);
    return ps_pass(s, &out, err, errlen);
}

int pipe_stage_run(const pipe_stage_opts *o, char *err, size_t errlen) {
    ps_t s;
    memset(&s, 0, sizeof s);
    s.o = o;
    s.c = o->conf;
    s.seq = -1;
    s.hidden = o->model->cfg.hidden;
    s.last = s.c.rank == s.c.world - 1;
    char lab[64], why[512];
    ps_label(&s, lab, sizeof lab);
    if (pipe_conf_check(&s.c, o->model->cfg.n_layers, why, sizeof why) != 0 || s.c.rank == 0) {
        snprintf(err, errlen, "%s: %s", lab,
                 s.c.rank == 0 ? "rank 0 is the driver (`kvtier-worker run`)" : why);
        return -1;
    }
    pipe_model_view(o->model, s.c.l0, s.c.l1, &s.view);
    s.cap = PIPE_ERRTEXT_MAX > PIPE_HELLO_BYTES ? PIPE_ERRTEXT_MAX : PIPE_HELLO_BYTES;
    s.buf = malloc(s.cap);
    int rc = -1;
    if (!s.buf) {
        snprintf(err, errlen, "%s: out of memory", lab);
        goto out;
    }
    if (ps_open_tier(&s, why, sizeof why) != 0) {
        snprintf(err, errlen, "%s: %s", lab, why);
        goto out;
    }
    s.t = pipe_conf_connect(&s.c, why, sizeof why);
    if (!s.t) {
        snprintf(err, errlen, "%s: %s", lab, why);
        goto out;
    }
    int prev = (s.c.rank + s.c.world - 1) % s.c.world;
    for (;;) {
        pipe_hdr_t h;
        /* idle between generations: no bound on waiting for the previous rank */
        int r =
            pipe_recv(s.t, &h, s.buf, s.cap, s.e ? -1 : s.c.connect_timeout_ms, why, sizeof why);
        if (r != PIPE_OK) {
            char msg[700];
            snprintf(msg, sizeof msg, "receiving from rank %d failed: %s%s", prev, why,
                     r == PIPE_ECLOSED ? " (that stage died or quit)" : "");
            ps_send_error(&s, 0, msg);
            snprintf(err, errlen, "%s: %s", lab, msg);
            goto out;
        }
        if (!s.e && h.op != PIPE_OP_HELLO && h.op != PIPE_OP_ERROR && h.op != PIPE_OP_BYE) {
            snprintf(err, errlen, "%s: %s before HELLO from rank %d", lab, pipe_op_name(h.op),
                     prev);
            ps_send_error(&s, h.seq, err);
            goto out;
        }
        switch (h.op) {
        case PIPE_OP_HELLO:
            if (s.e) {
                snprintf(why, sizeof why, "a second HELLO");
                ps_send_error(&s, 0, why);
                snprintf(err, errlen, "%s: %s", lab, why);
                goto out;
            }
            if (ps_hello(&s, &h, why, sizeof why) != 0) {
                ps_send_error(&s, 0, why);
                snprintf(err, errlen, "%s: %s", lab, why);
                goto out;
            }
            break;
        case PIPE_OP_FWD:
            if (ps_on_fwd(&s, &h, why, sizeof why) != 0) {
                snprintf(err, errlen, "%s: %s", lab, why);
                goto out;
            }
            break;
        case PIPE_OP_CLOSE:
            if (s.e)
                ps_close_seq(&s);
            h.rank = (uint32_t)s.c.rank;
            if (ps_pass(&s, &h, why, sizeof why) != 0) {
                snprintf(err, errlen, "%s: %s", lab, why);
                goto out;
            }
            break;
        case PIPE_OP_BYE:
            h.rank = (uint32_t)s.c.rank;
            ps_pass(&s, &h, why, sizeof why); /* best effort: rank 0 may be gone */
            rc = 0;
            goto out;
        case PIPE_OP_ERROR: /* someone upstream failed: close ours, pass it on */
            if (s.e && s.seq >= 0 && h.seq == s.drv_seq)
                s.failed = 1;
            if (ps_pass(&s, &h, why, sizeof why) != 0) {
                snprintf(err, errlen, "%s: %s", lab, why);
                goto out;
            }
            if (!s.e) {
                snprintf(err, errlen, "%s: a rank before this one failed during setup", lab);
                goto out;
            }
            break;
        default:
            snprintf(why, sizeof why, "unexpected %s from rank %d", pipe_op_name(h.op), prev);
            ps_send_error(&s, h.seq, why);
            snprintf(err, errlen, "%s: %s", lab, why);
            goto out;
        }
    }
out:
    ps_free(&s);
    return rc;
}
