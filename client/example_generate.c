/* example_generate.c - libkvtier example: stream a generation from a worker
 * (or the load balancer) and print its statistics.
 *
 *   example_generate [--server ADDR] [--chat] [--max-new-tokens N]
 *                    [--policy tier|full|drop|window|h2o] [--hot-budget F]
 *                    [--mode exact|prefetch] [--tau T] [--json] PROMPT
 *
 * Prints the text as it streams; then one line of statistics on stderr, or
 * with --json one JSON object on stdout (text, token ids, statistics) for
 * scripts and tests. Exit 0 on success, 1 on an RPC error, 2 on usage. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvtier.h"

typedef struct {
    int json;
    char *text;
    size_t len, cap;
    uint32_t *ids;
    size_t n_ids, cap_ids;
} gen_out;

static int on_token(const kvtier_token_event *ev, void *user) {
    gen_out *o = user;
    size_t tl = strlen(ev->text);
    if (!o->json) {
        fwrite(ev->text, 1, tl, stdout);
        fflush(stdout);
    }
    if (o->len + tl + 1 > o->cap) {
        size_t nc = (o->len + tl + 1) * 2;
        char *p = realloc(o->text, nc);
        if (!p)
            return 1;
        o->text = p, o->cap = nc;
    }
    memcpy(o->text + o->len, ev->text, tl);
    o->len += tl;
    o->text[o->len] = 0;
    if (o->n_ids + ev->n_token_ids > o->cap_ids) {
        size_t nc = (o->n_ids + ev->n_token_ids) * 2;
        uint32_t *p = realloc(o->ids, nc * sizeof *p);
        if (!p)
            return 1;
        o->ids = p, o->cap_ids = nc;
    }
    memcpy(o->ids + o->n_ids, ev->token_ids, ev->n_token_ids * sizeof *o->ids);
    o->n_ids += ev->n_token_ids;
    return 0;
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: example_generate [--server ADDR] [--chat] [--max-new-tokens N]\n"
        "                        [--policy tier|full|drop|window|h2o] [--hot-budget F]\n"
        "                        [--mode exact|prefetch] [--tau T] [--seq ID] [--json] PROMPT\n");
}

int main(int argc, char **argv) {
    kvtier_connect_opts co = {0};
    kvtier_generate_params p = {0};
    gen_out o = {0};
    int chat = 0;
    static const struct option lo[] = {{"server", 1, 0, 's'},
                                       {"chat", 0, 0, 'c'},
                                       {"max-new-tokens", 1, 0, 'n'},
                                       {"policy", 1, 0, 'p'},
                                       {"hot-budget", 1, 0, 'b'},
                                       {"mode", 1, 0, 'm'},
                                       {"tau", 1, 0, 't'},
                                       {"json", 0, 0, 'j'},
                                       {"seq", 1, 0, 'q'},
                                       {"help", 0, 0, 'h'},
                                       {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (opt) {
        case 's':
            co.address = optarg;
            break;
        case 'c':
            chat = 1;
            break;
        case 'n':
            p.max_new_tokens = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'p':
            p.policy = optarg;
            break;
        case 'b':
            p.hot_budget_fraction = strtof(optarg, NULL);
            break;
        case 'm':
            p.recall_mode = strcmp(optarg, "prefetch") == 0 ? 2 : 1;
            break;
        case 't':
            p.tau = strtof(optarg, NULL);
            break;
        case 'j':
            o.json = 1;
            break;
        case 'q':
            p.sequence_id = strtoull(optarg, NULL, 10);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    kvtier_chat_message msg = {"user", argv[optind]};
    if (chat) {
        p.messages = &msg;
        p.n_messages = 1;
    } else {
        p.prompt = argv[optind];
    }
    co.stream_timeout_ms = 600000;
    kvtier_error err;
    kvtier_client *c = kvtier_connect(&co, &err);
    if (!c) {
        fprintf(stderr, "example_generate: %s\n", err.message);
        return 1;
    }
    kvtier_generate_result r;
    memset(&r, 0, sizeof r);
    kvtier_code code = kvtier_generate(c, &p, on_token, &o, &r, &err);
    kvtier_client_free(c);
    if (code != KVTIER_OK) {
        fprintf(stderr, "example_generate: %s\n", err.message);
        free(o.text), free(o.ids);
        return 1;
    }
    if (o.json) {
        printf("{\"text\":");
        json_string(stdout, o.text ? o.text : "");
        printf(",\"token_ids\":[");
        for (size_t i = 0; i < o.n_ids; i++)
            printf("%s%u", i ? "," : "", o.ids[i]);
        printf("],\"sequence_id\":%" PRIu64 ",\"finish_reason\":", r.sequence_id);
        json_string(stdout, r.finish_reason);
        printf(",\"prompt_tokens\":%u,\"generated_tokens\":%u,\"decode_tok_s\":%.2f,"
               "\"peak_hot_bytes\":%" PRIu64 ",\"demoted_host\":%" PRIu64
               ",\"demoted_ssd\":%" PRIu64 ",\"recalled\":%" PRIu64 ",\"dropped\":%" PRIu64
               ",\"recall_p50_ms\":%.3f,\"recall_p99_ms\":%.3f,\"degraded\":%s,"
               "\"degraded_reason\":",
               r.prompt_tokens, r.generated_tokens, r.decode_tokens_per_s, r.peak_hot_bytes,
               r.blocks_demoted_host, r.blocks_demoted_ssd, r.blocks_recalled, r.blocks_dropped,
               r.recall_latency_p50_ms, r.recall_latency_p99_ms, r.degraded ? "true" : "false");
        json_string(stdout, r.degraded_reason);
        printf("}\n");
    } else {
        fprintf(
            stderr,
            "\n[seq %" PRIu64 "] %s: %u prompt + %u generated tokens, %.1f tok/s decode; "
            "peak hot KV %" PRIu64 " B; demoted %" PRIu64 " (ssd %" PRIu64 "), recalled %" PRIu64
            ", dropped %" PRIu64 "; recall p50 %.3f ms p99 %.3f ms%s%s\n",
            r.sequence_id, r.finish_reason, r.prompt_tokens, r.generated_tokens,
            r.decode_tokens_per_s, r.peak_hot_bytes, r.blocks_demoted_host, r.blocks_demoted_ssd,
            r.blocks_recalled, r.blocks_dropped, r.recall_latency_p50_ms, r.recall_latency_p99_ms,
            r.degraded ? "; DEGRADED: " : "", r.degraded ? r.degraded_reason : "");
    }
    free(o.text), free(o.ids);
    return 0;
}
