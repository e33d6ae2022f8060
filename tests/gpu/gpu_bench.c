/* gpu_bench.c - the CUDA backend's speed on a checkpoint (e.g. a random
 * Qwen3-4B from tests/fixtures/make_random_qwen3.py):
 *   device bandwidth   cudaMemcpy device -> device (read + write bytes / s)
 *   prefill            tokens/s of one --prefill-token prompt
 *   decode             batch 1 at each --contexts length (KV filled with random
 *                      keys and values): tokens/s, ms/token and the fraction of
 *                      the HBM roofline: (weight + KV bytes per token) /
 *                      bandwidth over the measured time per token
 *   tiering            engine_generate on a --tier-prompt-token prompt with
 *                      the full cache, then tiered (embedded tier, exact mode)
 *                      at --budget of the blocks: decode tokens/s ratio, PCIe
 *                      bytes per decoded token (host <-> device, all causes)
 * Prints one line per measurement and writes them as JSON (--json FILE).
 * Exits 77 without a CUDA build or a visible GPU. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "engine.h"
#include "forward.h"
#include "kvcache.h"
#include "tier.h"
#include "tiering.h"

#ifdef KVTIER_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "bench_kv.h"
#include "cuda_forward.h"

/* Best of 5 device -> device copies of `mib` MiB: bytes read + written / s. */
static double device_bw(size_t mib) {
    size_t n = mib << 20;
    void *a = NULL, *b = NULL;
    if (cudaMalloc(&a, n) != cudaSuccess || cudaMalloc(&b, n) != cudaSuccess)
        return 0;
    cudaMemset(a, 1, n);
    double best = 0;
    for (int i = 0; i < 6; i++) {
        cudaDeviceSynchronize();
        double t0 = bench_now_s();
        cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
        cudaDeviceSynchronize();
        double bw = 2.0 * n / (bench_now_s() - t0);
        if (i > 0 && bw > best)
            best = bw;
    }
    cudaFree(a);
    cudaFree(b);
    return best;
}

static void usage(FILE *f) {
    fprintf(f, "usage: gpu_bench --model DIR [--contexts 1024,8192] [--steps N] [--prefill N]\n"
               "                 [--tier-prompt N] [--tier-tokens N] [--budget F] [--json FILE]\n");
}

int main(int argc, char **argv) {
    const char *model = NULL, *json = NULL, *contexts = "1024,8192";
    int steps = 32, prefill_n = 2048, tier_prompt = 2048, tier_tokens = 128;
    double budget = 0.2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "--model"))
            model = v;
        else if (!strcmp(a, "--contexts"))
            contexts = v;
        else if (!strcmp(a, "--steps"))
            steps = atoi(v);
        else if (!strcmp(a, "--prefill"))
            prefill_n = atoi(v);
        else if (!strcmp(a, "--tier-prompt"))
            tier_prompt = atoi(v);
        else if (!strcmp(a, "--tier-tokens"))
            tier_tokens = atoi(v);
        else if (!strcmp(a, "--budget"))
            budget = atof(v);
        else if (!strcmp(a, "--json"))
            json = v;
        else {
            usage(stderr);
            return 2;
        }
    }
    if (!model || steps < 1 || prefill_n < 1 || tier_prompt < 16 || tier_tokens < 1 ||
        !(budget > 0 && budget <= 1)) {
        usage(stderr);
        return 2;
    }
    char why[256], err[1024];
    if (backend_cuda_devices(why, sizeof why) == 0) {
        printf("SKIP: %s\n", why);
        return 77;
    }
    qwen3_model_t *m = NULL;
    if (qwen3_model_load(model, 0, &m, err, sizeof err)) {
        fprintf(stderr, "gpu_bench: %s\n", err);
        return 1;
    }
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "model", model);
    const double bw = device_bw(1024);
    cJSON_AddNumberToObject(out, "device_bw_gbs", bw / 1e9);
    fwd_t *f = backend_fwd_new(m, NULL, 256, BACKEND_CUDA, NULL, err, sizeof err);
    if (!f) {
        fprintf(stderr, "gpu_bench: %s\n", err);
        return 1;
    }
    cuda_fwd_t *cf = fwd_device(f);
    cuda_fwd_info_t info;
    cuda_fwd_get_info(cf, &info);
    const double wbytes = (double)info.weight_bytes;
    printf("device %s: copy bandwidth %.0f GB/s, weights %.2f GB (%s)\n", info.device, bw / 1e9,
           wbytes / 1e9, info.weight_dtype == DT_BF16 ? "bf16" : "f32");
    cJSON_AddStringToObject(out, "device", info.device);
    cJSON_AddNumberToObject(out, "weight_bytes", wbytes);
    const int V = m->cfg.vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)V);
    int *ids = malloc(sizeof(int) * (size_t)(prefill_n > tier_prompt ? prefill_n : tier_prompt));

    /* ---- prefill */
    {
        for (int i = 0; i < prefill_n; i++)
            ids[i] = (int)(bench_rnd() % (uint64_t)V);
        kvcache_t *kv = bench_kv_new(m, DT_BF16, 0, "gpu_bench");
        int seq = kvcache_seq_new(kv);
        if (fwd_run(f, kv, seq, ids, 64, 0, logits, 0, NULL, err, sizeof err)) { /* warm-up */
            fprintf(stderr, "gpu_bench: %s\n", err);
            return 1;
        }
        kvcache_seq_free(kv, seq);
        seq = kvcache_seq_new(kv);
        double t0 = bench_now_s();
        if (fwd_run(f, kv, seq, ids, prefill_n, 0, logits, 0, NULL, err, sizeof err)) {
            fprintf(stderr, "gpu_bench: %s\n", err);
            return 1;
        }
        double dt = bench_now_s() - t0;
        printf("prefill %d tokens: %.0f tok/s (%.3f s)\n", prefill_n, prefill_n / dt, dt);
        cJSON_AddNumberToObject(out, "prefill_tokens", prefill_n);
        cJSON_AddNumberToObject(out, "prefill_tok_s", prefill_n / dt);
        kvcache_free(kv);
    }

    /* ---- decode at each context */
    cJSON *rows = cJSON_AddArrayToObject(out, "decode");
    const double kv_tok = 2.0 * m->cfg.n_layers * m->cfg.n_kv_heads * m->cfg.head_dim * 2;
    for (const char *p = contexts; *p;) {
        char *end;
        int ctx = (int)strtol(p, &end, 10);
        if (end == p || ctx < 1)
            break;
        p = *end == ',' ? end + 1 : end;
        kvcache_t *kv = bench_kv_new(m, DT_BF16, 0, "gpu_bench");
        int seq = kvcache_seq_new(kv);
        if (bench_kv_fill_random(kv, seq, m, ctx, "gpu_bench"))
            return 1;
        int tok = 1, pos = ctx;
        for (int w = 0; w < 3; w++, pos++) /* warm-up: uploads the filled blocks once */
            if (fwd_run(f, kv, seq, &tok, 1, pos, logits, 0, NULL, err, sizeof err)) {
                fprintf(stderr, "gpu_bench: %s\n", err);
                return 1;
            }
        double t0 = bench_now_s();
        for (int s = 0; s < steps; s++, pos++)
            if (fwd_run(f, kv, seq, &tok, 1, pos, logits, 0, NULL, err, sizeof err)) {
                fprintf(stderr, "gpu_bench: %s\n", err);
                return 1;
            }
        double ms = (bench_now_s() - t0) * 1e3 / steps;
        double bytes = wbytes + kv_tok * (pos - steps / 2);
        double roof = bytes / bw * 1e3 / ms;
        printf("decode at %d: %.1f tok/s, %.2f ms/token, %.1f MB/token, %.0f%% of the HBM "
               "roofline\n",
               ctx, 1e3 / ms, ms, bytes / 1e6, roof * 100);
        cJSON *r = cJSON_CreateObject();
        cJSON_AddNumberToObject(r, "context", ctx);
        cJSON_AddNumberToObject(r, "tok_s", 1e3 / ms);
        cJSON_AddNumberToObject(r, "ms_per_token", ms);
        cJSON_AddNumberToObject(r, "bytes_per_token", bytes);
        cJSON_AddNumberToObject(r, "roofline_fraction", roof);
        cJSON_AddItemToArray(rows, r);
        kvcache_free(kv);
    }
    fwd_free(f);

    /* ---- tiering at `budget` vs the full cache, through engine_generate */
    engine_opts_t eo;
    engine_opts_defaults(&eo);
    eo.backend = BACKEND_CUDA;
    eo.kv_dtype = DT_BF16;
    eo.prefill_chunk = 256;
    engine_t *e = engine_new(m, &eo, err, sizeof err);
    char tdir[] = "/tmp/kvtier-gpu-tier-XXXXXX";
    tier_options topt;
    tier_options_init(&topt);
    tier_t *tier = NULL;
    if (!e || !mkdtemp(tdir)) {
        fprintf(stderr, "gpu_bench: %s\n", e ? "mkdtemp failed" : err);
        return 1;
    }
    topt.data_dir = tdir;
    topt.host_budget = 8ull << 30;
    if (tier_open(&topt, &tier, err, sizeof err) != TIER_OK) {
        fprintf(stderr, "gpu_bench: %s\n", err);
        return 1;
    }
    tierlink_t *link = tierlink_embedded_new(tier, "bench");
    for (int i = 0; i < tier_prompt; i++)
        ids[i] = (int)(bench_rnd() % (uint64_t)V);
    /* mode 0: full cache, no statistics (the fast path); 1: full cache with
     * statistics (layer by layer through the KV cache, as tiering runs);
     * 2: tiered */
    static const char *const mode_name[3] = {"full", "full_stats", "tiered"};
    double tok_s[3] = {0, 0, 0}, pcie_tok[3] = {0, 0, 0};
    cJSON *tj = cJSON_AddObjectToObject(out, "tiering");
    for (int mode = 0; mode < 3; mode++) {
        const int tiered = mode == 2;
        engine_gen_opts_t g;
        engine_gen_defaults(&g);
        g.max_new_tokens = tier_tokens;
        g.ignore_eos = 1;
        g.stats = mode == 1;
        tiering_t *tr = NULL;
        if (tiered) {
            tiering_opts_t to;
            tiering_opts_defaults(&to);
            to.link = link;
            to.seq_id = (uint64_t)getpid() << 20 | 1;
            to.hot_blocks = (int)(budget * (tier_prompt + tier_tokens) / KV_BLOCK_TOKENS);
            if (to.hot_blocks < to.sink_blocks + to.recent_blocks + 1)
                to.hot_blocks = to.sink_blocks + to.recent_blocks + 1;
            if (!(tr = tiering_new(&to, err, sizeof err))) {
                fprintf(stderr, "gpu_bench: %s\n", err);
                return 1;
            }
            tiering_install(tr, &g);
        }
        cuda_fwd_info_t a, b;
        cuda_fwd_get_info(fwd_device(engine_forward(e)), &a);
        engine_result_t r;
        int rc = engine_generate(e, ids, tier_prompt, &g, &r, err, sizeof err);
        cuda_fwd_get_info(fwd_device(engine_forward(e)), &b);
        tiering_stats_t ts;
        memset(&ts, 0, sizeof ts);
        if (tr) {
            tiering_finish(tr, 0, &ts);
            tiering_free(tr);
        }
        if (rc) {
            fprintf(stderr, "gpu_bench: tiering run: %s\n", err);
            return 1;
        }
        tok_s[mode] = r.decode_steps / r.decode_s;
        /* all host <-> device bytes of the generation, prefill included, per decoded token */
        pcie_tok[mode] =
            (double)(b.h2d_bytes - a.h2d_bytes + b.d2h_bytes - a.d2h_bytes) / r.decode_steps;
        printf("%s: decode %.1f tok/s, %.0f PCIe bytes per token (prefill included), kv peak "
               "%.1f MB, recalled %llu, fetched %llu, demoted %llu\n",
               mode_name[mode], tok_s[mode], pcie_tok[mode], r.kv_peak_bytes / 1e6,
               (unsigned long long)ts.recalled, (unsigned long long)ts.fetched,
               (unsigned long long)ts.demoted);
        cJSON *o = cJSON_AddObjectToObject(tj, mode_name[mode]);
        cJSON_AddNumberToObject(o, "decode_tok_s", tok_s[mode]);
        cJSON_AddNumberToObject(o, "pcie_bytes_per_token", pcie_tok[mode]);
        cJSON_AddNumberToObject(o, "kv_peak_bytes", (double)r.kv_peak_bytes);
        cJSON_AddNumberToObject(o, "recalled", (double)ts.recalled);
        cJSON_AddNumberToObject(o, "demoted", (double)ts.demoted);
        engine_result_free(&r);
    }
    printf("tiering at %.0f%% hot: decode ratio to the full cache %.2f (to the full cache with "
           "statistics, the same layer-by-layer path: %.2f)\n",
           budget * 100, tok_s[2] / tok_s[0], tok_s[2] / tok_s[1]);
    cJSON_AddNumberToObject(tj, "budget", budget);
    cJSON_AddNumberToObject(tj, "decode_ratio", tok_s[2] / tok_s[0]);
    cJSON_AddNumberToObject(tj, "decode_ratio_vs_stats", tok_s[2] / tok_s[1]);
    if (json) {
        FILE *jf = fopen(json, "w");
        char *s = cJSON_Print(out);
        if (jf && s)
            fprintf(jf, "%s\n", s);
        if (jf)
            fclose(jf);
        free(s);
    }
    cJSON_Delete(out);
    tierlink_free(link);
    tier_close(tier);
    engine_free(e);
    free(logits);
    free(ids);
    qwen3_model_free(m);
    return 0;
}
#else
int main(void) {
    printf("SKIP: this build has no CUDA backend\n");
    return 77;
}
#endif
