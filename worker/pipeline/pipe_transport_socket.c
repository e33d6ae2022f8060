/* pipe_transport_socket.c - the pipeline ring over TCP (see pipe_transport.h).
 * One connection to the next rank (we write), one from the previous rank (we
 * read); every wait goes through poll() with the caller's deadline. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "pipe_transport.h"

typedef struct {
    pipe_transport_t base;
    int send_fd, recv_fd;
} pipe_sock_t;

static double ps_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

/* Milliseconds left before deadline (< 0 deadline: -1 = wait forever). */
static int ps_left(double deadline) {
    if (deadline < 0)
        return -1;
    double l = deadline - ps_now_ms();
    return l <= 0 ? 0 : (int)(l + 1);
}

/* Waits until fd is ready for `events`. PIPE_OK, PIPE_ETIMEOUT or PIPE_EIO. */
static int ps_wait(int fd, short events, double deadline, char *err, size_t errlen) {
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int left = ps_left(deadline);
        int r = poll(&p, 1, left);
        if (r > 0)
            return PIPE_OK;
        if (r == 0) {
            snprintf(err, errlen, "no data within the deadline");
            return PIPE_ETIMEOUT;
        }
        if (errno != EINTR) {
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return PIPE_EIO;
        }
    }
}

static int ps_write_all(int fd, const void *buf, size_t n, double deadline, char *err,
                        size_t errlen) {
    const char *p = buf;
    while (n) {
        int rc = ps_wait(fd, POLLOUT, deadline, err, errlen);
        if (rc == PIPE_ETIMEOUT) {
            snprintf(err, errlen, "the next rank read nothing within the deadline");
            return rc;
        }
        if (rc)
            return rc;
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            snprintf(err, errlen, "send: %s", strerror(errno));
            return errno == EPIPE || errno == ECONNRESET ? PIPE_ECLOSED : PIPE_EIO;
        }
        p += w;
        n -= (size_t)w;
    }
    return PIPE_OK;
}

/* Reads exactly n bytes. `started`: part of a message was read already (an
 * end of stream then is a truncated message, not a clean close). */
static int ps_read_all(int fd, void *buf, size_t n, double deadline, int started, char *err,
                       size_t errlen) {
    char *p = buf;
    size_t got = 0;
    while (got < n) {
        int rc = ps_wait(fd, POLLIN, deadline, err, errlen);
        if (rc)
            return rc;
        ssize_t r = recv(fd, p + got, n - got, MSG_DONTWAIT);
        if (r == 0) {
            if (started || got)
                snprintf(err, errlen, "connection closed in the middle of a message");
            else
                snprintf(err, errlen, "connection closed");
            return PIPE_ECLOSED;
        }
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            snprintf(err, errlen, "recv: %s", strerror(errno));
            return errno == ECONNRESET ? PIPE_ECLOSED : PIPE_EIO;
        }
        got += (size_t)r;
    }
    return PIPE_OK;
}

static double ps_deadline(int timeout_ms) {
    return timeout_ms < 0 ? -1 : ps_now_ms() + timeout_ms;
}

static int ps_send(pipe_transport_t *t, const pipe_hdr_t *h, const void *payload, int timeout_ms,
                   char *err, size_t errlen) {
    pipe_sock_t *s = (pipe_sock_t *)t;
    unsigned char hb[PIPE_HDR_BYTES];
    pipe_hdr_encode(h, hb);
    double dl = ps_deadline(timeout_ms);
    int rc = ps_write_all(s->send_fd, hb, sizeof hb, dl, err, errlen);
    if (rc == PIPE_OK && h->payload_bytes)
        rc = ps_write_all(s->send_fd, payload, (size_t)h->payload_bytes, dl, err, errlen);
    return rc;
}

static int ps_recv(pipe_transport_t *t, pipe_hdr_t *h, void *buf, size_t cap, int timeout_ms,
                   char *err, size_t errlen) {
    pipe_sock_t *s = (pipe_sock_t *)t;
    unsigned char hb[PIPE_HDR_BYTES];
    double dl = ps_deadline(timeout_ms);
    int rc = ps_read_all(s->recv_fd, hb, sizeof hb, dl, 0, err, errlen);
    if (rc)
        return rc;
    if (pipe_hdr_decode(hb, cap, h, err, errlen) != 0)
        return PIPE_EPROTO;
    if (h->payload_bytes)
        rc = ps_read_all(s->recv_fd, buf, (size_t)h->payload_bytes, dl, 1, err, errlen);
    return rc;
}

static void ps_free(pipe_transport_t *t) {
    pipe_sock_t *s = (pipe_sock_t *)t;
    if (s->send_fd >= 0)
        close(s->send_fd);
    if (s->recv_fd >= 0 && s->recv_fd != s->send_fd)
        close(s->recv_fd);
    free(s);
}

static const pipe_transport_ops ps_ops = {"socket", 1, ps_send, ps_recv, ps_free};

pipe_transport_t *pipe_socket_from_fds(int send_fd, int recv_fd) {
    pipe_sock_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->base.ops = &ps_ops;
    s->send_fd = send_fd;
    s->recv_fd = recv_fd;
    int one = 1;
    setsockopt(send_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails on a socketpair */
    return &s->base;
}

/* ---------------------------------------------------------------- ring setup */

/* "host:port" -> addrinfo list (caller frees). */
static struct addrinfo *ps_resolve(const char *addr, int passive, char *err, size_t errlen) {
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || !colon[1] || (size_t)(colon - addr) >= sizeof host) {
        snprintf(err, errlen, "'%s' is not HOST:PORT", addr);
        return NULL;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = 0;
    char *h = host;
    if (h[0] == '[' && h[strlen(h) - 1] == ']') { /* [::1]:7000 */
        h[strlen(h) - 1] = 0;
        h++;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (passive)
        hints.ai_flags = AI_PASSIVE;
    struct addrinfo *res = NULL;
    int r = getaddrinfo(h, colon + 1, &hints, &res);
    if (r != 0) {
        snprintf(err, errlen, "'%s': %s", addr, gai_strerror(r));
        return NULL;
    }
    return res;
}

static int ps_listen(const char *addr, char *err, size_t errlen) {
    struct addrinfo *ai = ps_resolve(addr, 1, err, errlen);
    if (!ai)
        return -1;
    int fd = -1;
    for (struct addrinfo *p = ai; p; p = p->ai_next) {
        fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, p->ai_addr, p->ai_addrlen) == 0 && listen(fd, 4) == 0)
            break;
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

/* One non-blocking connect to p, waiting at most until the deadline (or 1 s
 * at a time, so that an address that drops packets does not hold the whole
 * deadline before the next try). Returns the fd, or -1 with errno set. */
static int ps_connect_one(const struct addrinfo *p, double deadline) {
    int fd = socket(p->ai_family, p->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, p->ai_addr, p->ai_addrlen) == 0)
        return fd;
    if (errno == EINPROGRESS) {
        int left = ps_left(deadline);
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        int r = poll(&pf, 1, left < 0 || left > 1000 ? 1000 : left);
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (r > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
            return fd;
        errno = r == 0 ? ETIMEDOUT : soerr ? soerr : errno;
    }
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

/* Connects to addr, retrying refused connections until the deadline. */
static int ps_connect(const char *addr, double deadline, char *err, size_t errlen) {
    for (;;) {
        struct addrinfo *ai = ps_resolve(addr, 0, err, errlen);
        if (!ai)
            return -1;
        int fd = -1, last = 0;
        for (struct addrinfo *p = ai; p && fd < 0; p = p->ai_next) {
            fd = ps_connect_one(p, deadline);
            if (fd < 0)
                last = errno;
        }
        freeaddrinfo(ai);
        if (fd >= 0)
            return fd;
        if (ps_left(deadline) == 0) {
            snprintf(err, errlen, "cannot connect to the next rank at %s: %s (gave up)", addr,
                     strerror(last));
            return -1;
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

pipe_transport_t *pipe_socket_ring(const char *listen_addr, const char *next_addr, int timeout_ms,
                                   char *err, size_t errlen) {
    double dl = ps_deadline(timeout_ms);
    int lfd = ps_listen(listen_addr, err, errlen);
    if (lfd < 0)
        return NULL;
    int out = ps_connect(next_addr, dl, err, errlen);
    if (out < 0) {
        close(lfd);
        return NULL;
    }
    int in = -1;
    if (ps_wait(lfd, POLLIN, dl, err, errlen) != PIPE_OK)
        snprintf(err, errlen, "the previous rank did not connect to %s within %d ms", listen_addr,
                 timeout_ms);
    else if ((in = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) < 0)
        snprintf(err, errlen, "accept on %s: %s", listen_addr, strerror(errno));
    close(lfd);
    if (in < 0) {
        close(out);
        return NULL;
    }
    pipe_transport_t *t = pipe_socket_from_fds(out, in);
    if (!t) {
        close(out);
        close(in);
        snprintf(err, errlen, "out of memory");
    }
    return t;
}
