/* run_cmd.c - `kvtier-worker run`: load a checkpoint, tokenize (optionally as
 * a chat turn), generate with the engine, stream the text, print statistics
 * (or one JSON object with --json). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "engine.h"
#include "gen_config.h"
#include "kernels.h"
#include "run_cmd.h"
#ifdef KVTIER_HAVE_TOKENIZER
#include "tokenizer.h"
#endif
#ifdef KVTIER_HAVE_PIPELINE
#include "pipe_driver.h"
#endif

#define RUN_MAX_STOPS 16
#define RUN_PROG "kvtier-worker run"

typedef struct {
    const char *model, *prompt, *prompt_ids;
    int chat, no_thinking, json, ignore_eos;
    engine_opts_t eo;
    int kv_dtype_set;                   /* --kv-dtype given; else bf16 for bf16 models */
    int temp_set, top_k_set, top_p_set; /* else generation_config.json decides */
    const char *sampling_from;          /* where the sampling settings came from */
    engine_gen_opts_t go;
    const char *stops[RUN_MAX_STOPS];
    int n_stops;
#ifdef KVTIER_HAVE_PIPELINE
    pipe_conf_t pipe; /* rank 0 of a layer-range pipeline when pipe.world > 0 */
#endif
} run_args;

static void run_usage(FILE *f) {
    fprintf(f,
            "usage: kvtier-worker run --model DIR (--prompt TEXT | --prompt-ids 1,2,3) [options]\n"
            "\n"
            "Generates a continuation with a Hugging Face Qwen3 checkpoint directory\n"
            "(config.json, model.safetensors[.index.json], tokenizer.json). Its\n"
            "generation_config.json, when present, gives the stop ids and the default\n"
            "sampling (do_sample true: its temperature / top_p / top_k; false: greedy);\n"
            "flags override it one by one, and the summary says what was used. The text is\n"
            "streamed to stdout as it is generated; the statistics (tokens/s, KV bytes,\n"
            "per-layer active sets) follow on stderr. With --json, stdout gets one JSON\n"
            "object instead (prompt and generated ids, text, timings, statistics).\n"
            "\n"
            "options:\n"
            "  --model DIR            checkpoint directory (required)\n"
            "  --prompt TEXT          UTF-8 prompt (needs tokenizer.json)\n"
            "  --prompt-ids LIST      prompt as comma-separated token ids\n"
            "  --chat                 wrap the prompt as one user turn of the chat template\n"
            "  --no-thinking          with --chat: enable_thinking=false (empty think block)\n"
            "  --max-new-tokens N     tokens to generate at most (default 256)\n"
            "  --temperature T        0 = greedy (default: generation_config.json, else 0)\n"
            "  --top-k K              keep the K most likely tokens (default: as temperature;\n"
            "                         0 = off)\n"
            "  --top-p P              nucleus sampling mass in (0,1] (default: as temperature;\n"
            "                         1 = off)\n"
            "  --seed S               sampler seed (default 0)\n"
            "  --stop TEXT            stop when TEXT appears (repeatable, up to %d)\n"
            "  --ignore-eos           do not stop at <|im_end|> / <|endoftext|> / eos\n"
            "  --policy NAME          local KV policy: full (default), drop, window, h2o\n"
            "  --hot-budget B         hot KV budget per layer: a fraction with a dot (0.25)\n"
            "                         or a number of %d-token blocks (64)\n"
            "  --threads N            compute threads (default: online CPUs)\n"
            "  --prefill-chunk N      tokens per prefill chunk (default 256)\n"
            "  --kv-dtype T           KV storage: f32 or bf16 (default: bf16 for bf16 models, else "
            "f32)\n"
            "  --backend B            cpu, cuda or auto (default: cuda when built with CUDA and a\n"
            "                         GPU is visible, else cpu)\n"
            "  --json                 print one JSON object instead of text + summary\n"
            "  --help                 this text\n"
            "\n"
            "exit codes: 0 ok, 1 load or generation failure, 2 usage error\n",
            RUN_MAX_STOPS, KV_BLOCK_TOKENS);
#ifdef KVTIER_HAVE_PIPELINE
    fprintf(f,
            "\npipeline (this process is rank 0, the driver; the other ranks run\n"
            "`kvtier-worker stage`; --policy full only):\n%s",
            PIPE_CONF_USAGE);
#endif
}

/* ------------------------------------------------------------ parsing */

/* "0.25" -> fraction, "64" -> blocks. */
static int parse_budget(const char *s, local_policy_params *p) {
    if (strchr(s, '.') || strchr(s, 'e') || strchr(s, 'E')) {
        float f;
        if (cli_parse_float(RUN_PROG, "--hot-budget", s, 0, 1, &f) != 0)
            return -1;
        if (!(f > 0)) {
            fprintf(stderr, "kvtier-worker run: --hot-budget fraction must be > 0 (got '%s')\n", s);
            return -1;
        }
        p->hot_frac = f;
        p->hot_blocks = 0;
        return 0;
    }
    int b;
    if (cli_parse_int(RUN_PROG, "--hot-budget", s, 1, INT_MAX, &b) != 0)
        return -1;
    p->hot_blocks = b;
    p->hot_frac = 0;
    return 0;
}

/* Returns 0, 2 (usage error, message printed) or 1 (--help printed: exit 0). */
static int run_parse(int argc, char **argv, run_args *a) {
    enum {
        O_MODEL = 256,
        O_PROMPT,
        O_IDS,
        O_CHAT,
        O_NOTHINK,
        O_MAXNEW,
        O_TEMP,
        O_TOPK,
        O_TOPP,
        O_SEED,
        O_STOP,
        O_IGNEOS,
        O_POLICY,
        O_BUDGET,
        O_THREADS,
        O_CHUNK,
        O_KVDT,
        O_BACKEND,
        O_JSON,
        O_HELP,
        O_PIPE /* a pipe_conf_set flag */
    };
    static const struct option opts[] = {{"model", required_argument, 0, O_MODEL},
                                         {"prompt", required_argument, 0, O_PROMPT},
                                         {"prompt-ids", required_argument, 0, O_IDS},
                                         {"chat", no_argument, 0, O_CHAT},
                                         {"no-thinking", no_argument, 0, O_NOTHINK},
                                         {"max-new-tokens", required_argument, 0, O_MAXNEW},
                                         {"temperature", required_argument, 0, O_TEMP},
                                         {"top-k", required_argument, 0, O_TOPK},
                                         {"top-p", required_argument, 0, O_TOPP},
                                         {"seed", required_argument, 0, O_SEED},
                                         {"stop", required_argument, 0, O_STOP},
                                         {"ignore-eos", no_argument, 0, O_IGNEOS},
                                         {"policy", required_argument, 0, O_POLICY},
                                         {"hot-budget", required_argument, 0, O_BUDGET},
                                         {"threads", required_argument, 0, O_THREADS},
                                         {"prefill-chunk", required_argument, 0, O_CHUNK},
                                         {"kv-dtype", required_argument, 0, O_KVDT},
                                         {"backend", required_argument, 0, O_BACKEND},
                                         {"json", no_argument, 0, O_JSON},
                                         {"help", no_argument, 0, O_HELP},
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
    engine_opts_defaults(&a->eo);
    a->eo.backend = BACKEND_AUTO;
    engine_gen_defaults(&a->go);
#ifdef KVTIER_HAVE_PIPELINE
    pipe_conf_defaults(&a->pipe);
#endif
    a->go.stats = 1;
    const char *budget = NULL;
    local_policy_t kind = LP_FULL;
    optind = 1;
    opterr = 0;
    int c, idx = 0;
    while ((c = getopt_long(argc, argv, "", opts, &idx)) != -1) {
        int rc = 0;
        switch (c) {
        case O_MODEL:
            a->model = optarg;
            break;
        case O_PROMPT:
            a->prompt = optarg;
            break;
        case O_IDS:
            a->prompt_ids = optarg;
            break;
        case O_CHAT:
            a->chat = 1;
            break;
        case O_NOTHINK:
            a->no_thinking = 1;
            break;
        case O_MAXNEW:
            rc = cli_parse_int(RUN_PROG, "--max-new-tokens", optarg, 1, 1 << 24,
                               &a->go.max_new_tokens);
            break;
        case O_TEMP:
            rc = cli_parse_float(RUN_PROG, "--temperature", optarg, 0, 1e6,
                                 &a->go.sampling.temperature);
            a->temp_set = 1;
            break;
        case O_TOPK:
            rc = cli_parse_int(RUN_PROG, "--top-k", optarg, 0, INT_MAX, &a->go.sampling.top_k);
            a->top_k_set = 1;
            break;
        case O_TOPP:
            rc = cli_parse_float(RUN_PROG, "--top-p", optarg, 0, 1, &a->go.sampling.top_p);
            a->top_p_set = 1;
            break;
        case O_SEED: {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-') {
                fprintf(stderr,
                        "kvtier-worker run: --seed must be a non-negative integer (got '%s')\n",
                        optarg);
                rc = -1;
            }
            a->go.sampling.seed = v;
            break;
        }
        case O_STOP:
            if (!optarg[0] || a->n_stops == RUN_MAX_STOPS) {
                fprintf(stderr, "kvtier-worker run: --stop needs a non-empty text (at most %d)\n",
                        RUN_MAX_STOPS);
                rc = -1;
            } else {
                a->stops[a->n_stops++] = optarg;
            }
            break;
        case O_IGNEOS:
            a->ignore_eos = 1;
            break;
        case O_POLICY:
            if (local_policy_parse(optarg, &kind) != 0) {
                fprintf(
                    stderr,
                    "kvtier-worker run: --policy must be full, drop, window or h2o (got '%s')\n",
                    optarg);
                rc = -1;
            }
            break;
        case O_BUDGET:
            budget = optarg;
            break;
        case O_THREADS:
            rc = cli_parse_int(RUN_PROG, "--threads", optarg, 1, 1024, &a->eo.threads);
            break;
        case O_CHUNK:
            rc = cli_parse_int(RUN_PROG, "--prefill-chunk", optarg, 1, 1 << 16,
                               &a->eo.prefill_chunk);
            break;
        case O_KVDT:
            a->kv_dtype_set = 1;
            if (!strcmp(optarg, "f32"))
                a->eo.kv_dtype = DT_F32;
            else if (!strcmp(optarg, "bf16"))
                a->eo.kv_dtype = DT_BF16;
            else {
                fprintf(stderr, "kvtier-worker run: --kv-dtype must be f32 or bf16 (got '%s')\n",
                        optarg);
                rc = -1;
            }
            break;
        case O_BACKEND:
            if (backend_parse(optarg, &a->eo.backend) != 0) {
                fprintf(stderr,
                        "kvtier-worker run: --backend must be cpu, cuda or auto (got '%s')\n",
                        optarg);
                rc = -1;
            }
            break;
        case O_JSON:
            a->json = 1;
            break;
        case O_HELP:
            run_usage(stdout);
            return 1;
#ifdef KVTIER_HAVE_PIPELINE
        case O_PIPE: {
            char flag[64];
            snprintf(flag, sizeof flag, "--%s", opts[idx].name);
            rc = pipe_conf_set(&a->pipe, RUN_PROG, flag, optarg) < 0 ? -1 : 0;
            break;
        }
#endif
        default:
            fprintf(stderr, "kvtier-worker run: unknown or incomplete option '%s'\n",
                    argv[optind - 1]);
            rc = -1;
        }
        if (rc)
            return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "kvtier-worker run: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    local_policy_defaults(&a->go.policy, kind);
    if (budget && parse_budget(budget, &a->go.policy) != 0)
        return 2;
#ifdef KVTIER_HAVE_PIPELINE
    if (a->pipe.world && kind != LP_FULL) {
        fprintf(stderr, "kvtier-worker run: a pipeline runs --policy full (stages tier their "
                        "layers with `stage --tier`)\n");
        return 2;
    }
    if (!a->pipe.world && (a->pipe.layers_set || a->pipe.listen || a->pipe.next)) {
        fprintf(stderr, "kvtier-worker run: pipeline flags need --world-size N\n");
        return 2;
    }
#endif
    if (budget && kind == LP_FULL) {
        fprintf(stderr, "kvtier-worker run: --hot-budget needs --policy drop, window or h2o\n");
        return 2;
    }
    if (!a->model) {
        fprintf(stderr, "kvtier-worker run: --model DIR is required (see --help)\n");
        return 2;
    }
    if (!!a->prompt == !!a->prompt_ids) {
        fprintf(stderr, "kvtier-worker run: give exactly one of --prompt or --prompt-ids\n");
        return 2;
    }
    if (a->chat && a->prompt_ids) {
        fprintf(stderr, "kvtier-worker run: --chat needs --prompt (text)\n");
        return 2;
    }
    if (a->prompt) {
        long bad = cli_utf8_invalid_at((const unsigned char *)a->prompt, strlen(a->prompt));
        if (bad >= 0) {
            fprintf(stderr,
                    "kvtier-worker run: --prompt is not valid UTF-8 (bad byte at offset %ld)\n",
                    bad);
            return 2;
        }
    }
    struct stat st;
    if (stat(a->model, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr,
                "kvtier-worker run: model directory '%s' does not exist or is not a directory\n",
                a->model);
        return 2;
    }
    char berr[320];
#ifdef KVTIER_HAVE_PIPELINE
    if (a->pipe.world) { /* the pipeline's stages run the CPU forward pass */
        if (a->eo.backend == BACKEND_CUDA) {
            fprintf(stderr, "kvtier-worker run: a layer-range pipeline runs on the CPU backend "
                            "(GPU stages are not built yet): drop --backend cuda\n");
            return 2;
        }
        a->eo.backend = BACKEND_CPU;
    }
#endif
    if (backend_resolve(a->eo.backend, &a->eo.backend, berr, sizeof berr) != 0) {
        fprintf(stderr, "kvtier-worker run: %s\n", berr);
        return 2;
    }
    a->go.ignore_eos = a->ignore_eos;
    a->go.stop_strings = a->stops;
    a->go.n_stop_strings = a->n_stops;
    return 0;
}

/* ------------------------------------------------------------ tokenizer glue */

typedef struct {
#ifdef KVTIER_HAVE_TOKENIZER
    tokenizer_t *tok;
    tokenizer_stream_t *stream;
#endif
    int stream_stdout; /* print text as it comes */
} run_io;

#ifdef KVTIER_HAVE_TOKENIZER
static const char *run_piece(void *ud, int token, size_t *len) {
    run_io *io = ud;
    const char *s = tokenizer_stream_put(io->stream, token, len);
    if (!s) { /* ids beyond the tokenizer's vocabulary (padding rows) have no text */
        *len = 0;
        return "";
    }
    return s;
}

static const char *run_flush(void *ud, size_t *len) {
    run_io *io = ud;
    return tokenizer_stream_flush(io->stream, len);
}
#endif

static void run_text(void *ud, const char *text, size_t len) {
    run_io *io = ud;
    if (io->stream_stdout) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
}

/* Tokenizes the prompt (chat-wrapped if asked). Returns 0, 1 (runtime
 * failure) or 2 (usage), with a message printed. */
static int run_prompt(run_args *a, run_io *io, int vocab, int **ids, int *n) {
    if (a->prompt_ids)
        return cli_parse_ids(RUN_PROG, a->prompt_ids, vocab, ids, n) == 0 ? 0 : 2;
#ifdef KVTIER_HAVE_TOKENIZER
    return cli_encode_prompt(RUN_PROG, a->model, io->tok, a->prompt, a->chat, !a->no_thinking, ids,
                             n);
#else
    (void)io;
    (void)vocab;
    (void)ids;
    (void)n;
    fprintf(stderr, "kvtier-worker run: this build has no tokenizer; use --prompt-ids\n");
    return 2;
#endif
}

/* Sampling defaults from generation_config.json (transformers' rule): with
 * do_sample true its temperature / top_p / top_k, with do_sample false greedy;
 * a flag given on the command line wins, field by field. */
static void run_apply_gen_config(run_args *a, const gen_config_t *gc) {
    sampler_opts_t *s = &a->go.sampling;
    int any_flag = a->temp_set || a->top_k_set || a->top_p_set;
    if (!gc->present) {
        a->sampling_from = any_flag ? "flags" : "default (greedy)";
        return;
    }
    if (gc->do_sample) {
        if (!a->temp_set)
            s->temperature = gc->temperature;
        if (!a->top_p_set)
            s->top_p = gc->top_p;
        if (!a->top_k_set)
            s->top_k = gc->top_k;
    }
    a->sampling_from = any_flag ? "flags over generation_config.json" : "generation_config.json";
}

/* ------------------------------------------------------------ output */

static cJSON *ids_json(const int *ids, int n) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; arr && i < n; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
    return arr;
}

static double rate(int n, double s) {
    return s > 0 ? n / s : 0;
}

static void run_print_json(const run_args *a, const engine_result_t *r, const int *prompt,
                           int threads) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "prompt_ids", ids_json(prompt, r->n_prompt));
    cJSON_AddItemToObject(o, "generated_ids", ids_json(r->tokens, r->n_tokens));
    cJSON_AddStringToObject(o, "text", r->text ? r->text : "");
    cJSON_AddStringToObject(o, "stop", engine_stop_name(r->stop));
    cJSON_AddStringToObject(o, "finish_reason", engine_finish_reason(r->stop));
    cJSON_AddStringToObject(o, "backend", backend_name(a->eo.backend));
    const sampler_opts_t *so = &a->go.sampling;
    cJSON *sm = cJSON_AddObjectToObject(o, "sampling");
    cJSON_AddNumberToObject(sm, "temperature", so->temperature);
    cJSON_AddNumberToObject(sm, "top_p", so->top_p);
    cJSON_AddNumberToObject(sm, "top_k", so->top_k);
    cJSON_AddNumberToObject(sm, "seed", (double)so->seed);
    cJSON_AddStringToObject(sm, "from", a->sampling_from ? a->sampling_from : "default (greedy)");
    cJSON *t = cJSON_AddObjectToObject(o, "timings");
    cJSON_AddNumberToObject(t, "prefill_s", r->prefill_s);
    cJSON_AddNumberToObject(t, "decode_s", r->decode_s);
    cJSON_AddNumberToObject(t, "decode_steps", r->decode_steps);
    cJSON_AddNumberToObject(t, "prefill_tok_s", rate(r->n_prompt, r->prefill_s));
    cJSON_AddNumberToObject(t, "decode_tok_s", rate(r->decode_steps, r->decode_s));
    cJSON_AddNumberToObject(t, "threads", threads);
    cJSON_AddStringToObject(t, "isa", kn_isa_name(kn_isa_active()));
    cJSON *kv = cJSON_AddObjectToObject(o, "kv");
    cJSON_AddStringToObject(kv, "policy", local_policy_name(a->go.policy.kind));
    cJSON_AddNumberToObject(kv, "hot_bytes", (double)r->kv_hot_bytes);
    cJSON_AddNumberToObject(kv, "peak_bytes", (double)r->kv_peak_bytes);
    cJSON *layers = cJSON_AddArrayToObject(o, "layers");
    for (int l = 0; l < r->n_layers; l++) {
        cJSON *L = cJSON_CreateObject();
        cJSON_AddNumberToObject(L, "layer", l);
        if (r->layer_blocks)
            cJSON_AddNumberToObject(L, "blocks", r->layer_blocks[l]);
        if (r->layer_hot_blocks)
            cJSON_AddNumberToObject(L, "hot_blocks", r->layer_hot_blocks[l]);
        if (r->layer_active_mean)
            cJSON_AddNumberToObject(L, "active_mean", r->layer_active_mean[l]);
        if (r->layer_active_max)
            cJSON_AddNumberToObject(L, "active_max", r->layer_active_max[l]);
        cJSON_AddItemToArray(layers, L);
    }
    char *s = cJSON_PrintUnformatted(o);
    if (s)
        printf("%s\n", s);
    free(s);
    cJSON_Delete(o);
}

static void run_print_summary(const run_args *a, const engine_result_t *r, int threads,
                              const qwen3_config_t *mc) {
    FILE *f = stderr;
    fprintf(f, "\n---\n");
    fprintf(f, "prompt %d tokens, generated %d (stop: %s), %d threads, %s kernels%s\n", r->n_prompt,
            r->n_tokens, engine_stop_name(r->stop), threads, kn_isa_name(kn_isa_active()),
            a->eo.backend == BACKEND_CUDA ? ", CUDA backend" : "");
    if (mc->rope_scaling.kind != ROPE_SCALING_NONE) {
        char rs[160];
        fprintf(f, "rope scaling: %s\n", rope_scaling_describe(&mc->rope_scaling, rs, sizeof rs));
    }
    const sampler_opts_t *so = &a->go.sampling;
    if (so->temperature > 0)
        fprintf(f, "sampling: temperature %g, top-p %g, top-k %d, seed %llu (%s)\n",
                so->temperature, so->top_p, so->top_k, (unsigned long long)so->seed,
                a->sampling_from ? a->sampling_from : "flags");
    else
        fprintf(f, "sampling: greedy (%s)\n", a->sampling_from ? a->sampling_from : "default");
    fprintf(f, "prefill %.3f s (%.1f tok/s), decode %d steps %.3f s (%.2f tok/s)\n", r->prefill_s,
            rate(r->n_prompt, r->prefill_s), r->decode_steps, r->decode_s,
            rate(r->decode_steps, r->decode_s));
    fprintf(f, "KV policy %s: hot %.2f MiB, peak %.2f MiB\n", local_policy_name(a->go.policy.kind),
            r->kv_hot_bytes / 1048576.0, r->kv_peak_bytes / 1048576.0);
    if (r->layer_active_mean && r->layer_blocks && r->layer_hot_blocks) {
        fprintf(f, "layer  blocks  hot  active(mean/max)\n");
        for (int l = 0; l < r->n_layers; l++)
            fprintf(f, "%5d  %6d  %3d  %6.1f / %d\n", l, r->layer_blocks[l], r->layer_hot_blocks[l],
                    r->layer_active_mean[l], r->layer_active_max ? r->layer_active_max[l] : 0);
    }
}

/* ------------------------------------------------------------ main */

int run_cmd_main(int argc, char **argv) {
    run_args a;
    memset(&a, 0, sizeof a);
    int prc = run_parse(argc, argv, &a);
    if (prc == 1)
        return 0;
    if (prc)
        return prc;

    run_io io = {.stream_stdout = !a.json};
    char err[1024];
    int rc = 1, n_prompt = 0, stop_ids[2 + GEN_CONFIG_MAX_EOS], n_stop_ids = 0;
    gen_config_t gc;
    int *prompt = NULL;
    qwen3_model_t *m = NULL;
    engine_t *e = NULL;
    engine_result_t res;
    memset(&res, 0, sizeof res);
#ifdef KVTIER_HAVE_PIPELINE
    pipe_driver_t *drv = NULL;
    qwen3_model_t pview; /* rank 0's layers of m */
#endif

#ifdef KVTIER_HAVE_TOKENIZER
    char *tokp = cli_path(a.model, "tokenizer.json");
    if (cli_file_exists(tokp)) {
        io.tok = tokenizer_load(tokp, err, sizeof err);
        if (!io.tok) {
            fprintf(stderr, "kvtier-worker run: %s\n", err);
            free(tokp);
            return 1;
        }
    } else if (a.prompt) {
        fprintf(
            stderr,
            "kvtier-worker run: %s not found: --prompt needs a tokenizer (or use --prompt-ids)\n",
            tokp);
        free(tokp);
        return 2;
    }
    free(tokp);
#endif
    if (qwen3_model_load(a.model, 0, &m, err, sizeof err) != 0) {
        fprintf(stderr, "kvtier-worker run: %s\n", err);
        goto out;
    }
    if (!a.kv_dtype_set)
        a.eo.kv_dtype = m->cfg.dtype == DT_BF16 ? DT_BF16 : DT_F32;
    if (gen_config_load(a.model, m->cfg.vocab_size, &gc, err, sizeof err) != 0) {
        fprintf(stderr, "kvtier-worker run: %s\n", err);
        goto out;
    }
    run_apply_gen_config(&a, &gc);
    for (int i = 0; i < gc.n_eos; i++)
        stop_ids[n_stop_ids++] = gc.eos[i];
    rc = run_prompt(&a, &io, m->cfg.vocab_size, &prompt, &n_prompt);
    if (rc)
        goto out;
    rc = 1;
#ifdef KVTIER_HAVE_TOKENIZER
    if (io.tok) {
        static const char *const eos_names[2] = {"<|im_end|>", "<|endoftext|>"};
        for (int i = 0; i < 2; i++) {
            int id = tokenizer_token_id(io.tok, eos_names[i]);
            int dup = 0;
            for (int k = 0; k < n_stop_ids; k++)
                dup |= stop_ids[k] == id;
            if (id >= 0 && !dup)
                stop_ids[n_stop_ids++] = id;
        }
        io.stream = tokenizer_stream_new(io.tok);
        if (!io.stream)
            goto out;
        a.go.hooks.token_piece = run_piece;
        a.go.hooks.piece_flush = run_flush;
    }
#endif
    a.go.stop_ids = stop_ids;
    a.go.n_stop_ids = n_stop_ids;
    a.go.hooks.ud = &io;
    a.go.hooks.on_text = run_text;
#ifdef KVTIER_HAVE_PIPELINE
    if (a.pipe.world) { /* rank 0: an engine over our layers, the rest over the ring */
        if (pipe_conf_check(&a.pipe, m->cfg.n_layers, err, sizeof err) != 0) {
            fprintf(stderr, "kvtier-worker run: %s\n", err);
            rc = 2;
            goto out;
        }
        pipe_model_view(m, 0, a.pipe.l1, &pview);
        signal(SIGPIPE, SIG_IGN);
        drv = pipe_driver_new(&a.pipe, m, a.eo.prefill_chunk, a.eo.kv_dtype, err, sizeof err);
        if (!drv) {
            fprintf(stderr, "kvtier-worker run: %s\n", err);
            goto out;
        }
    }
    e = engine_new(drv ? &pview : m, &a.eo, err, sizeof err);
    if (e && drv)
        pipe_driver_attach(drv, e);
#else
    e = engine_new(m, &a.eo, err, sizeof err);
#endif
    if (!e) {
        fprintf(stderr, "kvtier-worker run: %s\n", err);
        goto out;
    }
    if (engine_generate(e, prompt, n_prompt, &a.go, &res, err, sizeof err) != 0) {
        fprintf(stderr, "\nkvtier-worker run: %s\n", err);
        goto out;
    }
#ifdef KVTIER_HAVE_PIPELINE
    if (drv && pipe_driver_end_seq(drv, err, sizeof err) != 0) {
        fprintf(stderr, "\nkvtier-worker run: %s\n", err);
        goto out;
    }
#endif
    int threads = tp_nthreads(engine_pool(e));
    if (a.json)
        run_print_json(&a, &res, prompt, threads);
    else
        run_print_summary(&a, &res, threads, &m->cfg);
    rc = 0;
out:
    engine_result_free(&res);
    engine_free(e);
#ifdef KVTIER_HAVE_PIPELINE
    pipe_driver_free(drv); /* BYE: the stages exit */
#endif
    qwen3_model_free(m);
    free(prompt);
#ifdef KVTIER_HAVE_TOKENIZER
    tokenizer_stream_free(io.stream);
    tokenizer_free(io.tok);
#endif
    return rc;
}
