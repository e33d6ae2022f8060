/* bench_kv.c - see bench_kv.h. */
#include "bench_kv.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

double bench_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t g_rng = 0x1234567887654321ULL;

uint64_t bench_rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

kvcache_t *bench_kv_new(const qwen3_model_t *m, dtype_t dt, int pool_blocks, const char *prog) {
    kvcache_opts o = {.n_layers = m->cfg.n_layers,
                      .n_kv_heads = m->cfg.n_kv_heads,
                      .head_dim = m->cfg.head_dim,
                      .n_heads = m->cfg.n_heads,
                      .kv_dtype = dt,
                      .pool_blocks = pool_blocks};
    char err[256];
    kvcache_t *kv = kvcache_new(&o, err, sizeof err);
    if (!kv)
        fprintf(stderr, "%s: %s\n", prog, err);
    return kv;
}

int bench_kv_fill_random(kvcache_t *kv, int seq, const qwen3_model_t *m, int ctx,
                         const char *prog) {
    int w = m->cfg.n_kv_heads * m->cfg.head_dim, chunk = 256;
    float *k = malloc(sizeof(float) * (size_t)w * chunk),
          *v = malloc(sizeof(float) * (size_t)w * chunk);
    if (!k || !v) {
        fprintf(stderr, "%s: fill: out of memory\n", prog);
        free(k), free(v);
        return -1;
    }
    for (int p = 0; p < ctx; p += chunk) {
        int n = ctx - p < chunk ? ctx - p : chunk;
        for (int i = 0; i < w * n; i++) {
            k[i] = (float)((int)(bench_rnd() % 2001) - 1000) * 1e-3f;
            v[i] = (float)((int)(bench_rnd() % 2001) - 1000) * 1e-3f;
        }
        for (int l = 0; l < m->cfg.n_layers; l++)
            if (kvcache_append_n(kv, seq, l, p, n, k, v) != KV_OK) {
                fprintf(stderr, "%s: fill: %s\n", prog, kvcache_errmsg(kv));
                free(k), free(v);
                return -1;
            }
    }
    free(k), free(v);
    return 0;
}
