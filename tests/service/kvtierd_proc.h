/* kvtierd_proc.h - start/stop a real kvtierd process for tests: temp dir with
 * data/ and log, --listen and --metrics-listen on port 0, addresses read from
 * its stdout. Reusable by other test areas (integration, fault). */
#ifndef KVTIER_TEST_KVTIERD_PROC_H
#define KVTIER_TEST_KVTIERD_PROC_H

#include <sys/types.h>

#include "rpc.h"

typedef struct kvd_proc {
    pid_t pid;
    char dir[256];     /* temp dir: data/ and log */
    char addr[64];     /* gRPC address */
    char metrics[128]; /* host:port of /metrics */
    rpc_channel *ch;
} kvd_proc;

/* kvd_new: a record with a fresh temp dir (/tmp/kvtierd-test-XXXXXX); NULL on failure. */
kvd_proc *kvd_new(void);

/* kvd_start: runs `bin` on d->dir/data with extra flags (NULL-terminated, may
 * be NULL), waits up to 20 s for both addresses, opens d->ch to it.
 * Returns 0, -1 when it exited or did not print its address (see d->dir/log). */
int kvd_start(kvd_proc *d, const char *bin, const char *const *extra);

/* kvd_stop: closes d->ch, sends sig, waits up to 30 s (then SIGKILL).
 * Returns the exit status, -1 when killed by a signal or on timeout. */
int kvd_stop(kvd_proc *d, int sig);

/* kvd_free: kills a still running process, removes the temp dir, frees d. */
void kvd_free(kvd_proc *d);

/* kvd_metrics: GET http://d->metrics/metrics; the body (malloc'd), or NULL
 * when it does not answer 200. */
char *kvd_metrics(const kvd_proc *d);

/* kvd_sleep_ms: sleeps ms milliseconds. */
void kvd_sleep_ms(int ms);

#endif
