/* worker_proc.c - spawn `kvtier-worker serve` for the tiering tests. */
#include "worker_proc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int worker_start(worker_proc *w, const char *worker_bin, const char *model,
                 const char *const *extra) {
    int pipefd[2];
    if (pipe(pipefd) != 0)
        return -1;
    snprintf(w->log, sizeof w->log, "/tmp/kvtier-worker-test-%d-%ld.log", (int)getpid(),
             (long)random());
    const char *argv[48];
    int n = 0;
    argv[n++] = worker_bin;
    argv[n++] = "serve";
    argv[n++] = "--model";
    argv[n++] = model;
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--print-port";
    for (int i = 0; extra && extra[i] && n < 46; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pipefd[1], 1);
        FILE *lf = fopen(w->log, "w");
        if (lf)
            dup2(fileno(lf), 2);
        close(pipefd[0]);
        execv(worker_bin, (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);
    w->pid = pid;
    FILE *f = fdopen(pipefd[0], "r");
    char line[128];
    w->port = 0;
    if (f && fgets(line, sizeof line, f))
        sscanf(line, "listening on %d", &w->port);
    if (f)
        fclose(f);
    if (w->port <= 0) {
        fprintf(stderr, "worker did not come up; log %s:\n", w->log);
        char cmd[700];
        snprintf(cmd, sizeof cmd, "cat '%s' >&2", w->log);
        if (system(cmd) != 0)
            fprintf(stderr, "(no log)\n");
        worker_stop(w);
        return -1;
    }
    snprintf(w->addr, sizeof w->addr, "127.0.0.1:%d", w->port);
    return 0;
}

int worker_stop(worker_proc *w) {
    int status = -1;
    if (w->pid > 0) {
        kill(w->pid, SIGTERM);
        for (int i = 0; i < 200; i++) {
            if (waitpid(w->pid, &status, WNOHANG) == w->pid) {
                w->pid = 0;
                unlink(w->log);
                return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            }
            usleep(50 * 1000);
        }
        kill(w->pid, SIGKILL);
        waitpid(w->pid, &status, 0);
        w->pid = 0;
    }
    unlink(w->log);
    return -1;
}

char *http_get_local(int port, const char *path) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return NULL;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return NULL;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return NULL;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while (buf && (r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (len + 1 == cap) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = p, cap *= 2;
        }
    }
    close(fd);
    if (buf)
        buf[len] = 0;
    return buf;
}
