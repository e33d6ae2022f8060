/* serve_openai.c - OpenAI request parsing and response shapes (cJSON). */
#include "serve_openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void oai_error_set(oai_error *e, int http, const char *type, const char *param, const char *fmt,
                   ...) {
    e->http = http;
    e->type = type;
    e->param = param;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

char *oai_error_json(const oai_error *e) {
    cJSON *root = cJSON_CreateObject(), *er = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(er, "message", e->message);
    cJSON_AddStringToObject(er, "type", e->type ? e->type : "invalid_request_error");
    if (e->param)
        cJSON_AddStringToObject(er, "param", e->param);
    else
        cJSON_AddNullToObject(er, "param");
    cJSON_AddNumberToObject(er, "code", e->http);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

void oai_error_from_out(const serve_out *o, oai_error *e) {
    switch (o->status) {
    case SERVE_INVALID:
        oai_error_set(e, 400, "invalid_request_error", NULL, "%s", o->err);
        break;
    case SERVE_EXHAUSTED:
        oai_error_set(e, 429, "rate_limit_error", NULL, "%s", o->err);
        break;
    case SERVE_ALREADY_EXISTS:
        oai_error_set(e, 409, "invalid_request_error", "kvtier.sequence_id", "%s", o->err);
        break;
    case SERVE_UNAVAILABLE:
        oai_error_set(e, 503, "service_unavailable_error", NULL, "%s", o->err);
        break;
    case SERVE_DEADLINE:
        oai_error_set(e, 504, "timeout_error", NULL, "%s", o->err);
        break;
    case SERVE_CANCELLED:
        oai_error_set(e, 499, "cancelled", NULL, "%s", o->err);
        break;
    default:
        oai_error_set(e, 500, "internal_server_error", NULL, "generation failed: %s", o->err);
        break;
    }
}

/* ------------------------------------------------------------ parsing */

static int is_num(const cJSON *j) {
    return j && cJSON_IsNumber(j) && isfinite(j->valuedouble);
}

/* A numeric field: absent/null -> 0 with *has 0; else its value. */
static int get_num(const cJSON *o, const char *key, double *v, int *has, oai_error *e) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    *has = 0;
    if (!j || cJSON_IsNull(j))
        return 0;
    if (!is_num(j)) {
        oai_error_set(e, 400, "invalid_request_error", key, "`%s` must be a number", key);
        return -1;
    }
    *v = j->valuedouble;
    *has = 1;
    return 0;
}

static int get_int(const cJSON *o, const char *key, long lo, long hi, int *v, int *has,
                   oai_error *e) {
    double d = 0;
    if (get_num(o, key, &d, has, e) != 0)
        return -1;
    if (!*has)
        return 0;
    if (d != floor(d) || d < (double)lo || d > (double)hi) {
        oai_error_set(e, 400, "invalid_request_error", key,
                      "`%s` must be an integer in [%ld, %ld] (got %g)", key, lo, hi, d);
        return -1;
    }
    *v = (int)d;
    return 0;
}

static int get_bool(const cJSON *o, const char *key, int *v, oai_error *e) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j))
        return 0;
    if (!cJSON_IsBool(j)) {
        oai_error_set(e, 400, "invalid_request_error", key, "`%s` must be true or false", key);
        return -1;
    }
    *v = cJSON_IsTrue(j);
    return 0;
}

static int keep(oai_request *r, char *s) {
    char **p = realloc(r->owned, (r->n_owned + 1) * sizeof *p);
    if (!p) {
        free(s);
        return -1;
    }
    r->owned = p;
    r->owned[r->n_owned++] = s;
    return 0;
}

/* message content: a string, or [{type:"text", text}] parts joined */
static const char *content_text(oai_request *r, const cJSON *c, size_t i, oai_error *e) {
    if (cJSON_IsString(c))
        return c->valuestring;
    if (!c || cJSON_IsNull(c))
        return "";
    if (!cJSON_IsArray(c)) {
        oai_error_set(e, 400, "invalid_request_error", "messages",
                      "messages[%zu].content must be a string or an array of text parts", i);
        return NULL;
    }
    size_t total = 1;
    const cJSON *p;
    cJSON_ArrayForEach(p, c) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(p, "type");
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(p, "text");
        if (!cJSON_IsString(t) || strcmp(t->valuestring, "text") != 0 || !cJSON_IsString(x)) {
            oai_error_set(e, 400, "invalid_request_error", "messages",
                          "messages[%zu].content: only {\"type\": \"text\", \"text\": ...} parts "
                          "are supported (this model reads text only)",
                          i);
            return NULL;
        }
        total += strlen(x->valuestring);
    }
    char *s = malloc(total), *w = s;
    if (!s || keep(r, s) != 0) {
        oai_error_set(e, 500, "internal_server_error", NULL, "out of memory");
        return NULL;
    }
    cJSON_ArrayForEach(p, c) {
        const char *x = cJSON_GetObjectItemCaseSensitive(p, "text")->valuestring;
        size_t l = strlen(x);
        memcpy(w, x, l);
        w += l;
    }
    *w = 0;
    return s;
}

static int parse_messages(oai_request *r, const cJSON *m, oai_error *e) {
    if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) == 0) {
        oai_error_set(e, 400, "invalid_request_error", "messages",
                      "`messages` must be a non-empty array");
        return -1;
    }
    size_t n = (size_t)cJSON_GetArraySize(m), i = 0;
    r->msgs = calloc(n, sizeof *r->msgs);
    if (!r->msgs) {
        oai_error_set(e, 500, "internal_server_error", NULL, "out of memory");
        return -1;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, m) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
        if (!cJSON_IsString(role)) {
            oai_error_set(e, 400, "invalid_request_error", "messages",
                          "messages[%zu].role must be a string", i);
            return -1;
        }
        /* OpenAI's newer name for the system turn */
        r->msgs[i].role =
            strcmp(role->valuestring, "developer") == 0 ? "system" : role->valuestring;
        r->msgs[i].content = content_text(r, cJSON_GetObjectItemCaseSensitive(it, "content"), i, e);
        if (!r->msgs[i].content)
            return -1;
        i++;
    }
    r->req.messages = r->msgs;
    r->req.n_messages = n;
    return 0;
}

static int parse_prompt(oai_request *r, const cJSON *p, oai_error *e) {
    if (cJSON_IsString(p)) {
        r->req.prompt = p->valuestring;
        return 0;
    }
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 &&
        cJSON_IsString(cJSON_GetArrayItem(p, 0))) {
        r->req.prompt = cJSON_GetArrayItem(p, 0)->valuestring;
        return 0;
    }
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) > 0 && is_num(cJSON_GetArrayItem(p, 0))) {
        size_t n = (size_t)cJSON_GetArraySize(p), i = 0;
        r->ids = malloc(n * sizeof *r->ids);
        if (!r->ids) {
            oai_error_set(e, 500, "internal_server_error", NULL, "out of memory");
            return -1;
        }
        const cJSON *it;
        cJSON_ArrayForEach(it, p) {
            if (!is_num(it) || it->valuedouble != floor(it->valuedouble) || it->valuedouble < 0 ||
                it->valuedouble > 2147483647.0) {
                oai_error_set(e, 400, "invalid_request_error", "prompt",
                              "prompt[%zu] is not a token id", i);
                return -1;
            }
            r->ids[i++] = (int32_t)it->valuedouble;
        }
        r->req.prompt_ids = r->ids;
        r->req.n_prompt_ids = n;
        return 0;
    }
    oai_error_set(e, 400, "invalid_request_error", "prompt",
                  "`prompt` must be a string, a one-string array or an array of token ids "
                  "(batches: send one request per prompt)");
    return -1;
}

static int parse_stop(oai_request *r, const cJSON *s, oai_error *e) {
    if (!s || cJSON_IsNull(s))
        return 0;
    if (cJSON_IsString(s)) {
        r->req.stops[r->req.n_stops++] = s->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(s) || cJSON_GetArraySize(s) > SERVE_MAX_STOPS) {
        oai_error_set(e, 400, "invalid_request_error", "stop",
                      "`stop` must be a string or an array of at most %d strings", SERVE_MAX_STOPS);
        return -1;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, s) {
        if (!cJSON_IsString(it) || !it->valuestring[0]) {
            oai_error_set(e, 400, "invalid_request_error", "stop",
                          "every stop sequence must be a non-empty string");
            return -1;
        }
        r->req.stops[r->req.n_stops++] = it->valuestring;
    }
    return 0;
}

/* The `kvtier` extension: policy, hot_budget_fraction, hot_budget_blocks,
 * mode, tau, sequence_id. */
static int parse_ext(oai_request *r, const cJSON *k, oai_error *e) {
    if (!k || cJSON_IsNull(k))
        return 0;
    if (!cJSON_IsObject(k)) {
        oai_error_set(e, 400, "invalid_request_error", "kvtier", "`kvtier` must be an object");
        return -1;
    }
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(k, "policy");
    if (p && !cJSON_IsString(p)) {
        oai_error_set(e, 400, "invalid_request_error", "kvtier.policy",
                      "`kvtier.policy` must be a string");
        return -1;
    }
    r->req.policy = p ? p->valuestring : NULL;
    double d = 0;
    int has = 0, v = 0;
    if (get_num(k, "hot_budget_fraction", &d, &has, e) != 0)
        return -1;
    if (has && !(d > 0 && d <= 1)) {
        oai_error_set(e, 400, "invalid_request_error", "kvtier.hot_budget_fraction",
                      "`kvtier.hot_budget_fraction` must be in (0, 1] (got %g)", d);
        return -1;
    }
    r->req.hot_frac = has ? (float)d : 0;
    if (get_int(k, "hot_budget_blocks", 1, 1 << 24, &v, &has, e) != 0)
        return -1;
    r->req.hot_blocks = has ? v : 0;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(k, "mode");
    if (m && !cJSON_IsNull(m)) {
        if (cJSON_IsString(m) && strcmp(m->valuestring, "exact") == 0)
            r->req.mode = TIERING_EXACT;
        else if (cJSON_IsString(m) && strcmp(m->valuestring, "prefetch") == 0)
            r->req.mode = TIERING_PREFETCH;
        else {
            oai_error_set(e, 400, "invalid_request_error", "kvtier.mode",
                          "`kvtier.mode` must be \"exact\" or \"prefetch\"");
            return -1;
        }
    }
    if (get_num(k, "tau", &d, &has, e) != 0)
        return -1;
    if (has && !(d > 0)) {
        oai_error_set(e, 400, "invalid_request_error", "kvtier.tau",
                      "`kvtier.tau` must be > 0 (got %g)", d);
        return -1;
    }
    r->req.tau = has ? (float)d : 0;
    if (get_num(k, "sequence_id", &d, &has, e) != 0)
        return -1;
    if (has && (d != floor(d) || d < 1 || d > 9007199254740991.0)) {
        oai_error_set(e, 400, "invalid_request_error", "kvtier.sequence_id",
                      "`kvtier.sequence_id` must be an integer in [1, 2^53)");
        return -1;
    }
    r->req.sequence_id = has ? (uint64_t)d : 0;
    return 0;
}

/* Options kvtier does not implement: refused, never silently ignored. */
static int refuse_unsupported(const cJSON *o, oai_error *e) {
    static const char *zero_num[] = {"presence_penalty", "frequency_penalty"};
    for (int i = 0; i < 2; i++) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, zero_num[i]);
        if (j && !cJSON_IsNull(j) && !(is_num(j) && j->valuedouble == 0)) {
            oai_error_set(e, 400, "invalid_request_error", zero_num[i],
                          "`%s` is not supported by kvtier (leave it out or 0)", zero_num[i]);
            return -1;
        }
    }
    static const char *one_num[] = {"n", "best_of"};
    for (int i = 0; i < 2; i++) {
        const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, one_num[i]);
        if (j && !cJSON_IsNull(j) && !(is_num(j) && j->valuedouble == 1)) {
            oai_error_set(e, 400, "invalid_request_error", one_num[i],
                          "`%s` must be 1: kvtier generates one choice per request", one_num[i]);
            return -1;
        }
    }
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, "echo");
    if (cJSON_IsTrue(j)) {
        oai_error_set(e, 400, "invalid_request_error", "echo", "`echo` is not supported");
        return -1;
    }
    j = cJSON_GetObjectItemCaseSensitive(o, "suffix");
    if (j && !cJSON_IsNull(j)) {
        oai_error_set(e, 400, "invalid_request_error", "suffix", "`suffix` is not supported");
        return -1;
    }
    j = cJSON_GetObjectItemCaseSensitive(o, "logit_bias");
    if (j && !cJSON_IsNull(j) && !(cJSON_IsObject(j) && !j->child)) {
        oai_error_set(e, 400, "invalid_request_error", "logit_bias",
                      "`logit_bias` is not supported");
        return -1;
    }
    j = cJSON_GetObjectItemCaseSensitive(o, "tools");
    if (j && !cJSON_IsNull(j) && !(cJSON_IsArray(j) && !j->child)) {
        oai_error_set(e, 400, "invalid_request_error", "tools",
                      "`tools` are not supported by kvtier's chat template");
        return -1;
    }
    j = cJSON_GetObjectItemCaseSensitive(o, "response_format");
    const cJSON *t = j ? cJSON_GetObjectItemCaseSensitive(j, "type") : NULL;
    if (j && !cJSON_IsNull(j) && !(cJSON_IsString(t) && strcmp(t->valuestring, "text") == 0)) {
        oai_error_set(e, 400, "invalid_request_error", "response_format",
                      "only response_format {\"type\": \"text\"} is supported");
        return -1;
    }
    return 0;
}

static int parse_body(oai_request *r, const char *model_name, oai_error *e) {
    cJSON *o = r->root;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(o, "model");
    if (model && !cJSON_IsNull(model)) {
        if (!cJSON_IsString(model)) {
            oai_error_set(e, 400, "invalid_request_error", "model", "`model` must be a string");
            return -1;
        }
        if (model->valuestring[0] && strcmp(model->valuestring, model_name) != 0) {
            oai_error_set(e, 404, "not_found_error", "model",
                          "The model `%.200s` does not exist (this worker serves `%.200s`)",
                          model->valuestring, model_name);
            return -1;
        }
    }
    snprintf(r->model, sizeof r->model, "%s", model_name);
    if (refuse_unsupported(o, e) != 0)
        return -1;
    if (r->kind == OAI_CHAT) {
        if (parse_messages(r, cJSON_GetObjectItemCaseSensitive(o, "messages"), e) != 0)
            return -1;
        r->req.enable_thinking = 1; /* the Qwen3 template's default */
        const cJSON *kw = cJSON_GetObjectItemCaseSensitive(o, "chat_template_kwargs");
        if (kw && get_bool(kw, "enable_thinking", &r->req.enable_thinking, e) != 0)
            return -1;
    } else {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "prompt");
        if (!p) {
            oai_error_set(e, 400, "invalid_request_error", "prompt", "`prompt` is required");
            return -1;
        }
        if (parse_prompt(r, p, e) != 0)
            return -1;
    }
    int v = 0, has = 0;
    double d = 0;
    const char *mt = "max_tokens";
    if (r->kind == OAI_CHAT && cJSON_GetObjectItemCaseSensitive(o, "max_completion_tokens") != NULL)
        mt = "max_completion_tokens";
    if (get_int(o, mt, 1, 1 << 24, &v, &has, e) != 0)
        return -1;
    r->req.has_max_new = has || r->kind == OAI_COMPLETIONS;
    r->req.max_new = has ? v : 16; /* OpenAI's completions default */
    if (get_num(o, "temperature", &d, &has, e) != 0)
        return -1;
    r->req.has_temperature = has, r->req.temperature = (float)d;
    if (get_num(o, "top_p", &d, &has, e) != 0)
        return -1;
    r->req.has_top_p = has, r->req.top_p = (float)d;
    /* vLLM's extension; -1 means off there */
    if (get_int(o, "top_k", -1, 1000000, &v, &has, e) != 0)
        return -1;
    r->req.has_top_k = has, r->req.top_k = v < 0 ? 0 : v;
    if (get_num(o, "seed", &d, &has, e) != 0)
        return -1;
    if (has && (d != floor(d) || fabs(d) > 9007199254740991.0)) {
        oai_error_set(e, 400, "invalid_request_error", "seed", "`seed` must be an integer");
        return -1;
    }
    r->req.has_seed = has, r->req.seed = (uint64_t)(int64_t)d;
    if (parse_stop(r, cJSON_GetObjectItemCaseSensitive(o, "stop"), e) != 0)
        return -1;
    if (get_bool(o, "stream", &r->stream, e) != 0)
        return -1;
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(o, "stream_options");
    if (so && !cJSON_IsNull(so) && get_bool(so, "include_usage", &r->include_usage, e) != 0)
        return -1;
    if (r->kind == OAI_CHAT) {
        if (get_bool(o, "logprobs", &r->logprobs, e) != 0)
            return -1;
        if (get_int(o, "top_logprobs", 0, SERVE_MAX_TOP_LOGPROBS, &v, &has, e) != 0)
            return -1;
        if (has && !r->logprobs) {
            oai_error_set(e, 400, "invalid_request_error", "top_logprobs",
                          "`top_logprobs` needs `logprobs: true`");
            return -1;
        }
        r->req.logprobs = r->logprobs ? 1 + (has ? v : 0) : 0;
    } else {
        if (get_int(o, "logprobs", 0, 5, &v, &has, e) != 0)
            return -1;
        r->logprobs = has;
        r->req.logprobs = has ? 1 + v : 0;
    }
    r->req.mode = -1;
    return parse_ext(r, cJSON_GetObjectItemCaseSensitive(o, "kvtier"), e);
}

int oai_parse(oai_kind kind, const char *body, size_t len, const char *model_name, oai_request *r,
              oai_error *e) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->req.mode = -1;
    r->root = cJSON_ParseWithLength(body, len);
    if (!r->root || !cJSON_IsObject(r->root)) {
        oai_error_set(e, 400, "invalid_request_error", NULL, "the body must be a JSON object (%s)",
                      r->root ? "got another JSON value" : "malformed JSON");
        return -1;
    }
    return parse_body(r, model_name, e);
}

void oai_request_free(oai_request *r) {
    cJSON_Delete(r->root);
    free(r->msgs);
    for (size_t i = 0; i < r->n_owned; i++)
        free(r->owned[i]);
    free(r->owned);
    free(r->ids);
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------ responses */

cJSON *oai_logprobs_new(oai_kind kind) {
    cJSON *lp = cJSON_CreateObject();
    if (kind == OAI_CHAT) {
        cJSON_AddArrayToObject(lp, "content");
    } else {
        cJSON_AddArrayToObject(lp, "tokens");
        cJSON_AddArrayToObject(lp, "token_logprobs");
        cJSON_AddArrayToObject(lp, "top_logprobs");
        cJSON_AddArrayToObject(lp, "text_offset");
    }
    return lp;
}

static cJSON *bytes_of(const char *s) {
    cJSON *a = cJSON_CreateArray();
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(*p));
    return a;
}

static char *tok_text(const tokenizer_t *tok, int32_t id) {
    char *s = tokenizer_decode(tok, &id, 1);
    return s ? s : strdup("");
}

void oai_logprobs_add(oai_kind kind, const tokenizer_t *tok, const serve_logprob *lps, size_t n,
                      cJSON *lp, size_t *offset) {
    for (size_t i = 0; lps && i < n; i++) {
        const serve_logprob *l = &lps[i];
        char *t = tok_text(tok, l->id);
        if (kind == OAI_CHAT) {
            cJSON *it = cJSON_CreateObject();
            cJSON_AddStringToObject(it, "token", t);
            cJSON_AddNumberToObject(it, "logprob", l->logprob);
            cJSON_AddItemToObject(it, "bytes", bytes_of(t));
            cJSON *top = cJSON_AddArrayToObject(it, "top_logprobs");
            for (int k = 0; k < l->n_top; k++) {
                char *a = tok_text(tok, l->top_id[k]);
                cJSON *x = cJSON_CreateObject();
                cJSON_AddStringToObject(x, "token", a);
                cJSON_AddNumberToObject(x, "logprob", l->top_logprob[k]);
                cJSON_AddItemToObject(x, "bytes", bytes_of(a));
                cJSON_AddItemToArray(top, x);
                free(a);
            }
            cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(lp, "content"), it);
        } else {
            cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(lp, "tokens"),
                                 cJSON_CreateString(t));
            cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(lp, "token_logprobs"),
                                 cJSON_CreateNumber(l->logprob));
            cJSON *top = cJSON_CreateObject();
            for (int k = 0; k < l->n_top; k++) {
                char *a = tok_text(tok, l->top_id[k]);
                if (!cJSON_GetObjectItemCaseSensitive(top, a))
                    cJSON_AddNumberToObject(top, a, l->top_logprob[k]);
                free(a);
            }
            cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(lp, "top_logprobs"), top);
            cJSON_AddItemToArray(cJSON_GetObjectItemCaseSensitive(lp, "text_offset"),
                                 cJSON_CreateNumber((double)*offset));
            *offset += strlen(t);
        }
        free(t);
    }
}

cJSON *oai_kvtier_stats(const serve_out *o) {
    cJSON *k = cJSON_CreateObject();
    char sid[32]; /* an exact integer: cJSON would print 2^53-range ids as doubles */
    snprintf(sid, sizeof sid, "%llu", (unsigned long long)o->seq_id);
    cJSON_AddRawToObject(k, "sequence_id", sid);
    cJSON_AddNumberToObject(k, "queue_seconds", o->queue_s);
    cJSON_AddNumberToObject(k, "prefill_tokens_per_s",
                            o->prefill_s > 0 ? o->n_prompt / o->prefill_s : 0);
    cJSON_AddNumberToObject(k, "decode_tokens_per_s",
                            o->decode_s > 0 ? o->decode_steps / o->decode_s : 0);
    cJSON_AddNumberToObject(k, "peak_hot_bytes", (double)o->kv_peak_bytes);
    if (o->stop_matched)
        cJSON_AddStringToObject(k, "stop", o->stop_matched);
    if (o->tiered) {
        cJSON_AddNumberToObject(k, "blocks_demoted_host", (double)o->ts.demoted_host);
        cJSON_AddNumberToObject(k, "blocks_demoted_ssd", (double)o->ts.demoted_ssd);
        cJSON_AddNumberToObject(k, "blocks_recalled", (double)o->ts.recalled);
        cJSON_AddNumberToObject(k, "blocks_dropped", (double)o->ts.dropped);
        cJSON_AddNumberToObject(k, "recall_latency_p50_ms", o->ts.recall_ms_p50);
        cJSON_AddNumberToObject(k, "recall_latency_p99_ms", o->ts.recall_ms_p99);
        cJSON_AddBoolToObject(k, "degraded", o->ts.degraded);
        if (o->ts.degraded)
            cJSON_AddStringToObject(k, "degraded_reason", o->ts.degraded_reason);
    }
    return k;
}

static cJSON *usage_of(const serve_out *o) {
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", o->n_prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", o->n_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", o->n_prompt + o->n_tokens);
    return u;
}

static cJSON *envelope(const oai_request *r, const char *id, long created, int chunk) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", id);
    cJSON_AddStringToObject(root, "object",
                            r->kind == OAI_CHAT
                                ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                : "text_completion");
    cJSON_AddNumberToObject(root, "created", (double)created);
    cJSON_AddStringToObject(root, "model", r->model);
    return root;
}

static char *print_free(cJSON *root) {
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static cJSON *text_item(const char *text, size_t len) {
    char *t = malloc(len + 1);
    if (!t)
        return cJSON_CreateString("");
    memcpy(t, text, len);
    t[len] = 0;
    cJSON *j = cJSON_CreateString(t);
    free(t);
    return j;
}

char *oai_chunk(const oai_request *r, const char *id, long created, const char *text, size_t len,
                int first, cJSON *lp, const char *finish_reason, const serve_out *fin) {
    cJSON *root = envelope(r, id, created, 1);
    cJSON *ch = cJSON_AddArrayToObject(root, "choices"), *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", 0);
    if (r->kind == OAI_CHAT) {
        cJSON *d = cJSON_AddObjectToObject(c, "delta");
        if (first)
            cJSON_AddStringToObject(d, "role", "assistant");
        if (len || first)
            cJSON_AddItemToObject(d, "content", text_item(text, len));
    } else {
        cJSON_AddItemToObject(c, "text", text_item(text, len));
    }
    if (lp)
        cJSON_AddItemToObject(c, "logprobs", lp);
    else
        cJSON_AddNullToObject(c, "logprobs");
    if (finish_reason)
        cJSON_AddStringToObject(c, "finish_reason", finish_reason);
    else
        cJSON_AddNullToObject(c, "finish_reason");
    if (fin && fin->stop_matched)
        cJSON_AddStringToObject(c, "stop_reason", fin->stop_matched);
    cJSON_AddItemToArray(ch, c);
    if (fin)
        cJSON_AddItemToObject(root, "kvtier", oai_kvtier_stats(fin));
    return print_free(root);
}

char *oai_usage_chunk(const oai_request *r, const char *id, long created, const serve_out *o) {
    cJSON *root = envelope(r, id, created, 1);
    cJSON_AddArrayToObject(root, "choices");
    cJSON_AddItemToObject(root, "usage", usage_of(o));
    return print_free(root);
}

char *oai_response(const oai_request *r, const char *id, long created, const char *text, size_t len,
                   cJSON *lp, const serve_out *o) {
    cJSON *root = envelope(r, id, created, 0);
    cJSON *ch = cJSON_AddArrayToObject(root, "choices"), *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", 0);
    if (r->kind == OAI_CHAT) {
        cJSON *m = cJSON_AddObjectToObject(c, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddItemToObject(m, "content", text_item(text, len));
    } else {
        cJSON_AddItemToObject(c, "text", text_item(text, len));
    }
    if (lp)
        cJSON_AddItemToObject(c, "logprobs", lp);
    else
        cJSON_AddNullToObject(c, "logprobs");
    cJSON_AddStringToObject(c, "finish_reason", o->finish_reason ? o->finish_reason : "stop");
    if (o->stop_matched)
        cJSON_AddStringToObject(c, "stop_reason", o->stop_matched);
    cJSON_AddItemToArray(ch, c);
    cJSON_AddItemToObject(root, "usage", usage_of(o));
    cJSON_AddItemToObject(root, "kvtier", oai_kvtier_stats(o));
    return print_free(root);
}
