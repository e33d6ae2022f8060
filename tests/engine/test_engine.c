/* test_engine.c - the generation loop on a random tiny checkpoint: chunked
 * prefill vs token-by-token give the same greedy tokens, stop conditions (EOS
 * ids, stop strings with hold-back, max tokens, context), hooks, a local
 * policy under a budget, option errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "tiny_ckpt.h"

static char *g_dir;
static qwen3_model_t *g_m;

static int setup(void **state) {
    (void)state;
    tiny_cfg c = tiny_cfg_default();
    c.scale = 0.5f; /* sharper logits: more varied greedy text */
    c.eos_id = -1;
    g_dir = tiny_ckpt_make(&c);
    char err[512];
    if (!g_dir || qwen3_model_load(g_dir, 0, &g_m, err, sizeof err) != 0)
        return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    qwen3_model_free(g_m);
    tiny_ckpt_remove(g_dir);
    return 0;
}

static engine_t *mk_engine(int chunk, int threads, int max_ctx) {
    engine_opts_t o;
    engine_opts_defaults(&o);
    o.prefill_chunk = chunk;
    o.threads = threads;
    o.max_context = max_ctx;
    char err[256];
    engine_t *e = engine_new(g_m, &o, err, sizeof err);
    if (!e)
        fail_msg("engine_new: %s", err);
    return e;
}

static const int PROMPT[37] = {5,  17, 3,  88, 41, 9,  9,  60, 12, 77, 30, 2,  51,
                               64, 19, 8,  33, 71, 45, 1,  90, 23, 56, 14, 38, 70,
                               6,  27, 82, 49, 11, 66, 35, 80, 4,  58, 21};

static void gen(engine_t *e, const engine_gen_opts_t *g, engine_result_t *r) {
    char err[256];
    if (engine_generate(e, PROMPT, 37, g, r, err, sizeof err) != 0)
        fail_msg("generate: %s", err);
}

static void test_chunked_equals_token_by_token(void **state) {
    (void)state;
    engine_gen_opts_t g;
    engine_gen_defaults(&g);
    g.max_new_tokens = 64;
    engine_t *a = mk_engine(16, 2, 0), *b = mk_engine(1, 1, 0), *c = mk_engine(256, 2, 0);
    engine_result_t ra, rb, rc;
    gen(a, &g, &ra);
    gen(b, &g, &rb);
    gen(c, &g, &rc);
    assert_int_equal(ra.n_tokens, 64);
    assert_int_equal(ra.stop, ENGINE_STOP_MAX_TOKENS);
    assert_int_equal(ra.decode_steps, 63);
    assert_memory_equal(ra.tokens, rb.tokens, sizeof(int) * 64);
    assert_memory_equal(ra.tokens, rc.tokens, sizeof(int) * 64);
    /* the continuation is not degenerate (one token repeated) */
    int distinct = 0, seen[96] = {0};
    for (int i = 0; i < 64; i++)
        distinct += !seen[ra.tokens[i]]++;
    assert_true(distinct >= 3);
    /* the engine is reusable: same result twice */
    engine_result_t r2;
    gen(a, &g, &r2);
    assert_memory_equal(ra.tokens, r2.tokens, sizeof(int) * 64);
    assert_true(ra.kv_peak_bytes > 0);
    engine_result_free(&ra), engine_result_free(&rb), engine_result_free(&rc),
        engine_result_free(&r2);
    engine_free(a), engine_free(b), engine_free(c);
}

static void test_sampling_seeded(void **state) {
    (void)state;
    engine_gen_opts_t g;
    engine_gen_defaults(&g);
    g.max_new_tokens = 32;
    g.sampling.temperature = 1.0f;
    g.sampling.top_p = 0.95f;
    g.sampling.top_k = 40;
    g.sampling.seed = 1234;
    engine_t *a = mk_engine(0, 2, 0), *b = mk_engine(7, 1, 0);
    engine_result_t ra, rb, rc;
    gen(a, &g, &ra);
    gen(b, &g, &rb); /* other chunking and threads: same tokens */
    assert_memory_equal(ra.tokens, rb.tokens, sizeof(int) * 32);
    g.sampling.seed = 99;
    gen(a, &g, &rc);
    assert_true(memcmp(ra.tokens, rc.tokens, sizeof(int) * 32) != 0);
    engine_result_free(&ra), engine_result_free(&rb), engine_result_free(&rc);
    engine_free(a), engine_free(b);
}

static void test_stop_ids_and_limits(void **state) {
    (void)state;
    engine_t *e = mk_engine(0, 2, 0);
    engine_gen_opts_t g;
    engine_gen_defaults(&g);
    g.max_new_tokens = 40;
    engine_result_t base;
    gen(e, &g, &base);
    /* stop on the token generated at index 5 (its first occurrence) */
    int stop = base.tokens[5], first = 5;
    for (int i = 0; i < 5; i++)
        if (base.tokens[i] == stop) {
            first = i;
            break;
        }
    g.stop_ids = &stop;
    g.n_stop_ids = 1;
    engine_result_t r;
    gen(e, &g, &r);
    assert_int_equal(r.stop, ENGINE_STOP_EOS);
    assert_int_equal(r.n_tokens, first + 1);
    assert_int_equal(r.tokens[first], stop);
    engine_result_free(&r);
    g.ignore_eos = 1;
    gen(e, &g, &r);
    assert_int_equal(r.stop, ENGINE_STOP_MAX_TOKENS);
    assert_int_equal(r.n_tokens, 40);
    engine_result_free(&r);
    engine_free(e);
    /* context limit: 37 prompt + positions up to 45 */
    e = mk_engine(0, 2, 45);
    g.n_stop_ids = 0;
    gen(e, &g, &r);
    assert_int_equal(r.stop, ENGINE_STOP_CONTEXT);
    assert_int_equal(r.n_prompt + r.decode_steps, 45);
    engine_result_free(&r);
    engine_result_free(&base);
    engine_free(e);
}

/* ---- hooks and text */

typedef struct {
    int before_attn, after_prefill, after_step, on_token, stop_after;
    int last_pos;
    char piece[2];
    char streamed[512];
    size_t streamed_len;
} hook_state;

static int h_before(void *ud, engine_t *e, int seq, int layer, int pos0, int n, const float *q) {
    hook_state *h = ud;
    assert_non_null(q);
    assert_true(layer >= 0 && layer < engine_model(e)->cfg.n_layers);
    /* the chunk's K/V are already in the cache when the hook runs */
    assert_int_equal(kvcache_seq_len(engine_kvcache(e), seq, layer), pos0 + n);
    h->before_attn++;
    return 0;
}
static int h_prefill(void *ud, engine_t *e, int seq, int n) {
    (void)e, (void)seq;
    hook_state *h = ud;
    assert_int_equal(n, 37);
    h->after_prefill++;
    return 0;
}
static int h_step(void *ud, engine_t *e, int seq, int step, int pos, int tok) {
    (void)e, (void)seq, (void)tok;
    hook_state *h = ud;
    assert_int_equal(step, h->after_step);
    assert_int_equal(pos, 37 + step);
    h->last_pos = pos;
    h->after_step++;
    return h->stop_after && h->after_step >= h->stop_after ? 1 : 0;
}
static int h_token(void *ud, int tok) {
    (void)tok;
    ((hook_state *)ud)->on_token++;
    return 0;
}
static const char *h_piece(void *ud, int tok, size_t *len) {
    hook_state *h = ud;
    h->piece[0] = (char)('a' + tok % 26);
    *len = 1;
    return h->piece;
}
static void h_text(void *ud, const char *t, size_t n) {
    hook_state *h = ud;
    memcpy(h->streamed + h->streamed_len, t, n);
    h->streamed_len += n;
}

static void test_hooks_and_stop_strings(void **state) {
    (void)state;
    engine_t *e = mk_engine(16, 2, 0);
    hook_state hs = {0};
    engine_gen_opts_t g;
    engine_gen_defaults(&g);
    g.max_new_tokens = 30;
    g.hooks = (engine_hooks_t){.ud = &hs,
                               .before_attention = h_before,
                               .after_prefill = h_prefill,
                               .after_step = h_step,
                               .on_token = h_token,
                               .token_piece = h_piece,
                               .on_text = h_text};
    engine_result_t r;
    gen(e, &g, &r);
    int L = g_m->cfg.n_layers;
    assert_int_equal(hs.after_prefill, 1);
    assert_int_equal(hs.after_step, 29);
    assert_int_equal(hs.on_token, 30);
    assert_int_equal(hs.before_attn, L * (3 + 29)); /* 37 tokens = 3 chunks of 16, then 29 steps */
    assert_int_equal(r.text_len, 30);
    assert_int_equal(hs.streamed_len, 30);
    assert_memory_equal(hs.streamed, r.text, 30);
    for (int i = 0; i < 30; i++)
        assert_int_equal(r.text[i], 'a' + r.tokens[i] % 26);
    /* a stop string taken from the middle of that text: text before it is
     * emitted, the stop string and what follows are not */
    char full[31];
    memcpy(full, r.text, 31);
    char stop[4];
    memcpy(stop, full + 12, 3);
    stop[3] = 0;
    const char *pos = strstr(full, stop);
    size_t at = (size_t)(pos - full);
    const char *stops[2] = {"zzzzzzzzz", stop};
    engine_result_free(&r);
    memset(&hs, 0, sizeof hs);
    g.stop_strings = stops;
    g.n_stop_strings = 2;
    gen(e, &g, &r);
    assert_int_equal(r.stop, ENGINE_STOP_STRING);
    assert_int_equal(r.text_len, at);
    assert_int_equal(hs.streamed_len, at);
    assert_memory_equal(r.text, full, at);
    assert_int_equal(r.n_tokens, (int)at + 3);
    engine_result_free(&r);
    /* a hook asking to stop */
    memset(&hs, 0, sizeof hs);
    g.n_stop_strings = 0;
    hs.stop_after = 4;
    gen(e, &g, &r);
    assert_int_equal(r.stop, ENGINE_STOP_HOOK);
    assert_int_equal(hs.after_step, 4);
    assert_int_equal(r.n_tokens, 4); /* the token of the last step ran; no new one is sampled */
    engine_result_free(&r);
    engine_free(e);
}

static void test_window_policy_budget(void **state) {
    (void)state;
    engine_t *e = mk_engine(16, 2, 0);
    engine_gen_opts_t g;
    engine_gen_defaults(&g);
    g.max_new_tokens = 120; /* 37 + 120 positions = 10 blocks */
    g.stats = 1;
    local_policy_defaults(&g.policy, LP_WINDOW);
    g.policy.hot_blocks = 6; /* > sink + R = 5, so the window really bounds it */
    engine_result_t r;
    gen(e, &g, &r);
    assert_int_equal(r.n_tokens, 120);
    for (int l = 0; l < r.n_layers; l++) {
        assert_int_equal(r.layer_blocks[l], 10);
        if (r.layer_hot_blocks[l] > 6)
            fail_msg("layer %d: %d hot blocks of %d, budget 6", l, r.layer_hot_blocks[l],
                     r.layer_blocks[l]);
        assert_true(r.layer_active_mean[l] > 0);
        assert_true(r.layer_active_max[l] <= 7); /* hot blocks + the new tail at most */
    }
    engine_result_free(&r);
    /* full cache: every block stays hot */
    engine_gen_defaults(&g);
    g.max_new_tokens = 120;
    g.stats = 1;
    gen(e, &g, &r);
    for (int l = 0; l < r.n_layers; l++)
        assert_int_equal(r.layer_hot_blocks[l], 10);
    engine_result_free(&r);
    engine_free(e);
}

static void test_errors(void **state) {
    (void)state;
    engine_t *e = mk_engine(0, 1, 40);
    engine_gen_opts_t g;
    engine_gen_defaults(&g);
    engine_result_t r;
    char err[256];
    int bad[2] = {3, 96};
    assert_int_equal(engine_generate(e, bad, 2, &g, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "outside the vocabulary"));
    engine_result_free(&r);
    assert_int_equal(engine_generate(e, bad, 0, &g, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "empty"));
    engine_result_free(&r);
    assert_int_equal(engine_generate(e, PROMPT, 37, &g, &r, err, sizeof err), 0); /* fits */
    engine_result_free(&r);
    int longp[40] = {0};
    assert_int_equal(engine_generate(e, longp, 40, &g, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "context"));
    engine_result_free(&r);
    g.sampling.temperature = -1;
    assert_int_equal(engine_generate(e, PROMPT, 3, &g, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "temperature"));
    engine_result_free(&r);
    engine_gen_defaults(&g);
    g.max_new_tokens = 0;
    assert_int_equal(engine_generate(e, PROMPT, 3, &g, &r, err, sizeof err), -1);
    engine_result_free(&r);
    engine_free(e);
    engine_opts_t o;
    engine_opts_defaults(&o);
    o.kv_dtype = DT_F16;
    assert_null(engine_new(g_m, &o, err, sizeof err));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunked_equals_token_by_token),
        cmocka_unit_test(test_sampling_seeded),
        cmocka_unit_test(test_stop_ids_and_limits),
        cmocka_unit_test(test_hooks_and_stop_strings),
        cmocka_unit_test(test_window_policy_budget),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
