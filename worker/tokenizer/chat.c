/* chat.c — Qwen3 chat template rendering and template detection. */
#include "chat.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------- string builder */

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p, b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) {
    sb_add(b, s, strlen(s));
}

/* ---------------------------------------------------------------- detection */

chat_format_t chat_detect_template(const char *tpl) {
    if (!tpl)
        return CHAT_FORMAT_ERROR;
    if (strstr(tpl, "enable_thinking"))
        return CHAT_QWEN3;
    if (strstr(tpl, "<|im_start|>assistant\\n<think>\\n"))
        return CHAT_QWEN3_THINKING;
    if (strstr(tpl, "<|im_start|>"))
        return CHAT_CHATML;
    return CHAT_FORMAT_ERROR;
}

static char *slurp(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    sbuf b = {0};
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        sb_add(&b, chunk, got);
    int bad = ferror(f) || b.oom;
    fclose(f);
    if (bad || !b.s) {
        seterr(err, errlen, "%s: %s", path, bad ? "read error" : "empty file");
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* The template string inside a parsed tokenizer_config.json, or NULL. */
static const char *template_of(const cJSON *root) {
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
    if (cJSON_IsString(ct))
        return ct->valuestring;
    const cJSON *e;
    const cJSON *list = cJSON_IsArray(ct) ? ct : NULL;
    cJSON_ArrayForEach(e, list) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "template");
        if (cJSON_IsString(name) && strcmp(name->valuestring, "default") == 0 && cJSON_IsString(t))
            return t->valuestring;
    }
    return NULL;
}

chat_format_t chat_detect_file(const char *path, char *err, size_t errlen) {
    if (!path) {
        seterr(err, errlen, "chat_detect: no path given");
        return CHAT_FORMAT_ERROR;
    }
    char *text = slurp(path, err, errlen);
    if (!text)
        return CHAT_FORMAT_ERROR;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) {
        seterr(err, errlen, "%s: invalid JSON", path);
        return CHAT_FORMAT_ERROR;
    }
    chat_format_t fmt = CHAT_FORMAT_ERROR;
    const char *tpl = template_of(root);
    if (tpl) {
        fmt = chat_detect_template(tpl);
        if (fmt == CHAT_FORMAT_ERROR)
            seterr(err, errlen, "%s: chat_template is not a Qwen/ChatML template", path);
    } else { /* newer checkpoints keep it in chat_template.jinja next to the config */
        const char *slash = strrchr(path, '/');
        size_t dir = slash ? (size_t)(slash - path + 1) : 0;
        char *jpath = malloc(dir + sizeof "chat_template.jinja");
        if (jpath) {
            memcpy(jpath, path, dir);
            strcpy(jpath + dir, "chat_template.jinja");
            char *jt = slurp(jpath, NULL, 0);
            fmt = chat_detect_template(jt);
            free(jt);
            free(jpath);
        }
        if (fmt == CHAT_FORMAT_ERROR)
            seterr(err, errlen, "%s: no usable chat_template (nor chat_template.jinja beside it)",
                   path);
    }
    cJSON_Delete(root);
    return fmt;
}

chat_format_t chat_detect(const char *path) {
    return chat_detect_file(path, NULL, 0);
}

/* ---------------------------------------------------------------- rendering */

static int starts_with(const char *s, const char *p) {
    return strncmp(s, p, strlen(p)) == 0;
}

static int ends_with(const char *s, const char *p) {
    size_t n = strlen(s), k = strlen(p);
    return n >= k && memcmp(s + n - k, p, k) == 0;
}

/* A user turn that only carries tool output does not count as a query. */
static int is_query(const chat_msg *m) {
    return strcmp(m->role, "user") == 0 && !(starts_with(m->content, "<tool_response>") &&
                                             ends_with(m->content, "</tool_response>"));
}

static const char *last_occurrence(const char *s, size_t n, const char *p) {
    const char *last = NULL;
    size_t k = strlen(p);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(s + i, p, k) == 0)
            last = s + i;
    return last;
}

/* Assistant turn, as the Qwen3 templates do: reasoning = text between the last
 * <think> before the first </think> and that </think>; content = the text after
 * the last </think>. The think block is rendered only for turns after the last
 * user query that are the last message or carry reasoning. */
static void render_assistant(sbuf *b, const char *c, int after_last_query, int is_last) {
    const char *content = c, *r = "";
    size_t rlen = 0;
    const char *close = strstr(c, "</think>");
    if (close) {
        size_t pre = (size_t)(close - c); /* split('</think>')[0] */
        while (pre > 0 && c[pre - 1] == '\n')
            pre--;                                             /* .rstrip('\n') */
        const char *open = last_occurrence(c, pre, "<think>"); /* .split('<think>')[-1] */
        r = open ? open + 7 : c;
        rlen = (size_t)(c + pre - r);
        while (rlen > 0 && *r == '\n')
            r++, rlen--;                                         /* .lstrip('\n') */
        content = last_occurrence(c, strlen(c), "</think>") + 8; /* split('</think>')[-1] */
        while (*content == '\n')
            content++; /* .lstrip('\n') */
    }
    sb_str(b, "<|im_start|>assistant\n");
    if (after_last_query && (is_last || rlen > 0)) {
        while (rlen > 0 && *r == '\n')
            r++, rlen--; /* reasoning.strip('\n') */
        while (rlen > 0 && r[rlen - 1] == '\n')
            rlen--;
        sb_str(b, "<think>\n");
        sb_add(b, r, rlen);
        sb_str(b, "\n</think>\n\n");
        while (*content == '\n')
            content++;
    }
    sb_str(b, content);
    sb_str(b, "<|im_end|>\n");
}

char *chat_render(chat_format_t fmt, const chat_msg *msgs, size_t n, int add_generation_prompt,
                  int enable_thinking) {
    if (fmt != CHAT_QWEN3 && fmt != CHAT_QWEN3_THINKING && fmt != CHAT_CHATML)
        return NULL;
    if (!msgs && n)
        return NULL;
    size_t last_query = n ? n - 1 : 0;
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return NULL;
    for (size_t i = n; i-- > 0;)
        if (is_query(&msgs[i])) {
            last_query = i;
            break;
        }
    sbuf b = {0};
    sb_str(&b, "");
    for (size_t i = 0; i < n; i++) {
        const char *role = msgs[i].role, *c = msgs[i].content;
        if (strcmp(role, "user") == 0 || strcmp(role, "system") == 0) {
            sb_str(&b, "<|im_start|>");
            sb_str(&b, role);
            sb_str(&b, "\n");
            sb_str(&b, c);
            sb_str(&b, "<|im_end|>\n");
        } else if (strcmp(role, "assistant") == 0) {
            if (fmt == CHAT_CHATML) {
                sb_str(&b, "<|im_start|>assistant\n");
                sb_str(&b, c);
                sb_str(&b, "<|im_end|>\n");
            } else {
                render_assistant(&b, c, i > last_query, i + 1 == n);
            }
        } else if (strcmp(role, "tool") == 0) {
            if (i == 0 || strcmp(msgs[i - 1].role, "tool") != 0)
                sb_str(&b, "<|im_start|>user");
            sb_str(&b, "\n<tool_response>\n");
            sb_str(&b, c);
            sb_str(&b, "\n</tool_response>");
            if (i + 1 == n || strcmp(msgs[i + 1].role, "tool") != 0)
                sb_str(&b, "<|im_end|>\n");
        } else {
            free(b.s);
            return NULL; /* unknown role */
        }
    }
    if (add_generation_prompt) {
        sb_str(&b, "<|im_start|>assistant\n");
        if (fmt == CHAT_QWEN3_THINKING)
            sb_str(&b, "<think>\n");
        else if (fmt == CHAT_QWEN3 && !enable_thinking)
            sb_str(&b, "<think>\n\n</think>\n\n");
    }
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
