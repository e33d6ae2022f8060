/* kvtierd_proc.c - a real kvtierd process for tests (see kvtierd_proc.h). */
#include "kvtierd_proc.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
void kvd_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

/* Finds "prefix<value>" in the log, copies value up to whitespace. */
static int log_find(const char *log, const char *prefix, char *out, size_t len) {
    FILE *f = fopen(log, "r");
    if (!f)
        return 0;
    char line[512];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        char *p = strstr(line, prefix);
        if (p) {
            p += strlen(prefix);
            size_t n = strcspn(p, " \n/");
            if (n >= len)
                n = len - 1;
            memcpy(out, p, n);
            out[n] = 0;
            found = 1;
        }
    }
    fclose(f);
    return found;
}

/* Starts kvtierd on data dir d->dir/data with extra flags (NULL-terminated).
 * Returns 0 when it printed its address within 20 s. */
int kvd_start(kvd_proc *d, const char *bin, const char *const *extra) {
    char data[300], log[300];
    snprintf(data, sizeof data, "%s/data", d->dir);
    snprintf(log, sizeof log, "%s/log", d->dir);
    unlink(log);
    const char *argv[32];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--data-dir";
    argv[n++] = data;
    argv[n++] = "--metrics-listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--threads";
    argv[n++] = "2";
    for (int i = 0; extra && extra[i] && n < 30; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    d->pid = pid;
    d->addr[0] = d->metrics[0] = 0;
    for (int i = 0; i < 2000; i++) {
        if (log_find(log, "listening on ", d->addr, sizeof d->addr) &&
            log_find(log, "metrics on http://", d->metrics, sizeof d->metrics))
            break;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            d->pid = 0;
            return -1;
        }
        kvd_sleep_ms(10);
    }
    if (!d->addr[0])
        return -1;
    d->ch = rpc_channel_new(d->addr, 0);
    return 0;
}

/* Sends sig and waits up to 30 s. Returns the exit status, -1 if killed/timeout. */
int kvd_stop(kvd_proc *d, int sig) {
    if (d->ch)
        rpc_channel_free(d->ch);
    d->ch = NULL;
    if (d->pid <= 0)
        return -1;
    kill(d->pid, sig);
    int st = 0;
    for (int i = 0; i < 3000; i++) {
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            d->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        }
        kvd_sleep_ms(10);
    }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &st, 0);
    d->pid = 0;
    return -1;
}

kvd_proc *kvd_new(void) {
    kvd_proc *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    snprintf(d->dir, sizeof d->dir, "/tmp/kvtierd-test-XXXXXX");
    if (!mkdtemp(d->dir)) {
        free(d);
        return NULL;
    }
    return d;
}

void kvd_free(kvd_proc *d) {
    if (!d)
        return;
    if (d->pid > 0)
        kvd_stop(d, SIGKILL);
    nftw(d->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(d);
}

char *kvd_metrics(const kvd_proc *d) {
    const char *hostport = d->metrics;
    char host[64];
    const char *colon = strrchr(hostport, ':');
    snprintf(host, sizeof host, "%.*s", (int)(colon - hostport), hostport);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return NULL;
    }
    const char req[] = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
    if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    ssize_t k;
    while ((k = read(fd, buf + n, cap - n - 1)) > 0) {
        n += (size_t)k;
        if (n + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    close(fd);
    buf[n] = 0;
    char *body = strstr(buf, "\r\n\r\n");
    if (!body || strncmp(buf, "HTTP/1.", 7) != 0 || !strstr(buf, " 200 ")) {
        free(buf);
        return NULL;
    }
    memmove(buf, body + 4, strlen(body + 4) + 1);
    return buf;
}
