/* cli.c - see cli.h. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifdef KVTIER_HAVE_TOKENIZER
#include "chat.h"
#endif

int cli_parse_int(const char *prog, const char *flag, const char *s, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "%s: %s must be an integer in [%ld, %ld] (got '%s')\n", prog, flag, lo, hi,
                s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int cli_parse_float(const char *prog, const char *flag, const char *s, double lo, double hi,
                    float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "%s: %s must be a number in [%g, %g] (got '%s')\n", prog, flag, lo, hi, s);
        return -1;
    }
    *out = (float)v;
    return 0;
}

long cli_utf8_invalid_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned min;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            len = 2, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef)
            len = 3, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4)
            len = 4, min = 0x10000;
        else
            return (long)i;
        if (i + len > n)
            return (long)i;
        unsigned cp = c & (0xff >> (len + 1));
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return (long)i;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return (long)i;
        i += len;
    }
    return -1;
}

int cli_parse_ids(const char *prog, const char *s, int vocab, int **ids, int *n) {
    int cap = 16, cnt = 0;
    int *a = malloc(sizeof(int) * (size_t)cap);
    if (!a)
        return -1;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno || end == p || v < 0 || v >= vocab) {
            fprintf(stderr,
                    "%s: --prompt-ids: bad token id at '%s' (ids are integers in "
                    "[0, %d))\n",
                    prog, p, vocab);
            free(a);
            return -1;
        }
        if (cnt == cap) {
            cap *= 2;
            int *na = realloc(a, sizeof(int) * (size_t)cap);
            if (!na) {
                free(a);
                return -1;
            }
            a = na;
        }
        a[cnt++] = (int)v;
        while (*end == ' ')
            end++;
        if (!*end)
            break;
        if (*end != ',') {
            fprintf(stderr, "%s: --prompt-ids: expected ',' at '%s'\n", prog, end);
            free(a);
            return -1;
        }
        p = end + 1;
    }
    *ids = a;
    *n = cnt;
    return 0;
}

char *cli_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

int cli_file_exists(const char *p) {
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

char *cli_read_file(const char *prog, const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: cannot open '%s': %s\n", prog, path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        fprintf(stderr, "%s: cannot read '%s'%s\n", prog, path, buf ? "" : ": out of memory");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

#ifdef KVTIER_HAVE_TOKENIZER
int cli_encode_prompt(const char *prog, const char *model_dir, tokenizer_t *tok, const char *text,
                      int chat, int thinking, int **ids, int *n) {
    char err[512];
    char *rendered = NULL;
    if (chat) {
        char *cfgp = cli_path(model_dir, "tokenizer_config.json");
        chat_format_t fmt = CHAT_QWEN3;
        if (cli_file_exists(cfgp)) {
            fmt = chat_detect_file(cfgp, err, sizeof err);
            if (fmt == CHAT_FORMAT_ERROR) {
                fprintf(stderr, "%s: %s: %s\n", prog, cfgp, err);
                free(cfgp);
                return 1;
            }
        }
        free(cfgp);
        chat_msg msg = {"user", text};
        rendered = chat_render(fmt, &msg, 1, 1, thinking);
        if (!rendered) {
            fprintf(stderr, "%s: cannot render the chat template\n", prog);
            return 1;
        }
        text = rendered;
    }
    int32_t *t32 = NULL;
    size_t nt = 0;
    int rc = tokenizer_encode(tok, text, strlen(text), &t32, &nt, err, sizeof err);
    free(rendered);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot tokenize the prompt: %s\n", prog, err);
        return 2;
    }
    *ids = malloc(sizeof(int) * (nt ? nt : 1));
    if (!*ids) {
        free(t32);
        return 1;
    }
    for (size_t i = 0; i < nt; i++)
        (*ids)[i] = t32[i];
    *n = (int)nt;
    free(t32);
    return 0;
}
#endif
