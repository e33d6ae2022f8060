/* quality_bench.c - does tiering keep the answer where dropping loses it?
 *
 * On a model (default: the trained fixture) and a set of recall prompts
 * (JSON lines {"prompt": ..., "answer": ...}), runs greedy decoding with the
 * full cache (the truth) and, at equal hot budgets, with every policy:
 *   tiered-exact, tiered-prefetch  (embedded tier: host RAM + RocksDB)
 *   drop    the seed's RecentlyActivatedCache (T = 50, top_p 0.95, budget)
 *   window  StreamingLLM (sink + recent window)
 *   h2o     accumulated-attention heavy hitters + recent
 * Two runs per policy and prompt: free-running greedy (first divergence from
 * the full cache, task accuracy) and teacher-forced on the full cache's
 * tokens (argmax agreement, KL(full || policy) of next-token distributions,
 * attention-mass coverage = full-cache mass on the blocks the policy had hot
 * at each step). Prints a table, writes JSON rows and a gnuplot PNG.
 *
 * Not a test: a measurement. Usage: quality_bench --help.
 */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "kvcache.h"
#include "tier.h"
#include "tiering.h"
#include "tokenizer.h"

#define QB_MAX_PROMPTS 64
#define QB_MAX_BUDGETS 8

typedef enum {
    P_FULL,
    P_TEXACT,
    P_TADAPT,
    P_TPREFETCH,
    P_DROP,
    P_WINDOW,
    P_H2O,
    P_TASYNC, /* tiered-exact with speculation and overlapped fetches */
    P_N
} pol_t;
static const char *pol_name[P_N] = {
    "full",   "tiered-exact", "tiered-adaptive",   "tiered-prefetch", "drop",
    "window", "h2o",          "tiered-exact-async"};

typedef struct {
    char *prompt, *answer;
    int *ids;
    int n_ids;
} qb_prompt;

/* What the full-cache run leaves behind for one prompt. */
typedef struct {
    int n;       /* generated tokens */
    int *tokens; /* [n] */
    float *logp; /* [n][vocab] log-softmax at each decode position */
    float *mass; /* [n][layers][max_blocks] head-averaged attention mass per block */
    int max_blocks;
    int correct;
} qb_truth;

/* Per-run bookkeeping shared with the hooks. */
typedef struct {
    const qwen3_model_t *m;
    kvcache_t *kv;
    int seq;
    int started;
    int forced;       /* teacher forcing on truth->tokens */
    qb_truth *truth;  /* NULL for the full run itself */
    int record_truth; /* the full run: capture logits and masses */
    int step;         /* decode position index */
    float *probs;     /* scratch [context] */
    uint8_t *hot;     /* [layers][max_blocks] hot mask captured before attention */
    double agree, kl, cover;
    int budget;                 /* hot budget in blocks per layer (0: full cache) */
    tiering_t *tr;              /* the tiering driver of a tiered run */
    tiering_stats_t at_prefill; /* its counters when the prompt was in: decode = end - this */
    double out_blocks; /* sum over decode attentions of the layer's blocks beyond the budget */
    int n_steps, n_cover;
} qb_run;

static void log_softmax(const float *x, int n, float *out) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        mx = x[i] > mx ? x[i] : mx;
    double s = 0;
    for (int i = 0; i < n; i++)
        s += exp((double)x[i] - mx);
    float ls = (float)(log(s) + mx);
    for (int i = 0; i < n; i++)
        out[i] = x[i] - ls;
}

static int h_before_attention(void *ud, engine_t *e, int seq, int layer, int pos0, int n,
                              const float *q) {
    qb_run *r = ud;
    (void)q;
    (void)pos0;
    if (!r->started) {
        r->kv = engine_kvcache(e);
        r->seq = seq;
        r->started = 1;
        if (r->record_truth)
            kvcache_debug_enable(r->kv, seq, 1);
    }
    if (n == 1 && r->truth && r->hot) { /* decode: which blocks does this step see? */
        int nb = kvcache_seq_blocks(r->kv, seq, layer);
        uint8_t *h = r->hot + (size_t)layer * r->truth->max_blocks;
        for (int b = 0; b < nb && b < r->truth->max_blocks; b++)
            h[b] = kvcache_block_readable(r->kv, seq, layer, b);
        r->out_blocks += r->budget > 0 && nb > r->budget ? nb - r->budget : 0;
    }
    return 0;
}

static int h_after_prefill(void *ud, engine_t *e, int seq, int n_prompt) {
    qb_run *r = ud;
    (void)e, (void)seq, (void)n_prompt;
    if (r->tr)
        tiering_peek(r->tr, &r->at_prefill);
    return 0;
}

static int h_on_logits(void *ud, const float *logits, int nv, int sampled) {
    qb_run *r = ud;
    int i = r->step;
    if (r->record_truth) {
        qb_truth *t = r->truth;
        log_softmax(logits, nv, t->logp + (size_t)i * nv);
        return sampled;
    }
    if (!r->forced || !r->truth || i >= r->truth->n)
        return sampled;
    /* agreement and KL(full || policy) at this position */
    float *lp = malloc((size_t)nv * sizeof *lp);
    if (lp) {
        log_softmax(logits, nv, lp);
        const float *tp = r->truth->logp + (size_t)i * nv;
        double kl = 0;
        for (int k = 0; k < nv; k++)
            if (tp[k] > -30)
                kl += exp(tp[k]) * ((double)tp[k] - lp[k]);
        r->kl += kl > 0 ? kl : 0;
        free(lp);
    }
    r->agree += sampled == r->truth->tokens[i];
    r->n_steps++;
    return r->truth->tokens[i];
}

static int h_after_step(void *ud, engine_t *e, int seq, int step, int pos, int token) {
    qb_run *r = ud;
    (void)e, (void)token;
    const qwen3_model_t *m = r->m;
    int L = m->cfg.n_layers, H = m->cfg.n_heads;
    if (r->record_truth && r->truth) {
        qb_truth *t = r->truth;
        for (int l = 0; l < L; l++) {
            float *row = t->mass + ((size_t)step * L + l) * t->max_blocks;
            for (int h = 0; h < H; h++) {
                int n = kvcache_debug_capture(r->kv, seq, l, h, r->probs);
                for (int p = 0; p < n; p++)
                    if (p / KV_BLOCK_TOKENS < t->max_blocks)
                        row[p / KV_BLOCK_TOKENS] += r->probs[p] / (float)H;
            }
        }
    } else if (r->forced && r->truth && r->hot && step < r->truth->n) {
        /* coverage: the truth's mass on blocks this run had hot */
        double c = 0;
        int nb = pos / KV_BLOCK_TOKENS + 1;
        for (int l = 0; l < L; l++) {
            const float *row = r->truth->mass + ((size_t)step * L + l) * r->truth->max_blocks;
            const uint8_t *h = r->hot + (size_t)l * r->truth->max_blocks;
            double tot = 0, got = 0;
            for (int b = 0; b < nb && b < r->truth->max_blocks; b++) {
                tot += row[b];
                got += h[b] ? row[b] : 0;
            }
            c += tot > 0 ? got / tot : 1.0;
        }
        r->cover += c / L;
        r->n_cover++;
    }
    r->step++;
    return 0;
}

typedef struct {
    double agree_forced, agree_prefix, task, cover, kl, recalls, fetched, peak, tok_s;
    double resident, fetch_calls, put_calls, summaries, lat50, lat99;
    int degraded;           /* runs where the tier service failed (blocks stayed hot) */
    double demoted;         /* blocks beyond the hot budget per decode step (all layers) */
    double prefill_fetched; /* bytes fetched during the prompt's prefill */
    int n;
} qb_acc;

typedef struct {
    engine_t *e;
    tokenizer_t *tok;
    tierlink_t *link;
    int max_new;
    uint64_t next_seq;
    int stage_blocks;
} qb_env;

static int contains_answer(const tokenizer_t *tok, const int *ids, int n, const char *answer) {
    int32_t *t32 = malloc((size_t)(n ? n : 1) * sizeof *t32);
    if (!t32)
        return 0;
    for (int i = 0; i < n; i++)
        t32[i] = ids[i];
    char *text = tokenizer_decode(tok, t32, (size_t)n);
    free(t32);
    int ok = text && answer && *answer && strstr(text, answer) != NULL;
    free(text);
    return ok;
}

/* One generation with policy pol at hot budget `blocks` (per layer). */
static int qb_generate(qb_env *env, const qb_prompt *p, pol_t pol, int blocks, qb_run *r,
                       engine_result_t *res, tiering_stats_t *ts) {
    engine_gen_opts_t g;
    engine_gen_defaults(&g);
    g.max_new_tokens = env->max_new;
    g.ignore_eos = 1; /* compare equal lengths */
    g.hooks.ud = r;
    g.hooks.before_attention = h_before_attention;
    g.hooks.on_logits = h_on_logits;
    g.hooks.after_step = h_after_step;
    g.hooks.after_prefill = h_after_prefill;
    r->budget = pol == P_FULL ? 0 : blocks;
    r->tr = NULL;
    memset(&r->at_prefill, 0, sizeof r->at_prefill);
    memset(ts, 0, sizeof *ts);
    tiering_t *tr = NULL;
    char err[512];
    if (pol == P_TEXACT || pol == P_TADAPT || pol == P_TPREFETCH || pol == P_TASYNC) {
        tiering_opts_t to;
        tiering_opts_defaults(&to);
        to.link = env->link;
        to.seq_id = env->next_seq++;
        to.mode = pol == P_TPREFETCH ? TIERING_PREFETCH : TIERING_EXACT;
        to.adaptive_budget = pol == P_TADAPT; /* the same total, split by need */
        if (pol == P_TASYNC) /* else the defaults: each layer fetches before it attends */
            to.speculate = to.overlap = 1;
        to.hot_blocks = blocks;
        to.stage_blocks = env->stage_blocks;
        tr = tiering_new(&to, err, sizeof err);
        if (!tr) {
            fprintf(stderr, "quality_bench: %s\n", err);
            return -1;
        }
        r->tr = tr;
        tiering_install(tr, &g);
    } else if (pol != P_FULL) {
        local_policy_defaults(&g.policy, pol == P_DROP     ? LP_DROP
                                         : pol == P_WINDOW ? LP_WINDOW
                                                           : LP_H2O);
        g.policy.hot_blocks = blocks;
        g.stats = 1;
    }
    memset(res, 0, sizeof *res);
    int rc = engine_generate(env->e, p->ids, p->n_ids, &g, res, err, sizeof err);
    if (tr) {
        tiering_finish(tr, 0, ts);
        tiering_free(tr);
        r->tr = NULL;
    }
    if (rc != 0)
        fprintf(stderr, "quality_bench: %s: %s\n", pol_name[pol], err);
    return rc;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int load_prompts(const char *path, const tokenizer_t *tok, qb_prompt *out, int max) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "quality_bench: cannot open %s\n", path);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (n < max && getline(&line, &cap, f) > 0) {
        cJSON *j = cJSON_Parse(line);
        if (!j)
            continue;
        cJSON *pr = cJSON_GetObjectItem(j, "prompt"), *an = cJSON_GetObjectItem(j, "answer");
        if (cJSON_IsString(pr)) {
            qb_prompt *p = &out[n];
            p->prompt = strdup(pr->valuestring);
            p->answer = cJSON_IsString(an) ? strdup(an->valuestring) : strdup("");
            int32_t *ids = NULL;
            size_t ni = 0;
            char err[256];
            if (tokenizer_encode(tok, p->prompt, strlen(p->prompt), &ids, &ni, err, sizeof err) ==
                    0 &&
                ni > 0) {
                p->ids = malloc(ni * sizeof *p->ids);
                for (size_t i = 0; i < ni; i++)
                    p->ids[i] = ids[i];
                p->n_ids = (int)ni;
                n++;
            } else {
                free(p->prompt), free(p->answer);
            }
            free(ids);
        }
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    return n;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: quality_bench [--model DIR] [--prompts FILE] [--max-new N] [--budgets LIST]\n"
            "                     [--limit N] [--threads N] [--json FILE] [--plot FILE.png]\n"
            "\n"
            "Greedy decoding on recall prompts with the full cache and with each policy at\n"
            "equal hot budgets (fractions of the sequence's KV). Prints a table.\n"
            "  --model DIR      checkpoint (default tests/fixtures/tiny-qwen3)\n"
            "  --prompts FILE   JSON lines {prompt, answer} (default "
            "tests/fixtures/recall_prompts.jsonl)\n"
            "  --max-new N      tokens generated per prompt (default 64)\n"
            "  --budgets LIST   comma-separated fractions (default 0.1,0.2,0.35)\n"
            "  --limit N        use the first N prompts only\n"
            "  --threads N      compute threads (default: online CPUs)\n"
            "  --json FILE      write one JSON row per policy and budget\n"
            "  --plot FILE.png  agreement and recall traffic vs budget (needs gnuplot)\n"
            "  --tier ADDR      tiered policies use the kvtierd at ADDR (or a load balancer)\n"
            "                   instead of the embedded tier\n"
            "  --stage-blocks N staged blocks per layer the tiered worker keeps between\n"
            "                   attentions (default: the hot budget; 0 = refetch every step)\n"
            "  --policies LIST  comma-separated subset of full,tiered-exact,tiered-adaptive,\n"
            "                   tiered-prefetch,drop,window,h2o (default: all; full always runs;\n"
            "                   tiered-adaptive = exact with the budget split over the layers\n"
            "                   by their active-set sizes; tiered-exact-async = exact with the\n"
            "                   speculative step-start fetch and fetches overlapped with the\n"
            "                   attention (tiering_opts_t speculate, overlap)\n");
}

static void write_plot(const char *png, cJSON *rows) {
    char dat[] = "/tmp/kvtier-qb-XXXXXX";
    int fd = mkstemp(dat);
    if (fd < 0)
        return;
    FILE *f = fdopen(fd, "w");
    for (int p = 1; p < P_N; p++) {
        fprintf(f, "# %s\n", pol_name[p]);
        cJSON *row;
        cJSON_ArrayForEach(row, rows) {
            if (strcmp(cJSON_GetObjectItem(row, "policy")->valuestring, pol_name[p]))
                continue;
            fprintf(f, "%g %g %g %g\n", cJSON_GetObjectItem(row, "budget")->valuedouble,
                    cJSON_GetObjectItem(row, "agreement")->valuedouble,
                    cJSON_GetObjectItem(row, "fetched_bytes_per_token")->valuedouble / 1024.0,
                    cJSON_GetObjectItem(row, "task_accuracy")->valuedouble);
        }
        fprintf(f, "\n\n");
    }
    fclose(f);
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "gnuplot -e \"names='tiered-exact tiered-adaptive tiered-prefetch drop window h2o';"
             "set terminal png size 1100,420; set output '%s';"
             "set multiplot layout 1,2;"
             "set key center right box opaque; set grid; set xlabel 'hot budget (fraction of KV)';"
             "set ylabel 'greedy agreement with full cache'; set yrange [0:1.02];"
             "plot for [i=0:5] '%s' index i using 1:2 with linespoints lw 2 title word(names, i+1);"
             "set ylabel 'KiB fetched per token'; set yrange [*:*]; set key top right;"
             "plot for [i=0:2] '%s' index i using 1:3 with linespoints lw 2 title word(names, i+1);"
             "unset multiplot\" 2>/dev/null",
             png, dat, dat);
    if (system(cmd) != 0)
        fprintf(stderr, "quality_bench: gnuplot failed; no plot written\n");
    unlink(dat);
}

int main(int argc, char **argv) {
    const char *model = "tests/fixtures/tiny-qwen3",
               *prompts = "tests/fixtures/recall_prompts.jsonl";
    const char *json = NULL, *plot = NULL;
    int max_new = 64, limit = QB_MAX_PROMPTS, threads = 0, stage_blocks = -1;
    const char *tier_addr = NULL;
    int want_pol[P_N];
    for (int i = 0; i < P_N; i++)
        want_pol[i] = 1;
    double budgets[QB_MAX_BUDGETS] = {0.1, 0.2, 0.35};
    int n_budgets = 3;
    static const struct option lo[] = {{"model", 1, 0, 'm'},
                                       {"prompts", 1, 0, 'p'},
                                       {"max-new", 1, 0, 'n'},
                                       {"budgets", 1, 0, 'b'},
                                       {"limit", 1, 0, 'l'},
                                       {"threads", 1, 0, 't'},
                                       {"json", 1, 0, 'j'},
                                       {"plot", 1, 0, 'g'},
                                       {"tier", 1, 0, 'T'},
                                       {"stage-blocks", 1, 0, 'S'},
                                       {"policies", 1, 0, 'P'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (o) {
        case 'm':
            model = optarg;
            break;
        case 'p':
            prompts = optarg;
            break;
        case 'n':
            max_new = atoi(optarg);
            break;
        case 'l':
            limit = atoi(optarg);
            break;
        case 't':
            threads = atoi(optarg);
            break;
        case 'j':
            json = optarg;
            break;
        case 'g':
            plot = optarg;
            break;
        case 'T':
            tier_addr = optarg;
            break;
        case 'S':
            stage_blocks = atoi(optarg);
            break;
        case 'P': {
            memset(want_pol, 0, sizeof want_pol);
            char *s = strdup(optarg), *save = NULL;
            for (char *tk = strtok_r(s, ",", &save); tk; tk = strtok_r(NULL, ",", &save)) {
                int found = 0;
                for (int i = 0; i < P_N; i++)
                    if (!strcmp(tk, pol_name[i]))
                        want_pol[i] = 1, found = 1;
                if (!found) {
                    fprintf(stderr, "quality_bench: unknown policy '%s'\n", tk);
                    free(s);
                    return 2;
                }
            }
            free(s);
            break;
        }
        case 'b': {
            n_budgets = 0;
            char *s = strdup(optarg), *save = NULL;
            for (char *tk = strtok_r(s, ",", &save); tk && n_budgets < QB_MAX_BUDGETS;
                 tk = strtok_r(NULL, ",", &save))
                budgets[n_budgets++] = atof(tk);
            free(s);
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (max_new < 1 || limit < 1 || n_budgets < 1) {
        usage(stderr);
        return 2;
    }
    for (int i = 0; i < n_budgets; i++)
        if (!(budgets[i] > 0 && budgets[i] <= 1)) {
            fprintf(stderr, "quality_bench: budgets must be fractions in (0,1]\n");
            return 2;
        }
    char err[512];
    qwen3_model_t *m = NULL;
    if (qwen3_model_load(model, 0, &m, err, sizeof err) != 0) {
        fprintf(stderr, "quality_bench: %s\n", err);
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", model);
    tokenizer_t *tok = tokenizer_load(path, err, sizeof err);
    if (!tok) {
        fprintf(stderr, "quality_bench: %s\n", err);
        return 1;
    }
    static qb_prompt ps[QB_MAX_PROMPTS];
    int np = load_prompts(prompts, tok, ps, limit < QB_MAX_PROMPTS ? limit : QB_MAX_PROMPTS);
    if (np <= 0) {
        fprintf(stderr, "quality_bench: no prompts in %s\n", prompts);
        return 1;
    }
    engine_opts_t eo;
    engine_opts_defaults(&eo);
    eo.threads = threads;
    eo.prefill_chunk = 64;
    engine_t *e = engine_new(m, &eo, err, sizeof err);
    char tdir[] = "/tmp/kvtier-qb-tier-XXXXXX";
    tier_options topt;
    tier_options_init(&topt);
    tier_t *tier = NULL;
    if (!e || !mkdtemp(tdir)) {
        fprintf(stderr, "quality_bench: %s\n", e ? "mkdtemp failed" : err);
        return 1;
    }
    topt.data_dir = tdir;
    topt.host_budget = 256ull << 20;
    if (tier_open(&topt, &tier, err, sizeof err) != TIER_OK) {
        fprintf(stderr, "quality_bench: %s\n", err);
        return 1;
    }
    qb_env env = {e,
                  tok,
                  tier_addr ? tierlink_remote_new(tier_addr, "bench", NULL, 5000)
                            : tierlink_embedded_new(tier, "bench"),
                  max_new,
                  (uint64_t)getpid() << 20 | 1,
                  stage_blocks};
    if (!env.link) {
        fprintf(stderr, "quality_bench: cannot create the tier link\n");
        return 1;
    }
    int L = m->cfg.n_layers, V = m->cfg.vocab_size;

    static qb_acc acc[P_N][QB_MAX_BUDGETS];
    memset(acc, 0, sizeof acc);
    double full_tok_s = 0, full_peak = 0;
    int full_correct = 0;
    for (int pi = 0; pi < np; pi++) {
        qb_prompt *p = &ps[pi];
        int ctx = p->n_ids + max_new;
        qb_truth t = {0};
        t.max_blocks = ctx / KV_BLOCK_TOKENS + 2;
        t.tokens = NULL;
        t.logp = calloc((size_t)max_new * V, sizeof(float));
        t.mass = calloc((size_t)max_new * L * t.max_blocks, sizeof(float));
        float *probs = malloc((size_t)(ctx + 16) * sizeof(float));
        uint8_t *hot = calloc((size_t)L * t.max_blocks, 1);
        if (!t.logp || !t.mass || !probs || !hot) {
            fprintf(stderr, "quality_bench: out of memory\n");
            return 1;
        }
        /* ---- the truth */
        qb_run r = {0};
        r.m = m, r.truth = &t, r.record_truth = 1, r.probs = probs;
        engine_result_t res;
        tiering_stats_t ts;
        if (qb_generate(&env, p, P_FULL, 0, &r, &res, &ts) != 0)
            return 1;
        t.n = res.n_tokens;
        t.tokens = malloc((size_t)(t.n ? t.n : 1) * sizeof(int));
        memcpy(t.tokens, res.tokens, (size_t)t.n * sizeof(int));
        t.correct = contains_answer(tok, t.tokens, t.n, p->answer);
        full_correct += t.correct;
        full_peak += (double)res.kv_peak_bytes;
        engine_result_free(&res);
        /* the speed reference: the full cache run as the policies are (teacher
         * forced, same hooks), not the truth run that also captures masses */
        {
            uint8_t *hot0 = calloc((size_t)L * t.max_blocks, 1);
            qb_run fo = {0};
            fo.m = m, fo.truth = &t, fo.forced = 1, fo.probs = probs, fo.hot = hot0;
            if (!hot0 || qb_generate(&env, p, P_FULL, 0, &fo, &res, &ts) != 0)
                return 1;
            full_tok_s += res.decode_s > 0 ? res.decode_steps / res.decode_s : 0;
            engine_result_free(&res);
            free(hot0);
        }
        int total_blocks = (ctx + KV_BLOCK_TOKENS - 1) / KV_BLOCK_TOKENS;
        for (int bi = 0; bi < n_budgets; bi++) {
            int blocks = (int)ceil(budgets[bi] * total_blocks);
            if (blocks < 6)
                blocks = 6; /* sink 1 + recent 4 + 1 */
            for (int pol = 1; pol < P_N; pol++) {
                qb_acc *a = &acc[pol][bi];
                if (!want_pol[pol])
                    continue;
                /* free-running: first divergence and the task */
                qb_run fr = {0};
                fr.m = m, fr.truth = &t, fr.probs = probs;
                if (qb_generate(&env, p, (pol_t)pol, blocks, &fr, &res, &ts) != 0)
                    return 1;
                int d = 0;
                while (d < res.n_tokens && d < t.n && res.tokens[d] == t.tokens[d])
                    d++;
                a->agree_prefix += t.n ? (double)d / t.n : 1;
                a->task += contains_answer(tok, res.tokens, res.n_tokens, p->answer);
                engine_result_free(&res);
                /* teacher-forced: agreement, KL, coverage, traffic */
                qb_run fo = {0};
                fo.m = m, fo.truth = &t, fo.forced = 1, fo.probs = probs, fo.hot = hot;
                memset(hot, 1, (size_t)L * t.max_blocks);
                double t0 = now_s();
                if (qb_generate(&env, p, (pol_t)pol, blocks, &fo, &res, &ts) != 0)
                    return 1;
                (void)t0;
                int steps = fo.n_steps ? fo.n_steps : 1;
                a->agree_forced += fo.agree / steps;
                a->kl += fo.kl / steps;
                a->cover += fo.n_cover ? fo.cover / fo.n_cover : 1.0;
                /* decode only: what the prompt's chunked prefill recalled is apart */
                a->recalls += (double)(ts.recalled - fo.at_prefill.recalled) / steps;
                a->demoted += fo.out_blocks / steps;
                a->fetched += (double)(ts.recall_bytes - fo.at_prefill.recall_bytes) / steps;
                a->prefill_fetched += (double)fo.at_prefill.recall_bytes;
                a->peak += (double)res.kv_peak_bytes;
                a->resident +=
                    (double)(ts.resident_peak_bytes > res.kv_peak_bytes ? ts.resident_peak_bytes
                                                                        : res.kv_peak_bytes);
                a->fetch_calls += (double)ts.fetch_calls / steps;
                a->put_calls += (double)ts.put_calls / steps;
                a->summaries += (double)ts.summary_msgs / steps;
                a->lat50 += ts.recall_ms_p50;
                a->lat99 += ts.recall_ms_p99;
                if (ts.degraded) {
                    a->degraded++;
                    fprintf(stderr, "quality_bench: %s at %.2f degraded: %s\n", pol_name[pol],
                            budgets[bi], ts.degraded_reason);
                }
                a->tok_s += res.decode_s > 0 ? res.decode_steps / res.decode_s : 0;
                a->n++;
                engine_result_free(&res);
            }
        }
        fprintf(stderr, "quality_bench: prompt %d/%d done (%d tokens, full cache %s)\n", pi + 1, np,
                p->n_ids, t.correct ? "correct" : "wrong");
        free(t.tokens), free(t.logp), free(t.mass), free(probs), free(hot);
    }

    cJSON *rows = cJSON_CreateArray();
    printf("\nquality_bench: %s, %d prompts, %d new tokens each, greedy\n\n", model, np, max_new);
    printf("%-16s %6s %9s %9s %6s %8s %8s %9s %7s %10s %11s %11s %8s %6s %7s %7s %8s %8s\n",
           "policy", "budget", "agree", "prefix", "task", "coverage", "KL", "recall/t", "recall%",
           "KiB/token", "peak hot", "peak held", "tok/s", "ratio", "fetch/t", "put/t", "p50 ms",
           "p99 ms");
    cJSON *fr = cJSON_CreateObject();
    cJSON_AddStringToObject(fr, "policy", "full");
    cJSON_AddNumberToObject(fr, "budget", 1.0);
    cJSON_AddNumberToObject(fr, "agreement", 1.0);
    cJSON_AddNumberToObject(fr, "agreement_prefix", 1.0);
    cJSON_AddNumberToObject(fr, "task_accuracy", (double)full_correct / np);
    cJSON_AddNumberToObject(fr, "coverage", 1.0);
    cJSON_AddNumberToObject(fr, "kl", 0.0);
    cJSON_AddNumberToObject(fr, "recalls_per_token", 0.0);
    cJSON_AddNumberToObject(fr, "fetched_bytes_per_token", 0.0);
    cJSON_AddNumberToObject(fr, "peak_hot_bytes", full_peak / np);
    cJSON_AddNumberToObject(fr, "decode_tok_s", full_tok_s / np);
    cJSON_AddItemToArray(rows, fr);
    printf("%-16s %6.2f %9.4f %9.4f %6.2f %8.4f %8.5f %9.3f %7.1f %10.2f %11.0f %11.0f %8.1f "
           "%6.3f\n",
           "full", 1.0, 1.0, 1.0, (double)full_correct / np, 1.0, 0.0, 0.0, 0.0, 0.0,
           full_peak / np, full_peak / np, full_tok_s / np, 1.0);
    for (int bi = 0; bi < n_budgets; bi++)
        for (int pol = 1; pol < P_N; pol++) {
            qb_acc *a = &acc[pol][bi];
            if (!want_pol[pol])
                continue;
            double n = a->n ? a->n : 1;
            double ratio = full_tok_s > 0 ? (a->tok_s / n) / (full_tok_s / np) : 0;
            int tiered =
                pol == P_TEXACT || pol == P_TADAPT || pol == P_TPREFETCH || pol == P_TASYNC;
            printf(
                "%-16s %6.2f %9.4f %9.4f %6.2f %8.4f %8.5f %9.3f %7.1f %10.2f %11.0f %11.0f %8.1f "
                "%6.3f",
                pol_name[pol], budgets[bi], a->agree_forced / n, a->agree_prefix / n, a->task / n,
                a->cover / n, a->kl / n, a->recalls / n,
                a->demoted > 0 ? 100.0 * a->recalls / a->demoted : 0.0, a->fetched / n / 1024.0,
                a->peak / n, a->resident / n, a->tok_s / n, ratio);
            if (tiered)
                printf(" %7.3f %7.3f %8.3f %8.3f", a->fetch_calls / n, a->put_calls / n,
                       a->lat50 / n, a->lat99 / n);
            printf("\n");
            cJSON *row = cJSON_CreateObject();
            cJSON_AddStringToObject(row, "policy", pol_name[pol]);
            cJSON_AddNumberToObject(row, "budget", budgets[bi]);
            cJSON_AddNumberToObject(row, "agreement", a->agree_forced / n);
            cJSON_AddNumberToObject(row, "agreement_prefix", a->agree_prefix / n);
            cJSON_AddNumberToObject(row, "task_accuracy", a->task / n);
            cJSON_AddNumberToObject(row, "coverage", a->cover / n);
            cJSON_AddNumberToObject(row, "kl", a->kl / n);
            cJSON_AddNumberToObject(row, "recalls_per_token", a->recalls / n);
            cJSON_AddNumberToObject(row, "demoted_blocks_per_token", a->demoted / n);
            cJSON_AddNumberToObject(row, "recall_share",
                                    a->demoted > 0 ? a->recalls / a->demoted : 0.0);
            cJSON_AddNumberToObject(row, "fetched_bytes_per_token", a->fetched / n);
            if (tiered)
                cJSON_AddNumberToObject(row, "prefill_fetched_bytes", a->prefill_fetched / n);
            cJSON_AddNumberToObject(row, "peak_hot_bytes", a->peak / n);
            cJSON_AddNumberToObject(row, "decode_tok_s", a->tok_s / n);
            cJSON_AddNumberToObject(row, "ratio_to_full", ratio);
            cJSON_AddNumberToObject(row, "peak_held_bytes", a->resident / n);
            if (tiered) {
                cJSON_AddNumberToObject(row, "fetch_calls_per_token", a->fetch_calls / n);
                cJSON_AddNumberToObject(row, "put_calls_per_token", a->put_calls / n);
                cJSON_AddNumberToObject(row, "summary_msgs_per_token", a->summaries / n);
                cJSON_AddNumberToObject(row, "fetch_batch_p50_ms", a->lat50 / n);
                cJSON_AddNumberToObject(row, "fetch_batch_p99_ms", a->lat99 / n);
                cJSON_AddNumberToObject(row, "degraded_runs", a->degraded);
            }
            cJSON_AddItemToArray(rows, row);
        }
    printf("\nagree = teacher-forced greedy agreement with the full cache; prefix = share of the\n"
           "free-running output before its first divergence; task = answer recalled; coverage =\n"
           "full-cache attention mass on blocks the policy had hot; KL(full || policy) in nats;\n"
           "recall%% = recalls per token / demoted blocks (beyond the hot budget) per token.\n"
           "peak hot = the hot pool's peak; peak held = pool + staging (tiered); ratio = tok/s\n"
           "over full-cache tok/s; fetch/t, put/t = FetchBlocks / PutBlocks calls per token;\n"
           "p50/p99 = latency of one fetch batch; tier: %s.\n",
           tierlink_name(env.link));
    if (json) {
        char *s = cJSON_Print(rows);
        FILE *f = fopen(json, "w");
        if (f && s) {
            fputs(s, f);
            fputc('\n', f);
            fclose(f);
        } else {
            fprintf(stderr, "quality_bench: cannot write %s\n", json);
        }
        free(s);
    }
    if (plot)
        write_plot(plot, rows);
    cJSON_Delete(rows);
    tierlink_free(env.link);
    tier_close(tier);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tdir);
    if (system(cmd) != 0)
        fprintf(stderr, "quality_bench: could not remove %s\n", tdir);
    engine_free(e);
    tokenizer_free(tok);
    qwen3_model_free(m);
    for (int i = 0; i < np; i++)
        free(ps[i].prompt), free(ps[i].answer), free(ps[i].ids);
    return 0;
}
