/* test_rope_scaling.c - RoPE scaling: config.json `rope_scaling` /
 * `rope_parameters` parsing (linear, yarn, both type keys, defaults, every
 * rejection) and rope_scaling_inv_freq / the attention factor against the
 * numbers of the torch reference (tests/fixtures/golden_rope.py ->
 * tests/fixtures/tiny-qwen3/golden_rope_scaling.json, "inv_freq_cases"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <math.h>

#include "model.h"

#ifndef KVTIER_SOURCE_DIR
#define KVTIER_SOURCE_DIR "."
#endif
#define GOLDEN KVTIER_SOURCE_DIR "/tests/fixtures/tiny-qwen3/golden_rope_scaling.json"

#define BASE                                                                                       \
    "{\"model_type\":\"qwen3\",\"vocab_size\":10,\"hidden_size\":64,\"intermediate_size\":96,"     \
    "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":"    \
    "128,\"max_position_embeddings\":40960,\"rope_theta\":1e6"

static void parse_ok(const char *json, qwen3_config_t *c) {
    char err[512] = "";
    if (qwen3_config_parse(json, strlen(json), c, err, sizeof err) != 0)
        fail_msg("rejected (%s): %s", err, json);
}

static void expect_reject(const char *json, const char *sub) {
    qwen3_config_t c;
    char err[512] = "";
    if (qwen3_config_parse(json, strlen(json), &c, err, sizeof err) == 0)
        fail_msg("accepted: %s", json);
    if (!strstr(err, sub))
        fail_msg("error '%s' lacks '%s'", err, sub);
    assert_int_equal(c.hidden, 0); /* nothing half-filled */
}

static void rope_parse_yarn(void **state) {
    (void)state;
    qwen3_config_t c;
    /* the Qwen3 model cards' YaRN block */
    parse_ok(BASE ",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4.0,"
                  "\"original_max_position_embeddings\":32768}}",
             &c);
    assert_int_equal(c.rope_scaling.kind, ROPE_SCALING_YARN);
    assert_true(c.rope_scaling.factor == 4.0);
    assert_int_equal(c.rope_scaling.original_max_pos, 32768);
    assert_true(c.rope_scaling.beta_fast == 32.0 && c.rope_scaling.beta_slow == 1.0);
    assert_int_equal(c.rope_scaling.truncate, 1);
    assert_float_equal(c.rope_scaling.attention_factor, 0.1 * log(4.0) + 1.0, 1e-15);
    assert_int_equal(c.max_pos, 40960); /* kept as given, like transformers */
    char d[160];
    assert_string_equal(rope_scaling_describe(&c.rope_scaling, d, sizeof d),
                        "yarn x4 (original 32768 positions, attention factor 1.1386)");

    /* legacy `type`, no original (-> max_position_embeddings), overrides */
    parse_ok(BASE ",\"rope_scaling\":{\"type\":\"yarn\",\"factor\":8,\"beta_fast\":16,"
                  "\"beta_slow\":2,\"truncate\":false,\"mscale\":0.707,\"mscale_all_dim\":1}}",
             &c);
    assert_int_equal(c.rope_scaling.kind, ROPE_SCALING_YARN);
    assert_int_equal(c.rope_scaling.original_max_pos, 40960);
    assert_true(c.rope_scaling.beta_fast == 16.0 && c.rope_scaling.beta_slow == 2.0);
    assert_int_equal(c.rope_scaling.truncate, 0);
    assert_float_equal(c.rope_scaling.attention_factor,
                       (0.1 * 0.707 * log(8.0) + 1.0) / (0.1 * log(8.0) + 1.0), 1e-15);

    /* given attention_factor wins; beta 0 / null mean the defaults (python `or`) */
    parse_ok(BASE ",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":32,\"attention_factor\":"
                  "1.2,\"beta_fast\":0,\"beta_slow\":null,\"mscale\":1,\"mscale_all_dim\":1}}",
             &c);
    assert_true(c.rope_scaling.attention_factor == 1.2);
    assert_true(c.rope_scaling.beta_fast == 32.0 && c.rope_scaling.beta_slow == 1.0);

    /* newer configs: the scaling keys inside rope_parameters */
    parse_ok("{\"model_type\":\"qwen3\",\"vocab_size\":10,\"hidden_size\":64,\"intermediate_size\":"
             "96,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"max_position_embeddings\":"
             "1024,\"rope_parameters\":{\"rope_theta\":5e6,\"rope_type\":\"yarn\",\"factor\":2,"
             "\"original_max_position_embeddings\":512}}",
             &c);
    assert_true(c.rope_theta == 5e6);
    assert_int_equal(c.rope_scaling.kind, ROPE_SCALING_YARN);
    assert_int_equal(c.rope_scaling.original_max_pos, 512);
}

static void rope_parse_linear_default(void **state) {
    (void)state;
    qwen3_config_t c;
    parse_ok(BASE ",\"rope_scaling\":{\"type\":\"linear\",\"factor\":2}}", &c);
    assert_int_equal(c.rope_scaling.kind, ROPE_SCALING_LINEAR);
    assert_true(c.rope_scaling.factor == 2.0);
    assert_true(c.rope_scaling.attention_factor == 1.0);
    char d[160];
    assert_string_equal(rope_scaling_describe(&c.rope_scaling, d, sizeof d), "linear x2");
    parse_ok(BASE ",\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":0.5}}", &c);
    assert_true(c.rope_scaling.factor == 0.5);
    parse_ok(BASE ",\"rope_scaling\":{\"rope_type\":\"default\"}}", &c);
    assert_int_equal(c.rope_scaling.kind, ROPE_SCALING_NONE);
    assert_true(c.rope_scaling.attention_factor == 1.0);
    parse_ok(BASE ",\"rope_scaling\":null}", &c);
    assert_int_equal(c.rope_scaling.kind, ROPE_SCALING_NONE);
    assert_string_equal(rope_scaling_describe(&c.rope_scaling, d, sizeof d), "default");
    /* rope_parameters default + legacy rope_scaling linear: the scaling is used */
    parse_ok(BASE ",\"rope_parameters\":{\"rope_type\":\"default\",\"rope_theta\":1e6},"
                  "\"rope_scaling\":{\"type\":\"linear\",\"factor\":4}}",
             &c);
    assert_int_equal(c.rope_scaling.kind, ROPE_SCALING_LINEAR);
}

static void rope_parse_rejects(void **state) {
    (void)state;
    const char *types[] = {"dynamic", "longrope", "llama3", "ntk"};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char j[512], want[128];
        snprintf(j, sizeof j, BASE ",\"rope_scaling\":{\"rope_type\":\"%s\",\"factor\":4}}",
                 types[i]);
        snprintf(want, sizeof want,
                 "config.json: rope_scaling: rope_type '%s' is not supported (kvtier implements "
                 "default, linear and yarn)",
                 types[i]);
        expect_reject(j, want);
    }
    expect_reject(BASE ",\"rope_parameters\":{\"type\":\"llama3\",\"factor\":8}}",
                  "rope_parameters: rope_type 'llama3' is not supported");
    expect_reject(BASE ",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":0}}",
                  "rope_scaling.factor must be a number > 0 for rope_type yarn");
    expect_reject(BASE ",\"rope_scaling\":{\"type\":\"linear\",\"factor\":-2}}",
                  "rope_scaling.factor must be a number > 0 for rope_type linear");
    expect_reject(BASE ",\"rope_scaling\":{\"rope_type\":\"yarn\"}}",
                  "rope_scaling.factor must be a number > 0");
    expect_reject(BASE ",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":\"4\"}}",
                  "rope_scaling.factor must be a number");
    expect_reject(BASE ",\"rope_scaling\":{\"factor\":4}}",
                  "rope_scaling has no rope_type (or type)");
    expect_reject(BASE ",\"rope_scaling\":{\"rope_type\":4,\"factor\":4}}",
                  "rope_scaling.rope_type must be a string");
    expect_reject(BASE ",\"rope_scaling\":\"yarn\"}", "rope_scaling must be an object or null");
    expect_reject(BASE ",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4,"
                       "\"original_max_position_embeddings\":100.5}}",
                  "original_max_position_embeddings must be a positive integer");
    expect_reject(BASE ",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4,"
                       "\"attention_factor\":0}}",
                  "rope_scaling.attention_factor must be a number > 0");
    expect_reject(BASE ",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4,"
                       "\"truncate\":\"no\"}}",
                  "rope_scaling.truncate must be true or false");
    expect_reject(BASE ",\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4,"
                       "\"beta_fast\":-1}}",
                  "beta_fast and beta_slow must be > 0");
    expect_reject(BASE ",\"rope_parameters\":{\"rope_type\":\"yarn\",\"factor\":4},"
                       "\"rope_scaling\":{\"rope_type\":\"linear\",\"factor\":4}}",
                  "rope_parameters (rope_type 'yarn') and rope_scaling (rope_type 'linear') "
                  "disagree");
}

/* rope_scaling_inv_freq on bad arguments, and a zeroed struct = no scaling. */
static void rope_inv_freq_args(void **state) {
    (void)state;
    float a[64], b[64];
    rope_scaling_t z;
    memset(&z, 0, sizeof z);
    assert_int_equal(rope_scaling_inv_freq(NULL, 128, 1e6, a), 0);
    assert_int_equal(rope_scaling_inv_freq(&z, 128, 1e6, b), 0);
    assert_memory_equal(a, b, sizeof a);
    assert_int_equal(rope_scaling_inv_freq(NULL, 7, 1e6, a), -1);
    rope_scaling_t y;
    rope_scaling_none(&y);
    y.kind = ROPE_SCALING_YARN;
    y.factor = 4;
    y.original_max_pos = 0;
    assert_int_equal(rope_scaling_inv_freq(&y, 128, 1e6, a), -1); /* no original */
    y.original_max_pos = 32768;
    y.factor = 0;
    assert_int_equal(rope_scaling_inv_freq(&y, 128, 1e6, a), -1);
    y.factor = 4;
    assert_int_equal(rope_scaling_inv_freq(&y, 128, 1e6, a), 0);
    /* Qwen3 docs YaRN at head_dim 128: correction range 23.6 .. 39.65 ->
     * [23, 40]: pairs 0..23 keep their frequency, pairs 40.. are divided by 4 */
    double lo, hi;
    rope_yarn_correction_range(&y, 128, 1e6, &lo, &hi);
    assert_true(lo == 23.0 && hi == 40.0);
    rope_scaling_inv_freq(NULL, 128, 1e6, b);
    assert_true(a[0] == b[0] && a[23] == b[23]);
    assert_true(a[24] < b[24] && a[24] > b[24] / 4.0f);
    assert_float_equal(a[50], b[50] / 4.0f, 1e-7 * b[50]);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b)
        b[n] = 0;
    return b;
}

/* A minimal Qwen3 config.json with the case's head_dim, theta, max positions
 * and rope keys (rope_scaling and/or rope_parameters). Caller frees. */
static char *case_config(const cJSON *cs) {
    cJSON *root = cJSON_Parse("{\"model_type\":\"qwen3\",\"vocab_size\":10,\"hidden_size\":64,"
                              "\"intermediate_size\":96,\"num_hidden_layers\":1,"
                              "\"num_attention_heads\":2}");
    const char *copy[] = {"head_dim", "rope_theta", "max_position_embeddings"};
    for (size_t i = 0; i < 3; i++)
        cJSON_AddItemToObject(root, copy[i],
                              cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(cs, copy[i]), 1));
    const cJSON *kv;
    cJSON_ArrayForEach(kv, cJSON_GetObjectItemCaseSensitive(cs, "config"))
        cJSON_AddItemToObject(root, kv->string, cJSON_Duplicate(kv, 1));
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* Every inv_freq case of the torch reference: parse its config, compute the
 * table, compare value by value (f32 ops in torch's order: at most an ulp or
 * two apart, from pow) and the attention factor. */
static void rope_inv_freq_vs_torch(void **state) {
    (void)state;
    char *text = slurp(GOLDEN);
    if (!text)
        fail_msg("cannot read %s (make it with tests/fixtures/golden_rope.py)", GOLDEN);
    cJSON *g = cJSON_Parse(text);
    assert_non_null(g);
    const cJSON *cs;
    int ncase = 0, nval = 0, nexact = 0;
    double worst = 0;
    cJSON_ArrayForEach(cs, cJSON_GetObjectItemCaseSensitive(g, "inv_freq_cases")) {
        const char *name = cJSON_GetObjectItemCaseSensitive(cs, "name")->valuestring;
        char *json = case_config(cs);
        qwen3_config_t c;
        char err[512] = "";
        if (qwen3_config_parse(json, strlen(json), &c, err, sizeof err) != 0)
            fail_msg("%s: %s", name, err);
        const cJSON *want = cJSON_GetObjectItemCaseSensitive(cs, "inv_freq");
        int half = c.head_dim / 2;
        assert_int_equal(cJSON_GetArraySize(want), half);
        float inv[512];
        assert_int_equal(rope_scaling_inv_freq(&c.rope_scaling, c.head_dim, c.rope_theta, inv), 0);
        for (int i = 0; i < half; i++) {
            float w = (float)cJSON_GetArrayItem(want, i)->valuedouble;
            double rel = fabs((double)inv[i] - w) / w;
            if (rel > 2.5e-7) /* 2 ulp */
                fail_msg("%s: inv_freq[%d] = %.9g, torch %.9g (rel %.3g)", name, i, inv[i], w, rel);
            worst = rel > worst ? rel : worst;
            nexact += inv[i] == w;
            nval++;
        }
        double af = cJSON_GetObjectItemCaseSensitive(cs, "attention_factor")->valuedouble;
        double got =
            c.rope_scaling.kind == ROPE_SCALING_YARN ? c.rope_scaling.attention_factor : 1.0;
        if (fabs(got - af) > 1e-12 * af)
            fail_msg("%s: attention factor %.17g, torch %.17g", name, got, af);
        free(json);
        ncase++;
    }
    printf("  %d cases, %d inv_freq values: %d bit-identical to torch, max rel diff %.3g\n", ncase,
           nval, nexact, worst);
    assert_true(ncase >= 8);
    cJSON_Delete(g);
    free(text);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rope_parse_yarn),        cmocka_unit_test(rope_parse_linear_default),
        cmocka_unit_test(rope_parse_rejects),     cmocka_unit_test(rope_inv_freq_args),
        cmocka_unit_test(rope_inv_freq_vs_torch),
    };
    return cmocka_run_group_tests_name("loader_rope_scaling", tests, NULL, NULL);
}
