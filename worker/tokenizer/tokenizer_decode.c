/* tokenizer_decode.c — ids -> UTF-8 text (ByteLevel decoder), whole and streaming. */
#include "tokenizer.h"
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

static int valid_id(const tokenizer_t *t, int32_t id) {
    return id >= 0 && (size_t)id < t->n_ids && t->id_bytes[id];
}

char *tokenizer_decode(const tokenizer_t *t, const int32_t *ids, size_t n) {
    if (!t || (!ids && n))
        return NULL;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!valid_id(t, ids[i]))
            return NULL;
        total += t->id_len[ids[i]];
    }
    uint8_t *raw = malloc(total + 1);
    uint8_t *out = malloc(total * 3 + 1); /* each invalid byte may become 3 */
    if (!raw || !out) {
        free(raw);
        free(out);
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(raw + o, t->id_bytes[ids[i]], t->id_len[ids[i]]);
        o += t->id_len[ids[i]];
    }
    size_t m = tok_utf8_lossy(raw, total, 0, out, NULL);
    out[m] = 0;
    free(raw);
    return (char *)out;
}

/* ---------------------------------------------------------------- streaming */

struct tokenizer_stream {
    const tokenizer_t *t; /* borrowed */
    uint8_t pend[4];      /* held-back bytes of an unfinished UTF-8 sequence */
    size_t npend;         /* 0..3 */
    uint8_t *buf;         /* (cap) pending + new token bytes */
    char *out;            /* (cap * 3 + 1) text returned to the caller */
    size_t cap;
};

tokenizer_stream_t *tokenizer_stream_new(const tokenizer_t *t) {
    if (!t)
        return NULL;
    tokenizer_stream_t *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->t = t;
    return st;
}

void tokenizer_stream_free(tokenizer_stream_t *st) {
    if (!st)
        return;
    free(st->buf);
    free(st->out);
    free(st);
}

static int stream_reserve(tokenizer_stream_t *st, size_t need) {
    if (need <= st->cap)
        return 0;
    size_t cap = st->cap ? st->cap : 64;
    while (cap < need)
        cap *= 2;
    uint8_t *b = malloc(cap);
    char *o = malloc(cap * 3 + 1);
    if (!b || !o) {
        free(b);
        free(o);
        return -1;
    }
    free(st->buf);
    free(st->out);
    st->buf = b, st->out = o, st->cap = cap;
    return 0;
}

const char *tokenizer_stream_put(tokenizer_stream_t *st, int32_t id, size_t *len) {
    if (len)
        *len = 0;
    if (!st || !valid_id(st->t, id))
        return NULL;
    size_t tl = st->t->id_len[id];
    if (stream_reserve(st, st->npend + tl + 1) != 0)
        return NULL;
    memcpy(st->buf, st->pend, st->npend);
    memcpy(st->buf + st->npend, st->t->id_bytes[id], tl);
    size_t n = st->npend + tl, used = 0;
    size_t m = tok_utf8_lossy(st->buf, n, 1, (uint8_t *)st->out, &used);
    st->npend = n - used; /* < 4: only an unfinished sequence is held */
    memcpy(st->pend, st->buf + used, st->npend);
    st->out[m] = 0;
    if (len)
        *len = m;
    return st->out;
}

const char *tokenizer_stream_flush(tokenizer_stream_t *st, size_t *len) {
    if (len)
        *len = 0;
    if (!st)
        return NULL;
    if (stream_reserve(st, 4) != 0)
        return NULL;
    size_t m = tok_utf8_lossy(st->pend, st->npend, 0, (uint8_t *)st->out, NULL);
    st->npend = 0;
    st->out[m] = 0;
    if (len)
        *len = m;
    return st->out;
}
