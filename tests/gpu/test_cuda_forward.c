/* test_cuda_forward.c - the CUDA forward pass against the CPU one: logits of
 * the fixture's golden prompts (prefill rows and greedy decode steps) within
 * bf16 tolerance (max |gpu - cpu| <= 1e-2 * max |cpu| per row), identical
 * greedy tokens through engine_generate, per-layer active-set statistics,
 * the device copies of the KV blocks byte-identical to the host cache (the
 * bytes a tier gets), a random BF16 checkpoint, and the checkpoints named in
 * $KVTIER_GPU_MODELS (colon-separated dirs, e.g. random Qwen3-0.6B / 4B).
 * Exits 77 without a CUDA build or a visible GPU. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "engine.h"
#include "forward.h"
#include "kvcache.h"
#include "tiny_ckpt.h"

#ifdef KVTIER_HAVE_CUDA
#include "cuda_forward.h"
#include "cuda_kv.h"

#define MAXP 8
static int g_np, g_n[MAXP], *g_ids[MAXP];

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void load_prompts(void) {
    FILE *f = fopen(KVTIER_FIXTURE_DIR "/golden.json", "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    cJSON *j = cJSON_Parse(b), *ps = cJSON_GetObjectItem(j, "prompts"), *p;
    assert_non_null(ps);
    cJSON_ArrayForEach(p, ps) {
        if (g_np == MAXP)
            break;
        cJSON *ids = cJSON_GetObjectItem(p, "token_ids");
        g_n[g_np] = cJSON_GetArraySize(ids);
        g_ids[g_np] = malloc(sizeof(int) * (size_t)g_n[g_np]);
        for (int i = 0; i < g_n[g_np]; i++)
            g_ids[g_np][i] = cJSON_GetArrayItem(ids, i)->valueint;
        g_np++;
    }
    cJSON_Delete(j);
    free(b);
}

static double rel_err(const float *ref, const float *x, int n) {
    double d = 0, m = 0;
    for (int i = 0; i < n; i++) {
        d = fmax(d, fabs((double)ref[i] - x[i]));
        m = fmax(m, fabs((double)ref[i]));
    }
    return m > 0 ? d / m : d;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

static kvcache_t *new_kv(const qwen3_model_t *m) {
    kvcache_opts o = {.n_layers = m->cfg.n_layers,
                      .n_kv_heads = m->cfg.n_kv_heads,
                      .head_dim = m->cfg.head_dim,
                      .n_heads = m->cfg.n_heads,
                      .kv_dtype = m->cfg.dtype == DT_BF16 ? DT_BF16 : DT_F32};
    char err[256];
    kvcache_t *kv = kvcache_new(&o, err, sizeof err);
    assert_non_null(kv);
    return kv;
}

/* Every hot block's device copy equals its host payload. */
static void check_device_blocks(fwd_t *g, kvcache_t *kv, int seq, int layers) {
    cuda_kv_t *ck = cuda_fwd_kv(fwd_device(g));
    const size_t bb = kvcache_block_bytes(kv);
    char *dev = malloc(bb), err[256];
    int same = 0;
    for (int l = 0; l < layers; l++)
        for (int b = 0; b < kvcache_seq_blocks(kv, seq, l); b++) {
            int rc = cuda_kv_block_read(ck, seq, l, b, dev, bb, err, sizeof err);
            assert_int_not_equal(rc, -1);
            if (rc)
                continue;
            void *host = NULL;
            size_t len;
            assert_int_equal(kvcache_block_take(kv, seq, l, b, &host, &len), KV_OK);
            assert_memory_equal(host, dev, bb);
            assert_int_equal(kvcache_block_put(kv, seq, l, b, host, len), KV_OK);
            free(host);
            same++;
        }
    assert_true(same > 0);
    free(dev);
}

/* Prefill (all rows' logits) then `steps` greedy steps on the CPU's tokens,
 * CPU vs GPU. Returns the worst relative error; counts argmax disagreements. */
static double compare_model(const qwen3_model_t *m, const int *ids, int n, int steps, int *mismatch,
                            int check_blocks, int stats) {
    char err[512] = "";
    const int V = m->cfg.vocab_size;
    threadpool_t *tp = tp_new(0); /* the CPU reference on every core (4B shapes) */
    fwd_t *c = fwd_new(m, tp, 64, err, sizeof err);
    assert_non_null(c);
    fwd_t *g = backend_fwd_new(m, NULL, 64, BACKEND_CUDA, NULL, err, sizeof err);
    if (!g)
        fail_msg("%s", err);
    assert_string_equal(fwd_device_name(g), "cuda");
    kvcache_t *kc = new_kv(m), *kg = new_kv(m);
    int sc = kvcache_seq_new(kc), sg = kvcache_seq_new(kg);
    if (stats) { /* summaries on: the layer-by-layer path through kvcache_attend */
        assert_int_equal(kvcache_seq_stats(kc, sc, 1, 0, 0), KV_OK);
        assert_int_equal(kvcache_seq_stats(kg, sg, 1, 0, 0), KV_OK);
    }
    float *lc = malloc(sizeof(float) * (size_t)n * V), *lg = malloc(sizeof(float) * (size_t)n * V);
    double worst = 0, t0 = now_s();
    if (fwd_run(c, kc, sc, ids, n, 0, lc, 1, NULL, err, sizeof err))
        fail_msg("cpu: %s", err);
    double t1 = now_s();
    if (fwd_run(g, kg, sg, ids, n, 0, lg, 1, NULL, err, sizeof err))
        fail_msg("gpu: %s", err);
    double t2 = now_s();
    *mismatch = 0;
    for (int i = 0; i < n; i++) {
        worst = fmax(worst, rel_err(lc + (size_t)i * V, lg + (size_t)i * V, V));
        *mismatch += argmax(lc + (size_t)i * V, V) != argmax(lg + (size_t)i * V, V);
    }
    if (check_blocks)
        check_device_blocks(g, kg, sg, m->cfg.n_layers);
    int tok = argmax(lc + (size_t)(n - 1) * V, V);
    for (int s = 0; s < steps; s++) {
        if (fwd_run(c, kc, sc, &tok, 1, n + s, lc, 0, NULL, err, sizeof err) ||
            fwd_run(g, kg, sg, &tok, 1, n + s, lg, 0, NULL, err, sizeof err))
            fail_msg("decode step %d: %s", s, err);
        worst = fmax(worst, rel_err(lc, lg, V));
        *mismatch += argmax(lc, V) != argmax(lg, V);
        tok = argmax(lc, V);
    }
    cuda_fwd_info_t info;
    cuda_fwd_get_info(fwd_device(g), &info);
    if (stats)
        assert_true(info.slow_chunks > 0 && info.fast_chunks == 0);
    else
        assert_true(info.fast_chunks > 0 && info.slow_chunks == 0);
    if (stats) { /* the masses the summaries got, per layer and block */
        for (int l = 0; l < m->cfg.n_layers; l++) {
            int nbc, nbg;
            const summary_block_t *bc = summary_layer_blocks(kvcache_summary(kc, sc), l, &nbc);
            const summary_block_t *bg = summary_layer_blocks(kvcache_summary(kg, sg), l, &nbg);
            assert_int_equal(nbc, nbg);
            for (int b = 0; b < nbc; b++)
                if (fabsf(bc[b].peak_mass - bg[b].peak_mass) > 1e-3f)
                    fail_msg("layer %d block %d: peak mass cpu %g gpu %g", l, b, bc[b].peak_mass,
                             bg[b].peak_mass);
        }
    }
    printf("  %d-token prefill (%s path): cpu %.3f s, gpu %.3f s; %d decode steps; worst rel err "
           "%.3g, argmax mismatches %d\n",
           n, stats ? "layer-by-layer" : "fast", t1 - t0, t2 - t1, steps, worst, *mismatch);
    free(lc), free(lg);
    kvcache_free(kc), kvcache_free(kg);
    fwd_free(c), fwd_free(g);
    tp_free(tp);
    return worst;
}

static void test_fixture_logits(void **state) {
    (void)state;
    char err[512];
    qwen3_model_t *m = NULL;
    assert_int_equal(qwen3_model_load(KVTIER_FIXTURE_DIR, 0, &m, err, sizeof err), 0);
    for (int p = 0; p < g_np; p++) {
        int mm;
        double e = compare_model(m, g_ids[p], g_n[p], 16, &mm, p < 2, p % 2);
        if (e > 1e-2)
            fail_msg("prompt %d: relative logit error %g > 1e-2", p, e);
        assert_int_equal(mm, 0);
    }
    qwen3_model_free(m);
}

/* engine_generate, greedy, stats on: the same tokens and active sets. */
static void test_fixture_greedy(void **state) {
    (void)state;
    char err[512];
    qwen3_model_t *m = NULL;
    assert_int_equal(qwen3_model_load(KVTIER_FIXTURE_DIR, 0, &m, err, sizeof err), 0);
    engine_opts_t oc, og;
    engine_opts_defaults(&oc);
    oc.threads = 4;
    og = oc;
    og.backend = BACKEND_CUDA;
    engine_t *ec = engine_new(m, &oc, err, sizeof err), *eg = engine_new(m, &og, err, sizeof err);
    assert_non_null(ec);
    if (!eg)
        fail_msg("%s", err);
    assert_int_equal(engine_backend(eg), BACKEND_CUDA);
    for (int p = 0; p < 2 * g_np; p++) {
        engine_gen_opts_t g;
        engine_gen_defaults(&g);
        g.max_new_tokens = 64;
        g.ignore_eos = 1;
        g.stats = p < g_np; /* then again without: the fast path */
        engine_result_t rc, rg;
        const int *ids = g_ids[p % g_np], nid = g_n[p % g_np];
        assert_int_equal(engine_generate(ec, ids, nid, &g, &rc, err, sizeof err), 0);
        if (engine_generate(eg, ids, nid, &g, &rg, err, sizeof err))
            fail_msg("gpu generate: %s", err);
        assert_int_equal(rc.n_tokens, rg.n_tokens);
        assert_memory_equal(rc.tokens, rg.tokens, sizeof(int) * (size_t)rc.n_tokens);
        for (int l = 0; g.stats && l < rc.n_layers; l++)
            if (fabs(rc.layer_active_mean[l] - rg.layer_active_mean[l]) > 0.5)
                fail_msg("prompt %d layer %d: mean active set cpu %.2f gpu %.2f", p, l,
                         rc.layer_active_mean[l], rg.layer_active_mean[l]);
        printf("  prompt %d: %d tokens identical; decode cpu %.1f tok/s, gpu %.1f tok/s\n", p,
               rc.n_tokens, rc.decode_steps / rc.decode_s, rg.decode_steps / rg.decode_s);
        engine_result_free(&rc);
        engine_result_free(&rg);
    }
    engine_free(ec);
    engine_free(eg);
    qwen3_model_free(m);
}

/* A cache filled by the CPU forward pass, continued on the GPU: the first
 * step uploads the blocks (layer by layer), the next ones take the fast path. */
static void test_cpu_then_gpu(void **state) {
    (void)state;
    char err[512];
    qwen3_model_t *m = NULL;
    assert_int_equal(qwen3_model_load(KVTIER_FIXTURE_DIR, 0, &m, err, sizeof err), 0);
    const int V = m->cfg.vocab_size, n = g_n[0];
    fwd_t *c = fwd_new(m, NULL, 64, err, sizeof err);
    fwd_t *g = backend_fwd_new(m, NULL, 64, BACKEND_CUDA, NULL, err, sizeof err);
    assert_non_null(c);
    if (!g)
        fail_msg("%s", err);
    kvcache_t *kc = new_kv(m), *kg = new_kv(m);
    int sc = kvcache_seq_new(kc), sg = kvcache_seq_new(kg);
    float *lc = malloc(sizeof(float) * V), *lg = malloc(sizeof(float) * V);
    assert_int_equal(fwd_run(c, kc, sc, g_ids[0], n, 0, lc, 0, NULL, err, sizeof err), 0);
    assert_int_equal(fwd_run(c, kg, sg, g_ids[0], n, 0, lg, 0, NULL, err, sizeof err), 0);
    int tok = argmax(lc, V);
    for (int s = 0; s < 8; s++) {
        assert_int_equal(fwd_run(c, kc, sc, &tok, 1, n + s, lc, 0, NULL, err, sizeof err), 0);
        if (fwd_run(g, kg, sg, &tok, 1, n + s, lg, 0, NULL, err, sizeof err))
            fail_msg("step %d: %s", s, err);
        double e = rel_err(lc, lg, V);
        if (e > 1e-2 || argmax(lc, V) != argmax(lg, V))
            fail_msg("step %d: relative error %g, argmax cpu %d gpu %d", s, e, argmax(lc, V),
                     argmax(lg, V));
        tok = argmax(lc, V);
    }
    cuda_fwd_info_t info;
    cuda_fwd_get_info(fwd_device(g), &info);
    assert_int_equal(info.slow_chunks, 1);
    assert_int_equal(info.fast_chunks, 7);
    assert_true(info.kv_uploads > 0);
    free(lc), free(lg);
    kvcache_free(kc), kvcache_free(kg);
    fwd_free(c), fwd_free(g);
    qwen3_model_free(m);
}

/* A random BF16 checkpoint: weights stay bf16 on the device (gemv and the
 * split bf16 GEMM). */
static void test_random_bf16(void **state) {
    (void)state;
    tiny_cfg c = tiny_cfg_default();
    c.dtype = DT_BF16;
    c.hidden = 128;
    c.inter = 256;
    c.head_dim = 32;
    c.vocab = 512;
    c.layers = 3;
    char *dir = tiny_ckpt_make(&c), err[512];
    qwen3_model_t *m = NULL;
    assert_int_equal(qwen3_model_load(dir, 0, &m, err, sizeof err), 0);
    int ids[150];
    for (int i = 0; i < 150; i++)
        ids[i] = (i * 37 + 11) % c.vocab;
    int mm;
    double e = compare_model(m, ids, 150, 8, &mm, 1, 0);
    if (e > 1e-2)
        fail_msg("relative logit error %g > 1e-2", e);
    e = compare_model(m, ids, 150, 8, &mm, 1, 1);
    if (e > 1e-2)
        fail_msg("relative logit error %g > 1e-2", e);
    qwen3_model_free(m);
    tiny_ckpt_remove(dir);
}

/* $KVTIER_GPU_MODELS: real shapes (random weights): 200-token prefill, 8 steps. */
static void test_env_models(void **state) {
    (void)state;
    const char *env = getenv("KVTIER_GPU_MODELS");
    char *list = strdup(env), *save = NULL;
    for (char *d = strtok_r(list, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char err[512];
        qwen3_model_t *m = NULL;
        if (qwen3_model_load(d, 0, &m, err, sizeof err))
            fail_msg("%s", err);
        int ids[200];
        for (int i = 0; i < 200; i++)
            ids[i] = (i * 7919 + 13) % m->cfg.vocab_size;
        printf("  %s:\n", d);
        int mm;
        double e = compare_model(m, ids, 200, 8, &mm, 0, 0);
        if (e > 1e-2)
            fail_msg("%s: relative logit error %g > 1e-2", d, e);
        qwen3_model_free(m);
    }
    free(list);
}
#endif

int main(void) {
    char why[256] = "";
    if (backend_cuda_devices(why, sizeof why) == 0) {
        printf("SKIP: %s\n", why);
        return 77;
    }
#ifdef KVTIER_HAVE_CUDA
    load_prompts();
    /* $KVTIER_GPU_MODELS: only those checkpoints; $KVTIER_GPU_QUICK: the
     * shorter set (under compute-sanitizer); else the fixture checks */
    const char *models = getenv("KVTIER_GPU_MODELS"), *quick = getenv("KVTIER_GPU_QUICK");
    if (models && *models) {
        const struct CMUnitTest only[] = {cmocka_unit_test(test_env_models)};
        return cmocka_run_group_tests(only, NULL, NULL);
    }
    if (quick && *quick) {
        const struct CMUnitTest some[] = {
            cmocka_unit_test(test_fixture_logits),
            cmocka_unit_test(test_cpu_then_gpu),
            cmocka_unit_test(test_random_bf16),
        };
        return cmocka_run_group_tests(some, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_logits),
        cmocka_unit_test(test_fixture_greedy),
        cmocka_unit_test(test_cpu_then_gpu),
        cmocka_unit_test(test_random_bf16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
#else
    return 77;
#endif
}
