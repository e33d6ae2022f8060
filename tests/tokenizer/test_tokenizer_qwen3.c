/* test_tokenizer_qwen3.c — the real Qwen3 tokenizer: reference vectors, chat
 * template detection + ids, decode(encode(x)) == NFC(x) over the corpus, and
 * the streaming decoder (never half a code point; same text as decode).
 * Usage: test_tokenizer_qwen3 QWEN3_TOKENIZER_DIR CORPUS_JSONL
 * Exits 77 (ctest SKIP) when DIR/tokenizer.json is absent (npm ci not run). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <utf8proc.h>

#include "chat.h"
#include "tokenizer.h"
#include "tokenizer_internal.h"

static char g_tok_path[4096], g_cfg_path[4096];
static const char *g_corpus;
static tokenizer_t *g_tok;

static int setup(void **state) {
    (void)state;
    char err[512];
    g_tok = tokenizer_load(g_tok_path, err, sizeof err);
    if (!g_tok)
        fprintf(stderr, "load: %s\n", err);
    return g_tok ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    tokenizer_free(g_tok);
    return 0;
}

static void expect_ids(const char *s, const int32_t *want, size_t wn) {
    int32_t *ids = NULL;
    size_t n = 0;
    char err[256] = "";
    if (tokenizer_encode(g_tok, s, strlen(s), &ids, &n, err, sizeof err) != 0)
        fail_msg("encode: %s", err);
    if (n != wn)
        fail_msg("encode(\"%s\"): %zu ids, want %zu", s, n, wn);
    for (size_t i = 0; i < n; i++)
        if (ids[i] != want[i])
            fail_msg("encode(\"%s\")[%zu] = %d, want %d", s, i, ids[i], want[i]);
    free(ids);
}

#define EXPECT(s, ...)                                                                             \
    expect_ids(s, (const int32_t[]){__VA_ARGS__},                                                  \
               sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t))

static void test_vectors(void **state) {
    (void)state;
    EXPECT("Hello world", 9707, 1879);
    EXPECT(" Hello world", 21927, 1879);
    EXPECT("<|im_start|>", 151644);
    EXPECT("<think>\n\n</think>\n\n", 151667, 271, 151668, 271);
    assert_int_equal(tokenizer_vocab_size(g_tok), 151669);
    assert_int_equal(tokenizer_token_id(g_tok, "<|im_end|>"), 151645);
    assert_int_equal(tokenizer_token_id(g_tok, "<think>"), 151667);
    assert_int_equal(tokenizer_token_id(g_tok, "Hello"), 9707);
    assert_true(tokenizer_token_is_special(g_tok, 151645));
    assert_false(tokenizer_token_is_special(g_tok, 151667));
}

static void test_chat_vector(void **state) {
    (void)state;
    chat_format_t fmt = chat_detect(g_cfg_path);
    assert_int_equal(fmt, CHAT_QWEN3);
    chat_msg m[] = {{"user", "Hello"}};
    char *s = chat_render(fmt, m, 1, 1, 1);
    assert_non_null(s);
    EXPECT(s, 151644, 872, 198, 9707, 151645, 198, 151644, 77091, 198);
    free(s);
}

/* Reads the corpus: one JSON string per line. Calls fn for each line. */
static size_t for_each_line(void (*fn)(const char *s, size_t n, size_t lineno)) {
    FILE *f = fopen(g_corpus, "rb");
    if (!f)
        fail_msg("cannot open corpus %s", g_corpus);
    char *line = NULL;
    size_t cap = 0, count = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, f)) >= 0) {
        cJSON *v = cJSON_ParseWithLength(line, (size_t)got);
        if (!cJSON_IsString(v))
            fail_msg("corpus line %zu is not a JSON string", count + 1);
        fn(v->valuestring, strlen(v->valuestring), ++count);
        cJSON_Delete(v);
    }
    free(line);
    fclose(f);
    return count;
}

static void roundtrip_line(const char *s, size_t n, size_t lineno) {
    int32_t *ids = NULL;
    size_t nids = 0;
    char err[256];
    if (tokenizer_encode(g_tok, s, n, &ids, &nids, err, sizeof err) != 0)
        fail_msg("line %zu: %s", lineno, err);
    char *back = tokenizer_decode(g_tok, ids, nids);
    assert_non_null(back);
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &nfc,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    assert_true(m >= 0);
    if (strlen(back) != (size_t)m || memcmp(back, nfc, (size_t)m) != 0)
        fail_msg("line %zu: decode(encode(x)) != NFC(x): got \"%s\"", lineno, back);
    /* streaming gives the same text, each piece valid UTF-8 */
    tokenizer_stream_t *st = tokenizer_stream_new(g_tok);
    char *acc = malloc(strlen(back) + 8);
    size_t an = 0, len;
    for (size_t i = 0; i < nids; i++) {
        const char *o = tokenizer_stream_put(st, ids[i], &len);
        assert_non_null(o);
        if (tok_utf8_check((const uint8_t *)o, len) != len)
            fail_msg("line %zu: stream emitted half a char", lineno);
        memcpy(acc + an, o, len);
        an += len;
    }
    tokenizer_stream_flush(st, &len);
    assert_int_equal(len, 0);
    if (an != strlen(back) || memcmp(acc, back, an) != 0)
        fail_msg("line %zu: stream text differs", lineno);
    free(acc);
    tokenizer_stream_free(st);
    free(nfc);
    free(back);
    free(ids);
}

static void test_roundtrip_corpus(void **state) {
    (void)state;
    size_t lines = for_each_line(roundtrip_line);
    assert_true(lines >= 2000);
}

static void test_stream_emoji(void **state) {
    (void)state;
    /* thumbs up + skin tone, family (ZWJ sequence), a rare emoji and a CJK ext-B char */
    const char *s =
        "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D"
        "\xF0\x9F\x91\xA7 \xF0\x9F\xAB\xA0 \xF0\xA0\x80\x8B";
    int32_t *ids = NULL;
    size_t n = 0;
    char err[128];
    assert_int_equal(tokenizer_encode(g_tok, s, strlen(s), &ids, &n, err, sizeof err), 0);
    tokenizer_stream_t *st = tokenizer_stream_new(g_tok);
    char acc[256];
    size_t an = 0, len, held = 0, first_held = 0;
    for (size_t i = 0; i < n; i++) {
        const char *o = tokenizer_stream_put(st, ids[i], &len);
        assert_non_null(o);
        assert_int_equal(tok_utf8_check((const uint8_t *)o, len), len);
        if (len == 0 && held++ == 0)
            first_held = i;
        memcpy(acc + an, o, len);
        an += len;
    }
    acc[an] = 0;
    assert_true(held > 0); /* some emoji really were split across tokens */
    assert_string_equal(acc, s);
    /* whole decoding cut where the stream held back: U+FFFD at the very end */
    char *cut = tokenizer_decode(g_tok, ids, first_held + 1);
    assert_non_null(cut);
    size_t cl = strlen(cut);
    assert_true(cl >= 3);
    assert_memory_equal(cut + cl - 3, "\xEF\xBF\xBD", 3);
    assert_memory_equal(cut, acc, cl - 3); /* the text before it is what the stream gave */
    free(cut);
    tokenizer_stream_free(st);
    free(ids);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s QWEN3_TOKENIZER_DIR CORPUS_JSONL\n", argv[0]);
        return 2;
    }
    snprintf(g_tok_path, sizeof g_tok_path, "%s/tokenizer.json", argv[1]);
    snprintf(g_cfg_path, sizeof g_cfg_path, "%s/tokenizer_config.json", argv[1]);
    g_corpus = argv[2];
    if (access(g_tok_path, R_OK) != 0) {
        printf("SKIP: %s not found (run `npm ci` in tests/tokenizer/js)\n", g_tok_path);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_chat_vector),
        cmocka_unit_test(test_roundtrip_corpus),
        cmocka_unit_test(test_stream_emoji),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
