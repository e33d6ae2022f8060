/* test_run_cmd.c - the kvtier-worker binary as a process: --help, exit code 2
 * with a clear message for bad flags / missing model dir / invalid UTF-8 /
 * bad prompt ids, a --json generation and a `trace` on a random tiny
 * checkpoint. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend.h"
#include "tiny_ckpt.h"

extern char **environ;

static char *g_dir;
static char g_out[512], g_err[512];

static char *slurp(const char *p) {
    FILE *f = fopen(p, "rb");
    if (!f)
        return strdup("");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = calloc(1, (size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n)
        b[0] = 0;
    fclose(f);
    return b;
}

/* Runs kvtier-worker with args (NULL-terminated); returns the exit code and
 * the captured stdout / stderr (malloc'd). */
static int run(char **out, char **err, ...) {
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)KVTIER_WORKER_BIN;
    va_list ap;
    va_start(ap, err);
    char *a;
    while ((a = va_arg(ap, char *)) != NULL && n < 31)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, g_out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, g_err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, KVTIER_WORKER_BIN, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    *out = slurp(g_out);
    *err = slurp(g_err);
    assert_true(WIFEXITED(st)); /* never a crash */
    return WEXITSTATUS(st);
}

static int setup(void **state) {
    (void)state;
    tiny_cfg c = tiny_cfg_default();
    c.eos_id = -1;
    g_dir = tiny_ckpt_make(&c);
    snprintf(g_out, sizeof g_out, "%s.out", g_dir);
    snprintf(g_err, sizeof g_err, "%s.err", g_dir);
    return g_dir ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    unlink(g_out);
    unlink(g_err);
    tiny_ckpt_remove(g_dir);
    return 0;
}

static void expect_usage_error(const char *needle, ...) {
    char *argv[16];
    int n = 0;
    va_list ap;
    va_start(ap, needle);
    char *a;
    while ((a = va_arg(ap, char *)) != NULL && n < 15)
        argv[n++] = a;
    va_end(ap);
    while (n < 15)
        argv[n++] = NULL;
    char *out, *err;
    int rc = run(&out, &err, argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6], argv[7],
                 argv[8], argv[9], argv[10], argv[11], argv[12], argv[13], argv[14], NULL);
    if (rc != 2 || !strstr(err, needle))
        fail_msg("%s %s %s...: exit %d, stderr '%s' (want 2 and '%s')", argv[0],
                 argv[1] ? argv[1] : "", argv[2] ? argv[2] : "", rc, err, needle);
    free(out);
    free(err);
}

static void test_help(void **state) {
    (void)state;
    char *out, *err;
    assert_int_equal(run(&out, &err, "--help", NULL), 0);
    assert_non_null(strstr(out, "run"));
    assert_non_null(strstr(out, "tokenize"));
    assert_non_null(strstr(out, "trace"));
    free(out), free(err);
    assert_int_equal(run(&out, &err, "run", "--help", NULL), 0);
    assert_non_null(strstr(out, "--prompt-ids"));
    assert_non_null(strstr(out, "--hot-budget"));
    free(out), free(err);
    assert_int_equal(run(&out, &err, NULL), 2);
    free(out), free(err);
    assert_int_equal(run(&out, &err, "frobnicate", NULL), 2);
    assert_non_null(strstr(err, "unknown command"));
    free(out), free(err);
}

static void test_usage_errors(void **state) {
    (void)state;
    expect_usage_error("does not exist", "run", "--model", "/nonexistent/kvtier-model",
                       "--prompt-ids", "1,2", NULL);
    expect_usage_error("--temperature", "run", "--model", g_dir, "--prompt-ids", "1",
                       "--temperature", "warm", NULL);
    expect_usage_error("--top-p", "run", "--model", g_dir, "--prompt-ids", "1", "--top-p", "1.5",
                       NULL);
    expect_usage_error("--max-new-tokens", "run", "--model", g_dir, "--prompt-ids", "1",
                       "--max-new-tokens", "0", NULL);
    expect_usage_error("--policy", "run", "--model", g_dir, "--prompt-ids", "1", "--policy", "lru",
                       NULL);
    expect_usage_error("--hot-budget", "run", "--model", g_dir, "--prompt-ids", "1", "--policy",
                       "window", "--hot-budget", "1.5", NULL);
    expect_usage_error("--hot-budget needs", "run", "--model", g_dir, "--prompt-ids", "1",
                       "--hot-budget", "8", NULL);
    expect_usage_error("unknown", "run", "--model", g_dir, "--prompt-ids", "1", "--bogus", NULL);
    expect_usage_error("--model DIR is required", "run", "--prompt-ids", "1", NULL);
    expect_usage_error("exactly one", "run", "--model", g_dir, NULL);
    expect_usage_error("not valid UTF-8", "run", "--model", g_dir, "--prompt", "caf\xc3(", NULL);
    expect_usage_error("bad token id", "run", "--model", g_dir, "--prompt-ids", "1,96", NULL);
    expect_usage_error("bad token id", "run", "--model", g_dir, "--prompt-ids", "1,,2", NULL);
    expect_usage_error("tokenizer", "run", "--model", g_dir, "--prompt", "hello",
                       NULL); /* no tokenizer.json */
}

static void test_json_generation(void **state) {
    (void)state;
    char *out, *err;
    int rc = run(&out, &err, "run", "--model", g_dir, "--prompt-ids", "5,17,3,88,41",
                 "--max-new-tokens", "20", "--threads", "2", "--json", NULL);
    if (rc != 0)
        fail_msg("exit %d: %s", rc, err);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    cJSON *p = cJSON_GetObjectItem(j, "prompt_ids"), *g = cJSON_GetObjectItem(j, "generated_ids");
    assert_int_equal(cJSON_GetArraySize(p), 5);
    assert_int_equal(cJSON_GetArrayItem(p, 3)->valueint, 88);
    assert_int_equal(cJSON_GetArraySize(g), 20);
    assert_string_equal(cJSON_GetObjectItem(j, "stop")->valuestring, "max_tokens");
    assert_string_equal(cJSON_GetObjectItem(j, "finish_reason")->valuestring, "length");
    cJSON *t = cJSON_GetObjectItem(j, "timings");
    assert_true(cJSON_GetObjectItem(t, "decode_tok_s")->valuedouble > 0);
    assert_int_equal(cJSON_GetObjectItem(t, "decode_steps")->valueint, 19);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "layers")), 2);
    assert_true(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "kv"), "peak_bytes")->valuedouble > 0);
    /* same ids again with another thread count and prefill chunk: greedy is deterministic */
    char *out2, *err2;
    assert_int_equal(run(&out2, &err2, "run", "--model", g_dir, "--prompt-ids", "5,17,3,88,41",
                         "--max-new-tokens", "20", "--threads", "1", "--prefill-chunk", "2",
                         "--json", NULL),
                     0);
    cJSON *j2 = cJSON_Parse(out2);
    assert_non_null(j2);
    char *a = cJSON_PrintUnformatted(g),
         *b = cJSON_PrintUnformatted(cJSON_GetObjectItem(j2, "generated_ids"));
    assert_string_equal(a, b);
    free(a), free(b);
    cJSON_Delete(j), cJSON_Delete(j2);
    free(out), free(err), free(out2), free(err2);
    /* text mode: the summary goes to stderr */
    assert_int_equal(run(&out, &err, "run", "--model", g_dir, "--prompt-ids", "1,2,3",
                         "--max-new-tokens", "4", "--policy", "window", "--hot-budget", "0.5",
                         "--temperature", "0.8", "--seed", "7", NULL),
                     0);
    assert_non_null(strstr(err, "tok/s"));
    assert_non_null(strstr(err, "policy window"));
    free(out), free(err);
}

static cJSON *trace_json(const char *top_p) {
    char *out, *err;
    int rc = run(&out, &err, "trace", "--model", g_dir, "--prompt-ids",
                 "5,17,3,88,41,7,7,9,1,2,3,4,5,6,7,8,9,10,11,12", "--max-new", "30", "--gap", "5",
                 "--top-p", top_p, "--json", "-", NULL);
    if (rc != 0)
        fail_msg("trace exit %d: %s", rc, err);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    free(out), free(err);
    return j;
}

/* `trace`: usage errors; every text token after the prefill and every
 * generated one is a row of every layer; with top-p 1 every block and token
 * is always active (no revival, share 1); with 0.5 the sets are smaller. */
static void test_trace(void **state) {
    (void)state;
    expect_usage_error("exactly one", "trace", "--model", g_dir, NULL);
    expect_usage_error("--gap", "trace", "--model", g_dir, "--prompt-ids", "1,2", "--gap", "0",
                       NULL);
    expect_usage_error("--top-p", "trace", "--model", g_dir, "--prompt-ids", "1,2", "--top-p", "0",
                       NULL);
    expect_usage_error("nothing to observe", "trace", "--model", g_dir, "--prompt-ids", "1,2",
                       "--prefill", "2", NULL);
    expect_usage_error("max_position_embeddings", "trace", "--model", g_dir, "--prompt-ids", "1,2",
                       "--max-new", "100000", NULL);
    expect_usage_error("cannot open", "trace", "--model", g_dir, "--prompt-file",
                       "/nonexistent/kvtier.txt", NULL);
    cJSON *all = trace_json("1"), *half = trace_json("0.5");
    cJSON *la = cJSON_GetObjectItem(all, "layers"), *lh = cJSON_GetObjectItem(half, "layers");
    assert_int_equal(cJSON_GetArraySize(la), 2);
    for (int l = 0; l < 2; l++) {
        cJSON *a = cJSON_GetArrayItem(la, l), *h = cJSON_GetArrayItem(lh, l);
        assert_int_equal(cJSON_GetObjectItem(a, "rows")->valueint, 19 + 30); /* pos 1..49 */
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(a, "series_pos")), 49);
        assert_true(cJSON_GetObjectItem(a, "union_block_frac_median")->valuedouble == 1.0);
        assert_int_equal(cJSON_GetObjectItem(a, "block_revivals")->valueint, 0);
        cJSON *ha = cJSON_GetObjectItem(a, "heads"), *hh = cJSON_GetObjectItem(h, "heads");
        assert_true(cJSON_GetArraySize(ha) >= 1);
        for (int i = 0; i < cJSON_GetArraySize(ha); i++) {
            cJSON *x = cJSON_GetArrayItem(ha, i), *y = cJSON_GetArrayItem(hh, i);
            assert_true(cJSON_GetObjectItem(x, "active_token_frac_median")->valuedouble == 1.0);
            assert_int_equal(cJSON_GetObjectItem(x, "revivals")->valueint, 0);
            assert_int_equal(cJSON_GetObjectItem(x, "max_gap")->valueint, 0);
            double ta = cJSON_GetObjectItem(x, "active_tokens_mean")->valuedouble;
            double th = cJSON_GetObjectItem(y, "active_tokens_mean")->valuedouble;
            assert_true(th < ta);
            assert_true(cJSON_GetObjectItem(y, "entropy_mean")->valuedouble > 0);
            double sink = cJSON_GetObjectItem(y, "sink_mass_mean")->valuedouble;
            assert_true(sink > 0 && sink < 1);
        }
    }
    cJSON_Delete(all), cJSON_Delete(half);
    /* the table */
    char *out, *err;
    assert_int_equal(run(&out, &err, "trace", "--model", g_dir, "--prompt-ids", "1,2,3,4,5,6",
                         "--per-head", NULL),
                     0);
    assert_non_null(strstr(out, "heads-revived"));
    assert_non_null(strstr(out, "head  0"));
    assert_non_null(strstr(out, "layers >= 1"));
    free(out), free(err);
}

static void write_gen_config(const char *json) {
    char p[600];
    snprintf(p, sizeof p, "%s/generation_config.json", g_dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(json, f);
    fclose(f);
}

/* generation_config.json: its eos ids stop a generation, do_sample true gives
 * the default sampling, flags override it, a malformed file is refused. */
static void test_generation_config(void **state) {
    (void)state;
    char *out, *err;
    /* the greedy tokens without the file */
    assert_int_equal(run(&out, &err, "run", "--model", g_dir, "--prompt-ids", "5,17,3",
                         "--max-new-tokens", "6", "--json", NULL),
                     0);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "sampling"), "from")->valuestring,
        "default (greedy)");
    int first = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "generated_ids"), 0)->valueint;
    cJSON_Delete(j);
    free(out), free(err);
    char gc[256];
    snprintf(gc, sizeof gc, "{\"eos_token_id\": [%d], \"do_sample\": false, \"temperature\": 0.6}",
             first);
    write_gen_config(gc);
    assert_int_equal(run(&out, &err, "run", "--model", g_dir, "--prompt-ids", "5,17,3",
                         "--max-new-tokens", "6", "--json", NULL),
                     0);
    j = cJSON_Parse(out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "stop")->valuestring, "eos"); /* at once */
    assert_string_equal(cJSON_GetObjectItem(j, "finish_reason")->valuestring, "stop");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "generated_ids")), 1);
    cJSON *sm = cJSON_GetObjectItem(j, "sampling");
    assert_true(cJSON_GetObjectItem(sm, "temperature")->valuedouble == 0); /* do_sample false */
    assert_string_equal(cJSON_GetObjectItem(sm, "from")->valuestring, "generation_config.json");
    cJSON_Delete(j);
    free(out), free(err);
    /* do_sample true: its values, unless a flag says otherwise */
    write_gen_config("{\"do_sample\": true, \"temperature\": 0.7, \"top_p\": 0.9, "
                     "\"top_k\": 5}");
    assert_int_equal(run(&out, &err, "run", "--model", g_dir, "--prompt-ids", "5,17,3",
                         "--max-new-tokens", "4", "--top-k", "3", "--json", NULL),
                     0);
    j = cJSON_Parse(out);
    sm = cJSON_GetObjectItem(j, "sampling");
    assert_true(fabs(cJSON_GetObjectItem(sm, "temperature")->valuedouble - 0.7) < 1e-6);
    assert_true(fabs(cJSON_GetObjectItem(sm, "top_p")->valuedouble - 0.9) < 1e-6);
    assert_int_equal(cJSON_GetObjectItem(sm, "top_k")->valueint, 3);
    assert_string_equal(cJSON_GetObjectItem(sm, "from")->valuestring,
                        "flags over generation_config.json");
    cJSON_Delete(j);
    free(out), free(err);
    assert_int_equal(run(&out, &err, "run", "--model", g_dir, "--prompt-ids", "5,17,3",
                         "--max-new-tokens", "4", NULL),
                     0);
    assert_non_null(strstr(err, "sampling: temperature 0.7, top-p 0.9, top-k 5"));
    free(out), free(err);
    /* malformed: a clear error, exit 1 */
    write_gen_config("{\"do_sample\": true, \"top_p\": 1.5}");
    assert_int_equal(run(&out, &err, "run", "--model", g_dir, "--prompt-ids", "1", NULL), 1);
    assert_non_null(strstr(err, "top_p"));
    free(out), free(err);
    write_gen_config("{\"eos_token_id\": [999999]}");
    assert_int_equal(run(&out, &err, "run", "--model", g_dir, "--prompt-ids", "1", NULL), 1);
    assert_non_null(strstr(err, "eos_token_id"));
    free(out), free(err);
    char p[600];
    snprintf(p, sizeof p, "%s/generation_config.json", g_dir);
    unlink(p);
}

/* --backend: an unknown name and `cuda` where it cannot run are usage errors
 * that say why (exit 2, before the model loads); `auto` falls back to the CPU
 * when no GPU is visible and gives the CPU's tokens. */
static void test_backend_flag(void **state) {
    (void)state;
    expect_usage_error("--backend must be cpu, cuda or auto", "run", "--model", g_dir,
                       "--prompt-ids", "1,2,3", "--backend", "gpu", NULL);
    char why[256];
    const int gpus = backend_cuda_devices(why, sizeof why);
    if (gpus == 0) {
        const char *want =
            backend_cuda_built() ? "no CUDA device is visible" : "this build has no CUDA backend";
        expect_usage_error(want, "run", "--model", g_dir, "--prompt-ids", "1,2,3", "--backend",
                           "cuda", NULL);
        expect_usage_error("--backend cuda", "run", "--model", g_dir, "--prompt-ids", "1,2,3",
                           "--backend", "cuda", NULL);
    }
    char *out, *err, *out2, *err2;
    int rc = run(&out, &err, "run", "--model", g_dir, "--prompt-ids", "5,17,3,88,41",
                 "--max-new-tokens", "8", "--threads", "2", "--backend", "auto", "--json", NULL);
    if (rc != 0)
        fail_msg("--backend auto: exit %d: %s", rc, err);
    rc = run(&out2, &err2, "run", "--model", g_dir, "--prompt-ids", "5,17,3,88,41",
             "--max-new-tokens", "8", "--threads", "2", "--backend", "cpu", "--json", NULL);
    if (rc != 0)
        fail_msg("--backend cpu: exit %d: %s", rc, err2);
    cJSON *j = cJSON_Parse(out), *j2 = cJSON_Parse(out2);
    assert_non_null(j);
    assert_non_null(j2);
    assert_string_equal(cJSON_GetObjectItem(j, "backend")->valuestring, gpus ? "cuda" : "cpu");
    assert_string_equal(cJSON_GetObjectItem(j2, "backend")->valuestring, "cpu");
    if (gpus == 0) { /* same backend: the same greedy tokens */
        char *a = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "generated_ids")),
             *b = cJSON_PrintUnformatted(cJSON_GetObjectItem(j2, "generated_ids"));
        assert_string_equal(a, b);
        free(a), free(b);
    }
    cJSON_Delete(j), cJSON_Delete(j2);
    free(out), free(err), free(out2), free(err2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_usage_errors),
        cmocka_unit_test(test_json_generation),
        cmocka_unit_test(test_backend_flag),
        cmocka_unit_test(test_trace),
        cmocka_unit_test(test_generation_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
