/* test_serve.c - what `kvtier-worker serve` promises a client, over real gRPC
 * to a real worker process (fixture model, embedded tier):
 *
 *   admission          --slots 1 --max-queue 0: a second request while one
 *                      runs gets RESOURCE_EXHAUSTED; a request naming the
 *                      running request's sequence_id gets ALREADY_EXISTS; the
 *                      running one completes; both counted by outcome;
 *   deadline           a client deadline that passes during a long prefill ends
 *                      it there (between prefill chunks, no token generated),
 *                      DEADLINE_EXCEEDED, counted result="deadline_exceeded";
 *   generation_config  the model's generation_config.json: its eos ids stop a
 *                      generation (finish_reason "stop"), do_sample true makes
 *                      an unset temperature sample, an explicit temperature 0
 *                      stays greedy; --default-max-new-tokens is the default;
 *   api_key            KVTIER_API_KEY: Generate without the key UNAUTHENTICATED,
 *                      with it OK, Admin/Health without it still answers;
 *   stop_string        the last message names the stop string that ended the
 *                      generation; the text before it is streamed, the stop's
 *                      own text never is.
 * Skips (77) when the fixture model is not there.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "itest.h"
#include "kvtier.h"
#include "worker_proc.h"

static const char *g_fixture = FIXTURE_DIR;
static const char *g_prompt = "The history of the city begins with a small market by the river";

typedef struct {
    uint32_t ids[1024];
    size_t n;
    char text[8192];
    size_t text_len;
    volatile int events;
} collect;

static int on_tok(const kvtier_token_event *ev, void *user) {
    collect *c = user;
    for (size_t i = 0; i < ev->n_token_ids && c->n < 1024; i++)
        c->ids[c->n++] = ev->token_ids[i];
    size_t l = strlen(ev->text);
    if (c->text_len + l < sizeof c->text) {
        memcpy(c->text + c->text_len, ev->text, l + 1);
        c->text_len += l;
    }
    c->events++;
    return 0;
}

static kvtier_code run(const char *addr, const kvtier_generate_params *p, int timeout_ms,
                       collect *out, kvtier_generate_result *res, kvtier_error *err) {
    kvtier_connect_opts co = {0};
    co.address = addr;
    co.stream_timeout_ms = timeout_ms;
    kvtier_client *c = kvtier_connect(&co, err);
    assert_non_null(c);
    memset(out, 0, sizeof *out);
    kvtier_code code = kvtier_generate(c, p, on_tok, out, res, err);
    kvtier_client_free(c);
    return code;
}

/* The value of the first series `name{...labels...}` whose labels contain
 * `label` ("" = any) in a /metrics page; -1 when absent. */
static double metric(int port, const char *name, const char *label) {
    char *page = http_get_local(port, "/metrics");
    double v = -1;
    if (!page)
        return v;
    size_t nl = strlen(name);
    for (char *line = strtok(page, "\n"); line; line = strtok(NULL, "\n"))
        if (strncmp(line, name, nl) == 0 && line[nl] == '{' && strstr(line, label)) {
            v = atof(strrchr(line, ' ') + 1);
            break;
        }
    free(page);
    return v;
}

typedef struct {
    const char *addr;
    kvtier_generate_params p;
    collect out;
    kvtier_generate_result res;
    kvtier_error err;
    kvtier_code code;
} job;

static void *job_run(void *arg) {
    job *j = arg;
    j->code = run(j->addr, &j->p, 120000, &j->out, &j->res, &j->err);
    return NULL;
}

static void admission(void **state) {
    (void)state;
    char mport[16], maddr[40];
    snprintf(mport, sizeof mport, "%d", itest_free_port());
    snprintf(maddr, sizeof maddr, "127.0.0.1:%s", mport);
    const char *extra[] = {"--slots", "1", "--max-queue", "0", "--metrics-listen", maddr, NULL};
    worker_proc w = {0};
    assert_int_equal(worker_start(&w, KVTIER_WORKER_PATH, g_fixture, extra), 0);
    job a;
    memset(&a, 0, sizeof a);
    a.addr = w.addr;
    a.p.prompt = g_prompt;
    a.p.max_new_tokens = 400;
    a.p.policy = "full";
    a.p.sequence_id = 777;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, job_run, &a), 0);
    for (int i = 0; i < 2000 && a.out.events < 2; i++)
        usleep(5000);
    assert_true(a.out.events >= 2); /* it holds the only slot now */

    kvtier_generate_params p = {0};
    collect out;
    kvtier_error err;
    p.prompt = g_prompt;
    p.max_new_tokens = 4;
    p.sequence_id = 777; /* the running one's id */
    assert_int_equal(run(w.addr, &p, 30000, &out, NULL, &err), KVTIER_ALREADY_EXISTS);
    assert_non_null(strstr(err.message, "sequence_id"));
    p.sequence_id = 0; /* no slot, no room to wait */
    assert_int_equal(run(w.addr, &p, 30000, &out, NULL, &err), KVTIER_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err.message, "waiting"));

    pthread_join(th, NULL);
    assert_int_equal(a.code, KVTIER_OK);
    assert_int_equal(a.res.sequence_id, 777);
    /* the slot is free again: the same id is fine now */
    p.sequence_id = 777;
    assert_int_equal(run(w.addr, &p, 30000, &out, NULL, &err), KVTIER_OK);
    int port = atoi(mport);
    assert_true(metric(port, "kvtier_worker_generations_total", "result=\"resource_exhausted\"") ==
                1);
    assert_true(metric(port, "kvtier_worker_generations_total", "result=\"already_exists\"") == 1);
    assert_true(metric(port, "kvtier_worker_generations_total", "result=\"ok\"") == 2);
    assert_true(metric(port, "kvtier_worker_requests_waiting", "") == 0);
    assert_int_equal(worker_stop(&w), 0);
}

static void deadline(void **state) {
    (void)state;
    char mport[16], maddr[40];
    snprintf(mport, sizeof mport, "%d", itest_free_port());
    snprintf(maddr, sizeof maddr, "127.0.0.1:%s", mport);
    const char *extra[] = {"--threads", "1", "--metrics-listen", maddr, NULL};
    worker_proc w = {0};
    /* the second fixture (4,096 positions): a ~3,400-token prompt whose
     * prefill (attention quadratic in it) outlasts a 200 ms deadline */
    char sharp[1024];
    snprintf(sharp, sizeof sharp, "%s/model.safetensors", SHARP_DIR);
    if (access(sharp, R_OK) != 0) {
        fprintf(stderr, "deadline: no %s, skipped\n", sharp);
        return;
    }
    assert_int_equal(worker_start(&w, KVTIER_WORKER_PATH, SHARP_DIR, extra), 0);
    kvtier_generate_params p = {0};
    collect out;
    kvtier_error err;
    char *longp = malloc(160 * 64 + 1);
    assert_non_null(longp);
    longp[0] = 0;
    for (int i = 0; i < 160; i++)
        strcat(longp, "the river runs by the market and the city grows. ");
    p.prompt = longp;
    p.max_new_tokens = 64;
    p.policy = "full";
    kvtier_code code = run(w.addr, &p, 200, &out, NULL, &err);
    free(longp);
    assert_int_equal(code, KVTIER_DEADLINE_EXCEEDED);
    int port = atoi(mport);
    double d = -1, ok = -1;
    /* the worker notices between prefill chunks (64 tokens) */
    for (int i = 0; i < 600 && d != 1; i++) {
        d = metric(port, "kvtier_worker_generations_total", "result=\"deadline_exceeded\"");
        ok = metric(port, "kvtier_worker_generations_total", "result=\"ok\"");
        if (d != 1)
            usleep(50000);
    }
    assert_true(ok == 0); /* never counted as a success */
    if (d != 1 && getenv("KVTIER_SANITIZE")) {
        /* under a sanitizer the deadline may pass before the call reaches the
         * worker, which then never runs it: nothing to count */
        fprintf(stderr, "deadline: the call never reached the worker (sanitizer build)\n");
    } else {
        assert_true(d == 1);
        /* it stopped early (inside the prefill on this machine): far from 64 tokens */
        assert_true(metric(port, "kvtier_worker_generated_tokens_total", "") < 8);
    }
    assert_int_equal(worker_stop(&w), 0);
}

/* A copy of the fixture (symlinks) with its own generation_config.json. */
static void model_with_gc(char *dir, const char *gc) {
    assert_non_null(mkdtemp(dir));
    const char *files[] = {"config.json", "model.safetensors", "tokenizer.json",
                           "tokenizer_config.json"};
    char src[1024], dst[1024];
    for (int i = 0; i < 4; i++) {
        snprintf(src, sizeof src, "%s/%s", g_fixture, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        struct stat st;
        if (stat(src, &st) == 0)
            assert_int_equal(symlink(src, dst), 0);
    }
    snprintf(dst, sizeof dst, "%s/generation_config.json", dir);
    FILE *f = fopen(dst, "w");
    assert_non_null(f);
    fputs(gc, f);
    fclose(f);
}

static void model_rm(const char *dir) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void generation_config(void **state) {
    (void)state;
    /* the greedy reference from the fixture itself */
    const char *extra[] = {"--policy", "full", NULL};
    worker_proc w = {0};
    assert_int_equal(worker_start(&w, KVTIER_WORKER_PATH, g_fixture, extra), 0);
    kvtier_generate_params p = {0};
    collect ref, out;
    kvtier_generate_result res;
    kvtier_error err;
    p.prompt = g_prompt;
    p.max_new_tokens = 24;
    assert_int_equal(run(w.addr, &p, 60000, &ref, &res, &err), KVTIER_OK);
    assert_true(ref.n >= 8);
    assert_int_equal(worker_stop(&w), 0);

    /* eos ids: the 6th greedy token becomes an eos id -> stops there */
    uint32_t eos = ref.ids[5];
    size_t first = 0;
    while (ref.ids[first] != eos)
        first++;
    char gc[256], dir[] = "/tmp/kvtier-gc-XXXXXX";
    snprintf(gc, sizeof gc, "{\"eos_token_id\": [%u], \"do_sample\": false}", eos);
    model_with_gc(dir, gc);
    assert_int_equal(worker_start(&w, KVTIER_WORKER_PATH, dir, extra), 0);
    assert_int_equal(run(w.addr, &p, 60000, &out, &res, &err), KVTIER_OK);
    assert_int_equal(out.n, first + 1);
    assert_memory_equal(out.ids, ref.ids, out.n * sizeof out.ids[0]);
    assert_string_equal(res.finish_reason, "stop");
    assert_int_equal(worker_stop(&w), 0);
    model_rm(dir);

    /* do_sample true: an unset temperature samples (at 50, surely not the
     * greedy text); an explicit 0 is greedy; default max_new_tokens 6 */
    char dir2[] = "/tmp/kvtier-gc-XXXXXX";
    model_with_gc(dir2, "{\"do_sample\": true, \"temperature\": 50.0, \"top_p\": 1.0, "
                        "\"top_k\": 0}");
    const char *extra2[] = {"--policy", "full", "--default-max-new-tokens", "6", NULL};
    assert_int_equal(worker_start(&w, KVTIER_WORKER_PATH, dir2, extra2), 0);
    kvtier_generate_params q = {0};
    q.prompt = g_prompt;
    q.seed = 1;
    q.has_seed = 1;
    assert_int_equal(run(w.addr, &q, 60000, &out, &res, &err), KVTIER_OK);
    assert_true(out.n <= 6);
    assert_true(out.n > 0);
    assert_true(memcmp(out.ids, ref.ids, out.n * sizeof out.ids[0]) != 0);
    q.has_temperature = 1; /* temperature 0, sent */
    assert_int_equal(run(w.addr, &q, 60000, &out, &res, &err), KVTIER_OK);
    assert_int_equal(out.n, 6);
    assert_memory_equal(out.ids, ref.ids, 6 * sizeof out.ids[0]);
    assert_int_equal(worker_stop(&w), 0);
    model_rm(dir2);
}

static void stop_string(void **state) {
    (void)state;
    const char *extra[] = {"--policy", "full", NULL};
    worker_proc w = {0};
    assert_int_equal(worker_start(&w, KVTIER_WORKER_PATH, g_fixture, extra), 0);
    kvtier_generate_params p = {0};
    collect ref, out;
    kvtier_generate_result res;
    kvtier_error err;
    p.prompt = g_prompt;
    p.max_new_tokens = 32;
    assert_int_equal(run(w.addr, &p, 60000, &ref, &res, &err), KVTIER_OK);
    assert_true(ref.text_len > 12);
    char stop[4];
    memcpy(stop, ref.text + ref.text_len / 2, 3); /* 3 bytes from the middle */
    stop[3] = 0;
    const char *stops[1] = {stop};
    p.stop = stops;
    p.n_stop = 1;
    assert_int_equal(run(w.addr, &p, 60000, &out, &res, &err), KVTIER_OK);
    const char *at = strstr(ref.text, stop);
    assert_non_null(at);
    assert_int_equal(out.text_len, (size_t)(at - ref.text)); /* the text before it, */
    assert_memory_equal(out.text, ref.text, out.text_len);
    assert_string_equal(res.stop, stop); /* the stop named, */
    assert_string_equal(res.finish_reason, "stop");
    assert_true(out.n >= 1 && out.n <= ref.n); /* its tokens counted in the ids */
    assert_memory_equal(out.ids, ref.ids, out.n * sizeof out.ids[0]);
    assert_int_equal(worker_stop(&w), 0);
}

static void api_key(void **state) {
    (void)state;
    setenv("KVTIER_API_KEY", "s3cret-key", 1); /* the child inherits it */
    worker_proc w = {0};
    int rc = worker_start(&w, KVTIER_WORKER_PATH, g_fixture, NULL);
    unsetenv("KVTIER_API_KEY");
    assert_int_equal(rc, 0);
    kvtier_generate_params p = {0};
    collect out;
    kvtier_error err;
    p.prompt = g_prompt;
    p.max_new_tokens = 4;
    assert_int_equal(run(w.addr, &p, 30000, &out, NULL, &err), KVTIER_UNAUTHENTICATED);
    kvtier_connect_opts co = {0};
    co.address = w.addr;
    co.token = "s3cret-key";
    co.stream_timeout_ms = 30000;
    kvtier_client *c = kvtier_connect(&co, &err);
    assert_non_null(c);
    memset(&out, 0, sizeof out);
    assert_int_equal(kvtier_generate(c, &p, on_tok, &out, NULL, &err), KVTIER_OK);
    kvtier_client_free(c);
    co.token = NULL; /* health needs no key (probes send none) */
    c = kvtier_connect(&co, &err);
    kvtier_health h;
    assert_int_equal(kvtier_health_check(c, &h, &err), KVTIER_OK);
    kvtier_client_free(c);
    assert_int_equal(worker_stop(&w), 0);
}

int main(void) {
    if (getenv("KVTIER_FIXTURE_DIR"))
        g_fixture = getenv("KVTIER_FIXTURE_DIR");
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "%s/model.safetensors", g_fixture);
    if (access(cfg, R_OK) != 0) {
        fprintf(stderr, "SKIP: no fixture model at %s\n", g_fixture);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(admission),         cmocka_unit_test(deadline),
        cmocka_unit_test(generation_config), cmocka_unit_test(stop_string),
        cmocka_unit_test(api_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
