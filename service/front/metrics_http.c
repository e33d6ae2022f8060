/* metrics_http.c - GET /metrics over libmicrohttpd (internal polling thread). */
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "metrics.h"

struct metrics_http {
    struct MHD_Daemon *d;
    metrics_render_fn fn;
    void *user;
};

#if MHD_VERSION >= 0x00097002
typedef enum MHD_Result mhd_result;
#else
typedef int mhd_result;
#endif

static mhd_result answer(void *cls, struct MHD_Connection *conn, const char *url,
                         const char *method, const char *version, const char *upload_data,
                         size_t *upload_size, void **con_cls) {
    (void)version;
    (void)upload_data;
    (void)upload_size;
    (void)con_cls;
    metrics_http *h = cls;
    struct MHD_Response *r;
    unsigned code;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        static const char msg[] = "only GET /metrics\n";
        r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        code = MHD_HTTP_METHOD_NOT_ALLOWED;
    } else if (strcmp(url, "/metrics") != 0) {
        static const char msg[] = "not found: the metrics are at /metrics\n";
        r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
        code = MHD_HTTP_NOT_FOUND;
    } else {
        size_t len = 0;
        char *text = h->fn(h->user, &len);
        if (!text) {
            static const char msg[] = "metrics unavailable (out of memory)\n";
            r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg,
                                                MHD_RESPMEM_PERSISTENT);
            code = MHD_HTTP_INTERNAL_SERVER_ERROR;
        } else {
            r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
            MHD_add_response_header(r, "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
            code = MHD_HTTP_OK;
        }
    }
    if (!r)
        return MHD_NO;
    mhd_result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

int metrics_http_resolve(const char *addr, struct sockaddr_storage *ss, socklen_t *sl, char *err,
                         size_t errlen) {
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || !colon[1]) {
        snprintf(err, errlen, "address \"%s\": expected HOST:PORT", addr);
        return -1;
    }
    size_t hl = (size_t)(colon - addr);
    if (addr[0] == '[' && hl >= 2 && addr[hl - 1] == ']') {
        addr++;
        hl -= 2;
    }
    if (hl >= sizeof host) {
        snprintf(err, errlen, "address \"%s\": host name too long", addr);
        return -1;
    }
    memcpy(host, addr, hl);
    host[hl] = 0;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "address \"%s\": %s", addr, gai_strerror(rc));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

metrics_http *metrics_http_start(const char *addr, metrics_render_fn fn, void *user, int *port_out,
                                 char *err, size_t errlen) {
    struct sockaddr_storage ss;
    socklen_t sl;
    if (metrics_http_resolve(addr, &ss, &sl, err, errlen) != 0)
        return NULL;
    metrics_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->fn = fn;
    h->user = user;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    uint16_t port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                             : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    h->d = MHD_start_daemon(flags, port, NULL, NULL, answer, h, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                            MHD_OPTION_END);
    if (!h->d) {
        snprintf(err, errlen, "cannot serve metrics on %s (address in use or not local?)", addr);
        free(h);
        return NULL;
    }
    if (port_out) {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
        *port_out = di ? (int)di->port : (int)port;
    }
    return h;
}

void metrics_http_stop(metrics_http *h) {
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}
