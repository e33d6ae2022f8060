/* test_tiering.c - the tiering loop between real processes: a kvtierd, a
 * `kvtier-worker serve` with the trained fixture model, and libkvtier clients.
 *
 *   exact_matches_full     tiered generation with a remote kvtierd (and with the
 *                          embedded tier library), exact mode
 *                          and tau large enough, gives exactly the full-cache
 *                          greedy output (what the digest bound guarantees),
 *                          with blocks really demoted and recalled;
 *   service_killed         kill -9 of kvtierd mid-generation: the generation
 *                          completes, reports degraded, the worker's Health says
 *                          DEGRADED; after a restart new sequences tier again;
 *   service_stopped        SIGSTOP of kvtierd mid-generation and 10 generations
 *                          more: the worker waits a handful of deadlines (its
 *                          metrics count them), skips the other calls, all
 *                          complete degraded; after SIGCONT new sequences tier;
 *   bad_input              Generate with bad requests -> INVALID_ARGUMENT;
 *   concurrent             8 generations at once through one worker and one
 *                          kvtierd: each output equals its single-run output.
 * Skips (77) when the fixture model is not there.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "itest.h"
#include "kvtier.h"
#include "kvtier.pb-c.h"
#include "rpc.h"
#include "worker_proc.h"

#define N_PROMPTS 8

static char *g_prompts[N_PROMPTS];
static int g_n_prompts;
static const char *g_fixture = FIXTURE_DIR; /* env KVTIER_FIXTURE_DIR overrides */

typedef struct {
    uint32_t ids[1024];
    size_t n;
    int events;
    int kill_at; /* kill the server after this many events (0 = never) */
    int stop_at; /* SIGSTOP the server after this many events (0 = never) */
    itest_server *victim;
} collect;

static int on_tok(const kvtier_token_event *ev, void *user) {
    collect *c = user;
    for (size_t i = 0; i < ev->n_token_ids && c->n < 1024; i++)
        c->ids[c->n++] = ev->token_ids[i];
    c->events++;
    if (c->kill_at && c->events == c->kill_at && c->victim)
        itest_server_stop(c->victim); /* SIGKILL */
    if (c->stop_at && c->events == c->stop_at && c->victim)
        kill(c->victim->pid, SIGSTOP);
    return 0;
}

static kvtier_code generate(const char *addr, const char *prompt, const char *policy, float frac,
                            float tau, int max_new, collect *out, kvtier_generate_result *res,
                            kvtier_error *err) {
    kvtier_connect_opts co = {0};
    co.address = addr;
    co.stream_timeout_ms = 300000;
    kvtier_client *c = kvtier_connect(&co, err);
    assert_non_null(c);
    kvtier_generate_params p = {0};
    p.prompt = prompt;
    p.max_new_tokens = (uint32_t)max_new;
    p.policy = policy;
    p.hot_budget_fraction = frac;
    p.recall_mode = 1;
    p.tau = tau;
    kvtier_code code = kvtier_generate(c, &p, on_tok, out, res, err);
    kvtier_client_free(c);
    return code;
}

static const char *worker_bin(void) {
    return KVTIER_WORKER_PATH;
}

/* ---------------------------------------------------------------- tests */

/* Full-cache vs tiered (exact mode, tau 1000) greedy outputs on the fixture
 * prompts through a worker whose tier is `tier` (an address or "embedded"). */
static void exact_vs_full(const char *tier, itest_server *srv) {
    const char *extra[] = {"--tier", tier, "--threads", "2", NULL};
    worker_proc w = {0};
    assert_int_equal(worker_start(&w, worker_bin(), g_fixture, extra), 0);
    uint64_t demoted = 0, recalled = 0;
    for (int i = 0; i < 3 && i < g_n_prompts; i++) {
        collect full = {0}, tier = {0};
        kvtier_generate_result rf, rt;
        kvtier_error err;
        assert_int_equal(generate(w.addr, g_prompts[i], "full", 0, 0, 48, &full, &rf, &err),
                         KVTIER_OK);
        assert_int_equal(
            generate(w.addr, g_prompts[i], "tier", 0.2f, 1000.0f, 48, &tier, &rt, &err), KVTIER_OK);
        /* generation_config.json's eos ids (<|endoftext|> too) may end it early */
        assert_true(full.n >= 1 && full.n <= 48);
        assert_int_equal(tier.n, full.n);
        assert_memory_equal(tier.ids, full.ids, full.n * sizeof full.ids[0]);
        assert_false(rt.degraded);
        demoted += rt.blocks_demoted_host;
        recalled += rt.blocks_recalled;
    }
    /* the loop really ran: blocks left the hot pool and came back */
    assert_true(demoted > 0);
    assert_true(recalled > 0);
    if (srv) { /* and the service saw the puts */
        kvtier_client *c = itest_client(srv, NULL);
        kvtier_stats st;
        kvtier_error err;
        assert_int_equal(kvtier_stats_get(c, &st, &err), KVTIER_OK);
        assert_true(st.tier[KVTIER_TIER_HOST].puts + st.tier[KVTIER_TIER_SSD].puts > 0);
        /* and learned which blocks come back: a block fetched and demoted again
         * within a window (most recalls here) still counts once per window */
        fprintf(stderr, "exact vs full: %llu recalls, service counted %llu revivals\n",
                (unsigned long long)recalled, (unsigned long long)st.revivals);
        assert_true(st.revivals * 50 >= recalled);
        kvtier_client_free(c);
    }
    assert_int_equal(worker_stop(&w), 0);
}

static void exact_matches_full(void **state) {
    (void)state;
    itest_server srv = {0};
    assert_int_equal(itest_server_start(&srv, NULL), 0);
    exact_vs_full(srv.addr, &srv);
    itest_server_stop(&srv);
}

static void exact_matches_full_embedded(void **state) {
    (void)state;
    exact_vs_full("embedded", NULL);
}

static void service_killed(void **state) {
    (void)state;
    itest_server srv = {0};
    assert_int_equal(itest_server_start(&srv, NULL), 0);
    char mport[16], maddr[40];
    snprintf(mport, sizeof mport, "%d", itest_free_port());
    snprintf(maddr, sizeof maddr, "127.0.0.1:%s", mport);
    const char *extra[] = {
        "--tier",           srv.addr, "--tier-timeout-ms",   "500",        "--threads", "2",
        "--metrics-listen", maddr,    "--served-model-name", "tiny-qwen3", NULL};
    worker_proc w = {0};
    assert_int_equal(worker_start(&w, worker_bin(), g_fixture, extra), 0);

    collect c1 = {0};
    c1.kill_at = 8;
    c1.victim = &srv;
    kvtier_generate_result r1;
    kvtier_error err;
    assert_int_equal(generate(w.addr, g_prompts[0], "tier", 0.2f, 0, 96, &c1, &r1, &err),
                     KVTIER_OK);
    /* completed with what was hot, past the kill (an eos id may end it before 96) */
    assert_true(c1.n > 8 && c1.n <= 96);
    assert_int_equal(r1.generated_tokens, (uint32_t)c1.n);
    assert_string_equal(r1.finish_reason, c1.n == 96 ? "length" : "stop"); /* OpenAI's words */
    assert_true(r1.degraded);
    assert_true(strlen(r1.degraded_reason) > 0);
    /* the worker says so */
    itest_server wsrv = {0};
    snprintf(wsrv.addr, sizeof wsrv.addr, "%s", w.addr);
    kvtier_client *wc = itest_client(&wsrv, NULL);
    kvtier_health h;
    assert_int_equal(kvtier_health_check(wc, &h, &err), KVTIER_OK);
    assert_string_equal(h.status, "DEGRADED");
    assert_true(h.degraded);
    char *page = http_get_local(atoi(mport), "/metrics"); /* and its metrics */
    assert_non_null(page);
    assert_non_null(strstr(page, "\nkvtier_worker_degraded{model_name=\"tiny-qwen3\"} 1\n"));
    assert_non_null(
        strstr(page, "kvtier_worker_degraded_generations_total{model_name=\"tiny-qwen3\"} 1\n"));
    free(page);

    /* the service comes back: new sequences tier again, the worker recovers */
    assert_int_equal(itest_server_restart(&srv), 0);
    collect c2;
    kvtier_generate_result r2;
    for (int attempt = 0; attempt < 20; attempt++) { /* the channel reconnects with backoff */
        memset(&c2, 0, sizeof c2);
        assert_int_equal(
            generate(w.addr, g_prompts[1 % g_n_prompts], "tier", 0.2f, 0, 64, &c2, &r2, &err),
            KVTIER_OK);
        if (!r2.degraded)
            break;
        usleep(500 * 1000);
    }
    assert_false(r2.degraded);
    assert_true(r2.blocks_demoted_host > 0);
    assert_int_equal(kvtier_health_check(wc, &h, &err), KVTIER_OK);
    assert_string_equal(h.status, "SERVING");
    page = http_get_local(atoi(mport), "/metrics");
    assert_non_null(page);
    assert_non_null(strstr(page, "\nkvtier_worker_degraded{model_name=\"tiny-qwen3\"} 0\n"));
    free(page);
    kvtier_client_free(wc);
    assert_int_equal(worker_stop(&w), 0);
    itest_server_stop(&srv);
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The value of the series `name{...}` in the worker's /metrics page; -1 when
 * absent. */
static double worker_metric(int port, const char *name) {
    char *page = http_get_local(port, "/metrics");
    double v = -1;
    size_t nl = strlen(name);
    for (char *p = page ? strstr(page, name) : NULL; p; p = strstr(p + 1, name))
        if ((p == page || p[-1] == '\n') && p[nl] == '{') {
            v = atof(strchr(p, ' ') + 1);
            break;
        }
    free(page);
    return v;
}

static void service_stopped(void **state) {
    (void)state;
    itest_server srv = {0};
    assert_int_equal(itest_server_start(&srv, NULL), 0);
    char mport[16], maddr[40];
    snprintf(mport, sizeof mport, "%d", itest_free_port());
    snprintf(maddr, sizeof maddr, "127.0.0.1:%s", mport);
    const char *extra[] = {"--tier",    srv.addr, "--tier-timeout-ms", "400",
                           "--threads", "2",      "--metrics-listen",  maddr,
                           NULL};
    worker_proc w = {0};
    assert_int_equal(worker_start(&w, worker_bin(), g_fixture, extra), 0);
    int port = atoi(mport);
    collect c1 = {0};
    c1.stop_at = 6;
    c1.victim = &srv;
    kvtier_generate_result r1;
    kvtier_error err;
    /* a prompt the fixture keeps continuing (no early eos), long enough that
     * blocks are demoted and fetched every step */
    char prompt[2048] = "";
    for (int i = 0; i < 24; i++)
        strcat(prompt, "the river runs by the market and the city grows. ");
    double t0 = mono_s();
    assert_int_equal(generate(w.addr, prompt, "tier", 0.2f, 0, 96, &c1, &r1, &err), KVTIER_OK);
    double took = mono_s() - t0;
    /* more generations while it is still stopped: without skipping, each
     * waits its deadline at least once (its OpenSequence) */
    double t1 = mono_s();
    for (int i = 0; i < 10; i++) {
        collect cx = {0};
        kvtier_generate_result rx;
        assert_int_equal(generate(w.addr, prompt, "tier", 0.2f, 0, 24, &cx, &rx, &err), KVTIER_OK);
        assert_true(rx.degraded);
    }
    double more = mono_s() - t1;
    double timeouts = worker_metric(port, "kvtier_worker_tier_timeouts_total");
    double skipped = worker_metric(port, "kvtier_worker_tier_calls_skipped_total");
    kill(srv.pid, SIGCONT);
    fprintf(stderr,
            "service_stopped: %zu tokens with kvtierd stopped after 6: %.2f s; 10 more "
            "generations while stopped: %.2f s; deadlines waited %.0f, calls skipped %.0f\n",
            c1.n, took, more, timeouts, skipped);
    assert_true(r1.degraded);
    assert_true(c1.n >= 48);
    /* 11 generations, each with an OpenSequence, fetches, puts, summaries: each
     * would run into its deadline (measured without the breaker: +2.4 s for 6
     * generations). With it one timeout opens a window that doubles with each
     * failed probe: a handful of deadlines over the whole stall, whatever the
     * machine's speed (a stall of T s costs about log2(T / 0.4) + 1 while the
     * window doubles, then one probe per 5 s window: a slow build, e.g. under
     * ThreadSanitizer, stalls longer and probes more). */
    double stall = took + more;
    double most = 7 + (stall > 6 ? (stall - 6) / 5 + 1 : 0);
    if (!(timeouts >= 1 && timeouts <= most && skipped >= 5))
        fail_msg("kvtierd stopped: %.0f deadlines waited, %.0f calls skipped (want 1..%.0f and >= "
                 "5 for a %.1f s stall)",
                 timeouts, skipped, most, stall);
    collect c2;
    kvtier_generate_result r2;
    for (int attempt = 0; attempt < 30; attempt++) { /* the next probe closes the breaker */
        memset(&c2, 0, sizeof c2);
        assert_int_equal(
            generate(w.addr, g_prompts[1 % g_n_prompts], "tier", 0.2f, 0, 48, &c2, &r2, &err),
            KVTIER_OK);
        if (!r2.degraded)
            break;
        usleep(300 * 1000);
    }
    assert_false(r2.degraded);
    assert_int_equal(worker_stop(&w), 0);
    itest_server_stop(&srv);
}

static kvtier_code gen_params(const char *addr, kvtier_generate_params *p, kvtier_error *err) {
    kvtier_connect_opts co = {0};
    co.address = addr;
    co.stream_timeout_ms = 60000;
    kvtier_client *c = kvtier_connect(&co, err);
    assert_non_null(c);
    collect out = {0};
    kvtier_code code = kvtier_generate(c, p, on_tok, &out, NULL, err);
    kvtier_client_free(c);
    return code;
}

/* Generate through the RPC layer directly (libkvtier refuses some bad
 * requests before sending them; the worker must refuse them too). */
static grpc_status_code raw_generate(const char *addr, const Kvtier__V1__GenerateRequest *rq,
                                     rpc_status *st) {
    rpc_channel *ch = rpc_channel_new(addr, 0);
    rpc_opts o = {0};
    o.timeout_ms = 60000;
    rpc_stream *s = rpc_stream_open(ch, "/kvtier.v1.Inference/Generate", &o, st);
    assert_non_null(s);
    rpc_stream_write(s, &rq->base);
    rpc_stream_close_send(s);
    ProtobufCMessage *m = NULL;
    while (rpc_stream_read(s, &kvtier__v1__generate_response__descriptor, &m) == 1)
        protobuf_c_message_free_unpacked(m, NULL);
    grpc_status_code code = rpc_stream_finish(s, st);
    rpc_stream_free(s);
    rpc_channel_free(ch);
    return code;
}

/* Garbage bytes as a Generate request: INVALID_ARGUMENT from the RPC layer. */
static grpc_status_code rpc_unary_raw_check(const char *addr) {
    rpc_channel *ch = rpc_channel_new(addr, 0);
    rpc_opts o = {0};
    o.timeout_ms = 10000;
    rpc_status st;
    rpc_stream *s = rpc_stream_open(ch, "/kvtier.v1.Inference/Generate", &o, &st);
    assert_non_null(s);
    static const unsigned char junk[] = {0xff, 0xff, 0xff, 0x0f, 0x12, 0x99, 0x01};
    rpc_stream_write_raw(s, junk, sizeof junk);
    rpc_stream_close_send(s);
    ProtobufCMessage *m = NULL;
    while (rpc_stream_read(s, &kvtier__v1__generate_response__descriptor, &m) == 1)
        protobuf_c_message_free_unpacked(m, NULL);
    grpc_status_code code = rpc_stream_finish(s, &st);
    rpc_stream_free(s);
    rpc_channel_free(ch);
    return code;
}

static void bad_input(void **state) {
    (void)state;
    const char *extra[] = {"--max-prompt-tokens", "256", "--max-new-tokens", "64", NULL};
    worker_proc w = {0};
    assert_int_equal(worker_start(&w, worker_bin(), g_fixture, extra), 0);
    kvtier_error err;
    kvtier_generate_params p;

    Kvtier__V1__GenerateRequest rq = KVTIER__V1__GENERATE_REQUEST__INIT;
    rpc_status st;
    assert_int_equal(raw_generate(w.addr, &rq, &st), GRPC_STATUS_INVALID_ARGUMENT); /* empty */
    assert_non_null(strstr(st.message, "empty prompt"));
    Kvtier__V1__ChatMessage cm = KVTIER__V1__CHAT_MESSAGE__INIT, *cms[1] = {&cm};
    cm.role = "user";
    cm.content = "hi";
    rq.prompt = "hello"; /* both prompt and messages */
    rq.n_messages = 1;
    rq.messages = cms;
    assert_int_equal(raw_generate(w.addr, &rq, &st), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "not both"));
    rq.prompt = ""; /* unknown role */
    cm.role = "robot";
    assert_int_equal(raw_generate(w.addr, &rq, &st), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "role"));
    char bad_utf8[] = {'h', 'i', (char)0xff, 0}; /* invalid UTF-8 */
    rq.n_messages = 0;
    rq.prompt = bad_utf8;
    assert_int_equal(raw_generate(w.addr, &rq, &st), GRPC_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(st.message, "UTF-8"));
    assert_int_equal(rpc_unary_raw_check(w.addr), GRPC_STATUS_INVALID_ARGUMENT); /* garbage */

    memset(&p, 0, sizeof p); /* oversized prompt */
    char *big = malloc(40000);
    for (int i = 0; i < 39999; i++)
        big[i] = "abc def "[i % 8];
    big[39999] = 0;
    p.prompt = big;
    assert_int_equal(gen_params(w.addr, &p, &err), KVTIER_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "prompt is"));
    free(big);

    memset(&p, 0, sizeof p); /* bad sampling values */
    p.prompt = "hello";
    p.temperature = -1;
    assert_int_equal(gen_params(w.addr, &p, &err), KVTIER_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "temperature"));
    p.temperature = 0;
    p.top_p = 1.5f;
    assert_int_equal(gen_params(w.addr, &p, &err), KVTIER_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "top_p"));
    p.top_p = 0;
    p.max_new_tokens = 100000;
    assert_int_equal(gen_params(w.addr, &p, &err), KVTIER_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "max_new_tokens"));

    memset(&p, 0, sizeof p); /* unknown policy */
    p.prompt = "hello";
    p.policy = "lru-magic";
    assert_int_equal(gen_params(w.addr, &p, &err), KVTIER_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "unknown policy 'lru-magic'"));

    memset(&p, 0, sizeof p); /* budget out of range */
    p.prompt = "hello";
    p.hot_budget_fraction = 1.5f;
    assert_int_equal(gen_params(w.addr, &p, &err), KVTIER_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "hot_budget_fraction"));

    memset(&p, 0, sizeof p); /* a good request still works afterwards */
    p.prompt = "hello";
    p.max_new_tokens = 4;
    assert_int_equal(gen_params(w.addr, &p, &err), KVTIER_OK);
    assert_int_equal(worker_stop(&w), 0);

    /* A chat template kvtier does not know: `messages` refused with the reason,
     * plain prompts served (the fixture's files, another tokenizer_config.json) */
    char dir[] = "/tmp/kvtier-chat-XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *files[] = {"config.json", "model.safetensors", "tokenizer.json",
                           "generation_config.json"};
    char src[1024], dst[1024];
    for (int i = 0; i < 4; i++) {
        snprintf(src, sizeof src, "%s/%s", g_fixture, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        assert_int_equal(symlink(src, dst), 0);
    }
    snprintf(dst, sizeof dst, "%s/tokenizer_config.json", dir);
    FILE *f = fopen(dst, "w");
    assert_non_null(f);
    fputs("{\"chat_template\": \"{% for m in messages %}<<{{ m.content }}>>{% endfor %}\"}", f);
    fclose(f);
    assert_int_equal(worker_start(&w, worker_bin(), dir, extra), 0);
    Kvtier__V1__GenerateRequest rq2 = KVTIER__V1__GENERATE_REQUEST__INIT;
    cm.role = "user";
    cm.content = "hi";
    rq2.n_messages = 1;
    rq2.messages = cms;
    assert_int_equal(raw_generate(w.addr, &rq2, &st), GRPC_STATUS_INVALID_ARGUMENT);
    if (!strstr(st.message, "chat template") || !strstr(st.message, "plain"))
        fail_msg("unknown chat template: '%s'", st.message);
    memset(&p, 0, sizeof p);
    p.prompt = "hello";
    p.max_new_tokens = 4;
    assert_int_equal(gen_params(w.addr, &p, &err), KVTIER_OK);
    assert_int_equal(worker_stop(&w), 0);
    for (int i = 0; i < 4; i++) {
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        unlink(dst);
    }
    snprintf(dst, sizeof dst, "%s/tokenizer_config.json", dir);
    unlink(dst);
    rmdir(dir);
}

typedef struct {
    const char *addr;
    const char *prompt;
    collect out;
    kvtier_code code;
} conc_job;

static void *conc_run(void *arg) {
    conc_job *j = arg;
    kvtier_generate_result r;
    kvtier_error err;
    j->code = generate(j->addr, j->prompt, "tier", 0.2f, 0, 32, &j->out, &r, &err);
    return NULL;
}

static void concurrent(void **state) {
    (void)state;
    itest_server srv = {0};
    assert_int_equal(itest_server_start(&srv, NULL), 0);
    const char *extra[] = {"--tier", srv.addr, "--slots", "4", "--threads", "1", NULL};
    worker_proc w = {0};
    assert_int_equal(worker_start(&w, worker_bin(), g_fixture, extra), 0);
    conc_job single[8], par[8];
    pthread_t th[8];
    for (int i = 0; i < 8; i++) {
        memset(&single[i], 0, sizeof single[i]);
        single[i].addr = w.addr;
        single[i].prompt = g_prompts[i % g_n_prompts];
        conc_run(&single[i]);
        assert_int_equal(single[i].code, KVTIER_OK);
    }
    for (int i = 0; i < 8; i++) {
        memset(&par[i], 0, sizeof par[i]);
        par[i].addr = w.addr;
        par[i].prompt = g_prompts[i % g_n_prompts];
        assert_int_equal(pthread_create(&th[i], NULL, conc_run, &par[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(par[i].code, KVTIER_OK);
        assert_int_equal(par[i].out.n, single[i].out.n);
        assert_memory_equal(par[i].out.ids, single[i].out.ids,
                            single[i].out.n * sizeof single[i].out.ids[0]);
    }
    assert_int_equal(worker_stop(&w), 0);
    itest_server_stop(&srv);
}

static int load_prompts(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    while (g_n_prompts < N_PROMPTS && getline(&line, &cap, f) > 0) {
        cJSON *j = cJSON_Parse(line);
        cJSON *p = j ? cJSON_GetObjectItem(j, "prompt") : NULL;
        if (cJSON_IsString(p))
            g_prompts[g_n_prompts++] = strdup(p->valuestring);
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    return g_n_prompts > 0 ? 0 : -1;
}

int main(void) {
    const char *prompts = getenv("KVTIER_FIXTURE_PROMPTS");
    if (getenv("KVTIER_FIXTURE_DIR"))
        g_fixture = getenv("KVTIER_FIXTURE_DIR");
    if (!prompts)
        prompts = FIXTURE_PROMPTS;
    char cfg[1024];
    snprintf(cfg, sizeof cfg, "%s/config.json", g_fixture);
    if (access(cfg, R_OK) != 0 || load_prompts(prompts) != 0) {
        fprintf(stderr, "tiering tests: fixture %s or %s missing: skipped\n", g_fixture, prompts);
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_input),
        cmocka_unit_test(exact_matches_full),
        cmocka_unit_test(exact_matches_full_embedded),
        cmocka_unit_test(service_killed),
        cmocka_unit_test(service_stopped),
        cmocka_unit_test(concurrent),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    for (int i = 0; i < g_n_prompts; i++)
        free(g_prompts[i]);
    return rc;
}
