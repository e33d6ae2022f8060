/* worker_proc.h - a `kvtier-worker serve` process for tests. */
#ifndef KVTIER_WORKER_PROC_H
#define KVTIER_WORKER_PROC_H

#include <sys/types.h>

typedef struct {
    pid_t pid;
    int port;
    char addr[64];
    char log[256];
} worker_proc;

/* Starts `worker_bin serve --model model --listen 127.0.0.1:0 --print-port
 * extra...` and waits for its port. The child dies with the test (PDEATHSIG).
 * Returns 0, or -1 (its log is printed). */
int worker_start(worker_proc *w, const char *worker_bin, const char *model,
                 const char *const *extra);

/* SIGTERM, wait up to 10 s (then SIGKILL). Returns the exit code, -1 when it
 * had to be killed or did not run. */
int worker_stop(worker_proc *w);

/* GET http://127.0.0.1:port/path (HTTP/1.0): the whole response, headers
 * included, malloc'd (caller frees); NULL when it could not connect. */
char *http_get_local(int port, const char *path);

#endif
