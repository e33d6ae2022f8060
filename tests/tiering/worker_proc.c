/* worker_proc.c - spawn `kvtier-worker serve` for the tiering tests. */
#include "worker_proc.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
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
