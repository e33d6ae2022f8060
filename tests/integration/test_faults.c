/* test_faults.c — kvtierd under faults and bad input, each with its exact
 * gRPC status code. A PutBlocks stream is the unit of durability: it is
 * acknowledged by its one final response and stored whole or not at all.
 *   kill -9 during a PutBlocks stream (after kvtierd read the stream's bytes)
 *     -> restart: blocks of the earlier, acknowledged streams fetch
 *     byte-identical and the map shows them; every block of the killed,
 *     unacknowledged stream is NOT_FOUND, never garbage;
 *   write-back: kill -9 -> RAM-only blocks NOT_FOUND, evicted-to-SSD survive;
 *   bad crc32c -> DATA_LOSS, not stored (fetch NOT_FOUND);
 *   a bad block in the middle of a stream -> answered at once (before the
 *     client half-closes), none of the stream's blocks stored;
 *   a stream beyond the staging bound (16 max messages of payload) ->
 *     RESOURCE_EXHAUSTED asking to split it, nothing stored;
 *   malformed protobuf (raw bytes through the RPC layer) -> INVALID_ARGUMENT;
 *   payload over the limits -> RESOURCE_EXHAUSTED;
 *   unknown sequence -> NOT_FOUND (fetch, put, map, evict);
 *   client cancels mid-stream -> nothing of that stream stored, server healthy;
 *   SIGTERM -> exit 0 with write-back data flushed;
 *   Block.target (issue 10): SSD / HOST placement as asked, HOT or DROPPED
 *     -> INVALID_ARGUMENT; Evict --to host brings SSD blocks back to RAM;
 *   (corrupt SST files and index OOM: test_store_faults.c). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <arpa/inet.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "itest.h"
#include "kvtier.pb-c.h"
#include "rpc.h"

#define BLOCK ITEST_BLOCK

/* ---------------------------------------------------------------- helpers */

/* ---------------------------------------------------------------- TCP probes */

/* Payload bytes of this process' TCP connections to loopback `port` that the
 * peer's kernel acknowledged (TCP_INFO tcpi_bytes_acked), summed over every
 * socket (gRPC may use v4-mapped IPv6 sockets). -1 when /proc/self/fd cannot
 * be read. */
static int64_t acked_to_port(int port) {
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int64_t sum = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int fd = atoi(de->d_name);
        if (de->d_name[0] < '0' || de->d_name[0] > '9' || fd == dirfd(d))
            continue;
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
            continue;
        int peer = ss.ss_family == AF_INET    ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                   : ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                              : -1;
        struct tcp_info ti;
        socklen_t tl = sizeof ti;
        memset(&ti, 0, sizeof ti);
        if (peer == port && getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0)
            sum += (int64_t)ti.tcpi_bytes_acked;
    }
    closedir(d);
    return sum;
}

/* Bytes waiting, unread by the listening process, in the receive queues of
 * the established connections whose local port is `port` (/proc/net/tcp and
 * tcp6). -1 when neither file can be read. */
static long server_unread(int port) {
    static const char *files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    long sum = -1;
    for (size_t f = 0; f < 2; f++) {
        FILE *fp = fopen(files[f], "r");
        if (!fp)
            continue;
        if (sum < 0)
            sum = 0;
        char line[512];
        while (fgets(line, sizeof line, fp)) {
            unsigned lport = 0, rport = 0, st = 0;
            unsigned long tx = 0, rx = 0;
            if (sscanf(line, " %*d: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%x %x %lx:%lx", &lport, &rport,
                       &st, &tx, &rx) == 5 &&
                (int)lport == port && st == 0x01 /* ESTABLISHED */)
                sum += (long)rx;
        }
        fclose(fp);
    }
    return sum;
}

/* ---------------------------------------------------------------- crash tests */

static void test_kill9_during_put(void **state) {
    (void)state;
    itest_server s = {0};
    assert_int_equal(itest_server_start(&s, NULL), 0);
    kvtier_client *c = itest_client(&s, "crash");
    const uint64_t seq = 7;
    const uint32_t L = 2, acked_to = 40, inflight_to = 52, total = 64;
    itest_open_seq(c, seq, L);
    itest_put_range(c, seq, L, 0, 20); /* two acknowledged streams */
    itest_put_range(c, seq, L, 20, acked_to);

    /* A third stream of 24 blocks is cut by kill -9 before its response. */
    int64_t acked0 = acked_to_port(s.port);
    assert_true(acked0 >= 0);
    uint8_t *buf = malloc(BLOCK);
    kvtier_error e;
    kvtier_put_stream *p = kvtier_put_open(c, seq, &e);
    assert_non_null(p);
    for (uint32_t l = 0; l < L; l++)
        for (uint32_t b = acked_to; b < inflight_to; b++) {
            itest_payload(buf, BLOCK, seq, l, b, 0);
            kvtier_block blk = {l, b, buf, BLOCK, 0, 0, 16, KVTIER_TIER_ABSENT};
            assert_int_equal(kvtier_put_send(p, &blk, &e), KVTIER_OK);
        }
    /* Kill only once kvtierd has the stream: its kernel acknowledged all the
     * stream's payload bytes on our connection, and kvtierd read them all off
     * its sockets (receive queues empty). Nothing of it may be visible yet:
     * the stream is staged, not stored. */
    const int64_t stream_bytes = (int64_t)L * (inflight_to - acked_to) * BLOCK;
    int64_t sent = 0;
    long unread = -1;
    for (uint64_t t0 = itest_now_ms(); itest_now_ms() - t0 < 10000; usleep(2000)) {
        sent = acked_to_port(s.port) - acked0;
        unread = server_unread(s.port);
        if (sent >= stream_bytes && unread == 0)
            break;
    }
    fprintf(stderr,
            "kill -9: stream of %lld payload bytes, %lld acknowledged by the server's "
            "kernel, %ld unread by kvtierd\n",
            (long long)stream_bytes, (long long)sent, unread);
    assert_true(sent >= stream_bytes);
    assert_int_equal(unread, 0);
    kvtier_client *probe = itest_client(&s, "crash");
    kvtier_tier_map pm;
    assert_int_equal(kvtier_tier_map_get(probe, seq, &pm, &e), KVTIER_OK);
    for (uint32_t l = 0; l < L; l++)
        for (uint32_t b = acked_to; b < pm.n_blocks; b++) {
            uint8_t t = pm.tiers[(size_t)l * pm.n_blocks + b];
            assert_true(t != KVTIER_TIER_SSD && t != KVTIER_TIER_HOST);
        }
    kvtier_tier_map_free(&pm);
    kvtier_client_free(probe);
    int st = 0;
    assert_int_equal(itest_server_signal(&s, SIGKILL, 5000, &st), 0);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    kvtier_code code = kvtier_put_finish(p, NULL, &e);
    assert_int_not_equal(code, KVTIER_OK); /* never acknowledged */
    kvtier_client_free(c);
    free(buf);

    assert_int_equal(itest_server_restart(&s), 0);
    c = itest_client(&s, "crash");
    /* The index is recovered: the map shows exactly the acknowledged blocks
     * stored, without reopening the sequence. */
    kvtier_tier_map m;
    code = kvtier_tier_map_get(c, seq, &m, &e);
    if (code)
        fprintf(stderr, "map after restart: %s\n", e.message);
    assert_int_equal(code, KVTIER_OK);
    assert_int_equal(m.n_layers, L);
    for (uint32_t l = 0; l < L; l++)
        for (uint32_t b = 0; b < m.n_blocks; b++) {
            uint8_t t = m.tiers[(size_t)l * m.n_blocks + b];
            if (b < acked_to)
                assert_true(t == KVTIER_TIER_SSD || t == KVTIER_TIER_HOST);
            else
                assert_true(t != KVTIER_TIER_SSD && t != KVTIER_TIER_HOST);
        }
    for (uint32_t l = 0; l < L; l++)
        for (uint32_t b = 0; b < total; b++) {
            int same = 0;
            code = itest_fetch_one(c, seq, l, b, &same);
            if (b < acked_to) {
                if (code)
                    fprintf(stderr, "acked block (%u,%u): %s\n", l, b, kvtier_code_name(code));
                assert_int_equal(code, KVTIER_OK);
                assert_true(same);
            } else { /* the killed stream's blocks, and never-sent ones */
                if (code != KVTIER_NOT_FOUND)
                    fprintf(stderr, "unacknowledged block (%u,%u): %s\n", l, b,
                            kvtier_code_name(code));
                assert_int_equal(code, KVTIER_NOT_FOUND);
            }
        }
    fprintf(stderr, "kill -9: %u acked blocks intact; %u unacked in-flight blocks NOT_FOUND\n",
            L * acked_to, L * (inflight_to - acked_to));
    kvtier_open_result orr;
    kvtier_seq_shape sh = {seq, L, 8, 128, 16, BLOCK, 0, 0, 0, 0, NULL, 0, 0};
    assert_int_equal(kvtier_open_sequence(c, &sh, &orr, &e), KVTIER_OK);
    assert_int_equal(orr.created, 0);
    assert_int_equal(orr.blocks_ssd + orr.blocks_host, L * acked_to);
    kvtier_tier_map_free(&m);
    kvtier_client_free(c);
    itest_server_stop(&s);
}

static void test_writeback_kill9(void **state) {
    (void)state;
    itest_server s = {0};
    static const char *flags[] = {"--host-write-policy", "back", NULL};
    assert_int_equal(itest_server_start(&s, flags), 0);
    kvtier_client *c = itest_client(&s, NULL);
    const uint64_t seq = 8;
    itest_open_seq(c, seq, 2);
    itest_put_range(c, seq, 2, 0, 16); /* acked at RAM speed: HOST only */
    kvtier_error e;
    uint64_t moved = 0;
    assert_int_equal(kvtier_evict(c, seq, 0, KVTIER_TIER_SSD, &moved, &e), KVTIER_OK);
    assert_int_equal(moved, 16); /* layer 0 now durable */
    kvtier_client_free(c);
    int st = 0;
    assert_int_equal(itest_server_signal(&s, SIGKILL, 5000, &st), 0);
    assert_int_equal(itest_server_restart(&s), 0);
    c = itest_client(&s, NULL);
    for (uint32_t b = 0; b < 16; b++) {
        int same = 0;
        assert_int_equal(itest_fetch_one(c, seq, 0, b, &same), KVTIER_OK);
        assert_true(same);
        assert_int_equal(itest_fetch_one(c, seq, 1, b, &same), KVTIER_NOT_FOUND);
    }
    kvtier_tier_map m;
    assert_int_equal(kvtier_tier_map_get(c, seq, &m, &e), KVTIER_OK);
    assert_int_equal(kvtier_tier_map_count(&m, KVTIER_TIER_SSD), 16);
    assert_int_equal(kvtier_tier_map_count(&m, KVTIER_TIER_HOST), 0);
    kvtier_tier_map_free(&m);
    kvtier_client_free(c);
    itest_server_stop(&s);
}

static void test_sigterm_flushes(void **state) {
    (void)state;
    itest_server s = {0};
    static const char *flags[] = {"--host-write-policy", "back", NULL};
    assert_int_equal(itest_server_start(&s, flags), 0);
    kvtier_client *c = itest_client(&s, NULL);
    const uint64_t seq = 9;
    itest_open_seq(c, seq, 2);
    itest_put_range(c, seq, 2, 0, 16); /* RAM only until flushed */
    kvtier_client_free(c);
    int st = 0;
    assert_int_equal(itest_server_signal(&s, SIGTERM, 30000, &st), 0);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(itest_server_restart(&s), 0);
    c = itest_client(&s, NULL);
    for (uint32_t l = 0; l < 2; l++)
        for (uint32_t b = 0; b < 16; b++) {
            int same = 0;
            assert_int_equal(itest_fetch_one(c, seq, l, b, &same), KVTIER_OK);
            assert_true(same);
        }
    kvtier_client_free(c);
    itest_server_stop(&s);
}

/* ---------------------------------------------------------------- bad input */

static itest_server g_srv; /* shared by the bad-input tests */

static void test_bad_crc(void **state) {
    (void)state;
    kvtier_client *c = itest_client(&g_srv, NULL);
    const uint64_t seq = 20;
    itest_open_seq(c, seq, 1);
    uint8_t *buf = malloc(BLOCK);
    itest_payload(buf, BLOCK, seq, 0, 3, 0);
    kvtier_block b = {0, 3, buf, BLOCK, 0, 1, 16, KVTIER_TIER_ABSENT};
    b.crc32c = kvtier_crc32c(0, buf, BLOCK) ^ 0x1;
    kvtier_error e;
    kvtier_stats before, after;
    assert_int_equal(kvtier_stats_get(c, &before, &e), KVTIER_OK);
    kvtier_code code = kvtier_put_blocks(c, seq, &b, 1, NULL, &e);
    assert_int_equal(code, KVTIER_DATA_LOSS);
    assert_non_null(strstr(e.message, "crc32c"));
    int same;
    assert_int_equal(itest_fetch_one(c, seq, 0, 3, &same), KVTIER_NOT_FOUND);
    assert_int_equal(kvtier_stats_get(c, &after, &e), KVTIER_OK);
    assert_int_equal(after.checksum_failures, before.checksum_failures + 1);
    /* A flipped payload bit with the original crc is caught the same way. */
    b.crc32c = kvtier_crc32c(0, buf, BLOCK);
    buf[1000] ^= 0x40;
    assert_int_equal(kvtier_put_blocks(c, seq, &b, 1, NULL, &e), KVTIER_DATA_LOSS);
    assert_int_equal(itest_fetch_one(c, seq, 0, 3, &same), KVTIER_NOT_FOUND);
    free(buf);
    kvtier_client_free(c);
}

static void test_malformed_protobuf(void **state) {
    (void)state;
    rpc_channel *ch = rpc_channel_new(g_srv.addr, 0);
    assert_non_null(ch);
    /* Field 1 with wire type 7 (invalid), then junk: no protobuf decodes it. */
    static const uint8_t junk[] = {0x0f, 0xff, 0xff, 0xff, 0xff, 0x13, 0x37, 0x00, 0x42};
    rpc_opts o = {0};
    o.timeout_ms = 10000;
    rpc_status st;
    grpc_status_code code =
        rpc_unary_raw(ch, "/kvtier.v1.Tier/OpenSequence", &o, junk, sizeof junk, NULL, NULL, &st);
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    code = rpc_unary_raw(ch, "/kvtier.v1.Admin/GetTierMap", &o, junk, sizeof junk, NULL, NULL, &st);
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    /* Garbage inside a client stream. */
    rpc_stream *s = rpc_stream_open(ch, "/kvtier.v1.Tier/PutBlocks", &o, &st);
    assert_non_null(s);
    rpc_stream_write_raw(s, junk, sizeof junk);
    code = rpc_stream_finish(s, &st);
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    rpc_stream_free(s);
    /* And inside the bidi Summarize stream. */
    s = rpc_stream_open(ch, "/kvtier.v1.Tier/Summarize", &o, &st);
    assert_non_null(s);
    rpc_stream_write_raw(s, junk, sizeof junk);
    code = rpc_stream_finish(s, &st);
    assert_int_equal(code, GRPC_STATUS_INVALID_ARGUMENT);
    rpc_stream_free(s);
    rpc_channel_free(ch);
}

static void test_oversize(void **state) {
    (void)state;
    const uint64_t seq = 21;
    kvtier_connect_opts co = {0};
    co.address = g_srv.addr;
    co.max_msg_bytes = 64u << 20; /* let the client send what the server must refuse */
    kvtier_error e;
    kvtier_client *c = kvtier_connect(&co, &e);
    assert_non_null(c);
    itest_open_seq(c, seq, 1);
    size_t sizes[] = {BLOCK + 1,  /* over the sequence's block_bytes */
                      2u << 20,   /* over --max-block (1 MiB) */
                      20u << 20}; /* over the gRPC max message (16 MiB) */
    uint8_t *buf = calloc(1, 20u << 20);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        kvtier_block b = {0, (uint32_t)i, buf, sizes[i], 0, 0, 16, KVTIER_TIER_ABSENT};
        kvtier_code code = kvtier_put_blocks(c, seq, &b, 1, NULL, &e);
        if (code != KVTIER_RESOURCE_EXHAUSTED)
            fprintf(stderr, "size %zu: %s: %s\n", sizes[i], kvtier_code_name(code), e.message);
        assert_int_equal(code, KVTIER_RESOURCE_EXHAUSTED);
        int same;
        assert_int_equal(itest_fetch_one(c, seq, 0, (uint32_t)i, &same), KVTIER_NOT_FOUND);
    }
    free(buf);
    kvtier_client_free(c);
}

static void test_unknown_sequence(void **state) {
    (void)state;
    kvtier_client *c = itest_client(&g_srv, NULL);
    const uint64_t seq = 999999;
    kvtier_error e;
    int same;
    assert_int_equal(itest_fetch_one(c, seq, 0, 0, &same), KVTIER_NOT_FOUND);
    kvtier_tier_map m;
    assert_int_equal(kvtier_tier_map_get(c, seq, &m, &e), KVTIER_NOT_FOUND);
    assert_int_equal(kvtier_evict(c, seq, -1, KVTIER_TIER_SSD, NULL, &e), KVTIER_NOT_FOUND);
    uint8_t buf[64] = {0};
    kvtier_block b = {0, 0, buf, sizeof buf, 0, 0, 16, KVTIER_TIER_ABSENT};
    assert_int_equal(kvtier_put_blocks(c, seq, &b, 1, NULL, &e), KVTIER_NOT_FOUND);
    assert_int_equal(kvtier_close_sequence(c, seq, 0, NULL, NULL, &e), KVTIER_NOT_FOUND);
    kvtier_client_free(c);
}

/* Tier of (layer, block) of seq from the tier map. */
static int map_tier(kvtier_client *c, uint64_t seq, uint32_t l, uint32_t b) {
    kvtier_tier_map m;
    kvtier_error e;
    assert_int_equal(kvtier_tier_map_get(c, seq, &m, &e), KVTIER_OK);
    int t = l < m.n_layers && b < m.n_blocks ? m.tiers[(size_t)l * m.n_blocks + b] : -1;
    kvtier_tier_map_free(&m);
    return t;
}

/* Issue 10: Block.target was ignored by PutBlocks, and evict --to host was
 * documented but always refused. */
static void test_put_target_evict_host(void **state) {
    (void)state;
    kvtier_client *c = itest_client(&g_srv, NULL);
    const uint64_t seq = 25;
    itest_open_seq(c, seq, 1);
    uint8_t *buf = malloc(BLOCK);
    kvtier_error e;
    kvtier_tier want[3] = {KVTIER_TIER_SSD, KVTIER_TIER_HOST, KVTIER_TIER_ABSENT};
    for (uint32_t b = 0; b < 3; b++) {
        itest_payload(buf, BLOCK, seq, 0, b, 0);
        kvtier_block blk = {0, b, buf, BLOCK, 0, 0, 16, want[b]};
        kvtier_put_result r;
        assert_int_equal(kvtier_put_blocks(c, seq, &blk, 1, &r, &e), KVTIER_OK);
        assert_int_equal(r.n_acks, 1);
        assert_int_equal(r.acks[0].tier, b == 0 ? KVTIER_TIER_SSD : KVTIER_TIER_HOST);
        kvtier_put_result_free(&r);
    }
    assert_int_equal(map_tier(c, seq, 0, 0), KVTIER_TIER_SSD);
    assert_int_equal(map_tier(c, seq, 0, 1), KVTIER_TIER_HOST);
    kvtier_tier bad[2] = {KVTIER_TIER_HOT, KVTIER_TIER_DROPPED};
    for (int i = 0; i < 2; i++) {
        kvtier_block blk = {0, 5, buf, BLOCK, 0, 0, 16, bad[i]};
        assert_int_equal(kvtier_put_blocks(c, seq, &blk, 1, NULL, &e), KVTIER_INVALID_ARGUMENT);
        assert_non_null(strstr(e.message, "is not a placement"));
    }
    int same = 0;
    assert_int_equal(itest_fetch_one(c, seq, 0, 5, &same), KVTIER_NOT_FOUND);
    /* all to SSD, then back to host RAM */
    uint64_t moved = 0;
    assert_int_equal(kvtier_evict(c, seq, -1, KVTIER_TIER_SSD, &moved, &e), KVTIER_OK);
    assert_int_equal(moved, 2);
    kvtier_code code = kvtier_evict(c, seq, -1, KVTIER_TIER_HOST, &moved, &e);
    if (code)
        fprintf(stderr, "evict --to host: %s\n", e.message);
    assert_int_equal(code, KVTIER_OK);
    assert_int_equal(moved, 3);
    for (uint32_t b = 0; b < 3; b++) {
        assert_int_equal(map_tier(c, seq, 0, b), KVTIER_TIER_HOST);
        assert_int_equal(itest_fetch_one(c, seq, 0, b, &same), KVTIER_OK);
        assert_true(same);
    }
    /* and kvtierctl's --to host does the same (nothing left on SSD: 0 moved) */
    const char *argv[] = {
        itest_kvtierctl(), "--server", g_srv.addr, "evict", "25", "--to", "host", NULL};
    char *out = NULL, *err = NULL;
    int rc = itest_run(argv, &out, &err);
    if (rc != 0)
        fprintf(stderr, "kvtierctl evict --to host: %s\n", err);
    assert_int_equal(rc, 0);
    free(out);
    free(err);
    free(buf);
    kvtier_client_free(c);
}

static int cancel_after_one(const kvtier_fetched *b, void *user) {
    (void)b;
    (*(int *)user)++;
    return 1;
}

static void test_client_cancel(void **state) {
    (void)state;
    kvtier_client *c = itest_client(&g_srv, NULL);
    const uint64_t seq = 22;
    itest_open_seq(c, seq, 1);
    itest_put_range(c, seq, 1, 0, 32);
    kvtier_error e;
    for (int round = 0; round < 3; round++) {
        /* Put stream cancelled after some blocks. */
        kvtier_put_stream *p = kvtier_put_open(c, seq, &e);
        assert_non_null(p);
        uint8_t *buf = malloc(BLOCK);
        for (uint32_t b = 32; b < 40; b++) {
            itest_payload(buf, BLOCK, seq, 0, b, 0);
            kvtier_block blk = {0, b, buf, BLOCK, 0, 0, 16, KVTIER_TIER_ABSENT};
            kvtier_put_send(p, &blk, &e);
        }
        kvtier_put_abort(p);
        free(buf);
        /* Fetch stream cancelled by the reader after the first block. */
        kvtier_block_ref refs[32];
        for (uint32_t b = 0; b < 32; b++)
            refs[b] = (kvtier_block_ref){0, b};
        int n = 0;
        assert_int_equal(kvtier_fetch_blocks(c, seq, refs, 32, cancel_after_one, &n, NULL, &e),
                         KVTIER_CANCELLED);
        assert_int_equal(n, 1);
        /* Summarize stream opened and dropped without a word. */
        kvtier_summarize_stream *z = kvtier_summarize_open(c, seq, &e);
        assert_non_null(z);
        kvtier_layer_summary ls = {0};
        ls.block_count = 40;
        kvtier_summary sum = {16, &ls, 1};
        kvtier_decisions d;
        assert_int_equal(kvtier_summarize_send(z, &sum, &d, &e), KVTIER_OK);
        kvtier_free(d.d);
        kvtier_summarize_finish(z, &e);
    }
    /* The server is healthy and serves further calls. */
    kvtier_health h;
    assert_int_equal(kvtier_health_check(c, &h, &e), KVTIER_OK);
    assert_string_equal(h.status, "SERVING");
    itest_put_range(c, seq, 1, 40, 44);
    for (uint32_t b = 0; b < 44; b++) {
        int same = 0;
        kvtier_code code = itest_fetch_one(c, seq, 0, b, &same);
        if (b < 32 || b >= 40) {
            assert_int_equal(code, KVTIER_OK);
            assert_true(same);
        } else { /* blocks of a cancelled stream: nothing of it is stored */
            assert_int_equal(code, KVTIER_NOT_FOUND);
        }
    }
    kvtier_client_free(c);
}

/* Sends block (0, b) of seq on a raw PutBlocks stream; bad: wrong crc32c. */
static int raw_put(rpc_stream *rs, uint64_t seq, uint32_t b, uint8_t *buf, int bad) {
    itest_payload(buf, BLOCK, seq, 0, b, 0);
    Kvtier__V1__BlockKey key = KVTIER__V1__BLOCK_KEY__INIT;
    key.sequence_id = seq;
    key.block = b;
    Kvtier__V1__Block m = KVTIER__V1__BLOCK__INIT;
    m.key = &key;
    m.payload.data = buf;
    m.payload.len = BLOCK;
    m.crc32c = kvtier_crc32c(0, buf, BLOCK) ^ (bad ? 1u : 0u);
    m.token_count = 16;
    return rpc_stream_write(rs, &m.base);
}

/* A bad block in the middle of a stream is answered at once, while the
 * client has not half-closed (a server that answered only at the end would
 * leave the read below waiting for the deadline), and none of the stream's
 * blocks, not even those before the bad one, is stored. */
static void test_bad_block_mid_stream(void **state) {
    (void)state;
    kvtier_client *c = itest_client(&g_srv, NULL);
    const uint64_t seq = 23;
    itest_open_seq(c, seq, 1);
    rpc_channel *ch = rpc_channel_new(g_srv.addr, 0);
    assert_non_null(ch);
    rpc_opts o = {0};
    o.timeout_ms = 10000;
    rpc_status st;
    rpc_stream *rs = rpc_stream_open(ch, "/kvtier.v1.Tier/PutBlocks", &o, &st);
    assert_non_null(rs);
    uint8_t *buf = malloc(BLOCK);
    for (uint32_t b = 0; b < 6; b++)
        assert_int_equal(raw_put(rs, seq, b, buf, 0), 0);
    assert_int_equal(raw_put(rs, seq, 6, buf, 1), 0);
    ProtobufCMessage *resp = NULL;
    assert_int_equal(rpc_stream_read(rs, &kvtier__v1__put_response__descriptor, &resp), -1);
    assert_null(resp);
    grpc_status_code code = rpc_stream_finish(rs, &st);
    fprintf(stderr, "bad block mid-stream: %s: %s\n", rpc_status_name(code), st.message);
    assert_int_equal(code, GRPC_STATUS_DATA_LOSS);
    assert_non_null(strstr(st.message, "block #6 of the stream"));
    assert_non_null(strstr(st.message, "nothing of this stream was stored"));
    rpc_stream_free(rs);
    rpc_channel_free(ch);
    for (uint32_t b = 0; b < 8; b++) {
        int same;
        assert_int_equal(itest_fetch_one(c, seq, 0, b, &same), KVTIER_NOT_FOUND);
    }
    free(buf);
    kvtier_client_free(c);
}

/* Staging is bounded: with --max-message 1MiB a stream may carry 16 MiB of
 * payload. Exactly that is stored; one block more is RESOURCE_EXHAUSTED,
 * telling the client to split the stream, and nothing of it is stored. */
static void test_stream_too_big(void **state) {
    (void)state;
    itest_server s = {0};
    static const char *flags[] = {"--max-message", "1MiB", NULL};
    assert_int_equal(itest_server_start(&s, flags), 0);
    kvtier_client *c = itest_client(&s, NULL);
    const uint64_t seq = 24;
    const uint32_t fit = (16u << 20) / BLOCK; /* 256 blocks of 64 KiB */
    itest_open_seq(c, seq, 2);
    kvtier_put_stream *p;
    kvtier_error e;
    uint8_t *buf = malloc(BLOCK);
    kvtier_code code = KVTIER_OK;
    p = kvtier_put_open(c, seq, &e);
    assert_non_null(p);
    for (uint32_t i = 0; i <= fit && code == KVTIER_OK; i++) { /* fit + 1 blocks */
        itest_payload(buf, BLOCK, seq, i % 2, i / 2, 0);
        kvtier_block blk = {i % 2, i / 2, buf, BLOCK, 0, 0, 16, KVTIER_TIER_ABSENT};
        code = kvtier_put_send(p, &blk, &e);
    }
    if (code == KVTIER_OK)
        code = kvtier_put_finish(p, NULL, &e);
    else
        kvtier_put_finish(p, NULL, NULL);
    fprintf(stderr, "stream of %u blocks: %s: %s\n", fit + 1, kvtier_code_name(code), e.message);
    assert_int_equal(code, KVTIER_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(e.message, "split it into several streams"));
    assert_non_null(strstr(e.message, "block #256 of the stream"));
    int same;
    assert_int_equal(itest_fetch_one(c, seq, 0, 0, &same), KVTIER_NOT_FOUND);
    assert_int_equal(itest_fetch_one(c, seq, 1, fit / 2 - 1, &same), KVTIER_NOT_FOUND);
    itest_put_range(c, seq, 2, 0, fit / 2); /* exactly the bound: stored */
    assert_int_equal(itest_fetch_one(c, seq, 1, fit / 2 - 1, &same), KVTIER_OK);
    assert_true(same);
    free(buf);
    kvtier_client_free(c);
    itest_server_stop(&s);
}

static int shared_up(void **state) {
    (void)state;
    return itest_server_start(&g_srv, NULL);
}

static int shared_down(void **state) {
    (void)state;
    itest_server_stop(&g_srv);
    return 0;
}

int main(void) {
    const struct CMUnitTest crash[] = {
        cmocka_unit_test(test_kill9_during_put),
        cmocka_unit_test(test_writeback_kill9),
        cmocka_unit_test(test_sigterm_flushes),
        cmocka_unit_test(test_stream_too_big),
    };
    const struct CMUnitTest bad[] = {
        cmocka_unit_test(test_bad_crc),
        cmocka_unit_test(test_malformed_protobuf),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_unknown_sequence),
        cmocka_unit_test(test_client_cancel),
        cmocka_unit_test(test_bad_block_mid_stream),
        cmocka_unit_test(test_put_target_evict_host),
    };
    int fails = cmocka_run_group_tests_name("faults_crash", crash, NULL, NULL);
    fails += cmocka_run_group_tests_name("faults_bad_input", bad, shared_up, shared_down);
    return fails;
}
