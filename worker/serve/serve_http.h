/* serve_http.h - the worker's OpenAI-compatible HTTP API:
 *   POST /v1/completions, POST /v1/chat/completions (stream: server-sent
 *   events, `data: [DONE]` last), GET /v1/models, GET /health, GET /metrics,
 *   POST /tokenize, POST /detokenize. Errors in OpenAI's
 *   {"error": {message, type, param, code}} shape. */
#ifndef KVTIER_SERVE_HTTP_H
#define KVTIER_SERVE_HTTP_H

#include <stddef.h>

#include "serve_gen.h"

typedef struct serve_http serve_http;

/* Serves the API for s on addr ("127.0.0.1:8000"; port 0 = any free port),
 * one thread per connection. api_key non-NULL: every route but /health needs
 * `Authorization: Bearer <api_key>` (401 otherwise). cert_file + key_file
 * (PEM) turn HTTPS on (NULL = plain HTTP); client_ca_file (PEM, may be NULL)
 * makes every route but /health require a client certificate signed by it
 * (403 otherwise): mutual TLS. *port_out (may be NULL) gets the bound port.
 * Returns NULL with a message in err. */
serve_http *serve_http_start(serve_ctx *s, const char *addr, const char *api_key,
                             const char *cert_file, const char *key_file,
                             const char *client_ca_file, int *port_out, char *err, size_t errlen);

/* Stops accepting, waits for the connections' threads, frees. Call
 * serve_ctx_stop first so that running generations end. NULL is a no-op. */
void serve_http_stop(serve_http *h);

#endif
