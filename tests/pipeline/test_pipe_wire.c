/* test_pipe_wire.c - the pipeline's message framing over real sockets (a
 * socketpair through the socket transport): a message goes through intact;
 * bad headers (magic, version, op, reserved field, sizes that do not add
 * up, a payload beyond the receiver's limit), a truncated message, a closed
 * peer and silence are refused with a message, within the deadline. Also
 * the pipeline flags, and the NCCL unique id exchange over real gRPC
 * (kvtier.v1.Pipeline/GetNcclId: no NCCL or GPU needed). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "pipe_conf.h"
#include "pipe_ncclid.h"
#include "pipe_transport.h"
#include "pipe_wire.h"

/* sv[0]: the test writes raw bytes; t reads from sv[1] (and sends to it). */
typedef struct {
    int raw;
    pipe_transport_t *t;
} pair_t;

static pair_t pair_new(void) {
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    pair_t p = {sv[0], pipe_socket_from_fds(sv[1], sv[1])};
    assert_non_null(p.t);
    return p;
}

static void pair_free(pair_t *p) {
    if (p->raw >= 0)
        close(p->raw);
    pipe_transport_free(p->t);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static void fwd_hdr(pipe_hdr_t *h, uint32_t n, uint32_t width) {
    pipe_hdr_init(h, PIPE_OP_FWD, 0);
    h->seq = 3;
    h->pos0 = 17;
    h->n = n;
    h->want = 1;
    h->flags = PIPE_F_DECODE;
    h->width = width;
    h->payload_bytes = (uint64_t)n * width * sizeof(float);
}

/* Writes a header (+ payload bytes) as raw bytes, mangled by the caller. */
static void raw_write(int fd, const unsigned char *hb, const void *payload, size_t n) {
    assert_int_equal(write(fd, hb, PIPE_HDR_BYTES), PIPE_HDR_BYTES);
    if (n)
        assert_int_equal(write(fd, payload, n), (ssize_t)n);
}

static void test_roundtrip(void **state) {
    (void)state;
    pair_t p = pair_new();
    pipe_transport_t *peer = pipe_socket_from_fds(p.raw, p.raw);
    p.raw = -1;
    float x[2 * 8];
    for (int i = 0; i < 16; i++)
        x[i] = (float)i * 0.5f - 3.0f;
    pipe_hdr_t h, g;
    fwd_hdr(&h, 2, 8);
    char err[256];
    assert_int_equal(pipe_send(peer, &h, x, 1000, err, sizeof err), PIPE_OK);
    float got[16];
    assert_int_equal(pipe_recv(p.t, &g, got, sizeof got, 1000, err, sizeof err), PIPE_OK);
    assert_int_equal(g.op, PIPE_OP_FWD);
    assert_int_equal(g.seq, 3);
    assert_int_equal(g.pos0, 17);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.want, 1);
    assert_int_equal(g.flags, PIPE_F_DECODE);
    assert_int_equal(g.width, 8);
    assert_memory_equal(got, x, sizeof x);
    /* ERROR with text, HELLO with its payload */
    pipe_hdr_init(&h, PIPE_OP_ERROR, 2);
    h.payload_bytes = 5;
    assert_int_equal(pipe_send(peer, &h, "boom!", 1000, err, sizeof err), PIPE_OK);
    char text[PIPE_ERRTEXT_MAX];
    assert_int_equal(pipe_recv(p.t, &g, text, sizeof text, 1000, err, sizeof err), PIPE_OK);
    assert_int_equal(g.op, PIPE_OP_ERROR);
    assert_int_equal(g.rank, 2);
    assert_memory_equal(text, "boom!", 5);
    pipe_hello_t hl = {.world = 3,
                       .hidden = 64,
                       .n_layers = 6,
                       .next_layer = 2,
                       .max_chunk = 256,
                       .fingerprint = 0xdeadbeef};
    unsigned char pl[PIPE_HELLO_BYTES];
    pipe_hello_encode(&hl, pl);
    pipe_hdr_init(&h, PIPE_OP_HELLO, 0);
    h.payload_bytes = sizeof pl;
    assert_int_equal(pipe_send(peer, &h, pl, 1000, err, sizeof err), PIPE_OK);
    unsigned char back[PIPE_ERRTEXT_MAX];
    assert_int_equal(pipe_recv(p.t, &g, back, sizeof back, 1000, err, sizeof err), PIPE_OK);
    pipe_hello_t hb;
    pipe_hello_decode(back, &hb);
    assert_int_equal(hb.world, 3);
    assert_int_equal(hb.next_layer, 2);
    assert_int_equal(hb.fingerprint, 0xdeadbeef);
    pipe_transport_free(peer);
    pair_free(&p);
}

/* A header mangled by `mangle` is refused with a message containing `want`. */
static void refused(void (*mangle)(unsigned char *hb, pipe_hdr_t *h), size_t cap,
                    const char *want) {
    pair_t p = pair_new();
    pipe_hdr_t h;
    fwd_hdr(&h, 2, 8);
    if (mangle)
        mangle(NULL, &h);
    unsigned char hb[PIPE_HDR_BYTES];
    pipe_hdr_encode(&h, hb);
    if (mangle)
        mangle(hb, &h);
    float x[16] = {0};
    raw_write(p.raw, hb, x, sizeof x);
    char err[256] = "", buf[4096];
    pipe_hdr_t g;
    int rc = pipe_recv(p.t, &g, buf, cap, 1000, err, sizeof err);
    if (rc != PIPE_EPROTO || !strstr(err, want))
        fail_msg("expected PIPE_EPROTO with '%s', got %d: %s", want, rc, err);
    pair_free(&p);
}

static void m_magic(unsigned char *hb, pipe_hdr_t *h) {
    (void)h;
    if (hb)
        hb[0] ^= 0xff;
}
static void m_version(unsigned char *hb, pipe_hdr_t *h) {
    if (!hb)
        h->version = 7;
}
static void m_op(unsigned char *hb, pipe_hdr_t *h) {
    if (!hb)
        h->op = 99;
}
static void m_reserved(unsigned char *hb, pipe_hdr_t *h) {
    (void)h;
    if (hb)
        hb[36] = 1;
}
static void m_size(unsigned char *hb, pipe_hdr_t *h) {
    if (!hb)
        h->payload_bytes -= 4; /* 2 rows x 8 floats are 64 bytes, not 60 */
}
static void m_want(unsigned char *hb, pipe_hdr_t *h) {
    if (!hb)
        h->want = 3; /* more rows back than sent */
}
static void m_zero_rows(unsigned char *hb, pipe_hdr_t *h) {
    if (!hb)
        h->n = 0, h->want = 0, h->payload_bytes = 0;
}
static void m_close_payload(unsigned char *hb, pipe_hdr_t *h) {
    if (!hb)
        h->op = PIPE_OP_CLOSE; /* CLOSE carries no payload */
}

static void test_bad_headers(void **state) {
    (void)state;
    refused(m_magic, 4096, "magic");
    refused(m_version, 4096, "version 7");
    refused(m_op, 4096, "unknown op 99");
    refused(m_reserved, 4096, "reserved");
    refused(m_size, 4096, "need 64 payload bytes");
    refused(m_want, 4096, "3 rows wanted back");
    refused(m_zero_rows, 4096, "0 rows");
    refused(m_close_payload, 4096, "expected none");
    refused(NULL, 32, "exceeds the limit of 32"); /* 64 bytes for a 32-byte buffer */
}

static void test_truncated_closed_silent(void **state) {
    (void)state;
    char err[256], buf[256];
    pipe_hdr_t h, g;
    /* header, half the payload, then the peer goes away */
    pair_t p = pair_new();
    fwd_hdr(&h, 2, 8);
    unsigned char hb[PIPE_HDR_BYTES];
    pipe_hdr_encode(&h, hb);
    float x[8] = {0};
    raw_write(p.raw, hb, x, sizeof x);
    close(p.raw);
    p.raw = -1;
    assert_int_equal(pipe_recv(p.t, &g, buf, sizeof buf, 1000, err, sizeof err), PIPE_ECLOSED);
    assert_non_null(strstr(err, "middle of a message"));
    pair_free(&p);
    /* a clean close between messages */
    p = pair_new();
    close(p.raw);
    p.raw = -1;
    assert_int_equal(pipe_recv(p.t, &g, buf, sizeof buf, 1000, err, sizeof err), PIPE_ECLOSED);
    pair_free(&p);
    /* half a header, then silence: the deadline ends the wait */
    p = pair_new();
    assert_int_equal(write(p.raw, hb, 10), 10);
    double t0 = now_ms();
    assert_int_equal(pipe_recv(p.t, &g, buf, sizeof buf, 200, err, sizeof err), PIPE_ETIMEOUT);
    double waited = now_ms() - t0;
    assert_true(waited >= 150 && waited < 5000);
    pair_free(&p);
    /* sending to a peer that is gone */
    p = pair_new();
    close(p.raw);
    p.raw = -1;
    fwd_hdr(&h, 2, 8);
    float y[16] = {0};
    int rc = pipe_send(p.t, &h, y, 1000, err, sizeof err);
    assert_int_equal(rc, PIPE_ECLOSED);
    pair_free(&p);
}

static void test_nonfinite(void **state) {
    (void)state;
    float x[6] = {0, 1, -2, 3e38f, -0.0f, 5};
    assert_int_equal(pipe_first_nonfinite(x, 6), -1);
    x[4] = NAN;
    assert_int_equal(pipe_first_nonfinite(x, 6), 4);
    x[1] = -INFINITY;
    assert_int_equal(pipe_first_nonfinite(x, 6), 1);
    assert_int_equal(pipe_first_nonfinite(x, 0), -1);
}

static void test_conf(void **state) {
    (void)state;
    pipe_conf_t c;
    pipe_conf_defaults(&c);
    assert_int_equal(pipe_conf_set(&c, "t", "--layers", "2-5"), 1);
    assert_int_equal(c.l0, 2);
    assert_int_equal(c.l1, 6);
    assert_int_equal(pipe_conf_set(&c, "t", "--layers", "5-2"), -1);
    assert_int_equal(pipe_conf_set(&c, "t", "--layers", "2-"), -1);
    assert_int_equal(pipe_conf_set(&c, "t", "--world-size", "1"), -1);
    assert_int_equal(pipe_conf_set(&c, "t", "--transport", "carrier-pigeon"), -1);
    assert_int_equal(pipe_conf_set(&c, "t", "--prompt", "x"), 0);
    assert_int_equal(pipe_conf_set(&c, "t", "--world-size", "2"), 1);
    assert_int_equal(pipe_conf_set(&c, "t", "--rank", "1"), 1);
    char err[256];
    assert_int_equal(pipe_conf_check(&c, 6, err, sizeof err), -1); /* no addresses */
    assert_non_null(strstr(err, "--pipe-listen"));
    assert_int_equal(pipe_conf_set(&c, "t", "--pipe-listen", "127.0.0.1:1"), 1);
    assert_int_equal(pipe_conf_set(&c, "t", "--pipe-next", "127.0.0.1:2"), 1);
    assert_int_equal(pipe_conf_check(&c, 6, err, sizeof err), 0);
    assert_int_equal(pipe_conf_check(&c, 4, err, sizeof err), -1); /* layers 2-5 of 4 */
    assert_non_null(strstr(err, "0-3"));
    c.rank = 0;
    assert_int_equal(pipe_conf_check(&c, 6, err, sizeof err), -1); /* rank 0 starts at 0 */
    assert_non_null(strstr(err, "start at 0"));
}

/* ---------------------------------------------------------------- NCCL id over gRPC */

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

typedef struct {
    char addr[64];
    unsigned char id[PIPE_NCCLID_BYTES];
    int world, timeout_ms, rc;
    char err[256];
} serve_arg;

static void *serve_thread(void *p) {
    serve_arg *a = p;
    a->rc = pipe_ncclid_serve(a->addr, a->id, a->world, a->timeout_ms, a->err, sizeof a->err);
    return NULL;
}

static void test_ncclid(void **state) {
    (void)state;
    serve_arg a = {.world = 3, .timeout_ms = 20000};
    snprintf(a.addr, sizeof a.addr, "127.0.0.1:%d", free_port());
    for (int i = 0; i < PIPE_NCCLID_BYTES; i++)
        a.id[i] = (unsigned char)(i * 7 + 1);
    pthread_t th;
    pthread_create(&th, NULL, serve_thread, &a);
    unsigned char got[PIPE_NCCLID_BYTES];
    char err[256] = "";
    /* a rank that expects another world size is refused, with the reason */
    assert_int_equal(pipe_ncclid_fetch(a.addr, 1, 4, got, 10000, err, sizeof err), -1);
    assert_non_null(strstr(err, "world size 4"));
    for (int r = 1; r <= 2; r++) {
        memset(got, 0, sizeof got);
        if (pipe_ncclid_fetch(a.addr, r, 3, got, 10000, err, sizeof err) != 0)
            fail_msg("rank %d: %s", r, err);
        assert_memory_equal(got, a.id, sizeof got);
    }
    pthread_join(th, NULL);
    if (a.rc != 0)
        fail_msg("serve: %s", a.err);
    /* nobody comes: serve gives up at its deadline, saying how many came */
    serve_arg b = {.world = 2, .timeout_ms = 300};
    snprintf(b.addr, sizeof b.addr, "127.0.0.1:%d", free_port());
    double t0 = now_ms();
    assert_int_equal(pipe_ncclid_serve(b.addr, b.id, 2, 300, b.err, sizeof b.err), -1);
    assert_true(now_ms() - t0 < 10000);
    assert_non_null(strstr(b.err, "only 0 of the 1"));
    /* nothing serves: fetch gives up at its deadline */
    t0 = now_ms();
    assert_int_equal(pipe_ncclid_fetch(b.addr, 1, 2, got, 500, err, sizeof err), -1);
    assert_true(now_ms() - t0 < 10000);
    assert_non_null(strstr(err, "did not answer"));
}

/* Ring setup is bounded too: nobody listening at --pipe-next, or nobody
 * connecting to --pipe-listen, ends at the deadline with a message naming
 * the address. */
static void test_ring_setup_bounded(void **state) {
    (void)state;
    char mine[64], next[64], err[256] = "";
    snprintf(mine, sizeof mine, "127.0.0.1:%d", free_port());
    snprintf(next, sizeof next, "127.0.0.1:%d", free_port());
    double t0 = now_ms();
    assert_null(pipe_socket_ring(mine, next, 300, err, sizeof err));
    assert_true(now_ms() - t0 < 10000);
    assert_non_null(strstr(err, "cannot connect to the next rank"));
    assert_non_null(strstr(err, next));
    /* a next rank that listens, and a previous rank that never comes */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(lfd, 4), 0);
    socklen_t l = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &l);
    snprintf(next, sizeof next, "127.0.0.1:%d", ntohs(a.sin_port));
    t0 = now_ms();
    assert_null(pipe_socket_ring(mine, next, 300, err, sizeof err));
    assert_true(now_ms() - t0 < 10000);
    assert_non_null(strstr(err, "did not connect"));
    assert_non_null(strstr(err, mine));
    close(lfd);
    /* a bad address is refused at once */
    assert_null(pipe_socket_ring("127.0.0.1", next, 300, err, sizeof err));
    assert_non_null(strstr(err, "HOST:PORT"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_truncated_closed_silent),
        cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_conf),
        cmocka_unit_test(test_ncclid),
        cmocka_unit_test(test_ring_setup_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
