/* tokenizer.c — loading tokenizer.json (cJSON) into the tables the encoder and
 * decoder use; id lookups. Encoding lives in tokenizer_encode.c, decoding in
 * tokenizer_decode.c. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"
#include "tokenizer_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOK_CACHE_ENTRIES 65536
#define TOK_MAX_IDS (1 << 24) /* sanity bound on token ids */

static void seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Reads a whole file into a malloc'd buffer (NUL-terminated). */
static char *read_file(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap)
            break;
        char *nb = realloc(buf, cap * 2 + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (!buf) {
        seterr(err, errlen, "%s: out of memory reading the file", path);
    } else if (ferror(f)) {
        seterr(err, errlen, "%s: read error: %s", path, strerror(errno));
        free(buf);
        buf = NULL;
    } else {
        buf[n] = 0;
        *len = n;
    }
    fclose(f);
    return buf;
}

/* ---------------------------------------------------------------- vocab */

/* Registers raw bytes for id; fails on duplicates / out of range ids. */
static int set_id(tokenizer_t *t, long id, uint8_t *bytes, size_t len, const char *what,
                  const char *path, char *err, size_t errlen) {
    if (id < 0 || (size_t)id >= t->n_ids) {
        seterr(err, errlen, "%s: %s has id %ld outside [0, %zu)", path, what, id, t->n_ids);
        return -1;
    }
    if (t->id_bytes[id]) {
        seterr(err, errlen, "%s: id %ld is used twice (%s)", path, id, what);
        return -1;
    }
    t->id_bytes[id] = bytes;
    t->id_len[id] = (uint32_t)len;
    return 0;
}

static int json_id(const cJSON *v, long *out) {
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (d < 0 || d >= TOK_MAX_IDS || d != (double)(long)d)
        return -1;
    *out = (long)d;
    return 0;
}

/* Highest id among vocab and added tokens, to size the id tables. */
static long max_id(const cJSON *vocab, const cJSON *added) {
    long m = -1, id;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) if (json_id(e, &id) == 0 && id > m) m = id;
    cJSON_ArrayForEach(e, added) if (json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id) == 0 &&
                                     id > m) m = id;
    return m;
}

static int load_vocab(tokenizer_t *t, const cJSON *vocab, const char *path, char *err,
                      size_t errlen) {
    size_t total = 0, count = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        total += strlen(e->string);
        count++;
    }
    t->arena = malloc(total + 1);
    if (!t->arena || tok_strmap_init(&t->vocab, count) != 0) {
        seterr(err, errlen, "%s: out of memory for the vocab", path);
        return -1;
    }
    size_t off = 0;
    cJSON_ArrayForEach(e, vocab) {
        long id;
        if (json_id(e, &id) != 0) {
            seterr(err, errlen, "%s: model.vocab[\"%s\"] is not a valid id", path, e->string);
            return -1;
        }
        long n = tok_bytelevel_to_raw(e->string, strlen(e->string), t->arena + off);
        if (n <= 0) {
            seterr(err, errlen, "%s: model.vocab[\"%s\"] is not a byte-level token", path,
                   e->string);
            return -1;
        }
        if (set_id(t, id, t->arena + off, (size_t)n, "a vocab entry", path, err, errlen) != 0)
            return -1;
        if (tok_strmap_get(&t->vocab, t->arena + off, (size_t)n) >= 0) {
            seterr(err, errlen, "%s: model.vocab[\"%s\"] is a duplicate", path, e->string);
            return -1;
        }
        if (tok_strmap_put(&t->vocab, t->arena + off, (size_t)n, (int32_t)id) != 0) {
            seterr(err, errlen, "%s: out of memory for the vocab", path);
            return -1;
        }
        off += (size_t)n;
    }
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        t->byte_ids[b] = tok_strmap_get(&t->vocab, &c, 1);
        if (t->byte_ids[b] < 0) {
            seterr(err, errlen,
                   "%s: model.vocab lacks the single byte 0x%02X (byte-level BPE needs all 256)",
                   path, b);
            return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- merges */

static int vocab_id_of(const tokenizer_t *t, const char *s, size_t n, uint8_t *tmp) {
    long r = tok_bytelevel_to_raw(s, n, tmp);
    return r <= 0 ? -1 : tok_strmap_get(&t->vocab, tmp, (size_t)r);
}

static int load_merges(tokenizer_t *t, const cJSON *merges, const char *path, char *err,
                       size_t errlen) {
    int n = cJSON_GetArraySize(merges);
    if (tok_pairmap_init(&t->merges, (size_t)n) != 0) {
        seterr(err, errlen, "%s: out of memory for the merges", path);
        return -1;
    }
    int rank = 0;
    const cJSON *e;
    uint8_t tmp[1024], cat[2048];
    cJSON_ArrayForEach(e, merges) {
        const char *a, *b;
        size_t alen, blen;
        if (cJSON_IsString(e)) { /* "a b" */
            a = e->valuestring;
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' '))
                goto bad;
            alen = (size_t)(sp - a);
            b = sp + 1;
            blen = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            a = cJSON_GetArrayItem(e, 0)->valuestring;
            b = cJSON_GetArrayItem(e, 1)->valuestring;
            alen = strlen(a);
            blen = strlen(b);
        } else {
            goto bad;
        }
        if (alen == 0 || blen == 0 || alen >= sizeof tmp || blen >= sizeof tmp) {
            seterr(err, errlen, "%s: model.merges[%d]: a part is empty or longer than %zu bytes",
                   path, rank, sizeof tmp - 1);
            return -1;
        }
        int ia = vocab_id_of(t, a, alen, tmp), ib = vocab_id_of(t, b, blen, tmp);
        long ra = tok_bytelevel_to_raw(a, alen, cat),
             rb = tok_bytelevel_to_raw(b, blen, cat + (ra > 0 ? ra : 0));
        int im = (ra > 0 && rb > 0) ? tok_strmap_get(&t->vocab, cat, (size_t)(ra + rb)) : -1;
        if (ia < 0 || ib < 0 || im < 0) {
            seterr(err, errlen,
                   "%s: model.merges[%d] (\"%.*s\" + \"%.*s\"): %s is not in the vocab", path, rank,
                   (int)alen, a, (int)blen, b,
                   ia < 0   ? "the left part"
                   : ib < 0 ? "the right part"
                            : "the merged token");
            return -1;
        }
        if (tok_pairmap_put(&t->merges, ia, ib, rank, im) != 0) {
            seterr(err, errlen, "%s: out of memory for the merges", path);
            return -1;
        }
        rank++;
        continue;
    bad:
        seterr(err, errlen, "%s: model.merges[%d] is neither \"a b\" nor [\"a\", \"b\"]", path,
               rank);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- added tokens */

static int flag(const cJSON *o, const char *k) {
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

static int load_added(tokenizer_t *t, const cJSON *added, const char *path, char *err,
                      size_t errlen) {
    int n = cJSON_GetArraySize(added);
    t->added = calloc((size_t)n + 1, sizeof *t->added);
    if (!t->added) {
        seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, added) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(e, "content");
        long id;
        if (!cJSON_IsString(content) || !content->valuestring[0] ||
            json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id) != 0) {
            seterr(err, errlen,
                   "%s: added_tokens[%zu] needs a non-empty \"content\" and an integer \"id\"",
                   path, t->n_added);
            return -1;
        }
        if (flag(e, "lstrip") || flag(e, "rstrip") || flag(e, "single_word")) {
            seterr(err, errlen,
                   "%s: added token \"%s\": lstrip/rstrip/single_word are not supported", path,
                   content->valuestring);
            return -1;
        }
        size_t len = strlen(content->valuestring);
        if (tok_utf8_check((const uint8_t *)content->valuestring, len) != len) {
            seterr(err, errlen, "%s: added_tokens[%zu].content is not valid UTF-8", path,
                   t->n_added);
            return -1;
        }
        uint8_t *copy = (uint8_t *)strdup(content->valuestring);
        if (!copy) {
            seterr(err, errlen, "%s: out of memory", path);
            return -1;
        }
        tok_added *a = &t->added[t->n_added++];
        *a = (tok_added){copy, len, (int32_t)id, flag(e, "special"), flag(e, "normalized")};
        if (t->id_bytes[id]) {
            /* an added token that is also a vocab entry: HF gives it the vocab's
             * id and decodes it to its content; only the bytes must agree */
            if (t->id_len[id] != len || memcmp(t->id_bytes[id], copy, len) != 0) {
                seterr(err, errlen,
                       "%s: added token \"%s\" has id %ld, which the vocab gives to another token",
                       path, content->valuestring, id);
                return -1;
            }
        } else {
            t->id_bytes[id] = copy;
            t->id_len[id] = (uint32_t)len;
        }
        t->id_special[id] = (uint8_t)a->special;
        t->added_first[a->normalized][copy[0]] = 1;
        if (a->normalized)
            t->has_normalized_added = 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- pipeline parts */

static const cJSON *obj(const cJSON *o, const char *k) {
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static int is_type(const cJSON *o, const char *type) {
    const cJSON *ty = obj(o, "type");
    return cJSON_IsString(ty) && strcmp(ty->valuestring, type) == 0;
}

static int check_normalizer(tokenizer_t *t, const cJSON *n, const char *path, char *err,
                            size_t errlen) {
    if (!n || cJSON_IsNull(n))
        return 0;
    if (is_type(n, "NFC")) {
        t->nfc = 1;
        return 0;
    }
    const cJSON *ty = obj(n, "type");
    seterr(err, errlen, "%s: normalizer \"%s\" is not supported (only NFC or none)", path,
           cJSON_IsString(ty) ? ty->valuestring : "?");
    return -1;
}

/* Rust regex \s is \p{White_Space}; PCRE2's UCP \s also takes U+180E. Rewrite
 * \s and \S so that PCRE2 matches exactly what Hugging Face's regex does. */
static char *translate_regex(const char *re) {
    size_t n = strlen(re);
    char *out = malloc(n * 8 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (re[i] == '\\' && i + 1 < n) {
            const char *rep = re[i + 1] == 's'   ? "\\p{White_Space}"
                              : re[i + 1] == 'S' ? "\\P{White_Space}"
                                                 : NULL;
            if (rep) {
                memcpy(out + o, rep, strlen(rep));
                o += strlen(rep);
            } else {
                out[o++] = re[i];
                out[o++] = re[i + 1];
            }
            i++;
            continue;
        }
        out[o++] = re[i];
    }
    out[o] = 0;
    return out;
}

static int compile_regex(tokenizer_t *t, const char *pattern, const char *path, char *err,
                         size_t errlen) {
    char *pat = translate_regex(pattern);
    if (!pat) {
        seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP,
                                   &code, &off, NULL);
    free(pat);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        seterr(err, errlen, "%s: pre-tokenizer regex does not compile near offset %zu: %s", path,
               (size_t)off, (char *)msg);
        return -1;
    }
    t->re = re;
    t->jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    return 0;
}

/* Accepted: Sequence[Split(Regex, Isolated, invert=false), ByteLevel(use_regex=false)]. */
static int check_pretokenizer(tokenizer_t *t, const cJSON *p, const char *path, char *err,
                              size_t errlen) {
    const cJSON *list = is_type(p, "Sequence") ? obj(p, "pretokenizers") : NULL;
    const cJSON *split = cJSON_GetArraySize(list) == 2 ? cJSON_GetArrayItem(list, 0) : NULL;
    const cJSON *bl = split ? cJSON_GetArrayItem(list, 1) : NULL;
    if (!is_type(split, "Split") || !is_type(bl, "ByteLevel"))
        split = bl = NULL;
    const cJSON *pat = split ? obj(obj(split, "pattern"), "Regex") : NULL;
    const cJSON *beh = split ? obj(split, "behavior") : NULL;
    if (!split || !bl || !cJSON_IsString(pat) || !cJSON_IsString(beh) ||
        strcmp(beh->valuestring, "Isolated") != 0 || flag(split, "invert") ||
        flag(bl, "use_regex") || flag(bl, "add_prefix_space")) {
        seterr(err, errlen,
               "%s: pre_tokenizer is not supported (need Sequence of Split{Regex, Isolated} and "
               "ByteLevel{use_regex: false, add_prefix_space: false}, as Qwen2/Qwen3 use)",
               path);
        return -1;
    }
    return compile_regex(t, pat->valuestring, path, err, errlen);
}

static int check_model(tokenizer_t *t, const cJSON *m, const char *path, char *err, size_t errlen) {
    const cJSON *ty = obj(m, "type");
    if ((ty && !is_type(m, "BPE")) || !cJSON_IsObject(obj(m, "vocab")) ||
        !cJSON_IsArray(obj(m, "merges"))) {
        seterr(err, errlen,
               "%s: model must be BPE with an object \"vocab\" and an array \"merges\"", path);
        return -1;
    }
    const cJSON *pre = obj(m, "continuing_subword_prefix"), *suf = obj(m, "end_of_word_suffix");
    const cJSON *drop = obj(m, "dropout");
    if (flag(m, "byte_fallback") || (cJSON_IsString(pre) && pre->valuestring[0]) ||
        (cJSON_IsString(suf) && suf->valuestring[0]) || (drop && !cJSON_IsNull(drop))) {
        seterr(err, errlen,
               "%s: BPE options byte_fallback/continuing_subword_prefix/end_of_word_suffix/dropout "
               "are "
               "not supported",
               path);
        return -1;
    }
    t->ignore_merges = flag(m, "ignore_merges");
    return 0;
}

static int check_decoder(const cJSON *d, const char *path, char *err, size_t errlen) {
    if (d && !cJSON_IsNull(d) && !is_type(d, "ByteLevel")) {
        seterr(err, errlen, "%s: decoder must be ByteLevel", path);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- load / free */

static int load_json(tokenizer_t *t, const cJSON *root, const char *path, char *err,
                     size_t errlen) {
    const cJSON *model = obj(root, "model"), *added = obj(root, "added_tokens");
    if (!cJSON_IsObject(model)) {
        seterr(err, errlen, "%s: no \"model\" object (is this a tokenizer.json?)", path);
        return -1;
    }
    if (added && !cJSON_IsArray(added)) {
        seterr(err, errlen, "%s: \"added_tokens\" must be an array", path);
        return -1;
    }
    if (check_model(t, model, path, err, errlen) ||
        check_normalizer(t, obj(root, "normalizer"), path, err, errlen) ||
        check_pretokenizer(t, obj(root, "pre_tokenizer"), path, err, errlen) ||
        check_decoder(obj(root, "decoder"), path, err, errlen))
        return -1;
    const cJSON *vocab = obj(model, "vocab");
    long m = max_id(vocab, added);
    if (m < 0) {
        seterr(err, errlen, "%s: the vocab is empty", path);
        return -1;
    }
    t->n_ids = (size_t)m + 1;
    t->id_bytes = calloc(t->n_ids, sizeof *t->id_bytes);
    t->id_len = calloc(t->n_ids, sizeof *t->id_len);
    t->id_special = calloc(t->n_ids, 1);
    t->cache = tok_cache_new(TOK_CACHE_ENTRIES);
    if (!t->id_bytes || !t->id_len || !t->id_special || !t->cache) {
        seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    if (load_vocab(t, vocab, path, err, errlen) ||
        load_merges(t, obj(model, "merges"), path, err, errlen) ||
        load_added(t, added, path, err, errlen))
        return -1;
    return 0;
}

tokenizer_t *tokenizer_load(const char *path, char *err, size_t errlen) {
    seterr(err, errlen, "%s", "");
    if (!path) {
        seterr(err, errlen, "tokenizer_load: no path given");
        return NULL;
    }
    size_t len = 0;
    char *text = read_file(path, &len, err, errlen);
    if (!text)
        return NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        seterr(err, errlen, "%s: invalid JSON near byte %ld", path, end ? (long)(end - text) : -1L);
        free(text);
        return NULL;
    }
    free(text);
    tokenizer_t *t = calloc(1, sizeof *t);
    if (!t) {
        seterr(err, errlen, "%s: out of memory", path);
    } else if (load_json(t, root, path, err, errlen) != 0) {
        tokenizer_free(t);
        t = NULL;
    }
    cJSON_Delete(root);
    return t;
}

void tokenizer_free(tokenizer_t *t) {
    if (!t)
        return;
    for (size_t i = 0; i < t->n_added; i++)
        free((void *)t->added[i].s);
    free(t->added);
    free(t->id_bytes);
    free(t->id_len);
    free(t->id_special);
    free(t->arena);
    tok_strmap_free(&t->vocab);
    tok_pairmap_free(&t->merges);
    if (t->re)
        pcre2_code_free((pcre2_code *)t->re);
    tok_cache_free(t->cache);
    free(t);
}

/* ---------------------------------------------------------------- lookups */

int tokenizer_token_id(const tokenizer_t *t, const char *s) {
    if (!t || !s)
        return -1;
    size_t n = strlen(s);
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && memcmp(t->added[i].s, s, n) == 0)
            return t->added[i].id;
    uint8_t stackbuf[256];
    uint8_t *raw = n <= sizeof stackbuf ? stackbuf : malloc(n);
    if (!raw)
        return -1;
    long r = tok_bytelevel_to_raw(s, n, raw);
    int id = r > 0 ? tok_strmap_get(&t->vocab, raw, (size_t)r) : -1;
    if (raw != stackbuf)
        free(raw);
    return id;
}

size_t tokenizer_vocab_size(const tokenizer_t *t) {
    return t ? t->n_ids : 0;
}

int tokenizer_token_is_special(const tokenizer_t *t, int32_t id) {
    return t && id >= 0 && (size_t)id < t->n_ids && t->id_special[id];
}
