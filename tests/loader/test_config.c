/* test_config.c - qwen3_config_parse on real-style config.json texts (both
 * key styles) and on every rejection it promises. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "model.h"

/* The real Qwen3-0.6B config.json (transformers 4.51). */
static const char *QWEN3_06B =
    "{\"architectures\":[\"Qwen3ForCausalLM\"],\"attention_bias\":false,\"attention_dropout\":0.0,"
    "\"bos_token_id\":151643,\"eos_token_id\":151645,\"head_dim\":128,\"hidden_act\":\"silu\","
    "\"hidden_size\":1024,\"initializer_range\":0.02,\"intermediate_size\":3072,"
    "\"max_position_embeddings\":40960,\"max_window_layers\":28,\"model_type\":\"qwen3\","
    "\"num_attention_heads\":16,\"num_hidden_layers\":28,\"num_key_value_heads\":8,\"rms_norm_"
    "eps\":1e-06,"
    "\"rope_scaling\":null,\"rope_theta\":1000000,\"sliding_window\":null,\"tie_word_embeddings\":"
    "true,"
    "\"torch_dtype\":\"bfloat16\",\"transformers_version\":\"4.51.0\",\"use_cache\":true,"
    "\"use_sliding_window\":false,\"vocab_size\":151936}";

/* Newer style (Thinking-2507 values): rope_parameters, dtype, layer_types, eos list. */
static const char *QWEN3_4B_NEW =
    "{\"architectures\":[\"Qwen3ForCausalLM\"],\"model_type\":\"qwen3\",\"hidden_size\":2560,"
    "\"intermediate_size\":9728,\"num_hidden_layers\":2,\"num_attention_heads\":32,\"num_key_value_"
    "heads\":8,"
    "\"head_dim\":128,\"vocab_size\":151936,\"max_position_embeddings\":262144,\"rms_norm_eps\":1e-"
    "06,"
    "\"rope_parameters\":{\"rope_theta\":5000000,\"rope_type\":\"default\"},\"dtype\":\"bfloat16\","
    "\"layer_types\":[\"full_attention\",\"full_attention\"],\"tie_word_embeddings\":true,"
    "\"eos_token_id\":[151645,151643]}";

static void expect_reject(const char *json, const char *sub) {
    qwen3_config_t c;
    char err[512] = "";
    if (qwen3_config_parse(json, strlen(json), &c, err, sizeof err) == 0)
        fail_msg("accepted: %s", json);
    if (!strstr(err, sub))
        fail_msg("error '%s' lacks '%s'", err, sub);
    assert_int_equal(c.hidden, 0); /* nothing half-filled */
}

static void loader_config_real_06b(void **state) {
    (void)state;
    qwen3_config_t c;
    char err[256] = "";
    assert_int_equal(qwen3_config_parse(QWEN3_06B, strlen(QWEN3_06B), &c, err, sizeof err), 0);
    assert_int_equal(c.vocab_size, 151936);
    assert_int_equal(c.hidden, 1024);
    assert_int_equal(c.intermediate, 3072);
    assert_int_equal(c.n_layers, 28);
    assert_int_equal(c.n_heads, 16);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.head_dim, 128);
    assert_true(c.rope_theta == 1e6);
    assert_true(c.rms_eps == 1e-6f);
    assert_int_equal(c.max_pos, 40960);
    assert_int_equal(c.tie_embeddings, 1);
    assert_int_equal(c.bos_id, 151643);
    assert_int_equal(c.eos_id, 151645);
    assert_int_equal(c.dtype, DT_BF16);
}

static void loader_config_new_style(void **state) {
    (void)state;
    qwen3_config_t c;
    char err[256] = "";
    assert_int_equal(qwen3_config_parse(QWEN3_4B_NEW, strlen(QWEN3_4B_NEW), &c, err, sizeof err),
                     0);
    assert_true(c.rope_theta == 5e6);
    assert_int_equal(c.max_pos, 262144);
    assert_int_equal(c.eos_id, 151645);
    assert_int_equal(c.bos_id, -1);
    assert_int_equal(c.n_heads, 32);
}

static void loader_config_defaults(void **state) {
    (void)state;
    /* no head_dim (-> hidden/heads), no kv heads (-> heads), no eps, model_type only */
    const char *j =
        "{\"model_type\":\"qwen3\",\"vocab_size\":10,\"hidden_size\":64,\"intermediate_size\":96,"
        "\"num_hidden_layers\":1,\"num_attention_heads\":4,\"rope_theta\":10000.0}";
    qwen3_config_t c;
    char err[256] = "";
    assert_int_equal(qwen3_config_parse(j, strlen(j), &c, err, sizeof err), 0);
    assert_int_equal(c.head_dim, 16);
    assert_int_equal(c.n_kv_heads, 4);
    assert_true(c.rms_eps == 1e-6f);
    assert_int_equal(c.tie_embeddings, 0);
    assert_true(c.rope_theta == 1e4);
    /* only architectures */
    const char *k =
        "{\"architectures\":[\"Qwen3ForCausalLM\"],\"vocab_size\":10,\"hidden_size\":64,"
        "\"intermediate_size\":96,\"num_hidden_layers\":1,\"num_attention_heads\":4,\"rope_theta\":"
        "1e6}";
    assert_int_equal(qwen3_config_parse(k, strlen(k), &c, err, sizeof err), 0);
}

#define BASE                                                                                       \
    "\"vocab_size\":10,\"hidden_size\":64,\"intermediate_size\":96,\"num_hidden_layers\":2,"       \
    "\"num_attention_heads\":4,\"num_key_value_heads\":2"

static void loader_config_rejects(void **state) {
    (void)state;
    expect_reject("{\"model_type\":\"llama\"," BASE ",\"rope_theta\":1e6}",
                  "config.json: model_type 'llama' is not supported: kvtier runs Qwen3 dense "
                  "models (model_type qwen3)");
    expect_reject("{\"model_type\":\"qwen3_moe\"," BASE ",\"rope_theta\":1e6}",
                  "model_type 'qwen3_moe'");
    expect_reject("{\"model_type\":\"qwen2\"," BASE ",\"rope_theta\":1e6}", "model_type 'qwen2'");
    expect_reject("{\"model_type\":\"qwen3\",\"architectures\":[\"Qwen3MoeForCausalLM\"]," BASE
                  ",\"rope_theta\":1e6}",
                  "architecture 'Qwen3MoeForCausalLM' is not supported");
    expect_reject("{" BASE ",\"rope_theta\":1e6}", "neither model_type nor architectures");
    expect_reject("{\"model_type\":\"qwen3\"," BASE "}", "rope_theta is missing");
    expect_reject("{\"model_type\":\"qwen3\",\"vocab_size\":10,\"intermediate_size\":96,\"num_"
                  "hidden_layers\":2,"
                  "\"num_attention_heads\":4,\"rope_theta\":1e6}",
                  "required key hidden_size is missing");
    expect_reject(
        "{\"model_type\":\"qwen3\",\"vocab_size\":10,\"hidden_size\":-3,\"intermediate_size\":96,"
        "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"rope_theta\":1e6}",
        "hidden_size must be an integer in [1,");
    expect_reject(
        "{\"model_type\":\"qwen3\",\"vocab_size\":10,\"hidden_size\":64.5,\"intermediate_size\":96,"
        "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"rope_theta\":1e6}",
        "hidden_size must be an integer");
    expect_reject(
        "{\"model_type\":\"qwen3\",\"vocab_size\":10,\"hidden_size\":64,\"intermediate_size\":96,"
        "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":3,\"rope_"
        "theta\":1e6}",
        "num_attention_heads 4 is not a multiple of num_key_value_heads 3");
    expect_reject(
        "{\"model_type\":\"qwen3\",\"vocab_size\":10,\"hidden_size\":60,\"intermediate_size\":96,"
        "\"num_hidden_layers\":2,\"num_attention_heads\":8,\"rope_theta\":1e6}",
        "head_dim is absent and hidden_size 60 is not a multiple");
    expect_reject("{\"model_type\":\"qwen3\"," BASE ",\"head_dim\":7,\"rope_theta\":1e6}",
                  "head_dim 7 must be even");
    expect_reject("{\"model_type\":\"qwen3\"," BASE
                  ",\"rope_theta\":1e6,\"use_sliding_window\":true}",
                  "use_sliding_window is true");
    expect_reject("{\"model_type\":\"qwen3\"," BASE ",\"rope_theta\":1e6,\"attention_bias\":true}",
                  "attention_bias is true");
    expect_reject("{\"model_type\":\"qwen3\"," BASE
                  ",\"rope_theta\":1e6,\"rope_scaling\":{\"rope_type\":\"dynamic\","
                  "\"factor\":4.0}}",
                  "rope_scaling: rope_type 'dynamic' is not supported");
    expect_reject("{\"model_type\":\"qwen3\"," BASE
                  ",\"rope_parameters\":{\"rope_theta\":1e6,\"rope_type\":\"linear\"}}",
                  "rope_parameters.factor must be a number > 0 for rope_type linear");
    expect_reject("{\"model_type\":\"qwen3\"," BASE
                  ",\"rope_theta\":1e6,\"layer_types\":[\"full_attention\","
                  "\"sliding_attention\"]}",
                  "layer_types[1] is 'sliding_attention'");
    expect_reject("{\"model_type\":\"qwen3\"," BASE ",\"rope_theta\":1e6,\"torch_dtype\":\"int8\"}",
                  "dtype 'int8' is not supported");
    expect_reject("{\"model_type\":\"qwen3\"," BASE ",\"rope_theta\":1e6,\"hidden_act\":\"gelu\"}",
                  "hidden_act 'gelu'");
    expect_reject("{\"model_type\":\"qwen3\", nope}", "config.json: not valid JSON");
    expect_reject("[]", "config.json: not a JSON object");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loader_config_real_06b),
        cmocka_unit_test(loader_config_new_style),
        cmocka_unit_test(loader_config_defaults),
        cmocka_unit_test(loader_config_rejects),
    };
    return cmocka_run_group_tests_name("loader_config", tests, NULL, NULL);
}
