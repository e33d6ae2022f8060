/* test_golden.c - the engine against tests/fixtures/tiny-qwen3/golden.json,
 * written by an independent torch forward pass (tests/fixtures/golden.py):
 *   - logits at the stored positions: max |diff| <= 1e-3 x the logit range;
 *   - attention probabilities of the stored (layer, head) pairs at the last
 *     prompt position within 1e-4 (kvcache debug capture);
 *   - greedy continuation (full cache) identical for all stored tokens;
 *   - chunked prefill and token-by-token prefill give the same greedy tokens.
 * Exits 77 (ctest SKIP) only when the fixture is absent. Usage:
 * test_golden [FIXTURE_DIR]. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine.h"
#include "forward.h"

#ifndef KVTIER_FIXTURE_DIR
#define KVTIER_FIXTURE_DIR "tests/fixtures/tiny-qwen3"
#endif

static int g_fail;
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            g_fail++;                                                                              \
        }                                                                                          \
    } while (0)

static char *slurp(const char *path, size_t *len) {
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
        b[n] = 0, *len = (size_t)n;
    return b;
}

static int *json_ints(const cJSON *arr, int *n) {
    *n = cJSON_GetArraySize(arr);
    int *v = malloc(sizeof(int) * (size_t)(*n > 0 ? *n : 1));
    for (int i = 0; i < *n; i++)
        v[i] = cJSON_GetArrayItem(arr, i)->valueint;
    return v;
}

/* Prefill of the prompt with all logits and attention capture; compares the
 * stored positions and heads. */
static void check_prompt_forward(const qwen3_model_t *m, engine_t *e, const cJSON *p,
                                 const char *name) {
    int n;
    int *ids = json_ints(cJSON_GetObjectItem(p, "token_ids"), &n);
    int V = m->cfg.vocab_size;
    kvcache_t *kv = engine_kvcache(e);
    int seq = kvcache_seq_new(kv);
    CHECK(kvcache_debug_enable(kv, seq, 1) == KV_OK, "debug capture");
    float *lg = malloc(sizeof(float) * (size_t)V * (size_t)n);
    char err[512];
    int rc = fwd_run(engine_forward(e), kv, seq, ids, n, 0, lg, 1, NULL, err, sizeof err);
    CHECK(rc == 0, "%s: forward: %s", name, err);
    const cJSON *L;
    double worst = 0;
    cJSON_ArrayForEach(L, cJSON_GetObjectItem(p, "logits")) {
        int pos = cJSON_GetObjectItem(L, "pos")->valueint;
        const cJSON *vals = cJSON_GetObjectItem(L, "values");
        CHECK(cJSON_GetArraySize(vals) == V, "%s: %d logits stored, vocab %d", name,
              cJSON_GetArraySize(vals), V);
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
        worst = rel > worst ? rel : worst;
        CHECK(rel <= 1e-3, "%s pos %d: max |logit diff| %.3g = %.3g of the range %.3g", name, pos,
              md, rel, hi - lo);
        CHECK(arg_g == arg_e, "%s pos %d: argmax %d, golden %d", name, pos, arg_e, arg_g);
    }
    float *probs = malloc(sizeof(float) * (size_t)n);
    double aworst = 0;
    int nheads = 0;
    cJSON_ArrayForEach(L, cJSON_GetObjectItem(p, "attention_last_pos")) {
        int layer = cJSON_GetObjectItem(L, "layer")->valueint,
            head = cJSON_GetObjectItem(L, "head")->valueint;
        const cJSON *pr = cJSON_GetObjectItem(L, "probs");
        int got = kvcache_debug_capture(kv, seq, layer, head, probs);
        CHECK(got == n && cJSON_GetArraySize(pr) == n,
              "%s layer %d head %d: captured %d probs, stored %d, n %d", name, layer, head, got,
              cJSON_GetArraySize(pr), n);
        if (got != n)
            continue;
        int i = 0;
        const cJSON *v;
        double md = 0;
        cJSON_ArrayForEach(v, pr) {
            if (i >= n)
                break;
            double d = fabs(v->valuedouble - probs[i++]);
            md = d > md ? d : md;
        }
        CHECK(md <= 1e-4, "%s layer %d head %d: max |prob diff| %.3g", name, layer, head, md);
        aworst = md > aworst ? md : aworst;
        nheads++;
    }
    printf("  %-16s %4d tokens: logits max rel diff %.2e, attention (%d heads) max diff %.2e\n",
           name, n, worst, nheads, aworst);
    kvcache_seq_free(kv, seq);
    free(probs);
    free(lg);
    free(ids);
}

static void check_prompt_greedy(const qwen3_model_t *m, const cJSON *p, const char *name, int chunk,
                                const char *what) {
    int n, ng;
    int *ids = json_ints(cJSON_GetObjectItem(p, "token_ids"), &n);
    const cJSON *greedy = cJSON_GetObjectItem(p, "greedy");
    int *want = json_ints(cJSON_GetObjectItem(greedy, "token_ids"), &ng);
    const cJSON *margins = cJSON_GetObjectItem(greedy, "top1_top2_margin");
    engine_opts_t eo;
    engine_opts_defaults(&eo);
    eo.prefill_chunk = chunk;
    char err[512];
    engine_t *e = engine_new(m, &eo, err, sizeof err);
    CHECK(e != NULL, "engine: %s", err);
    engine_gen_opts_t g;
    engine_gen_defaults(&g);
    g.max_new_tokens = ng;
    g.ignore_eos = 1;
    engine_result_t r;
    int rc = engine_generate(e, ids, n, &g, &r, err, sizeof err);
    CHECK(rc == 0, "%s: generate: %s", name, err);
    int same = 0;
    while (same < r.n_tokens && same < ng && r.tokens[same] == want[same])
        same++;
    if (same < ng) {
        const cJSON *mg = cJSON_GetArrayItem(margins, same);
        CHECK(0,
              "%s (%s): greedy diverges at token %d of %d: got %d, golden %d (golden top1-top2 "
              "margin %.3g)",
              name, what, same, ng, same < r.n_tokens ? r.tokens[same] : -1, want[same],
              mg ? mg->valuedouble : -1);
    }
    printf("  %-16s greedy %s: %d/%d tokens identical\n", name, what, same, ng);
    engine_result_free(&r);
    engine_free(e);
    free(ids);
    free(want);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : KVTIER_FIXTURE_DIR;
    char path[1024];
    snprintf(path, sizeof path, "%s/golden.json", dir);
    struct stat st;
    if (stat(path, &st) != 0) {
        printf("SKIP: %s not found (the trained fixture has not been generated)\n", path);
        return 77;
    }
    size_t len;
    char *text = slurp(path, &len);
    cJSON *gj = text ? cJSON_ParseWithLength(text, len) : NULL;
    if (!gj) {
        fprintf(stderr, "FAIL: cannot read or parse %s\n", path);
        return 1;
    }
    qwen3_model_t *m = NULL;
    char err[1024];
    if (qwen3_model_load(dir, 0, &m, err, sizeof err) != 0) {
        fprintf(stderr, "FAIL: load %s: %s\n", dir, err);
        return 1;
    }
    engine_opts_t eo;
    engine_opts_defaults(&eo);
    eo.prefill_chunk = 64;
    engine_t *e = engine_new(m, &eo, err, sizeof err);
    if (!e) {
        fprintf(stderr, "FAIL: engine: %s\n", err);
        return 1;
    }
    const cJSON *p;
    int np = 0;
    cJSON_ArrayForEach(p, cJSON_GetObjectItem(gj, "prompts")) {
        const cJSON *nm = cJSON_GetObjectItem(p, "name");
        const char *name = cJSON_IsString(nm) ? nm->valuestring : "?";
        check_prompt_forward(m, e, p, name);
        check_prompt_greedy(m, p, name, 64, "chunk 64");
        if (np == 0)
            check_prompt_greedy(m, p, name, 1, "token-by-token prefill");
        np++;
    }
    CHECK(np > 0, "no prompts in %s", path);
    engine_free(e);
    qwen3_model_free(m);
    cJSON_Delete(gj);
    free(text);
    printf("%s: %d prompts, %d failures\n", path, np, g_fail);
    return g_fail ? 1 : 0;
}
