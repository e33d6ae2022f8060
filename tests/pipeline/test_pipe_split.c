/* test_pipe_split.c - the forward pass's pipeline seams in one process: a
 * model split into layer ranges (pipe_model_view), the first range run by
 * fwd_run with a tail (fwd_set_tail) that runs the other ranges with
 * fwd_layers on caches of their own, gives the same logits as the whole
 * model, bit for bit: every 2-way split and a 3-way split of the 6-layer
 * fixture, a prompt in several chunks, then greedy decode steps. Also: a
 * chunk larger than the stage's max chunk is refused, and a failing tail
 * fails the forward pass with its message.
 * Usage: test_pipe_split FIXTURE_DIR (tiny-qwen3-sharp) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "kvcache.h"
#include "pipe_conf.h"

static const char *g_dir;
static qwen3_model_t *g_m;

#define CHUNK 32
#define N_PROMPT 100
#define N_DECODE 24

typedef struct {
    qwen3_model_t view;
    fwd_t *f;
    kvcache_t *kv;
    int seq;
} part_t;

static void part_init(part_t *p, int l0, int l1) {
    char err[256];
    pipe_model_view(g_m, l0, l1, &p->view);
    p->f = fwd_new(&p->view, NULL, CHUNK, err, sizeof err);
    assert_non_null(p->f);
    kvcache_opts ko = {.n_layers = l1 - l0,
                       .n_kv_heads = g_m->cfg.n_kv_heads,
                       .head_dim = g_m->cfg.head_dim,
                       .n_heads = g_m->cfg.n_heads,
                       .kv_dtype = DT_F32};
    p->kv = kvcache_new(&ko, err, sizeof err);
    assert_non_null(p->kv);
    p->seq = kvcache_seq_new(p->kv);
    assert_true(p->seq >= 0);
}

static void part_free(part_t *p) {
    kvcache_free(p->kv);
    fwd_free(p->f);
}

/* The rest of the pipeline: parts[0..n) one after the other. */
typedef struct {
    part_t *parts;
    int n;
    int calls, wanted;
} rest_t;

static int rest_run(void *ud, int seq, int pos0, int n, float *x, int want, char *err,
                    size_t errlen) {
    (void)seq;
    rest_t *r = ud;
    r->calls++;
    r->wanted += want;
    for (int i = 0; i < r->n; i++)
        if (fwd_layers(r->parts[i].f, r->parts[i].kv, r->parts[i].seq, x, n, pos0, NULL, err,
                       errlen) != 0)
            return -1;
    return 0;
}

static int argmax(const float *v, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

/* Runs the prompt and N_DECODE greedy steps; logits of every forward call
 * (the prompt's last position, then each step) into out[(1+N_DECODE)][V]. */
static void generate(fwd_t *f, kvcache_t *kv, int seq, const int *prompt, float *out) {
    char err[256];
    int V = g_m->cfg.vocab_size;
    if (fwd_run(f, kv, seq, prompt, N_PROMPT, 0, out, 0, NULL, err, sizeof err) != 0)
        fail_msg("prompt: %s", err);
    for (int s = 0; s < N_DECODE; s++) {
        int tok = argmax(out + (size_t)s * V, V);
        if (fwd_run(f, kv, seq, &tok, 1, N_PROMPT + s, out + (size_t)(s + 1) * V, 0, NULL, err,
                    sizeof err) != 0)
            fail_msg("step %d: %s", s, err);
    }
}

static void check_split(const int *cuts, int ncuts, const float *ref, const int *prompt) {
    int L = g_m->cfg.n_layers, V = g_m->cfg.vocab_size;
    part_t first, rest[4];
    part_init(&first, 0, cuts[0]);
    for (int i = 0; i < ncuts; i++)
        part_init(&rest[i], cuts[i], i + 1 < ncuts ? cuts[i + 1] : L);
    rest_t r = {rest, ncuts, 0, 0};
    fwd_tail_t tail = {.ud = &r, .run = rest_run};
    fwd_set_tail(first.f, &tail);
    float *out = malloc(sizeof(float) * (size_t)(1 + N_DECODE) * V);
    generate(first.f, first.kv, first.seq, prompt, out);
    if (memcmp(out, ref, sizeof(float) * (size_t)(1 + N_DECODE) * V) != 0)
        fail_msg("split at layer %d (%d cuts): logits differ from the whole model", cuts[0], ncuts);
    /* 4 prompt chunks (32+32+32+4: the last one wants 1 row) + the steps */
    assert_int_equal(r.calls, 4 + N_DECODE);
    assert_int_equal(r.wanted, 1 + N_DECODE);
    /* each range's cache holds its layers only, all positions */
    assert_int_equal(
        kvcache_seq_len(rest[ncuts - 1].kv, rest[ncuts - 1].seq, L - cuts[ncuts - 1] - 1),
        N_PROMPT + N_DECODE);
    assert_int_equal(kvcache_seq_len(first.kv, first.seq, cuts[0]), -1); /* no such layer */
    free(out);
    part_free(&first);
    for (int i = 0; i < ncuts; i++)
        part_free(&rest[i]);
}

static void test_splits_equal_whole(void **state) {
    (void)state;
    int L = g_m->cfg.n_layers, V = g_m->cfg.vocab_size;
    assert_true(L >= 3);
    int prompt[N_PROMPT];
    for (int i = 0; i < N_PROMPT; i++)
        prompt[i] = (i * 37 + 11) % (V < 500 ? V : 500);
    part_t whole;
    part_init(&whole, 0, L);
    float *ref = malloc(sizeof(float) * (size_t)(1 + N_DECODE) * V);
    generate(whole.f, whole.kv, whole.seq, prompt, ref);
    for (int cut = 1; cut < L; cut++)
        check_split(&cut, 1, ref, prompt);
    int three[2] = {1, L - 2};
    check_split(three, 2, ref, prompt);
    free(ref);
    part_free(&whole);
}

static int failing_tail(void *ud, int seq, int pos0, int n, float *x, int want, char *err,
                        size_t errlen) {
    (void)ud, (void)seq, (void)n, (void)x, (void)want;
    snprintf(err, errlen, "pipeline: rank 1 failed at %d", pos0);
    return -1;
}

static void test_refusals(void **state) {
    (void)state;
    part_t a, b;
    part_init(&a, 0, 1);
    part_init(&b, 1, g_m->cfg.n_layers);
    char err[256] = "";
    float *x = calloc((size_t)(CHUNK + 1) * g_m->cfg.hidden, sizeof(float));
    /* more rows than the stage's chunk: refused, nothing appended */
    assert_int_equal(fwd_layers(b.f, b.kv, b.seq, x, CHUNK + 1, 0, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "1..32 rows"));
    assert_int_equal(kvcache_seq_len(b.kv, b.seq, 0), 0);
    /* a failing tail fails the forward pass with its message */
    fwd_tail_t t = {.ud = NULL, .run = failing_tail};
    fwd_set_tail(a.f, &t);
    int tok = 5;
    float *lg = malloc(sizeof(float) * (size_t)g_m->cfg.vocab_size);
    assert_int_equal(fwd_run(a.f, a.kv, a.seq, &tok, 1, 0, lg, 0, NULL, err, sizeof err), -1);
    assert_string_equal(err, "pipeline: rank 1 failed at 0");
    fwd_set_tail(a.f, NULL); /* removed: the first range alone runs again */
    assert_int_equal(fwd_run(a.f, a.kv, a.seq, &tok, 1, 1, lg, 0, NULL, err, sizeof err), 0);
    free(lg);
    free(x);
    part_free(&a);
    part_free(&b);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_pipe_split FIXTURE_DIR\n");
        return 2;
    }
    g_dir = argv[1];
    char err[512];
    if (qwen3_model_load(g_dir, 0, &g_m, err, sizeof err) != 0) {
        fprintf(stderr, "test_pipe_split: %s\n", err);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_splits_equal_whole),
        cmocka_unit_test(test_refusals),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    qwen3_model_free(g_m);
    return rc;
}
