/* serve_cmd.c - `kvtier-worker serve`: the Inference service (Generate) over
 * the RPC layer, with the KV cache tiered through a tier link (embedded tier
 * library, or a remote kvtierd). Also answers Admin/Health for the worker
 * itself (SERVING or DEGRADED) and the standard grpc.health.v1.Health: "" and
 * "kvtier.v1.Inference" SERVING until shutdown, NOT_SERVING from then on. A
 * degraded worker (tier service unreachable) stays SERVING there: its
 * generations still complete with the exact output (blocks that cannot be
 * placed stay hot), and failing every worker's readiness when the tier is down
 * would turn a tier outage into an inference outage. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "chat.h"
#include "engine.h"
#include "kvtier.pb-c.h"
#include "rpc.h"
#include "rpc_health.h"
#include "serve_cmd.h"
#include "metrics.h"
#include "serve_gen.h"
#ifdef KVTIER_HAVE_PIPELINE
#include "pipe_conf.h"
#endif
#include "serve_grpc.h"
#include "serve_http.h"
#include "tier_size.h"
#include "tokenizer.h"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static void serve_usage(FILE *f) {
    fprintf(
        f,
        "usage: kvtier-worker serve --model DIR [options]\n"
        "\n"
        "Serves kvtier.v1.Inference/Generate over gRPC with a Qwen3 checkpoint. KV blocks\n"
        "the attention stops using are demoted to the tier service and fetched back when\n"
        "a query's digest bound says they may matter again.\n"
        "\n"
        "options:\n"
        "  --model DIR            checkpoint directory (config.json, safetensors, tokenizer.json)\n"
        "  --listen ADDR          gRPC address (default 127.0.0.1:7080; port 0 picks one)\n"
        "  --tier ADDR|embedded   tier service: a kvtierd address, or the tier library\n"
        "                         in-process (default embedded)\n"
        "  --tier-data-dir DIR    embedded tier: RocksDB directory (default: a temporary\n"
        "                         directory removed at exit)\n"
        "  --tier-host-budget B   embedded tier: host RAM budget (default 1GiB)\n"
        "  --tier-ssd-budget B    embedded tier: SSD budget (default 20GiB)\n"
        "  --tier-token-file FILE remote tier: auth token, the file's first line (or the\n"
        "                         KVTIER_TIER_TOKEN environment variable); with a kvtierd\n"
        "                         --auth-tokens file, a tenant token of --tenant's tenant\n"
        "  --tier-token T         remote tier: auth token on the command line (shows in ps:\n"
        "                         prefer --tier-token-file)\n"
        "  --tier-timeout-ms N    remote tier: deadline per call (default 2000)\n"
        "  --tenant NAME          tenant of this worker's sequences (default default)\n"
        "  --policy NAME          default KV policy: tier (default), full, drop, window, h2o\n"
        "  --hot-budget B         default hot budget: fraction (0.2) or blocks per layer (64)\n"
        "  --mode exact|prefetch  default recall mode (default exact)\n"
        "  --tau T                revival margin: demoted blocks left out hold at most e^-T of\n"
        "                         the hot attention mass (default ln(1000) = 6.91)\n"
        "  --tier-async           exact recall in the background: each step's speculative\n"
        "                         fetch of the last candidates of every layer, and a layer's\n"
        "                         misses fetched while its attention reads the rest (same\n"
        "                         output; off by default: slower on a 2-core machine)\n"
        "  --stage-blocks N       demoted blocks per layer kept in worker memory between steps\n"
        "                         so they are not fetched again (default: the hot budget;\n"
        "                         0 = fetch every step's candidates)\n"
        "  --slots N              generations run at once, one engine each (default 1)\n"
        "  --threads N            compute threads per slot (default: online CPUs / slots)\n"
        "  --prefill-chunk N      tokens per prefill chunk (default 64)\n"
        "  --kv-dtype f32|bf16    KV storage (default: bf16 for bf16 models, else f32)\n"
        "  --backend B            cpu, cuda or auto (default: cuda when built with CUDA and a\n"
        "                         GPU is visible, else cpu; one model copy per slot)\n"
        "  --max-new-tokens N     upper limit of a request's max_new_tokens (default 4096)\n"
        "  --default-max-new-tokens N\n"
        "                         max_new_tokens of a request that sets none (default 512,\n"
        "                         at most the limit; OpenAI completions default to 16)\n"
        "  --max-queue N          requests waiting for a slot; more get RESOURCE_EXHAUSTED\n"
        "                         (HTTP 429) (default 256)\n"
        "  --max-prompt-tokens N  longest prompt accepted (default: the model's context)\n"
        "  --retain               keep a finished sequence's demoted blocks on the tier\n"
        "                         service (for inspection with kvtierctl map)\n"
        "  --metrics-listen ADDR  serve Prometheus text at http://ADDR/metrics (off)\n"
        "  --http-listen ADDR     OpenAI-compatible HTTP API (off): POST /v1/completions,\n"
        "                         /v1/chat/completions (stream: SSE), /tokenize, /detokenize;\n"
        "                         GET /v1/models, /health, /metrics\n"
        "  --api-key-file FILE    require 'Authorization: Bearer KEY' on gRPC (but health\n"
        "                         checks) and HTTP (but /health), KEY the file's first line\n"
        "                         (or the KVTIER_API_KEY environment variable)\n"
        "  --tls-cert FILE        serve gRPC and the HTTP API over TLS with this PEM\n"
        "                         certificate chain (and --tls-key FILE, its key)\n"
        "  --tls-client-ca FILE   mutual TLS: gRPC and HTTPS clients need a certificate\n"
        "                         signed by it (HTTPS: all but /health; 403 otherwise)\n"
        "  --tier-tls-ca FILE     remote tier over TLS: the CA that signs kvtierd's certificate\n"
        "  --tier-tls-cert FILE   remote tier: this worker's client certificate (mutual TLS;\n"
        "                         with --tier-tls-key FILE)\n"
        "  --served-model-name N  model id in the HTTP API and the metrics' model_name label\n"
        "                         (default: the checkpoint directory's name)\n"
        "  --print-port           print 'listening on PORT' (and 'http on PORT') to stdout\n"
        "  -h, --help             this text\n");
#ifdef KVTIER_HAVE_PIPELINE
    fprintf(f,
            "\npipeline (this worker is rank 0 and runs layers 0-B; the other ranks run\n"
            "`kvtier-worker stage`; --slots 1; policy tier or full):\n%s",
            PIPE_CONF_USAGE);
#endif
}

enum {
    O_MODEL = 1000,
    O_LISTEN,
    O_TIER,
    O_TDIR,
    O_THOST,
    O_TSSD,
    O_TTOK,
    O_TTOKFILE,
    O_TTIME,
    O_TENANT,
    O_POLICY,
    O_BUDGET,
    O_MODE,
    O_TAU,
    O_STAGE,
    O_TIER_ASYNC,
    O_SLOTS,
    O_THREADS,
    O_CHUNK,
    O_KVD,
    O_BACKEND,
    O_MAXNEW,
    O_MAXPROMPT,
    O_PRINTPORT,
    O_RETAIN,
    O_METRICS,
    O_HTTP,
    O_APIKEY,
    O_NAME,
    O_DEFNEW,
    O_QUEUE,
    O_TLSCERT,
    O_TLSKEY,
    O_TLSCA,
    O_TTLSCA,
    O_TTLSCERT,
    O_TTLSKEY,
    O_PIPE /* a pipe_conf_set flag */
};

static int parse_int(const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "kvtier-worker serve: %s must be an integer in [%ld, %ld] (got '%s')\n",
                flag, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_size_flag(const char *flag, const char *s, uint64_t *out) {
    char err[128];
    if (tier_size_parse(s, out, err, sizeof err) != 0) {
        fprintf(stderr, "kvtier-worker serve: %s: %s\n", flag, err);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ Admin/Health */

static void h_health(rpc_call *c, const ProtobufCMessage *req, void *user) {
    (void)req;
    serve_ctx *s = user;
    Kvtier__V1__HealthResponse r = KVTIER__V1__HEALTH_RESPONSE__INIT;
    char detail[300];
    int degraded = serve_degraded(s, detail, sizeof detail);
    r.status = degraded ? "DEGRADED" : "SERVING";
    r.version = "kvtier-worker 0.1.0";
    r.uptime_s = (uint64_t)(time(NULL) - serve_ctx_started(s));
    r.degraded = degraded;
    r.detail = detail;
    rpc_call_reply(c, &r.base);
}

static char *render_metrics(void *user, size_t *len) {
    return serve_ctx_render_metrics(user, len);
}

/* A secret: the first line of path (flag names it in messages), else
 * $env, else NULL. Returns 0, -1 with a message when the file is unreadable
 * or its first line empty. */
static int read_secret(const char *flag, const char *path, const char *env, char **out) {
    *out = NULL;
    if (!path) {
        const char *e = getenv(env);
        if (e && *e && !(*out = strdup(e)))
            return -1;
        return 0;
    }
    FILE *f = fopen(path, "r");
    char line[1024];
    if (!f) {
        fprintf(stderr, "kvtier-worker serve: %s %s: %s\n", flag, path, strerror(errno));
        return -1;
    }
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    size_t n = ok ? strcspn(line, "\r\n") : 0;
    line[n] = 0;
    if (n == 0) {
        fprintf(stderr, "kvtier-worker serve: %s %s: the first line is empty\n", flag, path);
        return -1;
    }
    *out = strdup(line);
    memset(line, 0, sizeof line);
    return *out ? 0 : -1;
}

/* The API key: --api-key-file's first line, else $KVTIER_API_KEY, else NULL
 * (no auth). Never taken from the command line (it would show in ps). */
static int read_api_key(const char *path, char **key) {
    return read_secret("--api-key-file", path, "KVTIER_API_KEY", key);
}

static int rm_rf(const char *dir) {
    char cmd[4200];
    if (!dir || !*dir || strlen(dir) > 4000)
        return -1;
    snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", dir);
    return system(cmd);
}

int serve_cmd_main(int argc, char **argv) {
    serve_cfg cfg;
    serve_cfg_defaults(&cfg);
    backend_kind_t backend = BACKEND_AUTO;
    const char *listen = "127.0.0.1:7080", *tier = "embedded", *tdir = NULL, *ttok = NULL,
               *ttok_file = NULL;
    uint64_t thost = 1ull << 30, tssd = 20ull << 30;
    int ttime = 2000, slots = 1, threads = 0, print_port = 0;
    const char *metrics_addr = NULL, *http_addr = NULL, *key_file = NULL;
    int def_new = -1;
    rpc_tls tls = {0};
    static const struct option lo[] = {{"model", required_argument, 0, O_MODEL},
                                       {"listen", required_argument, 0, O_LISTEN},
                                       {"tier", required_argument, 0, O_TIER},
                                       {"tier-data-dir", required_argument, 0, O_TDIR},
                                       {"tier-host-budget", required_argument, 0, O_THOST},
                                       {"tier-ssd-budget", required_argument, 0, O_TSSD},
                                       {"tier-token", required_argument, 0, O_TTOK},
                                       {"tier-token-file", required_argument, 0, O_TTOKFILE},
                                       {"tier-timeout-ms", required_argument, 0, O_TTIME},
                                       {"tenant", required_argument, 0, O_TENANT},
                                       {"policy", required_argument, 0, O_POLICY},
                                       {"hot-budget", required_argument, 0, O_BUDGET},
                                       {"mode", required_argument, 0, O_MODE},
                                       {"tau", required_argument, 0, O_TAU},
                                       {"stage-blocks", required_argument, 0, O_STAGE},
                                       {"tier-async", no_argument, 0, O_TIER_ASYNC},
                                       {"slots", required_argument, 0, O_SLOTS},
                                       {"threads", required_argument, 0, O_THREADS},
                                       {"prefill-chunk", required_argument, 0, O_CHUNK},
                                       {"kv-dtype", required_argument, 0, O_KVD},
                                       {"backend", required_argument, 0, O_BACKEND},
                                       {"max-new-tokens", required_argument, 0, O_MAXNEW},
                                       {"max-prompt-tokens", required_argument, 0, O_MAXPROMPT},
                                       {"print-port", no_argument, 0, O_PRINTPORT},
                                       {"retain", no_argument, 0, O_RETAIN},
                                       {"metrics-listen", required_argument, 0, O_METRICS},
                                       {"http-listen", required_argument, 0, O_HTTP},
                                       {"api-key-file", required_argument, 0, O_APIKEY},
                                       {"served-model-name", required_argument, 0, O_NAME},
                                       {"default-max-new-tokens", required_argument, 0, O_DEFNEW},
                                       {"max-queue", required_argument, 0, O_QUEUE},
                                       {"tls-cert", required_argument, 0, O_TLSCERT},
                                       {"tls-key", required_argument, 0, O_TLSKEY},
                                       {"tls-client-ca", required_argument, 0, O_TLSCA},
                                       {"tier-tls-ca", required_argument, 0, O_TTLSCA},
                                       {"tier-tls-cert", required_argument, 0, O_TTLSCERT},
                                       {"tier-tls-key", required_argument, 0, O_TTLSKEY},
                                       {"help", no_argument, 0, 'h'},
#ifdef KVTIER_HAVE_PIPELINE
                                       {"layers", required_argument, 0, O_PIPE},
                                       {"rank", required_argument, 0, O_PIPE},
                                       {"world-size", required_argument, 0, O_PIPE},
                                       {"transport", required_argument, 0, O_PIPE},
                                       {"pipe-listen", required_argument, 0, O_PIPE},
                                       {"pipe-next", required_argument, 0, O_PIPE},
                                       {"pipe-coordinator", required_argument, 0, O_PIPE},
                                       {"device", required_argument, 0, O_PIPE},
                                       {"pipe-timeout-ms", required_argument, 0, O_PIPE},
#endif
                                       {0, 0, 0, 0}};
#ifdef KVTIER_HAVE_PIPELINE
    pipe_conf_t pipe;
    pipe_conf_defaults(&pipe);
#endif
    int lidx = 0;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", lo, &lidx)) != -1) {
        char err[256];
        switch (opt) {
        case O_MODEL:
            cfg.model_dir = optarg;
            break;
        case O_LISTEN:
            listen = optarg;
            break;
        case O_TIER:
            tier = optarg;
            break;
        case O_TDIR:
            tdir = optarg;
            break;
        case O_THOST:
            if (parse_size_flag("--tier-host-budget", optarg, &thost))
                return 2;
            break;
        case O_TSSD:
            if (parse_size_flag("--tier-ssd-budget", optarg, &tssd))
                return 2;
            break;
        case O_TTOK:
            ttok = optarg;
            break;
        case O_TTOKFILE:
            ttok_file = optarg;
            break;
        case O_TTIME:
            if (parse_int("--tier-timeout-ms", optarg, 1, 600000, &ttime))
                return 2;
            break;
        case O_TENANT:
            cfg.tenant = optarg;
            break;
        case O_POLICY:
        case O_BUDGET:
        case O_MODE:
        case O_TAU:
            if (serve_cfg_set(&cfg,
                              opt == O_POLICY   ? "policy"
                              : opt == O_BUDGET ? "hot-budget"
                              : opt == O_MODE   ? "mode"
                                                : "tau",
                              optarg, err, sizeof err) != 0) {
                fprintf(stderr, "kvtier-worker serve: %s\n", err);
                return 2;
            }
            break;
        case O_SLOTS:
            if (parse_int("--slots", optarg, 1, 64, &slots))
                return 2;
            break;
        case O_TIER_ASYNC:
            cfg.tier_async = 1;
            break;
        case O_STAGE:
            if (parse_int("--stage-blocks", optarg, 0, 1 << 20, &cfg.stage_blocks))
                return 2;
            break;
        case O_THREADS:
            if (parse_int("--threads", optarg, 1, 1024, &threads))
                return 2;
            break;
        case O_CHUNK:
            if (parse_int("--prefill-chunk", optarg, 16, 4096, &cfg.prefill_chunk))
                return 2;
            break;
        case O_BACKEND:
            if (backend_parse(optarg, &backend) != 0) {
                fprintf(stderr,
                        "kvtier-worker serve: --backend must be cpu, cuda or auto (got '%s')\n",
                        optarg);
                return 2;
            }
            break;
        case O_KVD:
            if (strcmp(optarg, "f32") == 0)
                cfg.kv_dtype = DT_F32;
            else if (strcmp(optarg, "bf16") == 0)
                cfg.kv_dtype = DT_BF16;
            else {
                fprintf(stderr, "kvtier-worker serve: --kv-dtype must be f32 or bf16\n");
                return 2;
            }
            break;
        case O_MAXNEW:
            if (parse_int("--max-new-tokens", optarg, 1, 1 << 20, &cfg.max_new_limit))
                return 2;
            break;
        case O_MAXPROMPT:
            if (parse_int("--max-prompt-tokens", optarg, 1, 1 << 24, &cfg.max_prompt))
                return 2;
            break;
        case O_PRINTPORT:
            print_port = 1;
            break;
        case O_RETAIN:
            cfg.retain = 1;
            break;
        case O_METRICS:
            metrics_addr = optarg;
            break;
        case O_HTTP:
            http_addr = optarg;
            break;
        case O_APIKEY:
            key_file = optarg;
            break;
        case O_NAME:
            if (!*optarg) {
                fprintf(stderr, "kvtier-worker serve: --served-model-name must not be empty\n");
                return 2;
            }
            cfg.model_name = optarg;
            break;
        case O_DEFNEW:
            if (parse_int("--default-max-new-tokens", optarg, 1, 1 << 20, &def_new))
                return 2;
            break;
        case O_TLSCERT:
            tls.cert_file = optarg;
            break;
        case O_TLSKEY:
            tls.key_file = optarg;
            break;
        case O_TLSCA:
            tls.ca_file = optarg;
            tls.require_client_cert = 1;
            break;
        case O_TTLSCA:
            cfg.tier_tls_ca = optarg;
            break;
        case O_TTLSCERT:
            cfg.tier_tls_cert = optarg;
            break;
        case O_TTLSKEY:
            cfg.tier_tls_key = optarg;
            break;
        case O_QUEUE:
            if (parse_int("--max-queue", optarg, 0, 1 << 20, &cfg.max_queue))
                return 2;
            break;
        case 'h':
            serve_usage(stdout);
            return 0;
#ifdef KVTIER_HAVE_PIPELINE
        case O_PIPE: {
            char flag[64];
            snprintf(flag, sizeof flag, "--%s", lo[lidx].name);
            if (pipe_conf_set(&pipe, "kvtier-worker serve", flag, optarg) < 0)
                return 2;
            break;
        }
#endif
        default:
            serve_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kvtier-worker serve: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!cfg.model_dir) {
        fprintf(stderr, "kvtier-worker serve: --model DIR is required (see --help)\n");
        return 2;
    }
    char berr[320];
#ifdef KVTIER_HAVE_PIPELINE
    if (pipe.world) { /* the pipeline's stages run the CPU forward pass */
        if (backend == BACKEND_CUDA) {
            fprintf(stderr, "kvtier-worker serve: a layer-range pipeline runs on the CPU backend "
                            "(GPU stages are not built yet): drop --backend cuda\n");
            return 2;
        }
        backend = BACKEND_CPU;
    }
#endif
    if (backend_resolve(backend, &cfg.backend, berr, sizeof berr) != 0) {
        fprintf(stderr, "kvtier-worker serve: %s\n", berr);
        return 2;
    }

    /* the tier token: --tier-token-file, --tier-token, else $KVTIER_TIER_TOKEN */
    char *tier_token = NULL;
    if (ttok && ttok_file) {
        fprintf(stderr, "kvtier-worker serve: --tier-token and --tier-token-file exclude each "
                        "other\n");
        return 2;
    }
    if (ttok) {
        if (!(tier_token = strdup(ttok)))
            return 1;
    } else if (read_secret("--tier-token-file", ttok_file, "KVTIER_TIER_TOKEN", &tier_token) != 0) {
        return 2;
    }
    if (strcmp(tier, "embedded") != 0)
        cfg.tier_token = tier_token;

    char tmpdir[] = "/tmp/kvtier-worker-tier-XXXXXX";
    int own_tmp = 0;
    if (strcmp(tier, "embedded") == 0) {
        if (!tdir) {
            if (!mkdtemp(tmpdir)) {
                fprintf(stderr,
                        "kvtier-worker serve: cannot create a temporary tier directory: %s\n",
                        strerror(errno));
                return 1;
            }
            tdir = tmpdir;
            own_tmp = 1;
        }
        cfg.tier_data_dir = tdir;
        cfg.tier_host_budget = thost;
        cfg.tier_ssd_budget = tssd;
    } else {
        cfg.tier_addr = tier;
        cfg.tier_timeout_ms = ttime;
    }
    cfg.slots = slots;
    cfg.threads = threads;
#ifdef KVTIER_HAVE_PIPELINE
    if (pipe.world) { /* rank 0 of a layer-range pipeline (checked with the model) */
        if (slots != 1) {
            fprintf(stderr, "kvtier-worker serve: a pipeline runs one generation at a time: "
                            "--slots 1\n");
            return 2;
        }
        cfg.pipe = &pipe;
    } else if (pipe.layers_set || pipe.listen || pipe.next) {
        fprintf(stderr, "kvtier-worker serve: pipeline flags need --world-size N\n");
        return 2;
    }
#endif
    if (def_new > 0)
        cfg.max_new_default = def_new;
    if (cfg.max_new_default > cfg.max_new_limit) {
        if (def_new > 0) {
            fprintf(
                stderr,
                "kvtier-worker serve: --default-max-new-tokens %d is over --max-new-tokens %d\n",
                def_new, cfg.max_new_limit);
            return 2;
        }
        cfg.max_new_default = cfg.max_new_limit;
    }
    if (!tls.cert_file != !tls.key_file || (tls.ca_file && !tls.cert_file)) {
        fprintf(stderr, "kvtier-worker serve: --tls-cert and --tls-key go together (and "
                        "--tls-client-ca needs them)\n");
        return 2;
    }
    if ((cfg.tier_tls_cert || cfg.tier_tls_key || cfg.tier_tls_ca) && !cfg.tier_addr) {
        fprintf(stderr, "kvtier-worker serve: --tier-tls-* need a remote --tier ADDR\n");
        return 2;
    }
    char *api_key = NULL;
    if (read_api_key(key_file, &api_key) != 0)
        return 2;

    char err[512];
    serve_ctx *s = serve_ctx_new(&cfg, err, sizeof err);
    if (!s) {
        fprintf(stderr, "kvtier-worker serve: %s\n", err);
        if (own_tmp)
            rm_rf(tmpdir);
        return 1;
    }
    rpc_server *srv = rpc_server_new_tls(listen, 2, 0, &tls, err, sizeof err);
    if (!srv) {
        fprintf(stderr, "kvtier-worker serve: cannot listen on %s: %s\n", listen, err);
        serve_ctx_free(s);
        if (own_tmp)
            rm_rf(tmpdir);
        return 1;
    }
    const char *health_names[] = {kvtier__v1__inference__descriptor.name, NULL};
    rpc_health *health = NULL;
    if (rpc_server_register_service(srv, &kvtier__v1__inference__descriptor, "Generate",
                                    serve_grpc_generate, s) != 0 ||
        rpc_server_register_service(srv, &kvtier__v1__admin__descriptor, "Health", h_health, s) !=
            0 ||
        !(health = rpc_health_new(srv, health_names, err, sizeof err)) ||
        (api_key && (rpc_server_set_auth_token(srv, api_key) != 0 ||
                     rpc_server_set_public(srv, "/kvtier.v1.Admin/Health") != 0)) ||
        rpc_server_start(srv) != 0) {
        fprintf(stderr, "kvtier-worker serve: cannot start the gRPC server\n");
        rpc_server_free(srv);
        rpc_health_free(health);
        serve_ctx_free(s);
        if (own_tmp)
            rm_rf(tmpdir);
        return 1;
    }
    metrics_http *mh = NULL;
    if (metrics_addr) {
        int mport = 0;
        mh = metrics_http_start(metrics_addr, render_metrics, s, &mport, err, sizeof err);
        if (!mh) {
            fprintf(stderr, "kvtier-worker serve: --metrics-listen: %s\n", err);
            rpc_server_free(srv);
            rpc_health_free(health);
            serve_ctx_free(s);
            if (own_tmp)
                rm_rf(tmpdir);
            return 1;
        }
        fprintf(stderr, "kvtier-worker: metrics on http://%s/metrics (port %d)\n", metrics_addr,
                mport);
    }
    serve_http *api = NULL;
    int http_port = 0;
    if (http_addr) {
        api = serve_http_start(s, http_addr, api_key, tls.cert_file, tls.key_file, tls.ca_file,
                               &http_port, err, sizeof err);
        if (!api) {
            fprintf(stderr, "kvtier-worker serve: --http-listen: %s\n", err);
            rpc_server_free(srv);
            rpc_health_free(health);
            metrics_http_stop(mh);
            serve_ctx_free(s);
            free(api_key);
            if (own_tmp)
                rm_rf(tmpdir);
            return 1;
        }
        fprintf(stderr, "kvtier-worker: OpenAI API on http%s://%s/v1 (port %d%s)\n",
                tls.cert_file ? "s" : "", http_addr, http_port,
                api_key ? ", API key required" : "");
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (print_port) {
        printf("listening on %d\n", rpc_server_port(srv));
        if (api)
            printf("http on %d\n", http_port);
        fflush(stdout);
    }
    fprintf(stderr, "kvtier-worker: serving %s on port %d (tier %s, %d slot%s)\n", cfg.model_dir,
            rpc_server_port(srv), tier, slots, slots == 1 ? "" : "s");
    while (!g_stop)
        usleep(100 * 1000);
    fprintf(stderr, "kvtier-worker: shutting down\n");
    rpc_health_shutdown(health); /* NOT_SERVING before the generations stop */
    serve_ctx_stop(s);           /* running generations end at their next token */
    rpc_server_shutdown(srv, 5000);
    serve_http_stop(api);
    free(api_key);
    rpc_server_free(srv);
    rpc_health_free(health);
    metrics_http_stop(mh);
    serve_ctx_free(s);
    free(tier_token);
    if (own_tmp)
        rm_rf(tmpdir);
    return 0;
}
