/* serve_openai.h - OpenAI's HTTP API shapes (completions, chat completions,
 * streaming chunks, errors) to and from serve_req / serve_out. JSON only: no
 * sockets, no generation (serve_http.c does those). */
#ifndef KVTIER_SERVE_OPENAI_H
#define KVTIER_SERVE_OPENAI_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "serve_gen.h"

typedef enum { OAI_COMPLETIONS = 0, OAI_CHAT = 1 } oai_kind;

/* An error as OpenAI sends it: HTTP status, error.type, error.message,
 * error.param. */
typedef struct {
    int http;
    const char *type; /* "invalid_request_error", "not_found_error", ... */
    const char *param;
    char message[512];
} oai_error;

/* A parsed request: req points into root and the arrays here. */
typedef struct {
    oai_kind kind;
    cJSON *root;
    serve_req req;
    chat_msg *msgs;
    char **owned; /* joined content parts */
    size_t n_owned;
    int32_t *ids; /* completions prompt given as token ids */
    int stream, include_usage;
    int logprobs; /* completions: logprobs N given; chat: logprobs true */
    char model[256];
} oai_request;

/* Parses a /v1/completions or /v1/chat/completions body. model_name: the
 * served name (a request naming another model gets 404); default_max_new:
 * max_tokens when absent for chat (completions default to 16, as OpenAI).
 * Returns 0, or -1 with *e filled (400 for bad JSON, a wrong type, an
 * unsupported option such as n > 1 or a penalty; 404 for another model). */
int oai_parse(oai_kind kind, const char *body, size_t len, const char *model_name, oai_request *r,
              oai_error *e);

void oai_request_free(oai_request *r);

/* Fills e with status, type and a printf-style message. */
void oai_error_set(oai_error *e, int http, const char *type, const char *param, const char *fmt,
                   ...) __attribute__((format(printf, 5, 6)));

/* {"error": {...}} as malloc'd JSON text (NULL on OOM). */
char *oai_error_json(const oai_error *e);

/* HTTP status and error type of a serve outcome. */
void oai_error_from_out(const serve_out *o, oai_error *e);

/* Logprob items of n tokens appended to arr (chat: `content` items with
 * top_logprobs; completions: the four parallel arrays of a logprobs object
 * `lp`, text_offset counted from *offset, which advances). */
void oai_logprobs_add(oai_kind kind, const tokenizer_t *tok, const serve_logprob *lps, size_t n,
                      cJSON *lp, size_t *offset);

/* A new empty logprobs object for kind ({"content": []} or the four arrays). */
cJSON *oai_logprobs_new(oai_kind kind);

/* One streaming chunk (object "text_completion" or "chat.completion.chunk")
 * with a text delta (role "assistant" on the first chat chunk), its logprobs
 * (lp consumed, may be NULL) and finish_reason (NULL = null). Returns
 * malloc'd JSON text. */
char *oai_chunk(const oai_request *r, const char *id, long created, const char *text, size_t len,
                int first, cJSON *lp, const char *finish_reason, const serve_out *fin);

/* The chunk with only usage (stream_options.include_usage). */
char *oai_usage_chunk(const oai_request *r, const char *id, long created, const serve_out *o);

/* The whole non-streamed response (lp consumed, may be NULL). */
char *oai_response(const oai_request *r, const char *id, long created, const char *text, size_t len,
                   cJSON *lp, const serve_out *o);

/* The `kvtier` extension object of a finished generation (tier statistics). */
cJSON *oai_kvtier_stats(const serve_out *o);

#endif
