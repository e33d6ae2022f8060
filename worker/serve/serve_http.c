/* serve_http.c - the worker's OpenAI-compatible HTTP API on libmicrohttpd
 * (one thread per connection): routing, bodies, bearer auth, and streaming
 * generations as server-sent events from a generation thread. */
#include "serve_http.h"

#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <gnutls/gnutls.h>
#include <microhttpd.h>

#include "metrics.h"
#include "rpc.h"
#include "serve_openai.h"

#if MHD_VERSION >= 0x00097002
typedef enum MHD_Result mhd_result;
#else
typedef int mhd_result;
#endif

#define HTTP_MAX_BODY (8u << 20)

struct serve_http {
    struct MHD_Daemon *d;
    serve_ctx *s;
    char *api_key;        /* NULL = no auth */
    int need_client_cert; /* mutual TLS: a verified client certificate on all but /health */
    atomic_ullong next_id;
};

/* ------------------------------------------------------------ replies */

static mhd_result reply(struct MHD_Connection *c, unsigned code, const char *type, char *body) {
    if (!body) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":"
                                  "\"internal_server_error\",\"param\":null,\"code\":500}}";
        struct MHD_Response *r =
            MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Content-Type", "application/json");
        mhd_result ret = MHD_queue_response(c, 500, r);
        MHD_destroy_response(r);
        return ret;
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    mhd_result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static mhd_result reply_json(struct MHD_Connection *c, unsigned code, cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return reply(c, code, "application/json", s);
}

static mhd_result reply_error(struct MHD_Connection *c, const oai_error *e) {
    unsigned code = e->http == 499 ? 400 : (unsigned)e->http;
    return reply(c, code, "application/json", oai_error_json(e));
}

static mhd_result fail(struct MHD_Connection *c, int http, const char *type, const char *msg) {
    oai_error e;
    oai_error_set(&e, http, type, NULL, "%s", msg);
    return reply_error(c, &e);
}

/* ------------------------------------------------------------ generation */

typedef struct {
    serve_http *h;
    oai_request rq;
    char id[64];
    long created;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *buf; /* streaming: SSE bytes not yet read by the connection */
    size_t len, cap, off;
    int started, done, gone, oom;
    serve_out out;
    /* non-streaming: the whole text and logprobs */
    char *text;
    size_t text_len, text_cap;
    cJSON *lp;
    size_t lp_offset;
} gen_job;

static int grow(char **b, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < *len + n + 1)
            c *= 2;
        char *p = realloc(*b, c);
        if (!p)
            return -1;
        *b = p, *cap = c;
    }
    memcpy(*b + *len, s, n);
    *len += n;
    (*b)[*len] = 0;
    return 0;
}

/* Queues one SSE event `data: <json>\n\n` (json freed; NULL = [DONE]). */
static void sse_push(gen_job *j, char *json) {
    pthread_mutex_lock(&j->mu);
    const char *d = json ? json : "[DONE]";
    if (grow(&j->buf, &j->len, &j->cap, "data: ", 6) ||
        grow(&j->buf, &j->len, &j->cap, d, strlen(d)) || grow(&j->buf, &j->len, &j->cap, "\n\n", 2))
        j->oom = 1;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    free(json);
}

static cJSON *job_lp(gen_job *j, const serve_logprob *lps, size_t n, cJSON *into) {
    if (!j->rq.logprobs || !lps || n == 0)
        return into;
    if (!into)
        into = oai_logprobs_new(j->rq.kind);
    oai_logprobs_add(j->rq.kind, serve_ctx_tokenizer(j->h->s), lps, n, into, &j->lp_offset);
    return into;
}

static void job_start(void *ud, uint64_t seq_id, int n_prompt) {
    (void)seq_id;
    (void)n_prompt;
    gen_job *j = ud;
    if (j->rq.stream && j->rq.kind == OAI_CHAT)
        sse_push(j, oai_chunk(&j->rq, j->id, j->created, "", 0, 1, NULL, NULL, NULL));
    pthread_mutex_lock(&j->mu);
    j->started = 1;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static int job_delta(void *ud, const char *text, size_t len, const int32_t *ids,
                     const serve_logprob *lps, size_t n_ids) {
    (void)ids;
    gen_job *j = ud;
    if (j->rq.stream) {
        cJSON *lp = job_lp(j, lps, n_ids, NULL);
        sse_push(j, oai_chunk(&j->rq, j->id, j->created, text, len, 0, lp, NULL, NULL));
    } else {
        if (grow(&j->text, &j->text_len, &j->text_cap, text, len) != 0)
            j->oom = 1;
        j->lp = job_lp(j, lps, n_ids, j->lp);
    }
    pthread_mutex_lock(&j->mu);
    int gone = j->gone || j->oom;
    pthread_mutex_unlock(&j->mu);
    return gone;
}

static int job_cancelled(void *ud) {
    gen_job *j = ud;
    pthread_mutex_lock(&j->mu);
    int gone = j->gone;
    pthread_mutex_unlock(&j->mu);
    return gone;
}

static void *job_main(void *arg) {
    gen_job *j = arg;
    serve_sink sink = {j, job_start, job_delta, job_cancelled};
    serve_run(j->h->s, &j->rq.req, &sink, &j->out);
    if (j->rq.stream && j->started) {
        if (j->out.status == SERVE_OK) {
            cJSON *lp = job_lp(j, j->out.rest_lps, j->out.n_rest, NULL);
            sse_push(j, oai_chunk(&j->rq, j->id, j->created, "", 0, 0, lp, j->out.finish_reason,
                                  &j->out));
            if (j->rq.include_usage)
                sse_push(j, oai_usage_chunk(&j->rq, j->id, j->created, &j->out));
        } else if (j->out.status != SERVE_CANCELLED) {
            oai_error e;
            oai_error_from_out(&j->out, &e);
            sse_push(j, oai_error_json(&e));
        }
        sse_push(j, NULL);
    }
    pthread_mutex_lock(&j->mu);
    j->done = 1;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

static void job_free(gen_job *j) {
    serve_out_free(&j->out);
    oai_request_free(&j->rq);
    cJSON_Delete(j->lp);
    free(j->text);
    free(j->buf);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}

static ssize_t sse_read(void *cls, uint64_t pos, char *out, size_t max) {
    (void)pos;
    gen_job *j = cls;
    pthread_mutex_lock(&j->mu);
    while (j->off == j->len && !j->done) {
        /* a comment line every 15 s keeps proxies from timing the stream out
         * and lets a vanished client be noticed during a long prefill */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 15;
        if (pthread_cond_timedwait(&j->cv, &j->mu, &ts) != 0 && j->off == j->len && !j->done) {
            pthread_mutex_unlock(&j->mu);
            static const char ka[] = ": keep-alive\n\n";
            size_t n = sizeof ka - 1 < max ? sizeof ka - 1 : max;
            memcpy(out, ka, n);
            return (ssize_t)n;
        }
    }
    if (j->off < j->len) {
        size_t n = j->len - j->off < max ? j->len - j->off : max;
        memcpy(out, j->buf + j->off, n);
        j->off += n;
        if (j->off == j->len)
            j->off = j->len = 0;
        pthread_mutex_unlock(&j->mu);
        return (ssize_t)n;
    }
    pthread_mutex_unlock(&j->mu);
    return MHD_CONTENT_READER_END_OF_STREAM;
}

/* The response is gone (sent, or the client closed): stop and reap. */
static void sse_free(void *cls) {
    gen_job *j = cls;
    pthread_mutex_lock(&j->mu);
    j->gone = 1;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->th, NULL);
    job_free(j);
}

static mhd_result do_generate(serve_http *h, struct MHD_Connection *c, oai_kind kind,
                              const char *body, size_t len) {
    gen_job *j = calloc(1, sizeof *j);
    if (!j)
        return fail(c, 500, "internal_server_error", "out of memory");
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    j->h = h;
    j->created = (long)time(NULL);
    snprintf(j->id, sizeof j->id, "%s-%llx", kind == OAI_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)atomic_fetch_add(&h->next_id, 1));
    oai_error e;
    if (oai_parse(kind, body, len, serve_ctx_model_name(h->s), &j->rq, &e) != 0) {
        job_free(j);
        return reply_error(c, &e);
    }
    if (!j->rq.stream) {
        job_main(j);
        mhd_result r;
        if (j->out.status != SERVE_OK) {
            oai_error_from_out(&j->out, &e);
            r = reply_error(c, &e);
        } else {
            cJSON *lp = j->lp;
            j->lp = NULL;
            lp = j->rq.logprobs
                     ? job_lp(j, j->out.rest_lps, j->out.n_rest, lp ? lp : oai_logprobs_new(kind))
                     : lp;
            r = reply(c, 200, "application/json",
                      oai_response(&j->rq, j->id, j->created, j->text ? j->text : "", j->text_len,
                                   lp, &j->out));
        }
        job_free(j);
        return r;
    }
    if (pthread_create(&j->th, NULL, job_main, j) != 0) {
        job_free(j);
        return fail(c, 503, "service_unavailable_error", "cannot start a generation thread");
    }
    /* the status line waits until the generation holds a slot: a full queue
     * or a bad request is an HTTP error, not an error event in a 200 stream */
    pthread_mutex_lock(&j->mu);
    while (!j->started && !j->done)
        pthread_cond_wait(&j->cv, &j->mu);
    int started = j->started;
    pthread_mutex_unlock(&j->mu);
    if (!started) {
        pthread_join(j->th, NULL);
        oai_error_from_out(&j->out, &e);
        job_free(j);
        return reply_error(c, &e);
    }
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, j, sse_free);
    if (!r) {
        sse_free(j);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no"); /* nginx: pass events through */
    mhd_result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* ------------------------------------------------------------ other routes */

static mhd_result do_models(serve_http *h, struct MHD_Connection *c) {
    const qwen3_model_t *m = serve_ctx_model(h->s);
    const gen_config_t *gc = serve_ctx_gen_config(h->s);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data"), *md = cJSON_CreateObject();
    cJSON_AddStringToObject(md, "id", serve_ctx_model_name(h->s));
    cJSON_AddStringToObject(md, "object", "model");
    cJSON_AddNumberToObject(md, "created", (double)serve_ctx_started(h->s));
    cJSON_AddStringToObject(md, "owned_by", "kvtier");
    cJSON_AddNumberToObject(md, "max_model_len", m->cfg.max_pos);
    cJSON *g = cJSON_AddObjectToObject(md, "generation_config");
    cJSON_AddBoolToObject(g, "present", gc->present);
    cJSON_AddBoolToObject(g, "do_sample", gc->do_sample);
    if (gc->do_sample) {
        cJSON_AddNumberToObject(g, "temperature", gc->temperature);
        cJSON_AddNumberToObject(g, "top_p", gc->top_p);
        cJSON_AddNumberToObject(g, "top_k", gc->top_k);
    }
    cJSON *eos = cJSON_AddArrayToObject(g, "eos_token_id");
    for (int i = 0; i < gc->n_eos; i++)
        cJSON_AddItemToArray(eos, cJSON_CreateNumber(gc->eos[i]));
    const serve_cfg *cfg = serve_ctx_cfg(h->s);
    cJSON_AddNumberToObject(md, "max_tokens_limit", cfg->max_new_limit);
    cJSON_AddItemToArray(data, md);
    return reply_json(c, 200, root);
}

static mhd_result do_tokenize(serve_http *h, struct MHD_Connection *c, const char *body,
                              size_t len) {
    /* vLLM's shape: {"prompt": ...} or {"messages": [...]} ->
     * {"count", "max_model_len", "tokens"} */
    cJSON *root = cJSON_ParseWithLength(body, len);
    oai_error e;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return fail(c, 400, "invalid_request_error", "the body must be a JSON object");
    }
    oai_kind kind = cJSON_GetObjectItemCaseSensitive(root, "messages") ? OAI_CHAT : OAI_COMPLETIONS;
    cJSON_Delete(root);
    oai_request rq;
    if (oai_parse(kind, body, len, serve_ctx_model_name(h->s), &rq, &e) != 0)
        return reply_error(c, &e);
    int32_t *ids = NULL;
    size_t n = 0;
    char err[512];
    if (serve_tokenize(h->s, &rq.req, &ids, &n, err, sizeof err) != 0) {
        oai_request_free(&rq);
        return fail(c, 400, "invalid_request_error", err);
    }
    oai_request_free(&rq);
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "count", (double)n);
    cJSON_AddNumberToObject(out, "max_model_len", serve_ctx_model(h->s)->cfg.max_pos);
    cJSON *t = cJSON_AddArrayToObject(out, "tokens");
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(t, cJSON_CreateNumber(ids[i]));
    free(ids);
    return reply_json(c, 200, out);
}

static mhd_result do_detokenize(serve_http *h, struct MHD_Connection *c, const char *body,
                                size_t len) {
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *t = root ? cJSON_GetObjectItemCaseSensitive(root, "tokens") : NULL;
    if (!cJSON_IsArray(t)) {
        cJSON_Delete(root);
        return fail(c, 400, "invalid_request_error", "the body must be {\"tokens\": [ids...]}");
    }
    size_t n = (size_t)cJSON_GetArraySize(t), i = 0;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    const cJSON *it;
    size_t vocab = tokenizer_vocab_size(serve_ctx_tokenizer(h->s));
    int bad = !ids;
    cJSON_ArrayForEach(it, t) {
        if (bad || !cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble >= (double)vocab ||
            it->valuedouble != (double)(int32_t)it->valuedouble) {
            bad = 1;
            break;
        }
        ids[i++] = (int32_t)it->valuedouble;
    }
    cJSON_Delete(root);
    char *text = bad ? NULL : tokenizer_decode(serve_ctx_tokenizer(h->s), ids, n);
    free(ids);
    if (!text)
        return fail(c, 400, "invalid_request_error", "tokens must be ids of this tokenizer");
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "prompt", text);
    free(text);
    return reply_json(c, 200, out);
}

static mhd_result do_metrics(serve_http *h, struct MHD_Connection *c) {
    size_t len = 0;
    char *text = serve_ctx_render_metrics(h->s, &len);
    return reply(c, 200, "text/plain; version=0.0.4; charset=utf-8", text);
}

/* ------------------------------------------------------------ dispatch */

typedef struct {
    char *body;
    size_t len, cap;
    int too_big;
} req_body;

static int authorized(serve_http *h, struct MHD_Connection *c) {
    if (!h->api_key)
        return 1;
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (!a || strncmp(a, "Bearer ", 7) != 0)
        return 0;
    return rpc_secret_equal(a + 7, strlen(a + 7), h->api_key, strlen(h->api_key));
}

/* 1 when the connection's TLS peer presented a certificate that verifies
 * against the trusted CA (MHD asked for one: MHD_OPTION_HTTPS_MEM_TRUST). */
static int client_cert_ok(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session)
        return 0;
    gnutls_session_t ses = (gnutls_session_t)ci->tls_session;
    unsigned n = 0, status = 1;
    if (!gnutls_certificate_get_peers(ses, &n) || n == 0)
        return 0;
    return gnutls_certificate_verify_peers2(ses, &status) == 0 && status == 0;
}

static mhd_result answer(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                         const char *version, const char *upload, size_t *upload_size,
                         void **con_cls) {
    (void)version;
    serve_http *h = cls;
    int post = strcmp(method, "POST") == 0;
    if (!*con_cls) {
        req_body *b = calloc(1, sizeof *b);
        if (!b)
            return MHD_NO;
        *con_cls = b;
        return MHD_YES;
    }
    req_body *b = *con_cls;
    if (*upload_size) {
        if (b->len + *upload_size > HTTP_MAX_BODY)
            b->too_big = 1;
        else if (grow(&b->body, &b->len, &b->cap, upload, *upload_size) != 0)
            b->too_big = 1;
        *upload_size = 0;
        return MHD_YES;
    }
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (strcmp(url, "/health") == 0 && get) {
        if (serve_ctx_stopping(h->s))
            return fail(c, 503, "service_unavailable_error", "shutting down");
        return reply(c, 200, "application/json", strdup("{}"));
    }
    static const char *const posts[] = {"/v1/completions", "/v1/chat/completions", "/tokenize",
                                        "/detokenize"};
    static const char *const gets[] = {"/v1/models", "/metrics"};
    int known_post = 0, known_get = 0;
    for (int i = 0; i < 4; i++)
        known_post |= strcmp(url, posts[i]) == 0;
    for (int i = 0; i < 2; i++)
        known_get |= strcmp(url, gets[i]) == 0;
    if (!known_post && !known_get)
        return fail(c, 404, "not_found_error", "no such route (see `kvtier-worker serve --help`)");
    if ((known_post && !post) || (known_get && !get))
        return fail(c, 405, "invalid_request_error",
                    known_post ? "use POST for this route" : "use GET for this route");
    if (h->need_client_cert && !client_cert_ok(c))
        return fail(c, 403, "permission_error",
                    "a client certificate signed by this server's --tls-client-ca is required");
    if (!authorized(h, c))
        return fail(c, 401, "authentication_error",
                    "missing or wrong API key (Authorization: Bearer ...)");
    if (strcmp(url, "/v1/models") == 0)
        return do_models(h, c);
    if (strcmp(url, "/metrics") == 0)
        return do_metrics(h, c);
    if (b->too_big)
        return fail(c, 413, "invalid_request_error", "request body over 8 MiB");
    if (serve_ctx_stopping(h->s))
        return fail(c, 503, "service_unavailable_error", "shutting down");
    const char *body = b->body ? b->body : "";
    if (strcmp(url, "/tokenize") == 0)
        return do_tokenize(h, c, body, b->len);
    if (strcmp(url, "/detokenize") == 0)
        return do_detokenize(h, c, body, b->len);
    return do_generate(h, c, strcmp(url, "/v1/chat/completions") == 0 ? OAI_CHAT : OAI_COMPLETIONS,
                       body, b->len);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
                      enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    req_body *b = *con_cls;
    if (b) {
        free(b->body);
        free(b);
        *con_cls = NULL;
    }
}

serve_http *serve_http_start(serve_ctx *s, const char *addr, const char *api_key,
                             const char *cert_file, const char *key_file,
                             const char *client_ca_file, int *port_out, char *err, size_t errlen) {
    struct sockaddr_storage ss;
    socklen_t sl;
    if (metrics_http_resolve(addr, &ss, &sl, err, errlen) != 0)
        return NULL;
    serve_http *h = calloc(1, sizeof *h);
    if (!h || (api_key && !(h->api_key = strdup(api_key)))) {
        free(h);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->s = s;
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        r = (uint64_t)time(NULL) << 24;
    atomic_init(&h->next_id, (unsigned long long)r);
    unsigned flags =
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    uint16_t port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                             : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    char *cert = NULL, *key = NULL, *ca = NULL;
    int bad = 0;
    if (cert_file || key_file || client_ca_file) {
        if (!cert_file || !key_file) {
            snprintf(err, errlen, "HTTPS needs both a certificate and its key%s",
                     client_ca_file ? " (client certificates need HTTPS)" : "");
            bad = 1;
        } else if (!(cert = rpc_tls_read_pem(cert_file, "certificate", err, errlen)) ||
                   !(key = rpc_tls_read_pem(key_file, "key", err, errlen)) ||
                   (client_ca_file &&
                    !(ca = rpc_tls_read_pem(client_ca_file, "client CA", err, errlen)))) {
            bad = 1;
        }
        if (bad) {
            free(cert);
            free(key);
            free(h->api_key);
            free(h);
            return NULL;
        }
        flags |= MHD_USE_TLS;
    }
    h->need_client_cert = ca != NULL;
    /* TLS options only when asked for (MHD refuses them on a plain daemon) */
    struct MHD_OptionItem tls_opts[] = {{cert ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, key},
                                        {MHD_OPTION_HTTPS_MEM_CERT, 0, cert},
                                        /* a trusted CA makes MHD ask for (not require) a client
                                         * certificate; answer() requires a verified one */
                                        {ca ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, 0, ca},
                                        {MHD_OPTION_END, 0, NULL}};
    h->d = MHD_start_daemon(
        flags, port, NULL, NULL, answer, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_NOTIFY_COMPLETED, completed, h, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)600,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)1024, MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_END);
    free(cert); /* MHD copied them into its TLS credentials */
    free(key);
    free(ca);
    if (!h->d) {
        snprintf(err, errlen,
                 "cannot serve HTTP%s on %s (address in use, not local, or a bad certificate/key)",
                 cert_file ? "S" : "", addr);
        free(h->api_key);
        free(h);
        return NULL;
    }
    if (port_out) {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
        *port_out = di ? (int)di->port : (int)port;
    }
    return h;
}

void serve_http_stop(serve_http *h) {
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    free(h->api_key);
    free(h);
}
