/* test_pipe_nccl.c - the NCCL pipeline transport on real GPUs: two processes
 * (rank 0 and rank 1, one GPU each) join one communicator with the unique id
 * exchanged over gRPC, pass a FWD message around the ring (rank 0 -> rank 1
 * -> rank 0) with its payload intact, and a receive from a rank that exits
 * without sending ends at the deadline (a timeout, never a hang).
 *
 * Exits 77 (ctest SKIP) when this build has no NCCL or fewer than two CUDA
 * devices are visible (CI builds it with nvcc and NCCL but has no GPU). */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pipe_transport.h"
#ifdef KVTIER_HAVE_NCCL
#include <cuda_runtime_api.h>
#endif

#define W 64 /* floats per row */
#define N 3  /* rows */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
        return 17999;
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "rank %d: FAIL %s:%d: ", rank, __FILE__, __LINE__);                    \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

static int run_rank(int rank, const char *coord) {
    char err[512] = "";
    pipe_transport_t *t = pipe_nccl_ring(rank, 2, coord, rank, 60000, err, sizeof err);
    CHECK(t, "ring: %s", err);
    float x[N * W], got[N * W];
    pipe_hdr_t h, g;
    if (rank == 0) {
        for (int i = 0; i < N * W; i++)
            x[i] = (float)i * 0.25f - 7.0f;
        pipe_hdr_init(&h, PIPE_OP_FWD, 0);
        h.seq = 1, h.pos0 = 5, h.n = N, h.want = 1, h.width = W;
        h.payload_bytes = sizeof x;
        CHECK(pipe_send(t, &h, x, 30000, err, sizeof err) == PIPE_OK, "send: %s", err);
        CHECK(pipe_recv(t, &g, got, sizeof got, 30000, err, sizeof err) == PIPE_OK, "recv: %s",
              err);
        CHECK(g.op == PIPE_OP_RESULT && g.n == 1 && g.pos0 == 5, "reply %s n %u",
              pipe_op_name(g.op), g.n);
        for (int i = 0; i < W; i++)
            CHECK(got[i] == x[(N - 1) * W + i] * 2.0f, "row value %d", i);
        /* rank 1 exits now without sending: the next receive must time out */
        double t0 = now_ms();
        int rc = pipe_recv(t, &g, got, sizeof got, 2000, err, sizeof err);
        double waited = now_ms() - t0;
        CHECK(rc == PIPE_ETIMEOUT || rc == PIPE_EIO, "recv from a gone rank gave %d", rc);
        CHECK(waited < 30000, "waited %.0f ms", waited);
        printf("rank 0: ring ok; receive from an exited rank ended after %.0f ms: %s\n", waited,
               err);
    } else {
        CHECK(pipe_recv(t, &g, got, sizeof got, 30000, err, sizeof err) == PIPE_OK, "recv: %s",
              err);
        CHECK(g.op == PIPE_OP_FWD && g.n == N && g.width == W, "got %s", pipe_op_name(g.op));
        pipe_hdr_t r = g;
        r.op = PIPE_OP_RESULT, r.rank = 1, r.n = 1, r.want = 0;
        r.payload_bytes = W * sizeof(float);
        float out[W];
        for (int i = 0; i < W; i++)
            out[i] = got[(N - 1) * W + i] * 2.0f;
        CHECK(pipe_send(t, &r, out, 30000, err, sizeof err) == PIPE_OK, "send: %s", err);
        _exit(0); /* no finalize: rank 0 sees a peer that is gone */
    }
    pipe_transport_free(t);
    return 0;
}

int main(void) {
    if (!pipe_nccl_available()) {
        printf("SKIP: this build has no NCCL transport\n");
        return 77;
    }
#ifdef KVTIER_HAVE_NCCL
    /* count the devices in a child: CUDA must not be initialised before fork */
    fflush(stdout);
    pid_t probe = fork();
    if (probe == 0) {
        int n = 0;
        _exit(cudaGetDeviceCount(&n) == cudaSuccess ? (n > 100 ? 100 : n) : 0);
    }
    int pst = 0, ndev = 0;
    waitpid(probe, &pst, 0);
    if (WIFEXITED(pst))
        ndev = WEXITSTATUS(pst);
    if (ndev < 2) {
        printf("SKIP: the NCCL ring test needs 2 CUDA devices, %d visible\n", ndev);
        return 77;
    }
#endif
    char coord[64];
    snprintf(coord, sizeof coord, "127.0.0.1:%d", free_port());
    fflush(stdout);
    pid_t kid = fork();
    if (kid == 0)
        _exit(run_rank(1, coord));
    int rank = 0;
    int rc = run_rank(0, coord);
    int st = 0;
    waitpid(kid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "rank 1 exit status %d", st);
    return rc;
}
