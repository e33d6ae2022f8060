/* test_golden_rope.c - RoPE scaling end to end: the tiny-qwen3 weights run
 * with an overridden config.json (YaRN factor 4 over an original 64
 * positions, linear factor 2, YaRN given in rope_parameters) against
 * tests/fixtures/tiny-qwen3/golden_rope_scaling.json, written by the torch
 * reference (tests/fixtures/golden_rope.py, golden.py rope_tables):
 *   - logits at positions on both sides of 64: max |diff| <= 1e-3 x the logit
 *     range, same argmax;
 *   - the greedy continuation (prefill chunk 64, then cached decode) identical.
 * Each case gets a temporary model directory: the fixture's config.json with
 * the case's keys replaced, and a symlink to its model.safetensors.
 * Exits 77 (ctest SKIP) only when the fixture is absent. Usage:
 * test_golden_rope [FIXTURE_DIR]. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine.h"
#include "forward.h"

#ifndef KVTIER_FIXTURE_DIR
#define KVTIER_FIXTURE_DIR "tests/fixtures/tiny-qwen3"
#endif

static int g_fail;
static double g_worst_abs, g_worst_rel;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            g_fail++;                                                                              \
        }                                                                                          \
    } while (0)

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

static int *json_ints(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    int *v = malloc(sizeof(int) * (size_t)(*n > 0 ? *n : 1));
    for (int i = 0; i < *n; i++)
        v[i] = cJSON_GetArrayItem(arr, i)->valueint;
    return v;
}

/* out = dir/name; -1 when it does not fit. */
static int join(char *out, size_t n, const char *dir, const char *name) {
    int k = snprintf(out, n, "%s/%s", dir, name);
    return k < 0 || (size_t)k >= n ? -1 : 0;
}

/* Writes dir/config.json (base with every key of keys replaced) and links
 * dir/model.safetensors to the fixture's. Returns 0 or -1. */
static int make_case_dir(const char *dir, const char *fixture, const cJSON *base,
                         const cJSON *keys) {
    cJSON *cfg = cJSON_Duplicate(base, 1);
    const cJSON *kv;
    cJSON_ArrayForEach(kv, keys) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, kv->string);
        cJSON_AddItemToObject(cfg, kv->string, cJSON_Duplicate(kv, 1));
    }
    char *text = cJSON_Print(cfg);
    cJSON_Delete(cfg);
    char path[PATH_MAX], target[PATH_MAX];
    FILE *f = join(path, sizeof path, dir, "config.json") == 0 ? fopen(path, "w") : NULL;
    int ok = f && text && fputs(text, f) >= 0;
    if (f)
        ok &= fclose(f) == 0;
    free(text);
    ok &= join(path, sizeof path, dir, "model.safetensors") == 0 &&
          join(target, sizeof target, fixture, "model.safetensors") == 0;
    char *abs = ok ? realpath(target, NULL) : NULL;
    ok &= abs && symlink(abs, path) == 0;
    free(abs);
    return ok ? 0 : -1;
}

static void remove_case_dir(const char *dir) {
    char path[PATH_MAX];
    if (join(path, sizeof path, dir, "config.json") == 0)
        unlink(path);
    if (join(path, sizeof path, dir, "model.safetensors") == 0)
        unlink(path);
    rmdir(dir);
}

/* Prefill with all logits; compares the stored positions. */
static void check_logits(const qwen3_model_t *m, engine_t *e, const cJSON *p, const char *name) {
    int n;
    int *ids = json_ints(cJSON_GetObjectItem(p, "token_ids"), &n);
    int V = m->cfg.vocab_size;
    kvcache_t *kv = engine_kvcache(e);
    int seq = kvcache_seq_new(kv);
    float *lg = malloc(sizeof(float) * (size_t)V * (size_t)n);
    char err[512];
    int rc = fwd_run(engine_forward(e), kv, seq, ids, n, 0, lg, 1, NULL, err, sizeof err);
    CHECK(rc == 0, "%s: forward: %s", name, err);
    const cJSON *L;
    double worst_abs = 0, worst_rel = 0;
    int npos = 0;
    cJSON_ArrayForEach(L, cJSON_GetObjectItem(p, "logits")) {
        int pos = cJSON_GetObjectItem(L, "pos")->valueint;
        const cJSON *vals = cJSON_GetObjectItem(L, "values");
        CHECK(cJSON_GetArraySize(vals) == V && pos < n, "%s pos %d: %d logits, vocab %d", name, pos,
              cJSON_GetArraySize(vals), V);
        if (cJSON_GetArraySize(vals) != V || pos >= n)
            continue;
        double lo = INFINITY, hi = -INFINITY, md = 0;
        int i = 0, arg_g = 0, arg_e = 0;
        const cJSON *v;
        cJSON_ArrayForEach(v, vals) {
            double g = v->valuedouble, x = lg[(size_t)pos * V + i];
            lo = g < lo ? g : lo;
            if (g > hi)
                hi = g, arg_g = i;
            if (x > lg[(size_t)pos * V + arg_e])
                arg_e = i;
            md = fabs(g - x) > md ? fabs(g - x) : md;
            i++;
        }
        double rel = md / (hi - lo);
        CHECK(rel <= 1e-3, "%s pos %d: max |logit diff| %.3g = %.3g of the range %.3g", name, pos,
              md, rel, hi - lo);
        CHECK(arg_g == arg_e, "%s pos %d: argmax %d, golden %d", name, pos, arg_e, arg_g);
        worst_abs = md > worst_abs ? md : worst_abs;
        worst_rel = rel > worst_rel ? rel : worst_rel;
        npos++;
    }
    printf("    %-15s %4d tokens: %d positions, logits max |diff| %.2e (%.2e of the range)\n", name,
           n, npos, worst_abs, worst_rel);
    g_worst_abs = worst_abs > g_worst_abs ? worst_abs : g_worst_abs;
    g_worst_rel = worst_rel > g_worst_rel ? worst_rel : g_worst_rel;
    kvcache_seq_free(kv, seq);
    free(lg);
    free(ids);
}

static void check_greedy(engine_t *e, const cJSON *p, const char *name) {
    int n, ng;
    int *ids = json_ints(cJSON_GetObjectItem(p, "token_ids"), &n);
    int *want = json_ints(cJSON_GetObjectItem(cJSON_GetObjectItem(p, "greedy"), "token_ids"), &ng);
    engine_gen_opts_t g;
    engine_gen_defaults(&g);
    g.max_new_tokens = ng;
    g.ignore_eos = 1;
    engine_result_t r;
    char err[512];
    int rc = engine_generate(e, ids, n, &g, &r, err, sizeof err);
    CHECK(rc == 0, "%s: generate: %s", name, err);
    int same = 0;
    while (same < r.n_tokens && same < ng && r.tokens[same] == want[same])
        same++;
    CHECK(same == ng, "%s: greedy diverges at token %d of %d: got %d, golden %d", name, same, ng,
          same < r.n_tokens ? r.tokens[same] : -1, same < ng ? want[same] : -1);
    printf("    %-15s greedy: %d/%d tokens identical\n", name, same, ng);
    engine_result_free(&r); /* also after a failure */
    free(ids);
    free(want);
}

static void run_case(const char *fixture, const cJSON *base, const cJSON *cs) {
    const char *name = cJSON_GetObjectItem(cs, "name")->valuestring;
    const cJSON *keys = cJSON_GetObjectItem(cs, "config");
    const char *tmp = getenv("TMPDIR");
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/kvtier-rope-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        CHECK(0, "%s: mkdtemp %s failed", name, dir);
        return;
    }
    qwen3_model_t *m = NULL;
    engine_t *e = NULL;
    char err[1024];
    if (make_case_dir(dir, fixture, base, keys) != 0) {
        CHECK(0, "%s: cannot write the case directory %s", name, dir);
        goto out;
    }
    if (qwen3_model_load(dir, 0, &m, err, sizeof err) != 0) {
        CHECK(0, "%s: load: %s", name, err);
        goto out;
    }
    char rs[160];
    printf("  %s: rope scaling %s\n", name,
           rope_scaling_describe(&m->cfg.rope_scaling, rs, sizeof rs));
    CHECK(m->cfg.rope_scaling.kind != ROPE_SCALING_NONE, "%s: the scaling was not read", name);
    engine_opts_t eo;
    engine_opts_defaults(&eo);
    eo.prefill_chunk = 64;
    e = engine_new(m, &eo, err, sizeof err);
    if (!e) {
        CHECK(0, "%s: engine: %s", name, err);
        goto out;
    }
    const cJSON *p;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(cs, "prompts")) {
        const char *pn = cJSON_GetObjectItem(p, "name")->valuestring;
        check_logits(m, e, p, pn);
        check_greedy(e, p, pn);
    }
out:
    engine_free(e);
    qwen3_model_free(m);
    remove_case_dir(dir);
}

int main(int argc, char **argv) {
    const char *fixture = argc > 1 ? argv[1] : KVTIER_FIXTURE_DIR;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/golden_rope_scaling.json", fixture);
    struct stat st;
    if (stat(path, &st) != 0) {
        printf("SKIP: %s not found (make it with tests/fixtures/golden_rope.py)\n", path);
        return 77;
    }
    char *gtext = slurp(path);
    cJSON *g = gtext ? cJSON_Parse(gtext) : NULL;
    snprintf(path, sizeof path, "%s/config.json", fixture);
    char *ctext = slurp(path);
    cJSON *base = ctext ? cJSON_Parse(ctext) : NULL;
    if (!g || !base) {
        fprintf(stderr, "FAIL: cannot read or parse the golden file or %s\n", path);
        return 1;
    }
    int ncase = 0;
    const cJSON *cs;
    cJSON_ArrayForEach(cs, cJSON_GetObjectItem(g, "forward_cases")) {
        run_case(fixture, base, cs);
        ncase++;
    }
    CHECK(ncase >= 2, "only %d forward cases", ncase);
    printf("%d cases, logits max |diff| %.3g (%.3g of the range), %d failures\n", ncase,
           g_worst_abs, g_worst_rel, g_fail);
    cJSON_Delete(g);
    cJSON_Delete(base);
    free(gtext);
    free(ctext);
    return g_fail ? 1 : 0;
}
