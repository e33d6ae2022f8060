/* test_cuda_attention.c - the GPU attention (worker/cuda/cuda_kv.c) against
 * the CPU kernels on the same KV cache contents: f32 and bf16 blocks, the
 * fixture's and Qwen3's head shapes, decode rows and prefill rows, with
 * blocks taken out (skipped exactly), lent back and dropped. Compared:
 * outputs, per-block masses (summary peak / cumulative mass within 1e-3),
 * revival candidates (from the log-sum-exp of the same pass), and the device
 * copies of the blocks (byte-identical to the host payloads). Exits 77 when
 * the build has no CUDA backend or no GPU is visible. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "kvcache.h"

#ifdef KVTIER_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "cuda_kv.h"

typedef struct {
    int nh, nkv, hd;
    dtype_t dt;
} shape_t;

static uint64_t g_rng = 0x9e3779b97f4a7c15ULL;
static float frand(void) {
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((g_rng >> 33) % 20001) / 10000.0f - 1.0f;
}

/* A cache with npos random positions (the same for the same seed). */
static kvcache_t *make_kv(const shape_t *s, int npos, uint64_t seed, int *seq) {
    kvcache_opts o = {.n_layers = 1,
                      .n_kv_heads = s->nkv,
                      .head_dim = s->hd,
                      .n_heads = s->nh,
                      .kv_dtype = s->dt};
    char err[256];
    kvcache_t *kv = kvcache_new(&o, err, sizeof err);
    assert_non_null(kv);
    *seq = kvcache_seq_new(kv);
    assert_int_equal(kvcache_seq_stats(kv, *seq, 1, 0.95f, 16), KV_OK);
    assert_int_equal(kvcache_seq_set_revival(kv, *seq, KV_REVIVAL_TAU), KV_OK);
    g_rng = seed;
    const int w = s->nkv * s->hd;
    float *k = malloc(sizeof(float) * w), *v = malloc(sizeof(float) * w);
    for (int p = 0; p < npos; p++) {
        for (int i = 0; i < w; i++) {
            k[i] = 2.0f * frand() + (i % 7 == 0 ? 1.5f : 0.0f); /* some structure in the keys */
            v[i] = frand();
        }
        assert_int_equal(kvcache_append(kv, *seq, 0, p, k, v), KV_OK);
    }
    free(k), free(v);
    return kv;
}

/* Blocks 2 and 5 out, 5 lent back, 7 dropped (when they exist). */
static void *shape_blocks(kvcache_t *kv, int seq) {
    void *b2 = NULL, *b5 = NULL;
    size_t len;
    if (kvcache_seq_blocks(kv, seq, 0) > 7) {
        assert_int_equal(kvcache_block_take(kv, seq, 0, 2, &b2, &len), KV_OK);
        assert_int_equal(kvcache_block_take(kv, seq, 0, 5, &b5, &len), KV_OK);
        assert_int_equal(kvcache_block_lend(kv, seq, 0, 5, b5, len), KV_OK);
        assert_int_equal(kvcache_block_drop(kv, seq, 0, 7), KV_OK);
    }
    free(b2);
    return b5; /* lent: must outlive the cache's use */
}

static float max_abs(const float *a, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmaxf(m, fabsf(a[i]));
    return m;
}

static void check_case(const shape_t *s, int npos, int nq) {
    int seq_c, seq_g;
    kvcache_t *kc = make_kv(s, npos, 42, &seq_c), *kg = make_kv(s, npos, 42, &seq_g);
    void *lent_c = shape_blocks(kc, seq_c), *lent_g = shape_blocks(kg, seq_g);
    cudaStream_t st;
    assert_int_equal(cudaStreamCreate(&st), cudaSuccess);
    char err[512] = "";
    cuda_kv_t *ck = cuda_kv_new(1, s->nh, s->nkv, s->hd, st, err, sizeof err);
    if (!ck)
        fail_msg("%s", err);
    if (cuda_kv_attach(ck, kg, err, sizeof err))
        fail_msg("%s", err);
    const size_t qn = (size_t)nq * s->nh * s->hd;
    float *q = malloc(sizeof(float) * qn), *oc = malloc(sizeof(float) * qn),
          *og = malloc(sizeof(float) * qn);
    for (int step = 0; step < 3; step++) { /* three attends: later ones reuse the device copies */
        for (size_t i = 0; i < qn; i++)
            q[i] = 1.5f * frand();
        assert_int_equal(kvcache_attend(kc, seq_c, 0, q, nq, npos - nq, oc, NULL), KV_OK);
        int rc = kvcache_attend(kg, seq_g, 0, q, nq, npos - nq, og, NULL);
        if (rc != KV_OK)
            fail_msg("GPU attend: %s", kvcache_errmsg(kg));
        const float scale = max_abs(oc, qn);
        for (size_t i = 0; i < qn; i++)
            if (fabsf(oc[i] - og[i]) > 1e-4f * (scale > 1 ? scale : 1))
                fail_msg("heads %d/%d hd %d %s npos %d nq %d: out[%zu] cpu %g gpu %g", s->nh,
                         s->nkv, s->hd, s->dt == DT_BF16 ? "bf16" : "f32", npos, nq, i, oc[i],
                         og[i]);
        int nb_c, nb_g;
        const summary_block_t *bc = summary_layer_blocks(kvcache_summary(kc, seq_c), 0, &nb_c);
        const summary_block_t *bg = summary_layer_blocks(kvcache_summary(kg, seq_g), 0, &nb_g);
        assert_int_equal(nb_c, nb_g);
        for (int b = 0; b < nb_c; b++) {
            if (fabsf(bc[b].peak_mass - bg[b].peak_mass) > 1e-3f ||
                fabsf(bc[b].cum_mass - bg[b].cum_mass) > 1e-3f * (1 + bc[b].cum_mass))
                fail_msg("block %d: peak mass cpu %g gpu %g, cum cpu %g gpu %g", b, bc[b].peak_mass,
                         bg[b].peak_mass, bc[b].cum_mass, bg[b].cum_mass);
        }
        if (npos > 7 * 16) {
            assert_true(bg[2].cum_mass == 0.0f); /* out: skipped exactly */
            assert_true(bg[7].cum_mass == 0.0f); /* dropped */
            assert_true(bg[5].cum_mass > 0.0f);  /* lent: read */
        }
        int rc_c[64], rc_g[64];
        int nc = kvcache_revival_last(kc, seq_c, 0, rc_c, 64),
            ng = kvcache_revival_last(kg, seq_g, 0, rc_g, 64);
        assert_int_equal(nc, ng);
        for (int i = 0; i < nc && i < 64; i++)
            assert_int_equal(rc_c[i], rc_g[i]);
    }
    /* exact-mode revival check: its hot pass (log-sum-exp only) runs on the
     * GPU too and leaves the lent block's device copy in place */
    const float *qlast = q + (size_t)(nq - 1) * s->nh * s->hd;
    int cc[64], cg[64];
    float mc, mg;
    int nc = kvcache_revival_candidates(kc, seq_c, 0, qlast, npos - 1, KV_REVIVAL_TAU, cc, 64, &mc,
                                        NULL);
    int ng = kvcache_revival_candidates(kg, seq_g, 0, qlast, npos - 1, KV_REVIVAL_TAU, cg, 64, &mg,
                                        NULL);
    assert_int_equal(nc, ng);
    for (int i = 0; i < nc && i < 64; i++)
        assert_int_equal(cc[i], cg[i]);
    if (isfinite(mc))
        assert_true(fabsf(mc - mg) <= 1e-3f * (1 + fabsf(mc)));
    const size_t bb = kvcache_block_bytes(kg);
    char *dev = malloc(bb);
    if (npos > 7 * 16) {
        assert_int_equal(cuda_kv_block_read(ck, seq_g, 0, 5, dev, bb, err, sizeof err), 0);
        assert_memory_equal(dev, lent_g, bb);
    }
    /* the device copies are the host payloads, byte for byte */
    int checked = 0;
    for (int b = 0; b < kvcache_seq_blocks(kg, seq_g, 0); b++) {
        if (kvcache_block_state(kg, seq_g, 0, b) != KV_BLOCK_HOT)
            continue;
        int rc = cuda_kv_block_read(ck, seq_g, 0, b, dev, bb, err, sizeof err);
        assert_int_not_equal(rc, -1);
        if (rc == 1)
            continue;
        void *host = NULL;
        size_t len = 0;
        assert_int_equal(kvcache_block_take(kg, seq_g, 0, b, &host, &len), KV_OK);
        assert_memory_equal(host, dev, bb);
        assert_int_equal(kvcache_block_put(kg, seq_g, 0, b, host, len), KV_OK);
        free(host);
        checked++;
    }
    assert_true(checked > 0);
    cuda_kv_stats_t stt;
    cuda_kv_get_stats(ck, &stt);
    assert_true(stt.uploads > 0); /* these blocks came from the host */
    free(dev);
    free(q), free(oc), free(og);
    kvcache_free(kc);
    kvcache_free(kg); /* detaches ck */
    cuda_kv_free(ck);
    free(lent_c), free(lent_g);
    cudaStreamDestroy(st);
}

static void test_fixture_shape(void **state) {
    (void)state;
    const shape_t f32 = {4, 2, 48, DT_F32}, b16 = {4, 2, 48, DT_BF16};
    check_case(&f32, 300, 1);
    check_case(&f32, 300, 20);
    check_case(&b16, 300, 1);
    check_case(&b16, 37, 37); /* a whole prompt: causal rows over partial blocks */
}

static void test_qwen3_shapes(void **state) {
    (void)state;
    const shape_t s06 = {16, 8, 128, DT_BF16}, s4 = {32, 8, 128, DT_BF16};
    check_case(&s06, 1000, 1);
    check_case(&s4, 1000, 1);
    check_case(&s4, 4100, 1); /* many splits */
    check_case(&s4, 600, 64);
}

/* Without a device-side payload the provider declines (debug capture): the
 * CPU answer, unchanged. */
static void test_declines_debug_capture(void **state) {
    (void)state;
    const shape_t s = {4, 2, 48, DT_F32};
    int seq_c, seq_g;
    kvcache_t *kc = make_kv(&s, 50, 7, &seq_c), *kg = make_kv(&s, 50, 7, &seq_g);
    assert_int_equal(kvcache_debug_enable(kg, seq_g, 1), KV_OK);
    assert_int_equal(kvcache_debug_enable(kc, seq_c, 1), KV_OK);
    cudaStream_t st;
    assert_int_equal(cudaStreamCreate(&st), cudaSuccess);
    char err[256];
    cuda_kv_t *ck = cuda_kv_new(1, 4, 2, 48, st, err, sizeof err);
    assert_non_null(ck);
    assert_int_equal(cuda_kv_attach(ck, kg, err, sizeof err), 0);
    float q[4 * 48], oc[4 * 48], og[4 * 48];
    for (int i = 0; i < 4 * 48; i++)
        q[i] = frand();
    assert_int_equal(kvcache_attend(kc, seq_c, 0, q, 1, 49, oc, NULL), KV_OK);
    assert_int_equal(kvcache_attend(kg, seq_g, 0, q, 1, 49, og, NULL), KV_OK);
    assert_memory_equal(oc, og, sizeof oc);
    assert_int_equal(cuda_kv_last_on_device(ck), 0);
    cuda_kv_free(ck); /* before the cache: detaches itself */
    kvcache_free(kc);
    kvcache_free(kg);
    cudaStreamDestroy(st);
}
#endif

int main(void) {
    char why[256] = "";
    if (backend_cuda_devices(why, sizeof why) == 0) {
        printf("SKIP: %s\n", why);
        return 77;
    }
#ifdef KVTIER_HAVE_CUDA
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_shape),
        cmocka_unit_test(test_qwen3_shapes),
        cmocka_unit_test(test_declines_debug_capture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
#else
    return 77;
#endif
}
