/* test_model_load.c - qwen3_model_load on tiny checkpoints written by
 * loader_fixture.c: good loads in every dtype, sharded, tied / untied heads,
 * both config key styles, and one specific error per malformed case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "dtype.h"
#include "loader_fixture.h"
#include "model.h"

#define TINY_PARAMS                                                                                \
    (FX_VOCAB * FX_HIDDEN + FX_HIDDEN +                                                            \
     FX_LAYERS * (2 * FX_HIDDEN + 2 * FX_HEAD_DIM + 2 * FX_HEADS * FX_HEAD_DIM * FX_HIDDEN +       \
                  2 * FX_KV * FX_HEAD_DIM * FX_HIDDEN + 3 * FX_INTER * FX_HIDDEN))

static int setup(void **state) {
    *state = fx_tmpdir();
    return *state ? 0 : -1;
}

static int teardown(void **state) {
    fx_rmtree(*state);
    free(*state);
    return 0;
}

/* Loads dir expecting failure; asserts err contains every given substring. */
static void expect_fail(const char *dir, const char *sub1, const char *sub2) {
    qwen3_model_t *m = (qwen3_model_t *)1;
    char err[512] = "";
    int rc = qwen3_model_load(dir, 0, &m, err, sizeof err);
    if (rc == 0) {
        qwen3_model_free(m);
        fail_msg("load of %s succeeded, expected an error containing '%s'", dir, sub1);
    }
    assert_null(m);
    if (!strstr(err, sub1) || (sub2 && !strstr(err, sub2)))
        fail_msg("error '%s' lacks '%s' / '%s'", err, sub1, sub2 ? sub2 : "");
}

static qwen3_model_t *expect_load(const char *dir) {
    qwen3_model_t *m = NULL;
    char err[512] = "";
    if (qwen3_model_load(dir, 0, &m, err, sizeof err) != 0)
        fail_msg("load failed: %s", err);
    assert_non_null(m);
    return m;
}

/* Every element of view t equals the fixture's value for its name. */
static void check_values(const tensor_t *t) {
    int64_t n = tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        float want = fx_value(t->name, i), got = tensor_get_f32(t, i);
        if (got != want)
            fail_msg("%s[%lld] = %g, want %g", t->name, (long long)i, got, want);
    }
}

static void check_model(const qwen3_model_t *m, dtype_t dt) {
    const qwen3_config_t *c = &m->cfg;
    assert_int_equal(c->vocab_size, FX_VOCAB);
    assert_int_equal(c->hidden, FX_HIDDEN);
    assert_int_equal(c->intermediate, FX_INTER);
    assert_int_equal(c->n_layers, FX_LAYERS);
    assert_int_equal(c->n_heads, FX_HEADS);
    assert_int_equal(c->n_kv_heads, FX_KV);
    assert_int_equal(c->head_dim, FX_HEAD_DIM);
    assert_int_equal(c->eos_id, 2);
    assert_int_equal(m->embed.dtype, dt);
    assert_int_equal(m->embed.shape[0], FX_VOCAB);
    assert_int_equal(m->embed.shape[1], FX_HIDDEN);
    assert_string_equal(m->embed.name, "model.embed_tokens.weight");
    check_values(&m->embed);
    check_values(&m->final_norm);
    for (int l = 0; l < c->n_layers; l++) {
        const qwen3_layer_t *L = &m->layers[l];
        char want[96];
        snprintf(want, sizeof want, "model.layers.%d.self_attn.q_proj.weight", l);
        assert_string_equal(L->wq.name, want);
        assert_int_equal(L->wq.shape[0], FX_HEADS * FX_HEAD_DIM);
        assert_int_equal(L->wk.shape[0], FX_KV * FX_HEAD_DIM);
        assert_int_equal(L->w_down.shape[1], FX_INTER);
        assert_int_equal(L->q_norm.shape[0], FX_HEAD_DIM);
        const tensor_t *ts[] = {&L->input_norm, &L->wq,     &L->wk,     &L->wv,
                                &L->wo,         &L->q_norm, &L->k_norm, &L->post_norm,
                                &L->w_gate,     &L->w_up,   &L->w_down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
            assert_int_equal(ts[i]->dtype, dt);
            check_values(ts[i]);
        }
    }
    /* row access: row 5 of the embedding, through the (vectorized) row path */
    float row[FX_HIDDEN];
    tensor_row_f32(&m->embed, 5, row);
    for (int j = 0; j < FX_HIDDEN; j++)
        assert_true(row[j] == fx_value("model.embed_tokens.weight", 5 * FX_HIDDEN + j));
}

static void load_dtype(void **state, const char *st_dtype, dtype_t dt) {
    const char *dir = *state;
    fx_list_t l = fx_model_list(st_dtype, 0);
    assert_int_equal(fx_write_model(dir, &l, 1, fx_config(0, 1, 1e6)), 0);
    fx_list_free(&l);
    qwen3_model_t *m = expect_load(dir);
    check_model(m, dt);
    assert_true(m->cfg.rope_theta == 1e6);
    assert_int_equal(qwen3_model_n_params(m), TINY_PARAMS);
    assert_int_equal(qwen3_model_weight_bytes(m), TINY_PARAMS * (int64_t)dtype_size(dt));
    qwen3_model_free(m);
}

static void loader_f32_values(void **state) {
    load_dtype(state, "F32", DT_F32);
}
static void loader_bf16_values(void **state) {
    load_dtype(state, "BF16", DT_BF16);
}
static void loader_f16_values(void **state) {
    load_dtype(state, "F16", DT_F16);
}

static void loader_sharded(void **state) {
    const char *dir = *state;
    fx_list_t l = fx_model_list("BF16", 1);
    assert_int_equal(fx_write_model(dir, &l, 3, fx_config(1, 0, 5e6)), 0);
    fx_list_free(&l);
    qwen3_model_t *m = expect_load(dir);
    check_model(m, DT_BF16);
    assert_true(m->cfg.rope_theta == 5e6);
    assert_int_equal(m->cfg.tie_embeddings, 0);
    assert_ptr_not_equal(m->lm_head.data, m->embed.data);
    check_values(&m->lm_head);
    qwen3_model_free(m);
    /* a listed shard that does not exist */
    char p[512];
    unlink(fx_path(p, sizeof p, dir, "model-00002-of-00003.safetensors"));
    expect_fail(dir, "model-00002-of-00003.safetensors: cannot open", NULL);
}

static void loader_sharded_wrong_map(void **state) {
    const char *dir = *state;
    fx_list_t l = fx_model_list("F32", 0);
    assert_int_equal(fx_write_model(dir, &l, 2, fx_config(0, 1, 1e6)), 0);
    fx_list_free(&l);
    char p[512];
    const char *idx =
        "{\"weight_map\":{\"model.norm.weight\":\"model-00002-of-00002.safetensors\"}}";
    /* model.norm.weight is in shard 1 (second tensor of the list) */
    assert_int_equal(
        fx_write_file(fx_path(p, sizeof p, dir, "model.safetensors.index.json"), idx, strlen(idx)),
        0);
    expect_fail(dir, "model-00002-of-00002.safetensors: tensor model.norm.weight is listed in",
                NULL);
    const char *evil = "{\"weight_map\":{\"model.norm.weight\":\"../x.safetensors\"}}";
    assert_int_equal(fx_write_file(p, evil, strlen(evil)), 0);
    expect_fail(dir, "not a file in the model directory", NULL);
}

static void loader_tied_head(void **state) {
    const char *dir = *state;
    /* config says untied but there is no lm_head.weight: refused (HF would start a
     * random output layer), the message names the fix */
    fx_list_t l = fx_model_list("BF16", 0);
    assert_int_equal(fx_write_model(dir, &l, 1, fx_config(0, 0, 1e6)), 0);
    fx_list_free(&l);
    expect_fail(dir, "no lm_head.weight", NULL);
    /* tied without lm_head.weight: the embeddings */
    l = fx_model_list("BF16", 0);
    assert_int_equal(fx_write_model(dir, &l, 1, fx_config(0, 1, 1e6)), 0);
    fx_list_free(&l);
    qwen3_model_t *m = expect_load(dir);
    assert_ptr_equal(m->lm_head.data, m->embed.data);
    assert_int_equal(m->cfg.tie_embeddings, 1);
    assert_int_equal(m->lm_head.shape[0], FX_VOCAB);
    qwen3_model_free(m);
    /* tie_word_embeddings true wins over a present lm_head.weight */
    l = fx_model_list("BF16", 1);
    assert_int_equal(fx_write_model(dir, &l, 1, fx_config(1, 1, 1e6)), 0);
    fx_list_free(&l);
    m = expect_load(dir);
    assert_ptr_equal(m->lm_head.data, m->embed.data);
    assert_int_equal(qwen3_model_n_params(m), TINY_PARAMS);
    qwen3_model_free(m);
    /* untied with lm_head present */
    l = fx_model_list("BF16", 1);
    assert_int_equal(fx_write_model(dir, &l, 1, fx_config(0, 0, 1e6)), 0);
    fx_list_free(&l);
    m = expect_load(dir);
    assert_ptr_not_equal(m->lm_head.data, m->embed.data);
    assert_string_equal(m->lm_head.name, "lm_head.weight");
    assert_int_equal(qwen3_model_n_params(m), TINY_PARAMS + FX_VOCAB * FX_HIDDEN);
    qwen3_model_free(m);
}

static void loader_config_styles(void **state) {
    const char *dir = *state;
    for (int style = 0; style < 2; style++) {
        fx_list_t l = fx_model_list("F16", 0);
        assert_int_equal(fx_write_model(dir, &l, 1, fx_config(style, 1, style ? 5e6 : 1e6)), 0);
        fx_list_free(&l);
        qwen3_model_t *m = expect_load(dir);
        assert_true(m->cfg.rope_theta == (style ? 5e6 : 1e6));
        assert_int_equal(m->cfg.dtype, style ? DT_F16 : DT_BF16);
        assert_int_equal(m->cfg.max_pos, 512);
        assert_true(m->cfg.rms_eps == 1e-6f);
        qwen3_model_free(m);
    }
}

/* Writes the model with shards=1 and returns the path of its safetensors. */
static const char *write_single(const char *dir, fx_list_t *l, char *p, size_t n) {
    assert_int_equal(fx_write_model(dir, l, 1, fx_config(0, 1, 1e6)), 0);
    fx_list_free(l);
    return fx_path(p, n, dir, "model.safetensors");
}

static void loader_err_truncated(void **state) {
    const char *dir = *state;
    char p[512];
    fx_list_t l = fx_model_list("BF16", 0);
    write_single(dir, &l, p, sizeof p);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_int_equal(truncate(p, sb.st_size - 100), 0);
    /* the last tensor in file order is layer 1's down_proj (768 bytes) */
    expect_fail(dir,
                "model.safetensors: tensor model.layers.1.mlp.down_proj.weight: data_offsets [",
                "go beyond the data buffer");
    assert_int_equal(truncate(p, 5), 0);
    expect_fail(dir, "model.safetensors: file is 5 bytes, too short", NULL);
}

static void loader_err_header_len(void **state) {
    const char *dir = *state;
    char p[512];
    fx_list_t l = fx_model_list("BF16", 0);
    write_single(dir, &l, p, sizeof p);
    FILE *f = fopen(p, "r+b");
    assert_non_null(f);
    unsigned char n[8] = {0x00, 0x00, 0x00, 0x01, 0, 0, 0, 0}; /* 16 MiB: <= limit, > file */
    fwrite(n, 1, 8, f);
    fclose(f);
    expect_fail(dir, "model.safetensors: header length 16777216 goes beyond the end of the file",
                NULL);
    f = fopen(p, "r+b");
    unsigned char big[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    fwrite(big, 1, 8, f);
    fclose(f);
    expect_fail(dir, "exceeds the safetensors limit", NULL);
}

static void loader_err_json_garbage(void **state) {
    const char *dir = *state;
    char p[512];
    fx_list_t l = fx_model_list("BF16", 0);
    write_single(dir, &l, p, sizeof p);
    assert_int_equal(fx_write_raw(p, "{\"a\": {\"dtype\": \"BF16\", \"shape\": [1], oops", NULL, 0),
                     0);
    expect_fail(dir, "model.safetensors: header is not valid JSON", NULL);
    assert_int_equal(fx_write_raw(p, "[1,2,3]", NULL, 0), 0);
    expect_fail(dir, "model.safetensors: header does not start with a JSON object", NULL);
    assert_int_equal(fx_write_raw(p, "{} {}", NULL, 0), 0);
    expect_fail(dir, "trailing bytes after its JSON object", NULL);
}

static void loader_err_overlap(void **state) {
    const char *dir = *state;
    char p[512];
    fx_list_t l = fx_model_list("BF16", 0);
    write_single(dir, &l, p, sizeof p);
    unsigned char data[64] = {0};
    assert_int_equal(
        fx_write_raw(p,
                     "{\"a\":{\"dtype\":\"BF16\",\"shape\":[16],\"data_offsets\":[0,32]},"
                     "\"b\":{\"dtype\":\"BF16\",\"shape\":[16],\"data_offsets\":[16,48]},"
                     "\"c\":{\"dtype\":\"BF16\",\"shape\":[8],\"data_offsets\":[48,64]}}",
                     data, sizeof data),
        0);
    expect_fail(dir,
                "model.safetensors: tensor b: data_offsets [16,48] overlap tensor a ending at 32",
                NULL);
    assert_int_equal(
        fx_write_raw(p,
                     "{\"a\":{\"dtype\":\"BF16\",\"shape\":[8],\"data_offsets\":[0,16]},"
                     "\"b\":{\"dtype\":\"BF16\",\"shape\":[8],\"data_offsets\":[32,48]}}",
                     data, 48),
        0);
    expect_fail(dir, "bytes [16,32) of the data buffer belong to no tensor", NULL);
    assert_int_equal(
        fx_write_raw(p, "{\"a\":{\"dtype\":\"BF16\",\"shape\":[8],\"data_offsets\":[0,16]}}", data,
                     20),
        0);
    expect_fail(dir, "data buffer is 20 bytes but the tensors end at 16", NULL);
}

static void loader_err_shape_bytes(void **state) {
    const char *dir = *state;
    char p[512];
    fx_list_t l = fx_model_list("BF16", 0);
    int i = fx_find(&l, "model.layers.1.mlp.up_proj.weight");
    l.t[i].nbytes /= 2; /* header: shape [24,16] BF16 but only 384 bytes */
    write_single(dir, &l, p, sizeof p);
    expect_fail(dir,
                "model.safetensors: tensor model.layers.1.mlp.up_proj.weight: shape [24,16] of "
                "BF16 needs 768 "
                "bytes, header gives 384",
                NULL);
}

static void loader_err_dtype(void **state) {
    const char *dir = *state;
    char p[512];
    fx_list_t l = fx_model_list("BF16", 0);
    int i = fx_find(&l, "model.norm.weight");
    snprintf(l.t[i].dtype, sizeof l.t[i].dtype, "I16"); /* same size, unsupported */
    write_single(dir, &l, p, sizeof p);
    expect_fail(dir,
                "model.safetensors: tensor model.norm.weight has dtype I16; kvtier supports F32, "
                "F16 and BF16",
                NULL);
    l = fx_model_list("BF16", 0);
    i = fx_find(&l, "model.norm.weight");
    snprintf(l.t[i].dtype, sizeof l.t[i].dtype, "Q4_K");
    write_single(dir, &l, p, sizeof p);
    expect_fail(dir, "model.safetensors: tensor model.norm.weight: unknown dtype 'Q4_K'", NULL);
    /* an unsupported dtype on a tensor nobody needs is fine */
    l = fx_model_list("BF16", 0);
    memset(&l.t[l.n], 0, sizeof l.t[l.n]);
    snprintf(l.t[l.n].name, sizeof l.t[0].name, "model.rotary_emb.position_ids");
    snprintf(l.t[l.n].dtype, sizeof l.t[0].dtype, "I64");
    l.t[l.n].ndim = 1;
    l.t[l.n].shape[0] = 2;
    l.t[l.n].nbytes = 16;
    l.t[l.n].data = calloc(1, 16);
    l.n++;
    write_single(dir, &l, p, sizeof p);
    qwen3_model_free(expect_load(dir));
}

static void loader_err_missing(void **state) {
    const char *dir = *state;
    char p[512];
    fx_list_t l = fx_model_list("BF16", 0);
    fx_list_remove(&l, "model.layers.1.mlp.up_proj.weight");
    write_single(dir, &l, p, sizeof p);
    expect_fail(dir,
                "model.safetensors: required tensor model.layers.1.mlp.up_proj.weight is missing",
                NULL);
    unlink(p);
    expect_fail(dir, "no model.safetensors or model.safetensors.index.json", NULL);
    unlink(fx_path(p, sizeof p, dir, "config.json"));
    expect_fail(dir, "config.json: cannot open", NULL);
}

static void loader_err_shape_vs_config(void **state) {
    const char *dir = *state;
    char p[512];
    fx_list_t l = fx_model_list("BF16", 0);
    int i = fx_find(&l, "model.layers.0.self_attn.k_proj.weight");
    l.t[i].shape[0] = 8; /* half the rows config.json implies; bytes consistent: 8 x 16 x 2 */
    l.t[i].nbytes = 8 * FX_HIDDEN * 2;
    write_single(dir, &l, p, sizeof p);
    expect_fail(dir,
                "model.safetensors: tensor model.layers.0.self_attn.k_proj.weight has shape "
                "[8,16], config.json "
                "implies [16,16] (num_key_value_heads*head_dim, hidden_size)",
                NULL);
}

static void loader_err_not_qwen3(void **state) {
    const char *dir = *state;
    char p[512];
    fx_list_t l = fx_model_list("BF16", 0);
    write_single(dir, &l, p, sizeof p);
    const char *llama =
        "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"vocab_size\":32}";
    assert_int_equal(fx_write_file(fx_path(p, sizeof p, dir, "config.json"), llama, strlen(llama)),
                     0);
    expect_fail(dir,
                "config.json: model_type 'llama' is not supported: kvtier runs Qwen3 dense models "
                "(model_type qwen3)",
                NULL);
}

static void loader_tiny_fixture(void **state) {
    (void)state;
    const char *dir = KVTIER_SOURCE_DIR "/tests/fixtures/tiny-qwen3";
    char p[512];
    struct stat sb;
    if (stat(fx_path(p, sizeof p, dir, "config.json"), &sb) != 0)
        skip();
    qwen3_model_t *m = expect_load(dir);
    assert_true(m->cfg.n_layers > 0);
    assert_true(m->cfg.vocab_size > 0);
    /* every weight is finite */
    for (int64_t i = 0; i < tensor_numel(&m->final_norm); i++) {
        float v = tensor_get_f32(&m->final_norm, i);
        assert_true(v == v && v > -1e30f && v < 1e30f);
    }
    assert_true(qwen3_model_n_params(m) > 0);
    qwen3_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(loader_f32_values, setup, teardown),
        cmocka_unit_test_setup_teardown(loader_bf16_values, setup, teardown),
        cmocka_unit_test_setup_teardown(loader_f16_values, setup, teardown),
        cmocka_unit_test_setup_teardown(loader_sharded, setup, teardown),
        cmocka_unit_test_setup_teardown(loader_sharded_wrong_map, setup, teardown),
        cmocka_unit_test_setup_teardown(loader_tied_head, setup, teardown),
        cmocka_unit_test_setup_teardown(loader_config_styles, setup, teardown),
        cmocka_unit_test_setup_teardown(loader_err_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(loader_err_header_len, setup, teardown),
        cmocka_unit_test_setup_teardown(loader_err_json_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(loader_err_overlap, setup, teardown),
        cmocka_unit_test_setup_teardown(loader_err_shape_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(loader_err_dtype, setup, teardown),
        cmocka_unit_test_setup_teardown(loader_err_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(loader_err_shape_vs_config, setup, teardown),
        cmocka_unit_test_setup_teardown(loader_err_not_qwen3, setup, teardown),
        cmocka_unit_test(loader_tiny_fixture),
    };
    return cmocka_run_group_tests_name("loader_model_load", tests, NULL, NULL);
}
