/* bench_tokenizer.c — encoding speed on a JSONL corpus (one JSON string per line).
 * Prints a table and writes JSON. Not a test: speed targets live here.
 * usage: bench_tokenizer TOKENIZER_JSON CORPUS_JSONL [--repeat N] [--json OUT] */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenizer.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    char **s;
    size_t *n, count, bytes;
} corpus;

static int load_corpus(const char *path, corpus *c) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    char *line = NULL;
    size_t cap = 0, alloc = 0;
    ssize_t got;
    memset(c, 0, sizeof *c);
    while ((got = getline(&line, &cap, f)) >= 0) {
        cJSON *v = cJSON_ParseWithLength(line, (size_t)got);
        if (cJSON_IsString(v)) {
            if (c->count == alloc) {
                alloc = alloc ? alloc * 2 : 1024;
                c->s = realloc(c->s, alloc * sizeof *c->s);
                c->n = realloc(c->n, alloc * sizeof *c->n);
            }
            c->s[c->count] = strdup(v->valuestring);
            c->n[c->count] = strlen(v->valuestring);
            c->bytes += c->n[c->count++];
        }
        cJSON_Delete(v);
    }
    free(line);
    fclose(f);
    return 0;
}

/* encodes every line once; returns tokens, or -1 on error */
static long pass(const tokenizer_t *t, const corpus *c) {
    long tokens = 0;
    char err[256];
    for (size_t i = 0; i < c->count; i++) {
        int32_t *ids;
        size_t n;
        if (tokenizer_encode(t, c->s[i], c->n[i], &ids, &n, err, sizeof err) != 0) {
            fprintf(stderr, "line %zu: %s\n", i + 1, err);
            return -1;
        }
        tokens += (long)n;
        free(ids);
    }
    return tokens;
}

int main(int argc, char **argv) {
    const int help = argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0);
    if (argc < 3 || help) {
        fprintf(help ? stdout : stderr,
                "usage: %s TOKENIZER_JSON CORPUS_JSONL [--repeat N] [--json OUT]\n", argv[0]);
        return help ? 0 : 2;
    }
    int repeat = 5;
    const char *json_out = NULL;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--repeat") == 0)
            repeat = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--json") == 0)
            json_out = argv[i + 1];
    }
    char err[512];
    double t0 = now();
    tokenizer_t *t = tokenizer_load(argv[1], err, sizeof err);
    double t_load = now() - t0;
    if (!t) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    corpus c;
    if (load_corpus(argv[2], &c) != 0) {
        fprintf(stderr, "%s: cannot read\n", argv[2]);
        return 1;
    }
    t0 = now();
    long tokens = pass(t, &c); /* cold BPE cache */
    double t_cold = now() - t0;
    double t_warm = 1e30;
    for (int r = 0; r < repeat && tokens >= 0; r++) {
        t0 = now();
        pass(t, &c);
        double d = now() - t0;
        if (d < t_warm)
            t_warm = d;
    }
    /* one long document: every line joined, to exercise long inputs */
    char *doc = malloc(c.bytes + c.count + 1);
    size_t dn = 0;
    for (size_t i = 0; i < c.count; i++) {
        memcpy(doc + dn, c.s[i], c.n[i]);
        dn += c.n[i];
        doc[dn++] = '\n';
    }
    int32_t *ids;
    size_t nd = 0;
    t0 = now();
    int rc = tokenizer_encode(t, doc, dn, &ids, &nd, err, sizeof err);
    double t_doc = now() - t0;
    if (rc == 0)
        free(ids);
    printf("%-28s %12s %12s %10s %14s %10s\n", "case", "bytes", "tokens", "seconds", "tokens/s",
           "MB/s");
    printf("%-28s %12zu %12ld %10.4f %14.0f %10.2f\n", "lines, cold cache", c.bytes, tokens, t_cold,
           tokens / t_cold, c.bytes / t_cold / 1e6);
    printf("%-28s %12zu %12ld %10.4f %14.0f %10.2f\n", "lines, warm cache (best)", c.bytes, tokens,
           t_warm, tokens / t_warm, c.bytes / t_warm / 1e6);
    printf("%-28s %12zu %12zu %10.4f %14.0f %10.2f\n", "one document", dn, nd, t_doc, nd / t_doc,
           dn / t_doc / 1e6);
    printf("load tokenizer.json: %.3f s; lines: %zu\n", t_load, c.count);
    if (json_out) {
        FILE *f = fopen(json_out, "w");
        if (f) {
            fprintf(f,
                    "{\"lines\":%zu,\"bytes\":%zu,\"tokens\":%ld,\"load_s\":%.6f,\"cold_s\":%.6f,"
                    "\"cold_tokens_per_s\":%.1f,\"warm_s\":%.6f,\"warm_tokens_per_s\":%.1f,"
                    "\"doc_tokens\":%zu,\"doc_s\":%.6f,\"doc_tokens_per_s\":%.1f}\n",
                    c.count, c.bytes, tokens, t_load, t_cold, tokens / t_cold, t_warm,
                    tokens / t_warm, nd, t_doc, nd / t_doc);
            fclose(f);
        }
    }
    for (size_t i = 0; i < c.count; i++)
        free(c.s[i]);
    free(c.s);
    free(c.n);
    free(doc);
    tokenizer_free(t);
    return tokens < 0 || rc != 0;
}
