/* cluster_bench.c - K concurrent clients generating through the load balancer
 * of a running cluster for a fixed time: generations/s, tokens/s, token
 * latency p50/p99 (gap between streamed tokens, the first one from the
 * request), recall latency p99 (the worker's, per generation), degraded
 * generations, and how the cluster's sequences spread over its shards.
 * Prints one table row and writes JSON (tests/bench/cluster_bench.sh runs it
 * against 1 and 3 shards side by side).
 * usage: cluster_bench --env RUNDIR/cluster.env [--clients K] [--seconds S]
 *                      [--max-new N] [--hot-budget F] [--label L] [--json FILE]
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "kvtier.h"

#define MAX_CLIENTS 64

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct {
    double *v;
    size_t n, cap;
} samples;

static void add(samples *s, double x) {
    if (s->n == s->cap) {
        size_t c = s->cap ? s->cap * 2 : 1024;
        double *p = realloc(s->v, c * sizeof *p);
        if (!p)
            return;
        s->v = p, s->cap = c;
    }
    s->v[s->n++] = x;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(samples *s, double q) {
    if (!s->n)
        return 0;
    qsort(s->v, s->n, sizeof *s->v, cmp);
    size_t i = (size_t)(q * (double)(s->n - 1) + 0.5);
    return s->v[i];
}

typedef struct {
    const char *lb;
    double until;
    int max_new;
    float budget;
    int id;
    /* results */
    uint64_t gens, tokens, errors, degraded;
    samples tok_lat, recall_p99;
    double last;
} client;

static const char *k_prompts[] = {
    "The history of the city begins with a small market by the river, where ",
    "In the old library there was a book that nobody had opened for years. ",
    "Remember this number: 48213. The weather today is mild and the road is ",
    "A list of the rivers of the region, from north to south, with their ",
};

static int on_tok(const kvtier_token_event *ev, void *user) {
    client *c = user;
    double t = now_s();
    for (size_t i = 0; i < ev->n_token_ids; i++) {
        add(&c->tok_lat, (t - c->last) * 1000.0);
        c->last = t;
    }
    c->tokens += ev->n_token_ids;
    return 0;
}

static void *run_client(void *arg) {
    client *c = arg;
    kvtier_connect_opts o = {0};
    o.address = c->lb;
    o.stream_timeout_ms = 600000;
    kvtier_error e;
    kvtier_client *cl = kvtier_connect(&o, &e);
    if (!cl) {
        c->errors++;
        return NULL;
    }
    /* a long enough prompt that blocks leave the hot budget */
    char prompt[4096];
    const char *base = k_prompts[c->id % 4];
    prompt[0] = 0;
    for (int i = 0; i < 12; i++)
        strncat(prompt, base, sizeof prompt - strlen(prompt) - 1);
    for (uint64_t k = 0; now_s() < c->until; k++) {
        kvtier_generate_params p = {0};
        p.prompt = prompt;
        p.max_new_tokens = (uint32_t)c->max_new;
        p.policy = "tier";
        p.hot_budget_fraction = c->budget;
        kvtier_generate_result r;
        c->last = now_s();
        if (kvtier_generate(cl, &p, on_tok, c, &r, &e) != KVTIER_OK) {
            c->errors++;
            continue;
        }
        c->gens++;
        c->degraded += r.degraded ? 1 : 0;
        add(&c->recall_p99, r.recall_latency_p99_ms);
    }
    kvtier_client_free(cl);
    return NULL;
}

/* KEY=value from cluster.env (quotes stripped) into buf. */
static int env_value(const char *path, const char *key, char *buf, size_t len) {
    FILE *f = fopen(path, "r");
    char line[4096];
    size_t kl = strlen(key);
    int found = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0 && line[kl] == '=') {
            char *v = line + kl + 1;
            v[strcspn(v, "\r\n")] = 0;
            if (*v == '"')
                v++, v[strcspn(v, "\"")] = 0;
            snprintf(buf, len, "%s", v);
            found = 1;
        }
    if (f)
        fclose(f);
    return found ? 0 : -1;
}

int main(int argc, char **argv) {
    const char *env = NULL, *json = NULL, *label = "";
    int clients = 4, max_new = 64;
    double seconds = 20;
    float budget = 0.2f;
    static const struct option lo[] = {{"env", required_argument, 0, 'e'},
                                       {"clients", required_argument, 0, 'k'},
                                       {"seconds", required_argument, 0, 's'},
                                       {"max-new", required_argument, 0, 'n'},
                                       {"hot-budget", required_argument, 0, 'b'},
                                       {"label", required_argument, 0, 'l'},
                                       {"json", required_argument, 0, 'j'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (opt) {
        case 'e':
            env = optarg;
            break;
        case 'k':
            clients = atoi(optarg);
            break;
        case 's':
            seconds = atof(optarg);
            break;
        case 'n':
            max_new = atoi(optarg);
            break;
        case 'b':
            budget = (float)atof(optarg);
            break;
        case 'l':
            label = optarg;
            break;
        case 'j':
            json = optarg;
            break;
        case 'h':
            printf("usage: cluster_bench --env RUNDIR/cluster.env [--clients K] [--seconds S]\n"
                   "                     [--max-new N] [--hot-budget F] [--label L] [--json "
                   "FILE]\n");
            return 0;
        default:
            return 2;
        }
    }
    if (!env || clients < 1 || clients > MAX_CLIENTS || seconds <= 0 || max_new < 1 ||
        !(budget > 0 && budget <= 1)) {
        fprintf(stderr,
                "cluster_bench: --env FILE is required; clients 1..%d, seconds > 0, "
                "max-new >= 1, hot-budget in (0,1] (see --help)\n",
                MAX_CLIENTS);
        return 2;
    }
    char lb[128], shards[2048];
    if (env_value(env, "KVTIER_CLIENT_LB", lb, sizeof lb) ||
        env_value(env, "KVTIER_SHARDS", shards, sizeof shards)) {
        fprintf(stderr, "cluster_bench: %s lacks KVTIER_CLIENT_LB / KVTIER_SHARDS\n", env);
        return 2;
    }
    client cs[MAX_CLIENTS];
    pthread_t th[MAX_CLIENTS];
    memset(cs, 0, sizeof cs);
    double t0 = now_s();
    for (int i = 0; i < clients; i++) {
        cs[i].lb = lb, cs[i].until = t0 + seconds, cs[i].max_new = max_new;
        cs[i].budget = budget, cs[i].id = i;
        pthread_create(&th[i], NULL, run_client, &cs[i]);
    }
    samples lat = {0}, rec = {0};
    uint64_t gens = 0, toks = 0, errs = 0, degr = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(th[i], NULL);
        gens += cs[i].gens, toks += cs[i].tokens, errs += cs[i].errors, degr += cs[i].degraded;
        for (size_t k = 0; k < cs[i].tok_lat.n; k++)
            add(&lat, cs[i].tok_lat.v[k]);
        for (size_t k = 0; k < cs[i].recall_p99.n; k++)
            add(&rec, cs[i].recall_p99.v[k]);
        free(cs[i].tok_lat.v);
        free(cs[i].recall_p99.v);
    }
    double wall = now_s() - t0;
    /* per-shard balance: sequences each shard holds (retained by the workers) */
    char bal[1024] = "";
    size_t bl = 0;
    uint64_t per[16] = {0};
    int nsh = 0;
    for (char *tok = strtok(shards, " "); tok && nsh < 16; tok = strtok(NULL, " "), nsh++) {
        kvtier_connect_opts o = {0};
        o.address = tok;
        kvtier_error e;
        kvtier_client *c = kvtier_connect(&o, &e);
        kvtier_stats st;
        if (c && kvtier_stats_get(c, &st, &e) == KVTIER_OK)
            per[nsh] = st.tier[KVTIER_TIER_HOST].puts + st.tier[KVTIER_TIER_SSD].puts;
        kvtier_client_free(c);
        bl += (size_t)snprintf(bal + bl, sizeof bal - bl, "%s%" PRIu64, nsh ? "/" : "", per[nsh]);
    }
    double p50 = pct(&lat, 0.5), p99 = pct(&lat, 0.99), r99 = pct(&rec, 0.99);
    printf("| %s | %d | %.1f | %.2f | %.1f | %.2f | %.2f | %.2f | %" PRIu64 " | %" PRIu64
           " | %s |\n",
           label, clients, wall, gens / wall, toks / wall, p50, p99, r99, degr, errs, bal);
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "label", label);
        cJSON_AddNumberToObject(j, "clients", clients);
        cJSON_AddNumberToObject(j, "seconds", wall);
        cJSON_AddNumberToObject(j, "generations", (double)gens);
        cJSON_AddNumberToObject(j, "generations_per_s", gens / wall);
        cJSON_AddNumberToObject(j, "tokens_per_s", toks / wall);
        cJSON_AddNumberToObject(j, "token_latency_p50_ms", p50);
        cJSON_AddNumberToObject(j, "token_latency_p99_ms", p99);
        cJSON_AddNumberToObject(j, "recall_latency_p99_ms", r99);
        cJSON_AddNumberToObject(j, "degraded", (double)degr);
        cJSON_AddNumberToObject(j, "errors", (double)errs);
        cJSON *a = cJSON_AddArrayToObject(j, "blocks_put_per_shard");
        for (int i = 0; i < nsh; i++)
            cJSON_AddItemToArray(a, cJSON_CreateNumber((double)per[i]));
        char *s = cJSON_Print(j);
        FILE *f = fopen(json, "w");
        if (!f || !s || fputs(s, f) < 0) {
            fprintf(stderr, "cluster_bench: cannot write %s\n", json);
            return 1;
        }
        fputc('\n', f);
        fclose(f);
        free(s);
        cJSON_Delete(j);
    }
    free(lat.v);
    free(rec.v);
    return errs ? 1 : 0;
}
