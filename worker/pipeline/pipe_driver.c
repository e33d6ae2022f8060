/* pipe_driver.c - rank 0 of a layer-range pipeline (see pipe_driver.h). */
#include "pipe_driver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"

struct pipe_driver {
    pipe_conf_t c;
    pipe_transport_t *t;
    int hidden;
    int max_chunk;
    float *buf; /* [max_chunk][hidden]: a received message's payload */
    size_t cap;
    int open;    /* a sequence is open on the stages */
    int seq;     /* ... its handle */
    int prompt;  /* its prompt is still being read */
    int broken;  /* the ring failed: no more messages */
    int pending; /* prompt chunks sent whose (empty) RESULT was not read yet */
};

/* Prompt chunks whose logits nobody reads are sent without waiting for the
 * ring (buffered transports only): stage r runs chunk k while rank 0 and the
 * stages before it run chunk k+1. At most this many are in flight. */
#define PD_MAX_PENDING 8

/* Receives the reply to what was sent: `op` back from the last rank (ERROR
 * from any rank fails with its text). */
static int pd_expect(pipe_driver_t *d, uint16_t op, pipe_hdr_t *h, char *err, size_t errlen) {
    char why[512];
    int rc = pipe_recv(d->t, h, d->buf, d->cap, d->c.timeout_ms, why, sizeof why);
    if (rc == PIPE_ECLOSED) {
        snprintf(err, errlen,
                 "pipeline: rank %d (the last stage) closed its connection to rank 0 (%s): the "
                 "stage died or quit",
                 d->c.world - 1, why);
        d->broken = 1;
        return -1;
    }
    if (rc == PIPE_ETIMEOUT) {
        char who[32];
        if (d->c.world == 2)
            snprintf(who, sizeof who, "rank 1");
        else
            snprintf(who, sizeof who, "ranks 1-%d", d->c.world - 1);
        snprintf(err, errlen,
                 "pipeline: no answer from %s within %d ms (a stage hangs or is too slow: "
                 "--pipe-timeout-ms)",
                 who, d->c.timeout_ms);
        d->broken = 1;
        return -1;
    }
    if (rc != PIPE_OK) {
        snprintf(err, errlen, "pipeline: receiving from rank %d failed: %s", d->c.world - 1, why);
        d->broken = 1;
        return -1;
    }
    if (h->op == PIPE_OP_ERROR) {
        size_t n = (size_t)h->payload_bytes;
        snprintf(err, errlen, "pipeline: rank %u failed: %.*s", h->rank, (int)n,
                 (const char *)d->buf);
        return -1;
    }
    if (h->op != op) {
        snprintf(err, errlen, "pipeline: rank %d sent %s where %s was expected", d->c.world - 1,
                 pipe_op_name(h->op), pipe_op_name(op));
        d->broken = 1;
        return -1;
    }
    return 0;
}

static int pd_send(pipe_driver_t *d, const pipe_hdr_t *h, const void *payload, char *err,
                   size_t errlen) {
    char why[512];
    int rc = pipe_send(d->t, h, payload, d->c.timeout_ms, why, sizeof why);
    if (rc != PIPE_OK) {
        snprintf(err, errlen, "pipeline: sending %s to rank 1 failed: %s (%s)", pipe_op_name(h->op),
                 why, rc == PIPE_ECLOSED ? "the stage died or quit" : pipe_strerror(rc));
        d->broken = 1;
        return -1;
    }
    return 0;
}

static int pd_hello(pipe_driver_t *d, const qwen3_model_t *m, dtype_t kv_dtype, char *err,
                    size_t errlen) {
    pipe_hello_t hl = {.world = (uint32_t)d->c.world,
                       .hidden = (uint32_t)m->cfg.hidden,
                       .n_layers = (uint32_t)m->cfg.n_layers,
                       .vocab = (uint32_t)m->cfg.vocab_size,
                       .n_heads = (uint32_t)m->cfg.n_heads,
                       .n_kv_heads = (uint32_t)m->cfg.n_kv_heads,
                       .head_dim = (uint32_t)m->cfg.head_dim,
                       .max_chunk = (uint32_t)d->max_chunk,
                       .kv_dtype = (uint32_t)kv_dtype,
                       .next_layer = (uint32_t)d->c.l1,
                       .hops = 1,
                       .fingerprint = pipe_model_fingerprint(m)};
    unsigned char pl[PIPE_HELLO_BYTES];
    pipe_hello_encode(&hl, pl);
    pipe_hdr_t h;
    pipe_hdr_init(&h, PIPE_OP_HELLO, 0);
    h.payload_bytes = sizeof pl;
    if (pd_send(d, &h, pl, err, errlen) != 0)
        return -1;
    int saved = d->c.timeout_ms;
    d->c.timeout_ms = d->c.connect_timeout_ms;
    int rc = pd_expect(d, PIPE_OP_HELLO, &h, err, errlen);
    d->c.timeout_ms = saved;
    if (rc != 0)
        return -1;
    pipe_hello_t back;
    pipe_hello_decode((const unsigned char *)d->buf, &back);
    if (back.hops != (uint32_t)d->c.world || back.next_layer != (uint32_t)m->cfg.n_layers) {
        snprintf(err, errlen,
                 "pipeline: the %u ranks cover layers 0-%u of the model's 0-%d: give the last "
                 "rank (%d) --layers ending at %d",
                 back.hops, back.next_layer - 1, m->cfg.n_layers - 1, d->c.world - 1,
                 m->cfg.n_layers - 1);
        return -1;
    }
    return 0;
}

pipe_driver_t *pipe_driver_new(const pipe_conf_t *c, const qwen3_model_t *full, int max_chunk,
                               dtype_t kv_dtype, char *err, size_t errlen) {
    if (pipe_conf_check(c, full->cfg.n_layers, err, errlen) != 0)
        return NULL;
    if (c->rank != 0) {
        snprintf(err, errlen, "the driver is rank 0 (got --rank %d)", c->rank);
        return NULL;
    }
    pipe_driver_t *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->c = *c;
    d->hidden = full->cfg.hidden;
    d->max_chunk = max_chunk > 0 ? max_chunk : 256;
    d->cap = (size_t)d->max_chunk * (size_t)d->hidden * sizeof(float);
    if (d->cap < PIPE_ERRTEXT_MAX)
        d->cap = PIPE_ERRTEXT_MAX;
    d->buf = malloc(d->cap);
    if (!d->buf) {
        snprintf(err, errlen, "out of memory");
        free(d);
        return NULL;
    }
    char why[512];
    d->t = pipe_conf_connect(c, why, sizeof why);
    if (!d->t) {
        snprintf(err, errlen, "pipeline: rank 0: %s", why);
        pipe_driver_free(d);
        return NULL;
    }
    if (pd_hello(d, full, kv_dtype, err, errlen) != 0) {
        pipe_driver_free(d);
        return NULL;
    }
    return d;
}

/* Reads the replies of the chunks in flight. Each is an empty RESULT, or
 * the ERROR of a stage that failed the chunk; all are read (the ring stays
 * in step), the first ERROR is returned. */
static int pd_drain(pipe_driver_t *d, char *err, size_t errlen) {
    int failed = 0;
    while (d->pending > 0 && !d->broken) {
        pipe_hdr_t r;
        char e[1024];
        d->pending--;
        if (pd_expect(d, PIPE_OP_RESULT, &r, e, sizeof e) != 0) {
            if (!failed)
                snprintf(err, errlen, "%s", e);
            failed = 1;
        } else if (!failed && (r.seq != (uint32_t)d->seq || r.n != 0)) {
            snprintf(err, errlen,
                     "pipeline: rank %d answered a prompt chunk of sequence %d with %u rows of "
                     "sequence %u",
                     d->c.world - 1, d->seq, r.n, r.seq);
            d->broken = failed = 1;
        }
    }
    if (d->broken)
        d->pending = 0;
    return failed ? -1 : 0;
}

/* The forward pass's tail: one FWD around the ring per chunk. */
static int pd_tail(void *ud, int seq, int pos0, int n, float *x, int want, char *err,
                   size_t errlen) {
    pipe_driver_t *d = ud;
    if (d->broken) {
        snprintf(err, errlen, "pipeline: the ring failed before; no generation possible");
        return -1;
    }
    if (pos0 == 0) { /* a new sequence (the stages close the one before) */
        d->open = 1;
        d->seq = seq;
        d->prompt = 1;
    }
    pipe_hdr_t h;
    pipe_hdr_init(&h, PIPE_OP_FWD, 0);
    h.seq = (uint32_t)seq;
    h.pos0 = pos0;
    h.n = (uint32_t)n;
    h.want = (uint32_t)want;
    h.width = (uint32_t)d->hidden;
    h.payload_bytes = (uint64_t)n * (uint64_t)d->hidden * sizeof(float);
    /* engine_generate asks for logits of the last prompt chunk and of every
     * decode step only: the first chunk with want > 0 ends the prompt */
    h.flags = d->prompt ? PIPE_F_PROMPT : PIPE_F_DECODE;
    if (d->prompt && want > 0) {
        h.flags |= PIPE_F_PROMPT_END;
        d->prompt = 0;
    }
    if (want == 0 && d->t->ops->buffered) { /* nothing to wait for: keep it in flight */
        if (d->pending >= PD_MAX_PENDING) {
            d->pending--; /* read the oldest reply first */
            pipe_hdr_t r;
            if (pd_expect(d, PIPE_OP_RESULT, &r, err, errlen) != 0) {
                char ignored[8];
                pd_drain(d, ignored, sizeof ignored); /* keep the ring in step */
                return -1;
            }
        }
        if (pd_send(d, &h, x, err, errlen) != 0)
            return -1;
        d->pending++;
        return 0;
    }
    if (pd_drain(d, err, errlen) != 0)
        return -1;
    if (pd_send(d, &h, x, err, errlen) != 0)
        return -1;
    pipe_hdr_t r;
    if (pd_expect(d, PIPE_OP_RESULT, &r, err, errlen) != 0)
        return -1;
    if (r.seq != (uint32_t)seq || r.pos0 != pos0 || r.n != (uint32_t)want ||
        r.width != (uint32_t)d->hidden) {
        snprintf(err, errlen,
                 "pipeline: rank %d answered sequence %u position %d with %u rows of %u, expected "
                 "sequence %d position %d with %d rows of %d",
                 d->c.world - 1, r.seq, r.pos0, r.n, r.width, seq, pos0, want, d->hidden);
        d->broken = 1;
        return -1;
    }
    long bad = pipe_first_nonfinite(d->buf, (size_t)want * (size_t)d->hidden);
    if (bad >= 0) {
        snprintf(err, errlen,
                 "pipeline: rank %d sent a non-finite hidden state (position %d, element %ld of "
                 "row %ld): refused",
                 d->c.world - 1, pos0 + n - want + (int)(bad / d->hidden), bad % d->hidden,
                 bad / d->hidden);
        d->broken = 1;
        return -1;
    }
    if (want > 0)
        memcpy(x + (size_t)(n - want) * (size_t)d->hidden, d->buf, (size_t)r.payload_bytes);
    return 0;
}

void pipe_driver_attach(pipe_driver_t *d, engine_t *e) {
    fwd_tail_t tail = {.ud = d, .run = pd_tail};
    fwd_set_tail(engine_forward(e), &tail);
}

int pipe_driver_end_seq(pipe_driver_t *d, char *err, size_t errlen) {
    if (!d->open)
        return 0;
    d->open = 0;
    char ignored[8];
    pd_drain(d, ignored, sizeof ignored); /* a stopped prompt: its chunks' replies */
    if (d->broken) {
        snprintf(err, errlen, "pipeline: the ring failed; the stages' sequence was not closed");
        return -1;
    }
    pipe_hdr_t h;
    pipe_hdr_init(&h, PIPE_OP_CLOSE, 0);
    h.seq = (uint32_t)d->seq;
    if (pd_send(d, &h, NULL, err, errlen) != 0)
        return -1;
    return pd_expect(d, PIPE_OP_CLOSE, &h, err, errlen);
}

void pipe_driver_free(pipe_driver_t *d) {
    if (!d)
        return;
    if (d->t && !d->broken) {
        char err[512];
        pipe_hdr_t h;
        pipe_hdr_init(&h, PIPE_OP_BYE, 0);
        /* a shutdown does not wait the whole generation timeout for a dead ring */
        if (d->c.timeout_ms > 5000)
            d->c.timeout_ms = 5000;
        pd_drain(d, err, sizeof err);
        if (pd_send(d, &h, NULL, err, sizeof err) == 0 &&
            pd_expect(d, PIPE_OP_BYE, &h, err, sizeof err) != 0)
            fprintf(stderr, "%s\n", err);
    }
    pipe_transport_free(d->t);
    free(d->buf);
    free(d);
}
