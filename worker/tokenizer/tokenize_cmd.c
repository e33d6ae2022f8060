/* tokenize_cmd.c — `kvtier-worker tokenize`: text lines -> JSON id arrays (or
 * back with --decode). I/O only; the work is in tokenizer.c and chat.c. */
#include "tokenize_cmd.h"

#include "chat.h"
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *USAGE =
    "usage: kvtier-worker tokenize (--model DIR | --tokenizer FILE) [options] < lines\n"
    "\n"
    "Reads UTF-8 text from stdin, one input per line (the trailing \\n is not part\n"
    "of it), and prints one JSON array of token ids per line.\n"
    "\n"
    "  --model DIR          use DIR/tokenizer.json (and DIR/tokenizer_config.json)\n"
    "  --tokenizer FILE     use this tokenizer.json (chat config: tokenizer_config.json beside "
    "it)\n"
    "  --chat               each line is a user message; render it with the model's chat\n"
    "                       template (add_generation_prompt) before tokenizing\n"
    "  --no-think           with --chat: enable_thinking=false (hybrid Qwen3 template)\n"
    "  --system TEXT        with --chat: put a system message first\n"
    "  --chat-format F      override template detection: qwen3 | thinking | chatml\n"
    "  --json               each input line is a JSON string (to carry \\n and \\r)\n"
    "  --decode             inverse: each line is a JSON array of ids; print the decoded\n"
    "                       text as a JSON string\n"
    "  -h, --help           this text\n"
    "\n"
    "Exit status: 0 ok; 1 bad input (invalid UTF-8 or JSON, unknown id: the line\n"
    "number is on stderr) or unusable files; 2 usage error.\n";

typedef struct {
    const char *model_dir, *tokenizer_path, *system, *chat_format;
    int chat, no_think, json, decode;
} tok_opts;

/* Writes s[0..n) as a JSON string literal. */
static void put_json_string(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20 || c == 0x7F)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static char *join(const char *dir, const char *file) {
    size_t n = strlen(dir);
    char *p = malloc(n + strlen(file) + 2);
    if (p)
        sprintf(p, "%s%s%s", dir, (n && dir[n - 1] == '/') ? "" : "/", file);
    return p;
}

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    char *d = strndup(path, (size_t)(slash - path));
    return d;
}

/* Resolves the chat format from the override or the tokenizer_config.json. */
static int resolve_format(const tok_opts *o, chat_format_t *fmt) {
    if (o->chat_format) {
        if (strcmp(o->chat_format, "qwen3") == 0)
            *fmt = CHAT_QWEN3;
        else if (strcmp(o->chat_format, "thinking") == 0)
            *fmt = CHAT_QWEN3_THINKING;
        else if (strcmp(o->chat_format, "chatml") == 0)
            *fmt = CHAT_CHATML;
        else {
            fprintf(stderr, "tokenize: --chat-format must be qwen3, thinking or chatml, not '%s'\n",
                    o->chat_format);
            return 2;
        }
        return 0;
    }
    char *dir = o->model_dir ? strdup(o->model_dir) : dir_of(o->tokenizer_path);
    char *cfg = dir ? join(dir, "tokenizer_config.json") : NULL;
    free(dir);
    if (!cfg)
        return 1;
    char err[512];
    *fmt = chat_detect_file(cfg, err, sizeof err);
    free(cfg);
    if (*fmt == CHAT_FORMAT_ERROR) {
        fprintf(stderr, "tokenize: %s (use --chat-format to choose)\n", err);
        return 1;
    }
    return 0;
}

/* 1 if a JSON text contains the escape \u0000 (cJSON strings would stop there). */
static int json_has_nul_escape(const char *s, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        if (s[i] != '\\')
            continue;
        if (s[i + 1] == 'u' && i + 5 < n && memcmp(s + i + 2, "0000", 4) == 0)
            return 1;
        i++; /* skip the escaped character */
    }
    return 0;
}

/* One input line -> the text to tokenize (malloc'd in *text, length *len). */
static int line_text(const tok_opts *o, chat_format_t fmt, const char *line, size_t n, char **text,
                     size_t *len, long lineno) {
    char *owned = NULL;
    const char *s = line;
    if (o->json) {
        if (json_has_nul_escape(line, n)) {
            fprintf(stderr, "tokenize: stdin line %ld: U+0000 in a --json line is not supported\n",
                    lineno);
            return 1;
        }
        cJSON *v = cJSON_ParseWithLength(line, n);
        if (!cJSON_IsString(v)) {
            fprintf(stderr, "tokenize: stdin line %ld: expected a JSON string\n", lineno);
            cJSON_Delete(v);
            return 1;
        }
        owned = strdup(v->valuestring); /* cJSON strings stop at U+0000 */
        cJSON_Delete(v);
        if (!owned)
            return 1;
        s = owned, n = strlen(owned);
    }
    if (o->chat) {
        if (memchr(s, 0, n)) {
            fprintf(stderr, "tokenize: stdin line %ld: NUL byte in a chat message\n", lineno);
            free(owned);
            return 1;
        }
        char *msg = owned ? owned : strndup(s, n);
        chat_msg m[2] = {{"system", o->system}, {"user", msg}};
        int has_sys = o->system != NULL;
        *text = msg ? chat_render(fmt, m + !has_sys, 1 + has_sys, 1, !o->no_think) : NULL;
        free(msg);
        if (!*text)
            return 1;
        *len = strlen(*text);
        return 0;
    }
    *text = owned ? owned : malloc(n + 1);
    if (!*text)
        return 1;
    if (!owned)
        memcpy(*text, s, n);
    *len = n;
    return 0;
}

static int run_encode(const tokenizer_t *tok, const tok_opts *o, chat_format_t fmt) {
    char *line = NULL, err[256];
    size_t cap = 0;
    ssize_t got;
    long lineno = 0;
    int rc = 0;
    while (rc == 0 && (got = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        size_t n = (size_t)got;
        if (n && line[n - 1] == '\n')
            n--;
        char *text = NULL;
        size_t len = 0;
        int32_t *ids = NULL;
        size_t nids = 0;
        rc = line_text(o, fmt, line, n, &text, &len, lineno);
        if (rc == 0 && tokenizer_encode(tok, text, len, &ids, &nids, err, sizeof err) != 0) {
            fprintf(stderr, "tokenize: stdin line %ld: %s\n", lineno, err);
            rc = 1;
        }
        if (rc == 0) {
            putchar('[');
            for (size_t i = 0; i < nids; i++)
                printf(i ? ",%d" : "%d", ids[i]);
            fputs("]\n", stdout);
        }
        free(ids);
        free(text);
    }
    free(line);
    return rc;
}

static int run_decode(const tokenizer_t *tok) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long lineno = 0;
    int rc = 0;
    size_t vocab = tokenizer_vocab_size(tok);
    while (rc == 0 && (got = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        cJSON *arr = cJSON_ParseWithLength(line, (size_t)got);
        int n = cJSON_IsArray(arr) ? cJSON_GetArraySize(arr) : -1;
        int32_t *ids = n >= 0 ? malloc(((size_t)n + 1) * sizeof *ids) : NULL;
        if (!ids) {
            fprintf(stderr, "tokenize: stdin line %ld: expected a JSON array of token ids\n",
                    lineno);
            rc = 1;
        }
        for (int i = 0; rc == 0 && i < n; i++) {
            const cJSON *v = cJSON_GetArrayItem(arr, i);
            double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
            if (d < 0 || d >= (double)vocab || d != (double)(int32_t)d) {
                fprintf(stderr,
                        "tokenize: stdin line %ld: element %d is not a token id in [0, %zu)\n",
                        lineno, i, vocab);
                rc = 1;
            } else {
                ids[i] = (int32_t)d;
            }
        }
        char *text = rc == 0 ? tokenizer_decode(tok, ids, (size_t)n) : NULL;
        if (rc == 0 && !text) {
            fprintf(stderr, "tokenize: stdin line %ld: cannot decode (unused id in the array?)\n",
                    lineno);
            rc = 1;
        }
        if (rc == 0) {
            put_json_string(stdout, text, strlen(text));
            putchar('\n');
        }
        free(text);
        free(ids);
        cJSON_Delete(arr);
    }
    free(line);
    return rc;
}

static int parse_args(int argc, char **argv, tok_opts *o) {
    static const struct option longs[] = {
        {"model", required_argument, 0, 'm'},  {"tokenizer", required_argument, 0, 't'},
        {"chat", no_argument, 0, 'c'},         {"no-think", no_argument, 0, 'n'},
        {"system", required_argument, 0, 's'}, {"chat-format", required_argument, 0, 'f'},
        {"json", no_argument, 0, 'j'},         {"decode", no_argument, 0, 'd'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case 'm':
            o->model_dir = optarg;
            break;
        case 't':
            o->tokenizer_path = optarg;
            break;
        case 'c':
            o->chat = 1;
            break;
        case 'n':
            o->no_think = 1;
            break;
        case 's':
            o->system = optarg;
            break;
        case 'f':
            o->chat_format = optarg;
            break;
        case 'j':
            o->json = 1;
            break;
        case 'd':
            o->decode = 1;
            break;
        case 'h':
            fputs(USAGE, stdout);
            return 0;
        default:
            fprintf(stderr, "tokenize: unknown or incomplete option '%s'\n%s", argv[optind - 1],
                    USAGE);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tokenize: unexpected argument '%s'\n%s", argv[optind], USAGE);
        return 2;
    }
    if (!o->model_dir == !o->tokenizer_path) {
        fprintf(stderr, "tokenize: give exactly one of --model DIR or --tokenizer FILE\n%s", USAGE);
        return 2;
    }
    if (o->decode && (o->chat || o->json)) {
        fprintf(stderr, "tokenize: --decode does not combine with --chat or --json\n");
        return 2;
    }
    return -1; /* go on */
}

int tokenize_cmd_main(int argc, char **argv) {
    tok_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0)
        return rc;
    char *path = o.model_dir ? join(o.model_dir, "tokenizer.json") : strdup(o.tokenizer_path);
    if (!path)
        return 1;
    char err[512];
    tokenizer_t *tok = tokenizer_load(path, err, sizeof err);
    free(path);
    if (!tok) {
        fprintf(stderr, "tokenize: %s\n", err);
        return 1;
    }
    chat_format_t fmt = CHAT_QWEN3;
    rc = o.chat ? resolve_format(&o, &fmt) : 0;
    if (rc == 0)
        rc = o.decode ? run_decode(tok) : run_encode(tok, &o, fmt);
    if (fflush(stdout) != 0 && rc == 0) {
        perror("tokenize: stdout");
        rc = 1;
    }
    tokenizer_free(tok);
    return rc;
}
