/* tokenizer_encode.c — text -> ids: added tokens, NFC, regex pre-tokenizer,
 * byte-level BPE. See tokenizer.h for the pipeline. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"
#include "tokenizer_internal.h"

#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define CACHE_MAX_KEY 64 /* pre-tokens up to this many bytes are cached */

/* State of one tokenizer_encode call. */
typedef struct {
    const tokenizer_t *t;
    int32_t *ids; /* (cap) output */
    size_t n, cap;
    int32_t *tmp; /* (tmp_cap) BPE output of one pre-token */
    size_t tmp_cap;
    tok_bpe_scratch scratch;
    pcre2_match_data *md;
    char *err;
    size_t errlen;
} enc_state;

static int fail(enc_state *e, const char *fmt, ...) {
    if (e->err && e->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->err, e->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int push_ids(enc_state *e, const int32_t *ids, size_t k) {
    if (e->n + k > e->cap) {
        size_t cap = e->cap ? e->cap : 64;
        while (cap < e->n + k)
            cap *= 2;
        int32_t *p = realloc(e->ids, cap * sizeof *p);
        if (!p)
            return fail(e, "tokenizer_encode: out of memory");
        e->ids = p, e->cap = cap;
    }
    memcpy(e->ids + e->n, ids, k * sizeof *ids);
    e->n += k;
    return 0;
}

/* ---------------------------------------------------------------- BPE of a pre-token */

static int encode_pretoken(enc_state *e, const uint8_t *s, size_t n) {
    const tokenizer_t *t = e->t;
    if (t->ignore_merges) {
        int32_t id = tok_strmap_get(&t->vocab, s, n);
        if (id >= 0)
            return push_ids(e, &id, 1);
    }
    if (n > e->tmp_cap) {
        free(e->tmp);
        e->tmp_cap = n < 256 ? 256 : n;
        e->tmp = malloc(e->tmp_cap * sizeof *e->tmp);
        if (!e->tmp) {
            e->tmp_cap = 0;
            return fail(e, "tokenizer_encode: out of memory");
        }
    }
    int cached = n <= CACHE_MAX_KEY;
    long k = cached ? tok_cache_get(t->cache, s, n, e->tmp, e->tmp_cap) : -1;
    if (k < 0) {
        k = tok_bpe(&t->merges, t->byte_ids, s, n, &e->scratch, e->tmp, 0);
        if (k < 0)
            return fail(e, "tokenizer_encode: out of memory (pre-token of %zu bytes)", n);
        if (cached)
            tok_cache_put(t->cache, s, n, e->tmp, (size_t)k);
    }
    return push_ids(e, e->tmp, (size_t)k);
}

/* ---------------------------------------------------------------- regex split */

/* Splits normalized text with the pre-tokenizer regex (behaviour Isolated: each
 * match is a pre-token, and so is each non-empty gap between matches). */
static int pretokenize(enc_state *e, const uint8_t *s, size_t n) {
    const pcre2_code *re = e->t->re;
    size_t gap = 0, pos = 0; /* start of the unmatched text; where to search */
    while (pos < n) {
        int rc = pcre2_match(re, s, n, pos, PCRE2_NO_UTF_CHECK, e->md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT) /* retry with the interpreter (heap frames) */
            rc = pcre2_match(re, s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, e->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return fail(e, "tokenizer_encode: pre-tokenizer regex failed at byte %zu: %s", pos,
                        (char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: step over one character, it stays in the gap */
            pos = ms + 1;
            while (pos < n && (s[pos] & 0xC0) == 0x80)
                pos++;
            continue;
        }
        if (ms > gap && encode_pretoken(e, s + gap, ms - gap) != 0)
            return -1;
        if (encode_pretoken(e, s + ms, me - ms) != 0)
            return -1;
        gap = pos = me;
    }
    if (n > gap && encode_pretoken(e, s + gap, n - gap) != 0)
        return -1;
    return 0;
}

/* ---------------------------------------------------------------- added tokens */

/* Leftmost-longest added token of the given kind (normalized or raw) in
 * s[from..n). Returns its start offset (n if none) and the token via *found. */
static size_t find_added(const tokenizer_t *t, int normalized, const uint8_t *s, size_t n,
                         size_t from, const tok_added **found) {
    const uint8_t *first = t->added_first[normalized];
    for (size_t i = from; i < n; i++) {
        if (!first[s[i]])
            continue;
        const tok_added *best = NULL;
        for (size_t k = 0; k < t->n_added; k++) {
            const tok_added *a = &t->added[k];
            if (a->normalized != normalized || a->len > n - i || (best && a->len <= best->len))
                continue;
            if (memcmp(s + i, a->s, a->len) == 0)
                best = a;
        }
        if (best) {
            *found = best;
            return i;
        }
    }
    return n;
}

/* Normalized text: split out normalized added tokens, pre-tokenize the rest. */
static int encode_normalized(enc_state *e, const uint8_t *s, size_t n) {
    if (!e->t->has_normalized_added)
        return pretokenize(e, s, n);
    size_t pos = 0;
    while (pos < n) {
        const tok_added *a = NULL;
        size_t at = find_added(e->t, 1, s, n, pos, &a);
        if (at > pos && pretokenize(e, s + pos, at - pos) != 0)
            return -1;
        if (at == n)
            break;
        if (push_ids(e, &a->id, 1) != 0)
            return -1;
        pos = at + a->len;
    }
    return 0;
}

static int is_ascii(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] & 0x80)
            return 0;
    return 1;
}

/* A raw text segment between added tokens: NFC, then the rest of the pipeline. */
static int encode_segment(enc_state *e, const uint8_t *s, size_t n) {
    if (!e->t->nfc || is_ascii(s, n))
        return encode_normalized(e, s, n); /* ASCII is NFC */
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t m =
        utf8proc_map(s, (utf8proc_ssize_t)n, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (m < 0) {
        free(nfc);
        return fail(e, "tokenizer_encode: NFC normalization failed: %s", utf8proc_errmsg(m));
    }
    int rc = encode_normalized(e, nfc, (size_t)m);
    free(nfc);
    return rc;
}

int tokenizer_encode(const tokenizer_t *t, const char *text, size_t len, int32_t **ids_out,
                     size_t *n_out, char *err, size_t errlen) {
    if (ids_out)
        *ids_out = NULL;
    if (n_out)
        *n_out = 0;
    enc_state e = {.t = t, .err = err, .errlen = errlen};
    if (!t || !ids_out || !n_out || (!text && len))
        return fail(&e, "tokenizer_encode: invalid arguments");
    const uint8_t *s = (const uint8_t *)text;
    size_t bad = tok_utf8_check(s, len);
    if (bad != len)
        return fail(&e, "invalid UTF-8 at byte %zu (0x%02X)", bad, s[bad]);
    e.md = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (!e.md)
        return fail(&e, "tokenizer_encode: out of memory");
    int rc = 0;
    size_t pos = 0;
    while (rc == 0 && pos < len) {
        const tok_added *a = NULL;
        size_t at = find_added(t, 0, s, len, pos, &a);
        if (at > pos)
            rc = encode_segment(&e, s + pos, at - pos);
        if (rc != 0 || at == len)
            break;
        rc = push_ids(&e, &a->id, 1);
        pos = at + a->len;
    }
    pcre2_match_data_free(e.md);
    tok_bpe_scratch_free(&e.scratch);
    free(e.tmp);
    if (rc != 0) {
        free(e.ids);
        return -1;
    }
    *ids_out = e.ids;
    *n_out = e.n;
    return 0;
}
