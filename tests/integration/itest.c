/* itest.c — integration test harness (see itest.h). */
#include "itest.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef KVTIERD_PATH
#define KVTIERD_PATH "kvtierd"
#endif
#ifndef KVTIERCTL_PATH
#define KVTIERCTL_PATH "kvtierctl"
#endif

const char *itest_kvtierd(void) {
    return KVTIERD_PATH;
}
const char *itest_kvtierctl(void) {
    return KVTIERCTL_PATH;
}

/* ---------------------------------------------------------------- registry */

#define MAX_REG 64
static char g_dirs[MAX_REG][640];
static int g_ndirs;
/* Pids (not itest_server pointers: a failed cmocka test leaves its stack
 * frame, and a server struct on it, behind) of running kvtierd children. */
static pid_t g_pids[MAX_REG];
static int g_atexit;

static void cleanup_all(void) {
    for (int i = 0; i < MAX_REG; i++)
        if (g_pids[i] > 0) {
            kill(g_pids[i], SIGKILL);
            waitpid(g_pids[i], NULL, 0);
            g_pids[i] = 0;
        }
    for (int i = 0; i < g_ndirs; i++)
        if (g_dirs[i][0])
            itest_rmrf(g_dirs[i]);
}

static void reg_init(void) {
    if (!g_atexit) {
        atexit(cleanup_all);
        g_atexit = 1;
    }
}

static void reg_pid(pid_t pid, int add) {
    reg_init();
    for (int i = 0; i < MAX_REG; i++)
        if (g_pids[i] == (add ? 0 : pid)) {
            g_pids[i] = add ? pid : 0;
            return;
        }
}

uint64_t itest_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---------------------------------------------------------------- dirs, ports */

int itest_tmpdir(char *out, size_t len) {
    reg_init();
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/kvtier-itest-XXXXXX", base);
    if (!mkdtemp(tmpl))
        return -1;
    snprintf(out, len, "%s", tmpl);
    if (g_ndirs < MAX_REG)
        snprintf(g_dirs[g_ndirs++], sizeof g_dirs[0], "%s", tmpl);
    return 0;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int itest_rmrf(const char *dir) {
    if (!dir || !*dir || !strcmp(dir, "/"))
        return -1;
    return nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int itest_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t al = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* ---------------------------------------------------------------- kvtierd */

static void print_log(const itest_server *s) {
    FILE *f = fopen(s->log, "r");
    if (!f)
        return;
    fprintf(stderr, "---- kvtierd log (%s) ----\n", s->log);
    char line[1024];
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fprintf(stderr, "---- end of log ----\n");
    fclose(f);
}

static pid_t spawn_server(itest_server *s) {
    const char *argv[ITEST_MAX_ARGS + 8];
    int n = 0;
    argv[n++] = itest_kvtierd();
    argv[n++] = "--listen";
    argv[n++] = s->addr;
    argv[n++] = "--data-dir";
    argv[n++] = s->dir;
    for (int i = 0; i < ITEST_MAX_ARGS && s->extra[i]; i++)
        argv[n++] = s->extra[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "itest: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    if (pid > 0)
        reg_pid(pid, 1);
    return pid;
}

/* 1 when something accepts TCP connections on 127.0.0.1:port. */
static int port_open(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* Waits for the port to accept, then for Health OK. A gRPC channel that met
 * a refused connection backs off for a second or more, so each attempt uses
 * a fresh client and only after the port is open. */
static int wait_healthy(itest_server *s) {
    uint64_t t0 = itest_now_ms();
    int ok = -1;
    while (itest_now_ms() - t0 < 20000) {
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            fprintf(stderr, "itest: kvtierd exited early (status 0x%x)\n", st);
            reg_pid(s->pid, 0);
            s->pid = 0;
            break;
        }
        if (!port_open(s->port)) {
            usleep(20 * 1000);
            continue;
        }
        kvtier_connect_opts o = {0};
        o.address = s->addr;
        o.token = s->token;
        o.timeout_ms = 2000;
        kvtier_error e;
        kvtier_client *c = kvtier_connect(&o, &e);
        if (!c)
            break;
        kvtier_health h;
        kvtier_code code = kvtier_health_check(c, &h, &e);
        kvtier_client_free(c);
        if (code == KVTIER_OK) {
            ok = 0;
            break;
        }
        usleep(20 * 1000);
    }
    if (ok)
        print_log(s);
    return ok;
}

int itest_server_start(itest_server *s, const char *const *extra) {
    if (!s->dir[0] && itest_tmpdir(s->dir, sizeof s->dir) != 0)
        return -1;
    memset(s->extra, 0, sizeof s->extra);
    for (int i = 0; extra && extra[i] && i < ITEST_MAX_ARGS - 1; i++)
        s->extra[i] = extra[i];
    snprintf(s->log, sizeof s->log, "%s.log", s->dir);
    if (g_ndirs < MAX_REG)
        snprintf(g_dirs[g_ndirs++], sizeof g_dirs[0], "%s", s->log);
    for (int attempt = 0; attempt < 3; attempt++) {
        s->port = itest_free_port();
        if (s->port <= 0)
            return -1;
        snprintf(s->addr, sizeof s->addr, "127.0.0.1:%d", s->port);
        s->pid = spawn_server(s);
        if (s->pid <= 0)
            return -1;
        if (wait_healthy(s) == 0)
            return 0;
        itest_server_stop(s); /* port raced away, or a real failure: retry, then give up */
    }
    return -1;
}

int itest_server_restart(itest_server *s) {
    itest_server_stop(s);
    s->pid = spawn_server(s);
    if (s->pid <= 0)
        return -1;
    return wait_healthy(s);
}

int itest_server_signal(itest_server *s, int sig, int timeout_ms, int *status) {
    if (s->pid <= 0)
        return -1;
    kill(s->pid, sig);
    uint64_t t0 = itest_now_ms();
    for (;;) {
        int st;
        pid_t r = waitpid(s->pid, &st, WNOHANG);
        if (r == s->pid) {
            if (status)
                *status = st;
            reg_pid(s->pid, 0);
            s->pid = 0;
            return 0;
        }
        if (itest_now_ms() - t0 > (uint64_t)timeout_ms)
            break;
        usleep(10 * 1000);
    }
    fprintf(stderr, "itest: kvtierd did not exit within %d ms of signal %d\n", timeout_ms, sig);
    print_log(s);
    itest_server_stop(s);
    return -1;
}

void itest_server_stop(itest_server *s) {
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        reg_pid(s->pid, 0);
        s->pid = 0;
    }
}

kvtier_client *itest_client(const itest_server *s, const char *tenant) {
    kvtier_connect_opts o = {0};
    o.address = s->addr;
    o.token = s->token;
    o.tenant = tenant;
    o.timeout_ms = 30000;
    o.stream_timeout_ms = 120000;
    kvtier_error e;
    kvtier_client *c = kvtier_connect(&o, &e);
    if (!c) {
        fprintf(stderr, "itest: connect %s: %s\n", s->addr, e.message);
        exit(1);
    }
    return c;
}

/* ---------------------------------------------------------------- processes */

static int drain_fd(int fd, char **buf, size_t *len, size_t *cap) {
    char tmp[4096];
    ssize_t n = read(fd, tmp, sizeof tmp);
    if (n <= 0)
        return n == 0 || errno != EINTR ? 0 : 1;
    if (*len + (size_t)n + 1 > *cap) {
        size_t nc = (*cap ? *cap * 2 : 8192) + (size_t)n;
        char *nb = realloc(*buf, nc);
        if (!nb)
            return 0;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, tmp, (size_t)n);
    *len += (size_t)n;
    (*buf)[*len] = 0;
    return 1;
}

int itest_run(const char *const *argv, char **out, char **err) {
    int po[2], pe[2];
    if (pipe(po) || pipe(pe))
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(pe[0]);
        close(po[1]);
        close(pe[1]);
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "itest: exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    char *b[2] = {calloc(1, 1), calloc(1, 1)};
    size_t len[2] = {0, 0}, cap[2] = {1, 1};
    struct pollfd pf[2] = {{po[0], POLLIN, 0}, {pe[0], POLLIN, 0}};
    int open_n = 2;
    while (open_n > 0) {
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (pf[i].fd >= 0 && (pf[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                if (!drain_fd(pf[i].fd, &b[i], &len[i], &cap[i])) {
                    close(pf[i].fd);
                    pf[i].fd = -1;
                    open_n--;
                }
            }
        }
    }
    int st;
    waitpid(pid, &st, 0);
    if (out)
        *out = b[0];
    else
        free(b[0]);
    if (err)
        *err = b[1];
    else
        free(b[1]);
    if (!WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

/* ---------------------------------------------------------------- payloads */

void itest_payload(void *buf, size_t len, uint64_t seq, uint32_t layer, uint32_t block,
                   uint32_t version) {
    /* splitmix64 stream seeded by the key */
    uint64_t x = seq * 0x9E3779B97F4A7C15ull ^ ((uint64_t)layer << 40) ^ ((uint64_t)block << 8) ^
                 version ^ 0xD1B54A32D192ED03ull;
    uint8_t *p = buf;
    size_t i = 0;
    while (i < len) {
        x += 0x9E3779B97F4A7C15ull;
        uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        size_t n = len - i < 8 ? len - i : 8;
        memcpy(p + i, &z, n);
        i += n;
    }
}
