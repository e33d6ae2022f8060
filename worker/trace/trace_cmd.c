/* trace_cmd.c - `kvtier-worker trace`: attention statistics of a model on a
 * text, per layer and head (active sets, entropy, sink mass, revivals), as a
 * table, JSON and a gnuplot chart. See trace_stats.h for the definitions. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "engine.h"
#include "trace_cmd.h"
#include "trace_stats.h"
#ifdef KVTIER_HAVE_TOKENIZER
#include "tokenizer.h"
#endif

#define TRACE_PROG "kvtier-worker trace"

typedef struct {
    const char *model, *prompt, *prompt_file, *prompt_ids, *json, *plot;
    int chat, no_thinking, prefill, max_new, max_text, per_head, gap, threads;
    float top_p;
} trace_args;

static void trace_usage(FILE *f) {
    fprintf(f,
            "usage: kvtier-worker trace --model DIR (--prompt TEXT | --prompt-file F |\n"
            "                           --prompt-ids 1,2,3) [options]\n"
            "\n"
            "Measures how concentrated a model's attention is on a text, the yardstick for\n"
            "choosing a hot KV budget. The first --prefill tokens are prefilled; every later\n"
            "token of the text is fed one at a time (teacher forcing), then --max-new tokens\n"
            "are generated greedily; each of those decode rows is observed in every layer and\n"
            "query head:\n"
            "  active set   smallest set of tokens (and of %d-token KV blocks) holding\n"
            "               --top-p of the row's attention mass\n"
            "  entropy      -sum p ln p of the row (nats); sink: mass on token 0\n"
            "  revivals     a token leaves the head's active set and comes back after\n"
            "               >= --gap idle steps (the seed notebook's revival study); per\n"
            "               layer, the same for blocks active for any head (what tiering\n"
            "               fetches back)\n"
            "Prints a table per layer (and per head with --per-head); --json writes every\n"
            "number, --plot a PNG (gnuplot) of the active-set size over the text and the\n"
            "revival gaps by layer. EOS does not stop a trace.\n"
            "\n"
            "options:\n"
            "  --model DIR         checkpoint directory (required)\n"
            "  --prompt TEXT       the text (needs tokenizer.json)\n"
            "  --prompt-file F     the text, read from a file\n"
            "  --prompt-ids LIST   the text as comma-separated token ids\n"
            "  --chat              wrap the text as one user turn of the chat template\n"
            "  --no-thinking       with --chat: enable_thinking=false\n"
            "  --max-text N        use only the first N tokens of the text\n"
            "  --prefill N         tokens prefilled before observing (default 1)\n"
            "  --max-new N         greedy tokens generated after the text (default 0)\n"
            "  --top-p P           active-set mass in (0,1] (default 0.95)\n"
            "  --gap G             idle steps that make a revival (default 50)\n"
            "  --per-head          print a row per head, not only per layer\n"
            "  --json FILE         write the statistics as JSON ('-' = stdout, then no table)\n"
            "  --plot FILE.png     draw the chart with gnuplot\n"
            "  --threads N         compute threads (default: online CPUs)\n"
            "  --help              this text\n"
            "\n"
            "exit codes: 0 ok, 1 load/run failure, 2 usage error\n",
            KV_BLOCK_TOKENS);
}

/* Returns 0, 2 (usage error, message printed) or 1 (--help printed). */
static int trace_parse(int argc, char **argv, trace_args *a) {
    enum {
        O_MODEL = 256,
        O_PROMPT,
        O_FILE,
        O_IDS,
        O_CHAT,
        O_NOTHINK,
        O_PREFILL,
        O_MAXTEXT,
        O_MAXNEW,
        O_TOPP,
        O_GAP,
        O_PERHEAD,
        O_JSON,
        O_PLOT,
        O_THREADS,
        O_HELP
    };
    static const struct option opts[] = {{"model", required_argument, 0, O_MODEL},
                                         {"prompt", required_argument, 0, O_PROMPT},
                                         {"prompt-file", required_argument, 0, O_FILE},
                                         {"prompt-ids", required_argument, 0, O_IDS},
                                         {"chat", no_argument, 0, O_CHAT},
                                         {"no-thinking", no_argument, 0, O_NOTHINK},
                                         {"prefill", required_argument, 0, O_PREFILL},
                                         {"max-new", required_argument, 0, O_MAXNEW},
                                         {"max-text", required_argument, 0, O_MAXTEXT},
                                         {"top-p", required_argument, 0, O_TOPP},
                                         {"gap", required_argument, 0, O_GAP},
                                         {"per-head", no_argument, 0, O_PERHEAD},
                                         {"json", required_argument, 0, O_JSON},
                                         {"plot", required_argument, 0, O_PLOT},
                                         {"threads", required_argument, 0, O_THREADS},
                                         {"help", no_argument, 0, O_HELP},
                                         {0, 0, 0, 0}};
    a->prefill = 1;
    a->top_p = 0.95f;
    a->gap = 50;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case O_MODEL:
            a->model = optarg;
            break;
        case O_PROMPT:
            a->prompt = optarg;
            break;
        case O_FILE:
            a->prompt_file = optarg;
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
        case O_PREFILL:
            rc = cli_parse_int(TRACE_PROG, "--prefill", optarg, 1, 1 << 24, &a->prefill);
            break;
        case O_MAXTEXT:
            rc = cli_parse_int(TRACE_PROG, "--max-text", optarg, 1, 1 << 24, &a->max_text);
            break;
        case O_MAXNEW:
            rc = cli_parse_int(TRACE_PROG, "--max-new", optarg, 0, 1 << 24, &a->max_new);
            break;
        case O_TOPP:
            rc = cli_parse_float(TRACE_PROG, "--top-p", optarg, 1e-6, 1, &a->top_p);
            break;
        case O_GAP:
            rc = cli_parse_int(TRACE_PROG, "--gap", optarg, 1, 1 << 24, &a->gap);
            break;
        case O_PERHEAD:
            a->per_head = 1;
            break;
        case O_JSON:
            a->json = optarg;
            break;
        case O_PLOT:
            a->plot = optarg;
            break;
        case O_THREADS:
            rc = cli_parse_int(TRACE_PROG, "--threads", optarg, 1, 1024, &a->threads);
            break;
        case O_HELP:
            trace_usage(stdout);
            return 1;
        default:
            fprintf(stderr, TRACE_PROG ": unknown or incomplete option '%s'\n", argv[optind - 1]);
            rc = -1;
        }
        if (rc)
            return 2;
    }
    if (optind < argc) {
        fprintf(stderr, TRACE_PROG ": unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (!a->model) {
        fprintf(stderr, TRACE_PROG ": --model DIR is required (see --help)\n");
        return 2;
    }
    if (!!a->prompt + !!a->prompt_file + !!a->prompt_ids != 1) {
        fprintf(stderr, TRACE_PROG ": give exactly one of --prompt, --prompt-file, --prompt-ids\n");
        return 2;
    }
    if (a->chat && a->prompt_ids) {
        fprintf(stderr, TRACE_PROG ": --chat needs a text prompt\n");
        return 2;
    }
    struct stat st;
    if (stat(a->model, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, TRACE_PROG ": model directory '%s' does not exist or is not a directory\n",
                a->model);
        return 2;
    }
    return 0;
}

/* ------------------------------------------------------------ the run */

typedef struct {
    trace_t *t;
    const int *forced; /* tokens fed after the prefill */
    int n_forced, next;
    int n_layers, n_heads;
    float *buf; /* [n_heads][max_pos] */
    int failed;
} trace_run;

static int tr_after_prefill(void *ud, engine_t *e, int seq, int n_prompt) {
    (void)ud;
    (void)n_prompt;
    return kvcache_debug_enable(engine_kvcache(e), seq, 1) == KV_OK ? 0 : -1;
}

static int tr_on_logits(void *ud, const float *logits, int n_vocab, int sampled) {
    trace_run *r = ud;
    (void)logits;
    (void)n_vocab;
    return r->next < r->n_forced ? r->forced[r->next++] : sampled;
}

static int tr_after_step(void *ud, engine_t *e, int seq, int step, int pos, int token) {
    trace_run *r = ud;
    (void)step;
    (void)token;
    kvcache_t *kv = engine_kvcache(e);
    for (int l = 0; l < r->n_layers; l++) {
        for (int h = 0; h < r->n_heads; h++)
            if (kvcache_debug_capture(kv, seq, l, h, r->buf + (size_t)h * (pos + 1)) != pos + 1) {
                r->failed = 1;
                return -1;
            }
        if (trace_row(r->t, l, pos, r->buf) != 0) {
            r->failed = 1;
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ output */

static void print_table(FILE *f, const trace_t *t, int n_layers, int n_heads, int per_head) {
    fprintf(f, "layer  rows  blk%%/head  blk%%/union  tokens  entropy  sink  "
               "heads-revived  tokens-revived  revivals  max-gap  blk-revivals\n");
    for (int l = 0; l < n_layers; l++) {
        trace_layer_res_t lr;
        if (trace_layer_result(t, l, &lr) != 0)
            continue;
        double tok = 0, ent = 0, sink = 0;
        int revived = 0, maxgap = 0;
        int64_t rev = 0;
        for (int h = 0; h < n_heads; h++) {
            trace_head_res_t hr;
            trace_head_result(t, l, h, &hr);
            tok += hr.active_tokens_median / n_heads;
            ent += hr.entropy_mean / n_heads;
            sink += hr.sink_mass_mean / n_heads;
            revived += hr.tokens_revived;
            rev += hr.revivals;
            maxgap = hr.max_gap > maxgap ? hr.max_gap : maxgap;
        }
        fprintf(f,
                "%5d %5d  %9.1f  %10.1f  %6.1f  %7.2f  %4.2f  %6d/%-6d  %14d  %8lld  %7d  %12lld\n",
                l, lr.rows, 100 * lr.head_block_frac_median, 100 * lr.union_block_frac_median, tok,
                ent, sink, lr.heads_with_revivals, n_heads, revived, (long long)rev, maxgap,
                (long long)lr.block_revivals);
        for (int h = 0; per_head && h < n_heads; h++) {
            trace_head_res_t hr;
            trace_head_result(t, l, h, &hr);
            fprintf(f,
                    "  head %2d          %9.1f              %6.1f  %7.2f  %4.2f  %13s  %14d  %8lld "
                    " %7d\n",
                    h, 100 * hr.active_block_frac_median, hr.active_tokens_median, hr.entropy_mean,
                    hr.sink_mass_mean, "", hr.tokens_revived, (long long)hr.revivals, hr.max_gap);
        }
    }
    fprintf(f, "blk%%/head: median over heads of the median share of blocks in a head's active "
               "set; blk%%/union: blocks active for any head; tokens: active tokens (median, mean "
               "over heads)\n");
}

static cJSON *trace_json(const trace_args *a, const trace_t *t, int n_layers, int n_heads,
                         int n_tokens, int n_prefill, int generated) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "model", a->model);
    cJSON_AddNumberToObject(o, "text_tokens", n_tokens);
    cJSON_AddNumberToObject(o, "prefill", n_prefill);
    cJSON_AddNumberToObject(o, "generated", generated);
    cJSON_AddNumberToObject(o, "top_p", a->top_p);
    cJSON_AddNumberToObject(o, "gap", a->gap);
    cJSON_AddNumberToObject(o, "block_tokens", KV_BLOCK_TOKENS);
    cJSON *gb = cJSON_AddArrayToObject(o, "gap_buckets");
    for (int i = 0; i < TRACE_GAP_BUCKETS; i++)
        cJSON_AddItemToArray(gb, cJSON_CreateNumber(trace_gap_bucket_lo(a->gap, i)));
    int wr = 0, nh = 0;
    double m = 0;
    trace_summary(t, &m, &wr, &nh);
    cJSON *s = cJSON_AddObjectToObject(o, "summary");
    cJSON_AddNumberToObject(s, "head_block_frac_median_layers_ge1", m);
    cJSON_AddNumberToObject(s, "heads_with_revivals_layers_ge1", wr);
    cJSON_AddNumberToObject(s, "heads_layers_ge1", nh);
    cJSON *ls = cJSON_AddArrayToObject(o, "layers");
    for (int l = 0; l < n_layers; l++) {
        trace_layer_res_t lr;
        if (trace_layer_result(t, l, &lr) != 0)
            continue;
        cJSON *lo = cJSON_CreateObject();
        cJSON_AddNumberToObject(lo, "layer", l);
        cJSON_AddNumberToObject(lo, "rows", lr.rows);
        cJSON_AddNumberToObject(lo, "head_block_frac_median", lr.head_block_frac_median);
        cJSON_AddNumberToObject(lo, "union_blocks_median", lr.union_blocks_median);
        cJSON_AddNumberToObject(lo, "union_block_frac_median", lr.union_block_frac_median);
        cJSON_AddNumberToObject(lo, "heads_with_revivals", lr.heads_with_revivals);
        cJSON_AddNumberToObject(lo, "blocks_revived", lr.blocks_revived);
        cJSON_AddNumberToObject(lo, "block_revivals", (double)lr.block_revivals);
        cJSON_AddNumberToObject(lo, "max_block_gap", lr.max_block_gap);
        cJSON *hs = cJSON_AddArrayToObject(lo, "heads");
        for (int h = 0; h < n_heads; h++) {
            trace_head_res_t hr;
            trace_head_result(t, l, h, &hr);
            cJSON *ho = cJSON_CreateObject();
            cJSON_AddNumberToObject(ho, "head", h);
            cJSON_AddNumberToObject(ho, "active_tokens_median", hr.active_tokens_median);
            cJSON_AddNumberToObject(ho, "active_tokens_mean", hr.active_tokens_mean);
            cJSON_AddNumberToObject(ho, "active_token_frac_median", hr.active_token_frac_median);
            cJSON_AddNumberToObject(ho, "active_blocks_median", hr.active_blocks_median);
            cJSON_AddNumberToObject(ho, "active_block_frac_median", hr.active_block_frac_median);
            cJSON_AddNumberToObject(ho, "entropy_mean", hr.entropy_mean);
            cJSON_AddNumberToObject(ho, "sink_mass_mean", hr.sink_mass_mean);
            cJSON_AddNumberToObject(ho, "tokens_revived", hr.tokens_revived);
            cJSON_AddNumberToObject(ho, "revivals", (double)hr.revivals);
            cJSON_AddNumberToObject(ho, "max_gap", hr.max_gap);
            cJSON_AddNumberToObject(ho, "max_gap_token", hr.max_gap_token);
            cJSON *hh = cJSON_AddArrayToObject(ho, "gap_hist");
            for (int i = 0; i < TRACE_GAP_BUCKETS; i++)
                cJSON_AddItemToArray(hh, cJSON_CreateNumber((double)hr.gap_hist[i]));
            cJSON_AddItemToArray(hs, ho);
        }
        int rows = trace_series(t, l, NULL, NULL, NULL);
        int *pos = malloc(sizeof(int) * (size_t)(rows ? rows : 1));
        double *bf = malloc(sizeof(double) * (size_t)(rows ? rows : 1));
        if (pos && bf) {
            trace_series(t, l, pos, bf, NULL);
            cJSON *sp = cJSON_AddArrayToObject(lo, "series_pos");
            cJSON *sb = cJSON_AddArrayToObject(lo, "series_block_frac");
            for (int i = 0; i < rows; i++) {
                cJSON_AddItemToArray(sp, cJSON_CreateNumber(pos[i]));
                cJSON_AddItemToArray(sb, cJSON_CreateNumber(round(bf[i] * 1e4) / 1e4));
            }
        }
        free(pos);
        free(bf);
        cJSON_AddItemToArray(ls, lo);
    }
    return o;
}

/* Draws the chart with gnuplot (inline data). 0 or -1 (message printed). */
static int trace_plot(const trace_args *a, const trace_t *t, int n_layers, int n_heads) {
    FILE *g = popen("gnuplot", "w");
    if (!g) {
        fprintf(stderr, TRACE_PROG ": --plot: cannot start gnuplot\n");
        return -1;
    }
    fprintf(g,
            "set terminal pngcairo size 1100,900 noenhanced\nset output '%s'\n"
            "set multiplot layout 2,1\nset key outside right\nset grid\n"
            "set title 'active set (top-p %.2f): mean share of KV blocks over heads'\n"
            "set xlabel 'position'\nset ylabel 'share of blocks'\nset yrange [0:1]\nplot ",
            a->plot, a->top_p);
    for (int l = 0; l < n_layers; l++)
        fprintf(g, "%s'-' with lines title 'layer %d'", l ? ", " : "", l);
    fprintf(g, "\n");
    for (int l = 0; l < n_layers; l++) {
        int rows = trace_series(t, l, NULL, NULL, NULL);
        int *pos = malloc(sizeof(int) * (size_t)(rows ? rows : 1));
        double *bf = malloc(sizeof(double) * (size_t)(rows ? rows : 1));
        if (pos && bf)
            trace_series(t, l, pos, bf, NULL);
        for (int i = 0; pos && bf && i < rows; i++)
            fprintf(g, "%d %.4f\n", pos[i], bf[i]);
        fprintf(g, "e\n");
        free(pos);
        free(bf);
    }
    fprintf(g,
            "set title 'revivals: tokens back in a head''s active set after >= %d idle steps "
            "(all heads of the layer)'\nset xlabel 'idle gap (steps, lower bound of "
            "bucket)'\nset ylabel 'revivals'\nset yrange [0.9:*]\nset logscale y\n"
            "set style data histograms\nset style histogram clustered\n"
            "set style fill solid 0.8\nplot ",
            a->gap);
    for (int l = 0; l < n_layers; l++)
        fprintf(g, "%s'-' using 2:xtic(1) title 'layer %d'", l ? ", " : "", l);
    fprintf(g, "\n");
    for (int l = 0; l < n_layers; l++) {
        for (int i = 0; i < TRACE_GAP_BUCKETS; i++) {
            int64_t c = 0;
            for (int h = 0; h < n_heads; h++) {
                trace_head_res_t hr;
                trace_head_result(t, l, h, &hr);
                c += hr.gap_hist[i];
            }
            /* log scale: an empty bucket is drawn as 0.5 (below 1) */
            fprintf(g, "%s%d %g\n", i == TRACE_GAP_BUCKETS - 1 ? ">=" : "",
                    trace_gap_bucket_lo(a->gap, i), c ? (double)c : 0.5);
        }
        fprintf(g, "e\n");
    }
    fprintf(g, "unset multiplot\n");
    int rc = pclose(g);
    if (rc != 0) {
        fprintf(stderr, TRACE_PROG ": --plot: gnuplot failed (status %d); is gnuplot installed?\n",
                rc);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ main */

int trace_cmd_main(int argc, char **argv) {
    trace_args a;
    memset(&a, 0, sizeof a);
    int prc = trace_parse(argc, argv, &a);
    if (prc == 1)
        return 0;
    if (prc)
        return prc;
    char err[1024];
    int rc = 1, n = 0;
    int *ids = NULL;
    char *text = NULL;
    qwen3_model_t *m = NULL;
    engine_t *e = NULL;
    trace_t *t = NULL;
    trace_run r;
    memset(&r, 0, sizeof r);
    engine_result_t res;
    memset(&res, 0, sizeof res);
#ifdef KVTIER_HAVE_TOKENIZER
    tokenizer_t *tok = NULL;
#endif
    if (qwen3_model_load(a.model, 0, &m, err, sizeof err) != 0) {
        fprintf(stderr, TRACE_PROG ": %s\n", err);
        goto out;
    }
    if (a.prompt_ids) {
        if (cli_parse_ids(TRACE_PROG, a.prompt_ids, m->cfg.vocab_size, &ids, &n) != 0) {
            rc = 2;
            goto out;
        }
    } else {
#ifdef KVTIER_HAVE_TOKENIZER
        size_t len = 0;
        const char *src = a.prompt;
        if (a.prompt_file) {
            text = cli_read_file(TRACE_PROG, a.prompt_file, &len);
            if (!text) {
                rc = 2;
                goto out;
            }
            src = text;
        } else {
            len = strlen(src);
        }
        long bad = cli_utf8_invalid_at((const unsigned char *)src, len);
        if (bad >= 0 || strlen(src) != len) {
            fprintf(stderr, TRACE_PROG ": the prompt is not valid UTF-8 text (bad byte at %ld)\n",
                    bad >= 0 ? bad : (long)strlen(src));
            rc = 2;
            goto out;
        }
        char *tokp = cli_path(a.model, "tokenizer.json");
        tok = cli_file_exists(tokp) ? tokenizer_load(tokp, err, sizeof err) : NULL;
        if (!tok) {
            fprintf(stderr, TRACE_PROG ": %s: %s\n", tokp,
                    cli_file_exists(tokp) ? err : "not found (a text prompt needs it)");
            free(tokp);
            goto out;
        }
        free(tokp);
        rc = cli_encode_prompt(TRACE_PROG, a.model, tok, src, a.chat, !a.no_thinking, &ids, &n);
        if (rc)
            goto out;
        rc = 1;
#else
        fprintf(stderr, TRACE_PROG ": this build has no tokenizer; use --prompt-ids\n");
        rc = 2;
        goto out;
#endif
    }
    if (a.max_text > 0 && n > a.max_text)
        n = a.max_text;
    int n_pre = a.prefill < n ? a.prefill : n;
    int steps = (n - n_pre) + a.max_new;
    if (n == 0 || steps == 0) {
        fprintf(stderr,
                TRACE_PROG ": nothing to observe: the text has %d tokens, --prefill %d, "
                           "--max-new %d\n",
                n, a.prefill, a.max_new);
        rc = 2;
        goto out;
    }
    int max_pos = n + a.max_new;
    if (max_pos > m->cfg.max_pos) {
        fprintf(stderr,
                TRACE_PROG ": the text (%d tokens) + --max-new %d exceeds the model's "
                           "max_position_embeddings %d\n",
                n, a.max_new, m->cfg.max_pos);
        rc = 2;
        goto out;
    }
    trace_opts_t to = {.n_layers = m->cfg.n_layers,
                       .n_heads = m->cfg.n_heads,
                       .max_pos = max_pos,
                       .block_tokens = KV_BLOCK_TOKENS,
                       .top_p = a.top_p,
                       .gap = a.gap};
    t = trace_new(&to);
    r.buf = malloc(sizeof(float) * (size_t)m->cfg.n_heads * (size_t)max_pos);
    if (!t || !r.buf) {
        fprintf(stderr, TRACE_PROG ": out of memory (%d layers x %d heads x %d positions)\n",
                m->cfg.n_layers, m->cfg.n_heads, max_pos);
        goto out;
    }
    r.t = t;
    r.forced = ids + n_pre;
    r.n_forced = n - n_pre;
    r.n_layers = m->cfg.n_layers;
    r.n_heads = m->cfg.n_heads;
    engine_opts_t eo;
    engine_opts_defaults(&eo);
    eo.threads = a.threads;
    eo.kv_dtype = m->cfg.dtype == DT_BF16 ? DT_BF16 : DT_F32;
    engine_gen_opts_t go;
    engine_gen_defaults(&go);
    /* The engine does not run its last sampled token through the model: one
     * more than the rows to observe (positions n_pre .. n + max_new - 1). */
    go.max_new_tokens = steps + 1;
    go.ignore_eos = 1;
    go.hooks.ud = &r;
    go.hooks.after_prefill = tr_after_prefill;
    go.hooks.on_logits = tr_on_logits;
    go.hooks.after_step = tr_after_step;
    e = engine_new(m, &eo, err, sizeof err);
    if (!e) {
        fprintf(stderr, TRACE_PROG ": %s\n", err);
        goto out;
    }
    if (engine_generate(e, ids, n_pre, &go, &res, err, sizeof err) != 0) {
        fprintf(stderr, TRACE_PROG ": %s%s\n", err,
                r.failed ? " (capturing the attention rows failed)" : "");
        goto out;
    }
    int to_stdout = a.json && !strcmp(a.json, "-");
    if (!to_stdout) {
        printf("trace: %s, %d text tokens (%d prefilled), %d generated, top-p %.2f, gap %d\n",
               a.model, n, n_pre, a.max_new, a.top_p, a.gap);
        print_table(stdout, t, m->cfg.n_layers, m->cfg.n_heads, a.per_head);
        int wr = 0, nh = 0;
        double frac = 0;
        trace_summary(t, &frac, &wr, &nh);
        printf("layers >= 1: median per-head active set %.1f%% of the blocks; heads with "
               "revivals after >= %d idle steps: %d of %d\n",
               100 * frac, a.gap, wr, nh);
    }
    if (a.json) {
        cJSON *o = trace_json(&a, t, m->cfg.n_layers, m->cfg.n_heads, n, n_pre, a.max_new);
        char *s = o ? cJSON_Print(o) : NULL;
        cJSON_Delete(o);
        FILE *f = to_stdout ? stdout : fopen(a.json, "w");
        if (!s || !f || fputs(s, f) < 0 || fputc('\n', f) < 0 || (!to_stdout && fclose(f))) {
            fprintf(stderr, TRACE_PROG ": cannot write %s\n", a.json);
            free(s);
            goto out;
        }
        free(s);
    }
    if (a.plot && trace_plot(&a, t, m->cfg.n_layers, m->cfg.n_heads) != 0)
        goto out;
    rc = 0;
out:
    engine_result_free(&res);
    engine_free(e);
    trace_free(t);
    free(r.buf);
    qwen3_model_free(m);
    free(ids);
    free(text);
#ifdef KVTIER_HAVE_TOKENIZER
    tokenizer_free(tok);
#endif
    return rc;
}
