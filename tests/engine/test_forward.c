/* test_forward.c - the forward pass on random tiny checkpoints against a naive
 * double-precision reference (tiny_ref_forward), the GEMM path against the
 * matvec path, and chunked prefill against token-by-token. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "kvcache.h"
#include "tiny_ckpt.h"

typedef struct {
    char *dir;
    qwen3_model_t *m;
    threadpool_t *tp;
} fx;

static fx fx_open(const tiny_cfg *c, int threads) {
    fx f = {0};
    f.dir = tiny_ckpt_make(c);
    assert_non_null(f.dir);
    char err[512];
    if (qwen3_model_load(f.dir, 0, &f.m, err, sizeof err) != 0)
        fail_msg("load: %s", err);
    f.tp = tp_new(threads);
    return f;
}

static void fx_close(fx *f) {
    qwen3_model_free(f->m);
    tp_free(f->tp);
    tiny_ckpt_remove(f->dir);
}

static kvcache_t *kv_for(const qwen3_model_t *m, dtype_t dt) {
    kvcache_opts o = {.n_layers = m->cfg.n_layers,
                      .n_kv_heads = m->cfg.n_kv_heads,
                      .head_dim = m->cfg.head_dim,
                      .n_heads = m->cfg.n_heads,
                      .kv_dtype = dt};
    char err[256];
    kvcache_t *kv = kvcache_new(&o, err, sizeof err);
    if (!kv)
        fail_msg("kvcache_new: %s", err);
    return kv;
}

/* logits[n][V] of ids through the engine's forward pass: chunk = max chunk,
 * step = tokens per fwd_run call. */
static float *run_fwd(fx *f, const int *ids, int n, int chunk, int step, fwd_path_t path,
                      dtype_t kvdt) {
    char err[512];
    fwd_t *fw = fwd_new(f->m, f->tp, chunk, err, sizeof err);
    assert_non_null(fw);
    fwd_set_path(fw, path);
    kvcache_t *kv = kv_for(f->m, kvdt);
    int seq = kvcache_seq_new(kv);
    size_t V = (size_t)f->m->cfg.vocab_size;
    float *lg = malloc(sizeof(float) * V * (size_t)n);
    for (int p = 0; p < n; p += step) {
        int m = n - p < step ? n - p : step;
        if (fwd_run(fw, kv, seq, ids + p, m, p, lg + (size_t)p * V, 1, NULL, err, sizeof err) != 0)
            fail_msg("fwd_run: %s", err);
    }
    assert_int_equal(kvcache_seq_len(kv, seq, 0), n);
    kvcache_free(kv);
    fwd_free(fw);
    return lg;
}

/* max |a - ref| over all rows, relative to the reference's logit range. */
static double rel_diff(const float *a, const double *ref, int n, int V) {
    double worst = 0;
    for (int t = 0; t < n; t++) {
        double lo = INFINITY, hi = -INFINITY, md = 0;
        for (int i = 0; i < V; i++) {
            double r = ref[(size_t)t * V + i];
            lo = r < lo ? r : lo, hi = r > hi ? r : hi;
            double d = fabs(a[(size_t)t * V + i] - r);
            md = d > md ? d : md;
        }
        double rel = md / (hi - lo);
        worst = rel > worst ? rel : worst;
    }
    return worst;
}

static void ids_for(int *ids, int n, int V, unsigned seed) {
    for (int i = 0; i < n; i++)
        ids[i] = (int)((i * 7919u + seed * 104729u + (unsigned)(i * i)) % (unsigned)V);
}

static void check_against_ref(const tiny_cfg *c, dtype_t kvdt, double tol) {
    fx f = fx_open(c, 2);
    int n = 45, V = f.m->cfg.vocab_size;
    int ids[45];
    ids_for(ids, n, V, 3);
    double *ref = malloc(sizeof(double) * (size_t)n * V);
    tiny_ref_forward(f.m, ids, n, ref);
    float *gemm = run_fwd(&f, ids, n, 16, n, FWD_PATH_AUTO, kvdt); /* 3 chunks */
    float *mv = run_fwd(&f, ids, n, 16, n, FWD_PATH_MATVEC, kvdt);
    float *tok = run_fwd(&f, ids, n, 16, 1, FWD_PATH_AUTO, kvdt); /* decode path */
    double dg = rel_diff(gemm, ref, n, V), dm = rel_diff(mv, ref, n, V),
           dt = rel_diff(tok, ref, n, V);
    print_message("  %s weights, %s KV: rel diff gemm %.2e matvec %.2e token-by-token %.2e\n",
                  dtype_name(c->dtype), dtype_name(kvdt), dg, dm, dt);
    assert_true(dg <= tol);
    assert_true(dm <= tol);
    assert_true(dt <= tol);
    free(ref), free(gemm), free(mv), free(tok);
    fx_close(&f);
}

static void test_f32_matches_reference(void **state) {
    (void)state;
    tiny_cfg c = tiny_cfg_default();
    check_against_ref(&c, DT_F32, 1e-4);
}

static void test_bf16_untied_matches_reference(void **state) {
    (void)state;
    tiny_cfg c = tiny_cfg_default();
    c.dtype = DT_BF16;
    c.tied = 0;
    c.layers = 3;
    c.heads = 8;
    c.kv_heads = 2; /* GQA 4:1 */
    c.seed = 9;
    c.rope_theta = 1e6;
    check_against_ref(&c, DT_F32, 1e-4);
}

static void test_f16_weights_bf16_kv(void **state) {
    (void)state;
    tiny_cfg c = tiny_cfg_default();
    c.dtype = DT_F16;
    c.seed = 5;
    check_against_ref(&c, DT_BF16, 2e-2); /* bf16 K/V: ~3 significant digits */
}

static void test_wide_head_dim(void **state) {
    (void)state;
    tiny_cfg c = tiny_cfg_default();
    c.head_dim = 128; /* the real Qwen3 head size: SIMD paths of attention and norms */
    c.hidden = 128;
    c.heads = 2;
    c.kv_heads = 1;
    c.seed = 11;
    check_against_ref(&c, DT_F32, 1e-4);
}

static void test_bad_token(void **state) {
    (void)state;
    tiny_cfg c = tiny_cfg_default();
    fx f = fx_open(&c, 1);
    char err[256];
    fwd_t *fw = fwd_new(f.m, f.tp, 8, err, sizeof err);
    kvcache_t *kv = kv_for(f.m, DT_F32);
    int seq = kvcache_seq_new(kv);
    int ids[2] = {1, c.vocab};
    float *lg = malloc(sizeof(float) * (size_t)c.vocab);
    assert_int_equal(fwd_run(fw, kv, seq, ids, 2, 0, lg, 0, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "outside the vocabulary"));
    assert_int_equal(fwd_run(fw, kv, seq, ids, 0, 0, lg, 0, NULL, err, sizeof err), -1);
    /* a position that is not the sequence's length is refused by the cache */
    assert_int_equal(fwd_run(fw, kv, seq, ids, 1, 5, lg, 0, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "KV append"));
    free(lg);
    kvcache_free(kv);
    fwd_free(fw);
    fx_close(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f32_matches_reference),
        cmocka_unit_test(test_bf16_untied_matches_reference),
        cmocka_unit_test(test_f16_weights_bf16_kv),
        cmocka_unit_test(test_wide_head_dim),
        cmocka_unit_test(test_bad_token),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
