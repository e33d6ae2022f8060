/* test_tokenizer_unit.c — tokenizer mechanics on a tiny hand-made tokenizer
 * (tests/tokenizer/data/make_tiny.py): UTF-8 helpers, byte-level table, BPE
 * merge order (scan and heap agree), added tokens, NFC, regex split, decode,
 * streaming, load errors. Usage: test_tokenizer_unit DATA_DIR */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tokenizer.h"
#include "tokenizer_internal.h"

static const char *g_data;
static tokenizer_t *g_tok;

static char *data_path(const char *name) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", g_data, name);
    return buf;
}

static int setup(void **state) {
    (void)state;
    char err[256];
    g_tok = tokenizer_load(data_path("tiny_str.json"), err, sizeof err);
    if (!g_tok)
        fprintf(stderr, "load: %s\n", err);
    return g_tok ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    tokenizer_free(g_tok);
    return 0;
}

/* encodes s and compares with the expected ids (terminated by -1) */
static void expect_ids(const tokenizer_t *t, const char *s, size_t len, const int32_t *want) {
    int32_t *ids = NULL;
    size_t n = 0;
    char err[256] = "";
    int rc = tokenizer_encode(t, s, len, &ids, &n, err, sizeof err);
    if (rc != 0)
        fail_msg("encode(\"%s\") failed: %s", s, err);
    size_t wn = 0;
    while (want[wn] >= 0)
        wn++;
    if (n != wn)
        fail_msg("encode(\"%s\"): %zu ids, want %zu", s, n, wn);
    for (size_t i = 0; i < n; i++)
        if (ids[i] != want[i])
            fail_msg("encode(\"%s\")[%zu] = %d, want %d", s, i, ids[i], want[i]);
    free(ids);
}

#define EXPECT(s, ...) expect_ids(g_tok, s, sizeof(s) - 1, (const int32_t[]){__VA_ARGS__, -1})

/* ---------------------------------------------------------------- UTF-8 */

static void test_utf8_check(void **state) {
    (void)state;
    assert_int_equal(tok_utf8_check((const uint8_t *)"abc", 3), 3);
    assert_int_equal(tok_utf8_check((const uint8_t *)"a\xC3\xA9", 3), 3);
    assert_int_equal(tok_utf8_check((const uint8_t *)"a\xC3", 2), 1);            /* truncated */
    assert_int_equal(tok_utf8_check((const uint8_t *)"\xC0\x80", 2), 0);         /* overlong NUL */
    assert_int_equal(tok_utf8_check((const uint8_t *)"ab\xED\xA0\x80", 5), 2);   /* surrogate */
    assert_int_equal(tok_utf8_check((const uint8_t *)"\xF4\x90\x80\x80", 4), 0); /* > U+10FFFF */
    assert_int_equal(tok_utf8_check((const uint8_t *)"\xF0\x9F\x98\x80", 4), 4); /* emoji */
    assert_int_equal(tok_utf8_check((const uint8_t *)"\x80", 1), 0);
    assert_int_equal(tok_utf8_check((const uint8_t *)"a\0b", 3), 3); /* U+0000 is valid */
    assert_int_equal(tok_utf8_seq((const uint8_t *)"\xF0\x9F", 2), -2);
    assert_int_equal(tok_utf8_seq((const uint8_t *)"\xF0\x9F\x98", 3), -3);
    assert_int_equal(tok_utf8_seq((const uint8_t *)"\xE0\x80", 2), 0);
}

static void lossy_is(const char *in, size_t n, const char *want) {
    uint8_t out[64];
    size_t m = tok_utf8_lossy((const uint8_t *)in, n, 0, out, NULL);
    out[m] = 0;
    assert_string_equal((char *)out, want);
}

static void test_utf8_lossy(void **state) {
    (void)state;
    lossy_is("a\xC3\xA9z", 4, "a\xC3\xA9z");
    lossy_is("\xFF", 1, "\xEF\xBF\xBD");
    lossy_is("\xF0\x9F\x98", 3, "\xEF\xBF\xBD"); /* one U+FFFD per maximal subpart */
    lossy_is("\xF0\x9F\x98z", 4, "\xEF\xBF\xBDz");
    lossy_is("\xE0\x80\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"); /* E0 80: not a prefix */
    lossy_is("\xED\xA0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"); /* surrogate */
    size_t used = 0;
    uint8_t out[16];
    size_t m = tok_utf8_lossy((const uint8_t *)"ab\xF0\x9F", 4, 1, out, &used);
    assert_int_equal(m, 2);
    assert_int_equal(used, 2); /* the unfinished emoji is held back */
}

static void test_bytelevel_table(void **state) {
    (void)state;
    assert_int_equal(tok_byte_to_cp(' '), 0x120);  /* Ġ */
    assert_int_equal(tok_byte_to_cp('\n'), 0x10A); /* Ċ */
    assert_int_equal(tok_byte_to_cp('A'), 'A');
    assert_int_equal(tok_byte_to_cp(0xAD), 0x143);
    for (int b = 0; b < 256; b++)
        assert_int_equal(tok_cp_to_byte(tok_byte_to_cp((uint8_t)b)), b);
    assert_int_equal(tok_cp_to_byte(0x20), -1);
    assert_int_equal(tok_cp_to_byte(0x144), -1);
    uint8_t raw[16];
    assert_int_equal(tok_bytelevel_to_raw("\xC4\xA0world", 7, raw), 6);
    assert_memory_equal(raw, " world", 6);
    assert_int_equal(tok_bytelevel_to_raw("a b", 3, raw),
                     -1); /* a literal space is not byte-level */
}

/* ---------------------------------------------------------------- BPE */

static void test_bpe_merge_order(void **state) {
    (void)state;
    EXPECT("hello world", 259, 264);
    EXPECT("aaa", 265, 97);   /* leftmost pair merges first */
    EXPECT("aaaaa", 266, 97); /* aa aa -> aaaa after both aa exist */
    EXPECT("hell", 258);
    EXPECT("helo", 256, 108, 111); /* no "he l" merge */
}

static void test_bpe_scan_equals_heap(void **state) {
    (void)state;
    tok_bpe_scratch s1 = {0}, s2 = {0};
    uint8_t buf[300];
    int32_t o1[300], o2[300];
    unsigned seed = 12345;
    const char alphabet[] = "aaaahelo wrd";
    for (int round = 0; round < 2000; round++) {
        size_t n = 1 + (size_t)(round % 299);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            buf[i] = (uint8_t)alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        long k1 = tok_bpe(&g_tok->merges, g_tok->byte_ids, buf, n, &s1, o1, 1);
        long k2 = tok_bpe(&g_tok->merges, g_tok->byte_ids, buf, n, &s2, o2, 2);
        assert_int_equal(k1, k2);
        assert_memory_equal(o1, o2, (size_t)k1 * sizeof(int32_t));
    }
    tok_bpe_scratch_free(&s1);
    tok_bpe_scratch_free(&s2);
}

static void test_pair_merges_same(void **state) {
    (void)state;
    char err[256];
    tokenizer_t *p = tokenizer_load(data_path("tiny_pairs.json"), err, sizeof err);
    assert_non_null(p);
    const char *s = "hello world aaaaa <think>hell</think>";
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    assert_int_equal(tokenizer_encode(g_tok, s, strlen(s), &a, &na, err, sizeof err), 0);
    assert_int_equal(tokenizer_encode(p, s, strlen(s), &b, &nb, err, sizeof err), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    free(a);
    free(b);
    tokenizer_free(p);
}

/* ---------------------------------------------------------------- pipeline */

static void test_added_tokens(void **state) {
    (void)state;
    EXPECT("hello<|end|>hello", 259, 267, 259);
    EXPECT("<think>", 268); /* non-special added tokens match whole too */
    EXPECT("<a>", 269);
    EXPECT("<a>>", 270); /* longest match */
    EXPECT("<a>>>", 270, 62);
    EXPECT("<|end", 60, 124, 101, 110, 100); /* partial: plain text ("<|" is one pre-token) */
    /* added tokens cut the text before the regex: " " before <|end|> stays alone */
    EXPECT(" <|end|> hello", 32, 267, 32, 259);
}

static void test_nfc_and_regex(void **state) {
    (void)state;
    EXPECT("e\xCC\x81", 195, 169); /* e + U+0301 -> U+00E9 (C3 A9) */
    EXPECT("\xC3\xA9", 195, 169);
    EXPECT("123", 49, 50, 51);      /* \p{N} one digit at a time */
    EXPECT("I'LL", 73, 39, 76, 76); /* case-insensitive contraction: "I" "'LL" */
    EXPECT("a\n\n b", 97, 10, 10, 32, 98);
    assert_int_equal(tokenizer_vocab_size(g_tok), 271);
}

static void test_nul_and_empty(void **state) {
    (void)state;
    expect_ids(g_tok, "a\0b", 3, (const int32_t[]){97, 0, 98, -1});
    int32_t *ids = (int32_t *)1;
    size_t n = 7;
    char err[64];
    assert_int_equal(tokenizer_encode(g_tok, "", 0, &ids, &n, err, sizeof err), 0);
    assert_int_equal(n, 0);
    free(ids);
}

static void test_invalid_utf8_rejected(void **state) {
    (void)state;
    int32_t *ids = (int32_t *)1;
    size_t n = 7;
    char err[128] = "";
    assert_int_equal(tokenizer_encode(g_tok, "ok\xFFno", 5, &ids, &n, err, sizeof err), -1);
    assert_null(ids);
    assert_int_equal(n, 0);
    assert_non_null(strstr(err, "invalid UTF-8 at byte 2"));
    assert_int_equal(tokenizer_encode(g_tok, "\xED\xA0\x80", 3, &ids, &n, err, sizeof err), -1);
    assert_non_null(strstr(err, "invalid UTF-8 at byte 0"));
}

static void test_token_id(void **state) {
    (void)state;
    assert_int_equal(tokenizer_token_id(g_tok, "\xC4\xA0world"), 264); /* "Ġworld" */
    assert_int_equal(tokenizer_token_id(g_tok, "<think>"), 268);
    assert_int_equal(tokenizer_token_id(g_tok, "<|end|>"), 267);
    assert_int_equal(tokenizer_token_id(g_tok, "nope"), -1);
    assert_int_equal(tokenizer_token_id(g_tok, " world"), -1); /* raw spelling is not the vocab's */
    assert_true(tokenizer_token_is_special(g_tok, 267));
    assert_false(tokenizer_token_is_special(g_tok, 268));
    assert_false(tokenizer_token_is_special(g_tok, 5));
    assert_false(tokenizer_token_is_special(g_tok, 99999));
}

/* ---------------------------------------------------------------- decode */

static void test_decode(void **state) {
    (void)state;
    char *s = tokenizer_decode(g_tok, (const int32_t[]){259, 264, 267, 268}, 4);
    assert_string_equal(s, "hello world<|end|><think>");
    free(s);
    s = tokenizer_decode(g_tok, (const int32_t[]){195}, 1);
    assert_string_equal(s, "\xEF\xBF\xBD");
    free(s);
    s = tokenizer_decode(g_tok, NULL, 0);
    assert_string_equal(s, "");
    free(s);
    assert_null(tokenizer_decode(g_tok, (const int32_t[]){259, 271}, 2));
    assert_null(tokenizer_decode(g_tok, (const int32_t[]){-1}, 1));
}

static void test_stream(void **state) {
    (void)state;
    tokenizer_stream_t *st = tokenizer_stream_new(g_tok);
    assert_non_null(st);
    size_t len = 99;
    const int32_t emoji[] = {0xF0, 0x9F, 0x98, 0x80}; /* U+1F600 one byte per token */
    for (int i = 0; i < 3; i++) {
        const char *o = tokenizer_stream_put(st, emoji[i], &len);
        assert_non_null(o);
        assert_int_equal(len, 0);
    }
    const char *o = tokenizer_stream_put(st, emoji[3], &len);
    assert_int_equal(len, 4);
    assert_memory_equal(o, "\xF0\x9F\x98\x80", 4);
    o = tokenizer_stream_put(st, 259, &len);
    assert_string_equal(o, "hello");
    o = tokenizer_stream_put(st, 0xC3, &len); /* C3 then 'a': C3 can never finish */
    assert_int_equal(len, 0);
    o = tokenizer_stream_put(st, 'a', &len);
    assert_string_equal(o, "\xEF\xBF\xBD"
                           "a");
    assert_null(tokenizer_stream_put(st, 5000, &len)); /* bad id: NULL, state kept */
    o = tokenizer_stream_put(st, 0xE2, &len);
    assert_int_equal(len, 0);
    o = tokenizer_stream_flush(st, &len); /* unfinished at the end */
    assert_string_equal(o, "\xEF\xBF\xBD");
    o = tokenizer_stream_flush(st, &len);
    assert_int_equal(len, 0);
    tokenizer_stream_free(st);
}

/* ---------------------------------------------------------------- threads */

/* The BPE cache is shared: threads encoding at once must get the same ids as
 * one thread does (and ASan/TSan builds must stay quiet). */
static const char *THREAD_TEXTS[] = {"hello world", "aaaaa hell helo", "I'LL <think>x</think>",
                                     "e\xCC\x81 123 <a>>", "world world world hello"};
#define N_TEXTS (sizeof THREAD_TEXTS / sizeof *THREAD_TEXTS)
static int32_t *g_ref[N_TEXTS];
static size_t g_ref_n[N_TEXTS];

static void *encode_many(void *arg) {
    long bad = 0;
    for (int it = 0; it < 300; it++) {
        size_t k = (size_t)(it + (long)arg) % N_TEXTS;
        int32_t *ids = NULL;
        size_t n = 0;
        char err[64];
        if (tokenizer_encode(g_tok, THREAD_TEXTS[k], strlen(THREAD_TEXTS[k]), &ids, &n, err,
                             sizeof err) != 0 ||
            n != g_ref_n[k] || memcmp(ids, g_ref[k], n * sizeof *ids) != 0)
            bad++;
        free(ids);
    }
    return (void *)bad;
}

static void test_threads_share_cache(void **state) {
    (void)state;
    char err[64];
    for (size_t k = 0; k < N_TEXTS; k++)
        assert_int_equal(tokenizer_encode(g_tok, THREAD_TEXTS[k], strlen(THREAD_TEXTS[k]),
                                          &g_ref[k], &g_ref_n[k], err, sizeof err),
                         0);
    pthread_t th[4];
    for (long i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, encode_many, (void *)i), 0);
    for (int i = 0; i < 4; i++) {
        void *bad;
        pthread_join(th[i], &bad);
        assert_int_equal((long)bad, 0);
    }
    for (size_t k = 0; k < N_TEXTS; k++)
        free(g_ref[k]);
}

/* ---------------------------------------------------------------- load errors */

static void load_fails(const char *json, const char *want) {
    char path[] = "/tmp/kvtier_tok_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, json, strlen(json)), (ssize_t)strlen(json));
    close(fd);
    char err[512] = "";
    tokenizer_t *t = tokenizer_load(path, err, sizeof err);
    unlink(path);
    if (t) {
        tokenizer_free(t);
        fail_msg("loading %s succeeded, want error '%s'", json, want);
    }
    if (!strstr(err, want))
        fail_msg("error '%s' lacks '%s'", err, want);
}

static void test_load_errors(void **state) {
    (void)state;
    char err[512];
    assert_null(tokenizer_load("/nonexistent/tokenizer.json", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/tokenizer.json: cannot open"));
    load_fails("{\"model\": ", "invalid JSON");
    load_fails("{}", "no \"model\" object");
    load_fails("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{},\"merges\":[]}}",
               "model must be BPE");
    const char *pre =
        "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
        "\"pattern\":{\"Regex\":\"\\\\s+\"},\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\"}]}";
    char buf[2048];
    snprintf(
        buf, sizeof buf,
        "{\"normalizer\":{\"type\":\"NFKC\"},%s,\"model\":{\"vocab\":{\"a\":0},\"merges\":[]}}",
        pre);
    load_fails(buf, "normalizer \"NFKC\" is not supported");
    snprintf(buf, sizeof buf, "{%s,\"model\":{\"vocab\":{\"a\":0},\"merges\":[]}}", pre);
    load_fails(buf, "lacks the single byte 0x00");
    load_fails("{\"pre_tokenizer\":{\"type\":\"Whitespace\"},\"model\":{\"vocab\":{\"a\":0},"
               "\"merges\":[]}}",
               "pre_tokenizer is not supported");
    snprintf(buf, sizeof buf, "{%s,\"model\":{\"vocab\":{\"a b\":0},\"merges\":[]}}", pre);
    load_fails(buf, "is not a byte-level token");
}

static void test_load_bad_merge(void **state) {
    (void)state;
    /* the tiny tokenizer with one merge whose result is missing from the vocab */
    FILE *f = fopen(data_path("tiny_str.json"), "rb");
    assert_non_null(f);
    char *text = calloc(1, 1 << 16);
    size_t n = fread(text, 1, (1 << 16) - 1, f);
    fclose(f);
    assert_true(n > 0);
    char *m = strstr(text, "\"merges\": [");
    assert_non_null(m);
    char *fixed = malloc(n + 64);
    size_t head = (size_t)(m - text) + strlen("\"merges\": [");
    memcpy(fixed, text, head);
    strcpy(fixed + head, "\"x y\",");
    strcat(fixed, text + head);
    load_fails(fixed, "model.merges[0] (\"x\" + \"y\"): the merged token is not in the vocab");
    free(fixed);
    free(text);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
        return 2;
    }
    g_data = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_check),
        cmocka_unit_test(test_utf8_lossy),
        cmocka_unit_test(test_bytelevel_table),
        cmocka_unit_test(test_bpe_merge_order),
        cmocka_unit_test(test_bpe_scan_equals_heap),
        cmocka_unit_test(test_pair_merges_same),
        cmocka_unit_test(test_added_tokens),
        cmocka_unit_test(test_nfc_and_regex),
        cmocka_unit_test(test_nul_and_empty),
        cmocka_unit_test(test_invalid_utf8_rejected),
        cmocka_unit_test(test_token_id),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_threads_share_cache),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_bad_merge),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
