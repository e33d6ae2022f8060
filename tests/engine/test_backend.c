/* test_backend.c - the backend seams, on any machine: backend names and the
 * cpu / cuda / auto decision with its messages, the forward pass's device
 * hook (fwd_attach_device) and the KV cache's attention provider (declining,
 * failing, replacing the CPU kernels; told when a sequence closes and when it
 * is detached). The CUDA kernels themselves are checked by tests/gpu. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "backend.h"
#include "engine.h"
#include "forward.h"
#include "kvcache.h"
#include "tiny_ckpt.h"

static void test_names(void **state) {
    (void)state;
    backend_kind_t k = BACKEND_AUTO;
    assert_int_equal(backend_parse("cpu", &k), 0);
    assert_int_equal(k, BACKEND_CPU);
    assert_int_equal(backend_parse("cuda", &k), 0);
    assert_int_equal(k, BACKEND_CUDA);
    assert_int_equal(backend_parse("auto", &k), 0);
    assert_int_equal(k, BACKEND_AUTO);
    assert_int_equal(backend_parse("gpu", &k), -1);
    assert_int_equal(backend_parse("CUDA", &k), -1);
    assert_int_equal(backend_parse(NULL, &k), -1);
    assert_int_equal(k, BACKEND_AUTO); /* unchanged on error */
    assert_string_equal(backend_name(BACKEND_CPU), "cpu");
    assert_string_equal(backend_name(BACKEND_CUDA), "cuda");
    assert_string_equal(backend_name(BACKEND_AUTO), "auto");
}

static void test_resolve(void **state) {
    (void)state;
    char why[256] = "", err[320] = "";
    const int gpus = backend_cuda_devices(why, sizeof why);
    backend_kind_t got = BACKEND_AUTO;
    assert_int_equal(backend_resolve(BACKEND_CPU, &got, err, sizeof err), 0);
    assert_int_equal(got, BACKEND_CPU);
    assert_int_equal(backend_resolve(BACKEND_AUTO, &got, err, sizeof err), 0);
    assert_int_equal(got, gpus > 0 ? BACKEND_CUDA : BACKEND_CPU);
    int rc = backend_resolve(BACKEND_CUDA, &got, err, sizeof err);
    if (gpus > 0) {
        assert_int_equal(rc, 0);
        assert_int_equal(got, BACKEND_CUDA);
        return;
    }
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, "--backend cuda: "));
    assert_non_null(strstr(err, backend_cuda_built() ? "no CUDA device is visible"
                                                     : "this build has no CUDA backend"));
    assert_non_null(strstr(why, backend_cuda_built() ? "cudaGetDeviceCount" : "KVTIER_CUDA"));
    assert_int_equal(backend_resolve((backend_kind_t)7, &got, err, sizeof err), -1);
}

/* engine_new with BACKEND_CUDA where CUDA cannot run: NULL and the reason. */
static void test_engine_refuses_cuda(void **state) {
    (void)state;
    if (backend_cuda_devices(NULL, 0) > 0)
        skip();
    tiny_cfg c = tiny_cfg_default();
    char *dir = tiny_ckpt_make(&c), err[512] = "";
    assert_non_null(dir);
    qwen3_model_t *m = NULL;
    assert_int_equal(qwen3_model_load(dir, 0, &m, err, sizeof err), 0);
    engine_opts_t o;
    engine_opts_defaults(&o);
    assert_int_equal(o.backend, BACKEND_CPU);
    o.threads = 1;
    o.backend = BACKEND_CUDA;
    assert_null(engine_new(m, &o, err, sizeof err));
    assert_non_null(strstr(err, "--backend cuda"));
    o.backend = BACKEND_AUTO; /* falls back */
    engine_t *e = engine_new(m, &o, err, sizeof err);
    assert_non_null(e);
    assert_int_equal(engine_backend(e), BACKEND_CPU);
    assert_string_equal(fwd_device_name(engine_forward(e)), "cpu");
    assert_null(fwd_device(engine_forward(e)));
    engine_free(e);
    qwen3_model_free(m);
    tiny_ckpt_remove(dir);
}

/* ---------------------------------------------------------------- device hook */

typedef struct {
    int runs, frees, last_n, last_pos0;
} fake_dev;

static int fake_run(void *dev, kvcache_t *kv, int seq, const int *ids, int n, int pos0,
                    float *logits, int all_logits, const fwd_hooks_t *hooks, char *err,
                    size_t errlen) {
    (void)kv, (void)seq, (void)ids, (void)all_logits, (void)hooks;
    fake_dev *d = dev;
    d->runs++;
    d->last_n = n;
    d->last_pos0 = pos0;
    if (logits)
        logits[0] = 7.0f;
    if (n > 3) {
        snprintf(err, errlen, "fake: too many rows");
        return -1;
    }
    return 0;
}

static void fake_free(void *dev) {
    ((fake_dev *)dev)->frees++;
}

static const fwd_device_ops_t fake_ops = {.name = "fake", .run = fake_run, .free = fake_free};

static void test_fwd_device(void **state) {
    (void)state;
    tiny_cfg c = tiny_cfg_default();
    char *dir = tiny_ckpt_make(&c), err[256] = "";
    qwen3_model_t *m = NULL;
    assert_int_equal(qwen3_model_load(dir, 0, &m, err, sizeof err), 0);
    fwd_t *f = fwd_new(m, NULL, 8, err, sizeof err);
    assert_non_null(f);
    fake_dev d = {0};
    fwd_attach_device(f, &fake_ops, &d);
    assert_string_equal(fwd_device_name(f), "fake");
    assert_ptr_equal(fwd_device(f), &d);
    float logits[4] = {0};
    int ids[5] = {1, 2, 3, 4, 5};
    assert_int_equal(fwd_run(f, NULL, 0, ids, 2, 9, logits, 0, NULL, err, sizeof err), 0);
    assert_int_equal(d.runs, 1);
    assert_int_equal(d.last_n, 2);
    assert_int_equal(d.last_pos0, 9);
    assert_true(logits[0] == 7.0f);
    assert_int_equal(fwd_run(f, NULL, 0, ids, 5, 0, logits, 0, NULL, err, sizeof err), -1);
    assert_string_equal(err, "fake: too many rows");
    fwd_free(f);
    assert_int_equal(d.frees, 1);
    qwen3_model_free(m);
    tiny_ckpt_remove(dir);
}

/* ---------------------------------------------------------------- attention provider */

enum { P_DECLINE, P_FAIL, P_REPLACE };

typedef struct {
    int mode, calls, closed_seq, closes, detaches;
    attn_ws_t *ws;
} fake_prov;

static int prov_attend(void *ud, int seq, int layer, const attn_args_t *a, char *err,
                       size_t errlen) {
    (void)seq, (void)layer;
    fake_prov *p = ud;
    p->calls++;
    if (p->mode == P_DECLINE)
        return 1;
    if (p->mode == P_FAIL) {
        snprintf(err, errlen, "boom");
        return -1;
    }
    /* replace: the provider writes every output itself (here with the CPU
     * kernels, inline, so the numbers must be the reference's bit for bit) */
    return attention_run(a, p->ws, NULL) == 0 ? 0 : -1;
}

static void prov_closed(void *ud, int seq) {
    fake_prov *p = ud;
    p->closes++;
    p->closed_seq = seq;
}

static void prov_detached(void *ud) {
    ((fake_prov *)ud)->detaches++;
}

static kvcache_t *filled_kv(int *seq, int npos) {
    kvcache_opts o = {
        .n_layers = 1, .n_kv_heads = 2, .head_dim = 16, .n_heads = 4, .kv_dtype = DT_BF16};
    char err[256];
    kvcache_t *kv = kvcache_new(&o, err, sizeof err);
    assert_non_null(kv);
    *seq = kvcache_seq_new(kv);
    assert_true(*seq >= 0);
    assert_int_equal(kvcache_seq_stats(kv, *seq, 1, 0.9f, 4), KV_OK);
    uint64_t r = 12345;
    float k[32], v[32];
    for (int p = 0; p < npos; p++) {
        for (int i = 0; i < 32; i++) {
            r = r * 6364136223846793005ULL + 1442695040888963407ULL;
            k[i] = (float)((r >> 33) % 2001) / 1000.0f - 1.0f;
            v[i] = (float)((r >> 13) % 2001) / 1000.0f - 1.0f;
        }
        assert_int_equal(kvcache_append(kv, *seq, 0, p, k, v), KV_OK);
    }
    return kv;
}

static void test_attn_provider(void **state) {
    (void)state;
    const int npos = 40, nq = 3, w = 4 * 16;
    float q[3 * 64], ref[3 * 64], out[3 * 64];
    for (int i = 0; i < nq * w; i++)
        q[i] = sinf(0.37f * (float)i);
    int seq;
    kvcache_t *kv = filled_kv(&seq, npos);
    /* one block out: the attention skips it */
    void *bytes = NULL;
    size_t len = 0;
    assert_int_equal(kvcache_block_take(kv, seq, 0, 1, &bytes, &len), KV_OK);
    assert_int_equal(kvcache_attend(kv, seq, 0, q, nq, npos - nq, ref, NULL), KV_OK);
    const summary_block_t *sb = summary_layer_blocks(kvcache_summary(kv, seq), 0, &(int){0});
    float cum_ref[3] = {sb[0].cum_mass, sb[1].cum_mass, sb[2].cum_mass};
    assert_true(sb[1].cum_mass == 0.0f);

    fake_prov p = {.mode = P_DECLINE, .ws = attn_ws_new()};
    kvcache_attn_provider_t pv = {
        .ud = &p, .attend = prov_attend, .seq_closed = prov_closed, .detached = prov_detached};
    kvcache_set_attn_provider(kv, &pv);
    assert_ptr_equal(kvcache_attn_provider_ud(kv), &p);
    assert_int_equal(kvcache_attend(kv, seq, 0, q, nq, npos - nq, out, NULL), KV_OK);
    assert_int_equal(p.calls, 1);
    assert_memory_equal(out, ref, sizeof ref);

    p.mode = P_REPLACE;
    memset(out, 0, sizeof out);
    assert_int_equal(kvcache_attend(kv, seq, 0, q, nq, npos - nq, out, NULL), KV_OK);
    assert_int_equal(p.calls, 2);
    assert_memory_equal(out, ref, sizeof ref);
    sb = summary_layer_blocks(kvcache_summary(kv, seq), 0, &(int){0});
    for (int b = 0; b < 3; b++) /* masses recorded from the provider's outputs: 3 calls now */
        assert_true(fabsf(sb[b].cum_mass - 3 * cum_ref[b]) <= 1e-5f * (1 + cum_ref[b]));

    p.mode = P_FAIL;
    assert_int_not_equal(kvcache_attend(kv, seq, 0, q, nq, npos - nq, out, NULL), KV_OK);
    assert_non_null(strstr(kvcache_errmsg(kv), "boom"));
    assert_non_null(strstr(kvcache_errmsg(kv), "layer 0"));

    kvcache_seq_free(kv, seq);
    assert_int_equal(p.closes, 1);
    assert_int_equal(p.closed_seq, seq);
    assert_int_equal(p.detaches, 0);
    kvcache_set_attn_provider(kv, &pv); /* replacing detaches the old one */
    assert_int_equal(p.detaches, 1);
    kvcache_free(kv);
    assert_int_equal(p.detaches, 2);
    free(bytes);
    attn_ws_free(p.ws);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_engine_refuses_cuda),
        cmocka_unit_test(test_fwd_device),
        cmocka_unit_test(test_attn_provider),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
